//! `palisade run`: load, bind, serve, and the supervisor that turns signals
//! into control requests for the engine task.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use palisade_b2bua::Engine;
use palisade_config::Config;
use palisade_transport::{TransportStats, Transports};
use rand::TryRng;
use tokio::signal::unix::{Signal, SignalKind, signal};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tracing::{error, info, warn};

use crate::engine_loop::{Control, EngineLoop, LoopReport};
use crate::error::AppError;
use crate::guard_io;
use crate::listeners::{ListenerMap, tcp_settings};
use crate::logging::{self, LogControl};
use crate::media;

/// Bound of the channel from the transports to the engine task. When it is
/// full, UDP datagrams are dropped (and counted) and TCP readers wait.
pub const INBOUND_CAPACITY: usize = 16_384;
/// Bound of the supervisor-to-engine control channel.
const CONTROL_CAPACITY: usize = 16;
/// How often a stats line is logged.
const STATS_INTERVAL: Duration = Duration::from_secs(60);
/// Upper bound on closing the transports and the runtime at exit.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(5);
/// Below this many file descriptors, a warning at start: media needs up to
/// four per call.
const LOW_OPEN_FILES: u64 = 16_384;
/// Bound of the channel from the DNS resolver task to its forwarder.
const DNS_CAPACITY: usize = 64;

/// Runs Palisade with the configuration at `path` until it is signalled.
pub fn run(path: &Path) -> Result<(), AppError> {
    // Everything is validated before anything is bound.
    let config = palisade_config::load(path)?;
    let log = logging::init(config.logging())?;
    let mut seed = [0u8; 32];
    rand::rngs::SysRng
        .try_fill_bytes(&mut seed)
        .map_err(AppError::Entropy)?;
    // Separate seeds for SRTP keys and SDP session ids, and for RFC 2782
    // weighted SRV selection.
    let mut media_seed = [0u8; 32];
    rand::rngs::SysRng
        .try_fill_bytes(&mut media_seed)
        .map_err(AppError::Entropy)?;
    let mut dns_seed = [0u8; 32];
    rand::rngs::SysRng
        .try_fill_bytes(&mut dns_seed)
        .map_err(AppError::Entropy)?;
    // The signalling plane runs on this one thread: the engine task (which
    // owns the engine and is its single point of serialisation anyway), the
    // SIP listeners and the supervisor. A datagram is then read, handled and
    // answered without any cross-thread wakeup; with a multi-threaded
    // runtime every message paid a futex wake and a context switch (about
    // 15% of the CPU per call, measured with bench/sbc). Media has its own
    // threads (the relay); blocking work (nft, SQLite, config loads) goes to
    // the blocking pool.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(AppError::Runtime)?;
    let result = runtime.block_on(serve(
        path.to_path_buf(),
        Arc::new(config),
        [seed, media_seed, dns_seed],
        log,
    ));
    runtime.shutdown_timeout(SHUTDOWN_TIMEOUT);
    result
}

/// The Unix signals Palisade handles.
struct Signals {
    term: Signal,
    int: Signal,
    hup: Signal,
}

impl Signals {
    fn install() -> Result<Self, AppError> {
        let install = |kind: SignalKind, name: &'static str| {
            signal(kind).map_err(|source| AppError::Signal {
                signal: name,
                source,
            })
        };
        Ok(Signals {
            term: install(SignalKind::terminate(), "SIGTERM")?,
            int: install(SignalKind::interrupt(), "SIGINT")?,
            hup: install(SignalKind::hangup(), "SIGHUP")?,
        })
    }
}

async fn serve(
    path: PathBuf,
    config: Arc<Config>,
    [seed, media_seed, dns_seed]: [[u8; 32]; 3],
    log: LogControl,
) -> Result<(), AppError> {
    // Installed before binding: from here on SIGTERM means a graceful stop.
    let mut signals = Signals::install()?;
    let listeners = ListenerMap::new(&config)?;
    // Bound before anything serves: a taken admin port fails the start.
    let admin = match config.admin().listen {
        Some(addr) => Some(palisade_admin::AdminListener::bind(addr)?),
        None => None,
    };
    // The relay binds nothing until a call needs ports; start it first so a
    // failure leaves no listener behind.
    let (media_runtime, engine_media) = if config.media().anchor {
        let (rt, em, reports) = media::start(&config, media_seed)?;
        (Some(rt), Some((em, reports)))
    } else {
        (None, None)
    };
    let (inbound_tx, inbound_rx) = mpsc::channel(INBOUND_CAPACITY);
    let transports =
        Transports::start(listeners.specs(&config), tcp_settings(&config), inbound_tx).await?;
    // Every anchored call holds up to four sockets (RTP and RTCP per leg):
    // take all the descriptors the hard limit allows.
    let open_files = match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(n) => n,
        Err(e) => {
            warn!(error = %e, "cannot raise the open files limit");
            rlimit::getrlimit(rlimit::Resource::NOFILE).map_or(0, |(soft, _)| soft)
        }
    };
    if config.media().anchor && open_files < LOW_OPEN_FILES {
        warn!(
            open_files,
            "the open files limit allows few anchored calls (about a quarter of it); raise LimitNOFILE"
        );
    }
    info!(
        node = %config.node().name,
        config = %path.display(),
        open_files,
        zones = config.zones().len(),
        trunks = config.trunks().len(),
        routes = config.routes().len(),
        listeners = listeners.len(),
        media_anchored = config.media().anchor,
        relay_threads = media::relay_config(&config).threads,
        version = env!("CARGO_PKG_VERSION"),
        "palisade started"
    );

    let (control_tx, control_rx) = mpsc::channel(CONTROL_CAPACITY);
    let mut engine = Engine::new(Arc::clone(&config), seed);
    crate::engine_loop::install_stages(&mut engine, &config);
    if let Some((em, _)) = &engine_media {
        engine.set_media(Box::new(em.media.clone()));
    }
    let store = match crate::edge::open_store(&config, &mut engine, crate::now()) {
        Ok(s) => s,
        Err(e) => {
            let _ = transports.clone().shutdown().await;
            return Err(e.into());
        }
    };
    engine.sync_edge(crate::now());
    let mut engine_loop =
        EngineLoop::new(engine, Arc::clone(&config), listeners, transports.clone())
            .with_store(store);
    if let Some((em, reports)) = engine_media {
        engine_loop = engine_loop.with_media(em, reports);
    }
    // nft and SQLite are blocking calls: off the runtime's workers.
    let guard_cfg = Arc::clone(&config);
    let guard = match tokio::task::spawn_blocking(move || guard_io::start(&guard_cfg)).await {
        Ok(r) => r,
        Err(e) => return Err(AppError::EngineTask(e)),
    };
    let guard_threads = match guard {
        Ok(Some((io, threads))) => {
            engine_loop = engine_loop.with_guard(io);
            Some(threads)
        }
        Ok(None) => None,
        Err(e) => {
            let _ = tokio::time::timeout(SHUTDOWN_TIMEOUT, transports.clone().shutdown()).await;
            return Err(e);
        }
    };
    let engine_task = tokio::spawn(engine_loop.run(inbound_rx, control_rx));
    // The resolver runs when trunks have `host:` members (or a reload adds some).
    let dns = if config.trunks().iter().any(|t| t.has_dns_members()) {
        Some(start_dns(&config, dns_seed, control_tx.clone())?)
    } else {
        None
    };

    // Stopped when the supervisor returns; a scrape in flight then gets its
    // answer or a 503.
    let (admin_stop, admin_stopped) = oneshot::channel::<()>();
    if let Some(admin) = admin {
        let addr = admin.local_addr();
        let source = Arc::new(crate::metrics::EngineSource::new(
            control_tx.clone(),
            transports.clone(),
            config.node().name.clone(),
        ));
        tokio::spawn(async move {
            let stop = async {
                let _ = admin_stopped.await;
            };
            if let Err(e) = admin.serve(source, stop).await {
                error!(error = %e, "the admin endpoint stopped");
            }
        });
        info!(%addr, "admin endpoint listening: /metrics, /health, /api/v1/status");
    }

    let supervisor = Supervisor {
        path,
        config,
        log,
        control: control_tx,
        transports: transports.clone(),
        stop_requests: 0,
        dns,
        dns_seed,
    };
    let outcome = supervisor.run(&mut signals, engine_task).await;
    let _ = admin_stop.send(());
    // The engine task ran on this thread: write what its last turns held.
    logging::flush_held();

    if let Some(rt) = media_runtime {
        // Calls are over: the engine loop ended them and lingered.
        info!("stopping the media relay");
        let stop = tokio::task::spawn_blocking(move || rt.stop());
        if tokio::time::timeout(SHUTDOWN_TIMEOUT, stop).await.is_err() {
            warn!(
                timeout_seconds = SHUTDOWN_TIMEOUT.as_secs(),
                "the media relay did not stop in time"
            );
        }
    }
    info!("shutting down transports");
    if tokio::time::timeout(SHUTDOWN_TIMEOUT, transports.clone().shutdown())
        .await
        .is_err()
    {
        warn!(
            timeout_seconds = SHUTDOWN_TIMEOUT.as_secs(),
            "transports did not shut down in time"
        );
    }
    if let Some(threads) = guard_threads {
        let _ = tokio::task::spawn_blocking(move || threads.finish()).await;
    }
    match outcome {
        Ok(report) => {
            log_stats("final stats", &report, &transports.stats());
            info!("palisade stopped");
            Ok(())
        }
        Err(e) => {
            error!(error = %e, "the call engine failed");
            Err(AppError::EngineTask(e))
        }
    }
}

/// Starts the DNS resolver task and a forwarder that hands its trunk lists
/// to the engine task as [`Control::TrunkTargets`] (both channels bounded).
fn start_dns(
    config: &Arc<Config>,
    seed: [u8; 32],
    control: mpsc::Sender<Control>,
) -> Result<palisade_dns::ResolverHandle, palisade_dns::DnsError> {
    let (tx, mut rx) = mpsc::channel(DNS_CAPACITY);
    let (handle, _task) = palisade_dns::spawn(Arc::clone(config), seed, tx)?;
    tokio::spawn(async move {
        while let Some(update) = rx.recv().await {
            if control.send(Control::TrunkTargets(update)).await.is_err() {
                break;
            }
        }
    });
    info!(
        servers = %if config.dns().servers.is_empty() {
            "system".to_owned()
        } else {
            config
                .dns()
                .servers
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(",")
        },
        "DNS resolver started for trunk members given by name"
    );
    Ok(handle)
}

/// Turns signals and the stats timer into control requests.
struct Supervisor {
    path: PathBuf,
    /// The configuration the engine runs on (the last one accepted).
    config: Arc<Config>,
    log: LogControl,
    control: mpsc::Sender<Control>,
    transports: Transports,
    /// SIGTERM/SIGINT received so far.
    stop_requests: u32,
    /// The DNS resolver task, once some trunk has `host:` members.
    dns: Option<palisade_dns::ResolverHandle>,
    dns_seed: [u8; 32],
}

impl Supervisor {
    /// Runs until the engine task ends; returns its final counters.
    async fn run(
        mut self,
        signals: &mut Signals,
        mut engine_task: JoinHandle<LoopReport>,
    ) -> Result<LoopReport, tokio::task::JoinError> {
        let mut stats_tick = tokio::time::interval(STATS_INTERVAL);
        stats_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // The first tick completes at once; the first stats line is due after one interval.
        stats_tick.tick().await;
        loop {
            tokio::select! {
                res = &mut engine_task => return res,
                _ = signals.term.recv() => self.on_stop("SIGTERM").await,
                _ = signals.int.recv() => self.on_stop("SIGINT").await,
                _ = signals.hup.recv() => self.on_reload().await,
                _ = stats_tick.tick() => self.on_stats_tick().await,
            }
        }
    }

    async fn on_stop(&mut self, signal: &'static str) {
        self.stop_requests += 1;
        let request = if self.stop_requests == 1 {
            let grace = self.config.shutdown().grace;
            info!(
                signal,
                grace_seconds = grace.as_secs_f64(),
                "shutdown requested: draining"
            );
            Control::Drain { grace }
        } else {
            info!(signal, "shutdown requested again: ending calls now");
            Control::Terminate
        };
        // Fails only once the engine task has ended, which `run` sees next.
        let _ = self.control.send(request).await;
    }

    async fn on_reload(&mut self) {
        info!(config = %self.path.display(), "SIGHUP: reloading the configuration");
        let path = self.path.clone();
        let loaded = match tokio::task::spawn_blocking(move || palisade_config::load(&path)).await {
            Ok(loaded) => loaded,
            Err(e) => {
                error!(error = %e, "reload failed: keeping the running configuration");
                return;
            }
        };
        let new = match loaded {
            Ok(new) => new,
            Err(e) => {
                for line in e.to_string().lines() {
                    error!("reload failed: {line}");
                }
                error!("reload failed: keeping the running configuration");
                return;
            }
        };
        if let Err(changes) = self.config.reload_check(&new) {
            for change in &changes {
                warn!("reload refused: {change}");
            }
            warn!("reload refused: keeping the running configuration; restart to apply these");
            return;
        }
        let (old_sip, new_sip) = (self.config.sip(), new.sip());
        if old_sip.tcp_idle_timeout != new_sip.tcp_idle_timeout
            || old_sip.tcp_connect_timeout != new_sip.tcp_connect_timeout
        {
            warn!(
                "sip.tcp_idle_timeout_seconds / sip.tcp_connect_timeout_ms changed: \
                 the transports keep the old values until a restart"
            );
        }
        let new = Arc::new(new);
        let (done_tx, done_rx) = oneshot::channel();
        if self
            .control
            .send(Control::Reload(Arc::clone(&new), done_tx))
            .await
            .is_err()
            || done_rx.await.is_err()
        {
            warn!("reload not applied: the engine has stopped");
            return;
        }
        let level_changed = self.config.logging().level != new.logging().level;
        let batch_changed = self.config.logging().batch != new.logging().batch;
        match &self.dns {
            Some(dns) if !dns.reload(Arc::clone(&new)).await => {
                warn!("the DNS resolver has stopped: trunk members by name are not re-resolved");
            }
            Some(_) => {}
            None if new.trunks().iter().any(|t| t.has_dns_members()) => {
                match start_dns(&new, self.dns_seed, self.control.clone()) {
                    Ok(h) => self.dns = Some(h),
                    Err(e) => {
                        error!(error = %e, "cannot start the DNS resolver: calls to trunks with host: members get 503")
                    }
                }
            }
            None => {}
        }
        self.config = new;
        info!(
            zones = self.config.zones().len(),
            trunks = self.config.trunks().len(),
            routes = self.config.routes().len(),
            "reloaded"
        );
        if level_changed {
            info!(level = %self.config.logging().level, "applying logging.level");
            self.log.set_level(&self.config.logging().level);
        }
        if batch_changed {
            info!(
                batch_ms = self.config.logging().batch.as_millis(),
                "applying logging.batch_ms"
            );
            self.log.set_batch(self.config.logging().batch);
        }
    }

    async fn on_stats_tick(&mut self) {
        let (tx, rx) = oneshot::channel();
        if self.control.send(Control::Stats(tx)).await.is_err() {
            return;
        }
        if let Ok(report) = rx.await {
            log_stats("stats", &report, &self.transports.stats());
        }
    }
}

/// One info line with the engine's, the loop's and the transports' counters.
fn log_stats(what: &str, r: &LoopReport, t: &TransportStats) {
    if let Some(g) = &r.guard {
        log_guard_stats(what, g);
    }
    let (e, c) = (&r.engine, &r.counters);
    info!(
        active_calls = e.active_calls,
        calls_started = e.calls_started,
        calls_answered = e.calls_answered,
        calls_ended = e.calls_ended,
        calls_rejected = e.calls_rejected,
        messages_received = e.messages_received,
        retransmissions_received = e.retransmissions_received,
        malformed_answered = e.malformed_answered,
        malformed_dropped = e.malformed_dropped,
        requests_rejected = c.rejected,
        stray_responses = e.stray_responses,
        stray_acks = e.stray_acks,
        stray_answers_killed = e.stray_answers_killed,
        requests_sent = e.requests_sent,
        server_transactions = e.server_transactions,
        client_transactions = e.client_transactions,
        transmits_dropped = e.transmits_dropped,
        events_dropped = e.events_dropped,
        internal_errors = e.internal_errors,
        probes_sent = e.probes_sent,
        targets_down = e.targets_down,
        send_errors = c.send_errors,
        unroutable = c.unroutable,
        unknown_listener = c.unknown_listener,
        udp_received = t.udp_received,
        udp_sent = t.udp_sent,
        udp_dropped_inbound_full = t.udp_dropped_inbound_full,
        udp_send_errors = t.udp_send_errors,
        udp_recv_errors = t.udp_recv_errors,
        oversize = t.oversize,
        keepalives = t.keepalives,
        tcp_open_connections = t.tcp_open_connections,
        tcp_accepted = t.tcp_accepted,
        tcp_connected = t.tcp_connected,
        tcp_connect_failures = t.tcp_connect_failures,
        tcp_closed = t.tcp_closed,
        tcp_messages_received = t.tcp_messages_received,
        tcp_messages_sent = t.tcp_messages_sent,
        tcp_framing_errors = t.tcp_framing_errors,
        tcp_rejected_max_connections = t.tcp_rejected_max_connections,
        tcp_send_queue_full = t.tcp_send_queue_full,
        "{what}"
    );
    if let Some(m) = &r.media {
        info!(
            media_calls = m.calls,
            media_ports_in_use = m.ports_in_use,
            media_ports_quarantined = m.ports_quarantined,
            media_offers = m.offers,
            media_answers = m.answers,
            media_offers_repeated = m.offers_repeated,
            media_refused_bad_sdp = m.refused_bad_sdp,
            media_refused_codec = m.refused_codec,
            media_refused_srtp = m.refused_srtp,
            media_refused_no_ports = m.refused_no_ports,
            media_relay_busy = m.relay_busy,
            media_refused_other = m.refused_other,
            media_closes_deferred = m.closes_deferred,
            media_quarantine_expired = m.quarantine_expired,
            media_timeouts = m.timeouts,
            media_bind_failures = m.bind_failures,
            "{what} (media)"
        );
    }
    if let Some(x) = &r.relay {
        info!(
            relay_sessions_open = x.sessions_open,
            relay_ports_bound = x.ports_bound,
            relay_ports_spare = x.ports_spare,
            relay_packets_relayed = x.packets_relayed,
            relay_bytes_relayed = x.bytes_relayed,
            relay_dropped_foreign_source = x.dropped_foreign_source,
            relay_dropped_no_remote = x.dropped_no_remote,
            relay_dropped_malformed = x.dropped_malformed,
            relay_srtp_failures = x.srtp_failures,
            relay_dropped_send = x.dropped_send,
            relay_dropped_no_session = x.dropped_no_session,
            relay_timeouts = x.timeouts,
            relay_reports_dropped = x.reports_dropped,
            relay_commands_ignored = x.commands_ignored,
            relay_kernel_streams = x.streams_offloaded,
            relay_kernel_packets = x.packets_offloaded,
            relay_kernel_failures = x.offload_failures,
            "{what} (relay)"
        );
    }
    let g = &r.edge;
    info!(
        bindings = g.bindings,
        registers_accepted = g.registers_accepted,
        registers_refused = g.registers_refused,
        challenges_sent = g.challenges_sent,
        auth_failures = g.auth_failures,
        registers_sent = g.registers_sent,
        outbound_auth_retries = g.outbound_auth_retries,
        trunk_down_rejected = g.trunk_down_rejected,
        not_registered_rejected = g.not_registered_rejected,
        cac_rejected_concurrent = g.cac_rejected_concurrent,
        cac_rejected_cps = g.cac_rejected_cps,
        cac_rejected_registrations = g.cac_rejected_registrations,
        cac_emergency_exempted = g.cac_emergency_exempted,
        keepalive_options_sent = g.keepalive_options_sent,
        keepalive_crlf_sent = g.keepalive_crlf_sent,
        keepalive_misses = g.keepalive_misses,
        bindings_restored = g.bindings_restored,
        nated_calls = g.nated_calls,
        "{what} (edge)"
    );
}

/// One info line with the guard's counters (metrics-ready names).
fn log_guard_stats(what: &str, g: &guard_io::GuardIoStats) {
    use palisade_guard::Reason;
    let s = &g.guard;
    let by_reason: Vec<String> = Reason::ALL
        .iter()
        .filter(|r| s.decisions_for(**r) > 0)
        .map(|r| format!("{}={}", r.as_str(), s.decisions_for(*r)))
        .collect();
    info!(
        palisade_guard_fallback_mode = u8::from(!g.nftables),
        palisade_guard_bans_active = s.bans_active,
        palisade_guard_bans_issued_total = s.bans_issued,
        palisade_guard_bans_evicted_total = s.bans_evicted,
        palisade_guard_fraud_states = s.fraud_states,
        palisade_guard_requests_total = s.requests,
        palisade_guard_dropped_total = s.dropped,
        palisade_guard_rejected_total = s.rejected,
        palisade_guard_dry_run_decisions_total = s.dry_run_decisions,
        palisade_guard_calls_torn_down_total = s.calls_torn_down,
        palisade_guard_alerts_total = s.alerts_raised,
        palisade_guard_emergency_calls_total = s.emergency_calls,
        palisade_guard_sources_tracked = s.sources_tracked,
        palisade_guard_sources_evicted_total = s.sources_evicted,
        palisade_guard_nft_bans_applied_total = g.nft.bans_applied,
        palisade_guard_nft_batches_total = g.nft.batches,
        palisade_guard_nft_errors_total = g.nft.errors,
        palisade_guard_nft_set_full_total = g.nft.set_full,
        palisade_guard_nft_queue_full_total = g.nft_queue_full,
        palisade_guard_store_queue_full_total = g.store_queue_full,
        palisade_guard_store_errors_total = g.store_errors,
        decisions = %by_reason.join(","),
        "guard {what}"
    );
}
