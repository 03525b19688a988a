//! When each member is resolved again (sans-IO, on an injected clock).
//!
//! - Found: the answer is good for its smallest TTL, clamped to
//!   `dns.min_ttl_seconds..=dns.max_ttl_seconds`; it is refreshed when four
//!   fifths of that have passed, so a fresh answer is in place before the
//!   old one expires.
//! - Negative (NXDOMAIN, NODATA, nothing usable): the SOA's negative TTL,
//!   or `dns.negative_ttl_seconds`, clamped the same way (negative caching,
//!   RFC 2308). The trunk has no targets from this member meanwhile.
//! - Failed (timeout, SERVFAIL): retried after 1 s, doubling up to 60 s
//!   (and never later than a Found answer would have been refreshed); the
//!   last good targets stay in use (serve-stale, RFC 8767).

use std::time::{Duration, Instant};

use palisade_config::Dns;

use crate::rfc3263::Outcome;

/// First retry after a failed lookup.
pub const RETRY_MIN: Duration = Duration::from_secs(1);
/// Longest wait between retries after failed lookups.
pub const RETRY_MAX: Duration = Duration::from_secs(60);

fn clamp(secs: u64, cfg: &Dns) -> Duration {
    Duration::from_secs(secs).clamp(cfg.min_ttl, cfg.max_ttl)
}

/// Refresh schedule of one member.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refresh {
    /// When to resolve next; `None` = now (never resolved).
    pub next: Option<Instant>,
    /// Consecutive failed resolutions.
    pub failures: u32,
}

impl Default for Refresh {
    fn default() -> Self {
        Refresh::new()
    }
}

impl Refresh {
    /// Never resolved: due at once.
    pub fn new() -> Refresh {
        Refresh {
            next: None,
            failures: 0,
        }
    }

    /// Whether a resolution is due at `now`.
    pub fn due(&self, now: Instant) -> bool {
        self.next.is_none_or(|t| t <= now)
    }

    /// Records a resolution that ended at `now` with `outcome`.
    pub fn record(&mut self, now: Instant, outcome: &Outcome, cfg: &Dns) {
        let wait = match outcome {
            Outcome::Found { ttl, .. } => {
                self.failures = 0;
                clamp(u64::from(*ttl), cfg) * 4 / 5
            }
            Outcome::Negative { ttl } => {
                self.failures = 0;
                ttl.map_or(cfg.negative_ttl, |t| clamp(u64::from(t), cfg))
            }
            Outcome::Failed(_) => {
                let backoff = RETRY_MIN
                    .saturating_mul(1u32 << self.failures.min(16))
                    .min(RETRY_MAX)
                    .min(cfg.max_ttl);
                self.failures = self.failures.saturating_add(1);
                backoff
            }
        };
        self.next = Some(now + wait);
    }
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)] // the virtual clock needs one real origin
mod tests {
    use super::*;
    use crate::rfc3263::Resolved;

    fn cfg(min: u64, max: u64, neg: u64) -> Dns {
        let text = format!(
            "dns:\n  min_ttl_seconds: {min}\n  max_ttl_seconds: {max}\n  negative_ttl_seconds: {neg}\nzones:\n  - name: z\n    sip_address: 127.0.0.1\ntrunks:\n  - name: t\n    zone: z\n    members:\n      - address: 127.0.0.9\nroutes:\n  - name: r\n    to_trunk: t\n"
        );
        palisade_config::load_str(&text, "t.yaml")
            .unwrap()
            .dns()
            .clone()
    }

    fn found(ttl: u32) -> Outcome {
        Outcome::Found {
            targets: vec![Resolved {
                addr: "127.0.0.20:5060".parse().unwrap(),
                transport: palisade_sip::Transport::Udp,
            }],
            ttl,
        }
    }

    #[test]
    fn refresh_before_ttl_expiry_clamped_to_bounds() {
        let c = cfg(5, 3600, 30);
        let t0 = Instant::now();
        let mut r = Refresh::new();
        assert!(r.due(t0), "never resolved: due at once");
        r.record(t0, &found(100), &c);
        assert_eq!(r.next, Some(t0 + Duration::from_secs(80)));
        assert!(!r.due(t0 + Duration::from_secs(79)));
        assert!(r.due(t0 + Duration::from_secs(80)));
        // TTL 0 and 1 are raised to min_ttl; huge TTLs cut to max_ttl.
        r.record(t0, &found(0), &c);
        assert_eq!(r.next, Some(t0 + Duration::from_secs(4)));
        r.record(t0, &found(1_000_000), &c);
        assert_eq!(r.next, Some(t0 + Duration::from_secs(2880)));
    }

    #[test]
    fn negative_answers_are_cached_for_the_soa_ttl_or_the_default() {
        let c = cfg(5, 3600, 30);
        let t0 = Instant::now();
        let mut r = Refresh::new();
        r.record(t0, &Outcome::Negative { ttl: None }, &c);
        assert_eq!(r.next, Some(t0 + Duration::from_secs(30)));
        r.record(t0, &Outcome::Negative { ttl: Some(600) }, &c);
        assert_eq!(r.next, Some(t0 + Duration::from_secs(600)));
        r.record(t0, &Outcome::Negative { ttl: Some(1) }, &c);
        assert_eq!(r.next, Some(t0 + Duration::from_secs(5)));
    }

    #[test]
    fn failures_back_off_and_success_resets() {
        let c = cfg(1, 3600, 30);
        let t0 = Instant::now();
        let mut r = Refresh::new();
        let mut waits = Vec::new();
        for _ in 0..9 {
            r.record(t0, &Outcome::Failed("timeout".into()), &c);
            waits.push(r.next.unwrap() - t0);
        }
        let secs: Vec<u64> = waits.iter().map(Duration::as_secs).collect();
        assert_eq!(secs, [1, 2, 4, 8, 16, 32, 60, 60, 60]);
        r.record(t0, &found(10), &c);
        assert_eq!(r.failures, 0);
        assert_eq!(r.next, Some(t0 + Duration::from_secs(8)));
        // A small max_ttl bounds the backoff too.
        let c = cfg(1, 3, 30);
        let mut r = Refresh::new();
        for _ in 0..5 {
            r.record(t0, &Outcome::Failed("x".into()), &c);
        }
        assert_eq!(r.next, Some(t0 + Duration::from_secs(3)));
    }
}
