//! The engine: dispatch of received messages to transactions and calls,
//! timers, and everything a call does between its two legs.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use palisade_config::{Config, TrunkId, ZoneId};
use palisade_sip::{
    Editor, HeaderName, Message, MessageWriter, Method, ParseError, ParseLimits, Transport,
    reason_phrase, salvage_request,
};
use palisade_transaction::{
    ClientInvite, ClientKey, ClientNonInvite, Event as TxnEvent, IdHasher, Machine, MethodClass,
    ServerInvite, ServerKey, ServerNonInvite, TimerConfig, TimerQueue, Uas2xxRetransmitter,
    is_rfc3261_branch,
};
use smallvec::SmallVec;

use crate::call::{
    Attempt, Call, CallRef, CallState, Flow, InviteRelay, Leg, Side, host_str, zone_port,
};
use crate::health::{Health, ProbeOutcome, Target, TargetStatus, probe_request};
use crate::hooks::{
    CallEnd, CallInfo, GuardHook, MediaHook, MediaRefusal, NoGuard, OriginOnly, SdpContext,
    SdpKind, Verdict,
};
use crate::ids::IdGen;
use crate::stage::{Direction, Stage, StageContext};
use crate::{CallEvent, CallEventKind, EndReason, EngineStats, Event, TxnId};

// Edge behaviour (issue 4), in their own modules: registrar, digest
// authentication, outbound registration and keepalives, call admission.
mod auth;
mod cac;
pub(crate) mod edge;
mod outbound;
mod registrar;

/// Methods Palisade relays within a dialog (advertised in Allow).
const ALLOW: &str = "INVITE, ACK, CANCEL, BYE, OPTIONS, INFO, UPDATE, MESSAGE, NOTIFY";
/// Headers that describe a body; they travel with it (they name no host).
const BODY_HEADERS: &[HeaderName] = &[
    HeaderName::ContentDisposition,
    HeaderName::ContentEncoding,
    HeaderName::ContentLanguage,
    HeaderName::Event,
    HeaderName::SubscriptionState,
];
/// Retry-After Palisade sends when it refuses calls because it is draining or full.
const RETRY_AFTER_SECONDS: u32 = 30;
/// Most header lines accepted in a message.
const MAX_HEADERS: usize = 256;
/// Transmit queue bound: the binary drains it after every input, so this is
/// only reached if it stops draining; beyond it, messages are dropped and counted.
const MAX_QUEUED_TRANSMITS: usize = 65_536;
/// Event queue bound, for the same reason.
const MAX_QUEUED_EVENTS: usize = 65_536;

/// A message to put on the wire.
#[derive(Debug, Clone)]
pub struct Transmit {
    /// Zone, transport and peer address.
    pub flow: Flow,
    /// The bytes.
    pub data: Bytes,
}

#[derive(Debug)]
enum ServerMachine {
    Invite(ServerInvite),
    NonInvite(ServerNonInvite),
}

#[derive(Debug)]
struct ServerTxn {
    key: ServerKey,
    machine: ServerMachine,
    request: Message,
    flow: Flow,
    /// To tag of every response Palisade sends in this transaction.
    to_tag: String,
    call: Option<(CallRef, Side)>,
    /// A final response was sent.
    finished: bool,
}

#[derive(Debug)]
enum ClientMachine {
    Invite(ClientInvite),
    NonInvite(ClientNonInvite),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Purpose {
    /// An attempt of the initial INVITE (index into the call's attempts).
    Attempt(usize),
    /// A re-INVITE relayed from the other leg.
    ReInvite,
    /// A non-INVITE in-dialog request relayed for this server transaction.
    Relay(TxnId),
    /// A BYE Palisade sends to end the call.
    Bye,
    /// A CANCEL of an attempt.
    Cancel,
    /// An OPTIONS health probe (its id in [`Health`]).
    Probe(u64),
    /// A request of the edge (outbound REGISTER, keepalive OPTIONS).
    Edge(edge::EdgePurpose),
}

#[derive(Debug)]
struct ClientTxn {
    key: ClientKey,
    machine: ClientMachine,
    request: Message,
    flow: Flow,
    call: Option<(CallRef, Side)>,
    purpose: Purpose,
    /// The transaction got its final answer (or timed out): the call no
    /// longer waits for it.
    settled: bool,
    /// A CANCEL was sent for this (INVITE) transaction.
    cancelled: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum CallTimer {
    /// No response at all from the member of this attempt.
    MemberTimeout(usize),
    /// Ringing too long.
    NoAnswer,
    /// Retransmission of a relayed 2xx until the ACK.
    Uas2xx,
    /// A relayed re-INVITE got no final answer in time.
    ReInvite,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum TimerKey {
    Server(TxnId),
    /// Last resort: a server transaction the TU never answered gets 408.
    ServerGuard(TxnId),
    Client(TxnId),
    Call(CallRef, CallTimer),
    /// The edge's next deadline (registrations, keepalives, binding expiry).
    Edge,
}

/// Dialogs sharing one Call-ID: (our tag on that leg, call, side).
type DialogEntries = SmallVec<[(String, CallRef, Side); 1]>;

/// The B2BUA call engine. Sans-IO: feed it messages and time, drain
/// transmits and events. See the crate documentation.
pub struct Engine {
    cfg: Arc<Config>,
    timers_cfg: TimerConfig,
    ids: IdGen,
    stages: HashMap<TrunkId, Vec<Box<dyn Stage>>>,
    calls: HashMap<CallRef, Box<Call>, IdHasher>,
    /// Call-ID → (our tag on that leg, call, side).
    dialogs: HashMap<String, DialogEntries>,
    server: HashMap<TxnId, Box<ServerTxn>, IdHasher>,
    server_keys: HashMap<ServerKey, TxnId>,
    client: HashMap<TxnId, Box<ClientTxn>, IdHasher>,
    client_keys: HashMap<ClientKey, TxnId>,
    timers: TimerQueue<TimerKey>,
    transmits: VecDeque<Transmit>,
    events: VecDeque<Event>,
    stats: EngineStats,
    draining: bool,
    next_id: u64,
    /// Key for the To tags of stateless responses.
    tag_key: String,
    media: Box<dyn MediaHook>,
    guard: Box<dyn GuardHook>,
    inbound_stages: HashMap<TrunkId, Vec<Box<dyn Stage>>>,
    /// Trunk targets (resolved DNS members) and their probe health.
    health: Health,
    /// The latest `now` the engine was given (schedules the first probes).
    last_now: Option<Instant>,
    edge: edge::EdgeState,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("calls", &self.calls.len())
            .field("server_txns", &self.server.len())
            .field("client_txns", &self.client.len())
            .field("draining", &self.draining)
            .finish_non_exhaustive()
    }
}

fn timer_config(cfg: &Config) -> TimerConfig {
    let sip = cfg.sip();
    TimerConfig {
        t1: sip.t1,
        t2: sip.t2,
        t4: sip.t4,
    }
}

/// The server-transaction key of a request (RFC 3261 17.2.3). Requests
/// without the magic cookie (RFC 2543 peers) get a key from the fields
/// RFC 2543 matching used: Call-ID, From tag, CSeq number and the Via.
fn server_key(msg: &Message) -> Option<ServerKey> {
    let method = msg.method()?;
    let via = msg.top_via().ok()?;
    let class = MethodClass::of_request(method.as_str());
    let host = via.host_raw.to_ascii_lowercase();
    match via.branch() {
        Some(b) if is_rfc3261_branch(b) => Some(ServerKey::new(b, &host, via.port, class)),
        _ => {
            let legacy = format!(
                "rfc2543|{}|{}|{}",
                msg.call_id(),
                msg.from_tag().unwrap_or(""),
                msg.cseq().seq
            );
            Some(ServerKey::new(&legacy, &host, via.port, class))
        }
    }
}

/// Whether a final failure of an attempt moves on to the next member:
/// timeout, 408 and every 5xx (503 with Retry-After included).
fn is_failover_status(status: u16) -> bool {
    status == 408 || (500..=599).contains(&status)
}

/// The status relayed to the caller for a callee's final failure. A 503
/// would tell the caller that Palisade itself is unavailable (RFC 3261
/// 16.7), so it becomes 500; 3xx would hand the caller the callee's
/// contacts, so it becomes 480.
fn caller_status(status: u16) -> u16 {
    match status {
        503 => 500,
        300..=399 => 480,
        s => s,
    }
}

impl Engine {
    /// A new engine for `cfg`, its identifiers drawn from a CSPRNG seeded
    /// with `seed` (seed from the OS in production).
    pub fn new(cfg: Arc<Config>, seed: [u8; 32]) -> Self {
        let health = Health::new(&cfg);
        let mut ids = IdGen::new(seed);
        let (max_bindings, nonce_lifetime) = cfg.registrar().map_or((1, 300), |r| {
            (
                r.max_bindings_total as usize,
                u64::from(r.nonce_lifetime_seconds),
            )
        });
        let edge = edge::EdgeState::new(&mut ids, max_bindings, nonce_lifetime);
        Engine {
            timers_cfg: timer_config(&cfg),
            cfg,
            ids,
            stages: HashMap::new(),
            calls: HashMap::default(),
            dialogs: HashMap::new(),
            server: HashMap::default(),
            server_keys: HashMap::new(),
            client: HashMap::default(),
            client_keys: HashMap::new(),
            timers: TimerQueue::new(),
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            stats: EngineStats::default(),
            draining: false,
            next_id: 1,
            tag_key: String::new(),
            media: Box::new(OriginOnly),
            guard: Box::new(NoGuard),
            inbound_stages: HashMap::new(),
            health,
            last_now: None,
            edge,
        }
        .with_tag_key()
    }

    fn with_tag_key(mut self) -> Self {
        self.tag_key = self.ids.call_id();
        self
    }

    /// Installs the outbound stages of a trunk (normalization, NAT...).
    pub fn set_stages(&mut self, trunk: TrunkId, stages: Vec<Box<dyn Stage>>) {
        if stages.is_empty() {
            self.stages.remove(&trunk);
        } else {
            self.stages.insert(trunk, stages);
        }
    }

    /// Installs media anchoring (default: [`OriginOnly`]).
    pub fn set_media(&mut self, media: Box<dyn MediaHook>) {
        self.media = media;
    }

    /// Installs the guard (default: [`NoGuard`]).
    pub fn set_guard(&mut self, guard: Box<dyn GuardHook>) {
        self.guard = guard;
    }

    /// Installs the inbound stages of a trunk: applied to every message
    /// received from that trunk before the engine looks at it.
    pub fn set_inbound_stages(&mut self, trunk: TrunkId, stages: Vec<Box<dyn Stage>>) {
        if stages.is_empty() {
            self.inbound_stages.remove(&trunk);
        } else {
            self.inbound_stages.insert(trunk, stages);
        }
    }

    /// Replaces the configuration (SIGHUP). Calls in progress keep the
    /// snapshot they started with; new calls use `cfg`. The caller checks
    /// that zones and listeners did not change.
    pub fn reload(&mut self, cfg: Arc<Config>) {
        self.timers_cfg = timer_config(&cfg);
        self.health.reload(&cfg);
        self.cfg = cfg;
        self.stages.clear();
        self.inbound_stages.clear();
        self.edge.synced = false;
    }

    /// Installs the resolved targets of `trunk` (by name), a trunk with
    /// `host:` members, in failover order: the binary's resolver calls this
    /// after the first resolution and whenever the answer changes. Targets
    /// already known keep their health. Returns false if no trunk of that
    /// name has DNS members. See [`crate::health`].
    pub fn set_trunk_targets(&mut self, now: Instant, trunk: &str, targets: Vec<Target>) -> bool {
        self.last_now = Some(now);
        self.health.set_targets(trunk, targets)
    }

    /// Every trunk target with its health state and probe counters.
    pub fn target_status(&self) -> Vec<TargetStatus> {
        self.health.status()
    }

    /// Stops taking new calls (they get 503 with Retry-After); calls in
    /// progress continue.
    pub fn begin_drain(&mut self) {
        self.draining = true;
    }

    /// Number of calls in progress: not yet ended. Ended calls whose last
    /// transactions are still finishing (a CANCEL awaiting its 487, a BYE
    /// awaiting its 200) are not counted.
    pub fn active_calls(&self) -> usize {
        self.calls
            .values()
            .filter(|c| c.state != CallState::Ending)
            .count()
    }

    /// Counters since start.
    pub fn stats(&self) -> EngineStats {
        EngineStats {
            active_calls: self.active_calls() as u64,
            tracked_calls: self.calls.len() as u64,
            server_transactions: self.server.len() as u64,
            client_transactions: self.client.len() as u64,
            targets_down: self.health.down_count() as u64,
            targets_truncated: self.health.targets_truncated,
            ..self.stats
        }
    }

    /// Ends every call now: BYE on both legs of answered calls, 503 to the
    /// caller and CANCEL toward the callee for calls still ringing.
    pub fn terminate_all(&mut self, now: Instant) {
        let ids: Vec<CallRef> = self.calls.keys().copied().collect();
        for id in ids {
            self.end_call(now, id, EndReason::Shutdown, Some(503));
        }
    }

    /// The earliest time [`Engine::handle_timeout`] has work.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let timers = self.timers.next_deadline();
        match (timers, self.health.next_deadline(self.last_now)) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Next message to send.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    /// Next event (call events, malformed input) for logs and metrics.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    fn next_txn_id(&mut self) -> TxnId {
        self.next_id += 1;
        TxnId(self.next_id)
    }

    fn emit(&mut self, e: Event) {
        if self.events.len() < MAX_QUEUED_EVENTS {
            self.events.push_back(e);
        } else {
            self.stats.events_dropped += 1;
        }
    }

    fn call_event(&mut self, call: CallRef, kind: CallEventKind) {
        self.emit(Event::Call(CallEvent { call, kind }));
    }

    fn transmit(&mut self, flow: Flow, data: Bytes) {
        if self.transmits.len() < MAX_QUEUED_TRANSMITS {
            self.transmits.push_back(Transmit { flow, data });
        } else {
            self.stats.transmits_dropped += 1;
        }
    }

    // ------------------------------------------------------------------
    // Input
    // ------------------------------------------------------------------

    /// Handles one message received on `zone` over `transport` from `remote`.
    pub fn handle_message(
        &mut self,
        now: Instant,
        zone: ZoneId,
        transport: Transport,
        remote: SocketAddr,
        data: Bytes,
    ) {
        self.last_now = Some(now);
        self.stats.messages_received += 1;
        let flow = Flow {
            zone,
            transport,
            remote,
        };
        let sip = self.cfg.sip();
        let limits = ParseLimits {
            max_message_bytes: match transport {
                Transport::Udp => sip.max_udp_message_bytes,
                Transport::Tcp | Transport::Tls => sip.max_tcp_message_bytes,
            },
            max_headers: MAX_HEADERS,
        };
        let msg = match Message::parse(data.clone(), &limits) {
            Ok(msg) => msg,
            Err(e) => {
                self.guard.malformed(now, &flow);
                return self.on_malformed(flow, &data, e);
            }
        };
        let trunk = self.cfg.trunk_for_source(zone, remote.ip());
        let msg = match trunk {
            Some(t) if self.inbound_stages.contains_key(&t) => self.run_inbound_stages(t, msg),
            _ => msg,
        };
        if !msg.is_request() {
            return self.on_response(now, msg);
        }
        match self.guard.request(now, &flow, trunk, &msg) {
            Verdict::Allow => self.on_request(now, flow, msg),
            Verdict::Drop => self.stats.guard_dropped += 1,
            Verdict::Reject(status) => {
                self.stats.guard_rejected += 1;
                if msg.method() != Some(&Method::Ack) {
                    self.respond_stateless(flow, &msg, status, |w| {
                        if status == 503 {
                            w.header_fmt(
                                HeaderName::RetryAfter,
                                format_args!("{RETRY_AFTER_SECONDS}"),
                            );
                        }
                    });
                }
            }
        }
    }

    fn run_inbound_stages(&self, trunk: TrunkId, msg: Message) -> Message {
        let Some(stages) = self.inbound_stages.get(&trunk) else {
            return msg;
        };
        let name = self
            .cfg
            .trunk(trunk)
            .map(|t| t.name.as_str())
            .unwrap_or_default();
        let ctx = StageContext {
            trunk,
            trunk_name: name,
            direction: Direction::Inbound,
            source: None,
            other_trunk: None,
        };
        let mut edit = Editor::new(&msg);
        for s in stages {
            s.apply(&ctx, &mut edit);
        }
        if !edit.is_modified() {
            return msg;
        }
        let limits = ParseLimits {
            max_message_bytes: usize::MAX,
            max_headers: MAX_HEADERS,
        };
        // A stage that breaks the message is a configuration bug: keep the original.
        Message::parse(edit.finish(), &limits).unwrap_or(msg)
    }

    fn on_malformed(&mut self, flow: Flow, data: &[u8], error: ParseError) {
        let agent = self
            .cfg
            .zone(flow.zone)
            .map(|z| host_str(z.sip_address))
            .unwrap_or_default();
        // An oversize UDP datagram reaches us cut just past the cap, its head
        // usually unfinished: answer (513) from the complete lines it has.
        let cut;
        let salvaged = match salvage_request(data) {
            None if matches!(error.kind, palisade_sip::ErrorKind::TooLarge { .. }) => {
                cut = data
                    .iter()
                    .rposition(|&b| b == b'\n')
                    .map(|lf| [&data[..=lf], b"\r\n"].concat());
                cut.as_deref().and_then(salvage_request)
            }
            s => s,
        };
        let answered = match salvaged {
            Some(s) => {
                let status = error.status_code();
                let r = s.response(
                    status,
                    reason_phrase(status),
                    &agent,
                    &error.to_string(),
                    Some(flow.remote),
                );
                self.transmit(flow, r);
                self.stats.malformed_answered += 1;
                true
            }
            None => {
                self.stats.malformed_dropped += 1;
                false
            }
        };
        self.emit(Event::Malformed {
            flow,
            error,
            answered,
        });
    }

    fn on_request(&mut self, now: Instant, flow: Flow, msg: Message) {
        let Some(key) = server_key(&msg) else {
            self.stats.malformed_dropped += 1;
            return;
        };
        let method = msg.method().cloned().unwrap_or(Method::Options);
        if method == Method::Ack {
            if let Some(&id) = self.server_keys.get(&key) {
                // ACK of a non-2xx final: the INVITE transaction absorbs it.
                if let Some(t) = self.server.get_mut(&id)
                    && let ServerMachine::Invite(m) = &mut t.machine
                {
                    m.on_ack(now);
                }
                self.drive_server(now, id);
                return;
            }
            self.on_dialog_ack(now, msg);
            return;
        }
        if let Some(&id) = self.server_keys.get(&key) {
            self.stats.retransmissions_received += 1;
            if let Some(t) = self.server.get_mut(&id) {
                match &mut t.machine {
                    ServerMachine::Invite(m) => m.on_request_retransmit(now),
                    ServerMachine::NonInvite(m) => m.on_request_retransmit(now),
                }
            }
            self.drive_server(now, id);
            return;
        }
        if method == Method::Cancel {
            self.on_cancel(now, flow, msg, key);
            return;
        }
        if msg.to_tag().is_some() {
            self.on_in_dialog(now, flow, msg, key);
            return;
        }
        match method {
            Method::Invite => self.on_initial_invite(now, flow, msg, key),
            // Answered statelessly: nothing is kept for requests that create
            // no call, so a flood of them costs no memory (a retransmission
            // gets the same answer again).
            Method::Options => self.respond_stateless(flow, &msg, 200, |w| {
                w.header(HeaderName::Allow, ALLOW);
                w.header(HeaderName::Accept, "application/sdp");
            }),
            Method::Bye | Method::Prack | Method::Update | Method::Info => {
                self.respond_stateless(flow, &msg, 481, |_| {});
            }
            Method::Register => self.on_register(now, flow, msg, key),
            Method::Extension(_) => self.respond_stateless(flow, &msg, 501, |w| {
                w.header(HeaderName::Allow, ALLOW);
            }),
            _ => self.respond_stateless(flow, &msg, 405, |w| {
                w.header(HeaderName::Allow, ALLOW);
            }),
        }
    }

    /// Answers `req` without a transaction. The To tag (when the request
    /// has none) is derived from the request with a keyed hash, so
    /// retransmissions get an identical response.
    fn respond_stateless(
        &mut self,
        flow: Flow,
        req: &Message,
        status: u16,
        extra: impl FnOnce(&mut MessageWriter),
    ) {
        let tag = (status != 100 && req.to_tag().is_none()).then(|| {
            let mut h = std::hash::DefaultHasher::new();
            std::hash::Hash::hash(&self.tag_key, &mut h);
            std::hash::Hash::hash(req.call_id(), &mut h);
            std::hash::Hash::hash(&req.from_tag(), &mut h);
            std::hash::Hash::hash(&req.branch(), &mut h);
            format!("{:016x}", std::hash::Hasher::finish(&h))
        });
        let mut w = MessageWriter::response_to(
            req,
            status,
            reason_phrase(status),
            Some(flow.remote),
            tag.as_deref(),
        );
        w.header(HeaderName::Server, &self.cfg.node().user_agent);
        extra(&mut w);
        self.stats.stateless_responses += 1;
        self.transmit(flow, w.finish_empty());
    }

    // ------------------------------------------------------------------
    // Server transactions
    // ------------------------------------------------------------------

    fn new_server_txn(
        &mut self,
        now: Instant,
        flow: Flow,
        request: Message,
        key: ServerKey,
        call: Option<(CallRef, Side, String)>,
    ) -> TxnId {
        let id = self.next_txn_id();
        let reliable = flow.transport.is_reliable();
        let machine = if request.method() == Some(&Method::Invite) {
            ServerMachine::Invite(ServerInvite::new(now, &self.timers_cfg, reliable))
        } else {
            ServerMachine::NonInvite(ServerNonInvite::new(now, &self.timers_cfg, reliable))
        };
        let (call, to_tag) = match call {
            Some((c, s, tag)) => (Some((c, s)), tag),
            None => (
                None,
                request
                    .to_tag()
                    .map_or_else(|| self.ids.tag(), str::to_owned),
            ),
        };
        let guard = if request.method() == Some(&Method::Invite) {
            self.cfg.sip().no_answer_timeout + self.timers_cfg.t1 * 64
        } else {
            self.timers_cfg.t1 * 64
        };
        self.timers
            .set(TimerKey::ServerGuard(id), Some(now + guard));
        self.server_keys.insert(key.clone(), id);
        self.server.insert(
            id,
            Box::new(ServerTxn {
                key,
                machine,
                request,
                flow,
                to_tag,
                call,
                finished: false,
            }),
        );
        id
    }

    /// Sends a response in server transaction `id`; `extra` adds headers.
    fn respond(
        &mut self,
        now: Instant,
        id: TxnId,
        status: u16,
        extra: impl FnOnce(&mut MessageWriter),
    ) {
        self.respond_with_body(now, id, status, extra, None, None);
    }

    fn respond_with_body(
        &mut self,
        now: Instant,
        id: TxnId,
        status: u16,
        extra: impl FnOnce(&mut MessageWriter),
        content_type: Option<&str>,
        body: Option<&[u8]>,
    ) {
        let Some(t) = self.server.get(&id) else {
            return;
        };
        if t.finished {
            return;
        }
        let tag = (status != 100).then_some(t.to_tag.as_str());
        let mut w = MessageWriter::response_to(
            &t.request,
            status,
            reason_phrase(status),
            Some(t.flow.remote),
            tag,
        );
        w.header(HeaderName::Server, &self.cfg.node().user_agent);
        extra(&mut w);
        let bytes = w.finish(content_type, body.unwrap_or(&[]));
        let call = t.call;
        let bytes = self.run_stages(call, bytes, None);
        let Some(t) = self.server.get_mut(&id) else {
            return;
        };
        let result = match &mut t.machine {
            ServerMachine::Invite(m) => m.send_response(now, status, bytes),
            ServerMachine::NonInvite(m) => m.send_response(now, status, bytes),
        };
        if status >= 200 {
            t.finished = true;
            self.timers.cancel(&TimerKey::ServerGuard(id));
        }
        if result.is_err() {
            self.stats.internal_errors += 1;
        }
        // The transaction queued the response (a 2xx too: its first
        // transmission passes through the transaction; retransmitting it is
        // the TU core's job, RFC 3261 13.3.1.4, see `start_uas2xx`).
        self.drive_server(now, id);
    }

    /// Flushes a server transaction's transmits and events; drops it when terminated.
    fn drive_server(&mut self, now: Instant, id: TxnId) {
        let _ = now;
        let Some(t) = self.server.get_mut(&id) else {
            return;
        };
        let flow = t.flow;
        let mut out: SmallVec<[Bytes; 2]> = SmallVec::new();
        let mut events: SmallVec<[TxnEvent; 2]> = SmallVec::new();
        let deadline = match &mut t.machine {
            ServerMachine::Invite(m) => drain(m, &mut out, &mut events),
            ServerMachine::NonInvite(m) => drain(m, &mut out, &mut events),
        };
        for b in out {
            self.transmit(flow, b);
        }
        let mut terminated = false;
        for e in events {
            if e == TxnEvent::Terminated {
                terminated = true;
            }
        }
        if terminated {
            self.timers.cancel(&TimerKey::Server(id));
            self.timers.cancel(&TimerKey::ServerGuard(id));
            if let Some(t) = self.server.remove(&id)
                && self.server_keys.get(&t.key) == Some(&id)
            {
                self.server_keys.remove(&t.key);
            }
        } else {
            self.timers.set(TimerKey::Server(id), deadline);
        }
    }

    // ------------------------------------------------------------------
    // Client transactions
    // ------------------------------------------------------------------

    /// Sends a request Palisade built in a new client transaction.
    fn send_request(
        &mut self,
        now: Instant,
        flow: Flow,
        bytes: Bytes,
        call: Option<(CallRef, Side)>,
        purpose: Purpose,
    ) -> Option<TxnId> {
        self.send_request_from(now, flow, bytes, call, purpose, None)
    }

    /// [`Self::send_request`] for a request made from `source`, a message
    /// received on the other leg, which the trunk's stages get to see.
    fn send_request_from(
        &mut self,
        now: Instant,
        flow: Flow,
        bytes: Bytes,
        call: Option<(CallRef, Side)>,
        purpose: Purpose,
        source: Option<&Message>,
    ) -> Option<TxnId> {
        let bytes = self.run_stages(call, bytes, source);
        let limits = ParseLimits {
            max_message_bytes: usize::MAX,
            max_headers: usize::MAX,
        };
        let request = match Message::parse(bytes.clone(), &limits) {
            Ok(m) => m,
            Err(_) => {
                self.stats.internal_errors += 1;
                return None;
            }
        };
        let (flow, bytes, request) = self.fit_transport(flow, bytes, request);
        let branch = request.branch().unwrap_or_default().to_owned();
        let method = request.method().cloned().unwrap_or(Method::Options);
        let key = ClientKey::new(&branch, MethodClass::of_request(method.as_str()));
        let reliable = flow.transport.is_reliable();
        let machine = if method == Method::Invite {
            ClientMachine::Invite(ClientInvite::new(now, &self.timers_cfg, reliable, bytes))
        } else {
            ClientMachine::NonInvite(ClientNonInvite::new(now, &self.timers_cfg, reliable, bytes))
        };
        let id = self.next_txn_id();
        self.client_keys.insert(key.clone(), id);
        self.client.insert(
            id,
            Box::new(ClientTxn {
                key,
                machine,
                request,
                flow,
                call,
                purpose,
                settled: false,
                cancelled: false,
            }),
        );
        if let Some((c, _)) = call
            && let Some(call) = self.calls.get_mut(&c)
        {
            call.outstanding += 1;
        }
        self.stats.requests_sent += 1;
        self.drive_client(now, id);
        Some(id)
    }

    /// RFC 3261 18.1.1: a request over UDP larger than `sip.udp_mtu_bytes`
    /// goes over TCP to the same address when the zone listens on TCP (the
    /// top Via says so); otherwise it is sent as is and may fragment.
    fn fit_transport(
        &mut self,
        flow: Flow,
        bytes: Bytes,
        request: Message,
    ) -> (Flow, Bytes, Message) {
        let too_big =
            flow.transport == Transport::Udp && bytes.len() > self.cfg.sip().udp_mtu_bytes;
        let tcp = self
            .cfg
            .zone(flow.zone)
            .is_some_and(|z| z.has_transport(Transport::Tcp));
        if !too_big || !tcp {
            return (flow, bytes, request);
        }
        let Some(via) = request.headers().find(|h| h.name == HeaderName::Via) else {
            return (flow, bytes, request);
        };
        let value = via.value.to_vec();
        let Some(pos) = value
            .windows(11)
            .position(|w| w.eq_ignore_ascii_case(b"SIP/2.0/UDP"))
        else {
            return (flow, bytes, request);
        };
        let mut new_value = value.clone();
        new_value[pos + 8..pos + 11].copy_from_slice(b"TCP");
        // The port in our Via is the zone's UDP port; use the TCP one.
        let zone_tcp = self
            .cfg
            .zone(flow.zone)
            .map(|z| (host_str(z.sip_address), z.udp_port, z.tcp_port));
        if let Some((host, udp, tcp)) = zone_tcp {
            let from = format!("{host}:{udp}");
            if let Some(text) = std::str::from_utf8(&new_value)
                .ok()
                .map(|t| t.replacen(&from, &format!("{host}:{tcp}"), 1))
            {
                new_value = text.into_bytes();
            }
        }
        let mut edit = Editor::new(&request);
        edit.replace_value(via.index, &new_value);
        let out = edit.finish();
        let limits = ParseLimits {
            max_message_bytes: usize::MAX,
            max_headers: usize::MAX,
        };
        match Message::parse(out.clone(), &limits) {
            Ok(m) => {
                self.stats.udp_to_tcp_switches += 1;
                (
                    Flow {
                        transport: Transport::Tcp,
                        ..flow
                    },
                    out,
                    m,
                )
            }
            Err(_) => (flow, bytes, request),
        }
    }

    fn drive_client(&mut self, now: Instant, id: TxnId) {
        let Some(t) = self.client.get_mut(&id) else {
            return;
        };
        let flow = t.flow;
        let mut out: SmallVec<[Bytes; 2]> = SmallVec::new();
        let mut events: SmallVec<[TxnEvent; 2]> = SmallVec::new();
        let deadline = match &mut t.machine {
            ClientMachine::Invite(m) => drain(m, &mut out, &mut events),
            ClientMachine::NonInvite(m) => drain(m, &mut out, &mut events),
        };
        for b in out {
            self.transmit(flow, b);
        }
        let mut terminated = false;
        for e in events {
            match e {
                TxnEvent::Timeout | TxnEvent::TransportError => {
                    self.on_client_final(now, id, 408, None);
                }
                TxnEvent::Terminated => terminated = true,
            }
        }
        if terminated {
            self.timers.cancel(&TimerKey::Client(id));
            self.settle(now, id);
            if let Some(t) = self.client.remove(&id)
                && self.client_keys.get(&t.key) == Some(&id)
            {
                self.client_keys.remove(&t.key);
            }
        } else {
            self.timers.set(TimerKey::Client(id), deadline);
        }
    }

    /// Marks a client transaction as answered for its call's bookkeeping;
    /// removes a finished call when nothing is outstanding any more.
    fn settle(&mut self, now: Instant, id: TxnId) {
        let Some(t) = self.client.get_mut(&id) else {
            return;
        };
        if t.settled {
            return;
        }
        t.settled = true;
        let call = t.call;
        if let Some((c, _)) = call {
            if let Some(call) = self.calls.get_mut(&c) {
                call.outstanding = call.outstanding.saturating_sub(1);
            }
            self.maybe_remove_call(now, c);
        }
    }

    fn on_response(&mut self, now: Instant, msg: Message) {
        let Some(branch) = msg.branch() else {
            self.stats.stray_responses += 1;
            return;
        };
        let key = ClientKey::new(branch, MethodClass::of_response(msg.cseq().method.as_str()));
        let Some(&id) = self.client_keys.get(&key) else {
            self.stats.stray_responses += 1;
            return;
        };
        let status = msg.status().unwrap_or(500);
        let Some(t) = self.client.get_mut(&id) else {
            return;
        };
        let disposition = match &mut t.machine {
            ClientMachine::Invite(m) => {
                let d = m.on_response(now, status);
                if d.needs_ack() {
                    let ack = MessageWriter::ack_for_failure(&t.request, &msg);
                    if m.send_ack(ack).is_err() {
                        self.stats.internal_errors += 1;
                    }
                }
                d
            }
            ClientMachine::NonInvite(m) => m.on_response(now, status),
        };
        if disposition.pass_to_tu() {
            if status >= 200 {
                self.on_client_final(now, id, status, Some(&msg));
            } else {
                self.on_client_provisional(now, id, &msg);
            }
        } else {
            self.stats.retransmissions_received += 1;
        }
        self.drive_client(now, id);
    }

    // ------------------------------------------------------------------
    // Timers
    // ------------------------------------------------------------------

    /// Fires every timer due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.last_now = Some(now);
        if self
            .health
            .next_deadline(Some(now))
            .is_some_and(|d| d <= now)
        {
            self.run_health(now);
        }
        let due: Vec<TimerKey> = self.timers.pop_expired(now).collect();
        for key in due {
            match key {
                TimerKey::Server(id) => {
                    if let Some(t) = self.server.get_mut(&id) {
                        match &mut t.machine {
                            ServerMachine::Invite(m) => m.handle_timeout(now),
                            ServerMachine::NonInvite(m) => m.handle_timeout(now),
                        }
                    }
                    self.drive_server(now, id);
                }
                TimerKey::Client(id) => {
                    if let Some(t) = self.client.get_mut(&id) {
                        match &mut t.machine {
                            ClientMachine::Invite(m) => m.handle_timeout(now),
                            ClientMachine::NonInvite(m) => m.handle_timeout(now),
                        }
                    }
                    self.drive_client(now, id);
                }
                TimerKey::Call(c, CallTimer::MemberTimeout(i)) => self.on_member_timeout(now, c, i),
                TimerKey::Call(c, CallTimer::NoAnswer) => {
                    if self
                        .calls
                        .get(&c)
                        .is_some_and(|call| call.state == CallState::Early)
                    {
                        self.end_call(now, c, EndReason::NoAnswer, Some(408));
                    }
                }
                TimerKey::Call(c, CallTimer::Uas2xx) => self.on_uas2xx_timer(now, c),
                TimerKey::Call(c, CallTimer::ReInvite) => {
                    let pending = self
                        .calls
                        .get(&c)
                        .and_then(|call| call.invite.as_ref())
                        .is_some_and(|r| !r.answered);
                    if pending {
                        // RFC 5057: a re-INVITE that times out ends the dialog.
                        self.end_call(now, c, EndReason::PeerVanished, None);
                    }
                }
                TimerKey::Edge => self.on_edge_timer(now),
                TimerKey::ServerGuard(id) => {
                    if self.server.get(&id).is_some_and(|t| !t.finished) {
                        self.stats.guard_timeouts += 1;
                        self.respond(now, id, 408, |_| {});
                    }
                }
            }
        }
    }

    // ------------------------------------------------------------------
    // Health probes (crate::health decides; this sends and drops)
    // ------------------------------------------------------------------

    fn run_health(&mut self, now: Instant) {
        let out = self.health.poll(now);
        for txn in out.abandon {
            // A probe judged timed out: stop retransmitting it.
            self.timers.cancel(&TimerKey::Client(txn));
            if let Some(t) = self.client.remove(&txn)
                && self.client_keys.get(&t.key) == Some(&txn)
            {
                self.client_keys.remove(&t.key);
            }
        }
        for p in out.send {
            let cfg = Arc::clone(&self.cfg);
            let Some(zone) = cfg.zone(p.zone) else {
                continue;
            };
            let bytes = probe_request(
                zone,
                &p.target,
                &self.ids.call_id(),
                &self.ids.tag(),
                &self.ids.branch(),
                &cfg.node().user_agent,
            );
            let flow = Flow {
                zone: p.zone,
                transport: p.target.transport,
                remote: p.target.addr,
            };
            self.stats.probes_sent += 1;
            if let Some(txn) = self.send_request(now, flow, bytes, None, Purpose::Probe(p.id)) {
                self.health.set_probe_txn(p.id, txn);
            }
        }
        self.emit_health_changes();
    }

    fn emit_health_changes(&mut self) {
        for c in self.health.take_changes() {
            self.emit(Event::TargetHealth(c));
        }
    }

    // ------------------------------------------------------------------
    // Stages
    // ------------------------------------------------------------------

    fn run_stages(
        &mut self,
        call: Option<(CallRef, Side)>,
        bytes: Bytes,
        source: Option<&Message>,
    ) -> Bytes {
        let Some((trunk, other_trunk)) = call.and_then(|(c, s)| {
            self.calls
                .get(&c)
                .map(|call| (call.leg(s).trunk, call.leg(s.other()).trunk))
        }) else {
            return bytes;
        };
        let Some(stages) = self.stages.get(&trunk) else {
            return bytes;
        };
        let limits = ParseLimits {
            max_message_bytes: usize::MAX,
            max_headers: usize::MAX,
        };
        let Ok(msg) = Message::parse(bytes.clone(), &limits) else {
            return bytes;
        };
        let name = self
            .cfg
            .trunk(trunk)
            .map(|t| t.name.as_str())
            .unwrap_or_default();
        let ctx = StageContext {
            trunk,
            trunk_name: name,
            direction: Direction::Outbound,
            source,
            other_trunk: Some(other_trunk),
        };
        let mut edit = Editor::new(&msg);
        for s in stages {
            s.apply(&ctx, &mut edit);
        }
        if edit.is_modified() {
            edit.finish()
        } else {
            bytes
        }
    }
}

// ----------------------------------------------------------------------
// Calls
// ----------------------------------------------------------------------

impl Engine {
    fn register_dialog(&mut self, call_id: &str, tag: &str, call: CallRef, side: Side) {
        self.dialogs
            .entry(call_id.to_owned())
            .or_default()
            .push((tag.to_owned(), call, side));
    }

    fn unregister_dialog(&mut self, call_id: &str, tag: &str) {
        if let Some(v) = self.dialogs.get_mut(call_id) {
            v.retain(|(t, _, _)| t != tag);
            if v.is_empty() {
                self.dialogs.remove(call_id);
            }
        }
    }

    fn find_dialog(&self, msg: &Message) -> Option<(CallRef, Side)> {
        let tag = msg.to_tag()?;
        self.dialogs
            .get(msg.call_id())?
            .iter()
            .find(|(t, _, _)| t == tag)
            .map(|&(_, c, s)| (c, s))
    }

    fn reject(&mut self, flow: Flow, msg: Message, status: u16, why: &'static str) {
        let method = msg.method().cloned().unwrap_or(Method::Options);
        self.respond_stateless(flow, &msg, status, |w| {
            if status == 503 {
                w.header_fmt(
                    HeaderName::RetryAfter,
                    format_args!("{RETRY_AFTER_SECONDS}"),
                );
            }
        });
        self.stats.calls_rejected += 1;
        self.emit(Event::Rejected {
            flow,
            method,
            status,
            reason: why,
        });
    }

    fn on_initial_invite(&mut self, now: Instant, flow: Flow, msg: Message, key: ServerKey) {
        let cfg = Arc::clone(&self.cfg);
        let in_trunk = cfg
            .trunk_for_source(flow.zone, flow.remote.ip())
            .or_else(|| self.registered_source_trunk(now, flow));
        let Some(in_trunk) = in_trunk else {
            return self.reject(flow, msg, 403, "unknown-source");
        };
        if self.draining {
            return self.reject(flow, msg, 503, "draining");
        }
        if self.challenge_invite(now, flow, &msg, in_trunk) {
            return;
        }
        if self.calls.len() >= cfg.sip().max_calls as usize {
            return self.reject(flow, msg, 503, "max-calls");
        }
        if msg.max_forwards() == Some(0) {
            return self.reject(flow, msg, 483, "max-forwards");
        }
        let required: Vec<String> = msg.tokens(HeaderName::Require).map(str::to_owned).collect();
        if !required.is_empty() {
            let list = required.join(", ");
            self.respond_stateless(flow, &msg, 420, |w| {
                w.header(HeaderName::Unsupported, &list);
            });
            self.stats.calls_rejected += 1;
            return;
        }
        let contact = msg
            .contacts()
            .next()
            .and_then(Result::ok)
            .map(|c| c.uri_str.to_owned());
        let Some(contact) = contact else {
            return self.reject(flow, msg, 400, "no-contact");
        };
        let Some(uri) = msg.request_uri() else {
            return self.reject(flow, msg, 400, "bad-request-uri");
        };
        let number = match uri {
            palisade_sip::Uri::Other { .. } => {
                return self.reject(flow, msg, 416, "uri-scheme");
            }
            u => match u.number() {
                Some(n) if !n.is_empty() => n.to_owned(),
                _ => return self.reject(flow, msg, 404, "no-number"),
            },
        };
        let user_phone = uri
            .as_sip()
            .is_some_and(|s| s.params.get("user") == Some(Some("phone")));
        let Some(route) = cfg.route_for(in_trunk, &number) else {
            return self.reject(flow, msg, 404, "no-route");
        };
        let out_trunk = route.to_trunk;
        let (Some(tin), Some(tout)) = (cfg.trunk(in_trunk), cfg.trunk(out_trunk)) else {
            return self.reject(flow, msg, 500, "config");
        };
        let registered = if route.to_registered {
            let Some(t) = self.registered_target(now, &number) else {
                self.edge.stats.not_registered_rejected += 1;
                return self.reject(flow, msg, 480, "not-registered");
            };
            Some(t)
        } else if !self.trunk_available(now, tout) {
            self.edge.stats.trunk_down_rejected += 1;
            return self.reject(flow, msg, 503, "trunk-down");
        } else {
            None
        };
        // The targets this call walks: the trunk's up targets in order (all
        // of them when every one is down); none yet while DNS is pending.
        let Some(targets) = self.health.plan(&tout.name) else {
            return self.reject(flow, msg, 503, "dns-pending");
        };
        let Some(first) = targets.first().cloned() else {
            return self.reject(flow, msg, 503, "no-targets");
        };
        let Some(out_zone) = cfg.zone(tout.zone) else {
            return self.reject(flow, msg, 500, "config");
        };
        let Some(in_zone) = cfg.zone(flow.zone) else {
            return self.reject(flow, msg, 500, "config");
        };

        let call_ref = CallRef(self.ids.cseq() as u64 | (self.next_id << 32));
        self.next_id += 1;
        let caller_number = msg
            .from()
            .ok()
            .and_then(|f| f.uri.number().map(str::to_owned))
            .unwrap_or_default();
        // Admission before the guard sees the call (a refused call never
        // starts); a guard refusal frees the slots again.
        let out_zone_id = registered.as_ref().map_or(tout.zone, |(f, _)| f.zone);
        if !self.cac_admit(
            now,
            flow,
            &msg,
            call_ref,
            [in_trunk, out_trunk],
            [flow.zone, out_zone_id],
            &number,
        ) {
            return;
        }
        let verdict = self.guard.call_start(
            now,
            &CallInfo {
                call: call_ref,
                source: flow.remote,
                from_trunk: tin,
                to_trunk: tout,
                caller: &caller_number,
                number: &number,
            },
        );
        match verdict {
            Verdict::Allow => {}
            Verdict::Drop => {
                self.stats.guard_dropped += 1;
                self.edge_call_ended(call_ref);
                return;
            }
            Verdict::Reject(status) => {
                self.stats.guard_rejected += 1;
                self.edge_call_ended(call_ref);
                return self.reject(flow, msg, status, "guard");
            }
        }
        // NAT: the caller's INVITE against its source (RFC 3581 answers
        // and flow routing need nothing more; media must latch), and a
        // registered callee's binding.
        let nated =
            cfg.nat().detect && palisade_nat::detect(&msg, flow.remote, flow.transport).nated();
        let callee_nated = registered.is_some()
            && self
                .edge
                .bindings
                .target(&number, now)
                .is_some_and(|b| b.nated);
        if nated {
            self.edge.stats.nated_calls += 1;
        }
        if let Some(t) = registered {
            self.edge.registered_targets.insert(call_ref, t);
        }

        // Leg A: the caller's dialog, as the caller set it up.
        let a_tag = self.ids.tag();
        let to_value = msg
            .headers()
            .find(|h| h.name == HeaderName::To)
            .and_then(|h| h.value_str().ok())
            .unwrap_or_default()
            .to_owned();
        // The caller's From without its tag: the tag is kept apart and
        // appended by `Leg::remote_hdr`.
        let from_value = msg.from().map(|f| without_tag(&f)).unwrap_or_default();
        let a_route: Vec<String> = msg
            .record_routes()
            .filter_map(|r| r.ok().map(|r| format!("<{}>", r.uri_str)))
            .collect();
        let a = Leg {
            trunk: in_trunk,
            flow,
            call_id: msg.call_id().to_owned(),
            local_tag: a_tag.clone(),
            remote_tag: msg.from_tag().map(str::to_owned),
            local_hdr: format!("{to_value};tag={a_tag}"),
            remote_base: from_value,
            remote_target: contact,
            route_set: a_route,
            next_cseq: self.ids.cseq(),
            remote_cseq: msg.cseq().seq,
            contact: contact_value(in_zone, flow.transport),
            nated,
        };

        // Leg B: built from Palisade's own state only.
        let b_flow = Flow {
            zone: tout.zone,
            transport: first.transport,
            remote: first.addr,
        };
        let b_tag = self.ids.tag();
        let caller = msg.from().ok();
        let caller_user = caller
            .as_ref()
            .and_then(|f| f.uri.number())
            .filter(|u| !u.is_empty())
            .unwrap_or("anonymous")
            .to_owned();
        let display = caller.as_ref().and_then(|f| f.display).map(str::to_owned);
        let from_b = match display {
            Some(d) => format!(
                "{d} <sip:{caller_user}@{}>;tag={b_tag}",
                host_str(out_zone.sip_address)
            ),
            None => format!(
                "<sip:{caller_user}@{}>;tag={b_tag}",
                host_str(out_zone.sip_address)
            ),
        };
        let b = Leg {
            trunk: out_trunk,
            flow: b_flow,
            call_id: self.ids.call_id(),
            local_tag: b_tag,
            remote_tag: None,
            local_hdr: from_b,
            remote_base: String::new(),
            remote_target: String::new(),
            route_set: Vec::new(),
            next_cseq: self.ids.cseq(),
            remote_cseq: 0,
            contact: contact_value(out_zone, first.transport),
            nated: callee_nated,
        };
        let (a_call_id, b_call_id) = (a.call_id.clone(), b.call_id.clone());
        let offer_in_invite = msg.has_sdp();
        let from_trunk = tin.name.clone();
        let to_trunk = tout.name.clone();

        let server = self.new_server_txn(
            now,
            flow,
            msg,
            key,
            Some((call_ref, Side::A, a_tag.clone())),
        );
        self.register_dialog(&a_call_id, &a_tag, call_ref, Side::A);
        let b_local_tag = b.local_tag.clone();
        self.register_dialog(&b_call_id, &b_local_tag, call_ref, Side::B);
        self.calls.insert(
            call_ref,
            Box::new(Call {
                cfg: Arc::clone(&cfg),
                state: CallState::Early,
                a,
                b,
                out_trunk,
                targets,
                attempts: Vec::new(),
                invite: Some(InviteRelay {
                    origin: Side::A,
                    server,
                    client: None,
                    offer_in_invite,
                    target_cseq: 0,
                    answered: false,
                    retrans: None,
                }),
                last_ack: None,
                final_status: None,
                started_at: now,
                answered_at: None,
                a_answered: false,
                outstanding: 0,
                end_reason: None,
                cancelled: false,
            }),
        );
        self.stats.calls_started += 1;
        self.respond(now, server, 100, |_| {});
        self.call_event(
            call_ref,
            CallEventKind::Started {
                from_trunk,
                to_trunk,
                number: number.clone(),
                a_call_id,
                b_call_id,
                nated,
            },
        );
        self.timers.set(
            TimerKey::Call(call_ref, CallTimer::NoAnswer),
            Some(now + cfg.sip().no_answer_timeout),
        );
        self.start_attempt(now, call_ref, 0, &number, user_phone);
    }

    /// Sends the initial INVITE toward target `member` of the call's targets
    /// (the out trunk's members, DNS names expanded, down ones skipped).
    fn start_attempt(
        &mut self,
        now: Instant,
        c: CallRef,
        member: usize,
        number: &str,
        user_phone: bool,
    ) {
        // The caller's offer (if any), as the callee will see it.
        let Some(server) = self
            .calls
            .get(&c)
            .and_then(|call| call.invite.as_ref().map(|r| r.server))
        else {
            return;
        };
        let Some(a_invite) = self.server.get(&server).map(|t| t.request.clone()) else {
            return;
        };
        let body = match self.cross_body(now, c, Side::A, &a_invite, false) {
            Ok(b) => b,
            Err(r) => {
                self.media_refused(now, c, r);
                return;
            }
        };
        let Some(call) = self.calls.get_mut(&c) else {
            return;
        };
        let cfg = Arc::clone(&call.cfg);
        let Some(trunk) = cfg.trunk(call.out_trunk) else {
            return;
        };
        let Some(m) = call.targets.get(member).cloned() else {
            return;
        };
        let Some(zone) = cfg.zone(trunk.zone) else {
            return;
        };
        let target_host = &m.uri_host;
        let params = if user_phone { ";user=phone" } else { "" };
        let transport_param = match m.transport {
            Transport::Udp => String::new(),
            t => format!(";transport={}", t.uri_param()),
        };
        let ruri = format!("sip:{number}@{target_host}{params}{transport_param}");
        let to = format!("<sip:{number}@{target_host}{params}>");
        let b = &mut call.b;
        b.flow = Flow {
            zone: trunk.zone,
            transport: m.transport,
            remote: m.addr,
        };
        b.remote_base = to;
        b.remote_target = ruri;
        b.remote_tag = None;
        b.contact = contact_value(zone, m.transport);
        // A registered user: its contact, over the flow it registered from.
        let zone = match self.edge.registered_targets.get(&c) {
            Some((flow, contact)) => {
                b.flow = *flow;
                b.remote_target.clone_from(contact);
                b.remote_base = format!("<sip:{number}@{}>", host_str(zone.sip_address));
                let Some(z) = cfg.zone(flow.zone) else {
                    return;
                };
                b.contact = contact_value(z, flow.transport);
                z
            }
            None => zone,
        };
        let branch = self.ids.branch();
        // Max-Forwards: the caller's budget, minus this hop.
        let mf = a_invite.max_forwards().map_or(cfg.sip().max_forwards, |v| {
            v.saturating_sub(1).min(cfg.sip().max_forwards)
        });
        let (mut w, seq) = b.request(
            &Method::Invite,
            zone,
            &branch,
            None,
            &cfg.node().user_agent,
            mf,
        );
        w.header(HeaderName::Contact, &b.contact);
        w.header(HeaderName::Allow, ALLOW);
        copy_passed_headers(&mut w, &a_invite, trunk, zone.sip_address);
        if let Some((name, value)) = self.edge.pending_auth.get(&c) {
            w.header(*name, value);
        }
        let flow = b.flow;
        let bytes = finish_body(w, body);
        if let Some(r) = call.invite.as_mut() {
            r.target_cseq = seq;
        }
        let idx = call.attempts.len();
        let Some(id) = self.send_request_from(
            now,
            flow,
            bytes,
            Some((c, Side::B)),
            Purpose::Attempt(idx),
            Some(&a_invite),
        ) else {
            return;
        };
        if let Some(call) = self.calls.get_mut(&c) {
            call.attempts.push(Attempt {
                txn: id,
                member,
                responded: false,
                provisional: false,
                abandoned: false,
                cancel_sent: false,
                done: false,
            });
            let timeout = trunk.member_timeout;
            self.timers.set(
                TimerKey::Call(c, CallTimer::MemberTimeout(idx)),
                Some(now + timeout),
            );
        }
        self.call_event(
            c,
            CallEventKind::Attempt {
                member: flow.remote,
                index: member,
            },
        );
    }

    fn on_member_timeout(&mut self, now: Instant, c: CallRef, idx: usize) {
        let Some(call) = self.calls.get_mut(&c) else {
            return;
        };
        let Some(a) = call.attempts.get_mut(idx) else {
            return;
        };
        if a.responded || a.done || a.abandoned {
            return;
        }
        // Silent member: give up on it. The call does not wait for its
        // transaction (Timer B ends it); a late answer is cleaned up alone.
        a.abandoned = true;
        let member = a.member;
        let txn = a.txn;
        self.settle(now, txn);
        let Some(call) = self.calls.get(&c) else {
            return;
        };
        let remote = call.b.flow.remote;
        self.call_event(
            c,
            CallEventKind::Failover {
                member: remote,
                status: None,
            },
        );
        self.next_member_or_fail(now, c, member, 408);
    }

    /// Tries the member after `member`, or relays `status` to the caller.
    fn next_member_or_fail(&mut self, now: Instant, c: CallRef, member: usize, status: u16) {
        let Some(call) = self.calls.get(&c) else {
            return;
        };
        if call.state != CallState::Early {
            return;
        }
        let members = call.targets.len();
        let next = member + 1;
        if is_failover_status(status) && next < members {
            let Some(server) = call.invite.as_ref().map(|r| r.server) else {
                return;
            };
            let Some(req) = self.server.get(&server).map(|t| t.request.clone()) else {
                return;
            };
            let Some(uri) = req.request_uri() else {
                return;
            };
            let number = uri.number().unwrap_or_default().to_owned();
            let user_phone = uri
                .as_sip()
                .is_some_and(|s| s.params.get("user") == Some(Some("phone")));
            self.start_attempt(now, c, next, &number, user_phone);
        } else {
            let reason = if is_failover_status(status) {
                EndReason::Unreachable
            } else {
                EndReason::Rejected
            };
            self.end_call(now, c, reason, Some(caller_status(status)));
        }
    }

    fn on_client_provisional(&mut self, now: Instant, id: TxnId, msg: &Message) {
        let Some(t) = self.client.get(&id) else {
            return;
        };
        let (Some((c, side)), purpose) = (t.call, t.purpose) else {
            return;
        };
        let status = msg.status().unwrap_or(100);
        if !self.calls.contains_key(&c) {
            // The call ended before this INVITE got any answer: a CANCEL is
            // now allowed, and without it the transaction would wait forever.
            self.cancel_client_invite(now, id, c);
            return;
        }
        match purpose {
            Purpose::Attempt(idx) => {
                let Some(call) = self.calls.get_mut(&c) else {
                    return;
                };
                let Some(a) = call.attempts.get_mut(idx) else {
                    return;
                };
                a.responded = true;
                // Any 1xx, 100 included, allows a CANCEL (RFC 3261 9.1).
                a.provisional = true;
                self.timers
                    .cancel(&TimerKey::Call(c, CallTimer::MemberTimeout(idx)));
                if a.abandoned || call.state != CallState::Early {
                    // Given up on before the callee said anything: the CANCEL
                    // may go now, and it ends the transaction.
                    if !a.cancel_sent {
                        self.cancel_attempt(now, c, idx);
                    }
                    return;
                }
                if status == 100 {
                    return;
                }
                // Early dialog on B: remember the callee's tag for UPDATE/early BYE.
                if let Some(tag) = msg.to_tag() {
                    call.b.remote_tag = Some(tag.to_owned());
                    if let Some(Ok(ct)) = msg.contacts().next() {
                        call.b.remote_target = ct.uri_str.to_owned();
                    }
                }
                self.relay_response(now, c, Side::A, msg, true);
                self.call_event(c, CallEventKind::Progress { status });
            }
            Purpose::ReInvite | Purpose::Relay(_) if status > 100 => {
                let target = side.other();
                if let Purpose::Relay(server) = purpose {
                    self.relay_response_to(now, c, target, server, msg, false);
                } else if let Some(server) = self
                    .calls
                    .get(&c)
                    .and_then(|call| call.invite.as_ref().map(|r| r.server))
                {
                    self.relay_response_to(now, c, target, server, msg, true);
                }
            }
            _ => {}
        }
    }

    fn on_client_final(&mut self, now: Instant, id: TxnId, status: u16, msg: Option<&Message>) {
        let Some(t) = self.client.get(&id) else {
            return;
        };
        let (call, purpose) = (t.call, t.purpose);
        if let Purpose::Probe(probe) = purpose {
            // A transaction timeout (no message) is a failed probe; any
            // response but 503 is alive.
            let outcome = match msg {
                Some(_) => ProbeOutcome::of_status(status),
                None => ProbeOutcome::Timeout,
            };
            self.health.on_probe_result(probe, outcome);
            self.emit_health_changes();
        }
        if let Purpose::Edge(p) = purpose {
            self.on_edge_final(now, p, status, msg);
        }
        self.handle_client_final(now, id, call, purpose, status, msg);
        // Settle last: settling may remove the call, and the handlers above
        // still need it (a relayed request's origin must get its answer).
        self.settle(now, id);
    }

    fn handle_client_final(
        &mut self,
        now: Instant,
        id: TxnId,
        call: Option<(CallRef, Side)>,
        purpose: Purpose,
        status: u16,
        msg: Option<&Message>,
    ) {
        let is_2xx = (200..300).contains(&status);
        let Some((c, side)) = call else {
            return;
        };
        let ending = self
            .calls
            .get(&c)
            .is_none_or(|call| call.state == CallState::Ending);
        match purpose {
            Purpose::Relay(server) if ending => {
                // The call is gone; the origin still gets an answer.
                self.respond(now, server, if is_2xx { 481 } else { status }, |_| {});
            }
            Purpose::Relay(server) => {
                let target = side.other();
                match msg {
                    Some(m) => {
                        self.relay_response_to(now, c, target, server, m, false);
                    }
                    None => self.respond(now, server, status, |_| {}),
                }
                if status == 481 || (status == 408 && msg.is_none()) {
                    // RFC 5057: the peer lost the dialog; end the call.
                    self.end_call(now, c, EndReason::PeerVanished, None);
                }
            }
            Purpose::Attempt(_) | Purpose::ReInvite if !self.calls.contains_key(&c) => {
                if let (true, Some(m)) = (is_2xx, msg) {
                    self.kill_stray_2xx(now, id, m);
                }
            }
            Purpose::ReInvite if ending => {
                if let (true, Some(m)) = (is_2xx, msg) {
                    self.kill_stray_2xx(now, id, m);
                }
            }
            Purpose::Attempt(idx) => self.on_attempt_final(now, c, idx, id, status, msg),
            Purpose::ReInvite => self.on_reinvite_final(now, c, side, status, msg),
            Purpose::Bye | Purpose::Cancel | Purpose::Probe(_) | Purpose::Edge(_) => {}
        }
    }

    fn on_attempt_final(
        &mut self,
        now: Instant,
        c: CallRef,
        idx: usize,
        txn: TxnId,
        status: u16,
        msg: Option<&Message>,
    ) {
        // A carrier's digest challenge: re-send with the trunk's credentials.
        if matches!(status, 401 | 407)
            && let Some(m) = msg
            && self.retry_invite_with_credentials(now, c, idx, status, m)
        {
            return;
        }
        let Some(call) = self.calls.get_mut(&c) else {
            return;
        };
        let Some(a) = call.attempts.get_mut(idx) else {
            return;
        };
        self.timers
            .cancel(&TimerKey::Call(c, CallTimer::MemberTimeout(idx)));
        let first_final = !a.done;
        a.done = true;
        a.responded = true;
        let abandoned = a.abandoned;
        let member = a.member;
        let is_2xx = (200..300).contains(&status);
        if is_2xx {
            let Some(m) = msg else {
                return;
            };
            let tag = m.to_tag().map(str::to_owned);
            // A 2xx Palisade cannot use: abandoned attempt, a call already
            // answered by another fork, or a call being torn down.
            let answered_tag = (call.state != CallState::Early)
                .then(|| call.b.remote_tag.clone())
                .flatten();
            if abandoned || call.state == CallState::Ending {
                self.kill_stray_2xx(now, txn, m);
                return;
            }
            if call.state != CallState::Early {
                if answered_tag == tag {
                    // Retransmission of the 2xx we accepted: ACK again.
                    if let Some((Side::B, ack)) = call.last_ack.clone() {
                        let flow = call.b.flow;
                        self.transmit(flow, ack);
                    }
                } else {
                    self.kill_stray_2xx(now, txn, m);
                }
                return;
            }
            if !first_final {
                return;
            }
            self.adopt_sent_identity(c, txn);
            self.on_answer(now, c, m);
            return;
        }
        if !first_final {
            return;
        }
        if abandoned || call.state != CallState::Early {
            self.maybe_remove_call(now, c);
            return;
        }
        let remote = call.b.flow.remote;
        if is_failover_status(status) {
            self.call_event(
                c,
                CallEventKind::Failover {
                    member: remote,
                    status: msg.map(|_| status),
                },
            );
        }
        self.next_member_or_fail(now, c, member, status);
    }

    /// The dialog on leg B keeps the From and To its answered INVITE was
    /// sent with, after the trunk's stages (number normalization, privacy):
    /// in-dialog requests then carry the same identities as the INVITE.
    fn adopt_sent_identity(&mut self, c: CallRef, txn: TxnId) {
        let Some(sent) = self.client.get(&txn).map(|t| t.request.clone()) else {
            return;
        };
        let value = |name: HeaderName| {
            sent.headers()
                .find(|h| h.name == name)
                .and_then(|h| h.value_str().ok())
                .map(str::to_owned)
        };
        let from = value(HeaderName::From);
        let to = sent.to().ok().map(|t| without_tag(&t));
        if let Some(call) = self.calls.get_mut(&c) {
            if let Some(from) = from {
                call.b.local_hdr = from;
            }
            if let Some(to) = to {
                call.b.remote_base = to;
            }
        }
    }

    /// The callee answered the initial INVITE.
    fn on_answer(&mut self, now: Instant, c: CallRef, resp: &Message) {
        let Some(call) = self.calls.get_mut(&c) else {
            return;
        };
        self.timers.cancel(&TimerKey::Call(c, CallTimer::NoAnswer));
        call.state = CallState::Answered;
        call.answered_at = Some(now);
        call.b.remote_tag = resp.to_tag().map(str::to_owned);
        if let Some(Ok(ct)) = resp.contacts().next() {
            call.b.remote_target = ct.uri_str.to_owned();
        }
        call.b.route_set = resp
            .record_routes()
            .filter_map(|r| r.ok().map(|r| format!("<{}>", r.uri_str)))
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect();
        // Abandon the other attempts (a late fork answering gets ACK+BYE).
        let others: Vec<usize> = call
            .attempts
            .iter()
            .enumerate()
            .filter(|(_, a)| !a.done && !a.abandoned)
            .map(|(i, _)| i)
            .collect();
        for i in others {
            self.cancel_attempt(now, c, i);
        }
        let Some(call) = self.calls.get(&c) else {
            return;
        };
        let offer_in_invite = call.invite.as_ref().is_some_and(|r| r.offer_in_invite);
        if offer_in_invite && let Some(cseq) = call.invite.as_ref().map(|r| r.target_cseq) {
            self.send_dialog_ack(now, c, Side::B, cseq, None);
        }
        if !self.relay_response(now, c, Side::A, resp, true) {
            return;
        }
        if let Some(call) = self.calls.get_mut(&c) {
            call.a_answered = true;
        }
        self.guard.call_answered(now, c);
        self.stats.calls_answered += 1;
        let setup_ms = self.calls.get(&c).map_or(0, |call| {
            now.saturating_duration_since(call.started_at).as_millis() as u64
        });
        self.call_event(c, CallEventKind::Answered { setup_ms });
    }

    /// Builds and sends the ACK for a 2xx on leg `side` of call `c`, with the
    /// answer `body` for a late offer.
    fn send_dialog_ack(
        &mut self,
        _now: Instant,
        c: CallRef,
        side: Side,
        cseq: u32,
        body: Option<(String, Bytes)>,
    ) {
        let branch = self.ids.branch();
        let Some(call) = self.calls.get_mut(&c) else {
            return;
        };
        let cfg = Arc::clone(&call.cfg);
        let leg = call.leg_mut(side);
        let Some(zone) = cfg.zone(leg.flow.zone) else {
            return;
        };
        let (w, _) = leg.request(
            &Method::Ack,
            zone,
            &branch,
            Some(cseq),
            &cfg.node().user_agent,
            70,
        );
        let bytes = finish_body(w, body);
        let flow = leg.flow;
        call.last_ack = Some((side, bytes.clone()));
        self.transmit(flow, bytes);
    }

    /// Answers an unusable 2xx on an attempt with ACK then BYE
    /// (RFC 3261 13.2.2.4), from the response and the request alone.
    fn kill_stray_2xx(&mut self, now: Instant, txn: TxnId, resp: &Message) {
        let Some(t) = self.client.get(&txn) else {
            return;
        };
        let req = t.request.clone();
        let flow = t.flow;
        let Some(target) = resp
            .contacts()
            .next()
            .and_then(Result::ok)
            .map(|c| c.uri_str.to_owned())
        else {
            return;
        };
        let to = resp
            .headers()
            .find(|h| h.name == HeaderName::To)
            .and_then(|h| h.value_str().ok())
            .unwrap_or_default()
            .to_owned();
        let from = req
            .headers()
            .find(|h| h.name == HeaderName::From)
            .and_then(|h| h.value_str().ok())
            .unwrap_or_default()
            .to_owned();
        let Some(zone) = self.cfg.zone(flow.zone) else {
            return;
        };
        let zone = zone.clone();
        let mut leg = Leg {
            trunk: TrunkId(0),
            flow,
            call_id: req.call_id().to_owned(),
            local_tag: String::new(),
            remote_tag: None,
            local_hdr: from,
            remote_base: to,
            remote_target: target,
            route_set: Vec::new(),
            next_cseq: req.cseq().seq.wrapping_add(1),
            remote_cseq: 0,
            contact: String::new(),
            nated: false,
        };
        let ua = self.cfg.node().user_agent.clone();
        let (ack, _) = leg.request(
            &Method::Ack,
            &zone,
            &self.ids.branch(),
            Some(req.cseq().seq),
            &ua,
            70,
        );
        self.transmit(flow, ack.finish_empty());
        let (bye, _) = leg.request(&Method::Bye, &zone, &self.ids.branch(), None, &ua, 70);
        self.send_request(now, flow, bye.finish_empty(), None, Purpose::Bye);
        self.stats.stray_answers_killed += 1;
    }

    fn cancel_attempt(&mut self, now: Instant, c: CallRef, idx: usize) {
        let Some(call) = self.calls.get_mut(&c) else {
            return;
        };
        let Some(a) = call.attempts.get_mut(idx) else {
            return;
        };
        if a.cancel_sent || a.done {
            return;
        }
        if !a.provisional {
            // RFC 3261 9.1: wait for a provisional before CANCEL.
            a.abandoned = true;
            return;
        }
        a.cancel_sent = true;
        a.abandoned = true;
        let txn = a.txn;
        self.cancel_client_invite(now, txn, c);
    }

    /// Sends the CANCEL for client INVITE `txn` if a provisional allows it
    /// (RFC 3261 9.1); without one, Timer B ends the transaction.
    fn cancel_client_invite(&mut self, now: Instant, txn: TxnId, c: CallRef) {
        let Some(t) = self.client.get_mut(&txn) else {
            return;
        };
        let side = t.call.map_or(Side::B, |(_, s)| s);
        if t.cancelled {
            return;
        }
        let ClientMachine::Invite(m) = &mut t.machine else {
            return;
        };
        if !m.has_provisional() {
            return;
        }
        t.cancelled = true;
        m.on_cancel_sent(now);
        let cancel = MessageWriter::cancel_for(&t.request);
        let flow = t.flow;
        self.drive_client(now, txn);
        self.send_request(now, flow, cancel, Some((c, side)), Purpose::Cancel);
    }

    /// Relays a response received on the other leg to the origin of the
    /// call's INVITE relay.
    fn relay_response(
        &mut self,
        now: Instant,
        c: CallRef,
        to: Side,
        resp: &Message,
        invite: bool,
    ) -> bool {
        let Some(server) = self
            .calls
            .get(&c)
            .and_then(|call| call.invite.as_ref().map(|r| r.server))
        else {
            return false;
        };
        self.relay_response_to(now, c, to, server, resp, invite)
    }

    /// Builds the response for server transaction `server` on leg `to` from
    /// a response received on the other leg.
    fn relay_response_to(
        &mut self,
        now: Instant,
        c: CallRef,
        to: Side,
        server: TxnId,
        resp: &Message,
        invite: bool,
    ) -> bool {
        let status = resp.status().unwrap_or(500);
        // SDP in the response answers the request's offer, or is the offer
        // when the request had none (late offer).
        let request_had_sdp = self
            .server
            .get(&server)
            .is_some_and(|t| t.request.has_sdp());
        let body = match self.cross_body(now, c, to.other(), resp, !request_had_sdp) {
            Ok(b) => b,
            Err(r) => {
                self.media_refused(now, c, r);
                return false;
            }
        };
        let Some(call) = self.calls.get(&c) else {
            return false;
        };
        let cfg = Arc::clone(&call.cfg);
        let leg = call.leg(to);
        let (Some(trunk), Some(zone)) = (cfg.trunk(leg.trunk), cfg.zone(leg.flow.zone)) else {
            return false;
        };
        let own = zone.sip_address;
        let contact = leg.contact.clone();
        let target_refresh = status < 300 && status > 100 && (invite || is_target_refresh(resp));
        let is_invite_2xx = invite && (200..300).contains(&status);
        let status = if status >= 300 {
            caller_status(status)
        } else {
            status
        };
        let resp_headers = resp.clone();
        let (ct, body) = match &body {
            Some((ct, b)) => (Some(ct.as_str()), Some(&b[..])),
            None => (None, None),
        };
        self.respond_with_body(
            now,
            server,
            status,
            |w| {
                if target_refresh {
                    w.header(HeaderName::Contact, &contact);
                }
                if is_invite_2xx {
                    w.header(HeaderName::Allow, ALLOW);
                }
                copy_body_headers(w, &resp_headers);
                copy_passed_headers(w, &resp_headers, trunk, own);
            },
            ct,
            body,
        );
        if is_invite_2xx {
            self.start_uas2xx(now, c, server);
        }
        true
    }

    /// The body of `msg` (received on leg `from`) as it is sent on the other
    /// leg: SDP goes through the media hook, other bodies pass unchanged.
    /// `offer` says whether SDP in `msg` is an offer (else an answer);
    /// requests decide for themselves (INVITE/UPDATE offer, ACK answers).
    fn cross_body(
        &mut self,
        now: Instant,
        c: CallRef,
        from: Side,
        msg: &Message,
        offer: bool,
    ) -> Result<Option<(String, Bytes)>, MediaRefusal> {
        let Some(ct) = msg.content_type().filter(|_| !msg.body().is_empty()) else {
            return Ok(None);
        };
        if !msg.has_sdp() {
            return Ok(Some((ct.to_owned(), Bytes::copy_from_slice(msg.body()))));
        }
        let kind = match msg.method() {
            Some(Method::Ack) => SdpKind::Answer,
            Some(_) => SdpKind::Offer,
            None if offer => SdpKind::Offer,
            None => SdpKind::Answer,
        };
        let refusal = |status, reason| MediaRefusal { status, reason };
        let Some(call) = self.calls.get(&c) else {
            return Err(refusal(481, "no-call"));
        };
        let cfg = &call.cfg;
        let (fl, tl) = (call.leg(from), call.leg(from.other()));
        let (Some(from_zone), Some(to_zone), Some(from_trunk), Some(to_trunk)) = (
            cfg.zone(fl.flow.zone),
            cfg.zone(tl.flow.zone),
            cfg.trunk(fl.trunk),
            cfg.trunk(tl.trunk),
        ) else {
            return Err(refusal(500, "config"));
        };
        let ctx = SdpContext {
            call: c,
            from,
            kind,
            early: msg.status().is_some_and(|s| s < 200),
            from_zone,
            to_zone,
            from_trunk,
            to_trunk,
            from_peer: fl.flow.remote,
            from_nated: fl.nated,
            to_nated: tl.nated,
        };
        let sdp = self.media.sdp(now, &ctx, msg.body())?;
        Ok(Some((ct.to_owned(), sdp)))
    }

    /// Media could not be set up for an SDP crossing: the call ends, and the
    /// caller (if it has no answer yet) gets the refusal's status.
    fn media_refused(&mut self, now: Instant, c: CallRef, r: MediaRefusal) {
        self.stats.media_refused += 1;
        self.end_call(now, c, EndReason::MediaRefused, Some(r.status));
    }

    /// Starts retransmitting the 2xx just sent in server transaction `server`.
    fn start_uas2xx(&mut self, now: Instant, c: CallRef, server: TxnId) {
        // The 2xx is the last transmit queued for that transaction's flow.
        let Some(t) = self.server.get(&server) else {
            return;
        };
        let flow = t.flow;
        let Some(bytes) = self
            .transmits
            .iter()
            .rev()
            .find(|tx| tx.flow == flow)
            .map(|tx| tx.data.clone())
        else {
            return;
        };
        let Some(call) = self.calls.get_mut(&c) else {
            return;
        };
        let Some(relay) = call.invite.as_mut() else {
            return;
        };
        relay.answered = true;
        // RFC 3261 13.3.1.4 retransmits the 2xx on every transport: a proxy
        // between the caller and Palisade may use UDP.
        let r = Uas2xxRetransmitter::new(now, &self.timers_cfg, bytes);
        self.timers
            .set(TimerKey::Call(c, CallTimer::Uas2xx), r.poll_timeout());
        relay.retrans = Some(r);
    }

    fn on_uas2xx_timer(&mut self, now: Instant, c: CallRef) {
        let Some(call) = self.calls.get_mut(&c) else {
            return;
        };
        let Some(origin) = call.invite.as_ref().map(|r| r.origin) else {
            return;
        };
        let flow = call.leg(origin).flow;
        let Some(relay) = call.invite.as_mut() else {
            return;
        };
        let mut out: SmallVec<[Bytes; 1]> = SmallVec::new();
        let mut gave_up = relay.retrans.is_none();
        if let Some(r) = relay.retrans.as_mut() {
            r.handle_timeout(now);
            while let Some(b) = r.poll_transmit() {
                out.push(b);
            }
            while let Some(e) = r.poll_event() {
                if e == TxnEvent::Timeout {
                    gave_up = true;
                }
            }
            self.timers
                .set(TimerKey::Call(c, CallTimer::Uas2xx), r.poll_timeout());
        }
        for b in out {
            self.transmit(flow, b);
        }
        if gave_up {
            self.timers.cancel(&TimerKey::Call(c, CallTimer::Uas2xx));
            self.end_call(now, c, EndReason::AckTimeout, None);
        }
    }

    /// An ACK outside any transaction: the ACK of a 2xx Palisade relayed.
    fn on_dialog_ack(&mut self, now: Instant, msg: Message) {
        let Some((c, side)) = self.find_dialog(&msg) else {
            self.stats.stray_acks += 1;
            return;
        };
        let Some(call) = self.calls.get_mut(&c) else {
            return;
        };
        let Some(relay) = call.invite.as_ref() else {
            return;
        };
        if relay.origin != side || !relay.answered {
            return;
        }
        let late_offer = !relay.offer_in_invite;
        let cseq = relay.target_cseq;
        let initial = call.state == CallState::Answered;
        call.invite = None;
        self.timers.cancel(&TimerKey::Call(c, CallTimer::Uas2xx));
        if initial {
            call.state = CallState::Confirmed;
        }
        if late_offer {
            // The ACK carries the answer to the 2xx's offer.
            match self.cross_body(now, c, side, &msg, false) {
                Ok(body) => self.send_dialog_ack(now, c, side.other(), cseq, body),
                Err(r) => self.media_refused(now, c, r),
            }
        }
    }

    fn on_cancel(&mut self, now: Instant, flow: Flow, msg: Message, key: ServerKey) {
        let invite_key = key.with_method(MethodClass::Invite);
        let Some(inv) = self.server_keys.get(&invite_key).copied() else {
            self.respond_stateless(flow, &msg, 481, |_| {});
            return;
        };
        let id = self.new_server_txn(now, flow, msg, key, None);
        self.respond(now, id, 200, |_| {});
        let call = self.server.get(&inv).and_then(|t| t.call);
        if let Some((c, Side::A)) = call
            && self
                .calls
                .get(&c)
                .is_some_and(|call| call.state == CallState::Early)
        {
            self.end_call(now, c, EndReason::Cancelled, Some(487));
        }
    }

    fn on_in_dialog(&mut self, now: Instant, flow: Flow, msg: Message, key: ServerKey) {
        let Some((c, side)) = self.find_dialog(&msg) else {
            self.respond_stateless(flow, &msg, 481, |_| {});
            return;
        };
        let method = msg.method().cloned().unwrap_or(Method::Options);
        let Some(call) = self.calls.get_mut(&c) else {
            self.respond_stateless(flow, &msg, 481, |_| {});
            return;
        };
        let tag = call.leg(side).local_tag.clone();
        let state = call.state;
        let seq = msg.cseq().seq;
        let stale =
            seq <= call.leg(side).remote_cseq && call.leg(side).remote_cseq != 0 && side == Side::B
                || (side == Side::A && seq <= call.a.remote_cseq && method != Method::Ack);
        if !stale {
            call.leg_mut(side).remote_cseq = seq;
        }
        let id = self.new_server_txn(now, flow, msg, key, Some((c, side, tag)));
        if stale {
            // RFC 3261 12.2.2: lower CSeq than the last one → 500.
            self.respond(now, id, 500, |_| {});
            return;
        }
        match method {
            Method::Bye => {
                self.respond(now, id, 200, |_| {});
                let reason = if side == Side::A {
                    EndReason::CallerBye
                } else {
                    EndReason::CalleeBye
                };
                let status = if state == CallState::Early {
                    Some(487)
                } else {
                    None
                };
                self.end_call(now, c, reason, status);
            }
            Method::Invite => self.on_reinvite(now, c, side, id),
            Method::Prack | Method::Refer => {
                // Reliable provisionals and transfers are not relayed yet.
                self.respond(now, id, 501, |w| {
                    w.header(HeaderName::Allow, ALLOW);
                });
            }
            _ => self.relay_request(now, c, side, id),
        }
    }

    fn on_reinvite(&mut self, now: Instant, c: CallRef, side: Side, server: TxnId) {
        let Some(call) = self.calls.get(&c) else {
            return;
        };
        if call.state != CallState::Confirmed || call.invite.is_some() {
            // Glare or an INVITE before the ACK: RFC 3261 14.2.
            self.respond(now, server, 491, |_| {});
            return;
        }
        let Some(req) = self.server.get(&server).map(|t| t.request.clone()) else {
            return;
        };
        if let Some(Ok(ct)) = req.contacts().next() {
            let target = ct.uri_str.to_owned();
            if let Some(call) = self.calls.get_mut(&c) {
                call.leg_mut(side).remote_target = target;
            }
        }
        self.respond(now, server, 100, |_| {});
        let target = side.other();
        let (bytes, flow, seq) = match self.build_relayed_request(now, c, target, &req, true) {
            Ok(r) => r,
            Err(status) => {
                self.respond(now, server, status, |_| {});
                return;
            }
        };
        if let Some(call) = self.calls.get_mut(&c) {
            call.invite = Some(InviteRelay {
                origin: side,
                server,
                client: None,
                offer_in_invite: req.has_sdp(),
                target_cseq: seq,
                answered: false,
                retrans: None,
            });
        }
        let client = self.send_request(now, flow, bytes, Some((c, target)), Purpose::ReInvite);
        if let Some(call) = self.calls.get_mut(&c)
            && let Some(r) = call.invite.as_mut()
        {
            r.client = client;
        }
        self.timers.set(
            TimerKey::Call(c, CallTimer::ReInvite),
            Some(now + self.timers_cfg.t1 * 64),
        );
    }

    fn on_reinvite_final(
        &mut self,
        now: Instant,
        c: CallRef,
        target: Side,
        status: u16,
        msg: Option<&Message>,
    ) {
        let Some(call) = self.calls.get_mut(&c) else {
            return;
        };
        let Some(relay) = call.invite.as_ref() else {
            // Retransmitted 2xx of a re-INVITE already ACKed: ACK again.
            if (200..300).contains(&status)
                && let Some((s, ack)) = call.last_ack.clone()
                && s == target
            {
                let flow = call.leg(target).flow;
                self.transmit(flow, ack);
            }
            return;
        };
        if relay.answered {
            if (200..300).contains(&status)
                && let Some((s, ack)) = call.last_ack.clone()
                && s == target
            {
                let flow = call.leg(target).flow;
                self.transmit(flow, ack);
            }
            return;
        }
        let server = relay.server;
        let offer_in_invite = relay.offer_in_invite;
        let cseq = relay.target_cseq;
        match msg {
            Some(m) if (200..300).contains(&status) => {
                if let Some(Ok(ct)) = m.contacts().next() {
                    call.leg_mut(target).remote_target = ct.uri_str.to_owned();
                }
                if offer_in_invite {
                    self.send_dialog_ack(now, c, target, cseq, None);
                }
                self.relay_response_to(now, c, target.other(), server, m, true);
            }
            Some(m) => {
                call.invite = None;
                self.relay_response_to(now, c, target.other(), server, m, true);
                if status == 481 || status == 408 {
                    self.end_call(now, c, EndReason::PeerVanished, None);
                }
            }
            None => {
                call.invite = None;
                self.respond(now, server, 408, |_| {});
                self.end_call(now, c, EndReason::PeerVanished, None);
            }
        }
    }

    /// Relays a non-INVITE in-dialog request (INFO, UPDATE, MESSAGE,
    /// NOTIFY, unknown methods) to the other leg.
    fn relay_request(&mut self, now: Instant, c: CallRef, side: Side, server: TxnId) {
        let Some(req) = self.server.get(&server).map(|t| t.request.clone()) else {
            return;
        };
        let target = side.other();
        let ready = self.calls.get(&c).is_some_and(|call| {
            call.leg(target).remote_tag.is_some() && call.state != CallState::Ending
        });
        if !ready {
            self.respond(now, server, 481, |_| {});
            return;
        }
        if is_target_refresh(&req)
            && let Some(Ok(ct)) = req.contacts().next()
        {
            let t = ct.uri_str.to_owned();
            if let Some(call) = self.calls.get_mut(&c) {
                call.leg_mut(side).remote_target = t;
            }
        }
        let refresh = is_target_refresh(&req);
        let (bytes, flow, _) = match self.build_relayed_request(now, c, target, &req, refresh) {
            Ok(r) => r,
            Err(status) => {
                self.respond(now, server, status, |_| {});
                return;
            }
        };
        self.send_request(now, flow, bytes, Some((c, target)), Purpose::Relay(server));
    }

    /// Builds `req` (received on the other leg) as an in-dialog request on
    /// leg `target`: Palisade's own dialog identifiers, the body, and only
    /// the headers policy lets through.
    fn build_relayed_request(
        &mut self,
        now: Instant,
        c: CallRef,
        target: Side,
        req: &Message,
        with_contact: bool,
    ) -> Result<(Bytes, Flow, u32), u16> {
        // A refused re-offer leaves the session as it was (RFC 3261 14.2):
        // the sender gets the refusal, the call goes on.
        let body = self
            .cross_body(now, c, target.other(), req, true)
            .map_err(|r| {
                self.stats.media_refused += 1;
                r.status
            })?;
        let branch = self.ids.branch();
        let call = self.calls.get_mut(&c).ok_or(481u16)?;
        let cfg = Arc::clone(&call.cfg);
        let method = req.method().ok_or(500u16)?.clone();
        let leg = call.leg_mut(target);
        let zone = cfg.zone(leg.flow.zone).ok_or(500u16)?;
        let trunk = cfg.trunk(leg.trunk).ok_or(500u16)?;
        let (mut w, seq) = leg.request(&method, zone, &branch, None, &cfg.node().user_agent, 70);
        if with_contact || method == Method::Invite {
            w.header(HeaderName::Contact, &leg.contact);
        }
        if method == Method::Invite {
            w.header(HeaderName::Allow, ALLOW);
        }
        copy_body_headers(&mut w, req);
        copy_passed_headers(&mut w, req, trunk, zone.sip_address);
        Ok((finish_body(w, body), leg.flow, seq))
    }

    /// Ends call `c`. Each leg is closed according to what it got: a leg
    /// A that has no 2xx yet gets a final response (`status`, 480 by
    /// default; 487 for a pending re-INVITE), a confirmed leg A gets a BYE;
    /// B attempts still ringing are cancelled and an answered leg B gets a
    /// BYE. The leg whose BYE caused this is not BYEd back.
    fn end_call(&mut self, now: Instant, c: CallRef, reason: EndReason, status: Option<u16>) {
        let Some(call) = self.calls.get_mut(&c) else {
            return;
        };
        if call.state == CallState::Ending {
            return;
        }
        call.state = CallState::Ending;
        call.end_reason = Some(reason);
        if reason == EndReason::Cancelled {
            call.cancelled = true;
        }
        let (a_answered, b_answered) = (call.a_answered, call.answered_at.is_some());
        for t in [CallTimer::NoAnswer, CallTimer::Uas2xx, CallTimer::ReInvite] {
            self.timers.cancel(&TimerKey::Call(c, t));
        }
        let relay = call.invite.take();
        let attempts: Vec<usize> = (0..call.attempts.len()).collect();
        for i in &attempts {
            self.timers
                .cancel(&TimerKey::Call(c, CallTimer::MemberTimeout(*i)));
        }
        self.media.release(now, c);
        self.edge_call_ended(c);
        // A pending INVITE (initial or re-INVITE) gets its final; a
        // re-INVITE still pending on the other leg is cancelled.
        if let Some(client) = relay.as_ref().and_then(|r| r.client) {
            self.cancel_client_invite(now, client, c);
        }
        if let Some(r) = relay
            && !r.answered
        {
            let s = if a_answered {
                487
            } else {
                status.unwrap_or(480)
            };
            self.respond(now, r.server, s, |_| {});
            if !a_answered && let Some(call) = self.calls.get_mut(&c) {
                call.final_status = Some(s);
            }
        }
        if a_answered && reason != EndReason::CallerBye {
            self.send_bye(now, c, Side::A);
        }
        for i in attempts {
            self.cancel_attempt(now, c, i);
        }
        if b_answered && reason != EndReason::CalleeBye {
            self.send_bye(now, c, Side::B);
        }
        let Some(call) = self.calls.get(&c) else {
            return;
        };
        let duration = call
            .answered_at
            .filter(|_| a_answered)
            .map_or(Duration::ZERO, |a| now.saturating_duration_since(a));
        let final_status = if a_answered {
            None
        } else {
            call.final_status.or(status)
        };
        self.stats.calls_ended += 1;
        self.guard.call_ended(
            now,
            c,
            &CallEnd {
                reason,
                status: final_status,
                answered: a_answered,
                duration,
            },
        );
        self.call_event(
            c,
            CallEventKind::Ended {
                reason,
                status: final_status,
                duration_ms: duration.as_millis() as u64,
            },
        );
        self.maybe_remove_call(now, c);
    }

    /// The media relay closed call `call`'s sessions and measured `streams`:
    /// emitted as the call's [`CallEventKind::MediaStats`] event, with the
    /// same call reference as its other events. The call itself has usually
    /// ended already (its media closes when it ends).
    pub fn media_stats(&mut self, call: CallRef, streams: Vec<crate::StreamQuality>) {
        if streams.is_empty() {
            return;
        }
        self.call_event(call, CallEventKind::MediaStats { streams });
    }

    /// Ends a call from outside the engine (media timeout, fraud rule,
    /// operator). Returns whether the call existed and was not ending yet.
    pub fn terminate_call(&mut self, now: Instant, call: CallRef, reason: EndReason) -> bool {
        let live = self
            .calls
            .get(&call)
            .is_some_and(|c| c.state != CallState::Ending);
        if live {
            self.end_call(now, call, reason, Some(503));
        }
        live
    }

    fn send_bye(&mut self, now: Instant, c: CallRef, side: Side) {
        let branch = self.ids.branch();
        let Some(call) = self.calls.get_mut(&c) else {
            return;
        };
        let cfg = Arc::clone(&call.cfg);
        let leg = call.leg_mut(side);
        if leg.remote_tag.is_none() {
            return;
        }
        let Some(zone) = cfg.zone(leg.flow.zone) else {
            return;
        };
        let (w, _) = leg.request(
            &Method::Bye,
            zone,
            &branch,
            None,
            &cfg.node().user_agent,
            70,
        );
        let flow = leg.flow;
        self.send_request(now, flow, w.finish_empty(), Some((c, side)), Purpose::Bye);
    }

    /// Drops an ended call once no transaction of its legs awaits an answer.
    fn maybe_remove_call(&mut self, _now: Instant, c: CallRef) {
        let Some(call) = self.calls.get(&c) else {
            return;
        };
        if call.state != CallState::Ending || call.outstanding > 0 {
            return;
        }
        let (acid, atag) = (call.a.call_id.clone(), call.a.local_tag.clone());
        let (bcid, btag) = (call.b.call_id.clone(), call.b.local_tag.clone());
        self.unregister_dialog(&acid, &atag);
        self.unregister_dialog(&bcid, &btag);
        self.calls.remove(&c);
    }
}

/// Moves a machine's pending transmits and events out; returns its next deadline.
fn drain<M: Machine>(
    m: &mut M,
    out: &mut SmallVec<[Bytes; 2]>,
    events: &mut SmallVec<[TxnEvent; 2]>,
) -> Option<Instant> {
    while let Some(b) = m.poll_transmit() {
        out.push(b);
    }
    while let Some(e) = m.poll_event() {
        events.push(e);
    }
    m.poll_timeout()
}

/// Our Contact value on a zone for a transport.
fn contact_value(zone: &palisade_config::Zone, transport: Transport) -> String {
    format!(
        "<sip:{}:{};transport={}>",
        host_str(zone.sip_address),
        zone_port(zone, transport),
        transport.uri_param()
    )
}

/// A name-addr written back without its `tag` parameter.
fn without_tag(na: &palisade_sip::NameAddr<'_>) -> String {
    let mut out = String::with_capacity(na.uri_str.len() + 32);
    if let Some(d) = na.display {
        out.push_str(d);
        out.push(' ');
    }
    out.push('<');
    out.push_str(na.uri_str);
    out.push('>');
    for (name, value) in na
        .params
        .iter()
        .filter(|(n, _)| !n.eq_ignore_ascii_case("tag"))
    {
        out.push(';');
        out.push_str(name);
        if let Some(v) = value {
            out.push('=');
            out.push_str(v);
        }
    }
    out
}

/// Requests whose Contact refreshes the remote target (RFC 3261 12.2 and RFC 3311).
fn is_target_refresh(msg: &Message) -> bool {
    matches!(
        msg.method().cloned().unwrap_or(msg.cseq().method.clone()),
        Method::Invite | Method::Update
    )
}

/// Copies the headers `trunk` lets cross from `src` (its `pass_headers`).
/// Identity headers (RFC 3325 and the pre-standard Remote-Party-ID) carry a
/// URI whose host is the sending side's. When a trunk lets one cross, the
/// user part crosses and the host becomes Palisade's own address on the
/// leg it is sent on, as the From host does: the other side learns the
/// identity, not the network it came from.
const IDENTITY_HEADERS: [&str; 3] = [
    "P-Asserted-Identity",
    "P-Preferred-Identity",
    "Remote-Party-ID",
];

/// Copies the headers `trunk.pass_headers` lets through; identity headers
/// get `own` (Palisade's address toward that trunk) as their host.
fn copy_passed_headers(
    w: &mut MessageWriter,
    src: &Message,
    trunk: &palisade_config::Trunk,
    own: std::net::IpAddr,
) {
    if trunk.pass_headers.is_empty() {
        return;
    }
    let own_host = host_str(own);
    for h in src.headers() {
        let Ok(name) = std::str::from_utf8(h.raw_name) else {
            continue;
        };
        if !trunk.passes_header(name) {
            continue;
        }
        if IDENTITY_HEADERS.iter().any(|n| h.is_named(n)) {
            // A value that does not parse is not copied: it could carry
            // anything of the other side.
            if let Some(v) = std::str::from_utf8(h.value)
                .ok()
                .and_then(|v| rehost_identity(v, &own_host))
            {
                w.header_named(name, v.as_bytes());
            }
            continue;
        }
        w.copy_line(h.line);
    }
}

/// Where `inner` (a subslice of `outer`) starts in `outer`.
fn offset_in(outer: &str, inner: &str) -> Option<usize> {
    let start = (inner.as_ptr() as usize).checked_sub(outer.as_ptr() as usize)?;
    (start + inner.len() <= outer.len()).then_some(start)
}

/// The identity header value `value` with the host (and port) of every SIP
/// URI in it replaced by `own_host`; TEL URIs unchanged. `None` when a
/// value does not parse.
fn rehost_identity(value: &str, own_host: &str) -> Option<String> {
    let mut out = String::with_capacity(value.len() + own_host.len());
    for (i, part) in palisade_sip::split_list(value).enumerate() {
        let part = part.trim();
        let na = palisade_sip::NameAddr::parse(part).ok()?;
        if i > 0 {
            out.push_str(", ");
        }
        let Some(sip) = na.uri.as_sip() else {
            out.push_str(part);
            continue;
        };
        let uri_at = offset_in(part, na.uri_str)?;
        let host_at = offset_in(na.uri_str, sip.host_raw)?;
        let mut host_end = host_at + sip.host_raw.len();
        let rest = &na.uri_str[host_end..];
        if let Some(port) = rest.strip_prefix(':') {
            host_end += 1 + port.bytes().take_while(u8::is_ascii_digit).count();
        }
        out.push_str(&part[..uri_at]);
        out.push_str(&na.uri_str[..host_at]);
        out.push_str(own_host);
        out.push_str(&na.uri_str[host_end..]);
        out.push_str(&part[uri_at + na.uri_str.len()..]);
    }
    (!out.is_empty()).then_some(out)
}

fn copy_body_headers(w: &mut MessageWriter, src: &Message) {
    if src.body().is_empty() {
        return;
    }
    for h in src.headers() {
        if BODY_HEADERS.contains(&h.name) || h.is_named("Info-Package") || h.is_named("Recv-Info") {
            w.copy_line(h.line);
        }
    }
}

/// Finishes a message with a body already prepared for its leg.
fn finish_body(w: MessageWriter, body: Option<(String, Bytes)>) -> Bytes {
    match body {
        Some((ct, b)) => w.finish(Some(&ct), &b),
        None => w.finish_empty(),
    }
}

#[cfg(test)]
mod identity_tests {
    use super::rehost_identity;

    #[test]
    fn identity_hosts_become_ours_and_the_rest_is_kept() {
        let v = "\"Reception\" <sip:+4989555000@pbx1.corp.example:5070;user=phone>;x=1, <tel:+4989555000>";
        assert_eq!(
            rehost_identity(v, "127.0.0.2").as_deref(),
            Some("\"Reception\" <sip:+4989555000@127.0.0.2;user=phone>;x=1, <tel:+4989555000>")
        );
        assert_eq!(
            rehost_identity("sip:alice@10.0.0.7", "[2001:db8::1]").as_deref(),
            Some("sip:alice@[2001:db8::1]")
        );
        assert_eq!(
            rehost_identity("<sip:@", "127.0.0.2"),
            None,
            "unparseable: not copied"
        );
    }
}
