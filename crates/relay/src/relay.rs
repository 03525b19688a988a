//! The relay's handles: [`Relay`] owns the threads, [`RelayControl`] sends
//! them commands and reads their counters.

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{SyncSender, TrySendError, sync_channel};
use std::thread::JoinHandle;

use mio::{Poll, Waker};

use crate::api::{Busy, Command, RelayConfig, RelayStats, Report, SessionId};
use crate::offload::{OffloadConfig, OffloadCounters, OffloadThread, Offloader};
use crate::spare::SparePool;
use crate::worker::{Counters, OffloadLane, WAKER, Worker, WorkerParts};

/// Changes queued for the offload thread at most (the relay threads keep
/// removals that do not fit and retry them).
const OFFLOAD_QUEUE: usize = 16_384;

#[derive(Debug)]
struct Lane {
    commands: SyncSender<Command>,
    waker: Waker,
    counters: Arc<Counters>,
    /// Commands were queued with [`RelayControl::queue`] since the last wake.
    wake_pending: AtomicBool,
}

#[derive(Debug)]
struct Shared {
    lanes: Vec<Lane>,
    spares: Arc<SparePool>,
    stop: Arc<AtomicBool>,
    offload: Option<Arc<OffloadCounters>>,
}

/// The running relay: a fixed set of threads, each owning the sessions
/// routed to it. [`Relay::stop`] (or dropping it) closes every session,
/// reporting [`Report::Closed`] for each, and joins the threads.
#[derive(Debug)]
pub struct Relay {
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<()>>,
    /// Joined after the relay threads (their last removals go through it).
    offload_thread: Option<JoinHandle<()>>,
}

/// Sends commands to the relay threads and reads their counters. Cheap to
/// clone; `Send + Sync`; never blocks.
#[derive(Debug, Clone)]
pub struct RelayControl {
    shared: Arc<Shared>,
}

impl Relay {
    /// Starts `cfg.threads` relay threads (0 means one per core). Reports go
    /// to `reports`; a full channel never blocks a relay thread (see
    /// [`Report`]).
    pub fn start(
        cfg: RelayConfig,
        reports: SyncSender<Report>,
    ) -> io::Result<(Relay, RelayControl)> {
        Self::start_with_offload(cfg, reports, None)
    }

    /// [`start`](Self::start), plus kernel forwarding of plain RTP streams
    /// through `offload` (see [`crate::offload`]) on a thread of its own.
    pub fn start_with_offload(
        cfg: RelayConfig,
        reports: SyncSender<Report>,
        offload: Option<(OffloadConfig, Box<dyn Offloader>)>,
    ) -> io::Result<(Relay, RelayControl)> {
        let mut cfg = cfg;
        if cfg.threads == 0 {
            cfg.threads = RelayConfig::default().threads;
        }
        cfg.command_queue = cfg.command_queue.max(1);
        let stop = Arc::new(AtomicBool::new(false));
        let mut lanes = Vec::with_capacity(cfg.threads);
        let mut workers = Vec::with_capacity(cfg.threads);
        // The channel (about 2 MiB of slots) only exists with kernel forwarding.
        let (offload_tx, offload_rx) = match offload {
            Some(_) => {
                let (tx, rx) = sync_channel(OFFLOAD_QUEUE);
                (Some(tx), Some(rx))
            }
            None => (None, None),
        };
        let mut counter_lanes = Vec::with_capacity(cfg.threads);
        let mut polls = Vec::with_capacity(cfg.threads);
        let mut registries = Vec::with_capacity(cfg.threads);
        for _ in 0..cfg.threads {
            let poll = Poll::new()?;
            registries.push(poll.registry().try_clone()?);
            polls.push(poll);
        }
        let spares = Arc::new(SparePool::new(registries));
        for (i, poll) in polls.into_iter().enumerate() {
            let waker = Waker::new(poll.registry(), WAKER)?;
            let (tx, rx) = sync_channel(cfg.command_queue);
            let counters = Arc::new(Counters::default());
            lanes.push(Lane {
                commands: tx,
                waker,
                counters: counters.clone(),
                wake_pending: AtomicBool::new(false),
            });
            let lane = offload
                .as_ref()
                .zip(offload_tx.as_ref())
                .map(|((ocfg, _), otx)| {
                    // Two rounds of counters at most: they are cumulative, so a
                    // thread that missed one loses nothing.
                    let (ctx, crx) = sync_channel(2);
                    counter_lanes.push(ctx);
                    OffloadLane {
                        cfg: *ocfg,
                        lane: i,
                        tx: otx.clone(),
                        counters: crx,
                    }
                });
            workers.push(Worker::new(WorkerParts {
                cfg,
                poll,
                commands: rx,
                reports: reports.clone(),
                stop: stop.clone(),
                counters,
                offload: lane,
                lane: i,
                spares: spares.clone(),
            }));
        }
        drop(offload_tx);
        let mut offload_thread = None;
        let mut offload_shared = None;
        if let (Some((ocfg, offloader)), Some(offload_rx)) = (offload, offload_rx) {
            let counters = Arc::new(OffloadCounters::default());
            let t = OffloadThread {
                cfg: ocfg,
                offloader,
                ops: offload_rx,
                lanes: counter_lanes,
                stop: stop.clone(),
                counters: counters.clone(),
            };
            offload_thread = Some(
                std::thread::Builder::new()
                    .name("relay-offload".into())
                    .spawn(move || t.run())?,
            );
            offload_shared = Some(counters);
        }
        let shared = Arc::new(Shared {
            lanes,
            spares,
            stop,
            offload: offload_shared,
        });
        let mut threads = Vec::with_capacity(workers.len());
        for (i, w) in workers.into_iter().enumerate() {
            let spawned = std::thread::Builder::new()
                .name(format!("relay-{i}"))
                .spawn(move || w.run());
            match spawned {
                Ok(h) => threads.push(h),
                Err(e) => {
                    let relay = Relay {
                        shared: shared.clone(),
                        threads,
                        offload_thread,
                    };
                    relay.stop();
                    return Err(e);
                }
            }
        }
        let control = RelayControl {
            shared: shared.clone(),
        };
        Ok((
            Relay {
                shared,
                threads,
                offload_thread,
            },
            control,
        ))
    }

    /// Closes every session (each reports [`Report::Closed`]) and joins the
    /// threads.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        self.shared.stop.store(true, Ordering::Release);
        for lane in &self.shared.lanes {
            let _ = lane.waker.wake();
        }
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
        // The relay threads are gone, and with them the offload thread's
        // senders: it removes whatever the kernel still forwards, then ends.
        if let Some(t) = self.offload_thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Which thread owns a session: a multiplicative hash, so sequential call
/// references spread evenly.
fn lane_of(session: SessionId, lanes: usize) -> usize {
    let h = session.0.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    ((h >> 32) % lanes as u64) as usize
}

impl RelayControl {
    /// Queues `cmd` for the thread owning its session and wakes it. Never
    /// blocks: a full queue (or a stopped relay) hands the command back.
    // Busy hands the command back by value (no allocation on the refusal path).
    #[allow(clippy::result_large_err)]
    pub fn send(&self, cmd: Command) -> Result<(), Busy> {
        let lane = self.enqueue(cmd)?;
        lane.wake_pending.store(false, Ordering::Relaxed);
        let _ = lane.waker.wake();
        Ok(())
    }

    /// Queues `cmd` like [`send`](Self::send) but does not wake the thread:
    /// [`wake`](Self::wake) does, once for everything queued since. A caller
    /// that issues commands in batches (the engine loop, per turn) saves one
    /// eventfd write and one relay-thread wakeup per command.
    #[allow(clippy::result_large_err)]
    pub fn queue(&self, cmd: Command) -> Result<(), Busy> {
        let lane = self.enqueue(cmd)?;
        lane.wake_pending.store(true, Ordering::Relaxed);
        Ok(())
    }

    /// Queues `cmd` for the thread's next turn without asking for one: the
    /// thread takes it when it next wakes for packets or commands, and at
    /// the latest one tick (100 ms) later. For commands nothing waits on,
    /// such as `Close`.
    #[allow(clippy::result_large_err)]
    pub fn queue_lazy(&self, cmd: Command) -> Result<(), Busy> {
        self.enqueue(cmd).map(|_| ())
    }

    /// Wakes every thread that has commands from [`queue`](Self::queue)
    /// waiting.
    pub fn wake(&self) {
        for lane in &self.shared.lanes {
            if lane.wake_pending.swap(false, Ordering::Relaxed) {
                let _ = lane.waker.wake();
            }
        }
    }

    #[allow(clippy::result_large_err)]
    fn enqueue(&self, cmd: Command) -> Result<&Lane, Busy> {
        let lanes = &self.shared.lanes;
        if lanes.is_empty() || self.shared.stop.load(Ordering::Acquire) {
            return Err(Busy(cmd));
        }
        let lane = &lanes[lane_of(cmd.session(), lanes.len())];
        match lane.commands.try_send(cmd) {
            Ok(()) => Ok(lane),
            Err(TrySendError::Full(c) | TrySendError::Disconnected(c)) => Err(Busy(c)),
        }
    }

    /// The counters, summed over the threads.
    pub fn stats(&self) -> RelayStats {
        let mut s = RelayStats::default();
        for lane in &self.shared.lanes {
            lane.counters.add_to(&mut s);
        }
        s.ports_spare = self.shared.spares.count();
        if let Some(c) = &self.shared.offload {
            s.offload_batches = c.batches.load(Ordering::Relaxed);
            s.offload_failures = c.failures.load(Ordering::Relaxed);
        }
        s
    }

    /// Whether kernel forwarding was configured.
    pub fn offloading(&self) -> bool {
        self.shared.offload.is_some()
    }

    /// The last error the kernel gave an offload change, once (for logs).
    pub fn take_offload_error(&self) -> Option<String> {
        let c = self.shared.offload.as_ref()?;
        c.last_error.lock().ok()?.take()
    }

    /// The relay thread that owns `session`'s sockets (commands for it go
    /// there; so do its spares when it ends).
    pub fn lane_of(&self, session: SessionId) -> usize {
        lane_of(session, self.shared.lanes.len().max(1))
    }

    /// Number of relay threads.
    pub fn threads(&self) -> usize {
        self.shared.lanes.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lanes_spread_sequential_sessions() {
        let mut counts = [0usize; 4];
        for i in 0..4000u64 {
            counts[lane_of(SessionId(i), 4)] += 1;
        }
        for c in counts {
            assert!((800..1200).contains(&c), "{counts:?}");
        }
    }

    fn assert_send_sync<T: Send + Sync>() {}

    #[test]
    fn control_is_send_and_sync() {
        assert_send_sync::<RelayControl>();
    }
}
