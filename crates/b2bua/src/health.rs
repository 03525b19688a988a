//! Trunk targets and their health: what a new call to a trunk tries, in
//! which order, and SIP OPTIONS probes that take silent targets out of that
//! order.
//!
//! A *target* is one concrete place to send an INVITE: an address, a port
//! and a transport. A member given by IP is one target. A member given by
//! DNS name (`host:`) expands into every address of every SRV target, in
//! RFC 3263 order; the binary's resolver computes that list (this crate does
//! no I/O) and installs it with [`crate::Engine::set_trunk_targets`]. Until a
//! trunk with DNS members has its first list, calls to it are refused with
//! 503 and Retry-After rather than waiting.
//!
//! Health, per trunk with `health.probe: options`: every target gets an
//! OPTIONS every `interval`; one without a response within `timeout`, or
//! answered 503, failed. Any other response (2xx to 6xx) means the target is
//! alive: a peer that answers is reachable, and a 404 or 403 to an OPTIONS is
//! a policy, not an outage (the rule Microsoft Teams Direct Routing applies).
//! `down_after` consecutive failures mark an up target down; `up_after`
//! consecutive answers mark a down target up (hysteresis). Down targets keep
//! being probed at the same interval. Routing skips down targets; when every
//! target of a trunk is down, all are tried in order anyway (a carrier that
//! ignores OPTIONS must not lose all calls), as commercial SBCs do.
//!
//! The API the engine uses is small: [`Health::plan`] (targets for a new
//! call), [`Health::poll`] (probes due and probes timed out at `now`),
//! [`Health::on_probe_result`], [`Health::next_deadline`], and
//! [`Health::set_targets`] / [`Health::reload`].

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Instant;

use bytes::Bytes;
use palisade_config::{
    Config, Destination, Health as HealthCfg, Member, Probe, Trunk, Zone, ZoneId,
};
use palisade_sip::{HeaderName, MessageWriter, Method, Transport};

use crate::TxnId;
use crate::call::{host_str, zone_port};

/// Most targets one trunk expands into; the rest of a DNS answer is dropped
/// (and counted), so a hostile zone cannot make a call walk thousands.
pub const MAX_TARGETS_PER_TRUNK: usize = 32;

/// One concrete destination for a call attempt or a probe.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Target {
    /// Where to send.
    pub addr: SocketAddr,
    /// How.
    pub transport: Transport,
    /// Host part of the Request-URI and To for this target: `ip:port` for an
    /// IP member, the configured name (with `:port` when explicit) for a DNS
    /// member (RFC 3263: the URI keeps the domain, the packet goes to the address).
    pub uri_host: String,
    /// Index of the configured member (`trunks[].members[i]`) it comes from.
    pub member: usize,
}

impl Target {
    /// The single target of a member given by IP.
    pub fn from_member(m: &Member, index: usize) -> Target {
        Target {
            addr: m.socket_addr(),
            transport: m.transport,
            uri_host: format!("{}:{}", host_str(m.address), m.port),
            member: index,
        }
    }

    fn key(&self) -> (SocketAddr, Transport) {
        (self.addr, self.transport)
    }
}

/// Health of one target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TargetState {
    /// Taking calls (also: never probed, or probing off).
    Up,
    /// Failed `down_after` probes in a row; skipped by routing.
    Down,
}

impl TargetState {
    /// Stable name for logs and metrics labels.
    pub fn as_str(self) -> &'static str {
        match self {
            TargetState::Up => "up",
            TargetState::Down => "down",
        }
    }
}

/// Why a probe counted as failed or answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProbeOutcome {
    /// Any response but 503.
    Answered,
    /// 503 Service Unavailable.
    Unavailable,
    /// No response within `timeout_ms` (or the transaction timed out).
    Timeout,
}

impl ProbeOutcome {
    /// Stable name for logs and metrics labels.
    pub fn as_str(self) -> &'static str {
        match self {
            ProbeOutcome::Answered => "answered",
            ProbeOutcome::Unavailable => "503",
            ProbeOutcome::Timeout => "timeout",
        }
    }

    /// The rule: any response except 503 is alive.
    pub fn of_status(status: u16) -> ProbeOutcome {
        if status == 503 {
            ProbeOutcome::Unavailable
        } else {
            ProbeOutcome::Answered
        }
    }

    fn alive(self) -> bool {
        self == ProbeOutcome::Answered
    }
}

/// A target changed state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthChange {
    /// Trunk name.
    pub trunk: String,
    /// The target.
    pub target: Target,
    /// Its new state.
    pub state: TargetState,
    /// The probe outcome that tipped it.
    pub outcome: ProbeOutcome,
}

/// A target's state and counters, for metrics (`Engine::target_status`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetStatus {
    /// Trunk name.
    pub trunk: String,
    /// The target.
    pub target: Target,
    /// Current state.
    pub state: TargetState,
    /// Probes sent to it.
    pub probes_sent: u64,
    /// Probes that failed (timeout or 503).
    pub probes_failed: u64,
}

/// A probe to send now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ProbeSend {
    pub id: u64,
    pub zone: ZoneId,
    pub target: Target,
}

/// What [`Health::poll`] asks of the engine.
#[derive(Debug, Default)]
pub(crate) struct PollOutput {
    /// Probes to send.
    pub send: Vec<ProbeSend>,
    /// Transactions of probes that timed out: the engine drops them.
    pub abandon: Vec<TxnId>,
}

#[derive(Debug, Clone)]
struct Slot {
    target: Target,
    state: TargetState,
    fails: u32,
    oks: u32,
    /// When the next probe is due; `None`: as soon as the engine has a clock.
    next_probe: Option<Instant>,
    /// In flight: (probe id, deadline, transaction).
    inflight: Option<(u64, Instant, Option<TxnId>)>,
    probes_sent: u64,
    probes_failed: u64,
}

impl Slot {
    fn new(target: Target) -> Slot {
        Slot {
            target,
            state: TargetState::Up,
            fails: 0,
            oks: 0,
            next_probe: None,
            inflight: None,
            probes_sent: 0,
            probes_failed: 0,
        }
    }
}

#[derive(Debug, Clone)]
struct TrunkEntry {
    zone: ZoneId,
    cfg: HealthCfg,
    /// The members as configured (to keep resolved lists across a reload
    /// that did not change them).
    destinations: Vec<Destination>,
    /// Has `host:` members: the list comes from the resolver.
    dynamic: bool,
    /// A list was installed (always true for trunks without DNS members).
    resolved: bool,
    slots: Vec<Slot>,
}

/// Targets and health of every trunk, by trunk name (trunk ids change on
/// reload, names are what the resolver and the logs use).
#[derive(Debug, Default)]
pub struct Health {
    trunks: HashMap<String, TrunkEntry>,
    next_id: u64,
    /// Probe id → trunk name.
    probes: HashMap<u64, String>,
    /// Changes not yet reported.
    changes: Vec<HealthChange>,
    /// Targets dropped because a list was longer than [`MAX_TARGETS_PER_TRUNK`].
    pub(crate) targets_truncated: u64,
    /// Earliest probe or probe timeout scheduled (kept current by `recompute`).
    deadline: Option<Instant>,
    /// Some probing target has no probe scheduled yet.
    unscheduled: bool,
}

fn static_targets(t: &Trunk) -> Vec<Target> {
    t.destinations
        .iter()
        .enumerate()
        .filter_map(|(i, d)| match d {
            Destination::Ip(m) => Some(Target::from_member(m, i)),
            Destination::Dns(_) => None,
        })
        .collect()
}

impl Health {
    /// Targets for every trunk of `cfg`.
    pub fn new(cfg: &Config) -> Health {
        let mut h = Health::default();
        h.reload(cfg);
        h
    }

    /// Takes a new configuration. Trunks whose zone and members did not
    /// change keep their targets (a resolved list included) and health;
    /// others start over (pending DNS, everything up).
    pub fn reload(&mut self, cfg: &Config) {
        let mut old = std::mem::take(&mut self.trunks);
        for t in cfg.trunks() {
            let kept = old
                .remove(&t.name)
                .filter(|e| e.zone == t.zone && e.destinations == t.destinations);
            let mut entry = kept.unwrap_or_else(|| {
                let dynamic = t.has_dns_members();
                TrunkEntry {
                    zone: t.zone,
                    cfg: t.health,
                    destinations: t.destinations.clone(),
                    dynamic,
                    resolved: !dynamic,
                    slots: if dynamic {
                        Vec::new()
                    } else {
                        static_targets(t).into_iter().map(Slot::new).collect()
                    },
                }
            });
            if entry.cfg != t.health {
                entry.cfg = t.health;
                for s in &mut entry.slots {
                    // New timing from the next probe on; probing off: all up.
                    s.next_probe = None;
                    if t.health.probe == Probe::Off {
                        *s = Slot::new(s.target.clone());
                    }
                }
            }
            self.trunks.insert(t.name.clone(), entry);
        }
        self.probes
            .retain(|_, trunk| self.trunks.contains_key(trunk));
        self.recompute();
    }

    /// Installs the resolved targets of a trunk with DNS members, in
    /// failover order. Targets already known keep their health; duplicates
    /// (same address and transport) keep their first place. Returns false
    /// when no such trunk has DNS members.
    pub fn set_targets(&mut self, trunk: &str, targets: Vec<Target>) -> bool {
        let Some(entry) = self.trunks.get_mut(trunk) else {
            return false;
        };
        if !entry.dynamic {
            return false;
        }
        let mut old: HashMap<(SocketAddr, Transport), Slot> =
            entry.slots.drain(..).map(|s| (s.target.key(), s)).collect();
        let mut seen = std::collections::HashSet::new();
        for t in targets {
            if !seen.insert(t.key()) {
                continue;
            }
            if entry.slots.len() == MAX_TARGETS_PER_TRUNK {
                self.targets_truncated += 1;
                continue;
            }
            let slot = match old.remove(&t.key()) {
                Some(mut s) => {
                    s.target = t;
                    s
                }
                None => Slot::new(t),
            };
            entry.slots.push(slot);
        }
        entry.resolved = true;
        self.recompute();
        true
    }

    /// The targets a new call to `trunk` tries, in order: the ones that are
    /// up; if none is, all of them. `None` while a trunk with DNS members
    /// waits for its first resolution (or for an unknown trunk).
    pub fn plan(&self, trunk: &str) -> Option<Vec<Target>> {
        let entry = self.trunks.get(trunk)?;
        if !entry.resolved {
            return None;
        }
        let up: Vec<Target> = entry
            .slots
            .iter()
            .filter(|s| s.state == TargetState::Up)
            .map(|s| s.target.clone())
            .collect();
        if up.is_empty() {
            Some(entry.slots.iter().map(|s| s.target.clone()).collect())
        } else {
            Some(up)
        }
    }

    /// When [`Health::poll`] next has work; `fallback` (the engine's last
    /// known `now`) stands for probes not scheduled yet.
    pub fn next_deadline(&self, fallback: Option<Instant>) -> Option<Instant> {
        match (
            self.deadline,
            self.unscheduled.then_some(fallback).flatten(),
        ) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Recomputes the cached deadline after a change.
    fn recompute(&mut self) {
        let mut next: Option<Instant> = None;
        let mut unscheduled = false;
        for e in self.trunks.values() {
            if e.cfg.probe == Probe::Off {
                continue;
            }
            for s in &e.slots {
                let due = match s.inflight {
                    Some((_, deadline, _)) => Some(deadline),
                    None => s.next_probe,
                };
                match due {
                    Some(d) => next = Some(next.map_or(d, |n: Instant| n.min(d))),
                    None => unscheduled = true,
                }
            }
        }
        self.deadline = next;
        self.unscheduled = unscheduled;
    }

    /// Times out overdue probes and starts the probes due at `now`.
    pub(crate) fn poll(&mut self, now: Instant) -> PollOutput {
        let mut out = PollOutput::default();
        let mut timed_out = Vec::new();
        for (name, e) in &self.trunks {
            if e.cfg.probe == Probe::Off {
                continue;
            }
            for s in &e.slots {
                if let Some((id, deadline, txn)) = s.inflight
                    && deadline <= now
                {
                    timed_out.push((name.clone(), id));
                    out.abandon.extend(txn);
                }
            }
        }
        for (trunk, id) in timed_out {
            self.record(&trunk, id, ProbeOutcome::Timeout);
        }
        for (name, e) in &mut self.trunks {
            if e.cfg.probe == Probe::Off {
                continue;
            }
            for s in &mut e.slots {
                if s.inflight.is_some() || s.next_probe.is_some_and(|t| t > now) {
                    continue;
                }
                self.next_id += 1;
                let id = self.next_id;
                out.send.push(ProbeSend {
                    id,
                    zone: e.zone,
                    target: s.target.clone(),
                });
                s.probes_sent += 1;
                s.next_probe = Some(now + e.cfg.interval);
                s.inflight = Some((id, now + e.cfg.timeout, None));
                self.probes.insert(id, name.clone());
            }
        }
        self.recompute();
        out
    }

    /// Remembers the transaction that carries probe `id`.
    pub(crate) fn set_probe_txn(&mut self, id: u64, txn: TxnId) {
        let Some(name) = self.probes.get(&id) else {
            return;
        };
        if let Some(s) = self.trunks.get_mut(name).and_then(|e| {
            e.slots
                .iter_mut()
                .find(|s| s.inflight.is_some_and(|f| f.0 == id))
        }) && let Some(f) = s.inflight.as_mut()
        {
            f.2 = Some(txn);
        }
    }

    /// A probe's result (a response, or its transaction's timeout). Late
    /// results of probes already judged are ignored.
    pub(crate) fn on_probe_result(&mut self, id: u64, outcome: ProbeOutcome) {
        let Some(trunk) = self.probes.get(&id).cloned() else {
            return;
        };
        self.record(&trunk, id, outcome);
        self.recompute();
    }

    fn record(&mut self, trunk: &str, id: u64, outcome: ProbeOutcome) {
        let Some(e) = self.trunks.get_mut(trunk) else {
            self.probes.remove(&id);
            return;
        };
        let cfg = e.cfg;
        self.probes.remove(&id);
        let Some(s) = e
            .slots
            .iter_mut()
            .find(|s| s.inflight.is_some_and(|f| f.0 == id))
        else {
            return;
        };
        s.inflight = None;
        if outcome.alive() {
            s.fails = 0;
            s.oks = s.oks.saturating_add(1);
            if s.state == TargetState::Down && s.oks >= cfg.up_after {
                s.state = TargetState::Up;
                self.changes.push(HealthChange {
                    trunk: trunk.to_owned(),
                    target: s.target.clone(),
                    state: TargetState::Up,
                    outcome,
                });
            }
        } else {
            s.probes_failed += 1;
            s.oks = 0;
            s.fails = s.fails.saturating_add(1);
            if s.state == TargetState::Up && s.fails >= cfg.down_after {
                s.state = TargetState::Down;
                self.changes.push(HealthChange {
                    trunk: trunk.to_owned(),
                    target: s.target.clone(),
                    state: TargetState::Down,
                    outcome,
                });
            }
        }
    }

    /// State changes since the last call.
    pub(crate) fn take_changes(&mut self) -> Vec<HealthChange> {
        std::mem::take(&mut self.changes)
    }

    /// Every target of every trunk, for metrics.
    pub fn status(&self) -> Vec<TargetStatus> {
        let mut out: Vec<TargetStatus> = self
            .trunks
            .iter()
            .flat_map(|(name, e)| {
                e.slots.iter().map(move |s| TargetStatus {
                    trunk: name.clone(),
                    target: s.target.clone(),
                    state: s.state,
                    probes_sent: s.probes_sent,
                    probes_failed: s.probes_failed,
                })
            })
            .collect();
        out.sort_by(|a, b| (&a.trunk, a.target.member).cmp(&(&b.trunk, b.target.member)));
        out
    }

    /// Targets currently down (a gauge).
    pub fn down_count(&self) -> usize {
        self.trunks
            .values()
            .flat_map(|e| &e.slots)
            .filter(|s| s.state == TargetState::Down)
            .count()
    }
}

/// An OPTIONS probe toward `target` from `zone`'s address, with the given
/// fresh identifiers.
pub(crate) fn probe_request(
    zone: &Zone,
    target: &Target,
    call_id: &str,
    tag: &str,
    branch: &str,
    user_agent: &str,
) -> Bytes {
    let transport_param = match target.transport {
        Transport::Udp => String::new(),
        t => format!(";transport={}", t.uri_param()),
    };
    let uri = format!("sip:{}{transport_param}", target.uri_host);
    let me = host_str(zone.sip_address);
    let port = zone_port(zone, target.transport);
    let mut w = MessageWriter::request(&Method::Options, &uri);
    w.header_fmt(
        HeaderName::Via,
        format_args!(
            "SIP/2.0/{} {me}:{port};branch={branch};rport",
            target.transport.via_token()
        ),
    );
    w.header(HeaderName::MaxForwards, "70");
    w.header_fmt(HeaderName::From, format_args!("<sip:ping@{me}>;tag={tag}"));
    w.header_fmt(HeaderName::To, format_args!("<sip:{}>", target.uri_host));
    w.header(HeaderName::CallId, call_id);
    w.header(HeaderName::CSeq, "1 OPTIONS");
    w.header_fmt(
        HeaderName::Contact,
        format_args!("<sip:{me}:{port}{transport_param}>"),
    );
    w.header(HeaderName::Accept, "application/sdp");
    w.header(HeaderName::UserAgent, user_agent);
    w.finish_empty()
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)] // the virtual clock needs one real origin
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::time::Duration;

    fn cfg(health: &str, members: &str) -> Config {
        palisade_config::load_str(
            &format!(
                "zones:\n  - name: out\n    sip_address: 127.0.0.2\ntrunks:\n  - name: carrier\n    zone: out\n    members:\n{members}{health}routes:\n  - name: all\n    to_trunk: carrier\n"
            ),
            "t.yaml",
        )
        .unwrap()
    }

    const TWO_IPS: &str = "      - address: 127.0.0.20\n        port: 5080\n      - address: 127.0.0.21\n        port: 5080\n";
    const PROBING: &str = "    health:\n      interval_seconds: 10\n      timeout_ms: 1000\n      down_after: 3\n      up_after: 2\n";

    fn addrs(plan: &[Target]) -> Vec<String> {
        plan.iter().map(|t| t.addr.to_string()).collect()
    }

    fn target(last: u8, member: usize) -> Target {
        Target {
            addr: SocketAddr::from(([127, 0, 0, last], 5080)),
            transport: Transport::Udp,
            uri_host: "carrier.test".into(),
            member,
        }
    }

    /// Answers every probe in `out` with `outcome`.
    fn answer(h: &mut Health, out: &PollOutput, outcome: ProbeOutcome, only: Option<&str>) {
        for p in &out.send {
            if only.is_none_or(|a| p.target.addr.to_string() == a) {
                h.on_probe_result(p.id, outcome);
            }
        }
    }

    #[test]
    fn ip_members_are_targets_in_order_and_probing_is_off_by_default() {
        let h = Health::new(&cfg("", TWO_IPS));
        let plan = h.plan("carrier").unwrap();
        assert_eq!(addrs(&plan), ["127.0.0.20:5080", "127.0.0.21:5080"]);
        assert_eq!(plan[0].uri_host, "127.0.0.20:5080");
        assert_eq!(h.next_deadline(Some(Instant::now())), None);
    }

    #[test]
    fn dns_trunks_wait_for_their_first_list() {
        let c = cfg(
            "",
            "      - host: carrier.test\n      - address: 127.0.0.21\n",
        );
        let mut h = Health::new(&c);
        assert_eq!(h.plan("carrier"), None, "pending: the engine answers 503");
        assert!(h.set_targets("carrier", vec![target(20, 0), target(21, 1)]));
        assert_eq!(addrs(&h.plan("carrier").unwrap()).len(), 2);
        // An empty answer is a resolved trunk with nothing to try.
        assert!(h.set_targets("carrier", Vec::new()));
        assert_eq!(h.plan("carrier"), Some(Vec::new()));
        assert!(!h.set_targets("nope", Vec::new()));
        let mut s = Health::new(&cfg("", TWO_IPS));
        assert!(!s.set_targets("carrier", Vec::new()), "static trunk");
    }

    /// The whole cycle on a virtual clock: probes every interval, down after
    /// three silent probes, skipped by routing, up again after two answers.
    #[test]
    fn hysteresis_and_passing_over_down_targets_on_a_virtual_clock() {
        let mut h = Health::new(&cfg(PROBING, TWO_IPS));
        let t0 = Instant::now();
        // Unscheduled probes are due at the engine's first `now`.
        assert_eq!(h.next_deadline(Some(t0)), Some(t0));
        let mut now = t0;
        let mut downs = 0;
        for round in 0..3 {
            let out = h.poll(now);
            assert_eq!(out.send.len(), 2, "round {round}");
            answer(
                &mut h,
                &out,
                ProbeOutcome::Answered,
                Some("127.0.0.21:5080"),
            );
            // The primary stays silent; its probe times out after 1 s.
            assert_eq!(h.next_deadline(None), Some(now + Duration::from_secs(1)));
            now += Duration::from_secs(1);
            let out = h.poll(now);
            assert!(out.send.is_empty());
            let changes = h.take_changes();
            downs += changes.len();
            if round < 2 {
                assert!(changes.is_empty(), "down after 3 failures, not {round}");
                assert_eq!(h.plan("carrier").unwrap().len(), 2);
            } else {
                assert_eq!(changes.len(), 1);
                assert_eq!(changes[0].state, TargetState::Down);
                assert_eq!(changes[0].outcome, ProbeOutcome::Timeout);
                assert_eq!(changes[0].target.addr.to_string(), "127.0.0.20:5080");
            }
            assert_eq!(h.next_deadline(None), Some(now + Duration::from_secs(9)));
            now += Duration::from_secs(9);
        }
        assert_eq!(downs, 1);
        assert_eq!(addrs(&h.plan("carrier").unwrap()), ["127.0.0.21:5080"]);
        assert_eq!(h.down_count(), 1);
        // Down targets are still probed; one answer is not enough.
        let out = h.poll(now);
        assert_eq!(out.send.len(), 2);
        answer(&mut h, &out, ProbeOutcome::Answered, None);
        assert!(h.take_changes().is_empty());
        assert_eq!(h.plan("carrier").unwrap().len(), 1);
        now += Duration::from_secs(10);
        let out = h.poll(now);
        answer(&mut h, &out, ProbeOutcome::Answered, None);
        let changes = h.take_changes();
        assert_eq!(changes.len(), 1);
        assert_eq!(changes[0].state, TargetState::Up);
        assert_eq!(h.plan("carrier").unwrap().len(), 2);
        let st = h.status();
        assert_eq!(st[0].probes_sent, 5);
        assert_eq!(st[0].probes_failed, 3);
    }

    #[test]
    fn a_503_is_a_failure_any_other_status_is_alive_and_late_answers_are_ignored() {
        assert_eq!(ProbeOutcome::of_status(503), ProbeOutcome::Unavailable);
        for s in [200, 404, 403, 480, 500, 502, 603] {
            assert_eq!(ProbeOutcome::of_status(s), ProbeOutcome::Answered, "{s}");
        }
        let mut h = Health::new(&cfg(
            "    health:\n      interval_seconds: 5\n      timeout_ms: 1000\n      down_after: 1\n",
            TWO_IPS,
        ));
        let now = Instant::now();
        let out = h.poll(now);
        answer(
            &mut h,
            &out,
            ProbeOutcome::Unavailable,
            Some("127.0.0.20:5080"),
        );
        assert_eq!(h.take_changes().len(), 1);
        // Both down: every target is tried anyway, in order.
        let out2 = h.poll(now + Duration::from_secs(1));
        assert!(out2.send.is_empty());
        assert_eq!(h.take_changes().len(), 1, "the secondary timed out");
        assert_eq!(
            addrs(&h.plan("carrier").unwrap()),
            ["127.0.0.20:5080", "127.0.0.21:5080"]
        );
        // The timed-out probe's answer arrives late: ignored.
        answer(
            &mut h,
            &out,
            ProbeOutcome::Answered,
            Some("127.0.0.21:5080"),
        );
        assert!(h.take_changes().is_empty());
        assert_eq!(h.status()[1].state, TargetState::Down);
    }

    #[test]
    fn probe_transactions_are_abandoned_on_timeout() {
        let mut h = Health::new(&cfg(PROBING, TWO_IPS));
        let now = Instant::now();
        let out = h.poll(now);
        h.set_probe_txn(out.send[0].id, TxnId(77));
        let out = h.poll(now + Duration::from_secs(1));
        assert_eq!(out.abandon, [TxnId(77)]);
    }

    #[test]
    fn reload_keeps_unchanged_trunks_and_resets_changed_ones() {
        let dns = "      - host: carrier.test\n";
        let mut h = Health::new(&cfg(PROBING, dns));
        h.set_targets("carrier", vec![target(20, 0)]);
        let now = Instant::now();
        for i in 0..3 {
            let t = now + Duration::from_secs(20 * i);
            let _ = h.poll(t);
            let _ = h.poll(t + Duration::from_secs(2));
        }
        assert_eq!(h.down_count(), 1);
        // Same members: the resolved list and its health survive.
        h.reload(&cfg(PROBING, dns));
        assert_eq!(h.down_count(), 1);
        assert!(h.plan("carrier").is_some());
        // Probing turned off: everything is up again.
        h.reload(&cfg("", dns));
        assert_eq!(h.down_count(), 0);
        assert!(h.plan("carrier").is_some());
        // Different members: pending again.
        h.reload(&cfg("", "      - host: other.test\n"));
        assert_eq!(h.plan("carrier"), None);
    }

    #[test]
    fn probe_request_is_from_the_zone_and_names_the_target() {
        let c = cfg("", TWO_IPS);
        let zone = &c.zones()[0];
        let mut t = target(20, 0);
        t.transport = Transport::Tcp;
        let b = probe_request(zone, &t, "cid", "tg", "z9hG4bKx", "Palisade");
        let text = String::from_utf8_lossy(&b);
        assert!(text.starts_with("OPTIONS sip:carrier.test;transport=tcp SIP/2.0\r\n"));
        assert!(text.contains("Via: SIP/2.0/TCP 127.0.0.2:5060;branch=z9hG4bKx;rport\r\n"));
        assert!(text.contains("From: <sip:ping@127.0.0.2>;tag=tg\r\n"));
        assert!(text.contains("To: <sip:carrier.test>\r\n"));
        let limits = palisade_sip::ParseLimits {
            max_message_bytes: 65536,
            max_headers: 64,
        };
        palisade_sip::Message::parse(b, &limits).unwrap();
    }

    proptest! {
        /// Merging a new list: the plan is the new list (first of each
        /// address/transport, capped), targets that stay keep their state,
        /// new ones start up.
        #[test]
        fn target_list_merge(
            old in proptest::collection::vec(0u8..12, 0..20),
            down in proptest::collection::vec(any::<bool>(), 20),
            new in proptest::collection::vec(0u8..12, 0..40),
        ) {
            let c = cfg("    health:\n      down_after: 1\n", "      - host: carrier.test\n");
            let mut h = Health::new(&c);
            h.set_targets("carrier", old.iter().enumerate().map(|(i, &l)| target(l, i)).collect());
            // Fail the probes of the targets picked by `down`.
            let out = h.poll(Instant::now());
            for (p, d) in out.send.iter().zip(&down) {
                h.on_probe_result(p.id, if *d { ProbeOutcome::Unavailable } else { ProbeOutcome::Answered });
            }
            let before: HashMap<SocketAddr, TargetState> =
                h.status().into_iter().map(|s| (s.target.addr, s.state)).collect();
            h.set_targets("carrier", new.iter().enumerate().map(|(i, &l)| target(l, i)).collect());
            let mut expect: Vec<u8> = Vec::new();
            for l in &new {
                if !expect.contains(l) {
                    expect.push(*l);
                }
            }
            expect.truncate(MAX_TARGETS_PER_TRUNK);
            let status = h.status();
            let listed: Vec<u8> = {
                let mut s: Vec<&TargetStatus> = status.iter().collect();
                s.sort_by_key(|s| s.target.member);
                s.iter().map(|s| match s.target.addr.ip() {
                    std::net::IpAddr::V4(v4) => v4.octets()[3],
                    std::net::IpAddr::V6(_) => 0,
                }).collect()
            };
            prop_assert_eq!(&listed, &expect);
            for s in &status {
                let was = before.get(&s.target.addr).copied().unwrap_or(TargetState::Up);
                prop_assert_eq!(s.state, was);
            }
            let plan = h.plan("carrier").unwrap();
            let all_down = !status.is_empty() && status.iter().all(|s| s.state == TargetState::Down);
            for t in &plan {
                let st = status.iter().find(|s| s.target.addr == t.addr).unwrap().state;
                prop_assert!(all_down || st == TargetState::Up);
            }
            prop_assert!(plan.windows(2).all(|w| w[0].member < w[1].member));
        }
    }
}
