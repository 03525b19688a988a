//! The relay's control API: what the media manager (in the engine's thread)
//! tells the relay threads, and what they report back. Both directions go
//! over bounded channels; nothing here blocks the caller.
//!
//! A *session* is one call; a session has one *stream* per SDP media line
//! (`m=`), and a stream relays between two *endpoints*: side A (the leg the
//! call came from) and side B (the leg Palisade opened). Each endpoint is a
//! local RTP socket (plus RTCP on port+1 unless rtcp-mux) on the zone's media
//! address, and what Palisade knows of the peer on that leg.

use std::net::SocketAddr;
use std::time::Duration;

use smallvec::SmallVec;

/// A call's media session (the engine's `CallRef` value).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SessionId(pub u64);

/// Which side of a stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Side {
    /// The leg the call came from.
    A,
    /// The leg Palisade opened.
    B,
}

/// How the relay learns where a peer really sends from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Latch {
    /// Symmetric RTP: after the first packets from a source, send to that
    /// source (NAT traversal); packets from other sources are then dropped
    /// and counted.
    Learn,
    /// Accept only packets from the signalled address; drop and count others.
    Strict,
}

/// SRTP crypto suites Palisade negotiates (RFC 4568, RFC 3711).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SrtpSuite {
    /// AES_CM_128_HMAC_SHA1_80.
    AesCm128HmacSha1_80,
    /// AES_CM_128_HMAC_SHA1_32.
    AesCm128HmacSha1_32,
}

/// One direction's SRTP keying material (from or for an `a=crypto` line).
#[derive(Clone, PartialEq, Eq)]
pub struct SrtpKey {
    /// The suite.
    pub suite: SrtpSuite,
    /// 128-bit master key.
    pub master_key: [u8; 16],
    /// 112-bit master salt.
    pub master_salt: [u8; 14],
    /// MKI value and its length in bytes, when the peer uses one.
    pub mki: Option<SmallVec<[u8; 4]>>,
}

impl std::fmt::Debug for SrtpKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Keys never reach logs.
        f.debug_struct("SrtpKey")
            .field("suite", &self.suite)
            .field("mki", &self.mki.as_ref().map(|m| m.len()))
            .finish_non_exhaustive()
    }
}

/// One side of a stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// Local RTP socket address (zone media address, even port). RTCP uses
    /// port + 1 unless `rtcp_mux`.
    pub local: SocketAddr,
    /// RTP and RTCP share the RTP port (RFC 5761).
    pub rtcp_mux: bool,
    /// Where the peer said it receives RTP (SDP `c=`/`m=`), once known.
    pub remote: Option<SocketAddr>,
    /// Where the peer said it receives RTCP (`a=rtcp` or port + 1).
    pub remote_rtcp: Option<SocketAddr>,
    /// Latching mode toward this peer.
    pub latch: Latch,
    /// Decrypts what this peer sends (None: plain RTP from the peer).
    pub srtp_recv: Option<SrtpKey>,
    /// Encrypts what Palisade sends to this peer (None: plain RTP to the peer).
    pub srtp_send: Option<SrtpKey>,
    /// Payload types rewritten on packets *sent to* this peer: (from, to).
    pub pt_map: SmallVec<[(u8, u8); 4]>,
    /// This peer holds the call (its SDP said `sendonly`/`inactive`, or
    /// Palisade's said so to it): the hold timeout applies.
    pub on_hold: bool,
}

/// What the media manager asks of the relay.
// Commands travel by value through a bounded channel (about 0.5 KiB a slot);
// boxing the endpoints would allocate per command for no gain.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Bind both endpoints' sockets and start relaying stream `stream`.
    Open {
        /// The call.
        session: SessionId,
        /// The media line index.
        stream: u8,
        /// Side A.
        a: Endpoint,
        /// Side B.
        b: Endpoint,
    },
    /// Replace one side's parameters (an answer arrived, a re-INVITE changed
    /// the remote, hold/unhold, new keys). The local sockets stay.
    Update {
        /// The call.
        session: SessionId,
        /// The media line index.
        stream: u8,
        /// Which side.
        side: Side,
        /// The new parameters (its `local` must equal the open one).
        endpoint: Endpoint,
    },
    /// Stop relaying the whole session and close its sockets; a
    /// [`Report::Closed`] with the final statistics follows.
    Close {
        /// The call.
        session: SessionId,
    },
}

/// Statistics of one direction of a stream (what one peer sent).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct DirectionStats {
    /// RTP packets relayed.
    pub packets: u64,
    /// RTP payload bytes relayed.
    pub bytes: u64,
    /// Of `packets`, those the kernel forwarded (an offloaded stream; their
    /// payload bytes are estimated from the IP datagram sizes, and sequence
    /// loss and jitter were measured on the others only).
    pub offloaded: u64,
    /// Packets lost, from sequence numbers (RFC 3550 A.3).
    pub lost: u64,
    /// Interarrival jitter in milliseconds (RFC 3550 A.8).
    pub jitter_ms: f32,
    /// Loss fraction the receiver reported in RTCP (0.0..=1.0), if any.
    pub rtcp_fraction_lost: Option<f32>,
    /// Jitter the receiver reported in RTCP, in milliseconds, if any.
    pub rtcp_jitter_ms: Option<f32>,
    /// Round-trip time from RTCP (LSR/DLSR), in milliseconds, if any.
    pub rtt_ms: Option<f32>,
    /// Estimated MOS (ITU-T G.107 E-model, simplified), 1.0..=4.5.
    pub mos: Option<f32>,
    /// Packets dropped: from a non-latched/unsignalled source, failed SRTP
    /// authentication, or malformed.
    pub dropped: u64,
}

/// Final statistics of one stream.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct StreamStats {
    /// The media line index.
    pub stream: u8,
    /// What side A sent (relayed to B).
    pub from_a: DirectionStats,
    /// What side B sent (relayed to A).
    pub from_b: DirectionStats,
}

/// What the relay tells the media manager.
// Closed carries its stream statistics inline, without allocating.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum Report {
    /// A socket of an Open could not be bound (port taken by another
    /// process); the session is closed.
    BindFailed {
        /// The call.
        session: SessionId,
        /// The address that failed.
        addr: SocketAddr,
        /// The OS error (`EADDRINUSE`: another process holds the port;
        /// `EMFILE`: the process is out of file descriptors; ...).
        os_error: Option<i32>,
    },
    /// No RTP in either direction for the timeout (hold timeout when held).
    Timeout {
        /// The call.
        session: SessionId,
    },
    /// The session is closed; its ports may be reused.
    Closed {
        /// The call.
        session: SessionId,
        /// Per-stream statistics.
        streams: SmallVec<[StreamStats; 2]>,
    },
}

/// Relay settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RelayConfig {
    /// Relay threads; each owns the sessions hashed to it.
    pub threads: usize,
    /// No RTP in either direction this long ends the session (default 60 s).
    pub timeout: Duration,
    /// The same while on hold (default 1 hour).
    pub hold_timeout: Duration,
    /// DSCP of RTP/RTCP packets (default 46, EF).
    pub dscp: u8,
    /// Capacity of each thread's command channel.
    pub command_queue: usize,
}

/// The command channel to the relay threads was full or closed; the
/// command is handed back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Busy(pub Command);

/// How long a relay thread keeps an ended session's socket bound (a
/// *spare*) for the next session given its port; the media manager reuses
/// ports of ended calls within [`SPARE_REUSE`] and keeps them from other
/// threads until [`SPARE_IDLE`] has surely passed.
pub const SPARE_IDLE: Duration = Duration::from_secs(10);
/// Within this age, a port of an ended call is reused by a session of the
/// same relay thread, which finds its sockets still bound.
pub const SPARE_REUSE: Duration = Duration::from_secs(8);
/// Spare sockets per relay thread at most.
pub const SPARE_CAP: usize = 4096;
/// For this long a reused socket refuses the peer it served in its previous
/// call (unless the new call signals that peer): the tail of an ended
/// stream never latches onto the next call.
pub const REUSE_GUARD: Duration = Duration::from_secs(10);

/// Timeouts and queue sizes a relay uses when not configured otherwise.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);
/// See [`RelayConfig::hold_timeout`].
pub const DEFAULT_HOLD_TIMEOUT: Duration = Duration::from_secs(3600);

impl Default for RelayConfig {
    /// One thread per core, 60 s timeout, 1 h on hold, DSCP 46 (EF), 1024
    /// queued commands per thread.
    fn default() -> Self {
        RelayConfig {
            threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
            timeout: DEFAULT_TIMEOUT,
            hold_timeout: DEFAULT_HOLD_TIMEOUT,
            dscp: 46,
            command_queue: 1024,
        }
    }
}

impl Command {
    /// The session this command is about.
    pub fn session(&self) -> SessionId {
        match self {
            Command::Open { session, .. }
            | Command::Update { session, .. }
            | Command::Close { session } => *session,
        }
    }
}

/// A snapshot of the relay's counters, summed over its threads
/// (`RelayControl::stats`). Names follow `palisade_relay_<name>` when
/// exported as metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RelayStats {
    /// RTP and RTCP datagrams relayed (accepted by the kernel for sending).
    pub packets_relayed: u64,
    /// Bytes of those datagrams.
    pub bytes_relayed: u64,
    /// Dropped: from a source other than the latched/signalled one.
    pub dropped_foreign_source: u64,
    /// Dropped: the destination peer's address is not known yet.
    pub dropped_no_remote: u64,
    /// Dropped: not RTP/RTCP, truncated or oversized.
    pub dropped_malformed: u64,
    /// Dropped: SRTP/SRTCP authentication, replay or MKI check failed (or
    /// protecting toward an SRTP peer failed).
    pub srtp_failures: u64,
    /// Dropped: the kernel refused the datagram (buffer full, unreachable).
    pub dropped_send: u64,
    /// Dropped: no session owns the socket any more (a packet raced a Close).
    pub dropped_no_session: u64,
    /// Sessions open now.
    pub sessions_open: u64,
    /// Local ports bound now for open sessions.
    pub ports_bound: u64,
    /// Sockets of ended sessions kept bound for their port's next session
    /// (at most [`SPARE_CAP`] per thread, each for [`SPARE_IDLE`]).
    pub ports_spare: u64,
    /// Media timeouts reported.
    pub timeouts: u64,
    /// Reports dropped because the report channel was full or closed.
    pub reports_dropped: u64,
    /// Commands ignored (unknown session or stream, changed local address).
    pub commands_ignored: u64,
    /// Streams the kernel forwards now (offloaded).
    pub streams_offloaded: u64,
    /// RTP packets the kernel forwarded for offloaded streams (read from
    /// its counters every poll).
    pub packets_offloaded: u64,
    /// Kernel transactions of offload changes applied.
    pub offload_batches: u64,
    /// Offload changes (or counter reads) the kernel refused; those streams
    /// stay in user space.
    pub offload_failures: u64,
}
