//! Trunk targets through the engine on a virtual clock: a trunk given by DNS
//! name waits for its resolved targets (503 meanwhile), walks them in order
//! on failover, and OPTIONS probes take a silent member out of routing and
//! put it back when it answers again.

#![allow(clippy::unwrap_used)]

mod support;

use std::time::Duration;

use palisade_b2bua::{CallEventKind, Event, Target, TargetState};
use palisade_sip::{HeaderName, Message, Transport};
use support::*;

fn quickstart_text() -> String {
    include_str!("../../../configs/quickstart.yaml").to_owned()
}

const QUICKSTART_CARRIER: &str = "      - address: 127.0.0.20
        port: 5080
        transport: udp
      - address: 127.0.0.21
        port: 5080
        transport: udp
";

/// The quickstart with the carrier members replaced by `members` and
/// `extra` under the carrier trunk.
fn config(members: &str, extra: &str) -> palisade_config::Config {
    let text = quickstart_text();
    assert!(text.contains(QUICKSTART_CARRIER), "quickstart changed");
    let text = text.replace(QUICKSTART_CARRIER, &format!("{members}{extra}"));
    palisade_config::load_str(
        &format!("{text}\nsip:\n  member_timeout_ms: 1000\n"),
        "q.yaml",
    )
    .unwrap()
}

fn target(addr: &str, member: usize) -> Target {
    Target {
        addr: addr.parse().unwrap(),
        transport: Transport::Udp,
        uri_host: "carrier.test".into(),
        member,
    }
}

fn attempts(lab: &Lab) -> Vec<String> {
    lab.call_events()
        .into_iter()
        .filter_map(|e| match e {
            CallEventKind::Attempt { member, .. } => Some(member.to_string()),
            _ => None,
        })
        .collect()
}

fn health_events(lab: &Lab) -> Vec<(String, TargetState)> {
    lab.events
        .iter()
        .filter_map(|e| match e {
            Event::TargetHealth(c) => Some((c.target.addr.to_string(), c.state)),
            _ => None,
        })
        .collect()
}

#[test]
fn dns_trunk_refuses_with_503_until_resolved_then_walks_targets_in_order() {
    let mut lab = lab_with(config("      - host: carrier.test\n", ""));
    lab.recv_msg(INSIDE, PBX, pbx_invite(1, "+4971100100", Some(PBX_SDP)));
    let refused = lab.expect(PBX, "503/INVITE");
    assert_eq!(refused.header_str(HeaderName::RetryAfter), Some("30"));
    assert!(matches!(
        lab.events.last(),
        Some(Event::Rejected {
            reason: "dns-pending",
            ..
        })
    ));

    let now = lab.now;
    assert!(lab.engine.set_trunk_targets(
        now,
        "carrier",
        vec![target(CARRIER1, 0), target(CARRIER2, 0)]
    ));
    lab.recv_msg(INSIDE, PBX, pbx_invite(2, "+4971100100", Some(PBX_SDP)));
    let invite = lab.find(CARRIER1, "INVITE");
    // RFC 3263: the URI keeps the domain, the packet goes to the address.
    assert_eq!(
        invite.request_uri_str(),
        Some("sip:+4971100100@carrier.test;user=phone")
    );
    assert_eq!(
        invite.header_str(HeaderName::To),
        Some("<sip:+4971100100@carrier.test;user=phone>")
    );
    // Silent primary: the next target after member_timeout_ms.
    lab.advance(Duration::from_millis(1000));
    let second = lab.find(CARRIER2, "INVITE");
    assert_eq!(
        second.request_uri_str(),
        Some("sip:+4971100100@carrier.test;user=phone")
    );
    assert_eq!(attempts(&lab), [CARRIER1, CARRIER2]);

    // A resolution with no usable address: the trunk is unreachable, 503.
    let now = lab.now;
    assert!(lab.engine.set_trunk_targets(now, "carrier", Vec::new()));
    lab.recv_msg(INSIDE, PBX, pbx_invite(3, "+4971100100", Some(PBX_SDP)));
    lab.find(PBX, "503/INVITE");
    // Only trunks with DNS members take lists.
    assert!(!lab.engine.set_trunk_targets(now, "pbx", Vec::new()));
}

const HEALTH: &str = "    health:
      interval_seconds: 2
      timeout_ms: 500
      down_after: 2
      up_after: 2
";

/// Answers every OPTIONS sent to `to` since the last `take`; returns how many.
fn answer_probes(lab: &mut Lab, sent: &[(palisade_b2bua::Flow, Message)], to: &str) -> usize {
    let probes: Vec<Message> = sent
        .iter()
        .filter(|(f, m)| f.remote == addr(to) && describe(m) == "OPTIONS")
        .map(|(_, m)| m.clone())
        .collect();
    for p in &probes {
        lab.recv_msg(OUTSIDE, to, reply(p, 200, Some("probe-tag"), None, None));
    }
    probes.len()
}

#[test]
fn probes_take_a_silent_member_out_of_routing_and_back() {
    let mut lab = lab_with(config(QUICKSTART_CARRIER, HEALTH));
    // The first probes go out as soon as the engine has a clock.
    lab.advance(Duration::from_millis(1));
    let sent = lab.take();
    let options: Vec<&Message> = sent
        .iter()
        .filter(|(_, m)| describe(m) == "OPTIONS")
        .map(|(_, m)| m)
        .collect();
    assert_eq!(options.len(), 2, "one probe per carrier member");
    let p = options[0];
    assert_eq!(p.request_uri_str(), Some("sip:127.0.0.20:5080"));
    assert!(
        p.header_str(HeaderName::From)
            .unwrap()
            .contains("@127.0.0.2>")
    );
    // Only the secondary answers; the primary is silent.
    answer_probes(&mut lab, &sent, CARRIER2);
    assert!(health_events(&lab).is_empty());
    // Second silent probe: down (down_after 2).
    lab.advance(Duration::from_secs(2));
    let sent = lab.take();
    assert_eq!(answer_probes(&mut lab, &sent, CARRIER2), 1);
    lab.advance(Duration::from_millis(600));
    assert_eq!(
        health_events(&lab),
        [(CARRIER1.to_owned(), TargetState::Down)]
    );
    assert_eq!(lab.engine.stats().targets_down, 1);

    // A new call goes straight to the secondary: no member timeout.
    lab.take();
    lab.recv_msg(INSIDE, PBX, pbx_invite(1, "+4971100100", Some(PBX_SDP)));
    let new = lab.take();
    assert!(
        new.iter()
            .any(|(f, m)| f.remote == addr(CARRIER2) && describe(m) == "INVITE")
    );
    assert!(
        !new.iter()
            .any(|(f, m)| f.remote == addr(CARRIER1) && describe(m) == "INVITE")
    );
    assert_eq!(attempts(&lab), [CARRIER2]);

    // The primary answers again: up after two answered probes.
    // Probes go out every 2 s from t=0.001: the next at 4.001 and 6.001.
    for (round, wait_ms) in [1400, 2000].into_iter().enumerate() {
        lab.advance(Duration::from_millis(wait_ms));
        let sent = lab.take();
        assert_eq!(answer_probes(&mut lab, &sent, CARRIER1), 1, "round {round}");
        answer_probes(&mut lab, &sent, CARRIER2);
    }
    assert_eq!(
        health_events(&lab),
        [
            (CARRIER1.to_owned(), TargetState::Down),
            (CARRIER1.to_owned(), TargetState::Up)
        ]
    );
    lab.recv_msg(INSIDE, PBX, pbx_invite(2, "+4971100100", Some(PBX_SDP)));
    lab.find(CARRIER1, "INVITE");
    assert!(lab.engine.stats().probes_sent >= 6);
    assert_eq!(lab.engine.stats().targets_down, 0);
}

#[test]
fn when_every_member_is_down_calls_try_them_all_in_order() {
    let mut lab = lab_with(config(QUICKSTART_CARRIER, HEALTH));
    lab.advance(Duration::from_millis(1));
    lab.advance(Duration::from_secs(3));
    assert_eq!(lab.engine.stats().targets_down, 2);
    lab.take();
    lab.recv_msg(INSIDE, PBX, pbx_invite(1, "+4971100100", Some(PBX_SDP)));
    lab.find(CARRIER1, "INVITE");
    lab.advance(Duration::from_millis(1000));
    assert_eq!(attempts(&lab), [CARRIER1, CARRIER2]);
}

#[test]
fn a_503_to_a_probe_counts_as_down() {
    let mut lab = lab_with(config(QUICKSTART_CARRIER, HEALTH));
    for _ in 0..2 {
        lab.advance(Duration::from_millis(2000));
        let sent = lab.take();
        for (f, m) in &sent {
            if describe(m) == "OPTIONS" {
                let status = if f.remote == addr(CARRIER1) { 503 } else { 404 };
                let to = f.remote.to_string();
                lab.recv_msg(OUTSIDE, &to, reply(m, status, Some("t"), None, None));
            }
        }
    }
    // 503 is down; 404 is an answer, so alive.
    assert_eq!(
        health_events(&lab),
        [(CARRIER1.to_owned(), TargetState::Down)]
    );
}
