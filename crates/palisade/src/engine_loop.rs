//! The task that owns the [`Engine`]: feeds it received messages, its timers
//! and the clock, sends what it transmits, logs what it reports, acts on the
//! media relay's reports (a media timeout or bind failure ends the call; a
//! closed session frees its ports and logs its quality), and runs the
//! shutdown sequence (drain, terminate, linger).
//!
//! Nothing else touches the engine; the supervisor talks to this task over a
//! bounded [`Control`] channel.

use std::sync::Arc;
use std::time::{Duration, Instant};

use palisade_b2bua::{
    CallEventKind, CallRef, EndReason, Engine, EngineStats, Event, StreamQuality,
};
use palisade_config::Config;
use palisade_media::MediaStats;
use palisade_relay::{RelayStats, Report};
use palisade_transport::{Outgoing, Received, Transports};
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, info, trace, warn};

use crate::guard_io::{GuardIo, GuardIoStats};
use crate::listeners::ListenerMap;
use crate::media::EngineMedia;
use crate::now;

/// Messages handled after the first of a batch before transmits are flushed.
pub const BATCH: usize = 256;
/// How often the loop looks at the relay's reports when nothing else wakes
/// it. Reports are never urgent to the millisecond (a media timeout is tens
/// of seconds; a closed session only frees ports and logs quality), so the
/// relay threads put them on a plain channel and never wake this thread:
/// the loop drains it on every turn, and at least this often.
pub const REPORT_POLL: Duration = Duration::from_millis(100);
/// The loop wakes for engine and guard deadlines on a grid of this step
/// (rounded up, never early). Most deadlines are transaction clean-ups
/// (Timers J, K, L, M, D: 5-32 s after a transaction's last message, three
/// or four per call at different instants); on the grid, those of many
/// calls share one wake-up instead of each costing the thread a sleep and a
/// wake (about a third of its wake-ups at 250 calls/s, bench/sbc). A
/// retransmission (T1 = 500 ms) goes out at most this much later.
pub const TIMER_GRID: Duration = Duration::from_millis(10);
/// After `terminate_all`, how long the loop keeps running so BYEs and
/// CANCELs go out and their answers come back.
pub const LINGER: Duration = Duration::from_secs(2);

/// Requests from the supervisor.
#[derive(Debug)]
pub enum Control {
    /// Use this configuration for new calls; answered once applied.
    Reload(Arc<Config>, oneshot::Sender<()>),
    /// Stop taking calls; end the rest after `grace`.
    Drain {
        /// How long active calls may continue.
        grace: Duration,
    },
    /// End every call now (a second SIGTERM); during the linger, stop at once.
    Terminate,
    /// Report the counters.
    Stats(oneshot::Sender<LoopReport>),
    /// A trunk's targets from DNS (the resolver task, via the supervisor).
    TrunkTargets(palisade_dns::TrunkTargets),
}

/// What the loop itself counts, beside the engine's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LoopCounters {
    /// Received on a listener id the map does not know (a bug if non-zero).
    pub unknown_listener: u64,
    /// Transmits for a zone and transport with no listener (a bug if non-zero).
    pub unroutable: u64,
    /// Sends the transports refused.
    pub send_errors: u64,
    /// Malformed messages reported by the engine.
    pub malformed: u64,
    /// Requests the engine refused before a call existed.
    pub rejected: u64,
}

/// Engine and loop counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LoopReport {
    /// The engine's counters and gauges.
    pub engine: EngineStats,
    /// The loop's own.
    pub counters: LoopCounters,
    /// The media manager's, when media is anchored.
    pub media: Option<MediaStats>,
    /// The relay's, when media is anchored.
    pub relay: Option<RelayStats>,
    /// The guard's, when it runs.
    pub guard: Option<GuardIoStats>,
    /// The edge's counters (registrar, auth, registrations, keepalives, CAC).
    pub edge: palisade_b2bua::EdgeStats,
    /// Whether new calls are refused because the process is stopping.
    pub draining: bool,
    /// Media quality of ended streams.
    pub quality: crate::media::QualityTally,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Running,
    /// Refusing new calls until every call ended or `deadline`.
    Draining {
        deadline: Instant,
    },
    /// Calls were ended; keep exchanging messages until `until`.
    Lingering {
        until: Instant,
    },
    /// Leave the loop.
    Done,
}

impl Phase {
    fn deadline(self) -> Option<Instant> {
        match self {
            Phase::Draining { deadline } => Some(deadline),
            Phase::Lingering { until } => Some(until),
            Phase::Running | Phase::Done => None,
        }
    }
}

/// The engine task's state.
#[derive(Debug)]
pub struct EngineLoop {
    engine: Engine,
    cfg: Arc<Config>,
    listeners: ListenerMap,
    transports: Transports,
    counters: LoopCounters,
    quality: crate::media::QualityTally,
    phase: Phase,
    media: Option<EngineMedia>,
    /// The relay threads' reports, drained every turn (see [`REPORT_POLL`]).
    reports: Option<std::sync::mpsc::Receiver<Report>>,
    guard: Option<GuardIo>,
    /// The registrar's binding store, if configured.
    store: Option<palisade_store::Store>,
    call_log: CallLog,
}

/// A deadline far enough away to mean "never" for a disabled sleep.
/// `deadline` rounded up to the next step of [`TIMER_GRID`] counted from
/// `origin`.
fn on_grid(origin: Instant, deadline: Instant) -> Instant {
    if deadline <= origin {
        return deadline;
    }
    let grid = TIMER_GRID.as_nanos();
    let since = deadline.duration_since(origin).as_nanos();
    let steps = since.div_ceil(grid);
    let offset = u64::try_from(steps.saturating_mul(grid)).unwrap_or(u64::MAX);
    origin
        .checked_add(Duration::from_nanos(offset))
        .unwrap_or(deadline)
        .max(deadline)
}

fn far_future(now: Instant) -> tokio::time::Instant {
    tokio::time::Instant::from_std(now + Duration::from_secs(86_400))
}

impl EngineLoop {
    /// A loop for `engine`, which runs on `cfg`.
    pub fn new(
        engine: Engine,
        cfg: Arc<Config>,
        listeners: ListenerMap,
        transports: Transports,
    ) -> Self {
        EngineLoop {
            engine,
            cfg,
            listeners,
            transports,
            counters: LoopCounters::default(),
            quality: crate::media::QualityTally::default(),
            phase: Phase::Running,
            media: None,
            reports: None,
            guard: None,
            store: None,
            call_log: CallLog::default(),
        }
    }

    /// Persists registrar bindings in `store`.
    pub fn with_store(mut self, store: Option<palisade_store::Store>) -> Self {
        self.store = store;
        self
    }

    /// Runs the guard: installs its hook in the engine and carries out its
    /// actions after every batch.
    pub fn with_guard(mut self, guard: GuardIo) -> Self {
        self.engine.set_guard(guard.hook());
        self.guard = Some(guard);
        self
    }

    /// The engine's next deadline, or the guard's if earlier.
    fn next_deadline(&self) -> Option<Instant> {
        let e = self.engine.poll_timeout();
        let g = self.guard.as_ref().and_then(GuardIo::poll_timeout);
        match (e, g) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Anchors media: `media.media` must be the hook installed in the
    /// engine; the loop feeds it the relay's reports.
    pub fn with_media(
        mut self,
        media: EngineMedia,
        reports: std::sync::mpsc::Receiver<Report>,
    ) -> Self {
        self.media = Some(media);
        self.reports = Some(reports);
        self
    }

    /// Runs until the shutdown sequence completes, the inbound channel closes,
    /// or the control channel closes while idle. Returns the final counters.
    pub async fn run(
        mut self,
        mut inbound: mpsc::Receiver<Received>,
        mut control: mpsc::Receiver<Control>,
    ) -> LoopReport {
        let timer = tokio::time::sleep_until(far_future(now()));
        tokio::pin!(timer);
        let phase_timer = tokio::time::sleep_until(far_future(now()));
        tokio::pin!(phase_timer);
        let log_timer = tokio::time::sleep_until(far_future(now()));
        tokio::pin!(log_timer);
        let mut control_open = true;
        // Gives the engine its first `now`, so it schedules health probes.
        self.engine.handle_timeout(now());
        self.flush();
        let mut reports = self.reports.take();
        let mut report_poll = tokio::time::interval(REPORT_POLL);
        report_poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut unbans = self.guard.as_mut().and_then(|g| g.unbans.take());
        let grid_origin = now();
        while self.phase != Phase::Done {
            let t = now();
            let engine_deadline = self.next_deadline();
            timer.as_mut().reset(engine_deadline.map_or_else(
                || far_future(t),
                |d| tokio::time::Instant::from_std(on_grid(grid_origin, d)),
            ));
            let phase_deadline = self.phase.deadline();
            phase_timer.as_mut().reset(
                phase_deadline.map_or_else(|| far_future(t), tokio::time::Instant::from_std),
            );
            let log_deadline = crate::logging::held_deadline();
            if let Some(d) = log_deadline {
                log_timer.as_mut().reset(tokio::time::Instant::from_std(d));
            }
            // Lines logged from here to the end of the turn go out in one
            // write, now or (held) within `logging::HOLD`.
            let mut log_batch = None;
            tokio::select! {
                msg = inbound.recv() => match msg {
                    Some(first) => {
                        log_batch = Some(crate::logging::hold());
                        self.on_received(first);
                        for _ in 0..BATCH {
                            match inbound.try_recv() {
                                Ok(m) => self.on_received(m),
                                Err(_) => break,
                            }
                        }
                    }
                    None => {
                        warn!("inbound channel closed: the transports stopped; engine loop ends");
                        break;
                    }
                },
                _ = report_poll.tick(), if reports.is_some() => {}
                () = &mut timer, if engine_deadline.is_some() => {}
                Some(ip) = async {
                    match unbans.as_mut() {
                        Some(rx) => rx.recv().await,
                        None => std::future::pending().await,
                    }
                } => {
                    if let Some(g) = self.guard.as_mut() {
                        g.unban(ip);
                    }
                }
                () = &mut phase_timer, if phase_deadline.is_some() => {}
                () = &mut log_timer, if log_deadline.is_some() => {}
                ctl = control.recv(), if control_open => match ctl {
                    Some(c) => self.on_control(c),
                    None => {
                        control_open = false;
                        if self.phase == Phase::Running {
                            // Only reachable if the supervisor is gone; without it no
                            // signal can stop us, so stop the way SIGTERM would.
                            warn!("control channel closed: draining");
                            self.on_control(Control::Drain { grace: self.cfg.shutdown().grace });
                        }
                    }
                },
            }
            let _log_batch = log_batch.unwrap_or_else(crate::logging::hold);
            self.drain_reports(&mut reports);
            let t = now();
            if self.engine.poll_timeout().is_some_and(|d| d <= t) {
                self.engine.handle_timeout(t);
            }
            if let Some(m) = &self.media {
                m.media.tick(t);
            }
            if let Some(g) = self.guard.as_mut() {
                g.drive(&mut self.engine);
            }
            self.flush();
            self.advance(now());
            self.flush();
        }
        info!("engine loop stopped");
        crate::logging::flush_held();
        // Calls ended by the shutdown told the guard; carry out what it said.
        if let Some(g) = self.guard.as_mut() {
            g.last_drive(&mut self.engine);
        }
        let report = self.report();
        if let Some(g) = self.guard.take() {
            g.close();
        }
        report
    }

    fn report(&self) -> LoopReport {
        LoopReport {
            engine: self.engine.stats(),
            counters: self.counters,
            edge: self.engine.edge_stats(),
            guard: self.guard.as_ref().map(GuardIo::stats),
            media: self.media.as_ref().map(|m| m.media.stats()),
            relay: self.media.as_ref().map(|m| m.relay.stats()),
            draining: self.phase != Phase::Running,
            quality: self.quality,
        }
    }

    /// Handles every report the relay threads have queued.
    fn drain_reports(&mut self, reports: &mut Option<std::sync::mpsc::Receiver<Report>>) {
        if let Some(e) = self
            .media
            .as_ref()
            .and_then(|m| m.relay.take_offload_error())
        {
            warn!(error = %e, "kernel forwarding refused a change: those streams stay in Palisade");
        }
        let Some(rx) = reports.as_ref() else {
            return;
        };
        loop {
            match rx.try_recv() {
                Ok(r) => self.on_report(r),
                Err(std::sync::mpsc::TryRecvError::Empty) => return,
                Err(std::sync::mpsc::TryRecvError::Disconnected) => {
                    warn!("media relay reports stopped: media timeouts can no longer end calls");
                    *reports = None;
                    return;
                }
            }
        }
    }

    /// A relay report: a media timeout or bind failure ends the call (BYE on
    /// both legs); a closed session frees its ports and logs its quality.
    fn on_report(&mut self, r: Report) {
        let Some(m) = &self.media else {
            return;
        };
        let call = m.media.on_report(&r);
        match r {
            Report::Timeout { .. } => {
                let live = self
                    .engine
                    .terminate_call(now(), call, EndReason::MediaTimeout);
                info!(call = %call, event = %"media-timeout", live, "no RTP in either direction");
            }
            Report::BindFailed { addr, os_error, .. } => {
                let live = self
                    .engine
                    .terminate_call(now(), call, EndReason::MediaRefused);
                let error = os_error.map(std::io::Error::from_raw_os_error);
                let why = match error.as_ref().map(std::io::Error::kind) {
                    Some(std::io::ErrorKind::AddrInUse) => {
                        "a media port is taken by another process"
                    }
                    _ if os_error == Some(EMFILE) => {
                        "out of file descriptors: raise LimitNOFILE (each anchored call needs \
                         up to 4 sockets)"
                    }
                    _ => "cannot open a media socket",
                };
                warn!(call = %call, event = %"media-bind-failed", addr = %addr, live,
                    error = %OptError(error), "{why}");
            }
            Report::Closed { streams, .. } => {
                self.quality.record(&streams);
                // Into the call's record (a MediaStats call event, logged
                // with the call's other events).
                self.engine
                    .media_stats(call, palisade_media::quality(&streams));
            }
        }
    }

    fn on_received(&mut self, r: Received) {
        let Some(entry) = self.listeners.entry(r.listener) else {
            self.counters.unknown_listener += 1;
            debug!(listener = %r.listener, remote = %r.remote, "message on an unknown listener dropped");
            return;
        };
        trace!(listener = %r.listener, transport = %r.transport, remote = %r.remote,
            bytes = r.data.len(), first_line = %FirstLine(&r.data), "received");
        self.engine
            .handle_message(now(), entry.zone, r.transport, r.remote, r.data);
    }

    fn on_control(&mut self, c: Control) {
        match c {
            Control::Reload(cfg, done) => {
                self.engine.reload(Arc::clone(&cfg));
                // `reload` drops every trunk's stages: install the new ones.
                install_stages(&mut self.engine, &cfg);
                if let Some(g) = self.guard.as_mut() {
                    g.reload(&cfg);
                }
                self.engine.sync_edge(now());
                self.cfg = cfg;
                // The supervisor may have stopped waiting; nothing to do then.
                let _ = done.send(());
            }
            Control::Stats(reply) => {
                let _ = reply.send(self.report());
            }
            Control::TrunkTargets(update) => {
                let targets = update
                    .targets
                    .into_iter()
                    .map(|t| palisade_b2bua::Target {
                        addr: t.addr,
                        transport: t.transport,
                        uri_host: t.uri_host,
                        member: t.member,
                    })
                    .collect();
                if !self.engine.set_trunk_targets(now(), &update.trunk, targets) {
                    debug!(trunk = %update.trunk, "DNS targets for a trunk without DNS members ignored");
                }
            }
            Control::Drain { grace } => {
                if self.phase != Phase::Running {
                    debug!("drain requested again: already shutting down");
                    return;
                }
                self.engine.begin_drain();
                info!(
                    active_calls = self.engine.active_calls(),
                    grace_seconds = grace.as_secs_f64(),
                    "draining: new calls are refused with 503; waiting for active calls to end"
                );
                self.phase = Phase::Draining {
                    deadline: now() + grace,
                };
            }
            Control::Terminate => match self.phase {
                Phase::Running | Phase::Draining { .. } => {
                    self.engine.begin_drain();
                    info!("terminate requested: ending active calls now");
                    self.terminate(now());
                }
                Phase::Lingering { .. } => {
                    info!("terminate requested again: stopping without waiting");
                    self.phase = Phase::Done;
                }
                Phase::Done => {}
            },
        }
    }

    /// Moves the shutdown sequence on.
    fn advance(&mut self, now: Instant) {
        match self.phase {
            Phase::Running | Phase::Done => {}
            Phase::Draining { deadline } => {
                let active = self.engine.active_calls();
                if active == 0 {
                    info!("drain complete: no active calls");
                    self.terminate(now);
                } else if now >= deadline {
                    info!(
                        active_calls = active,
                        "grace period over: ending remaining calls"
                    );
                    self.terminate(now);
                }
            }
            Phase::Lingering { until } => {
                if now >= until {
                    info!("linger over");
                    self.phase = Phase::Done;
                }
            }
        }
    }

    /// `terminate_all`; if that ended calls, linger [`LINGER`] so their BYEs
    /// and CANCELs go out, are retransmitted and get answered. (Completed
    /// transactions stay in the engine for up to 64*T1, so its transaction
    /// gauges cannot tell when the last answer arrived.)
    fn terminate(&mut self, now: Instant) {
        let active = self.engine.active_calls();
        self.engine.terminate_all(now);
        if active == 0 {
            self.phase = Phase::Done;
            return;
        }
        info!(
            ended_calls = active,
            linger_seconds = LINGER.as_secs_f64(),
            "calls ended: waiting for their BYE and CANCEL transactions"
        );
        self.phase = Phase::Lingering {
            until: now + LINGER,
        };
    }

    /// Sends every pending transmit and logs every pending event.
    fn flush(&mut self) {
        while let Some(t) = self.engine.poll_transmit() {
            let flow = t.flow;
            let Some(listener) = self.listeners.listener_for(flow.zone, flow.transport) else {
                self.counters.unroutable += 1;
                debug!(zone = flow.zone.0, transport = %flow.transport, remote = %flow.remote,
                    "no listener for this zone and transport: message dropped");
                continue;
            };
            trace!(listener = %listener, transport = %flow.transport, remote = %flow.remote,
                bytes = t.data.len(), first_line = %FirstLine(&t.data), "sending");
            let out = Outgoing {
                listener,
                transport: flow.transport,
                remote: flow.remote,
                data: t.data,
            };
            if let Err(e) = self.transports.send(out) {
                self.counters.send_errors += 1;
                debug!(listener = %listener, transport = %flow.transport, remote = %flow.remote,
                    error = %e, "send failed");
            }
        }
        while let Some(ev) = self.engine.poll_event() {
            self.log_event(ev);
        }
        while let Some(ev) = self.engine.poll_edge_event() {
            crate::edge::on_event(&self.cfg, self.store.as_ref(), now(), ev);
        }
        // The media manager queued this turn's relay commands; one wakeup
        // per relay thread carries them all.
        if let Some(m) = &self.media {
            m.relay.wake();
        }
    }

    fn zone_name(&self, zone: palisade_config::ZoneId) -> &str {
        self.cfg.zone(zone).map_or("?", |z| z.name.as_str())
    }

    fn log_event(&mut self, ev: Event) {
        match ev {
            Event::Call(c) => self.call_log.event(c.call, c.kind),
            Event::Malformed {
                flow,
                error,
                answered,
            } => {
                self.counters.malformed += 1;
                debug!(zone = %self.zone_name(flow.zone), transport = %flow.transport,
                    remote = %flow.remote, error = %error, answered, "malformed message");
            }
            Event::Rejected {
                flow,
                method,
                status,
                reason,
            } => {
                self.counters.rejected += 1;
                debug!(zone = %self.zone_name(flow.zone), transport = %flow.transport,
                    remote = %flow.remote, method = %method, status, reason = %reason, "request rejected");
            }
            Event::TargetHealth(c) => {
                let line = format!(
                    "trunk={} member={} transport={} state={} probe={}",
                    c.trunk,
                    c.target.addr,
                    c.target.transport,
                    c.state.as_str(),
                    c.outcome.as_str()
                );
                match c.state {
                    palisade_b2bua::TargetState::Down => warn!("{line}"),
                    palisade_b2bua::TargetState::Up => info!("{line}"),
                }
            }
        }
    }
}

/// The next relay report, or never when media is not anchored.
/// `-` for a missing measurement, else one decimal.
struct OptF32(Option<f32>);

impl std::fmt::Display for OptF32 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Some(v) => write!(f, "{v:.1}"),
            None => f.write_str("-"),
        }
    }
}

/// `-` for a missing RTCP loss fraction, else two decimals (0.00..=1.00).
struct OptFraction(Option<f32>);

impl std::fmt::Display for OptFraction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Some(v) => write!(f, "{v:.2}"),
            None => f.write_str("-"),
        }
    }
}

/// One info line per stream of a closed media session: what each side sent
/// (`a_*`: the caller's leg, `b_*`: the callee's), as the relay measured it,
/// and what the receiver reported in RTCP (`*_rtcp_*`, `-` without RTCP).
fn log_media_stats(call: CallRef, s: &StreamQuality) {
    let (a, b) = (&s.a, &s.b);
    info!(call = %call, event = %"media-stats", stream = s.stream,
        a_packets = a.packets, a_bytes = a.bytes, a_offloaded = a.offloaded, a_lost = a.lost,
        a_jitter_ms = %OptF32(Some(a.jitter_ms)), a_rtcp_fraction_lost = %OptFraction(a.rtcp_fraction_lost),
        a_rtcp_jitter_ms = %OptF32(a.rtcp_jitter_ms), a_rtt_ms = %OptF32(a.rtt_ms),
        a_mos = %OptF32(a.mos), a_dropped = a.dropped,
        b_packets = b.packets, b_bytes = b.bytes, b_offloaded = b.offloaded, b_lost = b.lost,
        b_jitter_ms = %OptF32(Some(b.jitter_ms)), b_rtcp_fraction_lost = %OptFraction(b.rtcp_fraction_lost),
        b_rtcp_jitter_ms = %OptF32(b.rtcp_jitter_ms), b_rtt_ms = %OptF32(b.rtt_ms),
        b_mos = %OptF32(b.mos), b_dropped = b.dropped);
}

/// Installs the per-trunk stages `cfg` asks for (normalization today).
pub fn install_stages(engine: &mut Engine, cfg: &Arc<Config>) {
    let program = palisade_normalize::Program::new(Arc::clone(cfg));
    let stages = palisade_normalize::install(engine, &program);
    let profiles = cfg.normalization().profiles.len();
    if stages > 0 {
        info!(stages, profiles, "normalization stages installed");
    }
}

/// The first line of a message, escaped, for trace logs.
struct FirstLine<'a>(&'a [u8]);

impl std::fmt::Display for FirstLine<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let line = self.0.split(|&b| b == b'\n').next().unwrap_or_default();
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let line = &line[..line.len().min(200)];
        write!(f, "{}", line.escape_ascii())
    }
}

/// `-` for a missing status.
struct OptStatus(Option<u16>);

impl std::fmt::Display for OptStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Some(s) => s.fmt(f),
            None => f.write_str("-"),
        }
    }
}

/// What the `ended` line says about a call's answer: the last member
/// tried and the post-dial delay. Kept from `attempt`/`answered` until the
/// call's `ended` (every call ends, so the table holds live calls only).
#[derive(Debug, Clone, Copy, Default)]
struct CallProgress {
    member: Option<std::net::SocketAddr>,
    setup_ms: Option<u64>,
}

/// The call log: at `info`, three lines per call (`started`, `ended` with
/// the member and post-dial delay, `media-stats` per stream), plus
/// `failover` when a member fails; `attempt`, `progress` and `answered` at
/// `debug`. Each line costs the signalling thread formatting and a write,
/// about a fifth of a call's CPU at six lines a call (bench/sbc).
#[derive(Debug, Default)]
struct CallLog {
    progress: std::collections::HashMap<palisade_b2bua::CallRef, CallProgress>,
}

impl CallLog {
    /// Logs `kind` for `call`: `call=<ref> event=<name> ...`.
    fn event(&mut self, call: palisade_b2bua::CallRef, kind: CallEventKind) {
        match kind {
            CallEventKind::Started {
                from_trunk,
                to_trunk,
                number,
                a_call_id,
                b_call_id,
                nated,
            } => {
                self.progress.insert(call, CallProgress::default());
                info!(call = %call, event = %"started", from_trunk = %from_trunk,
                    to_trunk = %to_trunk, number = %number, a_call_id = %a_call_id,
                    b_call_id = %b_call_id, nated);
            }
            CallEventKind::Attempt { member, index } => {
                if let Some(p) = self.progress.get_mut(&call) {
                    p.member = Some(member);
                }
                debug!(call = %call, event = %"attempt", member = %member, index);
            }
            CallEventKind::Failover { member, status } => {
                info!(call = %call, event = %"failover", member = %member, status = %OptStatus(status));
            }
            CallEventKind::Progress { status } => {
                debug!(call = %call, event = %"progress", status);
            }
            CallEventKind::Answered { setup_ms } => {
                if let Some(p) = self.progress.get_mut(&call) {
                    p.setup_ms = Some(setup_ms);
                }
                debug!(call = %call, event = %"answered", setup_ms);
            }
            CallEventKind::Ended {
                reason,
                status,
                duration_ms,
            } => {
                let p = self.progress.remove(&call).unwrap_or_default();
                info!(call = %call, event = %"ended", reason = %reason.as_str(),
                    status = %OptStatus(status), member = %OptAddr(p.member),
                    setup_ms = %OptU64(p.setup_ms), duration_ms);
            }
            CallEventKind::MediaStats { streams } => {
                for s in &streams {
                    log_media_stats(call, s);
                }
            }
        }
    }
}

/// EMFILE on Linux: the process has no file descriptor left.
const EMFILE: i32 = 24;

/// `-` for no OS error.
struct OptError(Option<std::io::Error>);

impl std::fmt::Display for OptError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.0 {
            Some(e) => write!(f, "{e}"),
            None => f.write_str("-"),
        }
    }
}

/// `-` for no address.
struct OptAddr(Option<std::net::SocketAddr>);

impl std::fmt::Display for OptAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Some(a) => write!(f, "{a}"),
            None => f.write_str("-"),
        }
    }
}

/// `-` for no value.
struct OptU64(Option<u64>);

impl std::fmt::Display for OptU64 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Some(v) => write!(f, "{v}"),
            None => f.write_str("-"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use palisade_transport::{ListenerId, TcpSettings};
    use std::net::SocketAddr;

    const CFG: &str = "
zones:
  - name: inside
    sip_address: 127.0.55.250
    transports: [udp]
trunks:
  - name: pbx
    zone: inside
    members: [{address: 127.0.55.251}]
routes:
  - name: all
    to_trunk: pbx
shutdown:
  grace_seconds: 0
";

    #[test]
    fn deadlines_round_up_to_the_grid_never_early() {
        let origin = now();
        let ms = Duration::from_millis;
        assert_eq!(on_grid(origin, origin), origin);
        assert_eq!(on_grid(origin, origin + ms(1)), origin + TIMER_GRID);
        assert_eq!(on_grid(origin, origin + TIMER_GRID), origin + TIMER_GRID);
        assert_eq!(
            on_grid(origin, origin + TIMER_GRID + Duration::from_nanos(1)),
            origin + TIMER_GRID * 2
        );
        // Before the origin (cannot happen in the loop): unchanged.
        if let Some(before) = origin.checked_sub(ms(5)) {
            assert_eq!(on_grid(origin, before), before);
        }
        for n in 0..1000u64 {
            let d = origin + Duration::from_micros(n * 997);
            let g = on_grid(origin, d);
            assert!(g >= d && g - d < TIMER_GRID, "{n}");
        }
    }

    fn options(branch: &str) -> bytes::Bytes {
        format!(
            "OPTIONS sip:127.0.55.250 SIP/2.0\r\n\
             Via: SIP/2.0/UDP 127.0.55.251:5060;branch=z9hG4bK{branch}\r\n\
             Max-Forwards: 70\r\n\
             From: <sip:a@127.0.55.251>;tag=1\r\n\
             To: <sip:127.0.55.250>\r\n\
             Call-ID: {branch}\r\n\
             CSeq: 1 OPTIONS\r\n\
             Content-Length: 0\r\n\r\n"
        )
        .into_bytes()
        .into()
    }

    fn received(listener: u16, data: bytes::Bytes) -> Received {
        Received {
            listener: ListenerId(listener),
            transport: palisade_config::Transport::Udp,
            local: "127.0.55.250:5060".parse().unwrap(),
            remote: "127.0.55.251:5060".parse::<SocketAddr>().unwrap(),
            data,
        }
    }

    async fn stats(control: &mpsc::Sender<Control>) -> LoopReport {
        let (tx, rx) = oneshot::channel();
        control.send(Control::Stats(tx)).await.unwrap();
        rx.await.unwrap()
    }

    /// The loop without sockets: transports with no listeners, so every send
    /// is refused and counted, and messages are injected straight into the
    /// inbound channel.
    #[tokio::test]
    async fn loop_feeds_the_engine_counts_and_stops_on_drain() {
        let cfg = Arc::new(palisade_config::load_str(CFG, "t.yaml").unwrap());
        let listeners = ListenerMap::new(&cfg).unwrap();
        let (in_tx, in_rx) = mpsc::channel(16);
        let transports = Transports::start(Vec::new(), TcpSettings::default(), in_tx.clone())
            .await
            .unwrap();
        let engine = Engine::new(Arc::clone(&cfg), [7; 32]);
        let (ctl_tx, ctl_rx) = mpsc::channel(4);
        let task = tokio::spawn(
            EngineLoop::new(engine, Arc::clone(&cfg), listeners, transports).run(in_rx, ctl_rx),
        );

        // OPTIONS on the zone's listener: the engine answers, the send is
        // refused (no socket behind listener 0) and counted.
        in_tx.send(received(0, options("a1"))).await.unwrap();
        // On a listener the map does not know: dropped and counted.
        in_tx.send(received(9, options("a2"))).await.unwrap();
        // Garbage: reported by the engine as malformed.
        in_tx
            .send(received(0, bytes::Bytes::from_static(b"\x00\x01 not sip")))
            .await
            .unwrap();
        // Control and inbound are separate channels: poll until all three are in.
        let mut report = stats(&ctl_tx).await;
        for _ in 0..500 {
            if report.engine.messages_received + report.counters.unknown_listener == 3 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
            report = stats(&ctl_tx).await;
        }
        assert_eq!(report.engine.messages_received, 2);
        assert_eq!(report.counters.unknown_listener, 1);
        assert_eq!(report.counters.send_errors, 1);
        assert_eq!(report.counters.malformed, 1);
        assert_eq!(report.counters.unroutable, 0);

        let (done_tx, done_rx) = oneshot::channel();
        ctl_tx
            .send(Control::Reload(Arc::clone(&cfg), done_tx))
            .await
            .unwrap();
        done_rx.await.unwrap();

        // No calls and no grace: the loop ends at once.
        ctl_tx
            .send(Control::Drain {
                grace: Duration::ZERO,
            })
            .await
            .unwrap();
        let last = tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(last.engine.messages_received, 2);
        assert_eq!(last.engine.active_calls, 0);
    }
}
