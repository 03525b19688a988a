//! The `guard:`, `fraud:` and `alerts:` sections: DoS limits, scanner rules,
//! trust lists, nftables, toll-fraud rules and the alert database.
//!
//! Raw serde structs, the validated model and the rules live together here so
//! the rest of the crate only gains three fields. Defaults are written once,
//! as constants, and `configs/reference.yaml` states the same values.

use std::path::PathBuf;
use std::time::Duration;

use ipnet::IpNet;
use serde::Deserialize;
use serde_saphyr::Location;

use crate::model::{Trunk, TrunkId, Zone, ZoneId};
use crate::raw::S;
use crate::validate::{Ctx, Num, clamp_u32, parse_net};

// ------------------------------------------------------------------ raw

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawGuard {
    pub mode: Option<S<String>>,
    pub nftables: Option<S<String>>,
    pub nftables_table: Option<S<String>>,
    pub ban_seconds: Option<S<u64>>,
    pub max_sources: Option<S<u64>>,
    pub max_bans: Option<S<u64>>,
    pub allow: Option<Vec<S<String>>>,
    pub deny: Option<Vec<S<String>>>,
    pub trusted: Option<RawTrusted>,
    pub default_limits: Option<RawLimits>,
    pub zone_limits: Option<Vec<S<RawZoneLimits>>>,
    pub scanners: Option<RawScanners>,
    pub kernel_meter: Option<RawMeter>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawTrusted {
    pub requests_per_second: Option<S<u64>>,
    pub requests_burst: Option<S<u64>>,
    pub bannable_trunks: Option<Vec<S<String>>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawLimits {
    pub requests_per_second: Option<S<u64>>,
    pub requests_burst: Option<S<u64>>,
    pub invites_per_second: Option<S<u64>>,
    pub invites_burst: Option<S<u64>>,
    pub registers_per_second: Option<S<u64>>,
    pub registers_burst: Option<S<u64>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawZoneLimits {
    pub zone: S<String>,
    pub requests_per_second: Option<S<u64>>,
    pub requests_burst: Option<S<u64>>,
    pub invites_per_second: Option<S<u64>>,
    pub invites_burst: Option<S<u64>>,
    pub registers_per_second: Option<S<u64>>,
    pub registers_burst: Option<S<u64>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawScanners {
    pub user_agents: Option<Vec<S<String>>>,
    pub sipvicious_fingerprints: Option<S<bool>>,
    pub distinct_users: Option<S<u64>>,
    pub distinct_users_window_seconds: Option<S<u64>>,
    pub auth_failures: Option<S<u64>>,
    pub auth_failures_window_seconds: Option<S<u64>>,
    pub malformed: Option<S<u64>>,
    pub malformed_window_seconds: Option<S<u64>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawMeter {
    pub packets_per_second: Option<S<u64>>,
    pub burst_packets: Option<S<u64>>,
    pub ban_seconds: Option<S<u64>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawFraud {
    pub timezone: Option<S<String>>,
    pub business_hours: Option<RawHours>,
    pub nights: Option<RawNights>,
    pub weekend_days: Option<S<Vec<S<String>>>>,
    pub emergency_numbers: Option<Vec<S<String>>>,
    pub international_prefixes: Option<Vec<S<String>>>,
    pub domestic_prefixes: Option<Vec<S<String>>>,
    pub high_risk_prefixes: Option<Vec<S<String>>>,
    pub rules: Option<Vec<S<RawRule>>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawHours {
    pub days: Option<S<Vec<S<String>>>>,
    pub start: Option<S<String>>,
    pub end: Option<S<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawNights {
    pub start: Option<S<String>>,
    pub end: Option<S<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRule {
    pub name: S<String>,
    pub kind: S<String>,
    pub subject: Option<S<String>>,
    pub trunks: Option<Vec<S<String>>>,
    pub when: Option<S<String>>,
    pub warning: Option<S<RawLevel>>,
    pub critical: Option<S<RawLevel>>,
    pub reject_status: Option<S<u64>>,
    pub ban_trusted: Option<S<bool>>,
    pub window_seconds: Option<S<u64>>,
    pub short_call_seconds: Option<S<u64>>,
    pub max_step: Option<S<u64>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawLevel {
    pub threshold: S<u64>,
    pub action: Option<S<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawAlerts {
    pub database_path: Option<S<String>>,
    pub max_evidence_calls: Option<S<u64>>,
}

// ---------------------------------------------------------------- model

/// `guard.mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum GuardMode {
    /// Decisions are applied (drop, reject, ban, tear down).
    Enforce,
    /// Every decision is logged and counted; nothing is blocked.
    DryRun,
    /// No policing at all.
    Off,
}

impl GuardMode {
    /// The config spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            GuardMode::Enforce => "enforce",
            GuardMode::DryRun => "dry-run",
            GuardMode::Off => "off",
        }
    }
}

/// `guard.nftables`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NftMode {
    /// Use nftables when `nft` works; otherwise block in-process and say so.
    Auto,
    /// nftables is required: refuse to start without it.
    On,
    /// In-process blocking only.
    Off,
}

/// A token bucket: `per_second` sustained, `burst` at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    /// Tokens added per second.
    pub per_second: u32,
    /// Bucket size.
    pub burst: u32,
}

/// Per-source limits for untrusted sources of one zone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SourceLimits {
    /// Every request.
    pub requests: RateLimit,
    /// Initial INVITEs.
    pub invites: RateLimit,
    /// REGISTERs.
    pub registers: RateLimit,
}

/// `guard.trusted`: configured trunks and allow-listed sources.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrustedPolicy {
    /// Requests per source beyond this are throttled (503 with Retry-After
    /// for INVITEs, dropped otherwise), never banned.
    pub requests: RateLimit,
    /// Trunks a fraud rule with `ban_trusted: true` may ban.
    pub bannable_trunks: Vec<TrunkId>,
}

/// `guard.scanners`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scanners {
    /// Lower-cased substrings of User-Agent values that mark a scanner.
    pub user_agents: Vec<String>,
    /// Detect sipvicious by its From tag encoding and `sip:123@1.1.1.1` Contact.
    pub sipvicious_fingerprints: bool,
    /// Distinct target users from one untrusted source within the window: ban.
    pub distinct_users: u32,
    /// Window for `distinct_users`.
    pub distinct_users_window: Duration,
    /// Authentication failures from one source within the window: ban.
    pub auth_failures: u32,
    /// Window for `auth_failures`.
    pub auth_failures_window: Duration,
    /// Malformed messages from one source within the window: ban.
    pub malformed: u32,
    /// Window for `malformed`.
    pub malformed_window: Duration,
}

/// `guard.kernel_meter`: a per-source packet rate enforced by nftables alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KernelMeter {
    /// Packets per second to the SIP ports from one untrusted source; 0 = off.
    pub packets_per_second: u32,
    /// Burst allowance in packets.
    pub burst_packets: u32,
    /// Ban length for a source over the rate.
    pub ban: Duration,
}

/// `guard:`.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Guard {
    /// `mode`.
    pub mode: GuardMode,
    /// `nftables`.
    pub nftables: NftMode,
    /// Name of Palisade's own `inet` table.
    pub nftables_table: String,
    /// Ban length for userspace verdicts.
    pub ban: Duration,
    /// Cap on sources tracked at once (least recently seen evicted first).
    pub max_sources: u32,
    /// Cap on bans held at once: the in-process ban table (the oldest ban
    /// is evicted first) and the size of each kernel ban set.
    pub max_bans: u32,
    /// Operator allow-list: trusted, never banned, accepted first by nftables.
    pub allow: Vec<IpNet>,
    /// Operator deny-list: always dropped.
    pub deny: Vec<IpNet>,
    /// Trusted-trunk policy.
    pub trusted: TrustedPolicy,
    /// Limits for zones not in `zone_limits`.
    pub default_limits: SourceLimits,
    /// Effective limits per zone, indexed by [`ZoneId::index`].
    pub zone_limits: Vec<SourceLimits>,
    /// Scanner detection.
    pub scanners: Scanners,
    /// Kernel meter.
    pub kernel_meter: KernelMeter,
}

impl Guard {
    /// The limits for untrusted sources of `zone`.
    pub fn limits_for(&self, zone: ZoneId) -> &SourceLimits {
        self.zone_limits
            .get(zone.index())
            .unwrap_or(&self.default_limits)
    }
}

/// Days of the week, Monday first (ISO 8601).
pub const WEEKDAYS: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];

/// A daily time span in minutes after local midnight; `start > end` wraps
/// past midnight.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DailySpan {
    /// First minute inside.
    pub start_minute: u16,
    /// First minute outside.
    pub end_minute: u16,
}

impl DailySpan {
    /// Whether `minute` (0..1440) is inside.
    pub fn contains(&self, minute: u16) -> bool {
        if self.start_minute <= self.end_minute {
            (self.start_minute..self.end_minute).contains(&minute)
        } else {
            minute >= self.start_minute || minute < self.end_minute
        }
    }
}

/// What a fraud rule measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RuleKind {
    /// New calls in the last 60 s (threshold: calls).
    CallsPerMinute,
    /// Calls in progress (threshold: calls).
    ConcurrentCalls,
    /// New calls since local midnight (threshold: calls).
    CallsPerDay,
    /// Answered minutes since local midnight, running calls included (threshold: minutes).
    MinutesPerDay,
    /// Calls to `fraud.high_risk_prefixes` in the window (threshold: calls).
    HighRiskDestination,
    /// International calls outside business hours in the window (threshold: calls).
    InternationalAfterHours,
    /// Sequential destination numbers (threshold: run length).
    NumberWalking,
    /// Short or unanswered calls in the window (threshold: calls).
    Wangiri,
    /// Calls to one number in the window (threshold: calls).
    RepeatedCalls,
    /// Talk time of one call (threshold: seconds), enforced mid-call.
    MaxCallDuration,
}

impl RuleKind {
    /// Every kind with its config spelling.
    pub const ALL: [(&'static str, RuleKind); 10] = [
        ("calls_per_minute", RuleKind::CallsPerMinute),
        ("concurrent_calls", RuleKind::ConcurrentCalls),
        ("calls_per_day", RuleKind::CallsPerDay),
        ("minutes_per_day", RuleKind::MinutesPerDay),
        ("high_risk_destination", RuleKind::HighRiskDestination),
        (
            "international_after_hours",
            RuleKind::InternationalAfterHours,
        ),
        ("number_walking", RuleKind::NumberWalking),
        ("wangiri", RuleKind::Wangiri),
        ("repeated_calls", RuleKind::RepeatedCalls),
        ("max_call_duration", RuleKind::MaxCallDuration),
    ];

    /// The config spelling.
    pub fn as_str(self) -> &'static str {
        Self::ALL
            .iter()
            .find(|(_, k)| *k == self)
            .map_or("?", |(n, _)| n)
    }
}

/// Whom a rule counts for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SubjectKind {
    /// The trunk the call came from.
    Trunk,
    /// The calling account: trunk and caller number.
    Account,
    /// The source IP address.
    Source,
}

impl SubjectKind {
    /// The config spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            SubjectKind::Trunk => "trunk",
            SubjectKind::Account => "account",
            SubjectKind::Source => "source",
        }
    }
}

/// When a rule applies, in `fraud.timezone`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum When {
    /// All the time.
    Always,
    /// Inside `fraud.business_hours`.
    BusinessHours,
    /// Outside business hours.
    AfterHours,
    /// Inside `fraud.nights`.
    Nights,
    /// On `fraud.weekend_days`.
    Weekends,
}

impl When {
    /// Every value with its config spelling.
    pub const ALL: [(&'static str, When); 5] = [
        ("always", When::Always),
        ("business_hours", When::BusinessHours),
        ("after_hours", When::AfterHours),
        ("nights", When::Nights),
        ("weekends", When::Weekends),
    ];
}

/// What a level does when crossed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum FraudAction {
    /// Raise (or merge into) an alert only.
    Alert,
    /// Alert, and refuse the new call with the rule's `reject_status`.
    Reject,
    /// Alert, refuse the new call and end the subject's calls that the rule counted.
    Teardown,
    /// Alert, tear down, and ban the source in nftables.
    Ban,
}

impl FraudAction {
    /// Every action with its config spelling.
    pub const ALL: [(&'static str, FraudAction); 4] = [
        ("alert", FraudAction::Alert),
        ("reject", FraudAction::Reject),
        ("teardown", FraudAction::Teardown),
        ("ban", FraudAction::Ban),
    ];

    /// The config spelling.
    pub fn as_str(self) -> &'static str {
        Self::ALL
            .iter()
            .find(|(_, a)| *a == self)
            .map_or("?", |(n, _)| n)
    }
}

/// A level of a rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Level {
    /// Crossed when the measure reaches this value (units per rule kind).
    pub threshold: u64,
    /// What happens then.
    pub action: FraudAction,
}

/// One `fraud.rules` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct FraudRule {
    /// Unique name (alerts carry it).
    pub name: String,
    /// What it measures.
    pub kind: RuleKind,
    /// Whom it counts for.
    pub subject: SubjectKind,
    /// Only calls from these trunks; empty = every trunk.
    pub trunks: Vec<TrunkId>,
    /// When it applies.
    pub when: When,
    /// Warning level (default action: alert).
    pub warning: Option<Level>,
    /// Critical level (default action: reject).
    pub critical: Option<Level>,
    /// Status for rejected calls: 403 or 603.
    pub reject_status: u16,
    /// Whether `ban` may ban a trusted source (a trunk in
    /// `guard.trusted.bannable_trunks`); otherwise it tears down only.
    pub ban_trusted: bool,
    /// Window for kinds that count over a window.
    pub window: Duration,
    /// Wangiri: calls shorter than this (or unanswered) count.
    pub short_call: Duration,
    /// Number walking: largest difference between consecutive numbers that
    /// still counts as sequential.
    pub max_step: u32,
}

/// `fraud:`.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Fraud {
    /// IANA time zone for business hours, nights, weekends and days.
    pub timezone: String,
    /// Business days, Monday first.
    pub business_days: [bool; 7],
    /// Business hours on business days.
    pub business_hours: DailySpan,
    /// Nights (every day).
    pub nights: DailySpan,
    /// Weekend days, Monday first.
    pub weekend_days: [bool; 7],
    /// Never blocked by fraud or call admission rules.
    pub emergency_numbers: Vec<String>,
    /// Dial prefixes meaning "international" (`00` is rewritten to `+`).
    pub international_prefixes: Vec<String>,
    /// International-format prefixes that are domestic (not international).
    pub domestic_prefixes: Vec<String>,
    /// High-risk destination prefixes in `+` format.
    pub high_risk_prefixes: Vec<String>,
    /// The rules, in file order.
    pub rules: Vec<FraudRule>,
}

/// `alerts:`.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Alerts {
    /// The SQLite database (relative paths are relative to the working directory).
    pub database_path: PathBuf,
    /// Calls kept as evidence per alert (the most recent).
    pub max_evidence_calls: u32,
}

// ------------------------------------------------------------- defaults

/// Scanner User-Agent substrings shipped by default.
pub const DEFAULT_SCANNER_USER_AGENTS: &[&str] = &[
    "friendly-scanner",
    "sipvicious",
    "sipcli",
    "vaxsipuseragent",
    "pplsip",
    "sip-scan",
    "sipsak",
    "sundayddr",
    "iwar",
    "smap",
    "sipscan",
    "sipptk",
    "voip-scanner",
];

/// High-risk (IRSF / premium) destination prefixes shipped by default: ranges
/// that toll-fraud reports name again and again. Review them for your traffic.
pub const DEFAULT_HIGH_RISK_PREFIXES: &[&str] = &[
    "+215", "+216", "+220", "+222", "+223", "+224", "+225", "+226", "+227", "+228", "+231", "+232",
    "+235", "+236", "+239", "+240", "+242", "+243", "+245", "+247", "+252", "+257", "+269", "+290",
    "+370", "+371", "+372", "+373", "+381", "+53", "+597", "+599", "+675", "+677", "+678", "+679",
    "+681", "+682", "+683", "+685", "+686", "+687", "+688", "+689", "+690", "+691", "+692", "+870",
    "+871", "+872", "+873", "+874", "+881", "+882", "+883", "+960", "+963", "+967", "+979",
];

/// Emergency numbers shipped by default.
pub const DEFAULT_EMERGENCY_NUMBERS: &[&str] = &["112", "110", "911", "999", "000", "+112"];

const DEFAULT_TABLE: &str = "palisade";
const DEFAULT_DATABASE: &str = "/var/lib/palisade/alerts.db";

const BAN_S: Num = Num {
    key: "ban_seconds",
    default: 3600,
    range: 1..=31_536_000,
};
const MAX_SOURCES: Num = Num {
    key: "max_sources",
    default: 100_000,
    range: 16..=10_000_000,
};
const MAX_BANS: Num = Num {
    key: "max_bans",
    default: 100_000,
    range: 16..=10_000_000,
};
const RATE: std::ops::RangeInclusive<u64> = 1..=1_000_000;
const WINDOW: std::ops::RangeInclusive<u64> = 1..=86_400;

fn num(key: &'static str, default: u64, range: std::ops::RangeInclusive<u64>) -> Num {
    Num {
        key,
        default,
        range,
    }
}

/// The defaults for untrusted sources (deliberately tight: the outside zone).
pub const DEFAULT_LIMITS: SourceLimits = SourceLimits {
    requests: RateLimit {
        per_second: 20,
        burst: 40,
    },
    invites: RateLimit {
        per_second: 5,
        burst: 10,
    },
    registers: RateLimit {
        per_second: 2,
        burst: 5,
    },
};

// ------------------------------------------------------------ validation

pub(crate) fn choice<T: Copy>(
    cx: &mut Ctx,
    v: &S<String>,
    path: &str,
    options: &[(&str, T)],
) -> Option<T> {
    let found = options
        .iter()
        .find(|(n, _)| *n == v.value.trim())
        .map(|(_, t)| *t);
    if found.is_none() {
        let names: Vec<&str> = options.iter().map(|(n, _)| *n).collect();
        cx.err(
            v.referenced,
            path,
            format!(
                "unknown value `{}`; expected one of {}",
                v.value,
                names.join(", ")
            ),
        );
    }
    found
}

fn limits(
    cx: &mut Ctx,
    raw: [Option<&S<u64>>; 6],
    section: &str,
    base: SourceLimits,
) -> SourceLimits {
    let d = base;
    let mut get = |v: Option<&S<u64>>, key: &'static str, default: u32| {
        clamp_u32(cx.num(v, section, &num(key, u64::from(default), RATE)))
    };
    SourceLimits {
        requests: RateLimit {
            per_second: get(raw[0], "requests_per_second", d.requests.per_second),
            burst: get(raw[1], "requests_burst", d.requests.burst),
        },
        invites: RateLimit {
            per_second: get(raw[2], "invites_per_second", d.invites.per_second),
            burst: get(raw[3], "invites_burst", d.invites.burst),
        },
        registers: RateLimit {
            per_second: get(raw[4], "registers_per_second", d.registers.per_second),
            burst: get(raw[5], "registers_burst", d.registers.burst),
        },
    }
}

fn nets(cx: &mut Ctx, list: Option<&Vec<S<String>>>, path: &str) -> Vec<IpNet> {
    let mut out = Vec::new();
    for (i, v) in list.into_iter().flatten().enumerate() {
        if let Some(n) = parse_net(cx, v, &format!("{path}[{i}]")) {
            out.push(n);
        }
    }
    out
}

fn resolve_trunk(cx: &mut Ctx, trunks: &[Trunk], v: &S<String>, path: &str) -> Option<TrunkId> {
    let id = trunks.iter().find(|t| t.name == v.value).map(|t| t.id);
    if id.is_none() {
        cx.err(v.referenced, path, format!("no trunk named `{}`", v.value));
    }
    id
}

/// Validates `guard:` against the zones and trunks already validated.
pub(crate) fn guard(cx: &mut Ctx, raw: RawGuard, zones: &[Zone], trunks: &[Trunk]) -> Guard {
    let s = "guard";
    let mode = raw
        .mode
        .as_ref()
        .and_then(|v| {
            choice(
                cx,
                v,
                "guard.mode",
                &[
                    ("enforce", GuardMode::Enforce),
                    ("dry-run", GuardMode::DryRun),
                    ("off", GuardMode::Off),
                ],
            )
        })
        .unwrap_or(GuardMode::Enforce);
    let nftables = raw
        .nftables
        .as_ref()
        .and_then(|v| {
            choice(
                cx,
                v,
                "guard.nftables",
                &[
                    ("auto", NftMode::Auto),
                    ("on", NftMode::On),
                    ("off", NftMode::Off),
                ],
            )
        })
        .unwrap_or(NftMode::Auto);
    let nftables_table = match &raw.nftables_table {
        Some(t) => {
            let ok = !t.value.is_empty()
                && t.value.len() <= 32
                && t.value.starts_with(|c: char| c.is_ascii_alphabetic())
                && t.value
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_');
            if !ok {
                cx.err(
                    t.referenced,
                    "guard.nftables_table",
                    format!(
                        "`{}` is not a table name: 1..=32 characters of [A-Za-z0-9_], starting with a letter",
                        t.value
                    ),
                );
            }
            t.value.clone()
        }
        None => DEFAULT_TABLE.to_owned(),
    };
    let ban = Duration::from_secs(cx.num(raw.ban_seconds.as_ref(), s, &BAN_S));
    let max_sources = clamp_u32(cx.num(raw.max_sources.as_ref(), s, &MAX_SOURCES));
    let max_bans = clamp_u32(cx.num(raw.max_bans.as_ref(), s, &MAX_BANS));
    let allow = nets(cx, raw.allow.as_ref(), "guard.allow");
    let deny = nets(cx, raw.deny.as_ref(), "guard.deny");
    if let Some(list) = &raw.deny {
        for (i, v) in list.iter().enumerate() {
            if let Some(d) = parse_net_quiet(v)
                && let Some(a) = allow.iter().find(|a| a.contains(&d) || d.contains(*a))
            {
                cx.err(
                    v.referenced,
                    format!("guard.deny[{i}]"),
                    format!("{d} overlaps the allow-list entry {a}; an address is either trusted or denied"),
                );
            }
        }
    }

    let t = raw.trusted.unwrap_or_default();
    let ts = "guard.trusted";
    let mut bannable_trunks = Vec::new();
    for (i, v) in t.bannable_trunks.iter().flatten().enumerate() {
        if let Some(id) = resolve_trunk(cx, trunks, v, &format!("{ts}.bannable_trunks[{i}]")) {
            bannable_trunks.push(id);
        }
    }
    let trusted = TrustedPolicy {
        requests: RateLimit {
            per_second: clamp_u32(cx.num(
                t.requests_per_second.as_ref(),
                ts,
                &num("requests_per_second", 2000, RATE),
            )),
            burst: clamp_u32(cx.num(
                t.requests_burst.as_ref(),
                ts,
                &num("requests_burst", 4000, RATE),
            )),
        },
        bannable_trunks,
    };

    let dl = raw.default_limits.unwrap_or_default();
    let default_limits = limits(
        cx,
        [
            dl.requests_per_second.as_ref(),
            dl.requests_burst.as_ref(),
            dl.invites_per_second.as_ref(),
            dl.invites_burst.as_ref(),
            dl.registers_per_second.as_ref(),
            dl.registers_burst.as_ref(),
        ],
        "guard.default_limits",
        DEFAULT_LIMITS,
    );
    let mut zone_limits = vec![default_limits; zones.len()];
    let mut seen_zones: Vec<ZoneId> = Vec::new();
    for (i, z) in raw.zone_limits.iter().flatten().enumerate() {
        let p = format!("guard.zone_limits[{i}]");
        let zl = &z.value;
        let zone = zones.iter().find(|x| x.name == zl.zone.value).map(|x| x.id);
        let l = limits(
            cx,
            [
                zl.requests_per_second.as_ref(),
                zl.requests_burst.as_ref(),
                zl.invites_per_second.as_ref(),
                zl.invites_burst.as_ref(),
                zl.registers_per_second.as_ref(),
                zl.registers_burst.as_ref(),
            ],
            &p,
            default_limits,
        );
        match zone {
            None => cx.err(
                zl.zone.referenced,
                format!("{p}.zone"),
                format!("no zone named `{}`", zl.zone.value),
            ),
            Some(id) if seen_zones.contains(&id) => cx.err(
                zl.zone.referenced,
                format!("{p}.zone"),
                format!("zone `{}` has limits twice", zl.zone.value),
            ),
            Some(id) => {
                seen_zones.push(id);
                if let Some(slot) = zone_limits.get_mut(id.index()) {
                    *slot = l;
                }
            }
        }
    }

    let sc = raw.scanners.unwrap_or_default();
    let ss = "guard.scanners";
    let user_agents = match &sc.user_agents {
        None => DEFAULT_SCANNER_USER_AGENTS
            .iter()
            .map(|s| (*s).to_owned())
            .collect(),
        Some(list) => {
            let mut out = Vec::new();
            for (i, v) in list.iter().enumerate() {
                let t = v.value.trim();
                if t.is_empty() || t.len() > 128 {
                    cx.err(
                        v.referenced,
                        format!("{ss}.user_agents[{i}]"),
                        "must be 1..=128 characters long",
                    );
                } else {
                    out.push(t.to_ascii_lowercase());
                }
            }
            out
        }
    };
    let scanners = Scanners {
        user_agents,
        sipvicious_fingerprints: sc.sipvicious_fingerprints.is_none_or(|b| b.value),
        distinct_users: clamp_u32(cx.num(
            sc.distinct_users.as_ref(),
            ss,
            &num("distinct_users", 10, 2..=100_000),
        )),
        distinct_users_window: Duration::from_secs(cx.num(
            sc.distinct_users_window_seconds.as_ref(),
            ss,
            &num("distinct_users_window_seconds", 60, WINDOW),
        )),
        auth_failures: clamp_u32(cx.num(
            sc.auth_failures.as_ref(),
            ss,
            &num("auth_failures", 5, 1..=100_000),
        )),
        auth_failures_window: Duration::from_secs(cx.num(
            sc.auth_failures_window_seconds.as_ref(),
            ss,
            &num("auth_failures_window_seconds", 60, WINDOW),
        )),
        malformed: clamp_u32(cx.num(
            sc.malformed.as_ref(),
            ss,
            &num("malformed", 10, 1..=100_000),
        )),
        malformed_window: Duration::from_secs(cx.num(
            sc.malformed_window_seconds.as_ref(),
            ss,
            &num("malformed_window_seconds", 10, WINDOW),
        )),
    };

    let m = raw.kernel_meter.unwrap_or_default();
    let ms = "guard.kernel_meter";
    let kernel_meter = KernelMeter {
        packets_per_second: clamp_u32(cx.num(
            m.packets_per_second.as_ref(),
            ms,
            &num("packets_per_second", 1000, 0..=10_000_000),
        )),
        burst_packets: clamp_u32(cx.num(
            m.burst_packets.as_ref(),
            ms,
            &num("burst_packets", 2000, 1..=10_000_000),
        )),
        ban: Duration::from_secs(cx.num(
            m.ban_seconds.as_ref(),
            ms,
            &num("ban_seconds", 600, 1..=31_536_000),
        )),
    };

    Guard {
        mode,
        nftables,
        nftables_table,
        ban,
        max_sources,
        max_bans,
        allow,
        deny,
        trusted,
        default_limits,
        zone_limits,
        scanners,
        kernel_meter,
    }
}

fn parse_net_quiet(v: &S<String>) -> Option<IpNet> {
    let t = v.value.trim();
    t.parse::<IpNet>()
        .ok()
        .or_else(|| t.parse::<std::net::IpAddr>().ok().map(IpNet::from))
}

/// `HH:MM` to minutes after midnight (`24:00` allowed as an end).
fn hhmm(cx: &mut Ctx, v: &S<String>, path: &str) -> Option<u16> {
    let parsed = v.value.split_once(':').and_then(|(h, m)| {
        let (h, m) = (h.parse::<u16>().ok()?, m.parse::<u16>().ok()?);
        (m < 60 && (h < 24 || (h == 24 && m == 0)) && v.value.len() == 5).then_some(h * 60 + m)
    });
    if parsed.is_none() {
        cx.err(
            v.referenced,
            path,
            format!(
                "`{}` is not a time of day; write HH:MM (00:00..=24:00)",
                v.value
            ),
        );
    }
    parsed
}

fn days(cx: &mut Ctx, v: &S<Vec<S<String>>>, path: &str, default: [bool; 7]) -> [bool; 7] {
    let mut out = [false; 7];
    let mut ok = true;
    for (i, d) in v.value.iter().enumerate() {
        match WEEKDAYS.iter().position(|w| *w == d.value.trim()) {
            Some(k) => {
                if let Some(slot) = out.get_mut(k) {
                    *slot = true;
                }
            }
            None => {
                ok = false;
                cx.err(
                    d.referenced,
                    format!("{path}[{i}]"),
                    format!("`{}` is not a day; use {}", d.value, WEEKDAYS.join(", ")),
                );
            }
        }
    }
    if ok { out } else { default }
}

/// Numbers and prefixes: `+` then digits, or digits (`*#` allowed).
fn numbers(
    cx: &mut Ctx,
    list: Option<&Vec<S<String>>>,
    path: &str,
    default: &[&str],
    plus_required: bool,
) -> Vec<String> {
    let Some(list) = list else {
        return default.iter().map(|s| (*s).to_owned()).collect();
    };
    let mut out = Vec::new();
    for (i, v) in list.iter().enumerate() {
        let t = v.value.trim();
        let body = t.strip_prefix('+').unwrap_or(t);
        let ok = !body.is_empty()
            && t.len() <= 32
            && body
                .chars()
                .all(|c| c.is_ascii_digit() || c == '*' || c == '#')
            && (!plus_required || t.starts_with('+'));
        if ok {
            out.push(t.to_owned());
        } else {
            let want = if plus_required {
                "`+` followed by 1..=31 digits"
            } else {
                "1..=32 characters of [0-9*#], optionally after a leading `+`"
            };
            cx.err(
                v.referenced,
                format!("{path}[{i}]"),
                format!("`{t}` is not a number prefix: {want}"),
            );
        }
    }
    out
}

fn level(
    cx: &mut Ctx,
    v: Option<&S<RawLevel>>,
    path: &str,
    default_action: FraudAction,
) -> Option<Level> {
    let v = v?;
    let l = &v.value;
    if l.threshold.value == 0 {
        cx.err(
            l.threshold.referenced,
            format!("{path}.threshold"),
            "must be at least 1",
        );
    }
    let action = l
        .action
        .as_ref()
        .and_then(|a| choice(cx, a, &format!("{path}.action"), &FraudAction::ALL))
        .unwrap_or(default_action);
    Some(Level {
        threshold: l.threshold.value,
        action,
    })
}

/// Validates `fraud:`.
pub(crate) fn fraud(cx: &mut Ctx, raw: RawFraud, trunks: &[Trunk]) -> Fraud {
    let timezone = match &raw.timezone {
        Some(tz) => {
            if jiff::tz::TimeZone::get(tz.value.trim()).is_err() {
                cx.err(
                    tz.referenced,
                    "fraud.timezone",
                    format!(
                        "`{}` is not an IANA time zone (like Europe/Berlin or UTC)",
                        tz.value
                    ),
                );
            }
            tz.value.trim().to_owned()
        }
        None => "UTC".to_owned(),
    };
    let bh = raw.business_hours.unwrap_or_default();
    let weekdays = [true, true, true, true, true, false, false];
    let business_days = match &bh.days {
        Some(d) => days(cx, d, "fraud.business_hours.days", weekdays),
        None => weekdays,
    };
    let start = bh
        .start
        .as_ref()
        .and_then(|v| hhmm(cx, v, "fraud.business_hours.start"))
        .unwrap_or(8 * 60);
    let end = bh
        .end
        .as_ref()
        .and_then(|v| hhmm(cx, v, "fraud.business_hours.end"))
        .unwrap_or(18 * 60);
    if start >= end
        && let Some(v) = bh.end.as_ref().or(bh.start.as_ref())
    {
        cx.err(
            v.referenced,
            "fraud.business_hours",
            "start must be before end (business hours do not wrap past midnight)",
        );
    }
    let n = raw.nights.unwrap_or_default();
    let nights = DailySpan {
        start_minute: n
            .start
            .as_ref()
            .and_then(|v| hhmm(cx, v, "fraud.nights.start"))
            .unwrap_or(22 * 60),
        end_minute: n
            .end
            .as_ref()
            .and_then(|v| hhmm(cx, v, "fraud.nights.end"))
            .unwrap_or(6 * 60),
    };
    let weekend_default = [false, false, false, false, false, true, true];
    let weekend_days = match &raw.weekend_days {
        Some(d) => days(cx, d, "fraud.weekend_days", weekend_default),
        None => weekend_default,
    };
    let emergency_numbers = numbers(
        cx,
        raw.emergency_numbers.as_ref(),
        "fraud.emergency_numbers",
        DEFAULT_EMERGENCY_NUMBERS,
        false,
    );
    let international_prefixes = numbers(
        cx,
        raw.international_prefixes.as_ref(),
        "fraud.international_prefixes",
        &["00"],
        false,
    );
    let domestic_prefixes = numbers(
        cx,
        raw.domestic_prefixes.as_ref(),
        "fraud.domestic_prefixes",
        &[],
        true,
    );
    let high_risk_prefixes = numbers(
        cx,
        raw.high_risk_prefixes.as_ref(),
        "fraud.high_risk_prefixes",
        DEFAULT_HIGH_RISK_PREFIXES,
        true,
    );

    let mut rules: Vec<FraudRule> = Vec::new();
    for (i, r) in raw.rules.iter().flatten().enumerate() {
        let p = format!("fraud.rules[{i}]");
        let loc: Location = r.referenced;
        let r = &r.value;
        crate::validate::check_name(
            cx,
            &r.name,
            &format!("{p}.name"),
            64,
            crate::validate::node_name_char,
            "[A-Za-z0-9._-]",
        );
        if rules.iter().any(|x| x.name == r.name.value) {
            cx.err(
                r.name.referenced,
                format!("{p}.name"),
                format!("duplicate rule name `{}`", r.name.value),
            );
        }
        let kind = choice(cx, &r.kind, &format!("{p}.kind"), &RuleKind::ALL);
        let subject = r
            .subject
            .as_ref()
            .and_then(|v| {
                choice(
                    cx,
                    v,
                    &format!("{p}.subject"),
                    &[
                        ("trunk", SubjectKind::Trunk),
                        ("account", SubjectKind::Account),
                        ("source", SubjectKind::Source),
                    ],
                )
            })
            .unwrap_or(SubjectKind::Trunk);
        let mut rule_trunks = Vec::new();
        for (j, v) in r.trunks.iter().flatten().enumerate() {
            if let Some(id) = resolve_trunk(cx, trunks, v, &format!("{p}.trunks[{j}]")) {
                rule_trunks.push(id);
            }
        }
        let when = r
            .when
            .as_ref()
            .and_then(|v| choice(cx, v, &format!("{p}.when"), &When::ALL))
            .unwrap_or(When::Always);
        let warning = level(
            cx,
            r.warning.as_ref(),
            &format!("{p}.warning"),
            FraudAction::Alert,
        );
        let critical = level(
            cx,
            r.critical.as_ref(),
            &format!("{p}.critical"),
            FraudAction::Reject,
        );
        if warning.is_none() && critical.is_none() {
            cx.err(
                loc,
                p.clone(),
                "a rule needs a warning and/or a critical level",
            );
        }
        if let (Some(w), Some(c)) = (warning, critical)
            && w.threshold > c.threshold
            && let Some(v) = r.critical.as_ref()
        {
            cx.err(
                v.value.threshold.referenced,
                format!("{p}.critical.threshold"),
                format!(
                    "{} is below the warning threshold {}; critical must be the higher level",
                    c.threshold, w.threshold
                ),
            );
        }
        let reject_status = match &r.reject_status {
            None => 403,
            Some(v) if v.value == 403 || v.value == 603 => v.value as u16,
            Some(v) => {
                cx.err(
                    v.referenced,
                    format!("{p}.reject_status"),
                    format!("{} is not allowed; use 403 or 603", v.value),
                );
                403
            }
        };
        let window = Duration::from_secs(cx.num(
            r.window_seconds.as_ref(),
            &p,
            &num("window_seconds", 3600, WINDOW),
        ));
        let short_call = Duration::from_secs(cx.num(
            r.short_call_seconds.as_ref(),
            &p,
            &num("short_call_seconds", 5, 1..=3600),
        ));
        let max_step = clamp_u32(cx.num(r.max_step.as_ref(), &p, &num("max_step", 1, 1..=1000)));
        rules.push(FraudRule {
            name: r.name.value.clone(),
            kind: kind.unwrap_or(RuleKind::CallsPerMinute),
            subject,
            trunks: rule_trunks,
            when,
            warning,
            critical,
            reject_status,
            ban_trusted: r.ban_trusted.as_ref().is_some_and(|b| b.value),
            window,
            short_call,
            max_step,
        });
    }
    Fraud {
        timezone,
        business_days,
        business_hours: DailySpan {
            start_minute: start,
            end_minute: end,
        },
        nights,
        weekend_days,
        emergency_numbers,
        international_prefixes,
        domestic_prefixes,
        high_risk_prefixes,
        rules,
    }
}

/// Validates `alerts:`.
pub(crate) fn alerts(cx: &mut Ctx, raw: RawAlerts) -> Alerts {
    let database_path = match &raw.database_path {
        Some(p) => {
            if p.value.trim().is_empty() || p.value.contains('\0') {
                cx.err(p.referenced, "alerts.database_path", "must be a file path");
            }
            PathBuf::from(p.value.trim())
        }
        None => PathBuf::from(DEFAULT_DATABASE),
    };
    let max_evidence_calls = clamp_u32(cx.num(
        raw.max_evidence_calls.as_ref(),
        "alerts",
        &num("max_evidence_calls", 20, 1..=1000),
    ));
    Alerts {
        database_path,
        max_evidence_calls,
    }
}
