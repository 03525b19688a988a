//! The guard's I/O: the nftables programmer thread, the alert store thread,
//! and what the engine task does with the guard's actions.
//!
//! The guard itself runs inside the engine (as its `GuardHook`) on the
//! engine task; its bans, alerts and unbans cross to the two threads over
//! bounded channels (`try_send`: a full channel drops and counts, never
//! blocks the engine). Unban requests written by `palisade bans unban` into
//! the database come back from the store thread over a bounded channel.

use std::net::IpAddr;
use std::sync::mpsc::{SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use palisade_alerts::Store;
use palisade_b2bua::{EndReason, Engine};
use palisade_config::{Config, GuardMode, IpNet, NftMode};
use palisade_guard::{Action, AlertEvent, Guard, GuardStats, SharedGuard};
use palisade_nft::{Nft, Ports, Programmer, ProgrammerStats, Request, TableSpec};
use tokio::sync::mpsc;
use tracing::{debug, error, info, warn};

use crate::error::AppError;
use crate::{now, unix_ms};

/// Bound of the channel to the nftables thread.
const NFT_CAPACITY: usize = 4096;
/// Bound of the channel to the store thread.
const STORE_CAPACITY: usize = 4096;
/// Bound of the unban channel back to the engine task.
const UNBAN_CAPACITY: usize = 256;
/// How often the store thread looks for unban requests.
const UNBAN_POLL: Duration = Duration::from_secs(1);

/// What the store thread is asked to write.
#[derive(Debug)]
enum StoreMsg {
    Alert(Box<AlertEvent>),
    Ban {
        ip: IpAddr,
        reason: &'static str,
        detail: String,
        at_unix_ms: i64,
        duration: Duration,
        kernel: bool,
    },
}

/// Counters of the guard's I/O, for the stats line.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GuardIoStats {
    /// The guard's own counters.
    pub guard: GuardStats,
    /// Whether bans go to nftables (false: in-process blocking only).
    pub nftables: bool,
    /// nftables thread counters.
    pub nft: ProgrammerStats,
    /// Ban requests dropped because the nftables channel was full.
    pub nft_queue_full: u64,
    /// Records dropped because the store channel was full.
    pub store_queue_full: u64,
    /// Store writes that failed.
    pub store_errors: u64,
}

/// The guard as the engine task holds it.
#[derive(Debug)]
pub struct GuardIo {
    guard: SharedGuard,
    nft_tx: Option<SyncSender<Request>>,
    nft_stats: Arc<Mutex<ProgrammerStats>>,
    store_tx: Option<SyncSender<StoreMsg>>,
    store_errors: Arc<Mutex<u64>>,
    nft_queue_full: u64,
    store_queue_full: u64,
    max_evidence: usize,
    /// Unban requests from the database.
    pub unbans: Option<mpsc::Receiver<IpAddr>>,
}

/// The threads to join at exit, and the table to remove.
#[derive(Debug)]
pub struct GuardThreads {
    nft_thread: Option<JoinHandle<()>>,
    store_thread: Option<JoinHandle<()>>,
    nft: Option<Nft>,
}

/// The allow-list nftables accepts first: every trunk's members and source
/// networks, and `guard.allow`.
pub fn trusted_nets(cfg: &Config) -> Vec<IpNet> {
    let mut out: Vec<IpNet> = cfg.guard().allow.clone();
    for t in cfg.trunks() {
        out.extend(t.members.iter().map(|m| IpNet::from(m.address)));
        out.extend(t.source_addresses.iter().copied());
    }
    out.sort();
    out.dedup();
    out
}

/// The deny-list the kernel enforces: none in dry-run (nothing is blocked).
fn kernel_deny(cfg: &Config) -> Vec<IpNet> {
    if cfg.guard().mode == GuardMode::Enforce {
        cfg.guard().deny.clone()
    } else {
        Vec::new()
    }
}

/// The table for `cfg`: SIP ports of every zone, media ranges, lists, meter.
/// In dry-run the kernel blocks nothing: no deny entries, no meter.
pub fn table_spec(cfg: &Config) -> TableSpec {
    let g = cfg.guard();
    let enforce = g.mode == GuardMode::Enforce;
    let mut sip: Vec<Ports> = Vec::new();
    let mut media: Vec<Ports> = Vec::new();
    for z in cfg.zones() {
        for (_, addr) in z.listen_addrs() {
            let p = addr.port();
            if !sip.iter().any(|x| x.first == p) {
                sip.push(Ports { first: p, last: p });
            }
        }
        let m = Ports {
            first: z.media.port_min,
            last: z.media.port_max,
        };
        if !media.contains(&m) {
            media.push(m);
        }
    }
    TableSpec {
        name: g.nftables_table.clone(),
        sip_ports: sip,
        media_ports: media,
        allow: trusted_nets(cfg),
        deny: kernel_deny(cfg),
        meter_packets_per_second: if enforce {
            g.kernel_meter.packets_per_second
        } else {
            0
        },
        meter_burst_packets: g.kernel_meter.burst_packets,
        meter_ban: g.kernel_meter.ban,
        ban_set_size: g.max_bans.max(16),
        meter_set_size: g.max_sources.max(1024),
    }
}

/// Sets up the guard for `cfg`: nftables (or the fallback, said loudly),
/// the store, the threads. `None` when `guard.mode` is off.
pub fn start(cfg: &Arc<Config>) -> Result<Option<(GuardIo, GuardThreads)>, AppError> {
    let g = cfg.guard();
    if g.mode == GuardMode::Off {
        info!("guard off (guard.mode: off): no DoS protection, no fraud rules");
        return Ok(None);
    }
    let t = now();
    let guard = SharedGuard::new(Guard::new(Arc::clone(cfg), t, unix_ms()));

    // nftables.
    let mut nft = None;
    match g.nftables {
        NftMode::Off => warn!(
            "nftables off (guard.nftables: off): bans are enforced in-process only \
             (palisade_guard_fallback_mode=1)"
        ),
        NftMode::Auto | NftMode::On => {
            let n = Nft::new(&g.nftables_table);
            let spec = table_spec(cfg);
            match n.probe().and_then(|()| n.install(&spec)) {
                Ok(()) => {
                    info!(
                        table = %format!("inet {}", g.nftables_table),
                        sip_ports = spec.sip_ports.len(),
                        allow = spec.allow.len(),
                        deny = spec.deny.len(),
                        meter_packets_per_second = spec.meter_packets_per_second,
                        "nftables table installed: bans are dropped in the kernel"
                    );
                    nft = Some(n);
                }
                Err(e) if g.nftables == NftMode::On => {
                    return Err(AppError::Nftables(e.to_string()));
                }
                Err(e) => warn!(
                    error = %e,
                    "nftables unavailable: FALLING BACK to in-process blocking \
                     (palisade_guard_fallback_mode=1); run as root or with CAP_NET_ADMIN \
                     for kernel bans"
                ),
            }
        }
    }
    let nft_stats = Arc::new(Mutex::new(ProgrammerStats::default()));
    let (nft_tx, nft_thread) = match &nft {
        Some(n) => {
            let (tx, rx) = sync_channel::<Request>(NFT_CAPACITY);
            let programmer = Programmer::new(n.clone(), Arc::clone(&nft_stats));
            let handle = std::thread::Builder::new()
                .name("palisade-nft".into())
                .spawn(move || {
                    programmer.run(&rx, &|e| error!(error = %e, "nftables update failed"));
                })
                .map_err(AppError::Runtime)?;
            (Some(tx), Some(handle))
        }
        None => (None, None),
    };

    // The store.
    let path = cfg.alerts().database_path.clone();
    let store_errors = Arc::new(Mutex::new(0u64));
    let (store_tx, store_thread, unbans) = match Store::open(&path) {
        Ok(store) => {
            info!(database = %path.display(), "alert database open (SQLite, WAL)");
            let (tx, rx) = sync_channel::<StoreMsg>(STORE_CAPACITY);
            let (unban_tx, unban_rx) = mpsc::channel::<IpAddr>(UNBAN_CAPACITY);
            let errors = Arc::clone(&store_errors);
            let max_evidence = cfg.alerts().max_evidence_calls as usize;
            let handle = std::thread::Builder::new()
                .name("palisade-alerts".into())
                .spawn(move || store_thread(store, &rx, &unban_tx, &errors, max_evidence))
                .map_err(AppError::Runtime)?;
            (Some(tx), Some(handle), Some(unban_rx))
        }
        Err(e) => {
            error!(
                database = %path.display(),
                error = %e,
                "alert database unavailable: alerts are logged only"
            );
            (None, None, None)
        }
    };
    if g.mode == GuardMode::DryRun {
        warn!(
            "guard in dry-run (guard.mode: dry-run): every decision is logged and counted, nothing is blocked"
        );
    }
    let io = GuardIo {
        guard,
        nft_tx,
        nft_stats,
        store_tx,
        store_errors,
        nft_queue_full: 0,
        store_queue_full: 0,
        max_evidence: cfg.alerts().max_evidence_calls as usize,
        unbans,
    };
    Ok(Some((
        io,
        GuardThreads {
            nft_thread,
            store_thread,
            nft,
        },
    )))
}

fn store_thread(
    mut store: Store,
    rx: &std::sync::mpsc::Receiver<StoreMsg>,
    unbans: &mpsc::Sender<IpAddr>,
    errors: &Mutex<u64>,
    max_evidence: usize,
) {
    let bump = || *errors.lock().unwrap_or_else(PoisonError::into_inner) += 1;
    loop {
        match rx.recv_timeout(UNBAN_POLL) {
            Ok(StoreMsg::Alert(ev)) => match store.record(&ev, max_evidence) {
                Ok((id, merged)) => debug!(alert = id, merged, "alert stored"),
                Err(e) => {
                    bump();
                    error!(error = %e, "alert not stored");
                }
            },
            Ok(StoreMsg::Ban {
                ip,
                reason,
                detail,
                at_unix_ms,
                duration,
                kernel,
            }) => {
                if let Err(e) = store.record_ban(ip, reason, &detail, at_unix_ms, duration, kernel)
                {
                    bump();
                    error!(error = %e, "ban not recorded");
                }
            }
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
        }
        match store.take_unban_requests() {
            Ok(ips) => {
                for ip in ips {
                    // Bounded; the engine task drains it every turn.
                    if unbans.blocking_send(ip).is_err() {
                        return;
                    }
                }
            }
            Err(e) => {
                bump();
                debug!(error = %e, "unban requests not read");
            }
        }
    }
}

impl GuardIo {
    /// The hook to install in the engine.
    pub fn hook(&self) -> Box<SharedGuard> {
        Box::new(self.guard.clone())
    }

    /// When the guard's timers are next due.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.guard.with(|g| g.poll_timeout())
    }

    /// Counters.
    pub fn stats(&self) -> GuardIoStats {
        GuardIoStats {
            guard: self.guard.with(|g| g.stats()),
            nftables: self.nft_tx.is_some(),
            nft: *self
                .nft_stats
                .lock()
                .unwrap_or_else(PoisonError::into_inner),
            nft_queue_full: self.nft_queue_full,
            store_queue_full: self.store_queue_full,
            store_errors: *self
                .store_errors
                .lock()
                .unwrap_or_else(PoisonError::into_inner),
        }
    }

    /// A reloaded configuration: new limits, lists and rules.
    pub fn reload(&mut self, cfg: &Arc<Config>) {
        self.guard.with(|g| g.reload(Arc::clone(cfg)));
        self.max_evidence = cfg.alerts().max_evidence_calls as usize;
        if let Some(tx) = &self.nft_tx
            && tx
                .try_send(Request::Lists(trusted_nets(cfg), kernel_deny(cfg)))
                .is_err()
        {
            self.nft_queue_full += 1;
        }
    }

    /// An operator lifted the ban of `ip`.
    pub fn unban(&mut self, ip: IpAddr) {
        let was = self.guard.with(|g| g.unban(now(), ip));
        info!(source = %ip, in_process = was, "unbanned by an operator");
        if let Some(tx) = &self.nft_tx
            && tx.try_send(Request::Unban(ip)).is_err()
        {
            self.nft_queue_full += 1;
        }
    }

    fn send_to_store(&mut self, m: StoreMsg) {
        if let Some(tx) = &self.store_tx {
            match tx.try_send(m) {
                Ok(()) => {}
                Err(TrySendError::Full(_)) => self.store_queue_full += 1,
                Err(TrySendError::Disconnected(_)) => self.store_tx = None,
            }
        }
    }

    /// Runs the guard's due timers and carries out its actions.
    pub fn drive(&mut self, engine: &mut Engine) {
        let t = now();
        let unix = unix_ms();
        let due = self.guard.with(|g| {
            g.set_wall_clock(t, unix);
            g.poll_timeout().is_some_and(|d| d <= t)
        });
        if due {
            self.guard.with(|g| g.handle_timeout(t));
        }
        while let Some(a) = self.guard.with(Guard::poll_action) {
            self.act(engine, t, unix, a);
        }
    }

    fn act(&mut self, engine: &mut Engine, t: Instant, unix: i64, a: Action) {
        match a {
            Action::Terminate { call, rule } => {
                let live = engine.terminate_call(t, call, EndReason::Guard);
                info!(call = %call, rule = %rule, ended = live, "fraud rule: call torn down");
            }
            Action::Ban {
                ip,
                duration,
                reason,
                detail,
            } => {
                let kernel = self.nft_tx.is_some();
                if let Some(tx) = &self.nft_tx
                    && tx.try_send(Request::Ban(ip, duration)).is_err()
                {
                    self.nft_queue_full += 1;
                }
                self.send_to_store(StoreMsg::Ban {
                    ip,
                    reason: reason.as_str(),
                    detail,
                    at_unix_ms: unix,
                    duration,
                    kernel,
                });
            }
            Action::Alert(ev) => {
                warn!(
                    rule = %ev.rule,
                    kind = %ev.kind,
                    severity = %ev.severity,
                    subject = %ev.subject,
                    measure = ev.measure,
                    threshold = ev.threshold,
                    action = %ev.action,
                    occurrences = ev.occurrences,
                    calls = ev.evidence.len(),
                    "fraud alert"
                );
                let mut ev = ev;
                let excess = ev.evidence.len().saturating_sub(self.max_evidence.max(1));
                ev.evidence.drain(..excess);
                self.send_to_store(StoreMsg::Alert(Box::new(ev)));
            }
            Action::Decision(d) => {
                let mode = if d.dry_run { "dry-run" } else { "enforce" };
                info!(
                    source = %d.source,
                    reason = %d.reason.as_str(),
                    verdict = %d.verdict,
                    mode,
                    detail = %d.detail,
                    suppressed = d.suppressed,
                    "guard decision"
                );
            }
        }
    }

    /// Last turn at shutdown: held-back alert occurrences are emitted and
    /// every action carried out.
    pub fn last_drive(&mut self, engine: &mut Engine) {
        self.guard.with(|g| g.flush_alerts(now()));
        self.drive(engine);
    }

    /// Ends the threads: the channels close, the store flushes.
    pub fn close(self) {
        drop(self.nft_tx);
        drop(self.store_tx);
        drop(self.unbans);
    }
}

impl GuardThreads {
    /// Waits for the threads, then removes Palisade's nftables table.
    pub fn finish(self) {
        for h in [self.nft_thread, self.store_thread].into_iter().flatten() {
            let _ = h.join();
        }
        if let Some(n) = self.nft {
            match n.remove() {
                Ok(()) => info!(table = %format!("inet {}", n.table()), "nftables table removed"),
                Err(e) => warn!(error = %e, "nftables table not removed"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;
    use std::path::Path;

    use super::*;

    fn quickstart() -> Arc<Config> {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../configs/quickstart.yaml");
        Arc::new(palisade_config::load(&path).unwrap_or_else(|e| panic!("quickstart: {e}")))
    }

    /// The quickstart has the guard on and enforcing, with nftables, and
    /// trusts exactly the lab's PBX and carrier addresses: the kernel's
    /// allow-list and the guard's notion of trust agree.
    #[test]
    fn quickstart_enforces_with_nftables_and_trusts_only_the_lab_peers() {
        let cfg = quickstart();
        let g = cfg.guard();
        assert_eq!(g.mode, GuardMode::Enforce);
        assert!(
            matches!(g.nftables, NftMode::Auto | NftMode::On),
            "{:?}",
            g.nftables
        );
        let lab: Vec<IpNet> = ["127.0.0.10", "127.0.0.20", "127.0.0.21"]
            .iter()
            .map(|a| IpNet::from(a.parse::<IpAddr>().unwrap_or_else(|e| panic!("{e}"))))
            .collect();
        assert_eq!(trusted_nets(&cfg), lab);
        let spec = table_spec(&cfg);
        assert_eq!(spec.allow, lab);
        assert!(spec.meter_packets_per_second > 0, "the kernel meter is on");
        let guard = Guard::new(Arc::clone(&cfg), now(), 0);
        for ip in ["127.0.0.10", "127.0.0.20", "127.0.0.21"] {
            assert!(
                guard.trusted(ip.parse().unwrap_or_else(|e| panic!("{e}"))),
                "{ip}"
            );
        }
        // Palisade's own addresses, the rest of loopback and the world are not.
        for ip in [
            "127.0.0.1",
            "127.0.0.2",
            "127.0.0.11",
            "127.0.0.66",
            "192.0.2.1",
            "::1",
        ] {
            assert!(
                !guard.trusted(ip.parse().unwrap_or_else(|e| panic!("{e}"))),
                "{ip}"
            );
        }
    }
}
