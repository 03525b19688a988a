//! The RTP/RTCP relay: Palisade's media fast path.
//!
//! **What it owns.** A fixed set of relay threads (one per core by default),
//! each owning the sessions routed to it by call and their UDP sockets; per
//! stream, the relay between side A and side B: symmetric-RTP latching
//! ([`latch`]), SRTP/SRTCP on either or both legs ([`srtp`]), payload-type
//! remapping, RTCP passthrough with statistics, per-direction quality
//! statistics ([`stats`]: loss, jitter, RTCP-reported loss/jitter/RTT, an
//! E-model MOS), media timeouts, DSCP marking, and counters; and the policy
//! of kernel forwarding ([`offload`]): which plain streams the kernel may
//! carry and when, through an [`Offloader`] the binary provides.
//!
//! **What it does not own.** SDP, port allocation, codec and SRTP policy,
//! key generation and what to do on a timeout: that is `palisade-media` in
//! the engine's thread, which drives this crate through [`RelayControl`]
//! over bounded channels and reads [`Report`]s back.
//!
//! **Why hand-written.** The fast path is Palisade's core: it must move
//! millions of packets per second on small boxes, so the loop is ours:
//! `mio` (epoll) per thread, `recvmmsg`/`sendmmsg` over buffers allocated
//! once ([`batch`], the crate's only `unsafe`, via `libc`), in-place packet
//! rewriting, no lock or channel operation per packet and no allocation per
//! plain RTP/RTCP packet (SRTP: about one per packet, inside `libsrtp`; both
//! measured by `tests/no_alloc.rs` with a counting allocator), one clock
//! read per batch. General-purpose pieces come from maintained crates:
//! `mio`, `libc`, `socket2` (socket options), `libsrtp` (RFC 3711 in pure
//! Rust on RustCrypto, with MKI). RTP/RTCP header parsing ([`rtp`]) is ours
//! because it is twenty lines of zero-copy reads that must never panic and
//! are fuzzed here.

pub mod api;
#[allow(unsafe_code)]
pub mod batch;
pub mod fuzz;
pub mod latch;
pub mod offload;
mod relay;
pub mod rtp;
pub mod sock;
mod spare;
pub mod srtp;
pub mod stats;
mod worker;

pub use api::*;
pub use offload::{FlowCounters, OffloadConfig, OffloadFlow, OffloadOp, OffloadStream, Offloader};
pub use relay::{Relay, RelayControl};
