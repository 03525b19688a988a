//! Counting primitives, all O(1) in memory: a token bucket, a fixed window
//! counter, a sliding window of 32 slots, and a bounded set of distinct keys.

use std::time::{Duration, Instant};

use palisade_config::RateLimit;

/// Micro-tokens per token: integer arithmetic, no drift, never negative.
const SCALE: u64 = 1_000_000;

/// A token bucket that starts full.
#[derive(Debug, Clone, Copy)]
pub struct TokenBucket {
    micro: u64,
    last: Instant,
}

impl TokenBucket {
    /// A full bucket for `limit`.
    pub fn new(now: Instant, limit: RateLimit) -> Self {
        TokenBucket {
            micro: u64::from(limit.burst) * SCALE,
            last: now,
        }
    }

    /// Takes one token; `false` when the bucket is empty (over the rate).
    pub fn take(&mut self, now: Instant, limit: RateLimit) -> bool {
        let cap = u64::from(limit.burst.max(1)) * SCALE;
        let elapsed = now.saturating_duration_since(self.last);
        let add = u64::try_from(elapsed.as_micros())
            .unwrap_or(u64::MAX)
            .saturating_mul(u64::from(limit.per_second));
        self.micro = self.micro.saturating_add(add).min(cap);
        if now > self.last {
            self.last = now;
        }
        if self.micro >= SCALE {
            self.micro -= SCALE;
            true
        } else {
            false
        }
    }

    /// Whole tokens left.
    pub fn tokens(&self) -> u64 {
        self.micro / SCALE
    }
}

/// Events in a window that starts at the first event and restarts after
/// `window` (cheap, slightly lenient at the boundary).
#[derive(Debug, Clone, Copy)]
pub struct WindowCount {
    start: Instant,
    count: u32,
}

impl WindowCount {
    /// Empty, starting now.
    pub fn new(now: Instant) -> Self {
        WindowCount {
            start: now,
            count: 0,
        }
    }

    /// Counts one event; returns the count in the current window.
    pub fn hit(&mut self, now: Instant, window: Duration) -> u32 {
        if now.saturating_duration_since(self.start) >= window {
            self.start = now;
            self.count = 0;
        }
        self.count = self.count.saturating_add(1);
        self.count
    }

    /// The count in the current window.
    pub fn count(&self, now: Instant, window: Duration) -> u32 {
        if now.saturating_duration_since(self.start) >= window {
            0
        } else {
            self.count
        }
    }
}

/// Distinct keys (hashes) seen in a window, remembering at most `cap` of
/// them: enough to know the threshold was reached.
#[derive(Debug, Clone)]
pub struct DistinctCount {
    start: Instant,
    keys: Vec<u64>,
}

impl DistinctCount {
    /// Empty, starting now.
    pub fn new(now: Instant) -> Self {
        DistinctCount {
            start: now,
            keys: Vec::new(),
        }
    }

    /// Adds `key`; returns the number of distinct keys in the window (at
    /// most `cap`).
    pub fn add(&mut self, now: Instant, window: Duration, key: u64, cap: usize) -> usize {
        if now.saturating_duration_since(self.start) >= window {
            self.start = now;
            self.keys.clear();
        }
        if !self.keys.contains(&key) && self.keys.len() < cap {
            self.keys.push(key);
        }
        self.keys.len()
    }
}

/// Slots in a [`Sliding`] window.
pub const SLOTS: usize = 32;

/// A sliding-window event count in 32 slots: exact to 1/32 of the window,
/// constant memory whatever the rate.
#[derive(Debug, Clone, Copy)]
pub struct Sliding {
    slots: [u32; SLOTS],
    /// Slot number (time / slot length) of the newest slot.
    head: u64,
    origin: Instant,
}

impl Sliding {
    /// Empty; `origin` anchors slot numbering.
    pub fn new(origin: Instant) -> Self {
        Sliding {
            slots: [0; SLOTS],
            head: 0,
            origin,
        }
    }

    fn slot_len(window: Duration) -> Duration {
        (window / SLOTS as u32).max(Duration::from_millis(1))
    }

    fn advance(&mut self, now: Instant, window: Duration) {
        let len = Self::slot_len(window).as_micros().max(1);
        let n = u64::try_from(now.saturating_duration_since(self.origin).as_micros() / len)
            .unwrap_or(u64::MAX);
        if n <= self.head {
            return;
        }
        let gap = n - self.head;
        if gap >= SLOTS as u64 {
            self.slots = [0; SLOTS];
        } else {
            for k in 1..=gap {
                let i = ((self.head + k) % SLOTS as u64) as usize;
                if let Some(s) = self.slots.get_mut(i) {
                    *s = 0;
                }
            }
        }
        self.head = n;
    }

    /// Counts one event at `now`; returns the count in the window.
    pub fn hit(&mut self, now: Instant, window: Duration) -> u64 {
        self.advance(now, window);
        let i = (self.head % SLOTS as u64) as usize;
        if let Some(s) = self.slots.get_mut(i) {
            *s = s.saturating_add(1);
        }
        self.total()
    }

    /// The count in the window ending at `now`.
    pub fn count(&mut self, now: Instant, window: Duration) -> u64 {
        self.advance(now, window);
        self.total()
    }

    fn total(&self) -> u64 {
        self.slots.iter().map(|&s| u64::from(s)).sum()
    }
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)] // the virtual clock needs one real origin
mod tests {
    use super::*;

    fn rl(per_second: u32, burst: u32) -> RateLimit {
        RateLimit { per_second, burst }
    }

    #[test]
    fn bucket_allows_burst_then_rate() {
        let t0 = Instant::now();
        let l = rl(10, 5);
        let mut b = TokenBucket::new(t0, l);
        for _ in 0..5 {
            assert!(b.take(t0, l));
        }
        assert!(!b.take(t0, l));
        // 100 ms at 10/s is one token.
        assert!(b.take(t0 + Duration::from_millis(100), l));
        assert!(!b.take(t0 + Duration::from_millis(100), l));
        // A long pause refills to the burst, not beyond.
        let t = t0 + Duration::from_secs(60);
        for _ in 0..5 {
            assert!(b.take(t, l));
        }
        assert!(!b.take(t, l));
    }

    #[test]
    fn window_count_restarts() {
        let t0 = Instant::now();
        let w = Duration::from_secs(10);
        let mut c = WindowCount::new(t0);
        assert_eq!(c.hit(t0, w), 1);
        assert_eq!(c.hit(t0 + Duration::from_secs(9), w), 2);
        assert_eq!(c.hit(t0 + Duration::from_secs(10), w), 1);
        assert_eq!(c.count(t0 + Duration::from_secs(30), w), 0);
    }

    #[test]
    fn distinct_is_capped_and_windowed() {
        let t0 = Instant::now();
        let w = Duration::from_secs(60);
        let mut d = DistinctCount::new(t0);
        for k in 0..100 {
            d.add(t0, w, k % 7, 5);
        }
        assert_eq!(d.add(t0, w, 1, 5), 5);
        assert_eq!(d.add(t0 + w, w, 1, 5), 1);
    }

    #[test]
    fn sliding_forgets_old_slots() {
        let t0 = Instant::now();
        let w = Duration::from_secs(32);
        let mut s = Sliding::new(t0);
        for i in 0..10 {
            s.hit(t0 + Duration::from_secs(i), w);
        }
        assert_eq!(s.count(t0 + Duration::from_secs(10), w), 10);
        // At t=37 the window is (5, 37]: the events at t=6..=9 remain.
        assert_eq!(s.count(t0 + Duration::from_secs(37), w), 4);
        assert_eq!(s.count(t0 + Duration::from_secs(100), w), 0);
    }
}
