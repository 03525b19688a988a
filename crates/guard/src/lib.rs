//! Palisade's guard: DoS protection and toll-fraud detection, sans-IO.
//!
//! Owns: per-source token buckets for requests, INVITEs and REGISTERs
//! (per-zone limits for untrusted sources, a throttle for trusted ones),
//! scanner detection (User-Agents, sipvicious fingerprints, many distinct
//! users probed from one source, authentication failures, malformed bursts),
//! trust tiers (configured trunks and an operator allow-list are trusted,
//! a deny-list is always dropped), a bounded in-process ban table
//! (`guard.max_bans`, oldest evicted first), the toll-fraud
//! rules with warning and critical levels (calls per minute, concurrent
//! calls, calls and minutes per day, high-risk destinations, international
//! calls after hours, number walking, wangiri, repeated calls, and a
//! per-call duration cap enforced mid-call), dry-run, and the alert records.
//!
//! Does not own: call admission control (busy trunks and zones are the
//! engine's `cac`, checked before a call reaches the guard), nftables (`palisade-nft` programs the kernel from the
//! [`Action::Ban`]s this crate emits), the alert database
//! (`palisade-alerts`), the clock, threads or logging. Every input carries
//! `now: Instant`; the binary anchors wall-clock time with
//! [`Guard::set_wall_clock`] for business hours and days, and drains
//! [`Guard::poll_action`] after every batch.
//!
//! Hand-written on purpose: no maintained crate does SIP-aware rate
//! limiting or fraud rules; the counting primitives ([`limit`]) are a few
//! lines each and constant in memory. Bounded tables use `hashlink`'s LRU;
//! time zones use `jiff`.

mod alert;
mod clock;
mod fraud;
#[doc(hidden)]
pub mod fuzz;
mod guard;
pub mod limit;
pub mod scanner;

pub use alert::{Alert, AlertEvent, CallEvidence, Severity, Status, Subject};
pub use clock::{Local, WallClock, local};
pub use fraud::{ALERT_THROTTLE, normalise_number};
pub use guard::{
    Action, Ban, Decision, Guard, GuardStats, HOUSEKEEPING, MAX_ACTIONS, Reason, SharedGuard,
    normalise,
};
