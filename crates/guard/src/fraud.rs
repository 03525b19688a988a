//! The toll-fraud engine: rules per trunk, account or source and time
//! window, measured while calls run, with warning and critical levels.
//!
//! State is bounded: rule states live in an LRU keyed by (rule, subject)
//! whose capacity is `guard.max_sources`; windowed counts are 32-slot
//! sliding windows; per-number counts are an LRU of 256 numbers per state;
//! evidence is the last `alerts.max_evidence_calls` calls per state.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hashlink::LruCache;
use jiff::civil::Date;
use jiff::tz::TimeZone;
use palisade_b2bua::{CallEnd, CallInfo, CallRef, Verdict};
use palisade_config::{Config, Fraud, FraudAction, FraudRule, GuardMode, RuleKind, SubjectKind};

use crate::alert::{AlertEvent, CallEvidence, Severity, Subject};
use crate::clock::{self, Local};
use crate::guard::{Action, GuardStats, normalise};
use crate::limit::Sliding;

/// Repeated events for one rule and subject are merged into one alert
/// event at most this often (the count carries the rest).
pub const ALERT_THROTTLE: Duration = Duration::from_secs(10);
/// Ended calls kept for evidence.
const RECENT_CALLS: usize = 4096;
/// Distinct numbers tracked per rule state for `repeated_calls`.
const NUMBERS_PER_STATE: usize = 256;
/// Longest caller kept for an account key.
const MAX_CALLER_CHARS: usize = 64;

/// Whom a rule state counts for.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Key {
    Trunk(Arc<str>),
    Account(Arc<str>, Box<str>),
    Source(IpAddr),
}

impl Key {
    fn subject(&self) -> Subject {
        match self {
            Key::Trunk(t) => Subject {
                kind: "trunk".into(),
                value: t.to_string(),
            },
            Key::Account(t, c) => Subject {
                kind: "account".into(),
                value: format!("{t}/{c}"),
            },
            Key::Source(ip) => Subject {
                kind: "source".into(),
                value: ip.to_string(),
            },
        }
    }
}

/// A call the engine is running.
#[derive(Debug, Clone)]
struct Live {
    trunk: Arc<str>,
    caller: Box<str>,
    number: Box<str>,
    source: IpAddr,
    start_unix_ms: i64,
    answered_at: Option<Instant>,
    trust: Trust,
    emergency: bool,
    /// Rule states that counted it.
    counted: Vec<(usize, Key)>,
}

/// How far a call's source is trusted, for the `ban` action.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Trust {
    /// The source address is a configured trunk's or allow-listed.
    pub(crate) trusted: bool,
    /// The call's trunk is in `guard.trusted.bannable_trunks`.
    pub(crate) bannable_trunk: bool,
}

impl Trust {
    /// Whether a rule's `ban` may ban this source: always when the source
    /// is untrusted (a registered phone, a stranger); a trusted source only
    /// when the rule says `ban_trusted` and its trunk is bannable.
    fn may_ban(self, rule: &FraudRule) -> bool {
        !self.trusted || (rule.ban_trusted && self.bannable_trunk)
    }
}

/// One rule's state for one subject.
#[derive(Debug, Clone)]
struct State {
    window: Sliding,
    day: Option<Date>,
    day_calls: u64,
    /// Talk time of ended calls today.
    day_talk_ms: u64,
    active: Vec<CallRef>,
    recent: VecDeque<CallRef>,
    walk_last: Option<(u64, usize, Instant)>,
    walk_run: u64,
    numbers: Option<Box<LruCache<Box<str>, Sliding>>>,
    /// Last emitted severity and when; occurrences not emitted since.
    reported: Option<(Severity, Instant)>,
    pending: u64,
    pending_measure: u64,
}

impl State {
    fn new(now: Instant) -> Self {
        State {
            window: Sliding::new(now),
            day: None,
            day_calls: 0,
            day_talk_ms: 0,
            active: Vec::new(),
            recent: VecDeque::new(),
            walk_last: None,
            walk_run: 0,
            numbers: None,
            reported: None,
            pending: 0,
            pending_measure: 0,
        }
    }

    fn roll_day(&mut self, today: Date) {
        if self.day != Some(today) {
            self.day = Some(today);
            self.day_calls = 0;
            self.day_talk_ms = 0;
        }
    }
}

/// Why a timer runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct DurationTimer {
    call: CallRef,
    rule: usize,
    critical: bool,
}

/// Rule level reached, with the action it asks for.
#[derive(Debug, Clone, Copy)]
struct Hit {
    severity: Severity,
    threshold: u64,
    action: FraudAction,
}

fn hit(rule: &FraudRule, measure: u64) -> Option<Hit> {
    if let Some(c) = rule.critical
        && measure >= c.threshold
    {
        return Some(Hit {
            severity: Severity::Critical,
            threshold: c.threshold,
            action: c.action,
        });
    }
    rule.warning
        .filter(|w| measure >= w.threshold)
        .map(|w| Hit {
            severity: Severity::Warning,
            threshold: w.threshold,
            action: w.action,
        })
}

/// The fraud engine.
#[derive(Debug)]
pub(crate) struct FraudEngine {
    cfg: Fraud,
    tz: TimeZone,
    max_evidence: usize,
    states: LruCache<(usize, Key), State>,
    calls: HashMap<CallRef, Live>,
    recent: VecDeque<(CallRef, CallEvidence)>,
    timers: BTreeMap<(Instant, DurationTimer), ()>,
    bans: Vec<(IpAddr, String)>,
    scratch: State,
}

/// International-format number: `00` (or another configured prefix) → `+`.
pub fn normalise_number(intl_prefixes: &[String], number: &str) -> String {
    let n: String = number
        .chars()
        .filter(|c| !matches!(c, ' ' | '-' | '.' | '(' | ')'))
        .collect();
    if n.starts_with('+') {
        return n;
    }
    for p in intl_prefixes {
        if let Some(rest) = n.strip_prefix(p.as_str())
            && !rest.is_empty()
        {
            return format!("+{rest}");
        }
    }
    n
}

impl FraudEngine {
    pub(crate) fn new(cfg: &Config, now: Instant) -> Self {
        let f = cfg.fraud().clone();
        FraudEngine {
            tz: TimeZone::get(&f.timezone).unwrap_or(TimeZone::UTC),
            cfg: f,
            max_evidence: cfg.alerts().max_evidence_calls as usize,
            states: LruCache::new((cfg.guard().max_sources as usize).max(16)),
            calls: HashMap::new(),
            recent: VecDeque::new(),
            timers: BTreeMap::new(),
            bans: Vec::new(),
            scratch: State::new(now),
        }
    }

    /// New rules apply to new events; state keyed by a rule's position is
    /// dropped when the rules change.
    pub(crate) fn reload(&mut self, cfg: &Config) {
        let f = cfg.fraud().clone();
        if f.rules != self.cfg.rules {
            self.states.clear();
            for live in self.calls.values_mut() {
                live.counted.clear();
            }
            self.timers.clear();
        }
        self.tz = TimeZone::get(&f.timezone).unwrap_or(TimeZone::UTC);
        self.cfg = f;
        self.max_evidence = cfg.alerts().max_evidence_calls as usize;
        let cap = (cfg.guard().max_sources as usize).max(16);
        if cap != self.states.capacity() {
            self.states.set_capacity(cap);
        }
    }

    pub(crate) fn states_tracked(&self) -> usize {
        self.states.len()
    }

    pub(crate) fn tracked_calls(&self) -> usize {
        self.calls.len()
    }

    pub(crate) fn poll_timeout(&self) -> Option<Instant> {
        self.timers.keys().next().map(|(t, _)| *t)
    }

    pub(crate) fn take_bans(&mut self) -> Vec<(IpAddr, String)> {
        std::mem::take(&mut self.bans)
    }

    pub(crate) fn is_emergency(&self, number: &str) -> bool {
        let n = number.trim();
        self.cfg.emergency_numbers.iter().any(|e| e == n)
    }

    fn is_international(&self, normalised: &str) -> bool {
        normalised.starts_with('+')
            && !self
                .cfg
                .domestic_prefixes
                .iter()
                .any(|d| normalised.starts_with(d.as_str()))
    }

    fn is_high_risk(&self, normalised: &str) -> bool {
        self.cfg
            .high_risk_prefixes
            .iter()
            .any(|p| normalised.starts_with(p.as_str()))
    }

    fn key(rule: &FraudRule, live: &Live) -> Key {
        match rule.subject {
            SubjectKind::Trunk => Key::Trunk(Arc::clone(&live.trunk)),
            SubjectKind::Account => Key::Account(Arc::clone(&live.trunk), live.caller.clone()),
            SubjectKind::Source => Key::Source(live.source),
        }
    }

    fn applies(&self, rule: &FraudRule, trunk_id: palisade_config::TrunkId, l: &Local) -> bool {
        (rule.trunks.is_empty() || rule.trunks.contains(&trunk_id))
            && clock::applies(&self.cfg, rule.when, l)
    }

    fn state(&mut self, now: Instant, rule: usize, key: &Key) -> &mut State {
        let k = (rule, key.clone());
        if !self.states.contains_key(&k) {
            self.states.insert(k.clone(), State::new(now));
        }
        // Present: just inserted if missing. The scratch state only
        // satisfies the type system.
        match self.states.get_mut(&k) {
            Some(s) => s,
            None => &mut self.scratch,
        }
    }

    /// An emergency call: tracked for evidence, never counted or blocked.
    pub(crate) fn track_emergency(&mut self, _now: Instant, unix: i64, info: &CallInfo<'_>) {
        self.calls.insert(
            info.call,
            Live {
                trunk: Arc::from(info.from_trunk.name.as_str()),
                caller: info.caller.chars().take(MAX_CALLER_CHARS).collect(),
                number: info.number.into(),
                source: normalise(info.source.ip()),
                start_unix_ms: unix,
                answered_at: None,
                trust: Trust {
                    trusted: true,
                    bannable_trunk: false,
                },
                emergency: true,
                counted: Vec::new(),
            },
        );
    }

    /// The call was refused: it leaves no live state (its counts stay).
    pub(crate) fn forget(&mut self, call: CallRef) {
        if let Some(live) = self.calls.remove(&call) {
            for (rule, key) in &live.counted {
                if let Some(s) = self.states.get_mut(&(*rule, key.clone())) {
                    s.active.retain(|c| *c != call);
                }
            }
            self.remember(call, &live, 0, "rejected".into());
        }
    }

    #[allow(clippy::too_many_arguments)]
    pub(crate) fn call_start(
        &mut self,
        now: Instant,
        unix: i64,
        info: &CallInfo<'_>,
        trust: Trust,
        mode: GuardMode,
        actions: &mut VecDeque<Action>,
        stats: &mut GuardStats,
    ) -> Verdict {
        let number = normalise_number(&self.cfg.international_prefixes, info.number);
        let local = clock::local(&self.tz, unix);
        let mut live = Live {
            trunk: Arc::from(info.from_trunk.name.as_str()),
            caller: info.caller.chars().take(MAX_CALLER_CHARS).collect(),
            number: number.as_str().into(),
            source: normalise(info.source.ip()),
            start_unix_ms: unix,
            answered_at: None,
            trust,
            emergency: false,
            counted: Vec::new(),
        };
        let international = self.is_international(&number);
        let high_risk = self.is_high_risk(&number);
        let business = clock::business_hours(&self.cfg, &local);
        let mut verdict = Verdict::Allow;
        let rules = self.cfg.rules.clone();
        // Evaluate with the call registered so evidence includes it.
        self.calls.insert(info.call, live.clone());
        for (ri, rule) in rules.iter().enumerate() {
            if !self.applies(rule, info.from_trunk.id, &local) {
                continue;
            }
            let counts = match rule.kind {
                RuleKind::HighRiskDestination => high_risk,
                RuleKind::InternationalAfterHours => international && !business,
                _ => true,
            };
            if !counts {
                continue;
            }
            let key = Self::key(rule, &live);
            let digits = number.trim_start_matches('+').to_owned();
            let max_evidence = self.max_evidence.max(1);
            let st = self.state(now, ri, &key);
            st.roll_day(local.date);
            let measure = match rule.kind {
                RuleKind::CallsPerMinute => st.window.hit(now, Duration::from_secs(60)),
                RuleKind::ConcurrentCalls => st.active.len() as u64 + 1,
                RuleKind::CallsPerDay => {
                    st.day_calls += 1;
                    st.day_calls
                }
                RuleKind::MinutesPerDay => 0,
                RuleKind::HighRiskDestination | RuleKind::InternationalAfterHours => {
                    st.window.hit(now, rule.window)
                }
                RuleKind::NumberWalking => walk(st, now, rule, &digits),
                RuleKind::Wangiri => st.window.count(now, rule.window),
                RuleKind::RepeatedCalls => {
                    let map = st
                        .numbers
                        .get_or_insert_with(|| Box::new(LruCache::new(NUMBERS_PER_STATE)));
                    let k: Box<str> = number.as_str().into();
                    if !map.contains_key(&k) {
                        map.insert(k.clone(), Sliding::new(now));
                    }
                    map.get_mut(&k).map_or(1, |s| s.hit(now, rule.window))
                }
                RuleKind::MaxCallDuration => 0,
            };
            st.active.push(info.call);
            st.recent.push_back(info.call);
            while st.recent.len() > max_evidence {
                st.recent.pop_front();
            }
            live.counted.push((ri, key.clone()));
            let measure = if rule.kind == RuleKind::MinutesPerDay {
                self.minutes_today(now, ri, &key)
            } else {
                measure
            };
            // Wangiri and minutes per day are measured when calls end; at
            // the start of a call they only block (an alert-only level has
            // already been raised by the call that crossed it).
            let measured_at_end = matches!(rule.kind, RuleKind::Wangiri | RuleKind::MinutesPerDay);
            if let Some(h) = hit(rule, measure)
                && !(measured_at_end && h.action == FraudAction::Alert)
            {
                let v = self.act(
                    now,
                    unix,
                    ri,
                    rule,
                    &key,
                    h,
                    measure,
                    Some(&live),
                    Some(info.call),
                    mode,
                    actions,
                    stats,
                );
                if verdict == Verdict::Allow {
                    verdict = v;
                }
            }
        }
        if let Some(l) = self.calls.get_mut(&info.call) {
            l.counted = live.counted;
        }
        verdict
    }

    fn minutes_today(&mut self, now: Instant, rule: usize, key: &Key) -> u64 {
        let Some(st) = self.states.get(&(rule, key.clone())) else {
            return 0;
        };
        let running: u64 = st
            .active
            .iter()
            .filter_map(|c| self.calls.get(c))
            .filter_map(|l| l.answered_at)
            .map(|a| now.saturating_duration_since(a).as_millis() as u64)
            .sum();
        (st.day_talk_ms + running) / 60_000
    }

    /// Applies a rule hit: the alert, and the action unless dry-run.
    #[allow(clippy::too_many_arguments)]
    fn act(
        &mut self,
        now: Instant,
        unix: i64,
        ri: usize,
        rule: &FraudRule,
        key: &Key,
        h: Hit,
        measure: u64,
        live: Option<&Live>,
        starting: Option<CallRef>,
        mode: GuardMode,
        actions: &mut VecDeque<Action>,
        stats: &mut GuardStats,
    ) -> Verdict {
        let mut action = h.action;
        if action == FraudAction::Ban && !live.is_some_and(|l| l.trust.may_ban(rule)) {
            // Trusted sources are never banned unless the rule and the
            // trunk policy both allow it: tear down instead.
            action = FraudAction::Teardown;
        }
        let dry = mode == GuardMode::DryRun;
        let name = if dry {
            format!("dry-run:{}", action.as_str())
        } else {
            action.as_str().to_owned()
        };
        self.alert(now, unix, ri, rule, key, h, measure, &name, actions, stats);
        if action == FraudAction::Alert {
            return Verdict::Allow;
        }
        if dry {
            stats.dry_run_decisions += 1;
            return Verdict::Allow;
        }
        if action >= FraudAction::Teardown {
            let active: Vec<CallRef> = self
                .states
                .get(&(ri, key.clone()))
                .map(|s| s.active.clone())
                .unwrap_or_default();
            for call in active {
                // The call being set up is rejected, not torn down.
                if starting == Some(call) {
                    continue;
                }
                if self.calls.get(&call).is_some_and(|l| !l.emergency) {
                    stats.calls_torn_down += 1;
                    actions.push_back(Action::Terminate {
                        call,
                        rule: rule.name.clone(),
                    });
                }
            }
        }
        if action == FraudAction::Ban
            && let Some(l) = live
        {
            self.bans.push((
                l.source,
                format!("fraud rule {} ({})", rule.name, h.severity),
            ));
        }
        Verdict::Reject(rule.reject_status)
    }

    /// Emits (or defers) an alert event for a hit.
    #[allow(clippy::too_many_arguments)]
    fn alert(
        &mut self,
        now: Instant,
        unix: i64,
        ri: usize,
        rule: &FraudRule,
        key: &Key,
        h: Hit,
        measure: u64,
        action: &str,
        actions: &mut VecDeque<Action>,
        stats: &mut GuardStats,
    ) {
        let k = (ri, key.clone());
        let Some(st) = self.states.get_mut(&k) else {
            return;
        };
        let due = match st.reported {
            None => true,
            Some((sev, at)) => {
                h.severity > sev || now.saturating_duration_since(at) >= ALERT_THROTTLE
            }
        };
        if !due {
            st.pending += 1;
            st.pending_measure = st.pending_measure.max(measure);
            return;
        }
        let occurrences = st.pending + 1;
        st.pending = 0;
        st.pending_measure = 0;
        st.reported = Some((h.severity.max(st.reported.map_or(h.severity, |r| r.0)), now));
        let refs: Vec<CallRef> = st.recent.iter().copied().collect();
        let evidence = self.evidence(now, &refs);
        stats.alerts_raised += 1;
        actions.push_back(Action::Alert(AlertEvent {
            rule: rule.name.clone(),
            kind: rule.kind.as_str().to_owned(),
            severity: h.severity,
            subject: key.subject(),
            measure,
            threshold: h.threshold,
            action: action.to_owned(),
            at_unix_ms: unix,
            occurrences,
            evidence,
        }));
    }

    /// Flushes occurrences held back by the throttle.
    pub(crate) fn flush(
        &mut self,
        now: Instant,
        unix: i64,
        actions: &mut VecDeque<Action>,
        stats: &mut GuardStats,
    ) {
        let pending: Vec<((usize, Key), u64, u64, Severity)> = self
            .states
            .iter()
            .filter(|(_, s)| s.pending > 0)
            .filter_map(|(k, s)| {
                s.reported
                    .map(|(sev, _)| (k.clone(), s.pending, s.pending_measure, sev))
            })
            .collect();
        for ((ri, key), n, measure, severity) in pending {
            let Some(rule) = self.cfg.rules.get(ri).cloned() else {
                continue;
            };
            let threshold = match severity {
                Severity::Critical => rule.critical.map_or(0, |l| l.threshold),
                Severity::Warning => rule.warning.map_or(0, |l| l.threshold),
            };
            let refs: Vec<CallRef> = match self.states.get_mut(&(ri, key.clone())) {
                Some(st) => {
                    st.pending = 0;
                    st.pending_measure = 0;
                    st.reported = Some((severity, now));
                    st.recent.iter().copied().collect()
                }
                None => continue,
            };
            let evidence = self.evidence(now, &refs);
            stats.alerts_raised += 1;
            actions.push_back(Action::Alert(AlertEvent {
                rule: rule.name.clone(),
                kind: rule.kind.as_str().to_owned(),
                severity,
                subject: key.subject(),
                measure,
                threshold,
                action: "repeat".into(),
                at_unix_ms: unix,
                occurrences: n,
                evidence,
            }));
        }
    }

    fn evidence(&self, now: Instant, refs: &[CallRef]) -> Vec<CallEvidence> {
        refs.iter()
            .filter_map(|c| {
                if let Some(l) = self.calls.get(c) {
                    let (duration_ms, result) = match l.answered_at {
                        Some(a) => (
                            now.saturating_duration_since(a).as_millis() as u64,
                            "active",
                        ),
                        None => (0, "ringing"),
                    };
                    return Some(CallEvidence {
                        time_unix_ms: l.start_unix_ms,
                        from: l.caller.to_string(),
                        to: l.number.to_string(),
                        duration_ms,
                        result: result.into(),
                    });
                }
                self.recent
                    .iter()
                    .rev()
                    .find(|(r, _)| r == c)
                    .map(|(_, e)| e.clone())
            })
            .collect()
    }

    fn remember(&mut self, call: CallRef, live: &Live, duration_ms: u64, result: String) {
        self.recent.push_back((
            call,
            CallEvidence {
                time_unix_ms: live.start_unix_ms,
                from: live.caller.to_string(),
                to: live.number.to_string(),
                duration_ms,
                result,
            },
        ));
        while self.recent.len() > RECENT_CALLS {
            self.recent.pop_front();
        }
    }

    /// Answer: start the duration caps.
    pub(crate) fn call_answered(&mut self, now: Instant, unix: i64, call: CallRef) {
        let Some(live) = self.calls.get_mut(&call) else {
            return;
        };
        live.answered_at = Some(now);
        if live.emergency {
            return;
        }
        let local = clock::local(&self.tz, unix);
        let trunk = Arc::clone(&live.trunk);
        for (ri, rule) in self.cfg.rules.iter().enumerate() {
            if rule.kind != RuleKind::MaxCallDuration
                || !clock::applies(&self.cfg, rule.when, &local)
            {
                continue;
            }
            // The trunk filter was applied at start: the rule counted the call.
            if !live.counted.iter().any(|(r, _)| *r == ri) {
                continue;
            }
            let _ = &trunk;
            for (level, critical) in [(rule.warning, false), (rule.critical, true)] {
                if let Some(l) = level {
                    let at = now + Duration::from_secs(l.threshold);
                    self.timers.insert(
                        (
                            at,
                            DurationTimer {
                                call,
                                rule: ri,
                                critical,
                            },
                        ),
                        (),
                    );
                }
            }
        }
    }

    /// Duration caps that are due.
    pub(crate) fn handle_timeout(
        &mut self,
        now: Instant,
        unix: i64,
        mode: GuardMode,
        actions: &mut VecDeque<Action>,
        stats: &mut GuardStats,
    ) {
        while let Some((&(at, t), _)) = self.timers.iter().next() {
            if at > now {
                break;
            }
            self.timers.remove(&(at, t));
            let Some(live) = self.calls.get(&t.call).cloned() else {
                continue;
            };
            let Some(rule) = self.cfg.rules.get(t.rule).cloned() else {
                continue;
            };
            let Some(answered) = live.answered_at else {
                continue;
            };
            let level = if t.critical {
                rule.critical
            } else {
                rule.warning
            };
            let Some(level) = level else {
                continue;
            };
            let measure = now.saturating_duration_since(answered).as_secs();
            let key = Self::key(&rule, &live);
            let h = Hit {
                severity: if t.critical {
                    Severity::Critical
                } else {
                    Severity::Warning
                },
                threshold: level.threshold,
                action: level.action,
            };
            let mut action = h.action;
            if action == FraudAction::Ban && !live.trust.may_ban(&rule) {
                action = FraudAction::Teardown;
            }
            let dry = mode == GuardMode::DryRun;
            let name = match (dry, action) {
                (_, FraudAction::Alert) => "alert".to_owned(),
                (true, a) => format!("dry-run:{}", a.as_str()),
                (false, a) => a.as_str().to_owned(),
            };
            // Make sure the state exists for the alert's evidence.
            let st = self.state(now, t.rule, &key);
            if !st.recent.contains(&t.call) {
                st.recent.push_back(t.call);
            }
            self.alert(
                now, unix, t.rule, &rule, &key, h, measure, &name, actions, stats,
            );
            if action == FraudAction::Alert {
                continue;
            }
            if dry {
                stats.dry_run_decisions += 1;
                continue;
            }
            // Reject, teardown and ban all end this call now, on both legs.
            stats.calls_torn_down += 1;
            actions.push_back(Action::Terminate {
                call: t.call,
                rule: rule.name.clone(),
            });
            if action == FraudAction::Ban {
                self.bans.push((
                    live.source,
                    format!("fraud rule {} ({})", rule.name, h.severity),
                ));
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    pub(crate) fn call_ended(
        &mut self,
        now: Instant,
        unix: i64,
        call: CallRef,
        end: &CallEnd,
        mode: GuardMode,
        actions: &mut VecDeque<Action>,
        stats: &mut GuardStats,
    ) {
        let Some(live) = self.calls.remove(&call) else {
            return;
        };
        self.timers.retain(|(_, t), _| t.call != call);
        let talk_ms = end.duration.as_millis() as u64;
        let result = if end.answered {
            format!("ended {}", end.reason.as_str())
        } else {
            match end.status {
                Some(s) => format!("failed {s} ({})", end.reason.as_str()),
                None => format!("failed ({})", end.reason.as_str()),
            }
        };
        // Keep the ended call for evidence before rules look it up.
        self.remember(call, &live, talk_ms, result);
        let local = clock::local(&self.tz, unix);
        let rules = self.cfg.rules.clone();
        for (ri, key) in &live.counted {
            let Some(rule) = rules.get(*ri) else {
                continue;
            };
            let Some(st) = self.states.get_mut(&(*ri, key.clone())) else {
                continue;
            };
            st.active.retain(|c| *c != call);
            st.roll_day(local.date);
            let measure = match rule.kind {
                RuleKind::MinutesPerDay => {
                    st.day_talk_ms += talk_ms;
                    None
                }
                RuleKind::Wangiri => {
                    let short = !end.answered || end.duration < rule.short_call;
                    short.then(|| st.window.hit(now, rule.window))
                }
                _ => None,
            };
            let measure = match rule.kind {
                RuleKind::MinutesPerDay => Some(self.minutes_today(now, *ri, key)),
                _ => measure,
            };
            if let Some(m) = measure
                && let Some(h) = hit(rule, m)
            {
                // At the end of a call only alerts and bans make sense;
                // reject and teardown take effect on the subject's next calls.
                let _ = self.act(
                    now,
                    unix,
                    *ri,
                    rule,
                    key,
                    h,
                    m,
                    Some(&live),
                    None,
                    mode,
                    actions,
                    stats,
                );
            }
        }
    }
}

/// Number walking: the run of consecutive calls whose numbers (same length)
/// differ by 1..=max_step from the previous one, within the window.
fn walk(st: &mut State, now: Instant, rule: &FraudRule, digits: &str) -> u64 {
    let value = (digits.len() <= 18 && !digits.is_empty())
        .then(|| digits.parse::<u64>().ok())
        .flatten();
    let Some(v) = value else {
        st.walk_last = None;
        st.walk_run = 0;
        return 0;
    };
    let continues = st.walk_last.is_some_and(|(last, len, at)| {
        len == digits.len()
            && now.saturating_duration_since(at) < rule.window
            && v != last
            && v.abs_diff(last) <= u64::from(rule.max_step)
    });
    st.walk_run = if continues { st.walk_run + 1 } else { 1 };
    st.walk_last = Some((v, digits.len(), now));
    st.walk_run
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_normalise_to_international_format() {
        let p = vec!["00".to_owned()];
        assert_eq!(normalise_number(&p, "0049 711 100"), "+49711100");
        assert_eq!(normalise_number(&p, "+882-123"), "+882123");
        assert_eq!(normalise_number(&p, "0711100"), "0711100");
        assert_eq!(normalise_number(&p, "00"), "00");
    }
}
