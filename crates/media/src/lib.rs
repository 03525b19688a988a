//! Media anchoring control: the offer/answer side of Palisade's media path.
//!
//! Owns: the per-zone media port pools ([`PortPool`]), per-call SDP
//! offer/answer state, the SDP each leg receives (our media address and
//! ports in `c=`/`m=`/`a=rtcp`, our `o=` line with a per-leg session id and
//! version, ICE and DTLS attributes stripped, codecs filtered and ordered per
//! trunk, payload numbers kept per leg, fresh SDES keys per leg), the trunk
//! media policy (SRTP off/optional/required, rtcp-mux, codec allow-list,
//! latching), and the commands that tell the relay what to do. It plugs into
//! the engine as its [`palisade_b2bua::MediaHook`] ([`SharedMedia`]).
//!
//! Does not own: sockets, RTP, SRTP encryption, statistics or timeouts
//! (the relay threads in `palisade-relay` do, fed over a bounded channel
//! this crate only ever `try`-sends to), nor logging of relay reports (the
//! binary's engine loop).
//!
//! Sans-IO: everything here is a function of its inputs; keys and session
//! ids come from a CSPRNG (`rand`'s `StdRng`, ChaCha) seeded by the caller.
//!
//! Hand-written on purpose: the SDP model ([`sdp`]). The maintained Rust SDP
//! parsers are WebRTC-oriented: `rtc-sdp` (webrtc-rs) enforces RFC 8866 line
//! order with a strict state machine, so real-world SIP SDP with lines out
//! of order fails, and it re-serializes into its own layout and pulls in
//! `url`, `nix` and `rtc-shared`; `sdp-rs` and `webrtc-sdp` are similar or
//! unmaintained. An SBC must pass every attribute it does not understand
//! byte for byte, in order, and tolerate sloppy peers while refusing what
//! would misroute media, so the model is a lossless list of `type=value`
//! lines with parsing on demand (about 400 lines, fuzzed: `fuzz/fuzz_targets/sdp.rs`).
//! `a=crypto` keys are base64 (`base64` crate); SRTP itself is the relay's.

mod crypto;
mod error;
#[doc(hidden)]
pub mod fuzz;
mod manager;
mod pool;
pub mod sdp;

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Instant;

use bytes::Bytes;
use palisade_b2bua::{
    CallRef, DirectionQuality, MediaHook, MediaRefusal, SdpContext, StreamQuality,
};
use palisade_config::{Config, ZoneId};
use palisade_relay::{DirectionStats, Report, StreamStats};

pub use crypto::{Crypto, suite_name};
pub use error::{MediaError, SdpError};
pub use manager::{MediaManager, MediaStats, QUARANTINE_LIMIT, RelaySink};
pub use pool::PortPool;

/// The manager shared between the engine (as its media hook) and the loop
/// that owns the engine (which feeds it relay reports). Both run on the same
/// task, so the lock is never contended; it only lets two owners reach it.
#[derive(Debug, Clone)]
pub struct SharedMedia(Arc<Mutex<MediaManager>>);

impl SharedMedia {
    /// A manager for `config`'s zones, sending to `relay`, seeded with `seed`.
    pub fn new(config: &Config, relay: Box<dyn RelaySink>, seed: [u8; 32]) -> Self {
        SharedMedia(Arc::new(Mutex::new(MediaManager::new(config, relay, seed))))
    }

    fn lock(&self) -> MutexGuard<'_, MediaManager> {
        // A panic while holding the lock leaves consistent-enough state
        // (every method keeps the pools and calls in step); carry on.
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A relay report: frees a closed session's ports; returns its call.
    pub fn on_report(&self, report: &Report) -> CallRef {
        self.lock().on_report(report)
    }

    /// Retries deferred relay commands, ends overdue port quarantines.
    pub fn tick(&self, now: Instant) {
        self.lock().tick(now);
    }

    /// Counters and gauges.
    pub fn stats(&self) -> MediaStats {
        self.lock().stats()
    }

    /// Port pairs in use in `zone`.
    pub fn ports_in_use(&self, zone: ZoneId) -> usize {
        self.lock().ports_in_use(zone)
    }
}

impl MediaHook for SharedMedia {
    fn sdp(
        &mut self,
        now: Instant,
        ctx: &SdpContext<'_>,
        sdp: &[u8],
    ) -> Result<Bytes, MediaRefusal> {
        self.lock().process(now, ctx, sdp).map_err(|e| {
            tracing::info!(call = %ctx.call, event = %"media-refused", reason = %e.as_str(),
                status = e.status(), error = %e);
            e.refusal()
        })
    }

    fn release(&mut self, now: Instant, call: CallRef) {
        self.lock().release(now, call);
    }
}

/// The relay's final statistics in the engine's terms, for
/// [`palisade_b2bua::Engine::media_stats`].
pub fn quality(streams: &[StreamStats]) -> Vec<StreamQuality> {
    fn dir(d: &DirectionStats) -> DirectionQuality {
        DirectionQuality {
            packets: d.packets,
            bytes: d.bytes,
            offloaded: d.offloaded,
            lost: d.lost,
            jitter_ms: d.jitter_ms,
            rtcp_fraction_lost: d.rtcp_fraction_lost,
            rtcp_jitter_ms: d.rtcp_jitter_ms,
            rtt_ms: d.rtt_ms,
            mos: d.mos,
            dropped: d.dropped,
        }
    }
    streams
        .iter()
        .map(|s| StreamQuality {
            stream: s.stream,
            a: dir(&s.from_a),
            b: dir(&s.from_b),
        })
        .collect()
}

#[cfg(test)]
mod tests;
