//! Call admission control: per trunk and per zone, concurrent calls and
//! new calls per second (a token bucket on the engine's clock). Emergency
//! numbers are admitted past every limit (and still counted). Calls hold
//! their slots from admission until they end.

use std::collections::HashMap;
use std::time::Instant;

use palisade_config::{Config, TrunkId, ZoneId};

use super::Engine;
use crate::{CallRef, Event, Flow};

/// What a limit is about. Names, not ids: a reload keeps the counts.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(super) enum CacKey {
    Trunk(String),
    Zone(u16),
}

/// A token bucket: `rate` tokens per second, at most `rate` stored.
#[derive(Debug, Clone, Copy)]
pub(super) struct Bucket {
    tokens: f64,
    last: Instant,
}

impl Bucket {
    fn refill(&mut self, now: Instant, rate: u32) {
        let rate = f64::from(rate.max(1));
        let dt = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + dt * rate).min(rate);
        self.last = now;
    }
}

/// Why a call was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Refusal {
    Concurrent,
    Cps,
}

impl Refusal {
    pub fn reason(self) -> &'static str {
        match self {
            Refusal::Concurrent => "cac-concurrent",
            Refusal::Cps => "cac-cps",
        }
    }
}

/// Counts and buckets.
#[derive(Debug, Default)]
pub(super) struct Cac {
    counts: HashMap<CacKey, u32>,
    buckets: HashMap<CacKey, Bucket>,
    held: HashMap<CallRef, Vec<CacKey>>,
}

impl Cac {
    /// Admits a call against `limits` (key, limits) or says which limit it
    /// breaks (with the status to answer). `exempt` calls are admitted and counted.
    pub fn admit(
        &mut self,
        now: Instant,
        call: CallRef,
        limits: &[(CacKey, palisade_config::Cac)],
        exempt: bool,
    ) -> Result<bool, (Refusal, u16)> {
        let mut breaks: Option<(Refusal, u16)> = None;
        for (key, l) in limits {
            if l.max_concurrent_calls > 0
                && self.counts.get(key).copied().unwrap_or(0) >= l.max_concurrent_calls
            {
                breaks = breaks.or(Some((Refusal::Concurrent, l.reject_status)));
            }
            if l.max_calls_per_second > 0 {
                let b = self.buckets.entry(key.clone()).or_insert(Bucket {
                    tokens: f64::from(l.max_calls_per_second),
                    last: now,
                });
                b.refill(now, l.max_calls_per_second);
                if b.tokens < 1.0 {
                    breaks = breaks.or(Some((Refusal::Cps, l.reject_status)));
                }
            }
        }
        if let Some(b) = breaks
            && !exempt
        {
            return Err(b);
        }
        let mut keys = Vec::with_capacity(limits.len());
        for (key, l) in limits {
            if l.max_calls_per_second > 0
                && let Some(b) = self.buckets.get_mut(key)
            {
                // Emergency calls may drive a bucket below zero; it refills.
                b.tokens -= 1.0;
            }
            *self.counts.entry(key.clone()).or_insert(0) += 1;
            keys.push(key.clone());
        }
        self.held.insert(call, keys);
        Ok(breaks.is_some())
    }

    /// The call ended: its slots are free.
    pub fn release(&mut self, call: CallRef) {
        let Some(keys) = self.held.remove(&call) else {
            return;
        };
        for k in keys {
            if let Some(n) = self.counts.get_mut(&k) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    self.counts.remove(&k);
                }
            }
        }
    }

    /// Calls holding slots (for leak checks).
    pub fn held(&self) -> usize {
        self.held.len()
    }

    /// Concurrent calls counted against `key`.
    #[cfg(test)]
    pub fn count(&self, key: &CacKey) -> u32 {
        self.counts.get(key).copied().unwrap_or(0)
    }
}

/// The limits that apply to a call between these trunks and zones
/// (a zone or trunk on both legs counts once).
pub(super) fn limits_for(
    cfg: &Config,
    trunks: [TrunkId; 2],
    zones: [ZoneId; 2],
) -> Vec<(CacKey, palisade_config::Cac)> {
    let mut out: Vec<(CacKey, palisade_config::Cac)> = Vec::new();
    for t in trunks {
        if let Some(t) = cfg.trunk(t) {
            let key = CacKey::Trunk(t.name.clone());
            if !t.cac.is_unlimited() && !out.iter().any(|(k, _)| *k == key) {
                out.push((key, t.cac));
            }
        }
    }
    for z in zones {
        if let Some(zone) = cfg.zone(z) {
            let key = CacKey::Zone(z.0);
            if !zone.cac.is_unlimited() && !out.iter().any(|(k, _)| *k == key) {
                out.push((key, zone.cac));
            }
        }
    }
    out
}

impl Engine {
    /// Admission of a new call; on refusal the caller has been answered
    /// (status and Retry-After per config) and the refusal counted.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn cac_admit(
        &mut self,
        now: Instant,
        flow: Flow,
        msg: &palisade_sip::Message,
        call: CallRef,
        trunks: [TrunkId; 2],
        zones: [ZoneId; 2],
        number: &str,
    ) -> bool {
        let cfg = std::sync::Arc::clone(&self.cfg);
        let limits = limits_for(&cfg, trunks, zones);
        if limits.is_empty() {
            return true;
        }
        let exempt = cfg.call_admission().is_emergency(number);
        match self.edge.cac.admit(now, call, &limits, exempt) {
            Ok(over) => {
                if over {
                    self.edge.stats.cac_emergency_exempted += 1;
                }
                true
            }
            Err((why, status)) => {
                match why {
                    Refusal::Concurrent => self.edge.stats.cac_rejected_concurrent += 1,
                    Refusal::Cps => self.edge.stats.cac_rejected_cps += 1,
                }
                let retry = cfg.call_admission().retry_after_seconds;
                self.reject_with_retry(flow, msg, status, why.reason(), retry);
                false
            }
        }
    }

    /// Answers a request that creates nothing with `status` (503 gets
    /// Retry-After: `retry` seconds) and reports it.
    pub(super) fn reject_with_retry(
        &mut self,
        flow: Flow,
        msg: &palisade_sip::Message,
        status: u16,
        why: &'static str,
        retry: u32,
    ) {
        let method = msg
            .method()
            .cloned()
            .unwrap_or(palisade_sip::Method::Options);
        self.respond_stateless(flow, msg, status, |w| {
            if status == 503 {
                w.header_fmt(
                    palisade_sip::HeaderName::RetryAfter,
                    format_args!("{retry}"),
                );
            }
        });
        if method == palisade_sip::Method::Invite {
            self.stats.calls_rejected += 1;
        }
        self.emit(Event::Rejected {
            flow,
            method,
            status,
            reason: why,
        });
    }

    /// The edge's share of ending a call: admission slots and the
    /// registered target are released.
    pub(super) fn edge_call_ended(&mut self, c: CallRef) {
        self.edge.cac.release(c);
        self.edge.registered_targets.remove(&c);
        self.edge.pending_auth.remove(&c);
    }

    /// Calls holding admission slots (a leak check for tests).
    pub fn cac_held_calls(&self) -> usize {
        self.edge.cac.held()
    }
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)] // tests: one real origin for the virtual clock
mod tests {
    use super::*;
    use std::time::Duration;

    fn lim(conc: u32, cps: u32) -> palisade_config::Cac {
        let mut c = palisade_config::Cac::default();
        c.max_concurrent_calls = conc;
        c.max_calls_per_second = cps;
        c.reject_status = 503;
        c
    }

    #[test]
    fn concurrent_limit_and_release() {
        let t0 = Instant::now();
        let mut c = Cac::default();
        let l = [(CacKey::Trunk("t".into()), lim(2, 0))];
        assert_eq!(c.admit(t0, CallRef(1), &l, false), Ok(false));
        assert_eq!(c.admit(t0, CallRef(2), &l, false), Ok(false));
        assert_eq!(
            c.admit(t0, CallRef(3), &l, false),
            Err((Refusal::Concurrent, 503))
        );
        // Emergency calls pass and are counted.
        assert_eq!(c.admit(t0, CallRef(4), &l, true), Ok(true));
        assert_eq!(c.count(&CacKey::Trunk("t".into())), 3);
        c.release(CallRef(1));
        c.release(CallRef(4));
        c.release(CallRef(4));
        assert_eq!(c.admit(t0, CallRef(5), &l, false), Ok(false));
        for i in [2, 5] {
            c.release(CallRef(i));
        }
        assert_eq!(c.held(), 0);
        assert_eq!(c.count(&CacKey::Trunk("t".into())), 0);
    }

    #[test]
    fn token_bucket_on_the_virtual_clock() {
        let t0 = Instant::now();
        let mut c = Cac::default();
        let l = [(CacKey::Zone(1), lim(0, 5))];
        let mut admitted = 0;
        for i in 0..10 {
            if c.admit(t0, CallRef(i), &l, false).is_ok() {
                admitted += 1;
            }
        }
        assert_eq!(admitted, 5, "burst = the rate");
        // 200 ms later one token is back.
        let t1 = t0 + Duration::from_millis(200);
        assert!(c.admit(t1, CallRef(100), &l, false).is_ok());
        assert_eq!(
            c.admit(t1, CallRef(101), &l, false),
            Err((Refusal::Cps, 503))
        );
        // A long pause refills up to the burst only.
        let t2 = t1 + Duration::from_secs(60);
        let ok = (200..220)
            .filter(|i| c.admit(t2, CallRef(*i), &l, false).is_ok())
            .count();
        assert_eq!(ok, 5);
        // A refused call takes no token: the rate holds over 10 s.
        let mut n = 0;
        for ms in (0..10_000).step_by(10) {
            let t = t2 + Duration::from_secs(1) + Duration::from_millis(ms);
            if c.admit(t, CallRef(1000 + ms), &l, false).is_ok() {
                n += 1;
            }
        }
        // A full bucket (5) plus 5 per second over 10 s (the last 10 ms short).
        assert!((53..=55).contains(&n), "{n} calls in 10 s at 5/s");
    }

    #[test]
    fn one_limit_breaks_the_call_without_consuming_the_others() {
        let t0 = Instant::now();
        let mut c = Cac::default();
        let l = [
            (CacKey::Trunk("a".into()), lim(0, 1)),
            (CacKey::Zone(0), lim(1, 0)),
        ];
        assert!(c.admit(t0, CallRef(1), &l, false).is_ok());
        let later = t0 + Duration::from_secs(5);
        assert_eq!(
            c.admit(later, CallRef(2), &l, false),
            Err((Refusal::Concurrent, 503))
        );
        c.release(CallRef(1));
        assert!(
            c.admit(later, CallRef(3), &l, false).is_ok(),
            "the bucket kept its token"
        );
    }
}
