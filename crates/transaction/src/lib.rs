//! Palisade's SIP transaction layer: the four state machines of RFC 3261
//! section 17, with the RFC 6026 corrections for 2xx responses to INVITE.
//!
//! Owns: when to (re)transmit a request or a response, when a transaction
//! times out or ends, which responses and requests the transaction user (TU)
//! must see and which are retransmissions to absorb, the matching keys of RFC
//! 3261 17.1.3 / 17.2.3, the UAS 2xx retransmission of RFC 3261 13.3.1.4
//! ([`Uas2xxRetransmitter`]) and a deadline queue ([`TimerQueue`]) for an
//! engine that runs many transactions.
//!
//! Does not own: parsing or building SIP messages (messages are opaque
//! [`bytes::Bytes`] built by the caller with `palisade-sip`; the caller tells
//! a machine *what* arrived, e.g. "a response with status 180"), sockets,
//! dialogs, or the engine that maps messages to transactions. The crate has
//! no dependency on the codec on purpose: the machines are small, testable
//! on a virtual clock and reusable with any message representation.
//!
//! # Shape of the API (sans-IO, quinn-style)
//!
//! Every machine ([`ClientInvite`], [`ClientNonInvite`], [`ServerInvite`],
//! [`ServerNonInvite`], and the helper [`Uas2xxRetransmitter`]) is driven by
//! the caller with an injected clock (`now: Instant`) and never reads the
//! clock itself:
//!
//! * inputs: constructors, `on_response` / `on_ack` / `on_request_retransmit`
//!   / `send_response` / `send_ack` / `on_transport_error`, and
//!   `handle_timeout(now)`;
//! * outputs: `poll_transmit()` (bytes to put on the wire, in order),
//!   `poll_event()` ([`Event`]s for the TU), `poll_timeout()` (the earliest
//!   deadline at which `handle_timeout` must be called), `state()`.
//!
//! After every input the caller drains `poll_transmit` and `poll_event` and
//! re-reads `poll_timeout`. Once a machine is terminated it still hands out
//! what it queued before (e.g. the ACK of a reliable-transport INVITE whose
//! Timer D is zero); drain, then drop it. The common surface is also
//! available as the [`Machine`] trait for generic engine code.
//!
//! Misuse of the API by the caller (sending a response in a terminated
//! transaction, a status code outside 100..=699, ...) returns an [`Error`];
//! nothing in this crate panics on any input. Peer misbehaviour (stray,
//! late or duplicated messages) is never an error: it is absorbed.
//!
//! Queues are bounded: at most [`OUTBOX_CAPACITY`] distinct messages wait in
//! a machine's transmit queue (a retransmission of a message that is already
//! waiting is coalesced with it), and events are deduplicated. No allocation
//! happens per retransmission: `Bytes` clones are reference counts.
//!
//! Why hand-written: the published Rust SIP stacks bundle transactions with
//! their own codec, transport and runtime (tokio tasks and real timers); we
//! need small, clock-injected machines that the B2BUA engine drives directly.

mod common;
mod config;
mod error;
mod key;
mod timer_queue;

mod client_invite;
mod client_non_invite;
mod server_invite;
mod server_non_invite;
mod uas_2xx;

#[cfg(any(test, feature = "fuzzing"))]
mod fuzz;

pub use client_invite::{ClientInvite, ClientInviteState};
pub use client_non_invite::{ClientNonInvite, ClientNonInviteState};
pub use common::{Event, Machine, OUTBOX_CAPACITY, ResponseDisposition};
pub use config::{TIMER_D_UNRELIABLE, TimerConfig};
pub use error::Error;
pub use key::{ClientKey, MAGIC_COOKIE, MethodClass, ServerKey, is_rfc3261_branch};
pub use server_invite::{ServerInvite, ServerInviteState};
pub use server_non_invite::{ServerNonInvite, ServerNonInviteState};
pub use timer_queue::{PopExpired, TimerQueue};

/// The hasher for maps keyed by ids the engine generates itself (transaction
/// and call ids, timer keys): foldhash, fixed seed, several times cheaper than
/// std's SipHash. Never for keys a peer chooses (branches, Call-IDs, tags):
/// those keep SipHash's random seed against hash flooding.
pub type IdHasher = foldhash::fast::FixedState;
pub use uas_2xx::{Uas2xxRetransmitter, Uas2xxState};

#[cfg(any(test, feature = "fuzzing"))]
#[doc(hidden)]
pub use fuzz::fuzz_drive;
