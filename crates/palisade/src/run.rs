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
use crate::listeners::{ListenerMap, tcp_settings};
use crate::logging::{self, LogControl};

/// Bound of the channel from the transports to the engine task. When it is
/// full, UDP datagrams are dropped (and counted) and TCP readers wait.
pub const INBOUND_CAPACITY: usize = 16_384;
/// Bound of the supervisor-to-engine control channel.
const CONTROL_CAPACITY: usize = 16;
/// How often a stats line is logged.
const STATS_INTERVAL: Duration = Duration::from_secs(60);
/// Upper bound on closing the transports and the runtime at exit.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(5);

/// Runs Palisade with the configuration at `path` until it is signalled.
pub fn run(path: &Path) -> Result<(), AppError> {
    // Everything is validated before anything is bound.
    let config = palisade_config::load(path)?;
    let log = logging::init(config.logging())?;
    let mut seed = [0u8; 32];
    rand::rngs::SysRng
        .try_fill_bytes(&mut seed)
        .map_err(AppError::Entropy)?;
    let workers = std::thread::available_parallelism().map_or(2, std::num::NonZero::get);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .thread_name("palisade-worker")
        .enable_all()
        .build()
        .map_err(AppError::Runtime)?;
    let result = runtime.block_on(serve(
        path.to_path_buf(),
        Arc::new(config),
        seed,
        log,
        workers,
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
    seed: [u8; 32],
    log: LogControl,
    workers: usize,
) -> Result<(), AppError> {
    // Installed before binding: from here on SIGTERM means a graceful stop.
    let mut signals = Signals::install()?;
    let listeners = ListenerMap::new(&config)?;
    let (inbound_tx, inbound_rx) = mpsc::channel(INBOUND_CAPACITY);
    let transports =
        Transports::start(listeners.specs(&config), tcp_settings(&config), inbound_tx).await?;
    info!(
        node = %config.node().name,
        config = %path.display(),
        zones = config.zones().len(),
        trunks = config.trunks().len(),
        routes = config.routes().len(),
        listeners = listeners.len(),
        workers,
        version = env!("CARGO_PKG_VERSION"),
        "palisade started"
    );

    let (control_tx, control_rx) = mpsc::channel(CONTROL_CAPACITY);
    let mut engine = Engine::new(Arc::clone(&config), seed);
    let store = match crate::edge::open_store(&config, &mut engine, crate::now()) {
        Ok(s) => s,
        Err(e) => {
            let _ = transports.clone().shutdown().await;
            return Err(e.into());
        }
    };
    engine.sync_edge(crate::now());
    let engine_loop = EngineLoop::new(engine, Arc::clone(&config), listeners, transports.clone())
        .with_store(store);
    let engine_task = tokio::spawn(engine_loop.run(inbound_rx, control_rx));

    let supervisor = Supervisor {
        path,
        config,
        log,
        control: control_tx,
        transports: transports.clone(),
        stop_requests: 0,
    };
    let outcome = supervisor.run(&mut signals, engine_task).await;

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
        "{what} (edge)"
    );
}
