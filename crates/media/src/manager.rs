//! The media manager: per-call offer/answer state, port allocation, the SDP
//! each leg receives, and the relay commands that follow from them.
//!
//! Sans-IO: called synchronously by the engine (through [`crate::SharedMedia`]),
//! it only pushes [`Command`]s into a non-blocking [`RelaySink`]. Reports
//! from the relay come back through [`MediaManager::on_report`].
//!
//! Offer/answer (RFC 3264) per call: an offer from leg X records what X
//! said and what Palisade offered to leg Y (the *pending* offer); the
//! answer from Y completes it (it becomes *current*) and the relay is
//! updated with both sides. A second answer to the same offer (183 then
//! 200, or another fork) is applied to the current offer again. An offer
//! identical to the pending or current one (failover to the next trunk
//! member, a session refresh) gets the same SDP back, with the same `o=`
//! version.

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use bytes::Bytes;
use palisade_b2bua::{CallRef, SdpContext, SdpKind, Side};
use palisade_config::{Config, Latching, RtcpMuxPolicy, SrtpPolicy, TrunkMedia, ZoneId};
use palisade_relay::{Busy, Command, Endpoint, Latch, Report, SessionId, SrtpKey, SrtpSuite};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use smallvec::SmallVec;

use crate::crypto::{Crypto, KEY_SALT_BYTES, key_from_bytes};
use crate::error::MediaError;
use crate::pool::PortPool;
use crate::sdp::{Codec, Direction, Line, Media, Sdp, attr_pt, codec_of};

/// Where relay commands go: the relay's control handle, or a test double.
/// `send` must never block; a full queue hands the command back.
pub trait RelaySink: Send + std::fmt::Debug {
    /// Queues `cmd` for the relay. For the relay's own control handle the
    /// command waits until `RelayControl::wake`, which the engine loop calls
    /// once per turn.
    // The relay's own signature: Busy hands the command back by value.
    #[allow(clippy::result_large_err)]
    fn send(&mut self, cmd: Command) -> Result<(), Busy>;

    /// The relay thread that owns `session` (its ports go back to that
    /// thread's warm list, see [`crate::pool`]).
    fn lane(&self, _session: SessionId) -> usize {
        0
    }

    /// Queues `cmd` for the relay thread's next turn without asking for
    /// one: for an Open whose sockets are already bound there (warm ports),
    /// the next packet on them brings the turn that applies it.
    #[allow(clippy::result_large_err)]
    fn send_lazy(&mut self, cmd: Command) -> Result<(), Busy> {
        self.send(cmd)
    }
}

impl RelaySink for palisade_relay::RelayControl {
    #[allow(clippy::result_large_err)]
    fn send(&mut self, cmd: Command) -> Result<(), Busy> {
        // A close or an update waits for the relay thread's next turn, which
        // comes with the next packet on any of its sockets (the thread
        // applies its commands before it reads them) or after one tick: a
        // close has no hurry, and an update only matters to packets, which
        // bring the turn that applies it. Only an Open, whose sockets must be
        // bound before a peer sends, wakes the thread. This saves the relay
        // threads two wakeups per call.
        if matches!(cmd, Command::Close { .. } | Command::Update { .. }) {
            palisade_relay::RelayControl::queue_lazy(self, cmd)
        } else {
            palisade_relay::RelayControl::queue(self, cmd)
        }
    }

    fn lane(&self, session: SessionId) -> usize {
        palisade_relay::RelayControl::lane_of(self, session)
    }

    #[allow(clippy::result_large_err)]
    fn send_lazy(&mut self, cmd: Command) -> Result<(), Busy> {
        palisade_relay::RelayControl::queue_lazy(self, cmd)
    }
}

/// How long ports of an ended call wait for the relay's Closed before they
/// are reused anyway (the relay closes sockets as soon as it reads the
/// Close; a Closed report can be lost when the report channel is full).
pub const QUARANTINE_LIMIT: Duration = Duration::from_secs(30);

/// Released call ids remembered, so a late SDP for an ended call allocates nothing.
const RELEASED_MEMORY: usize = 8192;
/// The tag of the one `a=crypto` line Palisade offers.
const OFFER_TAG: u32 = 1;
/// The suite Palisade offers (the one every SDES peer, Teams included, supports).
const OFFER_SUITE: SrtpSuite = SrtpSuite::AesCm128HmacSha1_80;

/// Counters since start (gauges noted), named for
/// `palisade_media_<name>` metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MediaStats {
    /// Offers rewritten.
    pub offers: u64,
    /// Answers rewritten.
    pub answers: u64,
    /// Offers answered from the cache (failover, refresh).
    pub offers_repeated: u64,
    /// Refused: unparseable SDP.
    pub refused_bad_sdp: u64,
    /// Refused: no common codec.
    pub refused_codec: u64,
    /// Refused: SRTP policy (required but absent, or not allowed).
    pub refused_srtp: u64,
    /// Refused: out of ports (503).
    pub refused_no_ports: u64,
    /// Refused: the relay's queue was full (503).
    pub relay_busy: u64,
    /// Refused: other (answer without offer, released call).
    pub refused_other: u64,
    /// Close commands deferred because the relay's queue was full.
    pub closes_deferred: u64,
    /// Quarantined ports reused after [`QUARANTINE_LIMIT`] without a Closed.
    pub quarantine_expired: u64,
    /// Relay reports: media timeouts.
    pub timeouts: u64,
    /// Relay reports: bind failures.
    pub bind_failures: u64,
    /// Gauge: calls with media state.
    pub calls: u64,
    /// Gauge: port pairs allocated, all zones.
    pub ports_in_use: u64,
    /// Gauge: port pairs of ended calls waiting for the relay's Closed.
    pub ports_quarantined: u64,
}

fn idx(s: Side) -> usize {
    match s {
        Side::A => 0,
        Side::B => 1,
    }
}

fn relay_side(s: Side) -> palisade_relay::Side {
    match s {
        Side::A => palisade_relay::Side::A,
        Side::B => palisade_relay::Side::B,
    }
}

/// Palisade's view of one leg's SDP session.
#[derive(Debug, Clone)]
struct LegState {
    /// `o=` session id on this leg (stable for the call).
    sess_id: u64,
    /// `o=` version of the last SDP sent on this leg.
    version: u64,
    /// The last SDP sent on this leg, without its `o=` line.
    last: Option<Bytes>,
}

/// One media line's resources and what each leg negotiated.
#[derive(Debug, Clone, Default)]
struct StreamState {
    /// Local RTP port per side (zone, port).
    ports: [Option<(ZoneId, u16)>; 2],
    /// An Open was sent for this stream.
    opened: bool,
    /// Palisade's SRTP key toward each side (what it sends with).
    keys: [Option<SrtpKey>; 2],
    /// Payload numbers Palisade advertised to each side, per codec.
    pts: [Vec<(Codec, u8)>; 2],
}

/// One format of an offer: the codec, the offerer's number and the number
/// Palisade offered to the answerer.
#[derive(Debug, Clone)]
struct Fmt {
    codec: Codec,
    from_pt: u8,
    to_pt: u8,
}

/// One media line of an offer in flight.
#[derive(Debug, Clone)]
struct OfferStream {
    /// Anchored (an RTP stream with a port and a codec left).
    enabled: bool,
    /// The offerer's RTP address.
    remote: Option<SocketAddr>,
    /// The offerer's RTCP address.
    remote_rtcp: Option<SocketAddr>,
    /// rtcp-mux on the offerer's side (offered and accepted).
    offerer_mux: bool,
    /// The offerer's chosen `a=crypto` (its key decrypts what it sends).
    offerer_crypto: Option<Crypto>,
    /// Palisade offered rtcp-mux to the answerer.
    offered_mux: bool,
    /// Palisade's `a=crypto` offered to the answerer.
    offered_crypto: Option<Crypto>,
    /// The answerer's trunk requires SRTP.
    answerer_requires_srtp: bool,
    /// Formats kept, in the order offered to the answerer.
    fmts: Vec<Fmt>,
    /// The offerer's direction.
    direction: Direction,
}

/// An offer: what came in, what went out.
#[derive(Debug, Clone)]
struct Offer {
    from: Side,
    input: Bytes,
    output: Bytes,
    sdp: Sdp,
    streams: Vec<OfferStream>,
    /// Latching per side, from the trunks.
    latch: [Latch; 2],
}

/// Media state of one call.
#[derive(Debug)]
struct CallMedia {
    legs: [LegState; 2],
    streams: Vec<StreamState>,
    pending: Option<Offer>,
    current: Option<Offer>,
    /// The relay closed the session on its own (bind failure or Closed).
    relay_gone: bool,
}

impl CallMedia {
    fn any_opened(&self) -> bool {
        self.streams.iter().any(|s| s.opened)
    }

    fn ports(&self) -> impl Iterator<Item = (ZoneId, u16)> + '_ {
        self.streams
            .iter()
            .flat_map(|s| s.ports.iter().flatten().copied())
    }
}

/// The media manager. See the module documentation.
#[derive(Debug)]
pub struct MediaManager {
    pools: Vec<PortPool>,
    calls: HashMap<u64, CallMedia>,
    /// Ports of ended calls, until the relay reports the session closed.
    quarantine: HashMap<u64, Vec<(ZoneId, u16)>>,
    /// When each quarantine ends at the latest, in release order.
    quarantine_deadlines: VecDeque<(Instant, u64)>,
    /// Sessions whose Close the relay refused (queue full): retried.
    pending_close: VecDeque<u64>,
    released: HashSet<u64>,
    released_order: VecDeque<u64>,
    relay: Box<dyn RelaySink>,
    rng: StdRng,
    stats: MediaStats,
    /// The latest `now` an entry point was given (ports' warm lists age by it).
    now: Option<Instant>,
}

/// A refusal, with the manager's counters updated.
type Res<T> = Result<T, MediaError>;

impl MediaManager {
    /// A manager for `config`'s zones, sending to `relay`, with keys and
    /// session ids from a CSPRNG seeded with `seed`.
    pub fn new(config: &Config, relay: Box<dyn RelaySink>, seed: [u8; 32]) -> Self {
        MediaManager {
            // A relay thread keeps up to SPARE_CAP spare sockets (two per
            // port pair without rtcp-mux); warm ports stay well inside that.
            pools: config
                .zones()
                .iter()
                .map(|z| {
                    PortPool::new(&z.media)
                        .with_warm_cap(palisade_relay::SPARE_CAP / 4 / config.zones().len().max(1))
                })
                .collect(),
            calls: HashMap::new(),
            quarantine: HashMap::new(),
            quarantine_deadlines: VecDeque::new(),
            pending_close: VecDeque::new(),
            released: HashSet::new(),
            released_order: VecDeque::new(),
            relay,
            rng: StdRng::from_seed(seed),
            stats: MediaStats::default(),
            now: None,
        }
    }

    /// Counters and gauges.
    pub fn stats(&self) -> MediaStats {
        let mut s = self.stats;
        s.calls = self.calls.len() as u64;
        s.ports_in_use = self.pools.iter().map(|p| p.in_use() as u64).sum();
        s.ports_quarantined = self.quarantine.values().map(|v| v.len() as u64).sum();
        s
    }

    /// Port pairs in use in zone `zone` (allocated, quarantined included).
    pub fn ports_in_use(&self, zone: ZoneId) -> usize {
        self.pools.get(zone.index()).map_or(0, PortPool::in_use)
    }

    /// Whether the manager holds media state for `call`.
    pub fn has_call(&self, call: CallRef) -> bool {
        self.calls.contains_key(&call.0)
    }

    /// Rewrites `sdp` from leg `ctx.from` for the other leg.
    pub fn process(&mut self, now: Instant, ctx: &SdpContext<'_>, sdp: &[u8]) -> Res<Bytes> {
        self.tick(now);
        let r = if self.released.contains(&ctx.call.0) {
            Err(MediaError::Released)
        } else {
            match ctx.kind {
                SdpKind::Offer => self.offer(ctx, sdp),
                SdpKind::Answer => self.answer(ctx, sdp),
            }
        };
        match &r {
            Ok(_) if ctx.kind == SdpKind::Offer => self.stats.offers += 1,
            Ok(_) => self.stats.answers += 1,
            Err(e) => self.count_refusal(*e),
        }
        r
    }

    fn count_refusal(&mut self, e: MediaError) {
        let s = &mut self.stats;
        match e {
            MediaError::BadSdp(_) => s.refused_bad_sdp += 1,
            MediaError::NoCommonCodec => s.refused_codec += 1,
            MediaError::SrtpRequired | MediaError::SrtpNotAllowed => s.refused_srtp += 1,
            MediaError::NoPorts => s.refused_no_ports += 1,
            MediaError::RelayBusy => s.relay_busy += 1,
            MediaError::NoOffer | MediaError::Released | MediaError::UnknownZone => {
                s.refused_other += 1;
            }
        }
    }

    /// The call ended: close its relay session; its ports are reused once
    /// the relay reports it closed.
    pub fn release(&mut self, now: Instant, call: CallRef) {
        self.tick(now);
        let id = call.0;
        if self.released.insert(id) {
            self.released_order.push_back(id);
            while self.released_order.len() > RELEASED_MEMORY {
                if let Some(old) = self.released_order.pop_front() {
                    self.released.remove(&old);
                }
            }
        }
        let Some(state) = self.calls.remove(&id) else {
            return;
        };
        let ports: Vec<(ZoneId, u16)> = state.ports().collect();
        if state.any_opened() {
            // Even after a bind failure: a later Open may have recreated it.
            self.close(id);
        }
        if !state.any_opened() || state.relay_gone {
            self.free_ports(&ports);
            return;
        }
        self.quarantine.entry(id).or_default().extend(ports);
        self.quarantine_deadlines
            .push_back((now + QUARANTINE_LIMIT, id));
    }

    /// A report from the relay. Returns the call it is about.
    pub fn on_report(&mut self, report: &Report) -> CallRef {
        match report {
            Report::Closed { session, .. } => {
                // The relay thread keeps the sockets bound for a while:
                // its next sessions get these ports first.
                if let Some(ports) = self.quarantine.remove(&session.0) {
                    match self.now {
                        Some(now) => {
                            let lane = self.relay.lane(*session);
                            for (zone, port) in ports {
                                if let Some(p) = self.pools.get_mut(zone.index()) {
                                    p.release_warm(port, lane, now);
                                }
                            }
                        }
                        None => self.free_ports(&ports),
                    }
                }
                if let Some(c) = self.calls.get_mut(&session.0) {
                    c.relay_gone = true;
                }
                self.pending_close.retain(|s| *s != session.0);
                CallRef(session.0)
            }
            Report::BindFailed { session, .. } => {
                // No Closed follows a bind failure.
                self.stats.bind_failures += 1;
                if let Some(c) = self.calls.get_mut(&session.0) {
                    c.relay_gone = true;
                }
                if let Some(ports) = self.quarantine.remove(&session.0) {
                    self.free_ports(&ports);
                }
                CallRef(session.0)
            }
            Report::Timeout { session } => {
                self.stats.timeouts += 1;
                CallRef(session.0)
            }
        }
    }

    /// Retries Close commands the relay refused and ends overdue
    /// quarantines. Call it now and then (the binary does on every loop
    /// turn); every other entry point does too.
    pub fn tick(&mut self, now: Instant) {
        self.now = Some(self.now.map_or(now, |t| t.max(now)));
        self.flush_closes();
        while let Some(&(deadline, id)) = self.quarantine_deadlines.front() {
            if deadline > now {
                break;
            }
            self.quarantine_deadlines.pop_front();
            if let Some(ports) = self.quarantine.remove(&id) {
                self.stats.quarantine_expired += 1;
                self.free_ports(&ports);
            }
        }
    }

    fn close(&mut self, id: u64) {
        let cmd = Command::Close {
            session: SessionId(id),
        };
        if self.relay.send(cmd).is_err() {
            self.stats.closes_deferred += 1;
            self.pending_close.push_back(id);
        }
    }

    fn flush_closes(&mut self) {
        for _ in 0..self.pending_close.len() {
            let Some(id) = self.pending_close.pop_front() else {
                break;
            };
            if self
                .relay
                .send(Command::Close {
                    session: SessionId(id),
                })
                .is_err()
            {
                self.pending_close.push_front(id);
                break;
            }
        }
    }

    fn free_ports(&mut self, ports: &[(ZoneId, u16)]) {
        for (zone, port) in ports {
            if let Some(p) = self.pools.get_mut(zone.index()) {
                p.release(*port);
            }
        }
    }

    fn new_call(&mut self) -> CallMedia {
        let mut leg = || LegState {
            // Positive 62-bit numbers: fit every parser's integer type.
            sess_id: self.rng.next_u64() >> 2,
            version: 0,
            last: None,
        };
        let legs = [leg(), leg()];
        CallMedia {
            legs,
            streams: Vec::new(),
            pending: None,
            current: None,
            relay_gone: false,
        }
    }

    fn new_key(&mut self, suite: SrtpSuite) -> SrtpKey {
        let mut raw = [0u8; KEY_SALT_BYTES];
        self.rng.fill_bytes(&mut raw);
        key_from_bytes(suite, raw)
    }

    // ------------------------------------------------------------- offers

    fn offer(&mut self, ctx: &SdpContext<'_>, body: &[u8]) -> Res<Bytes> {
        let id = ctx.call.0;
        let x = ctx.from;
        let y = x.other();
        if let Some(st) = self.calls.get_mut(&id) {
            if let Some(p) = &st.pending
                && p.from == x
                && p.input[..] == *body
            {
                self.stats.offers_repeated += 1;
                return Ok(p.output.clone());
            }
            if let Some(c) = &st.current
                && c.from == x
                && c.input[..] == *body
            {
                self.stats.offers_repeated += 1;
                let out = c.output.clone();
                st.pending = st.current.clone();
                return Ok(out);
            }
        }
        let sdp = Sdp::parse(body)?;
        let px = &ctx.from_trunk.media;
        let py = &ctx.to_trunk.media;
        let (zx, zy) = (ctx.from_zone.id, ctx.to_zone.id);
        let addr_x = self.pool_addr(zx)?;
        let addr_y = self.pool_addr(zy)?;
        if !self.calls.contains_key(&id) {
            let c = self.new_call();
            self.calls.insert(id, c);
        }

        // Plan every stream; nothing in the call changes until all is well.
        let mut streams = Vec::with_capacity(sdp.media.len());
        let mut any_rtp = false;
        for (i, m) in sdp.media.iter().enumerate() {
            let established = self
                .calls
                .get(&id)
                .and_then(|c| c.streams.get(i))
                .map(|s| s.pts[idx(y)].clone())
                .unwrap_or_default();
            let plan = plan_stream(&sdp, i, m, px, py, &established)?;
            any_rtp |= is_rtp(&m.proto) && m.port != 0;
            streams.push(plan);
        }
        if any_rtp && !streams.iter().any(|s| s.enabled) {
            return Err(MediaError::NoCommonCodec);
        }

        // Keys: Palisade's per side and stream, kept while the suite stays.
        let mut keys: Vec<[Option<SrtpKey>; 2]> = Vec::with_capacity(streams.len());
        for (i, s) in streams.iter_mut().enumerate() {
            let old = self
                .calls
                .get(&id)
                .and_then(|c| c.streams.get(i))
                .map(|st| st.keys.clone())
                .unwrap_or_default();
            let mut k: [Option<SrtpKey>; 2] = old.clone();
            if let Some(c) = &s.offerer_crypto {
                let suite = c.key.suite;
                let key = match &old[idx(x)] {
                    Some(k) if k.suite == suite => k.clone(),
                    _ => self.new_key(suite),
                };
                k[idx(x)] = Some(key);
            }
            if s.enabled && py.srtp != SrtpPolicy::Off {
                let key = match &old[idx(y)] {
                    Some(k) if k.suite == OFFER_SUITE => k.clone(),
                    _ => self.new_key(OFFER_SUITE),
                };
                s.offered_crypto = Some(Crypto {
                    tag: OFFER_TAG,
                    key: key.clone(),
                });
                k[idx(y)] = Some(key);
            }
            keys.push(k);
        }

        // Ports for enabled streams that have none yet, on both sides.
        let mut fresh: Vec<(ZoneId, u16)> = Vec::new();
        // Whether every fresh port is warm: its sockets are still bound in
        // the session's relay thread, so the Open needs no wakeup.
        let mut all_warm = true;
        let mut ports: Vec<[Option<(ZoneId, u16)>; 2]> = Vec::with_capacity(streams.len());
        for (i, s) in streams.iter().enumerate() {
            let mut p = self
                .calls
                .get(&id)
                .and_then(|c| c.streams.get(i))
                .map(|st| st.ports)
                .unwrap_or_default();
            if s.enabled {
                for (side, zone) in [(x, zx), (y, zy)] {
                    if p[idx(side)].is_none() {
                        let lane = self.relay.lane(SessionId(id));
                        let now = self.now;
                        match self.pools.get_mut(zone.index()).and_then(|pool| match now {
                            Some(now) => pool.allocate_for(lane, now),
                            None => pool.allocate().map(|port| (port, false)),
                        }) {
                            Some((port, warm)) => {
                                all_warm &= warm;
                                fresh.push((zone, port));
                                p[idx(side)] = Some((zone, port));
                            }
                            None => {
                                self.free_ports(&fresh);
                                return Err(MediaError::NoPorts);
                            }
                        }
                    }
                }
            }
            ports.push(p);
        }

        // Commit the stream resources.
        let latch = {
            let mut l = [Latch::Learn; 2];
            l[idx(x)] = latch_of(px, ctx.from_nated);
            l[idx(y)] = latch_of(py, ctx.to_nated);
            l
        };
        let Some(call) = self.calls.get_mut(&id) else {
            self.free_ports(&fresh);
            return Err(MediaError::Released);
        };
        if call.streams.len() < streams.len() {
            call.streams
                .resize_with(streams.len(), StreamState::default);
        }
        for (i, st) in call.streams.iter_mut().enumerate().take(streams.len()) {
            if let Some(p) = ports.get(i) {
                st.ports = *p;
            }
            if let Some(k) = keys.get(i) {
                st.keys = k.clone();
            }
        }

        // The offer toward Y.
        let outs: Vec<OutStream> = streams
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let m = &sdp.media[i];
                let port = call
                    .streams
                    .get(i)
                    .and_then(|st| st.ports[idx(y)])
                    .map(|(_, p)| p);
                match port.filter(|_| s.enabled) {
                    Some(port) => OutStream {
                        port,
                        proto: answerer_proto(&m.proto, py.srtp),
                        fmts: s.fmts.iter().map(|f| (f.from_pt, f.to_pt)).collect(),
                        mux: s.offered_mux,
                        crypto: s.offered_crypto.clone(),
                        direction: Some(s.direction),
                    },
                    None => OutStream::disabled(m),
                }
            })
            .collect();
        let out_sdp = build(&sdp, &sdp.media, addr_y, &outs);
        let output = stamp(&mut call.legs[idx(y)], out_sdp, addr_y);

        // Open new streams in the relay: the offerer's side is known, the
        // answerer's once it answers.
        let mut commands = Vec::new();
        for (i, s) in streams.iter().enumerate() {
            let Some(st) = call.streams.get_mut(i) else {
                continue;
            };
            if !s.enabled || st.opened {
                continue;
            }
            let (Some((_, px_port)), Some((_, py_port))) = (st.ports[idx(x)], st.ports[idx(y)])
            else {
                continue;
            };
            let ex = Endpoint {
                local: SocketAddr::new(addr_x, px_port),
                rtcp_mux: false,
                remote: s.remote,
                remote_rtcp: s.remote_rtcp,
                latch: latch[idx(x)],
                srtp_recv: s.offerer_crypto.as_ref().map(|c| c.key.clone()),
                srtp_send: st.keys[idx(x)]
                    .clone()
                    .filter(|_| s.offerer_crypto.is_some()),
                pt_map: SmallVec::new(),
                on_hold: s.direction.is_hold(),
            };
            let ey = Endpoint {
                local: SocketAddr::new(addr_y, py_port),
                rtcp_mux: false,
                remote: None,
                remote_rtcp: None,
                latch: latch[idx(y)],
                srtp_recv: None,
                srtp_send: None,
                pt_map: SmallVec::new(),
                on_hold: s.direction.is_hold(),
            };
            let (a, b) = match x {
                Side::A => (ex, ey),
                Side::B => (ey, ex),
            };
            commands.push((
                i,
                Command::Open {
                    session: SessionId(id),
                    stream: u8::try_from(i).unwrap_or(u8::MAX),
                    a,
                    b,
                },
            ));
        }
        call.pending = Some(Offer {
            from: x,
            input: Bytes::copy_from_slice(body),
            output: output.clone(),
            sdp,
            streams,
            latch,
        });
        for (i, cmd) in commands {
            let sent = if all_warm {
                self.relay.send_lazy(cmd)
            } else {
                self.relay.send(cmd)
            };
            if sent.is_err() {
                // Not cached: a repeat of this offer must try the relay again.
                call.pending = None;
                return Err(MediaError::RelayBusy);
            }
            if let Some(st) = call.streams.get_mut(i) {
                st.opened = true;
            }
        }
        Ok(output)
    }

    fn pool_addr(&self, zone: ZoneId) -> Res<IpAddr> {
        self.pools
            .get(zone.index())
            .map(PortPool::address)
            .ok_or(MediaError::UnknownZone)
    }

    // ------------------------------------------------------------ answers

    fn answer(&mut self, ctx: &SdpContext<'_>, body: &[u8]) -> Res<Bytes> {
        let id = ctx.call.0;
        let y = ctx.from;
        let x = y.other();
        let addr_x = self.pool_addr(ctx.to_zone.id)?;
        let addr_y = self.pool_addr(ctx.from_zone.id)?;
        let call = self.calls.get_mut(&id).ok_or(MediaError::NoOffer)?;
        let offer = match call.pending.take() {
            Some(p) if p.from == x => p,
            other => {
                call.pending = other;
                call.current
                    .clone()
                    .filter(|c| c.from == x)
                    .ok_or(MediaError::NoOffer)?
            }
        };
        let sdp = Sdp::parse(body)?;

        let mut outs = Vec::with_capacity(offer.streams.len());
        let mut updates = Vec::new();
        for (i, s) in offer.streams.iter().enumerate() {
            let om = &offer.sdp.media[i];
            let am = sdp.media.get(i);
            let Some(st) = call.streams.get_mut(i) else {
                outs.push(OutStream::disabled(om));
                continue;
            };
            let accepted = am.filter(|m| s.enabled && m.port != 0);
            let (Some(am), Some((_, port_x)), Some((_, port_y))) =
                (accepted, st.ports[idx(x)], st.ports[idx(y)])
            else {
                outs.push(OutStream::disabled(om));
                if st.opened {
                    // Rejected or disabled: stop sending either way.
                    for side in [x, y] {
                        let addr = if side == x { addr_x } else { addr_y };
                        updates.push(stopped_endpoint(i, st, side, &offer, addr));
                    }
                }
                continue;
            };
            // The answerer's SRTP.
            let answer_crypto = match &s.offered_crypto {
                Some(ours) => am
                    .attr_values("crypto")
                    .filter_map(Crypto::parse)
                    .find(|c| c.tag == ours.tag && c.key.suite == ours.key.suite),
                None => None,
            };
            if answer_crypto.is_none() && s.answerer_requires_srtp {
                return Err(MediaError::SrtpRequired);
            }
            // The answerer's formats, in its order, mapped to the offerer's numbers.
            let mut fmts: Vec<(u8, u8, u8)> = Vec::new(); // (from_pt, to_pt, y_pt)
            for f in &am.fmts {
                let Ok(y_pt) = f.parse::<u8>() else { continue };
                let exact = s.fmts.iter().find(|fm| fm.to_pt == y_pt);
                let by_codec = codec_of(am, y_pt).and_then(|c| {
                    s.fmts
                        .iter()
                        .find(|fm| fm.to_pt == y_pt && same_codec(&fm.codec, &c))
                        .or_else(|| s.fmts.iter().find(|fm| same_codec(&fm.codec, &c)))
                });
                let hit = match rtp_has_map(am, y_pt) {
                    true => by_codec,
                    false => by_codec.or(exact),
                };
                if let Some(fm) = hit
                    && !fmts.iter().any(|(f, _, _)| *f == fm.from_pt)
                {
                    fmts.push((fm.from_pt, fm.to_pt, y_pt));
                }
            }
            let real = fmts.iter().any(|(f, _, _)| {
                s.fmts
                    .iter()
                    .any(|fm| fm.from_pt == *f && !fm.codec.is_telephone_event())
            });
            if !real {
                outs.push(OutStream::disabled(om));
                if st.opened {
                    for side in [x, y] {
                        let addr = if side == x { addr_x } else { addr_y };
                        updates.push(stopped_endpoint(i, st, side, &offer, addr));
                    }
                }
                continue;
            }
            let a_dir = sdp.direction(i);
            let a_dir = match sdp.connection(i).and_then(|c| c.addr) {
                Some(ip) if ip.is_unspecified() => hold_from_null(a_dir),
                _ => a_dir,
            };
            let hold = s.direction.is_hold() || a_dir.is_hold();
            let y_mux = s.offered_mux && am.has_attr("rtcp-mux");
            let (y_remote, y_rtcp) = remote_of(&sdp, i, am, y_mux);
            // Payload maps: to Y, the offerer's numbers become Y's; to X,
            // the numbers Palisade offered Y become the offerer's.
            let mut map_to_y: SmallVec<[(u8, u8); 4]> = SmallVec::new();
            let mut map_to_x: SmallVec<[(u8, u8); 4]> = SmallVec::new();
            for (from_pt, to_pt, y_pt) in &fmts {
                if from_pt != y_pt && !map_to_y.iter().any(|(a, _)| a == from_pt) {
                    map_to_y.push((*from_pt, *y_pt));
                }
                if to_pt != from_pt && !map_to_x.iter().any(|(a, _)| a == to_pt) {
                    map_to_x.push((*to_pt, *from_pt));
                }
            }
            // Remember each leg's numbers for later offers toward it.
            for (from_pt, to_pt, _) in &fmts {
                if let Some(fm) = s.fmts.iter().find(|fm| fm.from_pt == *from_pt) {
                    remember(&mut st.pts[idx(x)], &fm.codec, *from_pt);
                    remember(&mut st.pts[idx(y)], &fm.codec, *to_pt);
                }
            }
            let ex = Endpoint {
                local: SocketAddr::new(addr_x, port_x),
                rtcp_mux: s.offerer_mux,
                remote: s.remote.filter(|a| !a.ip().is_unspecified()),
                remote_rtcp: s.remote_rtcp.filter(|a| !a.ip().is_unspecified()),
                latch: offer.latch[idx(x)],
                srtp_recv: s.offerer_crypto.as_ref().map(|c| c.key.clone()),
                srtp_send: st.keys[idx(x)]
                    .clone()
                    .filter(|_| s.offerer_crypto.is_some()),
                pt_map: map_to_x,
                on_hold: hold,
            };
            let ey = Endpoint {
                local: SocketAddr::new(addr_y, port_y),
                rtcp_mux: y_mux,
                remote: y_remote,
                remote_rtcp: y_rtcp,
                latch: offer.latch[idx(y)],
                srtp_recv: answer_crypto.as_ref().map(|c| c.key.clone()),
                srtp_send: s
                    .offered_crypto
                    .as_ref()
                    .filter(|_| answer_crypto.is_some())
                    .map(|c| c.key.clone()),
                pt_map: map_to_y,
                on_hold: hold,
            };
            updates.push((i, x, ex));
            updates.push((i, y, ey));
            outs.push(OutStream {
                port: port_x,
                proto: om.proto.clone(),
                fmts: fmts.iter().map(|(f, _, y_pt)| (*y_pt, *f)).collect(),
                mux: s.offerer_mux,
                crypto: s.offerer_crypto.as_ref().and_then(|c| {
                    st.keys[idx(x)]
                        .clone()
                        .map(|key| Crypto { tag: c.tag, key })
                }),
                direction: Some(a_dir),
            });
        }
        // The answer's own m= lines (or the offer's, where the answer has none).
        let bases: Vec<Media> = offer
            .sdp
            .media
            .iter()
            .enumerate()
            .map(|(i, om)| sdp.media.get(i).cloned().unwrap_or_else(|| om.clone()))
            .collect();
        let out_sdp = build(&sdp, &bases, addr_x, &outs);
        let output = stamp(&mut call.legs[idx(x)], out_sdp, addr_x);
        call.current = Some(offer);
        let opened: Vec<bool> = call.streams.iter().map(|s| s.opened).collect();
        for (i, side, endpoint) in updates {
            if !opened.get(i).copied().unwrap_or(false) {
                continue;
            }
            let cmd = Command::Update {
                session: SessionId(id),
                stream: u8::try_from(i).unwrap_or(u8::MAX),
                side: relay_side(side),
                endpoint,
            };
            self.relay.send(cmd).map_err(|_| MediaError::RelayBusy)?;
        }
        Ok(output)
    }
}

/// The latching of a leg: its trunk's policy, except that a peer behind a
/// NAT always learns (its SDP names an address its packets never come
/// from, so strict latching would drop all of its media).
fn latch_of(p: &TrunkMedia, nated: bool) -> Latch {
    match p.latching {
        Latching::Strict if !nated => Latch::Strict,
        _ => Latch::Learn,
    }
}

/// RTP profiles Palisade relays (SDES or plain; not DTLS, not UDPTL).
fn is_rtp(proto: &str) -> bool {
    matches!(proto, "RTP/AVP" | "RTP/AVPF" | "RTP/SAVP" | "RTP/SAVPF")
}

fn is_savp(proto: &str) -> bool {
    proto.starts_with("RTP/SAVP")
}

/// The profile offered to the answerer: SAVP only when its trunk requires SRTP.
fn answerer_proto(proto: &str, policy: SrtpPolicy) -> String {
    let feedback = proto.ends_with('F');
    let base = if policy == SrtpPolicy::Required {
        "RTP/SAVP"
    } else {
        "RTP/AVP"
    };
    if feedback {
        format!("{base}F")
    } else {
        base.to_owned()
    }
}

fn same_codec(a: &Codec, b: &Codec) -> bool {
    a.name == b.name && a.rate == b.rate
}

fn rtp_has_map(m: &Media, pt: u8) -> bool {
    crate::sdp::rtpmap(m, pt).is_some()
}

fn remember(list: &mut Vec<(Codec, u8)>, codec: &Codec, pt: u8) {
    if !list.iter().any(|(c, n)| same_codec(c, codec) || *n == pt) {
        list.push((codec.clone(), pt));
    }
}

/// `c=0.0.0.0` (RFC 2543 hold): the sender does not want media.
fn hold_from_null(d: Direction) -> Direction {
    match d {
        Direction::SendRecv => Direction::SendOnly,
        Direction::RecvOnly => Direction::Inactive,
        other => other,
    }
}

/// RTP and RTCP addresses of stream `i` (`a=rtcp` or port + 1, the RTP port with mux).
fn remote_of(
    sdp: &Sdp,
    i: usize,
    m: &Media,
    mux: bool,
) -> (Option<SocketAddr>, Option<SocketAddr>) {
    let Some(ip) = sdp.connection(i).and_then(|c| c.addr) else {
        return (None, None);
    };
    if ip.is_unspecified() || m.port == 0 {
        return (None, None);
    }
    let rtp = SocketAddr::new(ip, m.port);
    if mux {
        return (Some(rtp), Some(rtp));
    }
    let rtcp = m
        .attr("rtcp")
        .and_then(|v| {
            let mut it = v.split_ascii_whitespace();
            let port: u16 = it.next()?.parse().ok()?;
            let addr = match (it.next(), it.next(), it.next()) {
                (Some("IN"), Some(_), Some(a)) => a.parse().ok()?,
                _ => ip,
            };
            Some(SocketAddr::new(addr, port))
        })
        .or_else(|| m.port.checked_add(1).map(|p| SocketAddr::new(ip, p)));
    (Some(rtp), rtcp)
}

/// An endpoint of stream `i` that sends nothing (stream rejected or disabled).
fn stopped_endpoint(
    i: usize,
    st: &StreamState,
    side: Side,
    offer: &Offer,
    addr: IpAddr,
) -> (usize, Side, Endpoint) {
    let port = st.ports[idx(side)].map_or(0, |(_, p)| p);
    (
        i,
        side,
        Endpoint {
            local: SocketAddr::new(addr, port),
            rtcp_mux: false,
            remote: None,
            remote_rtcp: None,
            latch: offer.latch[idx(side)],
            srtp_recv: None,
            srtp_send: None,
            pt_map: SmallVec::new(),
            on_hold: true,
        },
    )
}

/// Decides one media line of an offer from X (policy `px`) toward Y (`py`).
fn plan_stream(
    sdp: &Sdp,
    i: usize,
    m: &Media,
    px: &TrunkMedia,
    py: &TrunkMedia,
    established_y: &[(Codec, u8)],
) -> Res<OfferStream> {
    let mut s = OfferStream {
        enabled: false,
        remote: None,
        remote_rtcp: None,
        offerer_mux: false,
        offerer_crypto: None,
        offered_mux: false,
        offered_crypto: None,
        answerer_requires_srtp: py.srtp == SrtpPolicy::Required,
        fmts: Vec::new(),
        direction: sdp.direction(i),
    };
    if m.port == 0 || !is_rtp(&m.proto) {
        return Ok(s);
    }
    // The offerer's SRTP, per its trunk's policy.
    let savp = is_savp(&m.proto);
    let crypto = m.attr_values("crypto").find_map(Crypto::parse);
    s.offerer_crypto = match (px.srtp, crypto) {
        (SrtpPolicy::Off, _) if savp => return Err(MediaError::SrtpNotAllowed),
        (SrtpPolicy::Off, _) => None,
        (_, Some(c)) => Some(c),
        (SrtpPolicy::Required, None) => return Err(MediaError::SrtpRequired),
        (SrtpPolicy::Optional, None) if savp => return Err(MediaError::SrtpRequired),
        (SrtpPolicy::Optional, None) => None,
    };
    let offered_mux = m.has_attr("rtcp-mux");
    s.offerer_mux = offered_mux && px.rtcp_mux != RtcpMuxPolicy::Off;
    s.offered_mux = match py.rtcp_mux {
        RtcpMuxPolicy::On => true,
        RtcpMuxPolicy::Auto => s.offerer_mux,
        RtcpMuxPolicy::Off => false,
    };
    let ip = sdp.connection(i).and_then(|c| c.addr);
    if ip.is_some_and(|ip| ip.is_unspecified()) {
        s.direction = hold_from_null(s.direction);
    }
    let (remote, rtcp) = remote_of(sdp, i, m, s.offerer_mux);
    s.remote = remote;
    s.remote_rtcp = rtcp;

    // Codecs: the offerer's, minus what either trunk does not allow, in the
    // answerer's preferred order; telephone-event always.
    let mut kept: Vec<(Codec, u8)> = Vec::new();
    for f in &m.fmts {
        let Ok(pt) = f.parse::<u8>() else { continue };
        if pt > 127 || kept.iter().any(|(_, p)| *p == pt) {
            continue;
        }
        let codec = codec_of(m, pt).unwrap_or_else(|| Codec {
            name: format!("x-pt{pt}"),
            rate: 0,
            channels: 0,
        });
        if codec.is_telephone_event()
            || (allowed(&px.codecs, &codec) && allowed(&py.codecs, &codec))
        {
            kept.push((codec, pt));
        }
    }
    if !py.codecs.is_empty() {
        kept.sort_by_key(|(c, _)| rank(&py.codecs, c));
    }
    if !kept.iter().any(|(c, _)| !c.is_telephone_event()) {
        return Ok(s);
    }
    // Numbers toward Y: the ones Y already knows for a codec, else the
    // offerer's, else a free dynamic number.
    let mut assigned: Vec<u8> = Vec::new();
    for (codec, from_pt) in kept {
        let known = established_y
            .iter()
            .find(|(c, n)| same_codec(c, &codec) && !assigned.contains(n))
            .map(|(_, n)| *n);
        let taken = |n: u8, assigned: &[u8]| {
            assigned.contains(&n)
                || established_y
                    .iter()
                    .any(|(c, k)| *k == n && !same_codec(c, &codec))
        };
        let to_pt = known
            .or_else(|| (!taken(from_pt, &assigned)).then_some(from_pt))
            .or_else(|| (96u8..=127).find(|n| !taken(*n, &assigned)));
        let Some(to_pt) = to_pt else { continue };
        assigned.push(to_pt);
        s.fmts.push(Fmt {
            codec,
            from_pt,
            to_pt,
        });
    }
    s.enabled = true;
    Ok(s)
}

fn allowed(list: &[String], c: &Codec) -> bool {
    list.is_empty() || list.iter().any(|n| n.eq_ignore_ascii_case(&c.name))
}

fn rank(list: &[String], c: &Codec) -> usize {
    if c.is_telephone_event() {
        return usize::MAX;
    }
    list.iter()
        .position(|n| n.eq_ignore_ascii_case(&c.name))
        .unwrap_or(usize::MAX - 1)
}

/// One media line of an SDP Palisade writes.
#[derive(Debug, Clone)]
struct OutStream {
    /// Palisade's port; 0 = disabled.
    port: u16,
    proto: String,
    /// (payload number in the base m= line, number to write).
    fmts: Vec<(u8, u8)>,
    mux: bool,
    crypto: Option<Crypto>,
    /// `None` for a disabled stream.
    direction: Option<Direction>,
}

impl OutStream {
    fn disabled(m: &Media) -> OutStream {
        OutStream {
            port: 0,
            proto: m.proto.clone(),
            fmts: Vec::new(),
            mux: false,
            crypto: None,
            direction: None,
        }
    }
}

/// Session attributes Palisade never passes: ICE, DTLS, bundling, and
/// directions (written per stream instead).
fn drop_session_attr(name: &str) -> bool {
    name.starts_with("ice-")
        || matches!(
            name,
            "fingerprint"
                | "setup"
                | "tls-id"
                | "group"
                | "sendrecv"
                | "sendonly"
                | "recvonly"
                | "inactive"
                | "crypto"
                | "rtcp-mux"
                | "rtcp"
                | "candidate"
                | "end-of-candidates"
                | "remote-candidates"
        )
}

/// Media attributes Palisade replaces or never passes.
fn drop_media_attr(name: &str) -> bool {
    drop_session_attr(name) || matches!(name, "bundle-only")
}

/// Writes an SDP for one leg: `base` supplies the session lines and each
/// stream's lines, `outs` what Palisade decided per stream.
fn build(base: &Sdp, media: &[Media], addr: IpAddr, outs: &[OutStream]) -> Sdp {
    let atype = if addr.is_ipv4() { "IN IP4 " } else { "IN IP6 " };
    let mut conn = String::with_capacity(48);
    conn.push_str(atype);
    palisade_sip::push_ip(&mut conn, addr, false);
    let conn = Line::new(b'c', conn);
    let mut session: Vec<Line> = Vec::with_capacity(base.session.len() + 1);
    let mut wrote_c = false;
    for l in &base.session {
        match l.kind {
            b'c' => {
                if !wrote_c {
                    session.push(conn.clone());
                    wrote_c = true;
                }
            }
            b'b' | b't' | b'r' | b'z' | b'k' | b'a' if !wrote_c => {
                session.push(conn.clone());
                wrote_c = true;
                if !(l.kind == b'a' && l.attr().is_some_and(|(n, _)| drop_session_attr(n))) {
                    session.push(l.clone());
                }
            }
            b'a' if l.attr().is_some_and(|(n, _)| drop_session_attr(n)) => {}
            _ => session.push(l.clone()),
        }
    }
    if !wrote_c {
        session.push(conn);
    }
    let mut out_media = Vec::with_capacity(outs.len());
    for (m, o) in media.iter().zip(outs) {
        if o.port == 0 {
            out_media.push(Media {
                kind: m.kind.clone(),
                port: 0,
                port_count: None,
                proto: o.proto.clone(),
                fmts: m.fmts.clone(),
                lines: Vec::new(),
            });
            continue;
        }
        let mut lines = Vec::with_capacity(m.lines.len() + 4);
        for l in &m.lines {
            if l.kind == b'c' {
                continue;
            }
            let Some((name, value)) = l.attr() else {
                lines.push(l.clone());
                continue;
            };
            if drop_media_attr(name) {
                continue;
            }
            if matches!(name, "rtpmap" | "fmtp" | "rtcp-fb") {
                let v = value.unwrap_or("");
                match attr_pt(v) {
                    Some(pt) => {
                        if let Some((_, to)) = o.fmts.iter().find(|(from, _)| *from == pt) {
                            let rest = v.split_once(' ').map_or("", |(_, r)| r);
                            lines.push(Line::new(b'a', format!("{name}:{to} {rest}")));
                        }
                    }
                    None => lines.push(l.clone()),
                }
                continue;
            }
            lines.push(l.clone());
        }
        if o.mux {
            lines.push(Line::new(b'a', "rtcp-mux"));
        } else {
            lines.push(Line::new(
                b'a',
                format!("rtcp:{}", o.port.saturating_add(1)),
            ));
        }
        if let Some(c) = &o.crypto {
            lines.push(Line::new(b'a', format!("crypto:{}", c.value())));
        }
        if let Some(d) = o.direction {
            lines.push(Line::new(b'a', d.as_str()));
        }
        out_media.push(Media {
            kind: m.kind.clone(),
            port: o.port,
            port_count: None,
            proto: o.proto.clone(),
            fmts: o.fmts.iter().map(|(_, to)| to.to_string()).collect(),
            lines,
        });
    }
    Sdp {
        session,
        media: out_media,
    }
}

/// Writes the leg's `o=` line: its session id, and a version that goes up
/// whenever what Palisade sends on the leg changes. The body is serialized
/// once, with version 0 for the comparison; the sent body is that text with
/// the version spliced into its `o=` line.
fn stamp(leg: &mut LegState, mut sdp: Sdp, addr: IpAddr) -> Bytes {
    use std::fmt::Write as _;
    let origin = |version: u64| {
        let mut o = String::with_capacity(80);
        // Writing to a String cannot fail.
        let _ = write!(o, "- {} {version} IN ", leg.sess_id);
        o.push_str(if addr.is_ipv4() { "IP4 " } else { "IP6 " });
        palisade_sip::push_ip(&mut o, addr, false);
        o
    };
    let unversioned = origin(0);
    for l in &mut sdp.session {
        if l.kind == b'o' {
            l.value.clone_from(&unversioned);
        }
    }
    let without = sdp.to_bytes();
    if leg.last.as_ref() != Some(&without) {
        leg.version += 1;
        leg.last = Some(without.clone());
    }
    splice_origin(&without, &unversioned, &origin(leg.version))
}

/// `body` with every `o=<from>` line (a whole line) written `o=<to>`.
fn splice_origin(body: &Bytes, from: &str, to: &str) -> Bytes {
    let mut out = Vec::with_capacity(body.len() + to.len());
    let mut at = 0;
    while at < body.len() {
        let end = memchr::memchr(b'\n', body.get(at..).unwrap_or_default())
            .map_or(body.len(), |i| at + i + 1);
        let line = body.get(at..end).unwrap_or_default();
        let is_from = line
            .strip_prefix(b"o=")
            .and_then(|l| l.strip_suffix(b"\r\n"))
            .is_some_and(|l| l == from.as_bytes());
        if is_from {
            out.extend_from_slice(b"o=");
            out.extend_from_slice(to.as_bytes());
            out.extend_from_slice(b"\r\n");
        } else {
            out.extend_from_slice(line);
        }
        at = end;
    }
    Bytes::from(out)
}

#[cfg(test)]
mod splice_tests {
    use super::splice_origin;
    use bytes::Bytes;

    #[test]
    fn only_whole_origin_lines_change() {
        let from = "- 7 0 IN IP4 192.0.2.1";
        let body = Bytes::from(format!(
            "v=0\r\no={from}\r\ns=-\r\na=note:o={from}\r\nm=audio 4000 RTP/AVP 0\r\n"
        ));
        let out = splice_origin(&body, from, "- 7 3 IN IP4 192.0.2.1");
        assert_eq!(
            out,
            Bytes::from(format!(
                "v=0\r\no=- 7 3 IN IP4 192.0.2.1\r\ns=-\r\na=note:o={from}\r\nm=audio 4000 RTP/AVP 0\r\n"
            ))
        );
        let none = Bytes::from_static(b"v=0\r\ns=-\r\n");
        assert_eq!(splice_origin(&none, from, "x"), none);
    }
}
