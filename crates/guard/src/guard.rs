//! The guard: per-source DoS limits and scanner detection, trust tiers,
//! per-trunk call admission control, and the fraud engine, behind the
//! engine's [`GuardHook`].

use std::collections::VecDeque;
use std::hash::{Hash, Hasher};
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use hashlink::LruCache;
use palisade_b2bua::{CallEnd, CallInfo, CallRef, Flow, GuardHook, Verdict};
use palisade_config::{Config, GuardMode, RateLimit, TrunkId};
use palisade_sip::{HeaderName, Message, Method};

use crate::alert::AlertEvent;
use crate::clock::WallClock;
use crate::fraud::{FraudEngine, Trust};
use crate::limit::{DistinctCount, TokenBucket, WindowCount};
use crate::scanner;

/// Most actions queued for the binary; beyond this they are dropped and
/// counted (the binary drains them after every batch, so this is never
/// reached in practice).
pub const MAX_ACTIONS: usize = 65_536;
/// How often expired bans are swept and pending alert counts flushed.
pub const HOUSEKEEPING: Duration = Duration::from_secs(5);
/// A source is logged at most once per this, per reason.
const DECISION_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// Why the guard decided something. Bounded: usable as a metrics label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Reason {
    /// The source is on the operator deny-list.
    DenyList,
    /// The source is banned.
    Banned,
    /// Too many requests from an untrusted source.
    RateRequests,
    /// Too many INVITEs from an untrusted source.
    RateInvites,
    /// Too many REGISTERs from an untrusted source.
    RateRegisters,
    /// A scanner's User-Agent.
    ScannerUserAgent,
    /// sipvicious' From tag or Contact, whatever its User-Agent.
    ScannerFingerprint,
    /// One source probing many distinct users.
    UserEnumeration,
    /// Repeated authentication failures.
    AuthFailures,
    /// A burst of malformed messages.
    MalformedBurst,
    /// A trusted source over its request rate (throttled, never banned).
    TrustedThrottle,
    /// A fraud rule.
    Fraud,
}

impl Reason {
    /// Every reason, in label order.
    pub const ALL: [Reason; 12] = [
        Reason::DenyList,
        Reason::Banned,
        Reason::RateRequests,
        Reason::RateInvites,
        Reason::RateRegisters,
        Reason::ScannerUserAgent,
        Reason::ScannerFingerprint,
        Reason::UserEnumeration,
        Reason::AuthFailures,
        Reason::MalformedBurst,
        Reason::TrustedThrottle,
        Reason::Fraud,
    ];

    /// Stable name for logs, metrics labels and the ban list.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::DenyList => "deny-list",
            Reason::Banned => "banned",
            Reason::RateRequests => "rate-requests",
            Reason::RateInvites => "rate-invites",
            Reason::RateRegisters => "rate-registers",
            Reason::ScannerUserAgent => "scanner-user-agent",
            Reason::ScannerFingerprint => "scanner-fingerprint",
            Reason::UserEnumeration => "user-enumeration",
            Reason::AuthFailures => "auth-failures",
            Reason::MalformedBurst => "malformed-burst",
            Reason::TrustedThrottle => "trusted-throttle",
            Reason::Fraud => "fraud",
        }
    }

    fn index(self) -> usize {
        Reason::ALL.iter().position(|r| *r == self).unwrap_or(0)
    }
}

/// What the guard asks the binary to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Ban `ip` for `duration` (nftables, and in-process).
    Ban {
        /// The source.
        ip: IpAddr,
        /// How long.
        duration: Duration,
        /// Why.
        reason: Reason,
        /// Detail for the ban list (the User-Agent, the rule...).
        detail: String,
    },
    /// End a call on both legs (`Engine::terminate_call` with `EndReason::Guard`).
    Terminate {
        /// The call.
        call: CallRef,
        /// The rule that ended it.
        rule: String,
    },
    /// Record (merge) an alert.
    Alert(AlertEvent),
    /// A decision to log: what was (or in dry-run would have been) done.
    Decision(Decision),
}

/// One logged decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// The source.
    pub source: IpAddr,
    /// Why.
    pub reason: Reason,
    /// What: `drop`, `reject 503`, `ban 3600s`, `teardown`...
    pub verdict: String,
    /// Whether dry-run kept it from happening.
    pub dry_run: bool,
    /// Detail (the User-Agent, the rule, the trunk).
    pub detail: String,
    /// Similar decisions for this source not logged since the last one.
    pub suppressed: u64,
}

/// Counters and gauges, ready for metrics (`palisade_guard_*`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GuardStats {
    /// Requests seen.
    pub requests: u64,
    /// Requests dropped.
    pub dropped: u64,
    /// Requests or calls refused with a status.
    pub rejected: u64,
    /// Bans issued (userspace verdicts).
    pub bans_issued: u64,
    /// Gauge: bans in the in-process table (at most `guard.max_bans`).
    pub bans_active: u64,
    /// Bans evicted from the full in-process table (oldest first).
    pub bans_evicted: u64,
    /// Gauge: fraud rule states (rule × subject) tracked, at most
    /// `guard.max_sources`.
    pub fraud_states: u64,
    /// Decisions by [`Reason`] (index of `Reason::ALL`).
    pub decisions: [u64; 14],
    /// Decisions dry-run kept from happening.
    pub dry_run_decisions: u64,
    /// Calls ended mid-way by fraud rules.
    pub calls_torn_down: u64,
    /// Alert events raised.
    pub alerts_raised: u64,
    /// Gauge: sources tracked.
    pub sources_tracked: u64,
    /// Sources evicted from the full table.
    pub sources_evicted: u64,
    /// Actions dropped because the queue was full.
    pub actions_dropped: u64,
    /// Emergency calls let through without fraud or CAC checks.
    pub emergency_calls: u64,
    /// Authentication failures reported.
    pub auth_failures: u64,
    /// Malformed messages reported.
    pub malformed: u64,
}

impl GuardStats {
    /// Decisions for `reason`.
    pub fn decisions_for(&self, reason: Reason) -> u64 {
        self.decisions.get(reason.index()).copied().unwrap_or(0)
    }
}

/// Per-source state for untrusted and trusted sources.
#[derive(Debug, Clone)]
struct Source {
    requests: TokenBucket,
    invites: TokenBucket,
    registers: TokenBucket,
    users: DistinctCount,
    auth: WindowCount,
    malformed: WindowCount,
    /// Last decision logged, per reason index; suppressed since.
    logged: Option<(Instant, u64)>,
}

impl Source {
    fn new(now: Instant, limits: &palisade_config::SourceLimits) -> Self {
        Source {
            requests: TokenBucket::new(now, limits.requests),
            invites: TokenBucket::new(now, limits.invites),
            registers: TokenBucket::new(now, limits.registers),
            users: DistinctCount::new(now),
            auth: WindowCount::new(now),
            malformed: WindowCount::new(now),
            logged: None,
        }
    }
}

/// One ban in the in-process table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ban {
    /// Until when.
    pub until: Instant,
    /// Why.
    pub reason: Reason,
}

/// The guard. Sans-IO: every input carries `now`; outputs are verdicts and
/// [`Action`]s drained with [`Guard::poll_action`].
#[derive(Debug)]
pub struct Guard {
    cfg: Arc<Config>,
    mode: GuardMode,
    sources: LruCache<IpAddr, Source>,
    /// Oldest ban first: all userspace bans last `guard.ban_seconds`, so
    /// the least recently inserted is the one closest to expiry.
    bans: LruCache<IpAddr, Ban>,
    fraud: FraudEngine,
    actions: VecDeque<Action>,
    stats: GuardStats,
    wall: WallClock,
    next_housekeeping: Instant,
    /// Never used for decisions; see `source_mut`.
    scratch: Source,
}

/// Source addresses as the config matches them: IPv4-mapped IPv6 is IPv4.
pub fn normalise(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

fn hash_str(s: &str) -> u64 {
    let mut h = std::hash::DefaultHasher::new();
    s.hash(&mut h);
    h.finish()
}

impl Guard {
    /// A guard for `cfg`, with the wall clock anchored at `now` = `unix_ms`.
    pub fn new(cfg: Arc<Config>, now: Instant, unix_ms: i64) -> Self {
        let cap = cfg.guard().max_sources as usize;
        let fraud = FraudEngine::new(&cfg, now);
        Guard {
            mode: cfg.guard().mode,
            sources: LruCache::new(cap.max(16)),
            bans: LruCache::new((cfg.guard().max_bans as usize).max(16)),
            fraud,
            actions: VecDeque::new(),
            stats: GuardStats::default(),
            wall: WallClock::anchor(now, unix_ms),
            next_housekeeping: now + HOUSEKEEPING,
            scratch: Source::new(now, &palisade_config::DEFAULT_LIMITS),
            cfg,
        }
    }

    /// Applies a reloaded configuration: limits, lists and rules change for
    /// new decisions; bans, counters and calls in progress are kept.
    pub fn reload(&mut self, cfg: Arc<Config>) {
        self.mode = cfg.guard().mode;
        let cap = (cfg.guard().max_sources as usize).max(16);
        if cap != self.sources.capacity() {
            self.sources.set_capacity(cap);
        }
        let bans = (cfg.guard().max_bans as usize).max(16);
        if bans != self.bans.capacity() {
            self.bans.set_capacity(bans);
        }
        self.fraud.reload(&cfg);
        self.cfg = cfg;
    }

    /// Re-anchors the wall clock (call it with the real time now and then).
    pub fn set_wall_clock(&mut self, now: Instant, unix_ms: i64) {
        self.wall = WallClock::anchor(now, unix_ms);
    }

    /// The mode in force.
    pub fn mode(&self) -> GuardMode {
        self.mode
    }

    /// Counters and gauges.
    pub fn stats(&self) -> GuardStats {
        let mut s = self.stats;
        s.bans_active = self.bans.len() as u64;
        s.sources_tracked = self.sources.len() as u64;
        s.fraud_states = self.fraud.states_tracked() as u64;
        s
    }

    /// The next action for the binary.
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// When [`Guard::handle_timeout`] is next due.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let h = Some(self.next_housekeeping);
        match (h, self.fraud.poll_timeout()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Runs due timers: mid-call duration caps, ban expiry, alert flushes.
    pub fn handle_timeout(&mut self, now: Instant) {
        let unix = self.wall.unix_ms(now);
        self.fraud
            .handle_timeout(now, unix, self.mode, &mut self.actions, &mut self.stats);
        // A duration cap with `ban` bans mid-call, like the rules at call start.
        self.apply_fraud_bans(now);
        if now >= self.next_housekeeping {
            self.bans.retain(|_, b| b.until > now);
            self.fraud
                .flush(now, unix, &mut self.actions, &mut self.stats);
            self.next_housekeeping = now + HOUSEKEEPING;
        }
        self.cap_actions();
    }

    /// Emits the alert occurrences the throttle is holding back (at
    /// shutdown, so the store records every one).
    pub fn flush_alerts(&mut self, now: Instant) {
        let unix = self.wall.unix_ms(now);
        self.fraud
            .flush(now, unix, &mut self.actions, &mut self.stats);
        self.cap_actions();
    }

    fn cap_actions(&mut self) {
        while self.actions.len() > MAX_ACTIONS {
            self.actions.pop_front();
            self.stats.actions_dropped += 1;
        }
    }

    fn push(&mut self, a: Action) {
        if self.actions.len() >= MAX_ACTIONS {
            self.stats.actions_dropped += 1;
            return;
        }
        self.actions.push_back(a);
    }

    /// Whether `ip` is on the operator allow-list.
    pub fn allow_listed(&self, ip: IpAddr) -> bool {
        let ip = normalise(ip);
        self.cfg.guard().allow.iter().any(|n| n.contains(&ip))
    }

    fn deny_listed(&self, ip: IpAddr) -> bool {
        self.cfg.guard().deny.iter().any(|n| n.contains(&ip))
    }

    /// Whether `ip` belongs to any configured trunk (in any zone).
    fn trunk_source(&self, ip: IpAddr) -> bool {
        self.cfg
            .zones()
            .iter()
            .any(|z| self.cfg.trunk_for_source(z.id, ip).is_some())
    }

    /// Whether `ip` is trusted: a configured trunk's address or allow-listed.
    pub fn trusted(&self, ip: IpAddr) -> bool {
        self.allow_listed(ip) || self.trunk_source(normalise(ip))
    }

    /// The in-process ban of `ip`, if in force at `now`.
    pub fn ban_of(&self, now: Instant, ip: IpAddr) -> Option<Ban> {
        self.bans
            .peek(&normalise(ip))
            .copied()
            .filter(|b| b.until > now)
    }

    /// Removes a ban (an operator's unban). Returns whether one was in force.
    pub fn unban(&mut self, now: Instant, ip: IpAddr) -> bool {
        let ip = normalise(ip);
        // A fresh start: counters that led to the ban are forgotten too.
        self.sources.remove(&ip);
        self.bans.remove(&ip).is_some_and(|b| b.until > now)
    }

    fn decide(
        &mut self,
        now: Instant,
        ip: IpAddr,
        reason: Reason,
        verdict: String,
        detail: String,
    ) {
        self.stats.decisions[reason.index()] += 1;
        let dry = self.mode == GuardMode::DryRun;
        if dry {
            self.stats.dry_run_decisions += 1;
        }
        // One line per source per interval; the rest are counted in it.
        let suppressed = match self.sources.get_mut(&ip) {
            Some(s) => match s.logged {
                Some((at, n)) if now.saturating_duration_since(at) < DECISION_LOG_INTERVAL => {
                    s.logged = Some((at, n + 1));
                    return;
                }
                Some((_, n)) => {
                    s.logged = Some((now, 0));
                    n
                }
                None => {
                    s.logged = Some((now, 0));
                    0
                }
            },
            None => 0,
        };
        self.push(Action::Decision(Decision {
            source: ip,
            reason,
            verdict,
            dry_run: dry,
            detail,
            suppressed,
        }));
    }

    /// Bans `ip` (enforce) or logs that it would (dry-run). Bans in
    /// dry-run are still recorded in-process (without dropping) so one
    /// source makes one "would ban" line, not one per packet.
    fn ban(&mut self, now: Instant, ip: IpAddr, reason: Reason, detail: String) {
        let duration = self.cfg.guard().ban;
        if !self.bans.contains_key(&ip) && self.bans.len() >= self.bans.capacity() {
            // The LRU drops its oldest ban: the one closest to expiry.
            self.stats.bans_evicted += 1;
        }
        self.bans.insert(
            ip,
            Ban {
                until: now + duration,
                reason,
            },
        );
        // The counters that led here are spent.
        if let Some(s) = self.sources.get_mut(&ip) {
            s.users = DistinctCount::new(now);
            s.auth = WindowCount::new(now);
            s.malformed = WindowCount::new(now);
        }
        self.stats.bans_issued += 1;
        let verdict = format!("ban {}s", duration.as_secs());
        if self.mode == GuardMode::Enforce {
            self.push(Action::Ban {
                ip,
                duration,
                reason,
                detail: detail.clone(),
            });
        }
        // Ban decisions are always logged (they are rare by construction).
        if let Some(s) = self.sources.get_mut(&ip) {
            s.logged = None;
        }
        self.decide(now, ip, reason, verdict, detail);
    }

    fn source_mut(&mut self, now: Instant, ip: IpAddr, flow: &Flow) -> &mut Source {
        if !self.sources.contains_key(&ip) {
            if self.sources.len() >= self.sources.capacity() {
                self.stats.sources_evicted += 1;
            }
            let limits = *self.cfg.guard().limits_for(flow.zone);
            self.sources.insert(ip, Source::new(now, &limits));
        }
        // Present: just inserted if it was missing (the LRU keeps the newest).
        // The scratch entry only satisfies the type system.
        match self.sources.get_mut(&ip) {
            Some(s) => s,
            None => &mut self.scratch,
        }
    }

    /// A request from a trusted source: throttled over its rate, never banned.
    fn trusted_request(&mut self, now: Instant, ip: IpAddr, flow: &Flow, msg: &Message) -> Verdict {
        let limit: RateLimit = self.cfg.guard().trusted.requests;
        let ok = self.source_mut(now, ip, flow).requests.take(now, limit);
        if ok {
            return Verdict::Allow;
        }
        let initial_invite = msg.method() == Some(&Method::Invite) && msg.to_tag().is_none();
        let verdict = if initial_invite {
            Verdict::Reject(503)
        } else {
            Verdict::Drop
        };
        let text = if initial_invite { "reject 503" } else { "drop" };
        self.decide(now, ip, Reason::TrustedThrottle, text.into(), String::new());
        self.enforce(verdict)
    }

    /// In dry-run every verdict becomes Allow; counts what was enforced.
    fn enforce(&mut self, v: Verdict) -> Verdict {
        if self.mode == GuardMode::DryRun {
            return Verdict::Allow;
        }
        match v {
            Verdict::Allow => {}
            Verdict::Drop => self.stats.dropped += 1,
            Verdict::Reject(_) => self.stats.rejected += 1,
        }
        v
    }

    /// Every parsed request (the [`GuardHook::request`] seam).
    pub fn on_request(
        &mut self,
        now: Instant,
        flow: &Flow,
        trunk: Option<TrunkId>,
        msg: &Message,
    ) -> Verdict {
        if self.mode == GuardMode::Off {
            return Verdict::Allow;
        }
        self.stats.requests += 1;
        let ip = normalise(flow.remote.ip());
        if trunk.is_some() || self.allow_listed(ip) {
            // Only a fraud rule with `ban_trusted` (and the trunk in
            // `bannable_trunks`) bans a trusted source; the kernel accepts
            // trusted sources first, so that ban is enforced here.
            if self.ban_of(now, ip).is_some() {
                self.stats.decisions[Reason::Banned.index()] += 1;
                if self.mode == GuardMode::DryRun {
                    self.stats.dry_run_decisions += 1;
                }
                return self.enforce(Verdict::Drop);
            }
            return self.trusted_request(now, ip, flow, msg);
        }
        if self.deny_listed(ip) {
            self.decide(now, ip, Reason::DenyList, "drop".into(), String::new());
            return self.enforce(Verdict::Drop);
        }
        if let Some(b) = self.ban_of(now, ip) {
            self.stats.decisions[Reason::Banned.index()] += 1;
            if self.mode == GuardMode::DryRun {
                self.stats.dry_run_decisions += 1;
            }
            let _ = b;
            return self.enforce(Verdict::Drop);
        }
        // Scanners are recognised on their first request.
        let cfg = Arc::clone(&self.cfg);
        let scanners = &cfg.guard().scanners;
        if let Some(ua) = msg.header_str(HeaderName::UserAgent)
            && let Some(hit) = scanner::scanner_user_agent(ua, &scanners.user_agents)
        {
            let detail = format!("user-agent contains `{hit}`");
            self.source_mut(now, ip, flow);
            self.ban(now, ip, Reason::ScannerUserAgent, detail);
            return self.enforce(Verdict::Drop);
        }
        if scanners.sipvicious_fingerprints
            && let Some(what) = sipvicious_fingerprint(msg)
        {
            self.source_mut(now, ip, flow);
            self.ban(now, ip, Reason::ScannerFingerprint, what.into());
            return self.enforce(Verdict::Drop);
        }
        let limits = *cfg.guard().limits_for(flow.zone);
        let (users_max, users_window) = (scanners.distinct_users, scanners.distinct_users_window);
        let method = msg.method();
        let target = target_user(msg);
        let src = self.source_mut(now, ip, flow);
        let over = if !src.requests.take(now, limits.requests) {
            Some(Reason::RateRequests)
        } else if method == Some(&Method::Invite)
            && msg.to_tag().is_none()
            && !src.invites.take(now, limits.invites)
        {
            Some(Reason::RateInvites)
        } else if method == Some(&Method::Register) && !src.registers.take(now, limits.registers) {
            Some(Reason::RateRegisters)
        } else {
            None
        };
        let users = match (&target, over) {
            (Some(user), None) => {
                src.users
                    .add(now, users_window, hash_str(user), users_max as usize)
            }
            _ => 0,
        };
        if let Some(reason) = over {
            let detail = format!(
                "{} over its limit",
                method.map_or("request", |m| m.as_str())
            );
            self.ban(now, ip, reason, detail);
            return self.enforce(Verdict::Drop);
        }
        if users >= users_max as usize {
            let detail = format!(
                "{users} distinct users probed within {}s (last: {})",
                users_window.as_secs(),
                truncate(target.as_deref().unwrap_or(""), 64)
            );
            self.ban(now, ip, Reason::UserEnumeration, detail);
            return self.enforce(Verdict::Drop);
        }
        Verdict::Allow
    }

    /// A message from `flow` that did not parse.
    pub fn on_malformed(&mut self, now: Instant, flow: &Flow) {
        if self.mode == GuardMode::Off {
            return;
        }
        self.stats.malformed += 1;
        let ip = normalise(flow.remote.ip());
        if self.trusted(ip) || self.ban_of(now, ip).is_some() {
            return;
        }
        let (max, window) = (
            self.cfg.guard().scanners.malformed,
            self.cfg.guard().scanners.malformed_window,
        );
        let n = self.source_mut(now, ip, flow).malformed.hit(now, window);
        if n >= max {
            let detail = format!("{n} malformed messages within {}s", window.as_secs());
            self.ban(now, ip, Reason::MalformedBurst, detail);
        }
    }

    /// An authentication failure for `user` from `source` (the registrar and
    /// digest authentication call this). Unknown users must be reported
    /// exactly like wrong passwords, so both look the same from outside.
    pub fn auth_failed(&mut self, now: Instant, flow: &Flow, user: &str) {
        if self.mode == GuardMode::Off {
            return;
        }
        self.stats.auth_failures += 1;
        let ip = normalise(flow.remote.ip());
        if self.trusted(ip) || self.ban_of(now, ip).is_some() {
            return;
        }
        let (max, window) = (
            self.cfg.guard().scanners.auth_failures,
            self.cfg.guard().scanners.auth_failures_window,
        );
        let n = self.source_mut(now, ip, flow).auth.hit(now, window);
        if n >= max {
            let detail = format!(
                "{n} authentication failures within {}s (last user: {})",
                window.as_secs(),
                truncate(user, 64)
            );
            self.ban(now, ip, Reason::AuthFailures, detail);
        }
    }

    /// A routed call (the [`GuardHook::call_start`] seam): the fraud rules.
    /// Call admission control (busy trunks and zones) is the engine's
    /// (`trunks[].cac`), before this is called.
    pub fn on_call_start(&mut self, now: Instant, info: &CallInfo<'_>) -> Verdict {
        if self.mode == GuardMode::Off {
            return Verdict::Allow;
        }
        let unix = self.wall.unix_ms(now);
        let emergency = self.fraud.is_emergency(info.number);
        let ip = normalise(info.source.ip());
        if emergency {
            self.stats.emergency_calls += 1;
        }
        // A registered phone calls on the registrar's trunk from an address
        // of its own: untrusted, so a fraud `ban` bans it. A trunk's own
        // address (or an allow-listed one) is banned only when the rule and
        // `bannable_trunks` both say so.
        let trust = Trust {
            trusted: self.trusted(ip),
            bannable_trunk: self
                .cfg
                .guard()
                .trusted
                .bannable_trunks
                .contains(&info.from_trunk.id),
        };
        let verdict = if emergency {
            self.fraud.track_emergency(now, unix, info);
            Verdict::Allow
        } else {
            let v = self.fraud.call_start(
                now,
                unix,
                info,
                trust,
                self.mode,
                &mut self.actions,
                &mut self.stats,
            );
            if let Verdict::Reject(status) = v {
                self.decide(
                    now,
                    ip,
                    Reason::Fraud,
                    format!("reject {status}"),
                    String::new(),
                );
            }
            self.enforce(v)
        };
        if verdict != Verdict::Allow {
            self.fraud.forget(info.call);
        }
        self.apply_fraud_bans(now);
        self.cap_actions();
        verdict
    }

    /// Fraud `ban` actions go through the same ban table.
    fn apply_fraud_bans(&mut self, now: Instant) {
        for (ip, detail) in self.fraud.take_bans() {
            if self.mode == GuardMode::Enforce {
                self.ban(now, ip, Reason::Fraud, detail);
            } else {
                self.decide(now, ip, Reason::Fraud, "ban".into(), detail);
            }
        }
    }

    /// The call was answered.
    pub fn on_call_answered(&mut self, now: Instant, call: CallRef) {
        if self.mode == GuardMode::Off {
            return;
        }
        let unix = self.wall.unix_ms(now);
        self.fraud.call_answered(now, unix, call);
    }

    /// The call ended.
    pub fn on_call_ended(&mut self, now: Instant, call: CallRef, end: &CallEnd) {
        if self.mode == GuardMode::Off {
            self.fraud.forget(call);
            return;
        }
        let unix = self.wall.unix_ms(now);
        self.fraud.call_ended(
            now,
            unix,
            call,
            end,
            self.mode,
            &mut self.actions,
            &mut self.stats,
        );
        self.apply_fraud_bans(now);
        self.cap_actions();
    }

    /// Calls the fraud engine tracks (a gauge; bounded by the engine's calls).
    pub fn tracked_calls(&self) -> usize {
        self.fraud.tracked_calls()
    }
}

fn truncate(s: &str, max: usize) -> String {
    let mut out: String = s.chars().take(max).filter(|c| !c.is_control()).collect();
    if s.chars().count() > max {
        out.push('…');
    }
    out
}

/// The user a request targets: the Request-URI user, else the To user.
fn target_user(msg: &Message) -> Option<String> {
    let from_ruri = msg
        .request_uri()
        .and_then(|u| u.number().map(str::to_owned))
        .filter(|u| !u.is_empty());
    from_ruri.or_else(|| {
        msg.to()
            .ok()
            .and_then(|t| t.uri.number().map(str::to_owned))
            .filter(|u| !u.is_empty())
    })
}

/// What in `msg` gives sipvicious away, if anything.
fn sipvicious_fingerprint(msg: &Message) -> Option<&'static str> {
    if let Ok(from) = msg.from() {
        if from.display.is_some_and(scanner::sipvicious_display) {
            return Some("From display name `sipvicious`");
        }
        if scanner::sipvicious_uri(from.uri_str) {
            return Some("From sip:100@1.1.1.1");
        }
    }
    if msg.from_tag().is_some_and(scanner::sipvicious_tag) {
        return Some("From tag in sipvicious encoding");
    }
    if msg
        .contacts()
        .filter_map(Result::ok)
        .any(|c| scanner::sipvicious_uri(c.uri_str))
    {
        return Some("Contact sip:123@1.1.1.1");
    }
    None
}

/// The guard as the engine's hook. The binary keeps another clone to drain
/// actions, run timers and read stats; both run on the engine task, so the
/// lock is never contended.
#[derive(Debug, Clone)]
pub struct SharedGuard(pub Arc<Mutex<Guard>>);

impl SharedGuard {
    /// Wraps `guard`.
    pub fn new(guard: Guard) -> Self {
        SharedGuard(Arc::new(Mutex::new(guard)))
    }

    /// Runs `f` on the guard (a poisoned lock is taken over: the guard's
    /// state is counters, valid at every step).
    pub fn with<R>(&self, f: impl FnOnce(&mut Guard) -> R) -> R {
        let mut g = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        f(&mut g)
    }
}

impl GuardHook for SharedGuard {
    fn request(
        &mut self,
        now: Instant,
        flow: &Flow,
        trunk: Option<TrunkId>,
        msg: &Message,
    ) -> Verdict {
        self.with(|g| g.on_request(now, flow, trunk, msg))
    }

    fn malformed(&mut self, now: Instant, flow: &Flow) {
        self.with(|g| g.on_malformed(now, flow));
    }

    fn call_start(&mut self, now: Instant, info: &CallInfo<'_>) -> Verdict {
        self.with(|g| g.on_call_start(now, info))
    }

    fn call_answered(&mut self, now: Instant, call: CallRef) {
        self.with(|g| g.on_call_answered(now, call));
    }

    fn call_ended(&mut self, now: Instant, call: CallRef, end: &CallEnd) {
        self.with(|g| g.on_call_ended(now, call, end));
    }

    fn auth_failed(&mut self, now: Instant, flow: &Flow, user: &str) {
        self.with(|g| g.auth_failed(now, flow, user));
    }
}
