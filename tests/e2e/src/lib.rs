//! End-to-end test harness for Palisade.
//!
//! Owns: running the *built* `palisade` binary in a per-test [`Lab`] (its own
//! loopback /24 from the [`Slot`] table, a generated config, log files under
//! `tests/e2e/out/<slot>/`), driving real SIPp peers ([`Sipp`]), reading
//! SIPp message logs ([`msglog`]), scanning what each peer received for
//! topology leaks ([`leak`]), raw UDP/TCP probes ([`raw`]), the
//! malformed-input corpus ([`corpus`]), for media: tshark captures
//! ([`capture`]), baresip phones and sox checks ([`baresip`]) and a bare RTP
//! peer ([`rtp`]), and a DNS server for tests ([`dnsmasq`]).
//!
//! Does not own: the binary or any protocol logic. Tests here observe Palisade
//! only from the wire, exactly as a PBX or a carrier would.
//!
//! Hand-written on purpose: the pieces are thin (spawning processes, reading
//! `/proc/net`, splitting SIPp's log format) and no crate covers SIPp; the one
//! dependency is `socket2`, to bind TCP probes to a peer's source address.
//!
//! A missing tool is a failure, never a skip: [`require_tool`] panics with the
//! install hint (`scripts/install-test-deps.sh`).

pub mod baresip;
pub mod capture;
pub mod corpus;
pub mod dnsmasq;
pub mod http;
pub mod lab;
pub mod leak;
pub mod msglog;
pub mod net;
pub mod netns;
pub mod paths;
pub mod raw;
pub mod rtp;
pub mod sipp;
pub mod slots;

pub use lab::{GUARD_OFF, Lab, LabBuilder, LabConfig};
pub use leak::assert_topology_hidden;
pub use msglog::{Direction, SipMessage};
pub use net::Transport;
pub use paths::{palisade_bin, require_tool};
pub use sipp::{Sipp, SippOutcome, SippProcess, SippStats};
pub use slots::{Net, Slot};

/// Numbers used across the tests: what the PBX dials out, what the carrier dials in.
pub mod numbers {
    /// The PBX's own number (From of outbound calls).
    pub const PBX_CALLER: &str = "+4989555000";
    /// An external number the PBX dials; routed to the carrier group.
    pub const EXTERNAL: &str = "+4971100100";
    /// A DID the carrier calls; `+4930123*` routes to the PBX.
    pub const DID: &str = "+4930123555";
}
