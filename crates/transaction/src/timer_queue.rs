//! A deadline queue for an engine that runs many transactions.

use std::cmp::{Ordering, Reverse};
use std::collections::hash_map::Entry as MapEntry;
use std::collections::{BinaryHeap, HashMap};
use std::hash::Hash;
use std::time::Instant;

/// Compaction runs when the heap holds more than this factor times the live
/// entries (plus [`COMPACT_SLACK`], so tiny queues don't compact constantly).
const COMPACT_FACTOR: usize = 2;
const COMPACT_SLACK: usize = 64;

/// One deadline per key, for the engine's transactions: the engine stores
/// each machine's `poll_timeout()` here under the machine's id and asks
/// [`TimerQueue::pop_expired`] which machines need `handle_timeout`.
///
/// * [`schedule`](TimerQueue::schedule) sets or replaces a key's deadline;
///   [`cancel`](TimerQueue::cancel) removes it; both O(log n) amortised.
/// * [`next_deadline`](TimerQueue::next_deadline) is O(1): the earliest live
///   deadline, for the engine's single sleep.
/// * [`pop_expired`](TimerQueue::pop_expired) yields the keys whose deadline
///   is `<= now`, in deadline order (ties in scheduling order), each in
///   O(log n); nothing scans the queue per tick.
///
/// Cancellation is lazy: a binary heap holds `(deadline, generation, key)`
/// entries and a map holds each live key's current generation; a heap entry
/// whose generation is no longer current is stale and skipped. The heap's
/// top is always live, and the heap is compacted (stale entries dropped in
/// O(n)) when it outgrows twice the live entries, so memory stays bounded by
/// the live keys and the compaction cost is amortised O(1) per operation.
/// Scheduling a key again at its current deadline is a no-op, so the common
/// "re-read poll_timeout after every input" adds nothing.
///
/// Keys are cloned once per schedule (one copy in the heap, one in the map):
/// use a cheap key such as a slab index or `u64` id, not a [`crate::ServerKey`].
/// Keys are hashed with [`crate::IdHasher`] (fast, fixed seed): they must be
/// ids the engine generates, never values a peer chooses.
///
/// Written by hand because it is small and must be clock-injected; crates
/// like `tokio-util`'s `DelayQueue` own the clock. A hierarchical timing
/// wheel (O(1) insert and cancel, coarse resolution) may replace it later if
/// profiles show the heap; the API is meant to survive that change.
#[derive(Debug)]
pub struct TimerQueue<K> {
    heap: BinaryHeap<Reverse<HeapEntry<K>>>,
    live: HashMap<K, (u64, Instant), crate::IdHasher>,
    next_generation: u64,
}

#[derive(Debug)]
struct HeapEntry<K> {
    at: Instant,
    generation: u64,
    key: K,
}

// Ordered by (deadline, generation); generations are unique, so this is a
// total order consistent with equality and `K` needs no `Ord`.
impl<K> PartialEq for HeapEntry<K> {
    fn eq(&self, other: &Self) -> bool {
        self.at == other.at && self.generation == other.generation
    }
}
impl<K> Eq for HeapEntry<K> {}
impl<K> PartialOrd for HeapEntry<K> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl<K> Ord for HeapEntry<K> {
    fn cmp(&self, other: &Self) -> Ordering {
        (self.at, self.generation).cmp(&(other.at, other.generation))
    }
}

impl<K: Hash + Eq + Clone> Default for TimerQueue<K> {
    fn default() -> Self {
        Self::new()
    }
}

impl<K: Hash + Eq + Clone> TimerQueue<K> {
    /// An empty queue.
    pub fn new() -> Self {
        TimerQueue {
            heap: BinaryHeap::new(),
            live: HashMap::default(),
            next_generation: 0,
        }
    }

    /// An empty queue with room for `capacity` keys.
    pub fn with_capacity(capacity: usize) -> Self {
        TimerQueue {
            heap: BinaryHeap::with_capacity(capacity),
            live: HashMap::with_capacity_and_hasher(capacity, crate::IdHasher::default()),
            next_generation: 0,
        }
    }

    /// Sets `key`'s deadline, replacing any earlier one.
    pub fn schedule(&mut self, key: K, deadline: Instant) {
        let generation = self.next_generation;
        match self.live.entry(key.clone()) {
            MapEntry::Occupied(mut e) => {
                if e.get().1 == deadline {
                    return;
                }
                e.insert((generation, deadline));
            }
            MapEntry::Vacant(e) => {
                e.insert((generation, deadline));
            }
        }
        self.next_generation = self.next_generation.wrapping_add(1);
        self.heap.push(Reverse(HeapEntry {
            at: deadline,
            generation,
            key,
        }));
        self.tidy();
    }

    /// Sets `key`'s deadline to `deadline`, or removes it when `None`: the
    /// one call an engine makes with a machine's `poll_timeout()`.
    pub fn set(&mut self, key: K, deadline: Option<Instant>) {
        match deadline {
            Some(at) => self.schedule(key, at),
            None => {
                self.cancel(&key);
            }
        }
    }

    /// Removes `key`'s deadline. Returns whether it had one.
    pub fn cancel(&mut self, key: &K) -> bool {
        let had = self.live.remove(key).is_some();
        if had {
            self.tidy();
        }
        had
    }

    /// `key`'s current deadline.
    pub fn deadline(&self, key: &K) -> Option<Instant> {
        self.live.get(key).map(|&(_, at)| at)
    }

    /// The earliest live deadline.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.heap.peek().map(|Reverse(e)| e.at)
    }

    /// Removes and yields, in deadline order, every key whose deadline is
    /// `<= now`. Keys not consumed when the iterator is dropped stay queued.
    pub fn pop_expired(&mut self, now: Instant) -> PopExpired<'_, K> {
        PopExpired { queue: self, now }
    }

    /// Number of keys with a deadline.
    pub fn len(&self) -> usize {
        self.live.len()
    }

    /// Whether no key has a deadline.
    pub fn is_empty(&self) -> bool {
        self.live.is_empty()
    }

    /// Number of heap entries, live and stale (for tests and metrics).
    pub fn heap_len(&self) -> usize {
        self.heap.len()
    }

    /// Removes every deadline.
    pub fn clear(&mut self) {
        self.heap.clear();
        self.live.clear();
    }

    fn is_live(&self, e: &HeapEntry<K>) -> bool {
        self.live.get(&e.key).map(|&(g, _)| g) == Some(e.generation)
    }

    /// Restores the invariants: the heap's top is live, and stale entries
    /// are at most about the live ones.
    fn tidy(&mut self) {
        if self.heap.len() > COMPACT_FACTOR * self.live.len() + COMPACT_SLACK {
            let live = &self.live;
            self.heap
                .retain(|Reverse(e)| live.get(&e.key).map(|&(g, _)| g) == Some(e.generation));
        }
        while let Some(Reverse(top)) = self.heap.peek() {
            if self.is_live(top) {
                break;
            }
            self.heap.pop();
        }
    }
}

/// Iterator returned by [`TimerQueue::pop_expired`].
#[derive(Debug)]
pub struct PopExpired<'a, K: Hash + Eq + Clone> {
    queue: &'a mut TimerQueue<K>,
    now: Instant,
}

impl<K: Hash + Eq + Clone> Iterator for PopExpired<'_, K> {
    type Item = K;

    fn next(&mut self) -> Option<K> {
        // The top is live (see `tidy`), so one pop gives the answer.
        let due = matches!(self.queue.heap.peek(), Some(Reverse(top)) if top.at <= self.now);
        if !due {
            return None;
        }
        let Reverse(entry) = self.queue.heap.pop()?;
        self.queue.live.remove(&entry.key);
        self.queue.tidy();
        Some(entry.key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn pops_in_deadline_order_and_skips_cancelled() {
        let t0 = crate::fuzz::test_origin();
        let s = Duration::from_secs;
        let mut q = TimerQueue::new();
        q.schedule(1u32, t0 + s(3));
        q.schedule(2, t0 + s(1));
        q.schedule(3, t0 + s(2));
        q.schedule(4, t0 + s(2));
        q.schedule(5, t0 + s(10));
        assert_eq!(q.len(), 5);
        assert!(q.cancel(&3));
        assert!(!q.cancel(&3));
        q.schedule(2, t0 + s(4)); // moved later
        assert_eq!(q.deadline(&2), Some(t0 + s(4)));
        assert_eq!(q.next_deadline(), Some(t0 + s(2)));
        assert_eq!(q.pop_expired(t0).count(), 0);
        let got: Vec<u32> = q.pop_expired(t0 + s(4)).collect();
        assert_eq!(got, vec![4, 1, 2]);
        assert_eq!(q.next_deadline(), Some(t0 + s(10)));
        assert_eq!(q.len(), 1);
        q.set(5, None);
        assert!(q.is_empty());
        assert_eq!(q.next_deadline(), None);
    }

    #[test]
    fn equal_deadlines_pop_in_schedule_order_and_rescheduling_same_is_noop() {
        let t0 = crate::fuzz::test_origin();
        let mut q = TimerQueue::new();
        for k in [7u8, 3, 9, 1] {
            q.schedule(k, t0);
        }
        q.schedule(3, t0); // unchanged deadline keeps its place
        assert_eq!(q.heap_len(), 4);
        assert_eq!(q.pop_expired(t0).collect::<Vec<_>>(), vec![7, 3, 9, 1]);
    }

    #[test]
    fn memory_stays_bounded_under_churn() {
        let t0 = crate::fuzz::test_origin();
        let mut q = TimerQueue::new();
        for k in 0..10u32 {
            q.schedule(k, t0 + Duration::from_secs(1000));
        }
        // One hundred thousand reschedules of ten keys to ever earlier
        // deadlines: the stale entries sink below the live ones, so only
        // compaction can drop them.
        let mut compactions_seen = false;
        for i in 0..100_000u64 {
            let k = (i % 10) as u32;
            let before = q.heap_len();
            q.schedule(
                k,
                t0 + Duration::from_secs(1000) - Duration::from_millis(i + 1),
            );
            compactions_seen |= q.heap_len() < before;
            assert!(q.heap_len() <= COMPACT_FACTOR * q.len() + COMPACT_SLACK);
        }
        assert!(compactions_seen);
        assert_eq!(q.len(), 10);
        let order: Vec<u32> = q.pop_expired(t0 + Duration::from_secs(2000)).collect();
        assert_eq!(order, vec![9, 8, 7, 6, 5, 4, 3, 2, 1, 0]);
        assert_eq!(q.heap_len(), 0);
    }

    #[test]
    fn partially_consumed_iterator_keeps_the_rest() {
        let t0 = crate::fuzz::test_origin();
        let mut q = TimerQueue::with_capacity(4);
        q.schedule("a", t0);
        q.schedule("b", t0 + Duration::from_millis(1));
        q.schedule("c", t0 + Duration::from_millis(2));
        q.cancel(&"b");
        let first = q.pop_expired(t0 + Duration::from_secs(1)).next();
        assert_eq!(first, Some("a"));
        assert_eq!(q.next_deadline(), Some(t0 + Duration::from_millis(2)));
        q.clear();
        assert!(q.is_empty());
        assert_eq!(q.next_deadline(), None);
    }
}
