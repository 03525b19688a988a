//! The fuzzing entry point: the guard driven by arbitrary bytes.
//!
//! Bytes become a sequence of operations on one guard (every fraud rule on,
//! small tables): requests (the rest of a chunk parsed as SIP from one of 16
//! sources), malformed messages, authentication failures, calls started,
//! answered and ended, and clock steps. Checks: no panic; the source table
//! stays within its cap; every action refers to a call that was started;
//! the fraud engine forgets every call that ended.

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use palisade_b2bua::{CallEnd, CallInfo, CallRef, EndReason, Flow, Verdict};
use palisade_config::{Transport, ZoneId};
use palisade_sip::{Message, ParseLimits};

use crate::{Action, Guard};

const CONFIG: &str = "\
zones:
  - {name: inside, sip_address: 127.0.0.1}
  - {name: outside, sip_address: 127.0.0.2}
trunks:
  - {name: pbx, zone: inside, members: [{address: 127.0.0.10}]}
  - {name: carrier, zone: outside, members: [{address: 127.0.0.20}]}
routes:
  - {name: r, to_trunk: carrier}
guard:
  max_sources: 16
fraud:
  rules:
    - {name: a, kind: calls_per_minute, warning: {threshold: 2}, critical: {threshold: 4, action: ban}, ban_trusted: true}
    - {name: b, kind: concurrent_calls, subject: account, critical: {threshold: 3, action: teardown}}
    - {name: c, kind: minutes_per_day, warning: {threshold: 1}}
    - {name: d, kind: high_risk_destination, critical: {threshold: 1}}
    - {name: e, kind: international_after_hours, warning: {threshold: 1}}
    - {name: f, kind: number_walking, warning: {threshold: 2}, critical: {threshold: 3, action: teardown}}
    - {name: g, kind: wangiri, subject: source, warning: {threshold: 1}}
    - {name: h, kind: repeated_calls, critical: {threshold: 2, action: reject}}
    - {name: i, kind: max_call_duration, warning: {threshold: 1}, critical: {threshold: 2, action: ban}}
";

/// Runs the operations `data` encodes on a virtual clock starting at
/// `origin`. Panics when a check fails.
pub fn drive(origin: Instant, data: &[u8]) {
    // Loaded once per process: parsing YAML per input would dominate the run.
    static CFG: OnceLock<Arc<palisade_config::Config>> = OnceLock::new();
    let cfg = CFG.get_or_init(|| match palisade_config::load_str(CONFIG, "fuzz.yaml") {
        Ok(c) => Arc::new(c),
        Err(e) => panic!("the guard's fuzz config is invalid: {e:?}"),
    });
    let mut now = origin;
    let mut g = Guard::new(Arc::clone(cfg), now, 1_767_601_800_000);
    let mut started: HashSet<CallRef> = HashSet::new();
    let mut live: Vec<CallRef> = Vec::new();
    let mut next = 1u64;
    let limits = ParseLimits::default();
    for chunk in data.split(|&b| b == 0xff) {
        let Some((&op, rest)) = chunk.split_first() else {
            continue;
        };
        let src = IpAddr::V4(Ipv4Addr::new(10, 0, 0, op & 0x0f));
        let trusted = op & 0x10 != 0;
        let ip = if trusted {
            "127.0.0.10".parse().unwrap_or(src)
        } else {
            src
        };
        let flow = Flow {
            zone: ZoneId(u16::from(op & 1)),
            transport: Transport::Udp,
            remote: SocketAddr::new(ip, 5060),
        };
        match op >> 5 {
            0 => {
                if let Ok(msg) = Message::parse(Bytes::copy_from_slice(rest), &limits) {
                    let trunk = trusted.then_some(palisade_config::TrunkId(0));
                    let _ = g.on_request(now, &flow, trunk, &msg);
                }
            }
            1 => g.on_malformed(now, &flow),
            2 => g.auth_failed(now, &flow, &String::from_utf8_lossy(rest)),
            3 | 4 => {
                let number = String::from_utf8_lossy(rest);
                let call = CallRef(next);
                next += 1;
                let (Some(from), Some(to)) = (cfg.trunks().first(), cfg.trunks().get(1)) else {
                    return;
                };
                let info = CallInfo {
                    call,
                    source: flow.remote,
                    from_trunk: from,
                    to_trunk: to,
                    caller: if op & 0x40 != 0 { "100" } else { "200" },
                    number: &number,
                };
                started.insert(call);
                if g.on_call_start(now, &info) == Verdict::Allow {
                    live.push(call);
                }
            }
            5 => {
                if let Some(&c) = live.get(usize::from(op & 0x0f) % live.len().max(1)) {
                    g.on_call_answered(now, c);
                }
            }
            6 => {
                if !live.is_empty() {
                    let c = live.remove(usize::from(op & 0x0f) % live.len());
                    let answered = op & 0x10 != 0;
                    let end = CallEnd {
                        reason: EndReason::CallerBye,
                        status: (!answered).then_some(486),
                        answered,
                        duration: Duration::from_secs(u64::from(
                            rest.first().copied().unwrap_or(0),
                        )),
                    };
                    g.on_call_ended(now, c, &end);
                }
            }
            _ => {
                let step = u64::from(rest.first().copied().unwrap_or(1));
                now += Duration::from_millis(step * step * 10);
                if g.poll_timeout().is_some_and(|d| d <= now) {
                    g.handle_timeout(now);
                }
            }
        }
        while let Some(a) = g.poll_action() {
            if let Action::Terminate { call, .. } = a {
                assert!(started.contains(&call), "teardown of a call never started");
            }
        }
        assert!(g.stats().sources_tracked <= 16, "source table over its cap");
    }
    for c in live.drain(..) {
        let end = CallEnd {
            reason: EndReason::Shutdown,
            status: None,
            answered: false,
            duration: Duration::ZERO,
        };
        g.on_call_ended(now, c, &end);
    }
    assert_eq!(g.tracked_calls(), 0, "calls leaked in the fraud engine");
}
