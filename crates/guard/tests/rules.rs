//! Every guard rule on a virtual clock: requests and calls are fed with
//! `now` values the test chooses, and the verdicts and actions checked.
#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use palisade_b2bua::{CallEnd, CallInfo, CallRef, EndReason, Flow, Verdict};
use palisade_config::{Config, Transport, ZoneId};
use palisade_guard::{Action, Guard, Reason};
use palisade_sip::{Message, ParseLimits};

/// The virtual clock's origin.
#[allow(clippy::disallowed_methods)] // the virtual clock needs one real origin
fn origin() -> Instant {
    Instant::now()
}

/// 2026-01-05 (a Monday) 09:30 in Berlin, in Unix milliseconds.
const MONDAY_0930_BERLIN: i64 = 1_767_601_800_000;

fn config(extra: &str) -> Arc<Config> {
    let yaml = format!(
        "zones:\n  - {{name: inside, sip_address: 127.0.0.1}}\n  - {{name: outside, sip_address: 127.0.0.2}}\n\
         trunks:\n  - {{name: pbx, zone: inside, members: [{{address: 127.0.0.10, port: 5070}}]}}\n\
         \x20 - {{name: carrier, zone: outside, members: [{{address: 127.0.0.20, port: 5080}}]}}\n\
         routes:\n  - {{name: r, to_trunk: carrier}}\n{extra}"
    );
    Arc::new(palisade_config::load_str(&yaml, "t.yaml").unwrap())
}

fn flow(ip: &str) -> Flow {
    Flow {
        zone: ZoneId(1),
        transport: Transport::Udp,
        remote: SocketAddr::new(ip.parse().unwrap(), 5060),
    }
}

fn request(method: &str, user: &str, ua: &str, n: u32) -> Message {
    let text = format!(
        "{method} sip:{user}@127.0.0.2 SIP/2.0\r\nVia: SIP/2.0/UDP 10.9.9.9:5060;branch=z9hG4bK{n}\r\n\
         Max-Forwards: 70\r\nFrom: <sip:caller@10.9.9.9>;tag=t{n}\r\nTo: <sip:{user}@127.0.0.2>\r\n\
         Call-ID: c{n}\r\nCSeq: 1 {method}\r\nContact: <sip:caller@10.9.9.9>\r\nUser-Agent: {ua}\r\n\
         Content-Length: 0\r\n\r\n"
    );
    Message::parse(Bytes::from(text), &ParseLimits::default()).unwrap()
}

fn actions(g: &mut Guard) -> Vec<Action> {
    std::iter::from_fn(|| g.poll_action()).collect()
}

fn bans(acts: &[Action]) -> Vec<Reason> {
    acts.iter()
        .filter_map(|a| match a {
            Action::Ban { reason, .. } => Some(*reason),
            _ => None,
        })
        .collect()
}

fn alerts(acts: &[Action]) -> Vec<(String, String)> {
    acts.iter()
        .filter_map(|a| match a {
            Action::Alert(e) => Some((e.rule.clone(), e.severity.as_str().to_owned())),
            _ => None,
        })
        .collect()
}

#[test]
fn scanner_user_agent_is_banned_on_the_first_request() {
    let t0 = origin();
    let mut g = Guard::new(config(""), t0, MONDAY_0930_BERLIN);
    let v = g.on_request(
        t0,
        &flow("198.51.100.7"),
        None,
        &request("OPTIONS", "100", "friendly-scanner", 1),
    );
    assert_eq!(v, Verdict::Drop);
    assert_eq!(bans(&actions(&mut g)), [Reason::ScannerUserAgent]);
    // Then everything from it is dropped without a new ban.
    let v = g.on_request(
        t0,
        &flow("198.51.100.7"),
        None,
        &request("OPTIONS", "100", "x", 2),
    );
    assert_eq!(v, Verdict::Drop);
    assert!(bans(&actions(&mut g)).is_empty());
    // The ban expires.
    let later = t0 + Duration::from_secs(3601);
    assert_eq!(
        g.on_request(
            later,
            &flow("198.51.100.7"),
            None,
            &request("OPTIONS", "1", "x", 3)
        ),
        Verdict::Allow
    );
}

#[test]
fn sipvicious_fingerprint_without_its_user_agent() {
    let t0 = origin();
    let mut g = Guard::new(config(""), t0, MONDAY_0930_BERLIN);
    let tag: String = b"100\x0112345".iter().map(|b| format!("{b:02x}")).collect();
    let text = format!(
        "REGISTER sip:127.0.0.2 SIP/2.0\r\nVia: SIP/2.0/UDP 10.9.9.9:5060;branch=z9hG4bK1\r\nMax-Forwards: 70\r\n\
         From: <sip:100@127.0.0.2>;tag={tag}\r\nTo: <sip:100@127.0.0.2>\r\nCall-ID: x\r\nCSeq: 1 REGISTER\r\n\
         Contact: <sip:100@10.9.9.9>\r\nUser-Agent: Asterisk\r\nContent-Length: 0\r\n\r\n"
    );
    let msg = Message::parse(Bytes::from(text), &ParseLimits::default()).unwrap();
    assert_eq!(
        g.on_request(t0, &flow("198.51.100.8"), None, &msg),
        Verdict::Drop
    );
    assert_eq!(bans(&actions(&mut g)), [Reason::ScannerFingerprint]);
}

#[test]
fn one_source_probing_many_users_is_banned() {
    let t0 = origin();
    let mut g = Guard::new(
        config(
            "guard: {default_limits: {requests_per_second: 1000, requests_burst: 1000, registers_per_second: 1000, registers_burst: 1000}}",
        ),
        t0,
        MONDAY_0930_BERLIN,
    );
    for i in 0..9u32 {
        let t = t0 + Duration::from_secs(u64::from(i));
        assert_eq!(
            g.on_request(
                t,
                &flow("198.51.100.9"),
                None,
                &request("REGISTER", &format!("{}", 100 + i), "pbx", i)
            ),
            Verdict::Allow
        );
    }
    let t = t0 + Duration::from_secs(9);
    assert_eq!(
        g.on_request(
            t,
            &flow("198.51.100.9"),
            None,
            &request("REGISTER", "200", "pbx", 99)
        ),
        Verdict::Drop
    );
    assert_eq!(bans(&actions(&mut g)), [Reason::UserEnumeration]);
}

#[test]
fn rates_ban_untrusted_and_only_throttle_trusted() {
    let t0 = origin();
    let mut g = Guard::new(
        config("guard: {trusted: {requests_per_second: 5, requests_burst: 5}}"),
        t0,
        MONDAY_0930_BERLIN,
    );
    // Untrusted: 10 INVITEs burst, the 11th bans.
    for i in 0..10 {
        assert_eq!(
            g.on_request(
                t0,
                &flow("198.51.100.10"),
                None,
                &request("INVITE", "1", "x", i)
            ),
            Verdict::Allow
        );
    }
    assert_eq!(
        g.on_request(
            t0,
            &flow("198.51.100.10"),
            None,
            &request("INVITE", "1", "x", 11)
        ),
        Verdict::Drop
    );
    assert_eq!(bans(&actions(&mut g)), [Reason::RateInvites]);
    // Trusted (the carrier): over its rate it gets 503, never a ban.
    let carrier = flow("127.0.0.20");
    let trunk = Some(palisade_config::TrunkId(1));
    for i in 0..5 {
        assert_eq!(
            g.on_request(t0, &carrier, trunk, &request("INVITE", "1", "x", 100 + i)),
            Verdict::Allow
        );
    }
    assert_eq!(
        g.on_request(t0, &carrier, trunk, &request("INVITE", "1", "x", 200)),
        Verdict::Reject(503)
    );
    assert!(bans(&actions(&mut g)).is_empty());
    assert!(g.ban_of(t0, "127.0.0.20".parse().unwrap()).is_none());
    // A second later it flows again.
    assert_eq!(
        g.on_request(
            t0 + Duration::from_secs(1),
            &carrier,
            trunk,
            &request("INVITE", "1", "x", 201)
        ),
        Verdict::Allow
    );
}

#[test]
fn malformed_bursts_and_auth_failures_ban() {
    let t0 = origin();
    let mut g = Guard::new(config(""), t0, MONDAY_0930_BERLIN);
    for _ in 0..10 {
        g.on_malformed(t0, &flow("198.51.100.11"));
    }
    for i in 0..5 {
        g.auth_failed(t0, &flow("198.51.100.12"), &format!("user{i}"));
    }
    assert_eq!(
        bans(&actions(&mut g)),
        [Reason::MalformedBurst, Reason::AuthFailures]
    );
    // Trusted sources are never banned for either.
    for _ in 0..50 {
        g.on_malformed(t0, &flow("127.0.0.20"));
        g.auth_failed(t0, &flow("127.0.0.20"), "x");
    }
    assert!(bans(&actions(&mut g)).is_empty());
}

#[test]
fn allow_and_deny_lists() {
    let t0 = origin();
    let mut g = Guard::new(
        config("guard: {allow: [203.0.113.0/24], deny: [192.0.2.0/24]}"),
        t0,
        MONDAY_0930_BERLIN,
    );
    assert_eq!(
        g.on_request(
            t0,
            &flow("192.0.2.5"),
            None,
            &request("OPTIONS", "1", "x", 1)
        ),
        Verdict::Drop
    );
    // Allow-listed: even a scanner User-Agent is not banned.
    assert_eq!(
        g.on_request(
            t0,
            &flow("203.0.113.5"),
            None,
            &request("OPTIONS", "1", "friendly-scanner", 2)
        ),
        Verdict::Allow
    );
    assert!(bans(&actions(&mut g)).is_empty());
}

#[test]
fn dry_run_counts_but_allows() {
    let t0 = origin();
    let mut g = Guard::new(config("guard: {mode: dry-run}"), t0, MONDAY_0930_BERLIN);
    assert_eq!(
        g.on_request(
            t0,
            &flow("198.51.100.7"),
            None,
            &request("OPTIONS", "1", "sipcli", 1)
        ),
        Verdict::Allow
    );
    let acts = actions(&mut g);
    assert!(bans(&acts).is_empty());
    assert!(acts.iter().any(
        |a| matches!(a, Action::Decision(d) if d.dry_run && d.reason == Reason::ScannerUserAgent)
    ));
    assert_eq!(g.stats().dry_run_decisions, 1);
}

struct Calls {
    g: Guard,
    cfg: Arc<Config>,
    next: u64,
}

impl Calls {
    fn new(extra: &str, t0: Instant, unix: i64) -> Self {
        let cfg = config(extra);
        Calls {
            g: Guard::new(Arc::clone(&cfg), t0, unix),
            cfg,
            next: 1,
        }
    }

    fn start(&mut self, now: Instant, number: &str) -> (CallRef, Verdict) {
        self.start_from(now, "127.0.0.10:5070", 0, "+4989555000", number)
    }

    /// A call from `source` on trunk index `trunk` (0 = pbx, 1 = carrier).
    fn start_from(
        &mut self,
        now: Instant,
        source: &str,
        trunk: usize,
        caller: &str,
        number: &str,
    ) -> (CallRef, Verdict) {
        let call = CallRef(self.next);
        self.next += 1;
        let info = CallInfo {
            call,
            source: source.parse().unwrap(),
            from_trunk: &self.cfg.trunks()[trunk],
            to_trunk: &self.cfg.trunks()[1 - trunk],
            caller,
            number,
        };
        (call, self.g.on_call_start(now, &info))
    }

    fn end(&mut self, now: Instant, call: CallRef, answered: bool, secs: u64) {
        let end = CallEnd {
            reason: if answered {
                EndReason::CallerBye
            } else {
                EndReason::Rejected
            },
            status: (!answered).then_some(486),
            answered,
            duration: Duration::from_secs(secs),
        };
        self.g.on_call_ended(now, call, &end);
    }

    fn alerts(&mut self) -> Vec<(String, String)> {
        alerts(&actions(&mut self.g))
    }
}

fn rule(kind: &str, extra: &str) -> String {
    format!(
        "fraud:\n  domestic_prefixes: [\"+49\"]\n  rules:\n    - {{name: r, kind: {kind}, warning: {{threshold: 3}}, critical: {{threshold: 5, action: reject}}{extra}}}\n"
    )
}

#[test]
fn calls_per_minute_warns_then_rejects_and_forgets_after_a_minute() {
    let t0 = origin();
    let mut c = Calls::new(&rule("calls_per_minute", ""), t0, MONDAY_0930_BERLIN);
    let mut verdicts = Vec::new();
    for i in 0..5u64 {
        verdicts.push(
            c.start(t0 + Duration::from_secs(i), &format!("+4930{}", i * 11))
                .1,
        );
    }
    assert_eq!(verdicts[..4], [Verdict::Allow; 4]);
    assert_eq!(verdicts[4], Verdict::Reject(403));
    assert_eq!(
        c.alerts(),
        [
            ("r".into(), "warning".into()),
            ("r".into(), "critical".into())
        ]
    );
    // Two minutes later the window is empty.
    assert_eq!(
        c.start(t0 + Duration::from_secs(130), "+4930999").1,
        Verdict::Allow
    );
}

#[test]
fn concurrent_calls_count_down_when_calls_end() {
    let t0 = origin();
    let mut c = Calls::new(&rule("concurrent_calls", ""), t0, MONDAY_0930_BERLIN);
    let calls: Vec<CallRef> = (0..4)
        .map(|i| c.start(t0, &format!("+4930{i}")).0)
        .collect();
    assert_eq!(c.start(t0, "+49305").1, Verdict::Reject(403));
    for call in calls {
        c.end(t0, call, true, 10);
    }
    assert_eq!(c.start(t0, "+49306").1, Verdict::Allow);
}

#[test]
fn high_risk_and_international_after_hours() {
    let t0 = origin();
    let mut c = Calls::new(&rule("high_risk_destination", ""), t0, MONDAY_0930_BERLIN);
    assert_eq!(c.start(t0, "+4930123").1, Verdict::Allow);
    for _ in 0..4 {
        c.start(t0, "0088212345");
    }
    assert_eq!(c.start(t0, "+252123").1, Verdict::Reject(403));
    // After hours: Monday 09:30 Berlin is business hours, so nothing counts;
    // at 23:00 it does.
    let extra = format!(
        "{}  timezone: Europe/Berlin\n",
        rule("international_after_hours", "")
    );
    let mut c = Calls::new(&extra, t0, MONDAY_0930_BERLIN);
    for _ in 0..6 {
        assert_eq!(c.start(t0, "+1212555").1, Verdict::Allow);
    }
    assert!(c.alerts().is_empty());
    let night = MONDAY_0930_BERLIN + 13 * 3_600_000 + 1_800_000;
    let mut c = Calls::new(&extra, t0, night);
    let v: Vec<Verdict> = (0..5).map(|_| c.start(t0, "+1212555").1).collect();
    assert_eq!(v[4], Verdict::Reject(403));
    // Domestic and emergency numbers never count.
    assert_eq!(c.start(t0, "+4930123").1, Verdict::Allow);
    assert_eq!(c.start(t0, "112").1, Verdict::Allow);
}

#[test]
fn number_walking_and_repeated_calls() {
    let t0 = origin();
    let mut c = Calls::new(
        &rule("number_walking", ", max_step: 2"),
        t0,
        MONDAY_0930_BERLIN,
    );
    let v: Vec<Verdict> = [100, 101, 103, 104, 106]
        .iter()
        .map(|n| c.start(t0, &format!("+49711{n}")).1)
        .collect();
    assert_eq!(v[4], Verdict::Reject(403));
    // A jump breaks the run.
    let mut c = Calls::new(&rule("number_walking", ""), t0, MONDAY_0930_BERLIN);
    for n in [100, 101, 150, 151, 190] {
        assert_eq!(c.start(t0, &format!("+49711{n}")).1, Verdict::Allow);
    }
    assert!(c.alerts().is_empty());
    let mut c = Calls::new(&rule("repeated_calls", ""), t0, MONDAY_0930_BERLIN);
    let v: Vec<Verdict> = (0..5).map(|_| c.start(t0, "+4930555").1).collect();
    assert_eq!(v[4], Verdict::Reject(403));
}

#[test]
fn wangiri_counts_short_and_unanswered_calls_then_blocks() {
    let t0 = origin();
    let mut c = Calls::new(
        &rule("wangiri", ", short_call_seconds: 5"),
        t0,
        MONDAY_0930_BERLIN,
    );
    for i in 0..5 {
        let (call, v) = c.start(t0, &format!("+4930{}", i * 13));
        assert_eq!(v, Verdict::Allow);
        c.end(t0, call, i % 2 == 0, 1);
    }
    // A long call does not count.
    let (call, _) = c.start(t0, "+4930777");
    c.end(t0, call, true, 60);
    assert_eq!(c.alerts().last(), Some(&("r".into(), "critical".into())));
    assert_eq!(c.start(t0, "+4930888").1, Verdict::Reject(403));
}

#[test]
fn minutes_per_day_resets_at_local_midnight() {
    let t0 = origin();
    let extra = "fraud:\n  timezone: Europe/Berlin\n  rules:\n    - {name: m, kind: minutes_per_day, critical: {threshold: 10, action: reject}}\n";
    let mut c = Calls::new(extra, t0, MONDAY_0930_BERLIN);
    let (a, _) = c.start(t0, "+4930100");
    c.end(t0, a, true, 11 * 60);
    assert_eq!(c.start(t0, "+4930200").1, Verdict::Reject(403));
    assert_eq!(c.alerts().first(), Some(&("m".into(), "critical".into())));
    // The next local day starts afresh (15 h later is 00:30 Tuesday).
    let t1 = t0 + Duration::from_secs(15 * 3600);
    assert_eq!(c.start(t1, "+4930300").1, Verdict::Allow);
}

#[test]
fn calls_per_day_fires_on_its_own_and_resets_at_local_midnight() {
    let t0 = origin();
    // A minutes rule alongside that these short calls never reach: only `d` fires.
    let extra = "fraud:\n  timezone: Europe/Berlin\n  rules:\n    - {name: m, kind: minutes_per_day, critical: {threshold: 600, action: reject}}\n    - {name: d, kind: calls_per_day, warning: {threshold: 4}, critical: {threshold: 5, action: reject}}\n";
    let mut c = Calls::new(extra, t0, MONDAY_0930_BERLIN);
    let mut verdicts = Vec::new();
    // Spread over the day (an hour apart): no per-minute effect.
    for i in 0..5u64 {
        let t = t0 + Duration::from_secs(i * 3600);
        let (call, v) = c.start(t, &format!("+49301{i}0"));
        verdicts.push(v);
        c.end(t + Duration::from_secs(30), call, true, 30);
    }
    assert_eq!(verdicts[..4], [Verdict::Allow; 4]);
    assert_eq!(verdicts[4], Verdict::Reject(403));
    assert_eq!(
        c.alerts(),
        [
            ("d".into(), "warning".into()),
            ("d".into(), "critical".into())
        ]
    );
    // 00:30 Tuesday in Berlin: a new day, the count starts again.
    let t1 = t0 + Duration::from_secs(15 * 3600);
    assert_eq!(c.start(t1, "+4930999").1, Verdict::Allow);
    assert!(c.alerts().is_empty());
}

#[test]
fn duration_cap_tears_the_call_down_mid_way() {
    let t0 = origin();
    let extra = "fraud:\n  rules:\n    - {name: cap, kind: max_call_duration, warning: {threshold: 60}, critical: {threshold: 120, action: teardown}}\n";
    let mut c = Calls::new(extra, t0, MONDAY_0930_BERLIN);
    let (call, v) = c.start(t0, "+4930100");
    assert_eq!(v, Verdict::Allow);
    c.g.on_call_answered(t0, call);
    let mut torn = None;
    let mut t = t0;
    for _ in 0..200 {
        let Some(next) = c.g.poll_timeout() else {
            break;
        };
        t = next;
        c.g.handle_timeout(t);
        let acts = actions(&mut c.g);
        if let Some(Action::Terminate { call: x, .. }) =
            acts.iter().find(|a| matches!(a, Action::Terminate { .. }))
        {
            torn = Some((*x, t));
            break;
        }
    }
    let (x, at) = torn.expect("no teardown");
    assert_eq!(x, call);
    assert_eq!(at.duration_since(t0), Duration::from_secs(120));
    let _ = t;
    // Emergency calls are never capped.
    let (e, _) = c.start(t0, "112");
    c.g.on_call_answered(t0, e);
    c.g.handle_timeout(t0 + Duration::from_secs(100_000));
    assert!(
        !actions(&mut c.g)
            .iter()
            .any(|a| matches!(a, Action::Terminate { call, .. } if *call == e))
    );
}

fn ban_actions(acts: &[Action]) -> Vec<(std::net::IpAddr, Reason)> {
    acts.iter()
        .filter_map(|a| match a {
            Action::Ban { ip, reason, .. } => Some((*ip, *reason)),
            _ => None,
        })
        .collect()
}

fn terminated(acts: &[Action]) -> Vec<CallRef> {
    acts.iter()
        .filter_map(|a| match a {
            Action::Terminate { call, .. } => Some(*call),
            _ => None,
        })
        .collect()
}

const PHONE: &str = "198.51.100.50:5060";

fn ban_rule(extra: &str) -> String {
    format!(
        "fraud:\n  rules:\n    - {{name: b, kind: concurrent_calls, warning: {{threshold: 2}}, critical: {{threshold: 3, action: ban}}{extra}}}\n"
    )
}

#[test]
fn fraud_ban_bans_an_untrusted_source_such_as_a_registered_phone() {
    let t0 = origin();
    // A phone registered on the pbx (registrar) trunk calls from its own
    // address: untrusted, so the rule's `ban` bans it.
    let mut c = Calls::new(&ban_rule(""), t0, MONDAY_0930_BERLIN);
    let (a, _) = c.start_from(t0, PHONE, 0, "100", "+4930111");
    let (b, _) = c.start_from(t0, PHONE, 0, "100", "+4930222");
    let _ = actions(&mut c.g);
    let (_, v) = c.start_from(t0, PHONE, 0, "100", "+4930333");
    assert_eq!(v, Verdict::Reject(403));
    let acts = actions(&mut c.g);
    let phone: std::net::IpAddr = "198.51.100.50".parse().unwrap();
    assert_eq!(ban_actions(&acts), [(phone, Reason::Fraud)]);
    // Ban includes teardown of the subject's running calls.
    let mut torn = terminated(&acts);
    torn.sort();
    assert_eq!(torn, [a, b]);
    assert!(c.g.ban_of(t0, phone).is_some());
    // And the phone's next request is dropped.
    assert_eq!(
        c.g.on_request(
            t0,
            &flow("198.51.100.50"),
            None,
            &request("INVITE", "1", "x", 9)
        ),
        Verdict::Drop
    );
}

#[test]
fn fraud_ban_on_a_trusted_trunk_tears_down_unless_explicitly_allowed() {
    let t0 = origin();
    let pbx: std::net::IpAddr = "127.0.0.10".parse().unwrap();
    let run = |extra: &str| {
        let mut c = Calls::new(extra, t0, MONDAY_0930_BERLIN);
        let (a, _) = c.start(t0, "+4930111");
        let (b, _) = c.start(t0, "+4930222");
        let (_, v) = c.start(t0, "+4930333");
        let acts = actions(&mut c.g);
        (c, v, [a, b], acts)
    };
    // The PBX's own address: torn down and refused, never banned.
    let (mut c, v, running, acts) = run(&ban_rule(""));
    assert_eq!(v, Verdict::Reject(403));
    assert!(ban_actions(&acts).is_empty(), "{acts:?}");
    let mut torn = terminated(&acts);
    torn.sort();
    assert_eq!(torn, running);
    assert!(c.g.ban_of(t0, pbx).is_none());
    assert_eq!(
        c.g.on_request(
            t0,
            &flow("127.0.0.10"),
            Some(palisade_config::TrunkId(0)),
            &request("OPTIONS", "1", "x", 1)
        ),
        Verdict::Allow
    );
    // ban_trusted alone is not enough: the trunk must be bannable too.
    let (_, _, _, acts) = run(&ban_rule(", ban_trusted: true"));
    assert!(ban_actions(&acts).is_empty(), "{acts:?}");
    // An allow-listed source counts as trusted as well.
    let mut c = Calls::new(
        &format!("guard: {{allow: [198.51.100.0/24]}}\n{}", ban_rule("")),
        t0,
        MONDAY_0930_BERLIN,
    );
    for n in ["+4930111", "+4930222", "+4930333"] {
        c.start_from(t0, PHONE, 0, "100", n);
    }
    assert!(ban_actions(&actions(&mut c.g)).is_empty());
    // Both: the trunk is banned, and its requests are dropped in-process.
    let (mut c, _, _, acts) = run(&format!(
        "guard: {{trusted: {{bannable_trunks: [pbx]}}}}\n{}",
        ban_rule(", ban_trusted: true")
    ));
    assert_eq!(ban_actions(&acts), [(pbx, Reason::Fraud)]);
    assert_eq!(
        c.g.on_request(
            t0,
            &flow("127.0.0.10"),
            Some(palisade_config::TrunkId(0)),
            &request("OPTIONS", "1", "x", 2)
        ),
        Verdict::Drop
    );
}

#[test]
fn duration_cap_with_ban_bans_an_untrusted_caller_mid_call() {
    let t0 = origin();
    let extra = "fraud:\n  rules:\n    - {name: cap, kind: max_call_duration, critical: {threshold: 60, action: ban}}\n";
    let mut c = Calls::new(extra, t0, MONDAY_0930_BERLIN);
    let (phone_call, _) = c.start_from(t0, PHONE, 0, "100", "+4930111");
    let (pbx_call, _) = c.start(t0, "+4930222");
    c.g.on_call_answered(t0, phone_call);
    c.g.on_call_answered(t0, pbx_call);
    c.g.handle_timeout(t0 + Duration::from_secs(61));
    let acts = actions(&mut c.g);
    let mut torn = terminated(&acts);
    torn.sort();
    assert_eq!(torn, [phone_call, pbx_call]);
    assert_eq!(
        ban_actions(&acts),
        [("198.51.100.50".parse().unwrap(), Reason::Fraud)]
    );
}

#[test]
fn rules_apply_only_in_their_when_window() {
    let t0 = origin();
    let monday_2300 = MONDAY_0930_BERLIN + 13 * 3_600_000 + 1_800_000;
    let monday_1900 = MONDAY_0930_BERLIN + 9 * 3_600_000 + 1_800_000;
    // 2026-01-10 is a Saturday; 10:00 in Berlin.
    let saturday_1000 = MONDAY_0930_BERLIN + 5 * 86_400_000 + 1_800_000;
    let fires = |when: &str, unix: i64| {
        let extra = format!(
            "fraud:\n  timezone: Europe/Berlin\n  rules:\n    - {{name: w, kind: repeated_calls, when: {when}, warning: {{threshold: 2}}}}\n"
        );
        let mut c = Calls::new(&extra, t0, unix);
        c.start(t0, "+4930555");
        c.start(t0, "+4930555");
        !c.alerts().is_empty()
    };
    let table = [
        ("always", [true, true, true, true]),
        ("business_hours", [true, false, false, false]),
        ("after_hours", [false, true, true, true]),
        ("nights", [false, false, true, false]),
        ("weekends", [false, false, false, true]),
    ];
    for (when, expect) in table {
        let got = [
            fires(when, MONDAY_0930_BERLIN),
            fires(when, monday_1900),
            fires(when, monday_2300),
            fires(when, saturday_1000),
        ];
        assert_eq!(
            got, expect,
            "when: {when} (Mon 09:30, Mon 19:00, Mon 23:00, Sat 10:00)"
        );
    }
}

#[test]
fn subjects_count_per_trunk_account_or_source() {
    let t0 = origin();
    let run = |subject: &str| {
        let extra = format!(
            "fraud:\n  rules:\n    - {{name: s, kind: calls_per_minute, subject: {subject}, warning: {{threshold: 3}}}}\n"
        );
        let mut c = Calls::new(&extra, t0, MONDAY_0930_BERLIN);
        // Two callers from one source, then one caller from a second source:
        // account 100 makes 2 calls, account 200 makes 2, source A makes 3,
        // source B makes 1; the trunk makes 4.
        c.start_from(t0, "127.0.0.10:5070", 0, "100", "+4930111");
        c.start_from(t0, "127.0.0.10:5070", 0, "100", "+4930222");
        c.start_from(t0, "127.0.0.10:5070", 0, "200", "+4930333");
        c.start_from(t0, PHONE, 0, "200", "+4930444");
        actions(&mut c.g)
            .iter()
            .filter_map(|a| match a {
                Action::Alert(e) => Some(format!(
                    "{}={} ({})",
                    e.subject.kind, e.subject.value, e.measure
                )),
                _ => None,
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(run("trunk"), ["trunk=pbx (3)"]);
    assert_eq!(run("source"), ["source=127.0.0.10 (3)"]);
    assert!(run("account").is_empty(), "{:?}", run("account"));
}

#[test]
fn trunks_filter_limits_a_rule_to_its_trunks() {
    let t0 = origin();
    let extra = "fraud:\n  rules:\n    - {name: t, kind: repeated_calls, trunks: [carrier], warning: {threshold: 2}}\n";
    let mut c = Calls::new(extra, t0, MONDAY_0930_BERLIN);
    for _ in 0..4 {
        c.start(t0, "+4930555");
    }
    assert!(c.alerts().is_empty(), "the pbx's calls do not count");
    for _ in 0..2 {
        c.start_from(t0, "127.0.0.20:5080", 1, "+4930777", "+4930123456");
    }
    assert_eq!(c.alerts(), [("t".into(), "warning".into())]);
}

#[test]
fn teardown_on_a_counting_rule_ends_the_subjects_running_calls() {
    let t0 = origin();
    let extra = "fraud:\n  rules:\n    - {name: cc, kind: concurrent_calls, critical: {threshold: 3, action: teardown}, reject_status: 603}\n";
    let mut c = Calls::new(extra, t0, MONDAY_0930_BERLIN);
    let (a, _) = c.start(t0, "+4930111");
    let (b, _) = c.start(t0, "+4930222");
    let (_, v) = c.start(t0, "+4930333");
    // The new call is refused with the rule's status; the two running end.
    assert_eq!(v, Verdict::Reject(603));
    let acts = actions(&mut c.g);
    let mut torn = terminated(&acts);
    torn.sort();
    assert_eq!(torn, [a, b]);
    assert!(ban_actions(&acts).is_empty());
    assert_eq!(c.g.stats().calls_torn_down, 2);
    // Emergency calls are never refused or torn down.
    let (_, v) = c.start(t0, "112");
    assert_eq!(v, Verdict::Allow);
}

#[test]
fn reject_status_603_is_what_the_caller_gets() {
    let t0 = origin();
    let mut c = Calls::new(
        &rule("repeated_calls", ", reject_status: 603"),
        t0,
        MONDAY_0930_BERLIN,
    );
    let v: Vec<Verdict> = (0..6).map(|_| c.start(t0, "+4930555").1).collect();
    assert_eq!(v[..4], [Verdict::Allow; 4]);
    assert_eq!(v[4..], [Verdict::Reject(603); 2]);
}

#[test]
fn register_and_total_request_buckets_ban_separately() {
    let t0 = origin();
    // REGISTERs: 2 per second, burst 3; other requests plenty.
    let mut g = Guard::new(
        config(
            "guard: {default_limits: {registers_per_second: 2, registers_burst: 3, requests_per_second: 1000, requests_burst: 1000}}",
        ),
        t0,
        MONDAY_0930_BERLIN,
    );
    for i in 0..3 {
        assert_eq!(
            g.on_request(
                t0,
                &flow("198.51.100.20"),
                None,
                &request("REGISTER", "100", "x", i)
            ),
            Verdict::Allow
        );
    }
    assert_eq!(
        g.on_request(
            t0,
            &flow("198.51.100.20"),
            None,
            &request("REGISTER", "100", "x", 3)
        ),
        Verdict::Drop
    );
    assert_eq!(bans(&actions(&mut g)), [Reason::RateRegisters]);
    // OPTIONS from another source are not REGISTERs: many pass.
    for i in 0..50 {
        assert_eq!(
            g.on_request(
                t0,
                &flow("198.51.100.21"),
                None,
                &request("OPTIONS", "100", "x", i)
            ),
            Verdict::Allow
        );
    }
    // Every request counts in the total bucket: 5 burst, then a ban.
    let mut g = Guard::new(
        config("guard: {default_limits: {requests_per_second: 1, requests_burst: 5}}"),
        t0,
        MONDAY_0930_BERLIN,
    );
    for (i, m) in ["OPTIONS", "INFO", "OPTIONS", "MESSAGE", "OPTIONS"]
        .iter()
        .enumerate()
    {
        assert_eq!(
            g.on_request(
                t0,
                &flow("198.51.100.22"),
                None,
                &request(m, "100", "x", i as u32)
            ),
            Verdict::Allow
        );
    }
    assert_eq!(
        g.on_request(
            t0,
            &flow("198.51.100.22"),
            None,
            &request("OPTIONS", "100", "x", 9)
        ),
        Verdict::Drop
    );
    assert_eq!(bans(&actions(&mut g)), [Reason::RateRequests]);
}

#[test]
fn each_zone_has_its_own_limits() {
    let t0 = origin();
    let mut g = Guard::new(
        config(
            "guard:\n  default_limits: {invites_per_second: 1, invites_burst: 2}\n  zone_limits:\n    - {zone: inside, invites_per_second: 50, invites_burst: 20}\n",
        ),
        t0,
        MONDAY_0930_BERLIN,
    );
    let inside = |ip: &str| Flow {
        zone: ZoneId(0),
        ..flow(ip)
    };
    // Ten INVITEs at once: fine on the inside zone...
    for i in 0..10 {
        assert_eq!(
            g.on_request(
                t0,
                &inside("10.1.1.1"),
                None,
                &request("INVITE", "1", "x", i)
            ),
            Verdict::Allow
        );
    }
    // ...the third on the outside zone bans.
    let v: Vec<Verdict> = (0..3)
        .map(|i| {
            g.on_request(
                t0,
                &flow("198.51.100.30"),
                None,
                &request("INVITE", "1", "x", 20 + i),
            )
        })
        .collect();
    assert_eq!(v, [Verdict::Allow, Verdict::Allow, Verdict::Drop]);
    assert_eq!(bans(&actions(&mut g)), [Reason::RateInvites]);
}

#[test]
fn the_ban_table_is_capped_and_evicts_the_oldest_ban() {
    let t0 = origin();
    let mut g = Guard::new(config("guard: {max_bans: 16}"), t0, MONDAY_0930_BERLIN);
    for i in 0..40u32 {
        let t = t0 + Duration::from_millis(u64::from(i));
        let ip = format!("198.51.100.{}", 100 + i);
        assert_eq!(
            g.on_request(t, &flow(&ip), None, &request("OPTIONS", "1", "sipcli", i)),
            Verdict::Drop
        );
    }
    let s = g.stats();
    assert_eq!(s.bans_issued, 40);
    assert_eq!(s.bans_active, 16);
    assert_eq!(s.bans_evicted, 24);
    // The newest 16 are held; the oldest went first.
    let t = t0 + Duration::from_secs(1);
    assert!(g.ban_of(t, "198.51.100.139".parse().unwrap()).is_some());
    assert!(g.ban_of(t, "198.51.100.124".parse().unwrap()).is_some());
    assert!(g.ban_of(t, "198.51.100.123".parse().unwrap()).is_none());
}

proptest::proptest! {
    /// Whatever arrives from however many sources, the tables stay within
    /// their caps (sources, bans, fraud rule states) and counters never go
    /// negative (they are unsigned and saturate; the gauges return to zero
    /// when calls end).
    #[test]
    fn tables_are_bounded(ips in proptest::collection::vec(0u32..5000, 1..400), steps in proptest::collection::vec(0u64..3000, 1..400)) {
        let t0 = origin();
        let mut c = Calls::new("guard: {max_sources: 64, max_bans: 16}\nfraud:\n  rules:\n    - {name: r, kind: calls_per_minute, subject: source, warning: {threshold: 2}}\n    - {name: a, kind: repeated_calls, subject: account, warning: {threshold: 2}}\n", t0, MONDAY_0930_BERLIN);
        let mut t = t0;
        let mut live = Vec::new();
        let mut scanners = std::collections::HashSet::new();
        for (i, ip) in ips.iter().enumerate() {
            t += Duration::from_millis(*steps.get(i).unwrap_or(&1));
            let addr = std::net::Ipv4Addr::from(0xC633_0000 | ip);
            // Every third source is a scanner: banned on sight.
            let ua = if ip % 3 == 0 { "friendly-scanner" } else { "x" };
            if ip % 3 == 0 { scanners.insert(*ip); }
            let _ = c.g.on_request(t, &flow(&addr.to_string()), None, &request("INVITE", &ip.to_string(), ua, i as u32));
            let (call, v) = c.start_from(t, &format!("{addr}:5060"), 0, &format!("{ip}"), &format!("+4930{ip}"));
            if v == Verdict::Allow { live.push(call); }
            let _ = actions(&mut c.g);
            let s = c.g.stats();
            proptest::prop_assert!(s.sources_tracked <= 64);
            proptest::prop_assert!(s.bans_active <= 16, "bans_active {}", s.bans_active);
            proptest::prop_assert!(s.fraud_states <= 64, "fraud_states {}", s.fraud_states);
            proptest::prop_assert!(s.bans_active + s.bans_evicted <= s.bans_issued);
        }
        let s = c.g.stats();
        if scanners.len() > 16 {
            proptest::prop_assert!(s.bans_evicted > 0);
        }
        for call in live { c.end(t, call, true, 1); }
        proptest::prop_assert_eq!(c.g.tracked_calls(), 0);
        // Bans expire: after the ban time the table empties at housekeeping.
        let later = t + Duration::from_secs(3700);
        c.g.handle_timeout(later);
        proptest::prop_assert_eq!(c.g.stats().bans_active, 0);
    }
}

proptest::proptest! {
    /// The fuzz entry point on random operations (the cargo-fuzz target
    /// runs the same function).
    #[test]
    fn fuzz_drive_holds_its_checks(data in proptest::collection::vec(proptest::num::u8::ANY, 0..2048)) {
        palisade_guard::fuzz::drive(origin(), &data);
    }
}
