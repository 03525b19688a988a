//! Edge state of the engine (issue 4): what the registrar, digest
//! authentication, outbound registration, keepalives and call admission
//! keep between messages, the one timer that drives them, the events the
//! binary logs and persists, and the per-member up/down API.
//!
//! Everything is keyed by names and addresses, never by `TrunkId`, so a
//! SIGHUP reload (which may renumber trunks) only needs [`Engine::sync_edge`].

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Instant;

use palisade_digest::NonceIssuer;
use palisade_nat::KeepaliveSchedule;
use palisade_registrar::{Binding, Bindings, OutboundRegistration};

use super::{Engine, TimerKey};
use crate::Flow;
use crate::ids::IdGen;

/// Most keepalive targets (trunk members plus NATed flows).
const MAX_KEEPALIVE_TARGETS: usize = 100_000;
/// Most nonces whose counts are remembered (replay protection).
pub(super) const MAX_TRACKED_NONCES: usize = 65_536;

/// What a client transaction the edge started is for (an index into the
/// edge's tables, so `Purpose` stays `Copy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum EdgePurpose {
    /// An outbound REGISTER of registration `id`.
    Register(u32),
    /// An OPTIONS keepalive toward a flow.
    Keepalive(u32),
}

/// Something the edge did, for logs and the binding store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EdgeEvent {
    /// A binding was added or refreshed (persist it).
    BindingSaved(Binding),
    /// A binding was removed: unregistered or expired (delete it).
    BindingRemoved {
        /// The user.
        user: String,
        /// The contact URI.
        contact: String,
    },
    /// An outbound registration went up or down.
    Registration {
        /// The trunk.
        trunk: String,
        /// Registered now.
        up: bool,
        /// The final status that decided it (408 for no answer).
        status: u16,
    },
    /// A trunk member's keepalive state changed.
    MemberHealth {
        /// The trunk.
        trunk: String,
        /// The member.
        member: SocketAddr,
        /// Answering.
        up: bool,
    },
    /// Digest credentials failed (wrong password, unknown user, forged
    /// nonce). The user name only: credentials are never reported.
    AuthFailed {
        /// Where from.
        flow: Flow,
        /// The user claimed.
        user: String,
    },
}

/// Edge counters since start (gauges noted).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EdgeStats {
    /// REGISTERs that changed or queried bindings (200).
    pub registers_accepted: u64,
    /// 401/407 challenges sent (REGISTER and INVITE).
    pub challenges_sent: u64,
    /// Credentials that failed.
    pub auth_failures: u64,
    /// REGISTERs refused (423, 403, 500, 503...).
    pub registers_refused: u64,
    /// Gauge: bindings held.
    pub bindings: u64,
    /// INVITEs re-sent with credentials after a carrier's 401/407.
    pub outbound_auth_retries: u64,
    /// Outbound REGISTERs sent.
    pub registers_sent: u64,
    /// Calls refused because the destination trunk is down (unregistered, no member up).
    pub trunk_down_rejected: u64,
    /// Calls to a registered user with no live binding (480).
    pub not_registered_rejected: u64,
    /// Calls refused over a concurrent-calls limit.
    pub cac_rejected_concurrent: u64,
    /// Calls refused over a calls-per-second limit.
    pub cac_rejected_cps: u64,
    /// REGISTERs refused over a registrations limit.
    pub cac_rejected_registrations: u64,
    /// Emergency calls admitted past a limit.
    pub cac_emergency_exempted: u64,
    /// OPTIONS keepalives sent.
    pub keepalive_options_sent: u64,
    /// CRLF keepalives sent.
    pub keepalive_crlf_sent: u64,
    /// Keepalives that got no answer.
    pub keepalive_misses: u64,
    /// Bindings restored from the store at start.
    pub bindings_restored: u64,
    /// Calls whose caller was detected behind a NAT (initial INVITE).
    pub nated_calls: u64,
}

/// One outbound registration.
#[derive(Debug)]
pub(super) struct OutReg {
    pub trunk: String,
    pub machine: OutboundRegistration,
    pub call_id: String,
    pub from_tag: String,
    pub flow: Flow,
    /// Registered at the last check (for up/down events).
    pub was_up: bool,
}

/// A keepalive target: a trunk member, or a NATed registration's flow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum KaTarget {
    Member { trunk: String },
    Binding,
}

/// The edge's state inside the engine.
#[derive(Debug)]
pub(super) struct EdgeState {
    pub bindings: Bindings,
    pub nonces: NonceIssuer,
    /// Origin of nonce time (first use).
    pub epoch: Option<Instant>,
    /// Highest nonce count seen per nonce (bounded).
    pub nonce_counts: HashMap<String, u32>,
    pub regs: HashMap<u32, OutReg>,
    pub next_id: u32,
    pub keepalive: KeepaliveSchedule<Flow>,
    pub ka_targets: HashMap<Flow, KaTarget>,
    /// OPTIONS keepalives in flight: id → flow.
    pub ka_pending: HashMap<u32, Flow>,
    /// Per (trunk, member): answering. Absent = up (never probed or no keepalive).
    pub member_up: HashMap<(String, SocketAddr), bool>,
    /// Calls delivered to a registered binding: call → (flow, contact URI).
    pub registered_targets: HashMap<crate::CallRef, (Flow, String)>,
    /// Credentials header for the next INVITE attempt of a call (a carrier's 401/407).
    pub pending_auth: HashMap<crate::CallRef, (palisade_sip::HeaderName, String)>,
    pub cac: super::cac::Cac,
    pub events: std::collections::VecDeque<EdgeEvent>,
    pub stats: EdgeStats,
    /// `sync_edge` has run at least once since the last reload.
    pub synced: bool,
}

impl EdgeState {
    pub fn new(ids: &mut IdGen, max_bindings: usize, nonce_lifetime: u64) -> Self {
        let mut key = [0u8; 32];
        ids.fill(&mut key);
        EdgeState {
            bindings: Bindings::new(max_bindings),
            nonces: NonceIssuer::new(key, nonce_lifetime),
            epoch: None,
            nonce_counts: HashMap::new(),
            regs: HashMap::new(),
            next_id: 1,
            keepalive: KeepaliveSchedule::new(MAX_KEEPALIVE_TARGETS),
            ka_targets: HashMap::new(),
            ka_pending: HashMap::new(),
            member_up: HashMap::new(),
            registered_targets: HashMap::new(),
            pending_auth: HashMap::new(),
            cac: super::cac::Cac::default(),
            events: std::collections::VecDeque::new(),
            stats: EdgeStats::default(),
            synced: false,
        }
    }

    pub fn next_id(&mut self) -> u32 {
        self.next_id = self.next_id.wrapping_add(1).max(1);
        self.next_id
    }

    /// Seconds since the nonce epoch.
    pub fn nonce_secs(&mut self, now: Instant) -> u64 {
        let epoch = *self.epoch.get_or_insert(now);
        now.saturating_duration_since(epoch).as_secs()
    }

    pub fn emit(&mut self, e: EdgeEvent) {
        if self.events.len() < super::MAX_QUEUED_EVENTS {
            self.events.push_back(e);
        }
    }
}

impl Engine {
    /// Brings the edge in line with the configuration: creates or drops
    /// outbound registrations and trunk keepalives, and arms the edge
    /// timer. The binary calls it once at start and after every reload;
    /// message handling calls it too when it has not run since a reload.
    pub fn sync_edge(&mut self, now: Instant) {
        self.edge.synced = true;
        let cfg = std::sync::Arc::clone(&self.cfg);
        // Outbound registrations, by trunk name.
        let wanted: Vec<&palisade_config::Trunk> = cfg
            .trunks()
            .iter()
            .filter(|t| t.registration.is_some() && t.auth.is_some())
            .collect();
        self.edge
            .regs
            .retain(|_, r| wanted.iter().any(|t| t.name == r.trunk));
        for t in wanted {
            if self.edge.regs.values().any(|r| r.trunk == t.name) {
                continue;
            }
            self.start_registration(now, t);
        }
        // Trunk member keepalives.
        let mut members: HashMap<Flow, (String, palisade_config::Keepalive)> = HashMap::new();
        for t in cfg.trunks() {
            let Some(k) = t.keepalive else { continue };
            for m in &t.members {
                let flow = Flow {
                    zone: t.zone,
                    transport: m.transport,
                    remote: m.socket_addr(),
                };
                members.insert(flow, (t.name.clone(), k));
            }
        }
        let targets = &mut self.edge.ka_targets;
        let schedule = &mut self.edge.keepalive;
        targets.retain(|flow, t| match t {
            KaTarget::Member { .. } => {
                let keep = members.contains_key(flow);
                if !keep {
                    schedule.remove(flow);
                }
                keep
            }
            KaTarget::Binding => true,
        });
        self.edge.member_up.retain(|(trunk, addr), _| {
            members.values().any(|(t, _)| t == trunk) && members.keys().any(|f| f.remote == *addr)
        });
        for (flow, (trunk, k)) in members {
            let method = ka_method(k.method);
            if self.edge.keepalive.set(flow, method, k.interval, now) {
                self.edge
                    .ka_targets
                    .insert(flow, KaTarget::Member { trunk });
            }
        }
        self.arm_edge_timer(now);
    }

    /// Re-arms the edge timer at the earliest edge deadline.
    pub(super) fn arm_edge_timer(&mut self, _now: Instant) {
        let mut next = self.edge.keepalive.poll_timeout();
        let mut consider = |t: Option<Instant>| {
            if let Some(t) = t {
                next = Some(next.map_or(t, |n: Instant| n.min(t)));
            }
        };
        consider(self.edge.bindings.next_expiry());
        for r in self.edge.regs.values() {
            consider(r.machine.poll_timeout());
        }
        self.timers.set(TimerKey::Edge, next);
    }

    /// The edge timer fired.
    pub(super) fn on_edge_timer(&mut self, now: Instant) {
        // Expired bindings.
        for ch in self.edge.bindings.expire(now) {
            self.binding_change(now, ch);
        }
        self.registration_timers(now);
        self.keepalive_timers(now);
        self.arm_edge_timer(now);
    }

    /// A client transaction of the edge got its final answer (`msg` is
    /// `None` on timeout or transport error).
    pub(super) fn on_edge_final(
        &mut self,
        now: Instant,
        p: EdgePurpose,
        status: u16,
        msg: Option<&palisade_sip::Message>,
    ) {
        match p {
            EdgePurpose::Register(id) => self.on_register_final(now, id, status, msg),
            EdgePurpose::Keepalive(id) => self.on_keepalive_final(now, id, msg.is_some()),
        }
        self.arm_edge_timer(now);
    }

    /// Next edge event (binding changes, registrations, health, auth failures).
    pub fn poll_edge_event(&mut self) -> Option<EdgeEvent> {
        self.edge.events.pop_front()
    }

    /// Edge counters since start.
    pub fn edge_stats(&self) -> EdgeStats {
        EdgeStats {
            bindings: self.edge.bindings.len() as u64,
            ..self.edge.stats
        }
    }

    /// Whether member `member` of trunk `trunk` answers its keepalives.
    /// Members without keepalives (or not probed yet) count as up. The one
    /// per-member health API: keepalives write it through
    /// [`Engine::set_member_up`], and so may any other prober (DNS/OPTIONS
    /// health checks); routing reads it.
    pub fn member_up(&self, trunk: &str, member: SocketAddr) -> bool {
        self.edge
            .member_up
            .get(&(trunk.to_owned(), member))
            .copied()
            .unwrap_or(true)
    }

    /// Records member health (from keepalives or another prober); emits a
    /// [`EdgeEvent::MemberHealth`] on a change.
    pub fn set_member_up(&mut self, trunk: &str, member: SocketAddr, up: bool) {
        let key = (trunk.to_owned(), member);
        let was = self.edge.member_up.insert(key, up).unwrap_or(true);
        if was != up {
            self.edge.emit(EdgeEvent::MemberHealth {
                trunk: trunk.to_owned(),
                member,
                up,
            });
        }
    }

    /// Whether calls may be routed to `trunk` now: its outbound
    /// registration (if any) is up, and at least one `address:` member is
    /// up by its keepalives (a trunk of `host:` members only is judged by
    /// its DNS targets' health probes instead, in the call's plan).
    pub fn trunk_available(&self, now: Instant, trunk: &palisade_config::Trunk) -> bool {
        let registered = self
            .edge
            .regs
            .values()
            .find(|r| r.trunk == trunk.name)
            .is_none_or(|r| r.machine.is_registered(now));
        registered
            && (trunk.members.is_empty()
                || trunk
                    .members
                    .iter()
                    .any(|m| self.member_up(&trunk.name, m.socket_addr())))
    }

    /// Whether the outbound registration of trunk `name` is up (`None`:
    /// the trunk does not register).
    pub fn registration_up(&self, now: Instant, name: &str) -> Option<bool> {
        self.edge
            .regs
            .values()
            .find(|r| r.trunk == name)
            .map(|r| r.machine.is_registered(now))
    }
}

pub(super) fn ka_method(m: palisade_config::KeepaliveMethod) -> palisade_nat::KeepaliveMethod {
    match m {
        palisade_config::KeepaliveMethod::Options => palisade_nat::KeepaliveMethod::Options,
        palisade_config::KeepaliveMethod::Crlf => palisade_nat::KeepaliveMethod::Crlf,
    }
}
