//! Why media could not be set up, grouped by who is at fault.

use palisade_b2bua::MediaRefusal;

/// An SDP body that cannot be used. The peer's fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SdpError {
    /// Larger than [`crate::sdp::MAX_SDP_BYTES`].
    #[error("SDP body too large")]
    TooLarge,
    /// More lines than [`crate::sdp::MAX_LINES`].
    #[error("too many SDP lines")]
    TooManyLines,
    /// More `m=` lines than [`crate::sdp::MAX_MEDIA`].
    #[error("too many media lines")]
    TooManyMedia,
    /// Does not start with `v=0`.
    #[error("SDP does not start with v=0")]
    NoVersion,
    /// A line that is not `<letter>=<value>` (1-based line number).
    #[error("line {0} is not type=value")]
    BadLine(usize),
    /// Missing, repeated or malformed `o=` line.
    #[error("missing or malformed o= line")]
    BadOrigin,
    /// A malformed `m=` line (1-based line number).
    #[error("malformed m= line at line {0}")]
    BadMedia(usize),
    /// An enabled stream without a `c=` line (0-based stream index).
    #[error("stream {0} has no connection address")]
    NoConnection(usize),
}

/// Why the media manager refused an SDP crossing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum MediaError {
    // --- the peer's fault
    /// Unparseable SDP.
    #[error("bad SDP: {0}")]
    BadSdp(#[from] SdpError),
    /// No codec both the SDP and the trunks' allow-lists accept.
    #[error("no common codec")]
    NoCommonCodec,
    /// SRTP required toward this leg but the SDP has no usable `a=crypto`.
    #[error("SRTP required but no usable a=crypto")]
    SrtpRequired,
    /// An SRTP-only offer (`RTP/SAVP`) toward a trunk with `srtp: off`, or
    /// an answer with SRTP that was not offered.
    #[error("SRTP not allowed on this leg")]
    SrtpNotAllowed,
    /// An answer with no offer to answer.
    #[error("answer without an offer")]
    NoOffer,
    // --- capacity (the operator's to size)
    /// The zone's media port range is exhausted.
    #[error("out of media ports")]
    NoPorts,
    /// The relay's command queue is full.
    #[error("relay busy")]
    RelayBusy,
    // --- internal
    /// The call's media state was already released.
    #[error("call already released")]
    Released,
    /// A zone id the manager does not know (a bug).
    #[error("unknown zone")]
    UnknownZone,
}

impl MediaError {
    /// Stable name for logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            MediaError::BadSdp(_) => "bad-sdp",
            MediaError::NoCommonCodec => "no-common-codec",
            MediaError::SrtpRequired => "srtp-required",
            MediaError::SrtpNotAllowed => "srtp-not-allowed",
            MediaError::NoOffer => "no-offer",
            MediaError::NoPorts => "no-media-ports",
            MediaError::RelayBusy => "relay-busy",
            MediaError::Released => "released",
            MediaError::UnknownZone => "unknown-zone",
        }
    }

    /// The SIP status for the offerer: 503 when Palisade lacks capacity,
    /// 500 for internal errors, 488 (Not Acceptable Here) otherwise.
    pub fn status(self) -> u16 {
        match self {
            MediaError::NoPorts | MediaError::RelayBusy => 503,
            MediaError::Released | MediaError::UnknownZone => 500,
            _ => 488,
        }
    }

    /// As the engine's refusal.
    pub fn refusal(self) -> MediaRefusal {
        MediaRefusal {
            status: self.status(),
            reason: self.as_str(),
        }
    }
}
