//! Palisade's call engine: a back-to-back user agent.
//!
//! Owns: calls as two independent legs (dialogs) with their own Call-ID,
//! tags, CSeq, branches and Contact; the server and client transactions of
//! both legs (driving the `palisade-transaction` machines); routing from the
//! source trunk and dialled number to a destination trunk, with ordered
//! failover across its members' targets (DNS names expanded by the binary's
//! resolver, members marked down by OPTIONS probes skipped: [`health`]); relaying of responses, re-INVITEs and
//! in-dialog requests; per-leg ACK generation; CANCEL; teardown on BYE,
//! timeouts and vanished peers; and topology hiding by construction: every
//! message a leg receives is built from that leg's own state, and only
//! headers a trunk's `pass_headers` names (plus body-describing headers)
//! cross from the other leg.
//!
//! Does not own: sockets, the clock, or logging. It is sans-IO: the binary
//! feeds [`Engine::handle_message`] and [`Engine::handle_timeout`] with the
//! current `Instant`, then drains [`Engine::poll_transmit`] and
//! [`Engine::poll_event`], and sleeps until [`Engine::poll_timeout`].
//! Media (SDP `c=`/`m=` rewriting and relay), normalization rules and NAT
//! handling plug in later; normalization and NAT attach as [`Stage`]s on a
//! trunk's outbound pipeline.
//!
//! Edge behaviour lives in `engine/` submodules, each a thin layer over a
//! sans-IO crate: the registrar and routing to registered users
//! (`palisade-registrar`, `palisade-nat`), digest authentication of
//! REGISTERs and INVITEs and answers to carriers' challenges
//! (`palisade-digest`), outbound registration and keepalives, and call
//! admission control; the binary reads [`Engine::poll_edge_event`] to log
//! and persist bindings.

mod call;
mod engine;
#[doc(hidden)]
pub mod fuzz;
pub mod health;
mod hooks;
mod ids;
pub mod sdp;
mod stage;

use std::net::SocketAddr;

pub use call::{CallRef, Flow, Side};
pub use engine::edge::{EdgeEvent, EdgeStats};
pub use engine::{Engine, Transmit};
pub use health::{HealthChange, ProbeOutcome, Target, TargetState, TargetStatus};
pub use hooks::{
    CallEnd, CallInfo, GuardHook, MediaHook, MediaRefusal, NoGuard, OriginOnly, SdpContext,
    SdpKind, Verdict,
};
pub use ids::IdGen;
pub use palisade_sip::ParseError;
pub use stage::{Direction, Stage, StageContext};

/// A transaction's identity inside the engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TxnId(pub u64);

/// Why a call ended (the CDR reason).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EndReason {
    /// The caller hung up.
    CallerBye,
    /// The callee hung up.
    CalleeBye,
    /// The caller cancelled before answer.
    Cancelled,
    /// The callee (or the last member tried) refused with a final status.
    Rejected,
    /// Every member of the destination trunk failed or stayed silent.
    Unreachable,
    /// Ringing exceeded `sip.no_answer_timeout_seconds`.
    NoAnswer,
    /// The caller never ACKed the 2xx (RFC 3261 13.3.1.4).
    AckTimeout,
    /// A leg answered an in-dialog request with 481/408 or not at all.
    PeerVanished,
    /// Palisade shut down.
    Shutdown,
    /// No media in either direction for the configured time.
    MediaTimeout,
    /// Media could not be set up (no ports, unacceptable SDP).
    MediaRefused,
    /// The guard ended it (fraud rule, operator).
    Guard,
}

impl EndReason {
    /// Stable name for logs and metrics labels.
    pub fn as_str(self) -> &'static str {
        match self {
            EndReason::CallerBye => "caller-bye",
            EndReason::CalleeBye => "callee-bye",
            EndReason::Cancelled => "cancelled",
            EndReason::Rejected => "rejected",
            EndReason::Unreachable => "unreachable",
            EndReason::NoAnswer => "no-answer",
            EndReason::AckTimeout => "ack-timeout",
            EndReason::PeerVanished => "peer-vanished",
            EndReason::Shutdown => "shutdown",
            EndReason::MediaTimeout => "media-timeout",
            EndReason::MediaRefused => "media-refused",
            EndReason::Guard => "guard",
        }
    }
}

/// Quality of what one side sent on one stream, as the media relay measured
/// it over the call (the relay's own statistics, in the engine's terms so
/// the engine does not depend on the relay).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct DirectionQuality {
    /// RTP packets relayed.
    pub packets: u64,
    /// RTP payload bytes relayed.
    pub bytes: u64,
    /// Of `packets`, those the kernel forwarded (`media.kernel_forwarding`);
    /// loss and jitter come from the others and from RTCP.
    pub offloaded: u64,
    /// Packets lost, from sequence numbers.
    pub lost: u64,
    /// Interarrival jitter in milliseconds (RFC 3550).
    pub jitter_ms: f32,
    /// Loss fraction the receiver reported in RTCP (0.0..=1.0), if any.
    pub rtcp_fraction_lost: Option<f32>,
    /// Jitter the receiver reported in RTCP, in milliseconds, if any.
    pub rtcp_jitter_ms: Option<f32>,
    /// Round-trip time from RTCP, in milliseconds, if any.
    pub rtt_ms: Option<f32>,
    /// Estimated MOS (E-model, simplified), if any RTP flowed.
    pub mos: Option<f32>,
    /// Packets dropped (wrong source, failed SRTP authentication, malformed).
    pub dropped: u64,
}

/// Quality of one media stream (one `m=` line) of a call.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct StreamQuality {
    /// The media line index.
    pub stream: u8,
    /// What the caller's side (leg A) sent.
    pub a: DirectionQuality,
    /// What the callee's side (leg B) sent.
    pub b: DirectionQuality,
}

/// Something that happened to a call.
#[derive(Debug, Clone, PartialEq)]
pub enum CallEventKind {
    /// A new call was accepted and routed.
    Started {
        /// Trunk the INVITE came from.
        from_trunk: String,
        /// Trunk it was routed to.
        to_trunk: String,
        /// The dialled number.
        number: String,
        /// Call-ID of leg A (the caller's).
        a_call_id: String,
        /// Call-ID of leg B (Palisade's).
        b_call_id: String,
        /// The caller is behind a NAT (`nat.detect`: its INVITE's Via,
        /// Contact or SDP `c=` disagrees with the packet source).
        nated: bool,
    },
    /// An INVITE went to a trunk member.
    Attempt {
        /// The member's address.
        member: SocketAddr,
        /// Its position in the call's targets (0 = first): the trunk's
        /// members in order, `host:` members expanded, down targets left out.
        index: usize,
    },
    /// A member failed; the next one is tried if any.
    Failover {
        /// The member's address.
        member: SocketAddr,
        /// Its final status, or `None` if it never answered.
        status: Option<u16>,
    },
    /// A provisional response was relayed to the caller.
    Progress {
        /// The status (180, 183...).
        status: u16,
    },
    /// The callee answered.
    Answered {
        /// Milliseconds from the caller's INVITE to the answer (post-dial delay).
        setup_ms: u64,
    },
    /// The call ended.
    Ended {
        /// Why.
        reason: EndReason,
        /// The final status the caller got, for calls that never connected.
        status: Option<u16>,
        /// Talk time in milliseconds (0 if never answered).
        duration_ms: u64,
    },
    /// The call's media closed: quality per stream. Follows `Ended` (the
    /// relay reports when it has closed the call's sockets); part of the
    /// call's record for whatever consumes call events (logs, metrics).
    MediaStats {
        /// One entry per anchored stream.
        streams: Vec<StreamQuality>,
    },
}

/// A call event with the call it belongs to.
#[derive(Debug, Clone, PartialEq)]
pub struct CallEvent {
    /// Palisade's call reference, the same for both legs.
    pub call: CallRef,
    /// What happened.
    pub kind: CallEventKind,
}

/// What the engine reports for logs and metrics.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// A call event.
    Call(CallEvent),
    /// A message that failed to parse: answered (400/505/513) or dropped.
    Malformed {
        /// Where it came from.
        flow: Flow,
        /// What was wrong.
        error: ParseError,
        /// Whether a response was sent.
        answered: bool,
    },
    /// A request refused before a call existed.
    Rejected {
        /// Where it came from.
        flow: Flow,
        /// Its method.
        method: palisade_sip::Method,
        /// The status sent.
        status: u16,
        /// Why (stable name: `unknown-source`, `no-route`, `draining`,
        /// `dns-pending`...).
        reason: &'static str,
    },
    /// A trunk target went down or came back up (OPTIONS probes).
    TargetHealth(HealthChange),
}

/// Engine counters since start (gauges noted).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EngineStats {
    /// Messages handed to the engine.
    pub messages_received: u64,
    /// Retransmissions absorbed by transactions.
    pub retransmissions_received: u64,
    /// Malformed requests answered with 400/505/513.
    pub malformed_answered: u64,
    /// Malformed messages dropped (no way to answer).
    pub malformed_dropped: u64,
    /// Responses matching no transaction.
    pub stray_responses: u64,
    /// ACKs matching no dialog.
    pub stray_acks: u64,
    /// Unusable 2xx answered with ACK and BYE.
    pub stray_answers_killed: u64,
    /// Calls accepted.
    pub calls_started: u64,
    /// Calls answered.
    pub calls_answered: u64,
    /// Calls ended.
    pub calls_ended: u64,
    /// INVITEs refused before a call existed.
    pub calls_rejected: u64,
    /// Requests the guard dropped.
    pub guard_dropped: u64,
    /// Requests the guard refused.
    pub guard_rejected: u64,
    /// SDP the media hook refused.
    pub media_refused: u64,
    /// Requests answered without keeping a transaction (OPTIONS, rejects, 481s).
    pub stateless_responses: u64,
    /// Requests Palisade originated.
    pub requests_sent: u64,
    /// Requests sent over TCP instead of UDP because of their size (RFC 3261 18.1.1).
    pub udp_to_tcp_switches: u64,
    /// Transmits dropped because the queue was full (never expected).
    pub transmits_dropped: u64,
    /// Events dropped because the queue was full (never expected).
    pub events_dropped: u64,
    /// Server transactions the engine failed to answer in time (answered 408
    /// by the guard timer; a bug or a pathological peer if non-zero).
    pub guard_timeouts: u64,
    /// Internal errors (a bug if non-zero).
    pub internal_errors: u64,
    /// OPTIONS health probes sent to trunk targets.
    pub probes_sent: u64,
    /// Targets dropped from DNS answers longer than the per-trunk cap.
    pub targets_truncated: u64,
    /// Gauge: trunk targets marked down by probes.
    pub targets_down: u64,
    /// Gauge: calls in progress (not yet ended).
    pub active_calls: u64,
    /// Gauge: calls held in memory, including ended calls whose last
    /// transactions (CANCEL, BYE) are finishing.
    pub tracked_calls: u64,
    /// Gauge: server transactions alive.
    pub server_transactions: u64,
    /// Gauge: client transactions alive.
    pub client_transactions: u64,
}
