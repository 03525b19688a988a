//! Symmetric RTP latching (sans-IO): which sources a peer's packets may come
//! from, and where Palisade sends to that peer.
//!
//! The rule:
//! - [`Latch::Strict`]: only the signalled address (IP and port) is accepted,
//!   and Palisade sends there. Nothing is learnt.
//! - [`Latch::Learn`]: the first *valid* packet (well-formed, and SRTP
//!   authenticated when the leg uses SRTP) latches its source, even before the
//!   peer's SDP arrived; from then on Palisade sends to that source, and
//!   packets from any other source are dropped and counted. A new source may
//!   take over only after the latched one has been silent for
//!   [`RELATCH_AFTER_SILENCE`] (a NAT rebinding or a re-routed peer): one
//!   stray packet can never steal a live stream. An `Update` that signals a
//!   different address forgets the latch.
//!
//! Validation happens before [`LatchState::learn`] is called, so garbage from
//! a port scanner never latches an SRTP leg.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::api::Latch;

/// How long a latched source must be silent before another may take over.
pub const RELATCH_AFTER_SILENCE: Duration = Duration::from_secs(2);

/// Latching state of one peer's RTP (or RTCP) flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LatchState {
    mode: Latch,
    signalled: Option<SocketAddr>,
    latched: Option<SocketAddr>,
    last_seen: Option<Instant>,
    /// The peer this port served in its previous call, refused until the
    /// instant unless signalled now (a reused port never latches onto the
    /// tail of an ended call's stream).
    stale: Option<(SocketAddr, Instant)>,
}

impl LatchState {
    /// A fresh state.
    pub fn new(mode: Latch, signalled: Option<SocketAddr>) -> Self {
        LatchState {
            mode,
            signalled,
            latched: None,
            last_seen: None,
            stale: None,
        }
    }

    /// The same state, refusing `prev` (the port's previous peer) until
    /// `until` unless it is the signalled address.
    pub fn refusing(mut self, prev: Option<SocketAddr>, until: Instant) -> Self {
        self.stale = prev.map(|p| (p, until));
        self
    }

    /// New signalling; a changed address or mode forgets what was learnt.
    pub fn update(&mut self, mode: Latch, signalled: Option<SocketAddr>) {
        if mode != self.mode || signalled != self.signalled {
            *self = LatchState {
                stale: self.stale,
                ..LatchState::new(mode, signalled)
            };
        }
    }

    /// Whether a packet from `src` at `now` may be processed.
    pub fn accepts(&self, now: Instant, src: SocketAddr) -> bool {
        if let Some((prev, until)) = self.stale
            && prev == src
            && now < until
            && self.signalled != Some(src)
        {
            return false;
        }
        match self.mode {
            Latch::Strict => self.signalled == Some(src),
            Latch::Learn => match (self.latched, self.last_seen) {
                (None, _) => true,
                (Some(l), _) if l == src => true,
                (Some(_), Some(seen)) => {
                    now.saturating_duration_since(seen) >= RELATCH_AFTER_SILENCE
                }
                (Some(_), None) => true,
            },
        }
    }

    /// A valid packet from `src` (already accepted) was processed at `now`.
    pub fn learn(&mut self, now: Instant, src: SocketAddr) {
        if self.mode == Latch::Learn {
            self.latched = Some(src);
        }
        self.last_seen = Some(now);
    }

    /// Where to send to this peer: the latched source, else the signalled
    /// address.
    pub fn target(&self) -> Option<SocketAddr> {
        match self.mode {
            Latch::Strict => self.signalled,
            Latch::Learn => self.latched.or(self.signalled),
        }
    }

    /// The latched source, if any.
    pub fn latched(&self) -> Option<SocketAddr> {
        self.latched
    }

    /// Where this peer's packets are known to come from: the signalled
    /// address under [`Latch::Strict`], the latched source under
    /// [`Latch::Learn`] (none before the first valid packet).
    pub fn source(&self) -> Option<SocketAddr> {
        match self.mode {
            Latch::Strict => self.signalled,
            Latch::Learn => self.latched,
        }
    }

    /// The peer was heard from at `now` without a packet passing through
    /// here (the kernel forwarded it): keeps the latch from being taken
    /// over as if the peer had gone silent.
    pub fn touch(&mut self, now: Instant) {
        self.last_seen = Some(self.last_seen.map_or(now, |t| t.max(now)));
    }
}

#[cfg(test)]
// The tests need one real origin for their virtual times.
#[allow(clippy::disallowed_methods)]
mod tests {
    use super::*;

    fn a(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn learn_latches_first_then_holds() {
        let t = Instant::now();
        let mut l = LatchState::new(Latch::Learn, Some(a("10.0.0.5:4000")));
        assert_eq!(l.target(), Some(a("10.0.0.5:4000")));
        assert!(l.accepts(t, a("127.0.0.10:5555")));
        l.learn(t, a("127.0.0.10:5555"));
        assert_eq!(l.target(), Some(a("127.0.0.10:5555")));
        // Another source, 1 s later: dropped.
        assert!(!l.accepts(t + Duration::from_secs(1), a("127.0.0.66:1")));
        // The latched one keeps talking.
        l.learn(t + Duration::from_secs(1), a("127.0.0.10:5555"));
        assert!(!l.accepts(t + Duration::from_millis(2900), a("127.0.0.66:1")));
        // After 2 s of silence, a new source may take over.
        assert!(l.accepts(t + Duration::from_secs(3), a("127.0.0.66:1")));
        l.learn(t + Duration::from_secs(3), a("127.0.0.66:1"));
        assert_eq!(l.latched(), Some(a("127.0.0.66:1")));
    }

    #[test]
    fn strict_accepts_only_the_signalled_address() {
        let t = Instant::now();
        let mut l = LatchState::new(Latch::Strict, None);
        assert!(!l.accepts(t, a("127.0.0.10:4000")));
        l.update(Latch::Strict, Some(a("127.0.0.10:4000")));
        assert!(l.accepts(t, a("127.0.0.10:4000")));
        assert!(!l.accepts(t, a("127.0.0.10:4001")));
        l.learn(t, a("127.0.0.10:4000"));
        assert_eq!(l.target(), Some(a("127.0.0.10:4000")));
        assert_eq!(l.latched(), None);
    }

    #[test]
    fn a_reused_port_refuses_its_previous_peer_unless_signalled() {
        let t = Instant::now();
        let until = t + Duration::from_secs(10);
        let old = a("127.0.0.10:4000");
        let l =
            LatchState::new(Latch::Learn, Some(a("127.0.0.11:5000"))).refusing(Some(old), until);
        assert!(!l.accepts(t, old), "the ended call's tail does not latch");
        assert!(
            l.accepts(t, a("127.0.0.12:6000")),
            "anyone else may, as before"
        );
        assert!(l.accepts(until, old), "only for a while");
        let mut l = l;
        l.update(Latch::Learn, Some(old));
        assert!(
            l.accepts(t, old),
            "signalled again: the same PBX reusing its port"
        );
        l.update(Latch::Learn, None);
        assert!(!l.accepts(t, old), "the refusal survives new signalling");
    }

    #[test]
    fn new_signalled_address_forgets_the_latch() {
        let t = Instant::now();
        let mut l = LatchState::new(Latch::Learn, Some(a("127.0.0.10:4000")));
        l.learn(t, a("127.0.0.10:4002"));
        l.update(Latch::Learn, Some(a("127.0.0.10:4000")));
        assert_eq!(
            l.latched(),
            Some(a("127.0.0.10:4002")),
            "same signalling keeps it"
        );
        l.update(Latch::Learn, Some(a("127.0.0.11:4000")));
        assert_eq!(l.latched(), None);
        assert_eq!(l.target(), Some(a("127.0.0.11:4000")));
    }
}
