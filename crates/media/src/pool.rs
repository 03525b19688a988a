//! Media port pools: one per zone, over the zone's `media` range.
//!
//! A slot is an even RTP port and the odd RTCP port above it (used or not:
//! with rtcp-mux the pair stays reserved, so a renegotiation without mux
//! never needs a new port). Allocation and release are O(1): a FIFO of free
//! slots (so a port is reused as late as possible) and an in-use bitmap
//! that makes a double release harmless.
//!
//! *Warm* ports: when the relay closed a call's session, it keeps the
//! sockets bound for [`palisade_relay::SPARE_IDLE`] (spares). A port
//! released that way goes to the warm list of the relay thread that had the
//! session; a new session of the same thread takes a warm port between
//! [`WARM_MIN`] and [`palisade_relay::SPARE_REUSE`] old before any cold
//! one, so its sockets cost no system call and its Open needs no wakeup.
//! Older warm ports go back to the cold FIFO. The spares are shared by all
//! relay threads, so handing a warm port to another thread (when no other
//! port is left) is only slower, never wrong.

use std::collections::VecDeque;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use palisade_config::MediaRange;

/// A released port is not reused before this (packets of the ended call
/// still in flight reach the spare and are dropped).
pub const WARM_MIN: Duration = Duration::from_secs(1);

/// The free and used RTP ports of one zone.
#[derive(Debug, Clone)]
pub struct PortPool {
    address: IpAddr,
    first: u16,
    free: VecDeque<u16>,
    used: Vec<bool>,
    /// Per relay thread: ports whose sockets may still be bound as spares,
    /// in release order.
    warm: Vec<VecDeque<(u16, Instant)>>,
    /// Warm ports kept per relay thread at most (more go cold).
    warm_cap: usize,
}

impl PortPool {
    /// A pool over `range`: RTP ports `port_min, port_min + 2, ...` whose RTCP
    /// port (+1) is still `<= port_max`.
    pub fn new(range: &MediaRange) -> Self {
        let first = range.port_min + range.port_min % 2;
        let mut free = VecDeque::new();
        let mut p = u32::from(first);
        while p < u32::from(range.port_max) {
            free.push_back(p as u16);
            p += 2;
        }
        let used = vec![false; free.len()];
        PortPool {
            address: range.address,
            first,
            free,
            used,
            warm: Vec::new(),
            warm_cap: usize::MAX,
        }
    }

    /// Keeps at most `cap` warm ports per relay thread: a thread's spare
    /// sockets are capped ([`palisade_relay::SPARE_CAP`]), and a port taken
    /// as warm should find its sockets still there.
    pub fn with_warm_cap(mut self, cap: usize) -> Self {
        self.warm_cap = cap;
        self
    }

    /// The address media of this zone is bound to.
    pub fn address(&self) -> IpAddr {
        self.address
    }

    /// Slots in the pool.
    pub fn capacity(&self) -> usize {
        self.used.len()
    }

    /// Slots in use (allocated and not yet released).
    pub fn in_use(&self) -> usize {
        let warm: usize = self.warm.iter().map(VecDeque::len).sum();
        self.used.len() - self.free.len() - warm
    }

    fn index(&self, port: u16) -> Option<usize> {
        if port < self.first || !(port - self.first).is_multiple_of(2) {
            return None;
        }
        let i = usize::from((port - self.first) / 2);
        (i < self.used.len()).then_some(i)
    }

    /// Takes a free RTP port, or `None` when the range is exhausted.
    pub fn allocate(&mut self) -> Option<u16> {
        let port = self.free.pop_front()?;
        self.mark_used(port);
        Some(port)
    }

    fn mark_used(&mut self, port: u16) {
        if let Some(i) = self.index(port)
            && let Some(u) = self.used.get_mut(i)
        {
            *u = true;
        }
    }

    /// Takes a port for a session of relay thread `lane` at `now`: a warm
    /// one of that thread if one is ready (`true`: its sockets are most
    /// likely spares of that thread), else a cold one; when none is left, a
    /// warm one of that thread younger than [`WARM_MIN`] (`true`), else one
    /// of another thread (`false`: its spare moves threads).
    pub fn allocate_for(&mut self, lane: usize, now: Instant) -> Option<(u16, bool)> {
        self.cool(now);
        if let Some(w) = self.warm.get_mut(lane)
            && let Some(&(port, at)) = w.front()
            && now.saturating_duration_since(at) >= WARM_MIN
        {
            w.pop_front();
            self.mark_used(port);
            return Some((port, true));
        }
        if let Some(port) = self.allocate() {
            return Some((port, false));
        }
        if let Some((port, _)) = self.warm.get_mut(lane).and_then(VecDeque::pop_front) {
            self.mark_used(port);
            return Some((port, true));
        }
        let (port, _) = self.warm.iter_mut().find_map(VecDeque::pop_front)?;
        self.mark_used(port);
        Some((port, false))
    }

    /// Warm ports past [`palisade_relay::SPARE_REUSE`] become cold.
    fn cool(&mut self, now: Instant) {
        for w in &mut self.warm {
            while let Some(&(port, at)) = w.front() {
                if now.saturating_duration_since(at) < palisade_relay::SPARE_REUSE {
                    break;
                }
                w.pop_front();
                self.free.push_back(port);
            }
        }
    }

    /// Returns `port`, released at `now` by relay thread `lane`, whose
    /// sockets that thread may keep bound as spares. A port not in use is
    /// ignored.
    pub fn release_warm(&mut self, port: u16, lane: usize, now: Instant) -> bool {
        let Some(i) = self.index(port) else {
            return false;
        };
        match self.used.get_mut(i) {
            Some(u) if *u => {
                *u = false;
                if self.warm.len() <= lane {
                    self.warm.resize_with(lane + 1, VecDeque::new);
                }
                if self.warm[lane].len() < self.warm_cap {
                    self.warm[lane].push_back((port, now));
                } else {
                    self.free.push_back(port);
                }
                true
            }
            _ => false,
        }
    }

    /// Returns `port` to the pool; a port not in use is ignored.
    pub fn release(&mut self, port: u16) -> bool {
        let Some(i) = self.index(port) else {
            return false;
        };
        match self.used.get_mut(i) {
            Some(u) if *u => {
                *u = false;
                self.free.push_back(port);
                true
            }
            _ => false,
        }
    }
}

#[cfg(test)]
// The tests need one real origin for their virtual times.
#[allow(clippy::disallowed_methods)]
mod tests {
    use super::*;

    fn range(min: u16, max: u16) -> MediaRange {
        MediaRange {
            address: "127.0.0.1".parse().unwrap(),
            port_min: min,
            port_max: max,
        }
    }

    #[test]
    fn even_ports_with_room_for_rtcp() {
        let mut p = PortPool::new(&range(20000, 20005));
        assert_eq!(p.capacity(), 3);
        assert_eq!(p.allocate(), Some(20000));
        assert_eq!(p.allocate(), Some(20002));
        assert_eq!(p.allocate(), Some(20004));
        assert_eq!(p.allocate(), None);
        assert_eq!(p.in_use(), 3);
        let p = PortPool::new(&range(20000, 20004));
        assert_eq!(p.capacity(), 2, "20004 has no RTCP port inside the range");
        assert_eq!(PortPool::new(&range(65534, 65535)).capacity(), 1);
    }

    #[test]
    fn warm_ports_return_to_their_thread_then_go_cold() {
        let t = Instant::now();
        let s = |n: u64| t + Duration::from_secs(n);
        let mut p = PortPool::new(&range(20000, 20007));
        let a = p.allocate_for(0, t).unwrap();
        let b = p.allocate_for(1, t).unwrap();
        assert_eq!((a, b), ((20000, false), (20002, false)));
        assert!(p.release_warm(20000, 0, t));
        assert!(!p.release_warm(20000, 0, t), "double release ignored");
        assert!(p.release_warm(20002, 1, t));
        assert_eq!(p.in_use(), 0);
        // Too fresh: cold ports first.
        assert_eq!(p.allocate_for(0, t), Some((20004, false)));
        // Ready: the thread's own warm port.
        assert_eq!(p.allocate_for(0, s(2)), Some((20000, true)));
        assert_eq!(p.allocate_for(0, s(2)), Some((20006, false)));
        // Nothing else left: thread 1's warm port, as a cold one for thread 0.
        assert_eq!(p.allocate_for(0, s(2)), Some((20002, false)));
        assert_eq!(p.allocate_for(0, s(2)), None);
        // Past SPARE_REUSE a warm port is an ordinary cold one.
        p.release_warm(20002, 1, s(3));
        assert_eq!(p.allocate_for(1, s(12)), Some((20002, false)));
    }

    #[test]
    fn warm_ports_over_the_cap_go_cold() {
        let t = Instant::now();
        let mut p = PortPool::new(&range(20000, 20005)).with_warm_cap(1);
        for _ in 0..3 {
            p.allocate_for(0, t).unwrap();
        }
        p.release_warm(20000, 0, t);
        p.release_warm(20002, 0, t);
        let later = t + Duration::from_secs(2);
        assert_eq!(p.allocate_for(0, later), Some((20000, true)));
        assert_eq!(p.allocate_for(0, later), Some((20002, false)));
    }

    #[test]
    fn under_exhaustion_a_fresh_warm_port_of_the_thread_is_used() {
        let t = Instant::now();
        let mut p = PortPool::new(&range(20000, 20001));
        assert_eq!(p.allocate_for(0, t), Some((20000, false)));
        p.release_warm(20000, 0, t);
        assert_eq!(p.allocate_for(0, t), Some((20000, true)));
    }

    proptest::proptest! {
        /// Whatever the order of allocations and releases (warm or cold,
        /// any thread, any time), a port in use is never handed out again,
        /// and every slot is in use, free or warm.
        #[test]
        fn a_port_is_never_given_twice(ops in proptest::collection::vec((0u8..3, 0usize..3, 0u64..20), 1..200)) {
            let t0 = Instant::now();
            let mut p = PortPool::new(&range(20000, 20019)).with_warm_cap(3);
            let mut held: Vec<u16> = Vec::new();
            let mut clock = 0u64;
            for (op, lane, step) in ops {
                clock += step;
                let now = t0 + Duration::from_millis(clock * 250);
                match op {
                    0 => {
                        if let Some((port, _)) = p.allocate_for(lane, now) {
                            proptest::prop_assert!(!held.contains(&port), "{port} given twice");
                            held.push(port);
                        }
                    }
                    1 if !held.is_empty() => {
                        let port = held.remove(step as usize % held.len());
                        proptest::prop_assert!(p.release_warm(port, lane, now));
                    }
                    _ if !held.is_empty() => {
                        let port = held.remove(step as usize % held.len());
                        proptest::prop_assert!(p.release(port));
                    }
                    _ => {}
                }
                proptest::prop_assert_eq!(p.in_use(), held.len());
            }
        }
    }

    #[test]
    fn release_is_fifo_and_idempotent() {
        let mut p = PortPool::new(&range(20000, 20007));
        let a = p.allocate().unwrap();
        let b = p.allocate().unwrap();
        assert!(p.release(a));
        assert!(!p.release(a), "double release ignored");
        assert!(!p.release(20001), "odd port ignored");
        assert!(!p.release(40000), "foreign port ignored");
        assert_eq!(p.allocate(), Some(20004));
        assert_eq!(p.allocate(), Some(20006));
        assert_eq!(p.allocate(), Some(a));
        assert_eq!(p.allocate(), None);
        assert!(p.release(b));
        assert_eq!(p.in_use(), 3);
    }
}
