//! Kernel forwarding of plain RTP ("offload"): once a stream is plain RTP
//! on both legs, needs no payload-type rewrite and both peers' sources are
//! known (latched, or signalled under strict latching), the relay thread
//! hands its two directions to the kernel, which then forwards the packets
//! itself without waking Palisade. RTCP stays in user space (and with it
//! the RTCP-reported loss, jitter and RTT); the kernel's per-direction
//! packet and byte counters, read every [`OffloadConfig::poll`], keep the
//! media timeout, the latch and the call's statistics current.
//!
//! This module owns the *policy* and the thread that batches the changes;
//! the mechanism is behind [`Offloader`] (the binary plugs in nftables:
//! conntrack NAT keyed by the latched 4-tuples, see `palisade-nft`), so
//! the relay crate depends on no firewall code and its tests use a fake.
//!
//! Correctness never depends on the kernel: until the kernel forwards a
//! direction (the batch is still queued, or it failed), its packets keep
//! arriving on the socket and the relay thread forwards them as before.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// One direction as the kernel sees it: packets from `peer` arriving on
/// Palisade's `local` RTP port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct OffloadFlow {
    /// Where the peer sends from (the latched or signalled source).
    pub peer: SocketAddr,
    /// Palisade's RTP socket on that leg.
    pub local: SocketAddr,
}

/// A stream handed to the kernel: what arrives on `a` leaves from
/// `b.local` to `b.peer`, and the other way round.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct OffloadStream {
    /// Side A's direction.
    pub a: OffloadFlow,
    /// Side B's direction.
    pub b: OffloadFlow,
}

impl OffloadStream {
    /// Both directions.
    pub fn flows(&self) -> [OffloadFlow; 2] {
        [self.a, self.b]
    }
}

/// A change for the kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OffloadOp {
    /// Start forwarding this stream in the kernel.
    Add(OffloadStream),
    /// Stop (and forget any connection state the kernel keeps for it).
    Remove(OffloadStream),
}

/// The kernel's cumulative counters of one direction since it was added.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlowCounters {
    /// The direction.
    pub flow: OffloadFlow,
    /// Packets forwarded.
    pub packets: u64,
    /// Bytes forwarded (whole IP datagrams).
    pub bytes: u64,
}

/// The mechanism: something that can install and remove kernel forwarding
/// and read its counters. Called from the offload thread only.
pub trait Offloader: Send + std::fmt::Debug {
    /// Applies `ops` in order, as one transaction where the mechanism
    /// allows. An error means none of them took effect.
    fn apply(&mut self, ops: &[OffloadOp]) -> Result<(), String>;
    /// Appends the counters of every installed direction to `out`.
    fn counters(&mut self, out: &mut Vec<FlowCounters>) -> Result<(), String>;
}

/// When and how streams are offloaded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OffloadConfig {
    /// A stream is offloaded after relaying RTP this long in user space
    /// (so its first quality sample, jitter and sequence loss, is measured
    /// here). Default 1 s.
    pub after: Duration,
    /// How often the kernel's counters are read. It bounds how stale the
    /// media timeout and the latch's liveness can be; keep it well below
    /// [`crate::latch::RELATCH_AFTER_SILENCE`]. Default 500 ms.
    pub poll: Duration,
    /// Offload IPv4 streams whose peers are not on this host (the kernel
    /// must route them: `net.ipv4.ip_forward = 1`). Loopback peers are
    /// always eligible.
    pub forward_v4: bool,
    /// The same for IPv6 (`net.ipv6.conf.all.forwarding = 1`).
    pub forward_v6: bool,
}

impl Default for OffloadConfig {
    fn default() -> Self {
        OffloadConfig {
            after: Duration::from_secs(1),
            poll: Duration::from_millis(500),
            forward_v4: false,
            forward_v6: false,
        }
    }
}

impl OffloadConfig {
    /// Whether the kernel can carry a stream between these four addresses:
    /// one address family throughout, and routing allowed where a peer is
    /// not on this host.
    pub fn can_carry(&self, s: &OffloadStream) -> bool {
        let addrs = [s.a.peer, s.a.local, s.b.peer, s.b.local];
        let v4 = addrs[0].is_ipv4();
        if addrs.iter().any(|a| a.is_ipv4() != v4) {
            return false;
        }
        let forward = if v4 { self.forward_v4 } else { self.forward_v6 };
        forward || (s.a.peer.ip().is_loopback() && s.b.peer.ip().is_loopback())
    }
}

/// A relay thread's request to the offload thread.
#[derive(Debug, Clone, Copy)]
pub(crate) struct OffloadMsg {
    pub lane: usize,
    pub op: OffloadOp,
}

/// Offload counters shared with [`crate::RelayControl::stats`].
#[derive(Debug, Default)]
pub(crate) struct OffloadCounters {
    pub batches: AtomicU64,
    pub failures: AtomicU64,
    pub installed: AtomicU64,
    /// The last error, for the binary to log.
    pub last_error: Mutex<Option<String>>,
}

/// Ops batched per kernel transaction at most.
const MAX_BATCH: usize = 512;
/// How long an op may wait for others to share its transaction.
const BATCH_WINDOW: Duration = Duration::from_millis(20);

/// The offload thread: batches ops into transactions, reads counters every
/// `poll` and routes them to the relay thread that owns each flow.
pub(crate) struct OffloadThread {
    pub cfg: OffloadConfig,
    pub offloader: Box<dyn Offloader>,
    pub ops: Receiver<OffloadMsg>,
    /// One per relay thread: the counters of its flows.
    pub lanes: Vec<SyncSender<Vec<FlowCounters>>>,
    pub stop: Arc<AtomicBool>,
    pub counters: Arc<OffloadCounters>,
}

impl std::fmt::Debug for OffloadThread {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OffloadThread")
            .field("cfg", &self.cfg)
            .finish_non_exhaustive()
    }
}

impl OffloadThread {
    pub(crate) fn run(mut self) {
        // What the kernel holds, and which lane owns each stream.
        let mut installed: HashMap<OffloadStream, usize> = HashMap::new();
        let mut pending: Vec<OffloadMsg> = Vec::with_capacity(MAX_BATCH);
        let mut first_pending: Option<Instant> = None;
        #[allow(clippy::disallowed_methods)] // I/O thread: its own timers.
        let mut next_poll = Instant::now() + self.cfg.poll;
        let mut scratch: Vec<FlowCounters> = Vec::new();
        loop {
            #[allow(clippy::disallowed_methods)]
            let now = Instant::now();
            let mut wait = next_poll.saturating_duration_since(now);
            if let Some(t) = first_pending {
                wait = wait.min((t + BATCH_WINDOW).saturating_duration_since(now));
            }
            let disconnected = match self.ops.recv_timeout(wait) {
                Ok(m) => {
                    pending.push(m);
                    first_pending.get_or_insert(now);
                    while pending.len() < MAX_BATCH {
                        match self.ops.try_recv() {
                            Ok(m) => pending.push(m),
                            Err(_) => break,
                        }
                    }
                    false
                }
                Err(RecvTimeoutError::Timeout) => false,
                Err(RecvTimeoutError::Disconnected) => true,
            };
            #[allow(clippy::disallowed_methods)]
            let now = Instant::now();
            let stopping = disconnected || self.stop.load(Ordering::Acquire);
            if !pending.is_empty()
                && (stopping
                    || pending.len() >= MAX_BATCH
                    || first_pending.is_some_and(|t| now >= t + BATCH_WINDOW))
            {
                self.flush(&mut pending, &mut installed);
                first_pending = None;
            }
            if stopping {
                // Whatever is still installed goes: nothing may forward
                // after the relay is gone.
                let rest: Vec<OffloadMsg> = installed
                    .iter()
                    .map(|(s, &lane)| OffloadMsg {
                        lane,
                        op: OffloadOp::Remove(*s),
                    })
                    .collect();
                let mut rest = rest;
                self.flush(&mut rest, &mut installed);
                return;
            }
            if now >= next_poll {
                next_poll = now + self.cfg.poll;
                self.poll(&installed, &mut scratch);
            }
        }
    }

    /// Applies `pending` (emptying it), keeping `installed` true to what the
    /// kernel holds: an add of what is installed and a remove of what is not
    /// are dropped; a failed batch is retried one op at a time so one bad op
    /// does not hold back the others.
    fn flush(
        &mut self,
        pending: &mut Vec<OffloadMsg>,
        installed: &mut HashMap<OffloadStream, usize>,
    ) {
        let mut ops: Vec<OffloadOp> = Vec::with_capacity(pending.len());
        let mut owners: Vec<usize> = Vec::with_capacity(pending.len());
        // Simulate the batch on a view of `installed` so it stays consistent
        // within itself (an add then a remove of one stream, ...).
        let mut view: HashMap<OffloadStream, Option<usize>> = HashMap::new();
        for m in pending.drain(..) {
            let (s, add) = match m.op {
                OffloadOp::Add(s) => (s, true),
                OffloadOp::Remove(s) => (s, false),
            };
            let present = view
                .get(&s)
                .map_or_else(|| installed.contains_key(&s), Option::is_some);
            if add == present {
                continue;
            }
            view.insert(s, add.then_some(m.lane));
            ops.push(m.op);
            owners.push(m.lane);
        }
        if ops.is_empty() {
            return;
        }
        self.counters.batches.fetch_add(1, Ordering::Relaxed);
        match self.offloader.apply(&ops) {
            Ok(()) => {
                for (op, lane) in ops.iter().zip(owners) {
                    record(installed, *op, lane);
                }
            }
            Err(e) if ops.len() == 1 => self.failed(e),
            Err(_) => {
                for (op, lane) in ops.iter().zip(owners) {
                    match self.offloader.apply(std::slice::from_ref(op)) {
                        Ok(()) => record(installed, *op, lane),
                        Err(e) => self.failed(e),
                    }
                }
            }
        }
        self.counters
            .installed
            .store(installed.len() as u64, Ordering::Relaxed);
    }

    fn failed(&self, e: String) {
        self.counters.failures.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut last) = self.counters.last_error.lock() {
            *last = Some(e);
        }
    }

    /// Reads the counters and sends each lane those of its flows. A lane
    /// whose channel is full misses this round (the counters are
    /// cumulative: the next round carries everything).
    fn poll(&mut self, installed: &HashMap<OffloadStream, usize>, scratch: &mut Vec<FlowCounters>) {
        if installed.is_empty() {
            return;
        }
        scratch.clear();
        if let Err(e) = self.offloader.counters(scratch) {
            self.failed(e);
            return;
        }
        let owner: HashMap<OffloadFlow, usize> = installed
            .iter()
            .flat_map(|(s, &lane)| s.flows().map(|f| (f, lane)))
            .collect();
        let mut per_lane: Vec<Vec<FlowCounters>> = vec![Vec::new(); self.lanes.len()];
        for c in scratch.drain(..) {
            if let Some(&lane) = owner.get(&c.flow)
                && let Some(v) = per_lane.get_mut(lane)
            {
                v.push(c);
            }
        }
        for (lane, v) in per_lane.into_iter().enumerate() {
            if v.is_empty() {
                continue;
            }
            if let Some(tx) = self.lanes.get(lane) {
                let _ = tx.try_send(v);
            }
        }
    }
}

fn record(installed: &mut HashMap<OffloadStream, usize>, op: OffloadOp, lane: usize) {
    match op {
        OffloadOp::Add(s) => {
            installed.insert(s, lane);
        }
        OffloadOp::Remove(s) => {
            installed.remove(&s);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    fn stream(peer_a: &str, local_a: &str, peer_b: &str, local_b: &str) -> OffloadStream {
        OffloadStream {
            a: OffloadFlow {
                peer: a(peer_a),
                local: a(local_a),
            },
            b: OffloadFlow {
                peer: a(peer_b),
                local: a(local_b),
            },
        }
    }

    #[derive(Debug, Default)]
    struct Recorder {
        applied: Vec<Vec<OffloadOp>>,
        refuse: Option<OffloadStream>,
    }

    impl Offloader for std::sync::Arc<Mutex<Recorder>> {
        fn apply(&mut self, ops: &[OffloadOp]) -> Result<(), String> {
            let mut r = self.lock().unwrap();
            if let Some(bad) = r.refuse
                && ops
                    .iter()
                    .any(|o| matches!(o, OffloadOp::Add(s) if *s == bad))
            {
                return Err("refused".into());
            }
            r.applied.push(ops.to_vec());
            Ok(())
        }

        fn counters(&mut self, _out: &mut Vec<FlowCounters>) -> Result<(), String> {
            Ok(())
        }
    }

    fn thread(rec: &std::sync::Arc<Mutex<Recorder>>) -> OffloadThread {
        let (_tx, rx) = std::sync::mpsc::sync_channel(1);
        OffloadThread {
            cfg: OffloadConfig::default(),
            offloader: Box::new(rec.clone()),
            ops: rx,
            lanes: Vec::new(),
            stop: Arc::new(AtomicBool::new(false)),
            counters: Arc::new(OffloadCounters::default()),
        }
    }

    #[test]
    fn a_batch_keeps_the_kernel_view_consistent_and_isolates_a_refused_op() {
        let rec = std::sync::Arc::new(Mutex::new(Recorder::default()));
        let mut t = thread(&rec);
        let s1 = stream(
            "127.0.0.10:4000",
            "127.0.0.1:20000",
            "127.0.0.20:5000",
            "127.0.0.2:30000",
        );
        let s2 = stream(
            "127.0.0.10:4002",
            "127.0.0.1:20002",
            "127.0.0.20:5002",
            "127.0.0.2:30002",
        );
        let s3 = stream(
            "127.0.0.10:4004",
            "127.0.0.1:20004",
            "127.0.0.20:5004",
            "127.0.0.2:30004",
        );
        let msg = |op| OffloadMsg { lane: 0, op };
        let mut installed = HashMap::new();
        // A remove of what is not there is dropped; an add twice is one add;
        // add-then-remove within the batch is kept in order.
        let mut batch = vec![
            msg(OffloadOp::Remove(s1)),
            msg(OffloadOp::Add(s1)),
            msg(OffloadOp::Add(s1)),
            msg(OffloadOp::Add(s2)),
            msg(OffloadOp::Remove(s2)),
        ];
        t.flush(&mut batch, &mut installed);
        assert_eq!(
            rec.lock().unwrap().applied,
            vec![vec![
                OffloadOp::Add(s1),
                OffloadOp::Add(s2),
                OffloadOp::Remove(s2)
            ]]
        );
        assert_eq!(installed.len(), 1);
        // One refused op does not hold back the others of its batch.
        rec.lock().unwrap().refuse = Some(s3);
        let mut batch = vec![msg(OffloadOp::Add(s3)), msg(OffloadOp::Remove(s1))];
        t.flush(&mut batch, &mut installed);
        assert!(installed.is_empty(), "s1 removed, s3 never installed");
        assert_eq!(t.counters.failures.load(Ordering::Relaxed), 1);
        assert_eq!(
            rec.lock().unwrap().applied.last(),
            Some(&vec![OffloadOp::Remove(s1)])
        );
    }

    #[test]
    fn carries_one_family_and_routes_only_when_allowed() {
        let mut cfg = OffloadConfig::default();
        let local = stream(
            "127.0.0.10:4000",
            "127.0.0.1:20000",
            "127.0.0.20:5000",
            "127.0.0.2:30000",
        );
        let remote = stream(
            "10.0.0.5:4000",
            "10.0.0.1:20000",
            "192.0.2.7:5000",
            "192.0.2.1:30000",
        );
        let mixed = stream(
            "10.0.0.5:4000",
            "10.0.0.1:20000",
            "[2001:db8::7]:5000",
            "[2001:db8::1]:30000",
        );
        assert!(cfg.can_carry(&local), "loopback peers need no routing");
        assert!(!cfg.can_carry(&remote), "ip_forward off");
        cfg.forward_v4 = true;
        assert!(cfg.can_carry(&remote));
        cfg.forward_v6 = true;
        assert!(!cfg.can_carry(&mixed), "v4 <-> v6 is not NAT's job");
    }
}
