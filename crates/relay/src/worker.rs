//! One relay thread: owns the sessions routed to it and their sockets, waits
//! on epoll (mio), moves packets in batches, applies commands from its
//! bounded channel, reports timeouts and closures.
//!
//! Per packet there is no lock and no channel operation, and no allocation
//! for plain RTP/RTCP (`tests/no_alloc.rs` counts them: zero); an SRTP
//! packet costs about one, inside the `libsrtp` crate. The thread reads the
//! clock once per batch, rewrites packets in place in its [`Batch`] buffers
//! and adds its counters to shared atomics once per batch.

use std::collections::{HashMap, VecDeque};
use std::io;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError};
use std::time::{Duration, Instant};

use mio::net::UdpSocket;
use mio::{Events, Interest, Poll, Token};
use smallvec::SmallVec;

use crate::api::{
    Command, Endpoint, RelayConfig, RelayStats, Report, SessionId, Side, StreamStats,
};
use crate::batch::{BUF_CAPACITY, Batch};
use crate::latch::LatchState;
use crate::offload::{
    FlowCounters, OffloadConfig, OffloadFlow, OffloadMsg, OffloadOp, OffloadStream,
};
use crate::rtp::{self, RtpHeader};
use crate::sock::bind_media;
use crate::spare::{Drained, SparePool};
use crate::srtp::{SrtpIn, SrtpOut};
use crate::stats::DirectionMeter;

/// The waker's token; socket tokens are slab indices below it.
pub(crate) const WAKER: Token = Token(usize::MAX);
/// How often timeouts are checked (and the longest a thread sleeps).
const TICK: Duration = Duration::from_millis(100);
/// Batches read from one socket before the others get a turn.
const BATCHES_PER_TURN: usize = 16;
/// Commands applied per loop turn (bounds the latency packets see).
const COMMANDS_PER_TURN: usize = 256;
/// Timeout and BindFailed reports kept for retry while the channel is full.
const PENDING_REPORTS: usize = 4096;
/// Largest datagram relayed: room stays for SRTP's tag, MKI and index.
const MAX_DATAGRAM: usize = BUF_CAPACITY - 64;

/// A media socket that could not be opened, and the OS error.
#[derive(Debug, Clone, Copy)]
struct BindError {
    addr: SocketAddr,
    os_error: Option<i32>,
}

/// Counters a thread publishes; the control handle sums them.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    packets_relayed: AtomicU64,
    bytes_relayed: AtomicU64,
    dropped_foreign_source: AtomicU64,
    dropped_no_remote: AtomicU64,
    dropped_malformed: AtomicU64,
    srtp_failures: AtomicU64,
    dropped_send: AtomicU64,
    dropped_no_session: AtomicU64,
    sessions_open: AtomicU64,
    ports_bound: AtomicU64,
    timeouts: AtomicU64,
    reports_dropped: AtomicU64,
    commands_ignored: AtomicU64,
    streams_offloaded: AtomicU64,
    packets_offloaded: AtomicU64,
}

impl Counters {
    pub(crate) fn add_to(&self, s: &mut RelayStats) {
        let r = |a: &AtomicU64| a.load(Ordering::Relaxed);
        s.packets_relayed += r(&self.packets_relayed);
        s.bytes_relayed += r(&self.bytes_relayed);
        s.dropped_foreign_source += r(&self.dropped_foreign_source);
        s.dropped_no_remote += r(&self.dropped_no_remote);
        s.dropped_malformed += r(&self.dropped_malformed);
        s.srtp_failures += r(&self.srtp_failures);
        s.dropped_send += r(&self.dropped_send);
        s.dropped_no_session += r(&self.dropped_no_session);
        s.sessions_open += r(&self.sessions_open);
        s.ports_bound += r(&self.ports_bound);
        s.timeouts += r(&self.timeouts);
        s.reports_dropped += r(&self.reports_dropped);
        s.commands_ignored += r(&self.commands_ignored);
        s.streams_offloaded += r(&self.streams_offloaded);
        s.packets_offloaded += r(&self.packets_offloaded);
    }

    fn bump(a: &AtomicU64, n: u64) {
        if n != 0 {
            a.fetch_add(n, Ordering::Relaxed);
        }
    }
}

/// Per-batch tallies, published once per batch.
#[derive(Debug, Default, Clone, Copy)]
struct Tally {
    relayed: u64,
    bytes: u64,
    foreign: u64,
    no_remote: u64,
    malformed: u64,
    srtp: u64,
    send: u64,
}

impl Tally {
    fn publish(&self, c: &Counters) {
        Counters::bump(&c.packets_relayed, self.relayed);
        Counters::bump(&c.bytes_relayed, self.bytes);
        Counters::bump(&c.dropped_foreign_source, self.foreign);
        Counters::bump(&c.dropped_no_remote, self.no_remote);
        Counters::bump(&c.dropped_malformed, self.malformed);
        Counters::bump(&c.srtp_failures, self.srtp);
        Counters::bump(&c.dropped_send, self.send);
    }
}

/// SRTP state of one direction of one endpoint.
#[derive(Debug)]
enum Crypto<T> {
    Plain,
    Ctx(T),
    /// Keys were given but the SRTP library refused them: drop everything.
    Broken,
}

fn crypto_in(key: Option<&crate::api::SrtpKey>) -> Crypto<SrtpIn> {
    match key {
        None => Crypto::Plain,
        Some(k) => SrtpIn::new(k).map_or(Crypto::Broken, Crypto::Ctx),
    }
}

fn crypto_out(key: Option<&crate::api::SrtpKey>) -> Crypto<SrtpOut> {
    match key {
        None => Crypto::Plain,
        Some(k) => SrtpOut::new(k).map_or(Crypto::Broken, Crypto::Ctx),
    }
}

/// Where the peer said it receives RTCP.
fn rtcp_signalled(ep: &Endpoint) -> Option<SocketAddr> {
    if ep.rtcp_mux {
        return ep.remote;
    }
    ep.remote_rtcp.or_else(|| {
        ep.remote.map(|mut a| {
            a.set_port(a.port().wrapping_add(1));
            a
        })
    })
}

/// The local RTCP address (RTP port + 1); the RTP address itself when the
/// RTP port is 65535, which then fails to bind as taken.
fn rtcp_local(ep: &Endpoint) -> SocketAddr {
    let mut a = ep.local;
    if let Some(p) = a.port().checked_add(1) {
        a.set_port(p);
    }
    a
}

/// One side of a stream.
#[derive(Debug)]
struct End {
    ep: Endpoint,
    rtp: UdpSocket,
    rtp_token: Token,
    rtcp: Option<(UdpSocket, Token)>,
    rtp_latch: LatchState,
    rtcp_latch: LatchState,
    srtp_in: Crypto<SrtpIn>,
    srtp_out: Crypto<SrtpOut>,
    /// What this end's peer sends.
    meter: DirectionMeter,
}

impl End {
    /// No SRTP either way and no payload-type rewrite toward this peer.
    fn is_plain(&self) -> bool {
        matches!(self.srtp_in, Crypto::Plain)
            && matches!(self.srtp_out, Crypto::Plain)
            && self.ep.pt_map.iter().all(|(from, to)| from == to)
    }

    fn rtcp_out_fd(&self) -> i32 {
        match (&self.rtcp, self.ep.rtcp_mux) {
            (Some((s, _)), false) => s.as_raw_fd(),
            _ => self.rtp.as_raw_fd(),
        }
    }

    fn rtcp_target(&self) -> Option<SocketAddr> {
        if self.ep.rtcp_mux {
            self.rtp_latch.target()
        } else {
            self.rtcp_latch.target()
        }
    }
}

#[derive(Debug)]
struct Stream {
    index: u8,
    ends: [End; 2],
    /// Plain RTP both ways with no payload-type rewrite: the kernel could
    /// forward it (see [`crate::offload`]).
    plain: bool,
    /// When RTP was first relayed in user space since the last (re)start.
    rtp_since: Option<Instant>,
    /// What the kernel forwards for this stream, if offloaded.
    kernel: Option<Kernel>,
}

/// An offloaded stream's kernel state as this thread knows it.
#[derive(Debug, Clone, Copy)]
struct Kernel {
    key: OffloadStream,
    /// The kernel's cumulative (packets, bytes) per side last seen.
    seen: [(u64, u64); 2],
}

impl Stream {
    fn new(index: u8, ends: [End; 2]) -> Stream {
        let plain = ends.iter().all(End::is_plain);
        Stream {
            index,
            ends,
            plain,
            rtp_since: None,
            kernel: None,
        }
    }

    /// The kernel's view of this stream as the latches stand now.
    fn offload_key(&self) -> Option<OffloadStream> {
        let flow = |e: &End| {
            Some(OffloadFlow {
                peer: e.rtp_latch.source()?,
                local: e.ep.local,
            })
        };
        Some(OffloadStream {
            a: flow(&self.ends[0])?,
            b: flow(&self.ends[1])?,
        })
    }
}

/// A relay thread's side of kernel forwarding.
#[derive(Debug)]
struct WorkerOffload {
    cfg: OffloadConfig,
    lane: usize,
    tx: SyncSender<OffloadMsg>,
    counters: Receiver<Vec<FlowCounters>>,
    /// Removals the offload thread's channel had no room for (retried each
    /// turn; at most one per offloaded stream).
    backlog: VecDeque<OffloadMsg>,
    /// Offloaded directions by local RTP address: (session, stream).
    by_local: HashMap<SocketAddr, (SessionId, u8)>,
}

/// What a relay thread is given to take part in kernel forwarding.
#[derive(Debug)]
pub(crate) struct OffloadLane {
    pub cfg: OffloadConfig,
    pub lane: usize,
    pub tx: SyncSender<OffloadMsg>,
    pub counters: Receiver<Vec<FlowCounters>>,
}

/// Payload bytes of `packets` RTP packets that took `ip_bytes` as IP
/// datagrams (IP, UDP and a 12-byte RTP header each).
fn payload_bytes(ip_bytes: u64, packets: u64, v4: bool) -> u64 {
    let overhead = if v4 { 20 + 8 + 12 } else { 40 + 8 + 12 };
    ip_bytes.saturating_sub(packets.saturating_mul(overhead))
}

#[derive(Debug)]
struct Session {
    streams: SmallVec<[Stream; 2]>,
    last_rtp: Instant,
    timed_out: bool,
}

/// What a socket token refers to.
#[derive(Debug, Clone, Copy)]
struct SockRef {
    session: SessionId,
    stream: u8,
    side: usize,
    rtcp: bool,
}

fn side_index(s: Side) -> usize {
    match s {
        Side::A => 0,
        Side::B => 1,
    }
}

/// Everything a relay thread owns.
pub(crate) struct Worker {
    cfg: RelayConfig,
    poll: Poll,
    commands: Receiver<Command>,
    reports: SyncSender<Report>,
    pending: VecDeque<Report>,
    stop: Arc<AtomicBool>,
    counters: Arc<Counters>,
    sessions: HashMap<SessionId, Session>,
    socks: Vec<Option<SockRef>>,
    free: Vec<usize>,
    batch: Batch,
    out_rtp: Vec<(usize, SocketAddr)>,
    out_rtcp: Vec<(usize, SocketAddr)>,
    again: Vec<Token>,
    again_next: Vec<Token>,
    offload: Option<WorkerOffload>,
    lane: usize,
    spares: Arc<SparePool>,
    /// This thread's tokens standing for spares it keeps.
    spare_tokens: HashMap<usize, SocketAddr>,
    /// Spares in the order this thread kept them (entries of sockets taken
    /// since are skipped when met).
    spare_order: VecDeque<(SocketAddr, Token, Instant)>,
}

impl std::fmt::Debug for Worker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker")
            .field("sessions", &self.sessions.len())
            .finish_non_exhaustive()
    }
}

/// What a relay thread is made of (see [`Worker::new`]).
pub(crate) struct WorkerParts {
    pub cfg: RelayConfig,
    pub poll: Poll,
    pub commands: Receiver<Command>,
    pub reports: SyncSender<Report>,
    pub stop: Arc<AtomicBool>,
    pub counters: Arc<Counters>,
    pub offload: Option<OffloadLane>,
    /// The thread's index.
    pub lane: usize,
    pub spares: Arc<SparePool>,
}

impl Worker {
    pub(crate) fn new(parts: WorkerParts) -> Worker {
        let WorkerParts {
            cfg,
            poll,
            commands,
            reports,
            stop,
            counters,
            offload,
            lane,
            spares,
        } = parts;
        Worker {
            cfg,
            poll,
            commands,
            reports,
            pending: VecDeque::with_capacity(64),
            stop,
            counters,
            sessions: HashMap::new(),
            socks: Vec::new(),
            free: Vec::new(),
            batch: Batch::new(),
            out_rtp: Vec::with_capacity(crate::batch::BATCH),
            out_rtcp: Vec::with_capacity(crate::batch::BATCH),
            again: Vec::new(),
            again_next: Vec::new(),
            offload: offload.map(|o| WorkerOffload {
                cfg: o.cfg,
                lane: o.lane,
                tx: o.tx,
                counters: o.counters,
                backlog: VecDeque::new(),
                by_local: HashMap::new(),
            }),
            lane,
            spares,
            spare_tokens: HashMap::new(),
            spare_order: VecDeque::new(),
        }
    }

    /// The thread's loop; returns when told to stop (every session closed).
    pub(crate) fn run(mut self) {
        let mut events = Events::with_capacity(1024);
        #[allow(clippy::disallowed_methods)] // I/O thread: reads the clock once per turn.
        let mut last_tick = Instant::now();
        loop {
            // Sockets left undrained last turn are in `again_next`: do not sleep.
            let timeout = if self.again_next.is_empty() {
                Some(TICK)
            } else {
                Some(Duration::ZERO)
            };
            if let Err(e) = self.poll.poll(&mut events, timeout)
                && e.kind() != io::ErrorKind::Interrupted
            {
                // epoll itself failing is not recoverable in this thread;
                // avoid a hot loop and keep serving commands.
                std::thread::sleep(TICK);
            }
            // Commands first: a packet that woke the thread may belong to a
            // session whose Open or Update is queued (lazily, without a
            // wakeup of its own).
            self.apply_commands(COMMANDS_PER_TURN);
            // `again`: revisit now; `again_next`: collects for the next turn.
            std::mem::swap(&mut self.again, &mut self.again_next);
            self.again_next.clear();
            for ev in events.iter() {
                if ev.token() != WAKER {
                    self.socket_ready(ev.token());
                }
            }
            for i in 0..self.again.len() {
                let t = self.again[i];
                self.socket_ready(t);
            }
            self.again.clear();
            self.flush_pending();
            #[allow(clippy::disallowed_methods)] // I/O thread: once per turn.
            let now = Instant::now();
            self.kernel_turn(now);
            if now.saturating_duration_since(last_tick) >= TICK {
                last_tick = now;
                self.check_timeouts(now);
                self.expire_spares(now, crate::SPARE_IDLE);
            }
            if self.stop.load(Ordering::Acquire) {
                self.apply_commands(usize::MAX);
                let ids: Vec<SessionId> = self.sessions.keys().copied().collect();
                for id in ids {
                    self.close(id);
                }
                self.flush_pending();
                return;
            }
        }
    }

    fn apply_commands(&mut self, max: usize) {
        for _ in 0..max {
            match self.commands.try_recv() {
                Ok(cmd) => self.apply(cmd),
                Err(_) => break,
            }
        }
    }

    fn apply(&mut self, cmd: Command) {
        match cmd {
            Command::Open {
                session,
                stream,
                a,
                b,
            } => self.open(session, stream, a, b),
            Command::Update {
                session,
                stream,
                side,
                endpoint,
            } => self.update(session, stream, side, endpoint),
            Command::Close { session } => {
                if self.sessions.contains_key(&session) {
                    self.close(session);
                } else {
                    self.counters
                        .commands_ignored
                        .fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }

    fn alloc_token(&mut self, r: SockRef) -> Token {
        if let Some(i) = self.free.pop() {
            self.socks[i] = Some(r);
            Token(i)
        } else {
            self.socks.push(Some(r));
            Token(self.socks.len() - 1)
        }
    }

    fn free_token(&mut self, t: Token) {
        if let Some(slot) = self.socks.get_mut(t.0) {
            *slot = None;
            self.free.push(t.0);
        }
    }

    /// Binds and registers one socket, or takes the spare left bound on
    /// `addr` by an ended session (then also returns the peer it served).
    fn bind(
        &mut self,
        addr: SocketAddr,
        r: SockRef,
    ) -> Result<(UdpSocket, Token, Option<SocketAddr>), BindError> {
        let (mut sock, prev) = match self.spares.take(addr, self.lane) {
            Some(t) => match t.token {
                Some(token) => {
                    self.spare_tokens.remove(&token.0);
                    if let Some(slot) = self.socks.get_mut(token.0) {
                        *slot = Some(r);
                    }
                    self.counters.ports_bound.fetch_add(1, Ordering::Relaxed);
                    return Ok((t.sock, token, t.prev));
                }
                None => (t.sock, t.prev),
            },
            None => {
                let fresh = match bind_media(addr, self.cfg.dscp) {
                    // Out of descriptors: this thread's spares go first.
                    Err(e)
                        if matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE))
                            && !self.spare_order.is_empty() =>
                    {
                        #[allow(clippy::disallowed_methods)] // I/O thread: error path.
                        let now = Instant::now();
                        self.expire_spares(now, Duration::ZERO);
                        bind_media(addr, self.cfg.dscp)
                    }
                    other => other,
                }
                .map_err(|e| BindError {
                    addr,
                    os_error: e.raw_os_error(),
                })?;
                (UdpSocket::from_std(fresh), None)
            }
        };
        let token = self.alloc_token(r);
        if let Some(e) = self
            .poll
            .registry()
            .register(&mut sock, token, Interest::READABLE)
            .err()
            .map(|e| e.raw_os_error())
        {
            self.free_token(token);
            return Err(BindError { addr, os_error: e });
        }
        self.counters.ports_bound.fetch_add(1, Ordering::Relaxed);
        Ok((sock, token, prev))
    }

    /// Keeps an ended session's socket bound as a spare (see
    /// [`crate::spare`]), or closes it when the pool is full.
    fn retire(
        &mut self,
        sock: UdpSocket,
        token: Token,
        addr: SocketAddr,
        prev: Option<SocketAddr>,
        now: Instant,
    ) {
        match self.spares.keep(addr, sock, self.lane, token, now, prev) {
            Ok(()) => {
                if let Some(slot) = self.socks.get_mut(token.0) {
                    *slot = None;
                }
                self.spare_tokens.insert(token.0, addr);
                self.spare_order.push_back((addr, token, now));
                self.counters.ports_bound.fetch_sub(1, Ordering::Relaxed);
            }
            Err(sock) => self.unbind(sock, token),
        }
    }

    /// Closes this thread's spares kept longer than `idle`, and frees the
    /// tokens of those another thread took.
    fn expire_spares(&mut self, now: Instant, idle: Duration) {
        while let Some(&(addr, token, since)) = self.spare_order.front() {
            if now.saturating_duration_since(since) < idle {
                break;
            }
            self.spare_order.pop_front();
            if self.spares.expire(addr, self.lane, token, since)
                && self.spare_tokens.get(&token.0) == Some(&addr)
            {
                self.spare_tokens.remove(&token.0);
                self.free_token(token);
            }
        }
    }

    /// Reads and drops what arrives on a spare (the tail of an ended call).
    fn drain_spare(&mut self, token: Token) {
        let Some(&addr) = self.spare_tokens.get(&token.0) else {
            return;
        };
        for _ in 0..BATCHES_PER_TURN {
            match self.spares.drain(addr, self.lane, token, &mut self.batch) {
                Drained::Done(n) => {
                    self.counters
                        .dropped_no_session
                        .fetch_add(n as u64, Ordering::Relaxed);
                    return;
                }
                Drained::More(n) => {
                    self.counters
                        .dropped_no_session
                        .fetch_add(n as u64, Ordering::Relaxed);
                }
                Drained::Gone => {
                    // Another thread took it (out of this epoll set now).
                    self.spare_tokens.remove(&token.0);
                    self.free_token(token);
                    return;
                }
            }
        }
        self.again_next.push(token);
    }

    /// Closes a media socket. No `EPOLL_CTL_DEL` first: the socket is never
    /// duplicated, so closing it removes it from the epoll set (one syscall
    /// per socket less on the call-teardown path). An event for it already
    /// in this turn's batch finds the token free, or reused by a new socket
    /// that then reads nothing.
    fn unbind(&mut self, sock: UdpSocket, token: Token) {
        drop(sock);
        self.free_token(token);
        self.counters.ports_bound.fetch_sub(1, Ordering::Relaxed);
    }

    /// Releases an end's sockets: kept as spares when `keep` (its session
    /// ended normally), else closed.
    fn drop_end(&mut self, end: End, keep: Option<Instant>) {
        let rtcp_addr = rtcp_local(&end.ep);
        let End {
            ep,
            rtp,
            rtp_token,
            rtcp,
            rtp_latch,
            rtcp_latch,
            ..
        } = end;
        match keep {
            Some(now) => {
                self.retire(rtp, rtp_token, ep.local, rtp_latch.target(), now);
                if let Some((s, t)) = rtcp {
                    self.retire(s, t, rtcp_addr, rtcp_latch.target(), now);
                }
            }
            None => {
                self.unbind(rtp, rtp_token);
                if let Some((s, t)) = rtcp {
                    self.unbind(s, t);
                }
            }
        }
    }

    fn unoffload(&mut self, s: &mut Stream) {
        if let Some(k) = s.kernel.take() {
            unoffload_kernel(&mut self.offload, &self.counters, s, k);
        }
    }

    /// Once per turn: retries queued removals and applies the kernel's
    /// counters (liveness for the media timeout and the latches, packets
    /// for the statistics).
    fn kernel_turn(&mut self, now: Instant) {
        let Some(off) = self.offload.as_mut() else {
            return;
        };
        while let Some(m) = off.backlog.pop_front() {
            if let Err(TrySendError::Full(m)) = off.tx.try_send(m) {
                off.backlog.push_front(m);
                break;
            }
        }
        while let Ok(batch) = off.counters.try_recv() {
            for c in batch {
                let Some(&(session, index)) = off.by_local.get(&c.flow.local) else {
                    continue;
                };
                let Some(s) = self.sessions.get_mut(&session) else {
                    continue;
                };
                let Some(st) = s.streams.iter_mut().find(|st| st.index == index) else {
                    continue;
                };
                let Some(k) = st.kernel.as_mut() else {
                    continue;
                };
                let side = if k.key.a == c.flow {
                    0
                } else if k.key.b == c.flow {
                    1
                } else {
                    continue;
                };
                let (p0, b0) = k.seen[side];
                // Counters restart at zero when the kernel's entry was
                // replaced.
                let (dp, db) = if c.packets >= p0 {
                    (c.packets - p0, c.bytes.saturating_sub(b0))
                } else {
                    (c.packets, c.bytes)
                };
                k.seen[side] = (c.packets, c.bytes);
                if dp == 0 {
                    continue;
                }
                let end = &mut st.ends[side];
                end.meter
                    .on_offloaded(dp, payload_bytes(db, dp, c.flow.local.is_ipv4()));
                end.rtp_latch.touch(now);
                s.last_rtp = now;
                s.timed_out = false;
                self.counters
                    .packets_offloaded
                    .fetch_add(dp, Ordering::Relaxed);
            }
        }
    }

    fn drop_stream(&mut self, mut s: Stream, keep: Option<Instant>) {
        self.unoffload(&mut s);
        let [a, b] = s.ends;
        self.drop_end(a, keep);
        self.drop_end(b, keep);
    }

    fn make_end(
        &mut self,
        session: SessionId,
        stream: u8,
        side: usize,
        ep: Endpoint,
        now: Instant,
    ) -> Result<End, BindError> {
        let r = SockRef {
            session,
            stream,
            side,
            rtcp: false,
        };
        let (rtp, rtp_token, rtp_prev) = self.bind(ep.local, r)?;
        let (rtcp, rtcp_prev) = if ep.rtcp_mux {
            (None, None)
        } else {
            match self.bind(rtcp_local(&ep), SockRef { rtcp: true, ..r }) {
                Ok((s, t, prev)) => (Some((s, t)), prev),
                Err(e) => {
                    self.unbind(rtp, rtp_token);
                    return Err(e);
                }
            }
        };
        let guard = now + crate::REUSE_GUARD;
        Ok(End {
            rtp_latch: LatchState::new(ep.latch, ep.remote).refusing(rtp_prev, guard),
            rtcp_latch: LatchState::new(ep.latch, rtcp_signalled(&ep)).refusing(rtcp_prev, guard),
            srtp_in: crypto_in(ep.srtp_recv.as_ref()),
            srtp_out: crypto_out(ep.srtp_send.as_ref()),
            meter: DirectionMeter::new(now),
            ep,
            rtp,
            rtp_token,
            rtcp,
        })
    }

    fn open(&mut self, session: SessionId, stream: u8, a: Endpoint, b: Endpoint) {
        #[allow(clippy::disallowed_methods)] // I/O thread: per command, not per packet.
        let now = Instant::now();
        // A re-Open of an existing stream replaces it (its ports are freed first).
        if let Some(s) = self.sessions.get_mut(&session)
            && let Some(pos) = s.streams.iter().position(|st| st.index == stream)
        {
            let old = s.streams.remove(pos);
            self.drop_stream(old, None);
        }
        let end_a = match self.make_end(session, stream, 0, a, now) {
            Ok(e) => e,
            Err(e) => return self.bind_failed(session, e),
        };
        let end_b = match self.make_end(session, stream, 1, b, now) {
            Ok(e) => e,
            Err(e) => {
                self.drop_end(end_a, None);
                return self.bind_failed(session, e);
            }
        };
        let st = Stream::new(stream, [end_a, end_b]);
        let s = self.sessions.entry(session).or_insert_with(|| {
            self.counters.sessions_open.fetch_add(1, Ordering::Relaxed);
            Session {
                streams: SmallVec::new(),
                last_rtp: now,
                timed_out: false,
            }
        });
        s.streams.push(st);
    }

    /// A bind failed: the whole session goes (no Closed follows).
    fn bind_failed(&mut self, session: SessionId, e: BindError) {
        if let Some(s) = self.sessions.remove(&session) {
            self.counters.sessions_open.fetch_sub(1, Ordering::Relaxed);
            for st in s.streams {
                self.drop_stream(st, None);
            }
        }
        self.report(Report::BindFailed {
            session,
            addr: e.addr,
            os_error: e.os_error,
        });
    }

    fn update(&mut self, session: SessionId, stream: u8, side: Side, ep: Endpoint) {
        let x = side_index(side);
        let Some(s) = self.sessions.get_mut(&session) else {
            self.counters
                .commands_ignored
                .fetch_add(1, Ordering::Relaxed);
            return;
        };
        let Some(st) = s.streams.iter_mut().find(|st| st.index == stream) else {
            self.counters
                .commands_ignored
                .fetch_add(1, Ordering::Relaxed);
            return;
        };
        if st.ends[x].ep.local != ep.local {
            self.counters
                .commands_ignored
                .fetch_add(1, Ordering::Relaxed);
            return;
        }
        if st.ends[x].ep == ep {
            return;
        }
        // New signalling: the kernel lets go until the stream qualifies
        // again (new peers, keys or payload types).
        if let Some(k) = st.kernel.take() {
            unoffload_kernel(&mut self.offload, &self.counters, st, k);
        }
        st.rtp_since = None;
        let end = &mut st.ends[x];
        end.rtp_latch.update(ep.latch, ep.remote);
        end.rtcp_latch.update(ep.latch, rtcp_signalled(&ep));
        if end.ep.srtp_recv != ep.srtp_recv {
            end.srtp_in = crypto_in(ep.srtp_recv.as_ref());
        }
        if end.ep.srtp_send != ep.srtp_send {
            end.srtp_out = crypto_out(ep.srtp_send.as_ref());
        }
        let mux_on = ep.rtcp_mux && !end.ep.rtcp_mux;
        let mux_off = !ep.rtcp_mux && end.ep.rtcp_mux;
        end.ep = ep;
        st.plain = st.ends.iter().all(End::is_plain);
        let end = &mut st.ends[x];
        let rtcp_addr = rtcp_local(&end.ep);
        let freed = if mux_on { end.rtcp.take() } else { None };
        if let Some((sock, token)) = freed {
            self.unbind(sock, token);
        }
        if mux_off {
            let r = SockRef {
                session,
                stream,
                side: x,
                rtcp: true,
            };
            match self.bind(rtcp_addr, r) {
                Ok((sock, token, prev)) => {
                    if let Some(st) = self
                        .sessions
                        .get_mut(&session)
                        .and_then(|s| s.streams.iter_mut().find(|st| st.index == stream))
                    {
                        #[allow(clippy::disallowed_methods)] // I/O thread: per command.
                        let guard = Instant::now() + crate::REUSE_GUARD;
                        let end = &mut st.ends[x];
                        end.rtcp = Some((sock, token));
                        end.rtcp_latch = end.rtcp_latch.refusing(prev, guard);
                    }
                }
                Err(e) => self.bind_failed(session, e),
            }
        }
    }

    fn close(&mut self, session: SessionId) {
        let Some(s) = self.sessions.remove(&session) else {
            return;
        };
        self.counters.sessions_open.fetch_sub(1, Ordering::Relaxed);
        #[allow(clippy::disallowed_methods)] // I/O thread: per command.
        let now = Instant::now();
        let mut streams: SmallVec<[StreamStats; 2]> = SmallVec::new();
        for st in s.streams {
            streams.push(StreamStats {
                stream: st.index,
                from_a: st.ends[0].meter.snapshot(),
                from_b: st.ends[1].meter.snapshot(),
            });
            self.drop_stream(st, Some(now));
        }
        self.report(Report::Closed { session, streams });
    }

    fn check_timeouts(&mut self, now: Instant) {
        let (timeout, hold) = (self.cfg.timeout, self.cfg.hold_timeout);
        let mut fired: SmallVec<[SessionId; 8]> = SmallVec::new();
        for (id, s) in &mut self.sessions {
            if s.timed_out {
                continue;
            }
            let on_hold = s
                .streams
                .iter()
                .any(|st| st.ends.iter().any(|e| e.ep.on_hold));
            let limit = if on_hold { hold } else { timeout };
            if now.saturating_duration_since(s.last_rtp) >= limit {
                s.timed_out = true;
                fired.push(*id);
            }
        }
        for id in fired {
            self.counters.timeouts.fetch_add(1, Ordering::Relaxed);
            self.report(Report::Timeout { session: id });
        }
    }

    /// Sends a report without blocking. A full channel keeps Timeout and
    /// BindFailed for the next turn (bounded); a Closed is counted and
    /// dropped.
    fn report(&mut self, r: Report) {
        if !self.pending.is_empty() && !matches!(r, Report::Closed { .. }) {
            self.keep(r);
            return;
        }
        match self.reports.try_send(r) {
            Ok(()) => {}
            Err(TrySendError::Full(r)) => match r {
                Report::Closed { .. } => {
                    self.counters
                        .reports_dropped
                        .fetch_add(1, Ordering::Relaxed);
                }
                other => self.keep(other),
            },
            Err(TrySendError::Disconnected(_)) => {
                self.counters
                    .reports_dropped
                    .fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    fn keep(&mut self, r: Report) {
        if self.pending.len() < PENDING_REPORTS {
            self.pending.push_back(r);
        } else {
            self.counters
                .reports_dropped
                .fetch_add(1, Ordering::Relaxed);
        }
    }

    fn flush_pending(&mut self) {
        while let Some(r) = self.pending.pop_front() {
            match self.reports.try_send(r) {
                Ok(()) => {}
                Err(TrySendError::Full(r)) => {
                    self.pending.push_front(r);
                    return;
                }
                Err(TrySendError::Disconnected(_)) => {
                    self.counters
                        .reports_dropped
                        .fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }

    /// Reads a socket in batches and relays what it got.
    fn socket_ready(&mut self, token: Token) {
        let Some(Some(r)) = self.socks.get(token.0).copied() else {
            return self.drain_spare(token);
        };
        let Worker {
            sessions,
            batch,
            out_rtp,
            out_rtcp,
            counters,
            again_next,
            offload,
            ..
        } = self;
        let Some(session) = sessions.get_mut(&r.session) else {
            return;
        };
        let Some(st) = session.streams.iter_mut().find(|s| s.index == r.stream) else {
            return;
        };
        let fd = match (&st.ends[r.side].rtcp, r.rtcp) {
            (Some((s, _)), true) => s.as_raw_fd(),
            (None, true) => return,
            (_, false) => st.ends[r.side].rtp.as_raw_fd(),
        };
        for _ in 0..BATCHES_PER_TURN {
            let n = match batch.recv(fd) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                // WouldBlock: drained; other errors (ICMP-reported ones) are
                // not fatal for a UDP socket: come back on the next event.
                Err(_) => return,
            };
            #[allow(clippy::disallowed_methods)] // I/O thread: once per batch.
            let now = Instant::now();
            let mut tally = Tally::default();
            out_rtp.clear();
            out_rtcp.clear();
            let mut got_rtp = false;
            let (first, second) = st.ends.split_at_mut(1);
            let (me, other) = if r.side == 0 {
                (&mut first[0], &mut second[0])
            } else {
                (&mut second[0], &mut first[0])
            };
            for i in 0..n {
                let (buf, src) = batch.packet(i);
                match relay_one(buf, src, r.rtcp, now, me, other, &mut tally) {
                    Some(Out::Rtp(dst)) => {
                        got_rtp = true;
                        out_rtp.push((i, dst));
                    }
                    Some(Out::RtpSocketRtcp(dst)) => out_rtp.push((i, dst)),
                    Some(Out::Rtcp(dst)) => out_rtcp.push((i, dst)),
                    Some(Out::None) => got_rtp = true,
                    None => {}
                }
            }
            if !out_rtp.is_empty() {
                let sent = batch.send(other.rtp.as_raw_fd(), out_rtp);
                tally.relayed += sent.sent as u64;
                tally.bytes += sent.bytes as u64;
                tally.send += sent.failed as u64;
            }
            if !out_rtcp.is_empty() {
                let sent = batch.send(other.rtcp_out_fd(), out_rtcp);
                tally.relayed += sent.sent as u64;
                tally.bytes += sent.bytes as u64;
                tally.send += sent.failed as u64;
            }
            tally.publish(counters);
            if got_rtp {
                session.last_rtp = now;
                session.timed_out = false;
                consider_offload(offload, counters, r.session, st, now);
            }
            if n < crate::batch::BATCH {
                return;
            }
        }
        // Not drained: edge-triggered epoll will not tell again, so come back
        // on the next turn after the other sockets had theirs.
        again_next.push(token);
    }
}

/// Hands `key` to the kernel (or not, if the offload thread's queue is
/// full: the next packets try again). Returns whether it was queued.
fn offload_kernel(
    off: &mut WorkerOffload,
    counters: &Counters,
    session: SessionId,
    st: &mut Stream,
    key: OffloadStream,
) -> bool {
    let msg = OffloadMsg {
        lane: off.lane,
        op: OffloadOp::Add(key),
    };
    if off.tx.try_send(msg).is_err() {
        return false;
    }
    for f in key.flows() {
        off.by_local.insert(f.local, (session, st.index));
    }
    for e in &mut st.ends {
        e.meter.offload_gap();
    }
    st.kernel = Some(Kernel {
        key,
        seen: [(0, 0); 2],
    });
    counters.streams_offloaded.fetch_add(1, Ordering::Relaxed);
    true
}

/// Takes an offloaded stream back from the kernel. The removal is never
/// dropped: a full queue keeps it in the thread's backlog.
fn unoffload_kernel(
    off: &mut Option<WorkerOffload>,
    counters: &Counters,
    st: &mut Stream,
    k: Kernel,
) {
    let Some(off) = off.as_mut() else {
        return;
    };
    for f in k.key.flows() {
        off.by_local.remove(&f.local);
    }
    for e in &mut st.ends {
        e.meter.offload_gap();
    }
    st.rtp_since = None;
    let msg = OffloadMsg {
        lane: off.lane,
        op: OffloadOp::Remove(k.key),
    };
    if !off.backlog.is_empty() {
        off.backlog.push_back(msg);
    } else if let Err(TrySendError::Full(m) | TrySendError::Disconnected(m)) = off.tx.try_send(msg)
    {
        off.backlog.push_back(m);
    }
    counters.streams_offloaded.fetch_sub(1, Ordering::Relaxed);
}

/// After a batch relayed RTP for `st`: offload it once it qualifies, or
/// take it back if its latches moved while the kernel had it.
fn consider_offload(
    off: &mut Option<WorkerOffload>,
    counters: &Counters,
    session: SessionId,
    st: &mut Stream,
    now: Instant,
) {
    let Some(o) = off.as_mut() else {
        return;
    };
    if let Some(k) = st.kernel {
        if st.offload_key() != Some(k.key) {
            st.kernel = None;
            unoffload_kernel(off, counters, st, k);
        }
        return;
    }
    if !st.plain {
        return;
    }
    let since = *st.rtp_since.get_or_insert(now);
    if now.saturating_duration_since(since) < o.cfg.after {
        return;
    }
    if let Some(key) = st.offload_key()
        && o.cfg.can_carry(&key)
    {
        offload_kernel(o, counters, session, st, key);
    }
}

/// Where a processed packet goes.
enum Out {
    /// RTP to this address from the other end's RTP socket.
    Rtp(SocketAddr),
    /// RTCP to an rtcp-mux peer, from the other end's RTP socket.
    RtpSocketRtcp(SocketAddr),
    /// RTCP from the other end's RTCP socket.
    Rtcp(SocketAddr),
    /// Valid RTP that was not sent (no remote yet): it still counts as media.
    None,
}

/// The per-packet path: source check, SRTP unprotect, stats, PT map, SRTP
/// protect, destination. `None`: dropped (counted in `tally` and the meter).
fn relay_one(
    buf: &mut Vec<u8>,
    src: Option<SocketAddr>,
    rtcp_socket: bool,
    now: Instant,
    me: &mut End,
    other: &mut End,
    tally: &mut Tally,
) -> Option<Out> {
    let Some(src) = src else {
        tally.malformed += 1;
        me.meter.on_drop();
        return None;
    };
    if buf.len() > MAX_DATAGRAM {
        tally.malformed += 1;
        me.meter.on_drop();
        return None;
    }
    let is_rtcp = rtcp_socket || (me.ep.rtcp_mux && rtp::is_rtcp(buf));
    if !is_rtcp {
        if !me.rtp_latch.accepts(now, src) {
            tally.foreign += 1;
            me.meter.on_drop();
            return None;
        }
        if RtpHeader::parse(buf).is_none() {
            tally.malformed += 1;
            me.meter.on_drop();
            return None;
        }
        match &mut me.srtp_in {
            Crypto::Plain => {}
            Crypto::Ctx(c) => {
                if c.rtp(buf).is_err() {
                    tally.srtp += 1;
                    me.meter.on_drop();
                    return None;
                }
            }
            Crypto::Broken => {
                tally.srtp += 1;
                me.meter.on_drop();
                return None;
            }
        }
        let Some(h) = RtpHeader::parse(buf) else {
            tally.malformed += 1;
            me.meter.on_drop();
            return None;
        };
        me.rtp_latch.learn(now, src);
        me.meter.on_rtp(now, &h, h.payload_len(buf));
        let Some(dst) = other.rtp_latch.target() else {
            tally.no_remote += 1;
            return Some(Out::None);
        };
        if let Some(&(_, to)) = other
            .ep
            .pt_map
            .iter()
            .find(|(from, _)| *from == h.payload_type)
        {
            rtp::set_payload_type(buf, to);
        }
        match &mut other.srtp_out {
            Crypto::Plain => {}
            Crypto::Ctx(c) => {
                if c.rtp(buf).is_err() {
                    tally.srtp += 1;
                    return Some(Out::None);
                }
            }
            Crypto::Broken => {
                tally.srtp += 1;
                return Some(Out::None);
            }
        }
        return Some(Out::Rtp(dst));
    }
    // RTCP.
    let latch = if rtcp_socket {
        &mut me.rtcp_latch
    } else {
        &mut me.rtp_latch
    };
    if !latch.accepts(now, src) {
        tally.foreign += 1;
        me.meter.on_drop();
        return None;
    }
    match &mut me.srtp_in {
        Crypto::Plain => {}
        Crypto::Ctx(c) => {
            if c.rtcp(buf).is_err() {
                tally.srtp += 1;
                me.meter.on_drop();
                return None;
            }
        }
        Crypto::Broken => {
            tally.srtp += 1;
            me.meter.on_drop();
            return None;
        }
    }
    if !rtp::rtcp_valid(buf) {
        tally.malformed += 1;
        me.meter.on_drop();
        return None;
    }
    latch.learn(now, src);
    for pkt in rtp::rtcp_packets(buf) {
        if let Some(si) = pkt.sender_info() {
            me.meter.on_sender_report(now, &si);
        }
        for rb in pkt.report_blocks() {
            other.meter.on_report_block(now, &rb);
        }
    }
    let Some(dst) = other.rtcp_target() else {
        tally.no_remote += 1;
        return None;
    };
    match &mut other.srtp_out {
        Crypto::Plain => {}
        Crypto::Ctx(c) => {
            if c.rtcp(buf).is_err() {
                tally.srtp += 1;
                return None;
            }
        }
        Crypto::Broken => {
            tally.srtp += 1;
            return None;
        }
    }
    if other.ep.rtcp_mux || other.rtcp.is_none() {
        Some(Out::RtpSocketRtcp(dst))
    } else {
        Some(Out::Rtcp(dst))
    }
}
