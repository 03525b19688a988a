//! Media port pools: one per zone, over the zone's `media` range.
//!
//! A slot is an even RTP port and the odd RTCP port above it (used or not:
//! with rtcp-mux the pair stays reserved, so a renegotiation without mux
//! never needs a new port). Allocation and release are O(1): a FIFO of free
//! slots (so a port just released is the last to be reused) and an in-use
//! bitmap that makes a double release harmless.

use std::collections::VecDeque;
use std::net::IpAddr;

use palisade_config::MediaRange;

/// The free and used RTP ports of one zone.
#[derive(Debug, Clone)]
pub struct PortPool {
    address: IpAddr,
    first: u16,
    free: VecDeque<u16>,
    used: Vec<bool>,
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
        }
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
        self.used.len() - self.free.len()
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
        if let Some(i) = self.index(port)
            && let Some(u) = self.used.get_mut(i)
        {
            *u = true;
        }
        Some(port)
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
