//! Call flows through the engine on a virtual clock, with the PBX and the
//! carrier played by hand-written SIP messages.

#![allow(clippy::unwrap_used)]

mod support;

use std::time::Duration;

use palisade_b2bua::{CallEventKind, EndReason};
use palisade_sip::HeaderName;
use support::*;

/// What the PBX side may never see, and what the carrier side may never see.
const INSIDE_SECRETS: &[&str] = &[
    "127.0.0.10",
    "127.0.0.1:",
    "127.0.0.1>",
    "127.0.0.1;",
    "pbx-call-",
    "pbxtag",
    "z9hG4bK-pbx",
    "Acme",
    "X-Internal",
    "P-Asserted",
    "corp.example",
];
const OUTSIDE_SECRETS: &[&str] = &[
    "127.0.0.20",
    "127.0.0.21",
    "127.0.0.2:",
    "127.0.0.2;",
    "127.0.0.2>",
    "carrier-tag",
    "PeerSwitch",
];

struct Answered {
    lab: Lab,
    pbx: PeerDialog,
    carrier: PeerDialog,
}

/// PBX calls the carrier; primary answers; everyone ACKed.
fn answered_call() -> Answered {
    let mut lab = lab();
    let inv = pbx_invite(1, "+4930123456", Some(PBX_SDP));
    lab.recv_msg(INSIDE, PBX, inv.clone());
    let all = lab.take();
    assert!(
        all.iter()
            .any(|(f, m)| f.remote == addr(PBX) && m.status() == Some(100)),
        "no 100 Trying"
    );
    let invite_b = all
        .iter()
        .find(|(f, m)| f.remote == addr(CARRIER1) && describe(m) == "INVITE")
        .map(|(_, m)| m.clone())
        .expect("INVITE to the primary carrier");
    lab.recv_msg(OUTSIDE, CARRIER1, reply(&invite_b, 100, None, None, None));
    lab.recv_msg(
        OUTSIDE,
        CARRIER1,
        reply(
            &invite_b,
            180,
            Some("carrier-tag"),
            Some("<sip:carrier@127.0.0.20:5080>"),
            None,
        ),
    );
    let ringing = lab.expect(PBX, "180/INVITE");
    assert!(ringing.to_tag().is_some());
    lab.recv_msg(
        OUTSIDE,
        CARRIER1,
        reply(
            &invite_b,
            200,
            Some("carrier-tag"),
            Some("<sip:carrier@127.0.0.20:5080>"),
            Some(CARRIER_SDP),
        ),
    );
    let msgs = lab.take();
    let ack_b = msgs
        .iter()
        .find(|(f, m)| f.remote == addr(CARRIER1) && describe(m) == "ACK")
        .expect("ACK to carrier")
        .1
        .clone();
    assert_eq!(ack_b.cseq().seq, invite_b.cseq().seq);
    assert_eq!(ack_b.to_tag(), Some("carrier-tag"));
    let oks: Vec<_> = msgs
        .iter()
        .filter(|(f, m)| f.remote == addr(PBX) && describe(m) == "200/INVITE")
        .collect();
    assert_eq!(oks.len(), 1, "the carrier's one 200 goes to the PBX once");
    let ok = oks[0].1.clone();
    assert_eq!(ok.to_tag(), ringing.to_tag(), "one dialog toward the PBX");
    assert!(ok.has_sdp());
    let mut pbx = PeerDialog::from_uac_side(&inv, &ok, "127.0.0.10:5070");
    lab.recv_msg(INSIDE, PBX, pbx.ack(1, None));
    assert!(lab.take().is_empty(), "PBX ACK produced traffic");
    let carrier = PeerDialog::from_uas_side(&invite_b, "carrier-tag", "127.0.0.20:5080");
    Answered { lab, pbx, carrier }
}

#[test]
fn outbound_call_then_caller_hangs_up() {
    let Answered {
        mut lab, mut pbx, ..
    } = answered_call();
    lab.recv_msg(INSIDE, PBX, pbx.request("BYE", None, None));
    let msgs = lab.take();
    assert!(
        msgs.iter()
            .any(|(f, m)| f.remote == addr(PBX) && describe(m) == "200/BYE")
    );
    let bye = msgs
        .iter()
        .find(|(f, m)| f.remote == addr(CARRIER1) && describe(m) == "BYE")
        .expect("BYE to carrier")
        .1
        .clone();
    assert_eq!(bye.to_tag(), Some("carrier-tag"));
    assert_eq!(bye.request_uri_str(), Some("sip:carrier@127.0.0.20:5080"));
    lab.recv_msg(OUTSIDE, CARRIER1, reply(&bye, 200, None, None, None));
    assert_eq!(lab.engine.active_calls(), 0);
    let ev = lab.call_events();
    assert!(matches!(ev.first(), Some(CallEventKind::Started { .. })));
    assert!(
        ev.iter()
            .any(|e| matches!(e, CallEventKind::Answered { .. }))
    );
    assert!(matches!(
        ev.last(),
        Some(CallEventKind::Ended {
            reason: EndReason::CallerBye,
            ..
        })
    ));
}

#[test]
fn callee_hangs_up() {
    let Answered {
        mut lab,
        mut carrier,
        ..
    } = answered_call();
    lab.recv_msg(OUTSIDE, CARRIER1, carrier.request("BYE", None, None));
    let msgs = lab.take();
    assert!(
        msgs.iter()
            .any(|(f, m)| f.remote == addr(CARRIER1) && describe(m) == "200/BYE")
    );
    let bye = msgs
        .iter()
        .find(|(f, m)| f.remote == addr(PBX) && describe(m) == "BYE")
        .expect("BYE to PBX")
        .1
        .clone();
    assert_eq!(bye.request_uri_str(), Some("sip:pbx@127.0.0.10:5070"));
    assert_eq!(bye.call_id(), "pbx-call-1@127.0.0.10");
    assert_eq!(bye.to_tag(), Some("pbxtag1"));
    let to = header(&bye, HeaderName::To);
    assert_eq!(to.matches("tag=").count(), 1, "one tag in {to}");
    assert_eq!(
        to,
        "\"Reception\" <sip:+4989555000@127.0.0.10:5070>;tag=pbxtag1"
    );
    lab.recv_msg(INSIDE, PBX, reply(&bye, 200, None, None, None));
    assert_eq!(lab.engine.active_calls(), 0);
    assert!(matches!(
        lab.call_events().last(),
        Some(CallEventKind::Ended {
            reason: EndReason::CalleeBye,
            ..
        })
    ));
}

#[test]
fn nothing_of_one_side_reaches_the_other() {
    let Answered {
        mut lab,
        mut pbx,
        mut carrier,
        ..
    } = answered_call();
    lab.recv_msg(
        INSIDE,
        PBX,
        pbx.request(
            "INFO",
            Some(("application/dtmf-relay", "Signal=5\r\nDuration=160\r\n")),
            None,
        ),
    );
    let info = lab.find(CARRIER1, "INFO");
    assert_eq!(info.body(), b"Signal=5\r\nDuration=160\r\n");
    lab.recv_msg(OUTSIDE, CARRIER1, reply(&info, 200, None, None, None));
    lab.recv_msg(OUTSIDE, CARRIER1, carrier.request("BYE", None, None));
    let bye = lab.find(PBX, "BYE");
    lab.recv_msg(INSIDE, PBX, reply(&bye, 200, None, None, None));
    let mut pbx_ids = Vec::new();
    let mut carrier_ids = Vec::new();
    for (f, m) in &lab.sent {
        let to_carrier = f.remote.ip().to_string().starts_with("127.0.0.2");
        if to_carrier {
            assert_no_leak(m, INSIDE_SECRETS);
            carrier_ids.push(m.call_id().to_owned());
        } else {
            assert_no_leak(m, OUTSIDE_SECRETS);
            pbx_ids.push(m.call_id().to_owned());
        }
    }
    assert!(!carrier_ids.is_empty() && !pbx_ids.is_empty());
    for id in &carrier_ids {
        assert!(!pbx_ids.contains(id), "Call-ID {id} on both legs");
    }
    // The SDP origin names Palisade on each leg.
    let to_carrier_invite = lab
        .sent
        .iter()
        .find(|(f, m)| f.remote == addr(CARRIER1) && describe(m) == "INVITE")
        .unwrap()
        .1
        .clone();
    let body = String::from_utf8_lossy(to_carrier_invite.body()).to_string();
    assert!(body.contains("o=- 111 1 IN IP4 127.0.0.2\r\n"), "{body}");
    assert_eq!(
        to_carrier_invite.request_uri_str(),
        Some("sip:+4930123456@127.0.0.20:5080;user=phone")
    );
    let from = to_carrier_invite.from().unwrap();
    assert_eq!(from.uri_str, "sip:+4989555000@127.0.0.2");
    assert_eq!(from.display, Some("\"Reception\""));
}

#[test]
fn failover_on_503_then_secondary_answers() {
    let mut lab = lab();
    lab.recv_msg(INSIDE, PBX, pbx_invite(2, "+4930123456", Some(PBX_SDP)));
    let inv1 = lab.find(CARRIER1, "INVITE");
    lab.recv_msg(OUTSIDE, CARRIER1, reply(&inv1, 503, Some("c1"), None, None));
    let msgs = lab.take();
    let ack = msgs
        .iter()
        .find(|(f, m)| f.remote == addr(CARRIER1) && describe(m) == "ACK")
        .expect("ACK for 503")
        .1
        .clone();
    assert_eq!(
        ack.branch(),
        inv1.branch(),
        "non-2xx ACK is hop-by-hop, same branch"
    );
    let inv2 = msgs
        .iter()
        .find(|(f, m)| f.remote == addr(CARRIER2) && describe(m) == "INVITE")
        .expect("failover INVITE")
        .1
        .clone();
    assert_ne!(inv2.branch(), inv1.branch());
    assert!(inv2.cseq().seq > inv1.cseq().seq);
    assert!(
        !msgs.iter().any(|(f, _)| f.remote == addr(PBX)),
        "PBX must not see the 503"
    );
    lab.recv_msg(
        OUTSIDE,
        CARRIER2,
        reply(
            &inv2,
            200,
            Some("c2"),
            Some("<sip:c@127.0.0.21:5080>"),
            Some(CARRIER_SDP),
        ),
    );
    let ok = lab.find(PBX, "200/INVITE");
    assert!(ok.has_sdp());
    assert!(lab.call_events().iter().any(|e| matches!(
        e,
        CallEventKind::Failover {
            status: Some(503),
            ..
        }
    )));
}

#[test]
fn failover_when_primary_is_silent() {
    let mut lab = lab_with(quickstart_with_sip("  member_timeout_ms: 1500"));
    lab.recv_msg(INSIDE, PBX, pbx_invite(3, "+4930123456", None));
    let inv1 = lab.find(CARRIER1, "INVITE");
    lab.advance(Duration::from_millis(1400));
    let retrans: Vec<_> = lab
        .take()
        .into_iter()
        .filter(|(f, _)| f.remote == addr(CARRIER1))
        .collect();
    assert!(!retrans.is_empty(), "Timer A retransmits to the primary");
    lab.advance(Duration::from_millis(200));
    let inv2 = lab.find(CARRIER2, "INVITE");
    assert_eq!(inv2.call_id(), inv1.call_id());
    assert_eq!(lab.engine.active_calls(), 1);
    // Secondary rejects with 486: not a failover status, relayed as is.
    lab.recv_msg(
        OUTSIDE,
        CARRIER2,
        reply(&inv2, 486, Some("busy"), None, None),
    );
    let busy = lab.find(PBX, "486/INVITE");
    assert_eq!(busy.reason(), b"Busy Here");
    // The call is over even though the silent primary's transaction lives on (Timer B).
    assert_eq!(lab.engine.active_calls(), 0);
    // The silent primary finally answers: Palisade ACKs and BYEs it.
    lab.recv_msg(
        OUTSIDE,
        CARRIER1,
        reply(
            &inv1,
            200,
            Some("late"),
            Some("<sip:c@127.0.0.20:5080>"),
            Some(CARRIER_SDP),
        ),
    );
    let msgs = lab.take();
    assert!(
        msgs.iter()
            .any(|(f, m)| f.remote == addr(CARRIER1) && describe(m) == "ACK")
    );
    assert!(
        msgs.iter()
            .any(|(f, m)| f.remote == addr(CARRIER1) && describe(m) == "BYE")
    );
}

#[test]
fn busy_is_relayed_without_failover() {
    let mut lab = lab();
    lab.recv_msg(INSIDE, PBX, pbx_invite(4, "+4930123456", Some(PBX_SDP)));
    let inv = lab.find(CARRIER1, "INVITE");
    lab.recv_msg(OUTSIDE, CARRIER1, reply(&inv, 486, Some("b"), None, None));
    let msgs = lab.take();
    assert!(
        !msgs.iter().any(|(f, _)| f.remote == addr(CARRIER2)),
        "486 must not fail over"
    );
    let busy = msgs
        .iter()
        .find(|(f, m)| f.remote == addr(PBX) && describe(m) == "486/INVITE")
        .unwrap()
        .1
        .clone();
    // The PBX ACKs the 486 (hop-by-hop, same branch): absorbed.
    let ack = format!(
        "ACK sip:+4930123456@127.0.0.1:5060;user=phone SIP/2.0\nVia: SIP/2.0/UDP 127.0.0.10:5070;branch=z9hG4bK-pbx-4;rport\nFrom: \"Reception\" <sip:+4989555000@127.0.0.10:5070>;tag=pbxtag4\nTo: {}\nCall-ID: pbx-call-4@127.0.0.10\nCSeq: 1 ACK\nContent-Length: 0\n\n",
        header(&busy, HeaderName::To)
    );
    lab.recv(INSIDE, PBX, &ack);
    assert!(lab.take().is_empty());
    assert!(matches!(
        lab.call_events().last(),
        Some(CallEventKind::Ended {
            reason: EndReason::Rejected,
            status: Some(486),
            ..
        })
    ));
    // Timer I/H expire; no retransmission of the 486 after the ACK.
    lab.advance(Duration::from_secs(40));
    assert!(lab.take().iter().all(|(_, m)| describe(m) != "486/INVITE"));
    assert_eq!(lab.engine.stats().server_transactions, 0);
}

#[test]
fn all_members_fail_maps_503_to_500() {
    let mut lab = lab();
    lab.recv_msg(INSIDE, PBX, pbx_invite(5, "+4930123456", None));
    let inv1 = lab.find(CARRIER1, "INVITE");
    lab.recv_msg(OUTSIDE, CARRIER1, reply(&inv1, 500, Some("x"), None, None));
    let inv2 = lab.find(CARRIER2, "INVITE");
    lab.recv_msg(OUTSIDE, CARRIER2, reply(&inv2, 503, Some("y"), None, None));
    let r = lab.find(PBX, "500/INVITE");
    assert!(r.to_tag().is_some());
    assert!(matches!(
        lab.call_events().last(),
        Some(CallEventKind::Ended {
            reason: EndReason::Unreachable,
            ..
        })
    ));
}

#[test]
fn caller_cancels_while_ringing() {
    let mut lab = lab();
    let inv = pbx_invite(6, "+4930123456", Some(PBX_SDP));
    lab.recv_msg(INSIDE, PBX, inv.clone());
    let inv_b = lab.find(CARRIER1, "INVITE");
    lab.recv_msg(
        OUTSIDE,
        CARRIER1,
        reply(
            &inv_b,
            180,
            Some("r"),
            Some("<sip:c@127.0.0.20:5080>"),
            None,
        ),
    );
    lab.take();
    let cancel = String::from_utf8(inv.to_vec())
        .unwrap()
        .replacen("INVITE sip:", "CANCEL sip:", 1)
        .replace("CSeq: 1 INVITE", "CSeq: 1 CANCEL");
    let cancel =
        cancel.split("Content-Type").next().unwrap().to_owned() + "Content-Length: 0\r\n\r\n";
    lab.recv(INSIDE, PBX, &cancel);
    let msgs = lab.take();
    assert!(
        msgs.iter()
            .any(|(f, m)| f.remote == addr(PBX) && describe(m) == "200/CANCEL")
    );
    assert!(
        msgs.iter()
            .any(|(f, m)| f.remote == addr(PBX) && describe(m) == "487/INVITE")
    );
    let cancel_b = msgs
        .iter()
        .find(|(f, m)| f.remote == addr(CARRIER1) && describe(m) == "CANCEL")
        .expect("CANCEL to carrier")
        .1
        .clone();
    assert_eq!(cancel_b.branch(), inv_b.branch());
    lab.recv_msg(OUTSIDE, CARRIER1, reply(&cancel_b, 200, None, None, None));
    lab.recv_msg(OUTSIDE, CARRIER1, reply(&inv_b, 487, Some("r"), None, None));
    let ack = lab.find(CARRIER1, "ACK");
    assert_eq!(ack.branch(), inv_b.branch());
    assert_eq!(lab.engine.active_calls(), 0);
    assert!(matches!(
        lab.call_events().last(),
        Some(CallEventKind::Ended {
            reason: EndReason::Cancelled,
            status: Some(487),
            ..
        })
    ));
}

#[test]
fn reinvite_hold_and_unhold_from_the_pbx() {
    let Answered {
        mut lab, mut pbx, ..
    } = answered_call();
    let hold = PBX_SDP.replace("o=pbx 111 1", "o=pbx 111 2").to_owned() + "a=sendonly\r\n";
    lab.recv_msg(
        INSIDE,
        PBX,
        pbx.request(
            "INVITE",
            Some(("application/sdp", &hold)),
            Some("<sip:pbx@127.0.0.10:5070>"),
        ),
    );
    let msgs = lab.take();
    assert!(
        msgs.iter()
            .any(|(f, m)| f.remote == addr(PBX) && describe(m) == "100/INVITE")
    );
    let re = msgs
        .iter()
        .find(|(f, m)| f.remote == addr(CARRIER1) && describe(m) == "INVITE")
        .expect("re-INVITE to carrier")
        .1
        .clone();
    assert_eq!(re.to_tag(), Some("carrier-tag"));
    assert!(String::from_utf8_lossy(re.body()).contains("a=sendonly"));
    assert!(String::from_utf8_lossy(re.body()).contains("o=- 111 2 IN IP4 127.0.0.2"));
    let held = CARRIER_SDP.to_owned() + "a=recvonly\r\n";
    lab.recv_msg(
        OUTSIDE,
        CARRIER1,
        reply(
            &re,
            200,
            None,
            Some("<sip:carrier@127.0.0.20:5080>"),
            Some(&held),
        ),
    );
    let msgs = lab.take();
    let ack = msgs
        .iter()
        .find(|(f, m)| f.remote == addr(CARRIER1) && describe(m) == "ACK")
        .expect("ACK re-INVITE")
        .1
        .clone();
    assert_eq!(ack.cseq().seq, re.cseq().seq);
    let ok = msgs
        .iter()
        .find(|(f, m)| f.remote == addr(PBX) && describe(m) == "200/INVITE")
        .expect("200 to PBX")
        .1
        .clone();
    assert!(String::from_utf8_lossy(ok.body()).contains("a=recvonly"));
    // Until the PBX ACKs, the 200 is retransmitted.
    lab.advance(Duration::from_millis(600));
    assert!(
        lab.take()
            .iter()
            .any(|(f, m)| f.remote == addr(PBX) && describe(m) == "200/INVITE")
    );
    let seq = pbx.cseq;
    lab.recv_msg(INSIDE, PBX, pbx.ack(seq, None));
    lab.advance(Duration::from_secs(5));
    assert!(
        !lab.take().iter().any(|(_, m)| describe(m) == "200/INVITE"),
        "retransmission after ACK"
    );
    // Unhold.
    lab.recv_msg(
        INSIDE,
        PBX,
        pbx.request(
            "INVITE",
            Some(("application/sdp", PBX_SDP)),
            Some("<sip:pbx@127.0.0.10:5070>"),
        ),
    );
    let re2 = lab.find(CARRIER1, "INVITE");
    assert!(re2.cseq().seq > re.cseq().seq);
    lab.recv_msg(
        OUTSIDE,
        CARRIER1,
        reply(
            &re2,
            200,
            None,
            Some("<sip:carrier@127.0.0.20:5080>"),
            Some(CARRIER_SDP),
        ),
    );
    lab.find(PBX, "200/INVITE");
    let seq = pbx.cseq;
    lab.recv_msg(INSIDE, PBX, pbx.ack(seq, None));
    assert_eq!(lab.engine.active_calls(), 1);
}

#[test]
fn late_offer_answer_travels_in_the_ack() {
    let mut lab = lab();
    let inv = pbx_invite(7, "+4930123456", None);
    lab.recv_msg(INSIDE, PBX, inv.clone());
    let inv_b = lab.find(CARRIER1, "INVITE");
    assert!(inv_b.body().is_empty());
    lab.recv_msg(
        OUTSIDE,
        CARRIER1,
        reply(
            &inv_b,
            200,
            Some("lo"),
            Some("<sip:c@127.0.0.20:5080>"),
            Some(CARRIER_SDP),
        ),
    );
    let msgs = lab.take();
    assert!(
        !msgs
            .iter()
            .any(|(f, m)| f.remote == addr(CARRIER1) && describe(m) == "ACK"),
        "ACK must wait for the answer"
    );
    let ok = msgs
        .iter()
        .find(|(f, m)| f.remote == addr(PBX) && describe(m) == "200/INVITE")
        .unwrap()
        .1
        .clone();
    assert!(String::from_utf8_lossy(ok.body()).contains("o=- 222 1 IN IP4 127.0.0.1"));
    // The carrier retransmits its 200 meanwhile: still no ACK.
    lab.recv_msg(
        OUTSIDE,
        CARRIER1,
        reply(
            &inv_b,
            200,
            Some("lo"),
            Some("<sip:c@127.0.0.20:5080>"),
            Some(CARRIER_SDP),
        ),
    );
    assert!(!lab.take().iter().any(|(_, m)| describe(m) == "ACK"));
    let mut pbx = PeerDialog::from_uac_side(&inv, &ok, "127.0.0.10:5070");
    lab.recv_msg(INSIDE, PBX, pbx.ack(1, Some(PBX_SDP)));
    let ack = lab.find(CARRIER1, "ACK");
    assert!(String::from_utf8_lossy(ack.body()).contains("o=- 111 1 IN IP4 127.0.0.2"));
    // A later 200 retransmission gets the same ACK again.
    lab.recv_msg(
        OUTSIDE,
        CARRIER1,
        reply(
            &inv_b,
            200,
            Some("lo"),
            Some("<sip:c@127.0.0.20:5080>"),
            Some(CARRIER_SDP),
        ),
    );
    let again = lab.find(CARRIER1, "ACK");
    assert_eq!(again.raw(), ack.raw());
}

#[test]
fn missing_ack_tears_the_call_down() {
    let mut lab = lab();
    lab.recv_msg(INSIDE, PBX, pbx_invite(8, "+4930123456", Some(PBX_SDP)));
    let inv_b = lab.find(CARRIER1, "INVITE");
    lab.recv_msg(
        OUTSIDE,
        CARRIER1,
        reply(
            &inv_b,
            200,
            Some("t"),
            Some("<sip:c@127.0.0.20:5080>"),
            Some(CARRIER_SDP),
        ),
    );
    lab.take();
    lab.advance(Duration::from_secs(40));
    let msgs = lab.take();
    let retrans = msgs
        .iter()
        .filter(|(f, m)| f.remote == addr(PBX) && describe(m) == "200/INVITE")
        .count();
    assert!(
        retrans >= 7,
        "2xx retransmitted until give-up, got {retrans}"
    );
    assert!(
        msgs.iter()
            .any(|(f, m)| f.remote == addr(CARRIER1) && describe(m) == "BYE")
    );
    assert!(lab.call_events().iter().any(|e| matches!(
        e,
        CallEventKind::Ended {
            reason: EndReason::AckTimeout,
            ..
        }
    )));
}

#[test]
fn inbound_call_from_the_carrier_reaches_the_pbx() {
    let mut lab = lab();
    let inv = format!(
        "INVITE sip:+493012345678@127.0.0.2:5060 SIP/2.0\nVia: SIP/2.0/UDP 127.0.0.20:5080;branch=z9hG4bK-carrier-in\nMax-Forwards: 69\nFrom: <sip:+15551234567@127.0.0.20>;tag=cin\nTo: <sip:+493012345678@127.0.0.2>\nCall-ID: carrier-in-1@127.0.0.20\nCSeq: 10 INVITE\nContact: <sip:carrier@127.0.0.20:5080>\nRecord-Route: <sip:127.0.0.20:5080;lr>\nContent-Type: application/sdp\nContent-Length: {}\n\n{CARRIER_SDP}",
        CARRIER_SDP.len()
    );
    lab.recv(OUTSIDE, CARRIER1, &inv);
    let to_pbx = lab.find(PBX, "INVITE");
    assert_eq!(
        to_pbx.request_uri_str(),
        Some("sip:+493012345678@127.0.0.10:5070")
    );
    assert_eq!(to_pbx.max_forwards(), Some(68));
    assert_no_leak(&to_pbx, OUTSIDE_SECRETS);
    assert!(!String::from_utf8_lossy(to_pbx.raw()).contains("Record-Route"));
    assert_eq!(to_pbx.from().unwrap().uri_str, "sip:+15551234567@127.0.0.1");
    // A number outside the DID range has no route.
    let other = inv
        .replace("+493012345678", "+4940999")
        .replace("carrier-in-1", "carrier-in-2")
        .replace("z9hG4bK-carrier-in", "z9hG4bK-carrier-in2");
    lab.recv(OUTSIDE, CARRIER1, &other);
    lab.find(CARRIER1, "404/INVITE");
}

#[test]
fn unknown_sources_options_and_strays() {
    let mut lab = lab();
    // INVITE from an address that is no trunk: 403.
    let inv = String::from_utf8(pbx_invite(9, "+4930123456", None).to_vec()).unwrap();
    lab.recv(INSIDE, "127.0.0.66:5060", &inv);
    lab.find("127.0.0.66:5060", "403/INVITE");
    // OPTIONS to Palisade: 200 with Allow.
    lab.recv(INSIDE, "127.0.0.66:5060", "OPTIONS sip:127.0.0.1 SIP/2.0\nVia: SIP/2.0/UDP 127.0.0.66:5060;branch=z9hG4bKopt\nFrom: <sip:p@127.0.0.66>;tag=o\nTo: <sip:127.0.0.1>\nCall-ID: opt\nCSeq: 1 OPTIONS\nContent-Length: 0\n\n");
    let ok = lab.find("127.0.0.66:5060", "200/OPTIONS");
    assert!(ok.header(HeaderName::Allow).is_some());
    // In-dialog request for an unknown dialog: 481.
    lab.recv(INSIDE, PBX, "BYE sip:x@127.0.0.1 SIP/2.0\nVia: SIP/2.0/UDP 127.0.0.10:5070;branch=z9hG4bKbye\nFrom: <sip:p@127.0.0.10>;tag=a\nTo: <sip:x@127.0.0.1>;tag=b\nCall-ID: nope\nCSeq: 2 BYE\nContent-Length: 0\n\n");
    lab.find(PBX, "481/BYE");
    // Unknown method: 501; REGISTER: 405.
    lab.recv(INSIDE, PBX, "FOO sip:127.0.0.1 SIP/2.0\nVia: SIP/2.0/UDP 127.0.0.10:5070;branch=z9hG4bKfoo\nFrom: <sip:p@127.0.0.10>;tag=a\nTo: <sip:x@127.0.0.1>\nCall-ID: foo\nCSeq: 2 FOO\nContent-Length: 0\n\n");
    lab.find(PBX, "501/FOO");
    // Stray response and stray ACK: dropped, counted.
    lab.recv(OUTSIDE, CARRIER1, "SIP/2.0 200 OK\nVia: SIP/2.0/UDP 127.0.0.2:5060;branch=z9hG4bKnothing\nFrom: <sip:a@h>;tag=1\nTo: <sip:b@h>;tag=2\nCall-ID: stray\nCSeq: 1 INVITE\nContent-Length: 0\n\n");
    assert!(lab.take().is_empty());
    assert_eq!(lab.engine.stats().stray_responses, 1);
}

#[test]
fn malformed_requests_get_400_or_are_dropped() {
    let mut lab = lab();
    lab.recv(INSIDE, PBX, "INVITE sip:+49@127.0.0.1 SIP/2.0\nVia: SIP/2.0/UDP 127.0.0.10:5070;branch=z9hG4bKbad\nFrom: <sip:p@127.0.0.10>;tag=a\nTo: <sip:x@127.0.0.1>\nCall-ID: bad\nCSeq: 1 INVITE\nContent-Length: 99\n\n");
    let r = lab.find(PBX, "400/INVITE");
    assert!(String::from_utf8_lossy(r.header(HeaderName::Warning).unwrap()).contains("exceeds"));
    lab.recv(INSIDE, PBX, "OPTIONS sip:x SIP/3.0\nVia: SIP/2.0/UDP 127.0.0.10:5070;branch=z9hG4bKv\nFrom: <sip:p@127.0.0.10>;tag=a\nTo: <sip:x@127.0.0.1>\nCall-ID: v\nCSeq: 1 OPTIONS\nContent-Length: 0\n\n");
    lab.find(PBX, "505/OPTIONS");
    lab.recv_bytes(
        INSIDE,
        palisade_sip::Transport::Udp,
        PBX,
        bytes::Bytes::from_static(b"\x00\x01garbage"),
    );
    assert!(lab.take().is_empty());
    let s = lab.engine.stats();
    assert_eq!((s.malformed_answered, s.malformed_dropped), (2, 1));
}

#[test]
fn retransmitted_invite_is_absorbed() {
    let mut lab = lab();
    let inv = pbx_invite(10, "+4930123456", Some(PBX_SDP));
    lab.recv_msg(INSIDE, PBX, inv.clone());
    lab.take();
    lab.recv_msg(INSIDE, PBX, inv);
    let msgs = lab.take();
    assert_eq!(msgs.len(), 1, "only the 100 is re-sent: {msgs:?}");
    assert_eq!(describe(&msgs[0].1), "100/INVITE");
    assert_eq!(lab.engine.active_calls(), 1);
}

#[test]
fn draining_refuses_new_calls() {
    let mut lab = lab();
    lab.engine.begin_drain();
    lab.recv_msg(INSIDE, PBX, pbx_invite(11, "+4930123456", None));
    let r = lab.find(PBX, "503/INVITE");
    assert!(r.retry_after().is_some());
}

#[test]
fn shutdown_ends_every_call() {
    let Answered { mut lab, .. } = answered_call();
    lab.recv_msg(INSIDE, PBX, pbx_invite(12, "+4930123456", None));
    lab.take();
    lab.engine.terminate_all(lab.now);
    lab.advance(Duration::ZERO);
    let msgs = lab.take();
    assert!(
        msgs.iter()
            .any(|(f, m)| f.remote == addr(PBX) && describe(m) == "BYE")
    );
    assert!(
        msgs.iter()
            .any(|(f, m)| f.remote == addr(CARRIER1) && describe(m) == "BYE")
    );
    assert!(
        msgs.iter()
            .any(|(f, m)| f.remote == addr(PBX) && describe(m) == "503/INVITE")
    );
    assert!(
        lab.call_events()
            .iter()
            .filter(|e| matches!(
                e,
                CallEventKind::Ended {
                    reason: EndReason::Shutdown,
                    ..
                }
            ))
            .count()
            == 2
    );
}

#[test]
fn forked_second_answer_is_acked_and_released() {
    let mut lab = lab();
    lab.recv_msg(INSIDE, PBX, pbx_invite(13, "+4930123456", Some(PBX_SDP)));
    let inv_b = lab.find(CARRIER1, "INVITE");
    lab.recv_msg(
        OUTSIDE,
        CARRIER1,
        reply(
            &inv_b,
            180,
            Some("fork1"),
            Some("<sip:f1@127.0.0.20:5080>"),
            None,
        ),
    );
    lab.recv_msg(
        OUTSIDE,
        CARRIER1,
        reply(
            &inv_b,
            180,
            Some("fork2"),
            Some("<sip:f2@127.0.0.20:5080>"),
            None,
        ),
    );
    let ringing: Vec<_> = lab
        .take()
        .into_iter()
        .filter(|(f, m)| f.remote == addr(PBX) && describe(m) == "180/INVITE")
        .collect();
    assert_eq!(ringing.len(), 2);
    assert_eq!(
        ringing[0].1.to_tag(),
        ringing[1].1.to_tag(),
        "forks collapse into one dialog toward the PBX"
    );
    lab.recv_msg(
        OUTSIDE,
        CARRIER1,
        reply(
            &inv_b,
            200,
            Some("fork2"),
            Some("<sip:f2@127.0.0.20:5080>"),
            Some(CARRIER_SDP),
        ),
    );
    lab.find(PBX, "200/INVITE");
    lab.recv_msg(
        OUTSIDE,
        CARRIER1,
        reply(
            &inv_b,
            200,
            Some("fork1"),
            Some("<sip:f1@127.0.0.20:5080>"),
            Some(CARRIER_SDP),
        ),
    );
    let msgs = lab.take();
    let bye = msgs
        .iter()
        .find(|(_, m)| describe(m) == "BYE")
        .expect("BYE to the losing fork")
        .1
        .clone();
    assert_eq!(bye.request_uri_str(), Some("sip:f1@127.0.0.20:5080"));
    assert_eq!(bye.to_tag(), Some("fork1"));
    assert!(!msgs.iter().any(|(f, _)| f.remote == addr(PBX)));
}

#[test]
fn large_udp_requests_switch_to_tcp() {
    let mut lab = lab_with(quickstart_with_sip("  udp_mtu_bytes: 600"));
    let big_sdp =
        PBX_SDP.to_owned() + &"a=x-filler:0123456789012345678901234567890123456789\r\n".repeat(8);
    lab.recv_msg(INSIDE, PBX, pbx_invite(20, "+4930123456", Some(&big_sdp)));
    let msgs = lab.take();
    let (flow, inv) = msgs
        .iter()
        .find(|(f, m)| f.remote == addr(CARRIER1) && describe(m) == "INVITE")
        .unwrap();
    assert_eq!(flow.transport, palisade_sip::Transport::Tcp);
    let via = inv.top_via().unwrap();
    assert_eq!(via.transport, "TCP");
    assert_eq!(via.port, Some(5060));
    assert!(inv.raw().len() > 600);
    assert_eq!(lab.engine.stats().udp_to_tcp_switches, 1);
}

#[test]
fn out_of_dialog_floods_leave_no_state() {
    let mut lab = lab();
    for i in 0..1000 {
        lab.recv(INSIDE, "127.0.0.66:5060", &format!("OPTIONS sip:127.0.0.1 SIP/2.0\nVia: SIP/2.0/UDP 127.0.0.66:5060;branch=z9hG4bKflood{i}\nFrom: <sip:s@127.0.0.66>;tag=f{i}\nTo: <sip:127.0.0.1>\nCall-ID: flood{i}\nCSeq: 1 OPTIONS\nContent-Length: 0\n\n"));
        let inv = String::from_utf8(pbx_invite(100 + i, "+4930123456", None).to_vec()).unwrap();
        lab.recv(INSIDE, "127.0.0.67:5060", &inv);
    }
    let s = lab.engine.stats();
    assert_eq!(
        (
            s.server_transactions,
            s.client_transactions,
            s.tracked_calls
        ),
        (0, 0, 0)
    );
    assert_eq!(s.stateless_responses, 2000);
    assert_eq!(
        lab.engine.poll_timeout(),
        None,
        "no timer kept for stateless answers"
    );
    // A retransmission gets a byte-identical answer (same To tag).
    let opt = "OPTIONS sip:127.0.0.1 SIP/2.0\nVia: SIP/2.0/UDP 127.0.0.66:5060;branch=z9hG4bKsame\nFrom: <sip:s@127.0.0.66>;tag=x\nTo: <sip:127.0.0.1>\nCall-ID: same\nCSeq: 1 OPTIONS\nContent-Length: 0\n\n";
    lab.take();
    lab.recv(INSIDE, "127.0.0.66:5060", opt);
    lab.recv(INSIDE, "127.0.0.66:5060", opt);
    let r = lab.take();
    assert_eq!(r.len(), 2);
    assert_eq!(r[0].1.raw(), r[1].1.raw());
    assert!(r[0].1.to_tag().is_some());
}

#[test]
fn early_media_and_out_of_order_provisionals() {
    let mut lab = lab();
    lab.recv_msg(INSIDE, PBX, pbx_invite(30, "+4930123456", Some(PBX_SDP)));
    let inv_b = lab.find(CARRIER1, "INVITE");
    lab.recv_msg(
        OUTSIDE,
        CARRIER1,
        reply(
            &inv_b,
            183,
            Some("em"),
            Some("<sip:c@127.0.0.20:5080>"),
            Some(CARRIER_SDP),
        ),
    );
    let early = lab.find(PBX, "183/INVITE");
    let body = String::from_utf8_lossy(early.body()).to_string();
    assert!(body.contains("o=- 222 1 IN IP4 127.0.0.1\r\n"), "{body}");
    assert_no_leak(&early, OUTSIDE_SECRETS);
    lab.recv_msg(
        OUTSIDE,
        CARRIER1,
        reply(
            &inv_b,
            200,
            Some("em"),
            Some("<sip:c@127.0.0.20:5080>"),
            Some(CARRIER_SDP),
        ),
    );
    lab.find(PBX, "200/INVITE");
    // A 180 delayed in the network arrives after the 200: nothing moves.
    lab.recv_msg(
        OUTSIDE,
        CARRIER1,
        reply(
            &inv_b,
            180,
            Some("em"),
            Some("<sip:c@127.0.0.20:5080>"),
            None,
        ),
    );
    let after = lab.take();
    assert!(
        after.is_empty(),
        "late 180 caused {:?}",
        after
            .iter()
            .map(|(f, m)| format!("{} -> {}", describe(m), f.remote))
            .collect::<Vec<_>>()
    );
    assert_eq!(lab.engine.active_calls(), 1);
}

// ----------------------------------------------------------------------
// Vanished peers, no answer, mid-call requests, failover statuses,
// topology, loop protection and the call cap.
// ----------------------------------------------------------------------

fn ended_with(lab: &Lab, want: EndReason) -> bool {
    lab.call_events()
        .iter()
        .any(|e| matches!(e, CallEventKind::Ended { reason, .. } if *reason == want))
}

#[test]
fn in_dialog_481_means_the_peer_vanished_bye_both_legs() {
    let Answered {
        mut lab, mut pbx, ..
    } = answered_call();
    lab.recv_msg(
        INSIDE,
        PBX,
        pbx.request(
            "INFO",
            Some(("application/dtmf-relay", "Signal=1\r\n")),
            None,
        ),
    );
    let info = lab.find(CARRIER1, "INFO");
    // The carrier lost the dialog (a restart, say).
    lab.recv_msg(OUTSIDE, CARRIER1, reply(&info, 481, None, None, None));
    let msgs = lab.take();
    let to = |who: &str, what: &str| {
        msgs.iter()
            .filter(|(f, m)| f.remote == addr(who) && describe(m) == what)
            .count()
    };
    assert_eq!(to(PBX, "481/INFO"), 1, "the 481 is relayed");
    assert_eq!(to(PBX, "BYE"), 1, "the PBX's leg is closed");
    assert_eq!(to(CARRIER1, "BYE"), 1, "the carrier's leg too");
    assert!(ended_with(&lab, EndReason::PeerVanished));
    let bye = lab
        .sent
        .iter()
        .rev()
        .find(|(f, m)| f.remote == addr(PBX) && describe(m) == "BYE")
        .unwrap()
        .1
        .clone();
    lab.recv_msg(INSIDE, PBX, reply(&bye, 200, None, None, None));
    assert_eq!(lab.engine.active_calls(), 0);
}

#[test]
fn in_dialog_request_timing_out_ends_the_call_with_bye_both_legs() {
    let Answered {
        mut lab,
        mut carrier,
        ..
    } = answered_call();
    // The carrier sends INFO toward the PBX, which has gone silent.
    lab.recv_msg(
        OUTSIDE,
        CARRIER1,
        carrier.request(
            "INFO",
            Some(("application/dtmf-relay", "Signal=2\r\n")),
            None,
        ),
    );
    lab.find(PBX, "INFO");
    // Timer F (64*T1 = 32 s) expires on the PBX leg.
    lab.advance(Duration::from_secs(33));
    let msgs = lab.take();
    assert!(
        msgs.iter()
            .any(|(f, m)| f.remote == addr(CARRIER1) && describe(m) == "408/INFO"),
        "the carrier gets 408 for its INFO"
    );
    assert!(
        msgs.iter()
            .any(|(f, m)| f.remote == addr(CARRIER1) && describe(m) == "BYE")
    );
    assert!(
        msgs.iter()
            .any(|(f, m)| f.remote == addr(PBX) && describe(m) == "BYE")
    );
    assert!(ended_with(&lab, EndReason::PeerVanished));
}

#[test]
fn ringing_past_the_no_answer_timeout_gets_408_and_cancel() {
    let mut lab = lab_with(quickstart_with_sip("  no_answer_timeout_seconds: 5"));
    lab.recv_msg(INSIDE, PBX, pbx_invite(40, "+4930123456", Some(PBX_SDP)));
    let inv_b = lab.find(CARRIER1, "INVITE");
    lab.recv_msg(
        OUTSIDE,
        CARRIER1,
        reply(
            &inv_b,
            180,
            Some("ring"),
            Some("<sip:c@127.0.0.20:5080>"),
            None,
        ),
    );
    lab.find(PBX, "180/INVITE");
    lab.advance(Duration::from_millis(4900));
    assert!(
        !lab.take()
            .iter()
            .any(|(_, m)| matches!(describe(m).as_str(), "CANCEL" | "408/INVITE")),
        "nothing before the timeout"
    );
    lab.advance(Duration::from_millis(200));
    let msgs = lab.take();
    let timeout = msgs
        .iter()
        .find(|(f, m)| f.remote == addr(PBX) && describe(m) == "408/INVITE")
        .expect("408 to the caller")
        .1
        .clone();
    assert!(timeout.to_tag().is_some());
    let cancel = msgs
        .iter()
        .find(|(f, m)| f.remote == addr(CARRIER1) && describe(m) == "CANCEL")
        .expect("CANCEL to the callee")
        .1
        .clone();
    assert_eq!(cancel.branch(), inv_b.branch());
    assert!(
        !msgs.iter().any(|(f, _)| f.remote == addr(CARRIER2)),
        "no failover on no-answer"
    );
    assert!(lab.call_events().iter().any(|e| matches!(
        e,
        CallEventKind::Ended {
            reason: EndReason::NoAnswer,
            status: Some(408),
            ..
        }
    )));
    lab.recv_msg(OUTSIDE, CARRIER1, reply(&cancel, 200, None, None, None));
    lab.recv_msg(
        OUTSIDE,
        CARRIER1,
        reply(&inv_b, 487, Some("ring"), None, None),
    );
    lab.find(CARRIER1, "ACK");
    assert_eq!(lab.engine.active_calls(), 0);
}

#[test]
fn update_with_sdp_mid_call_is_relayed_with_its_answer() {
    let Answered {
        mut lab, mut pbx, ..
    } = answered_call();
    let hold = PBX_SDP.replace("o=pbx 111 1", "o=pbx 111 2") + "a=sendonly\r\n";
    lab.recv_msg(
        INSIDE,
        PBX,
        pbx.request(
            "UPDATE",
            Some(("application/sdp", &hold)),
            Some("<sip:pbx-moved@127.0.0.10:5070>"),
        ),
    );
    let up = lab.find(CARRIER1, "UPDATE");
    assert_eq!(up.to_tag(), Some("carrier-tag"));
    assert_eq!(up.request_uri_str(), Some("sip:carrier@127.0.0.20:5080"));
    assert_eq!(up.content_type(), Some("application/sdp"));
    let body = String::from_utf8_lossy(up.body()).to_string();
    assert!(body.contains("a=sendonly\r\n"), "{body}");
    assert!(body.contains("o=- 111 2 IN IP4 127.0.0.2\r\n"), "{body}");
    assert_no_leak(&up, INSIDE_SECRETS);
    let contact = up.contacts().next().unwrap().unwrap();
    assert!(contact.uri_str.contains("127.0.0.2"), "{}", contact.uri_str);
    let held = CARRIER_SDP.replace("o=carrier 222 1", "o=carrier 222 2") + "a=recvonly\r\n";
    lab.recv_msg(
        OUTSIDE,
        CARRIER1,
        reply(
            &up,
            200,
            None,
            Some("<sip:carrier@127.0.0.20:5080>"),
            Some(&held),
        ),
    );
    let ok = lab.find(PBX, "200/UPDATE");
    let body = String::from_utf8_lossy(ok.body()).to_string();
    assert!(body.contains("a=recvonly\r\n"), "{body}");
    assert!(body.contains("o=- 222 2 IN IP4 127.0.0.1\r\n"), "{body}");
    assert_no_leak(&ok, OUTSIDE_SECRETS);
    // UPDATE refreshes the target: the carrier's next request reaches the new Contact.
    let mut carrier = PeerDialog::from_uas_side(
        &lab.sent
            .iter()
            .find(|(f, m)| f.remote == addr(CARRIER1) && describe(m) == "INVITE")
            .unwrap()
            .1
            .clone(),
        "carrier-tag",
        "127.0.0.20:5080",
    );
    lab.recv_msg(OUTSIDE, CARRIER1, carrier.request("BYE", None, None));
    let bye = lab.find(PBX, "BYE");
    assert_eq!(bye.request_uri_str(), Some("sip:pbx-moved@127.0.0.10:5070"));
}

#[test]
fn unknown_in_dialog_methods_are_relayed_with_their_answers() {
    let Answered {
        mut lab,
        mut pbx,
        mut carrier,
        ..
    } = answered_call();
    // MESSAGE from the PBX, answered 202 by the carrier.
    lab.recv_msg(
        INSIDE,
        PBX,
        pbx.request("MESSAGE", Some(("text/plain", "hello carrier")), None),
    );
    let msg = lab.find(CARRIER1, "MESSAGE");
    assert_eq!(msg.body(), b"hello carrier");
    assert_eq!(msg.content_type(), Some("text/plain"));
    assert_no_leak(&msg, INSIDE_SECRETS);
    lab.recv_msg(OUTSIDE, CARRIER1, reply(&msg, 202, None, None, None));
    let acc = lab.find(PBX, "202/MESSAGE");
    assert_no_leak(&acc, OUTSIDE_SECRETS);
    // An unknown method from the carrier, refused by the PBX with 405.
    lab.recv_msg(
        OUTSIDE,
        CARRIER1,
        carrier.request("FOO", Some(("application/x-foo", "bar=1")), None),
    );
    let foo = lab.find(PBX, "FOO");
    assert_eq!(foo.body(), b"bar=1");
    assert_eq!(foo.call_id(), "pbx-call-1@127.0.0.10");
    assert_no_leak(&foo, OUTSIDE_SECRETS);
    lab.recv_msg(INSIDE, PBX, reply(&foo, 405, None, None, None));
    let refused = lab.find(CARRIER1, "405/FOO");
    assert_eq!(refused.reason(), b"Method Not Allowed");
    assert_no_leak(&refused, INSIDE_SECRETS);
    assert_eq!(
        lab.engine.active_calls(),
        1,
        "a refusal does not end the call"
    );
}

#[test]
fn failover_on_408_from_the_primary() {
    let mut lab = lab();
    lab.recv_msg(INSIDE, PBX, pbx_invite(41, "+4930123456", Some(PBX_SDP)));
    let inv1 = lab.find(CARRIER1, "INVITE");
    lab.recv_msg(OUTSIDE, CARRIER1, reply(&inv1, 408, Some("t"), None, None));
    let msgs = lab.take();
    assert!(
        msgs.iter()
            .any(|(f, m)| f.remote == addr(CARRIER1) && describe(m) == "ACK")
    );
    assert!(
        msgs.iter()
            .any(|(f, m)| f.remote == addr(CARRIER2) && describe(m) == "INVITE"),
        "408 fails over to the secondary"
    );
    assert!(!msgs.iter().any(|(f, _)| f.remote == addr(PBX)));
    assert!(lab.call_events().iter().any(|e| matches!(
        e,
        CallEventKind::Failover {
            status: Some(408),
            ..
        }
    )));
}

#[test]
fn decline_and_not_found_are_relayed_without_failover() {
    for (n, status, phrase) in [(42u32, 603u16, &b"Decline"[..]), (43, 404, b"Not Found")] {
        let mut lab = lab();
        lab.recv_msg(INSIDE, PBX, pbx_invite(n, "+4930123456", Some(PBX_SDP)));
        let inv = lab.find(CARRIER1, "INVITE");
        lab.recv_msg(
            OUTSIDE,
            CARRIER1,
            reply(&inv, status, Some("r"), None, None),
        );
        let msgs = lab.take();
        assert!(
            !msgs.iter().any(|(f, _)| f.remote == addr(CARRIER2)),
            "{status} must not fail over"
        );
        let r = msgs
            .iter()
            .find(|(f, m)| f.remote == addr(PBX) && describe(m) == format!("{status}/INVITE"))
            .unwrap_or_else(|| panic!("{status} relayed to the PBX"))
            .1
            .clone();
        assert_eq!(r.reason(), phrase);
        assert_no_leak(&r, OUTSIDE_SECRETS);
        assert!(lab.call_events().iter().any(|e| matches!(
            e,
            CallEventKind::Ended {
                reason: EndReason::Rejected,
                status: Some(s),
                ..
            } if *s == status
        )));
        assert_eq!(lab.engine.active_calls(), 0);
    }
}

/// Quickstart with `pass_headers` on the carrier trunk.
fn quickstart_passing(headers: &str) -> palisade_config::Config {
    let text = include_str!("../../../configs/quickstart.yaml").replacen(
        "  - name: carrier\n    zone: outside\n",
        &format!("  - name: carrier\n    zone: outside\n    pass_headers: [{headers}]\n"),
        1,
    );
    assert!(text.contains("pass_headers"), "quickstart shape changed");
    palisade_config::load_str(&text, "quickstart.yaml").unwrap()
}

#[test]
fn topology_to_host_route_warning_and_pass_headers() {
    let mut lab = lab_with(quickstart_passing("X-Billing-Ref"));
    let inv = String::from_utf8(pbx_invite(44, "+4930123456", Some(PBX_SDP)).to_vec())
        .unwrap()
        .replacen(
            "Max-Forwards: 70\r\n",
            "Max-Forwards: 70\r\nRoute: <sip:edge1.corp.example;lr>\r\nWarning: 399 pbx1.corp.example \"internal note\"\r\nX-Billing-Ref: cost-centre-42\r\nX-Secret-Ref: do-not-cross\r\n",
            1,
        );
    lab.recv(INSIDE, PBX, &inv);
    let inv_b = lab.find(CARRIER1, "INVITE");
    let to = inv_b.to().unwrap();
    assert_eq!(to.uri_str, "sip:+4930123456@127.0.0.20:5080;user=phone");
    assert_eq!(
        inv_b.request_uri_str(),
        Some("sip:+4930123456@127.0.0.20:5080;user=phone")
    );
    assert_eq!(inv_b.from().unwrap().uri_str, "sip:+4989555000@127.0.0.2");
    assert!(!inv_b.has_header(HeaderName::Route), "Route copied");
    assert!(!inv_b.has_header(HeaderName::Warning), "Warning copied");
    assert_eq!(
        inv_b.header_named("X-Billing-Ref"),
        Some(&b"cost-centre-42"[..])
    );
    assert_eq!(inv_b.header_named("X-Secret-Ref"), None);
    assert_no_leak(&inv_b, INSIDE_SECRETS);
    // The carrier's Warning and Record-Route stay on its side too.
    let ring = String::from_utf8(
        reply(
            &inv_b,
            180,
            Some("w"),
            Some("<sip:c@127.0.0.20:5080>"),
            None,
        )
        .to_vec(),
    )
    .unwrap()
    .replacen(
        "Server:",
        "Warning: 399 sbc.carrier.example \"carrier note\"\r\nRecord-Route: <sip:rr.carrier.example;lr>\r\nX-Billing-Ref: carrier-ref\r\nServer:",
        1,
    );
    lab.recv(OUTSIDE, CARRIER1, &ring);
    let r = lab.find(PBX, "180/INVITE");
    assert!(!r.has_header(HeaderName::Warning));
    assert!(!r.has_header(HeaderName::RecordRoute));
    assert!(!String::from_utf8_lossy(r.raw()).contains("carrier.example"));
    // pass_headers is the destination trunk's: the PBX trunk passes nothing.
    assert_eq!(r.header_named("X-Billing-Ref"), None);
}

#[test]
fn a_passed_identity_header_crosses_with_palisades_host() {
    let mut lab = lab_with(quickstart_passing("P-Asserted-Identity"));
    lab.recv_msg(INSIDE, PBX, pbx_invite(46, "+4930123456", Some(PBX_SDP)));
    let inv_b = lab.find(CARRIER1, "INVITE");
    // The PBX sent <sip:+4989555000@127.0.0.10>: the identity crosses, its
    // network does not.
    assert_eq!(
        inv_b.header_named("P-Asserted-Identity"),
        Some(&b"<sip:+4989555000@127.0.0.2>"[..])
    );
    // (The SDP's c= line is the media layer's: this lab does not anchor.)
    for h in inv_b.headers() {
        assert!(
            !String::from_utf8_lossy(h.line).contains("127.0.0.10"),
            "{h:?}"
        );
    }
}

#[test]
fn max_forwards_zero_is_a_loop() {
    let mut lab = lab();
    let inv = String::from_utf8(pbx_invite(45, "+4930123456", None).to_vec())
        .unwrap()
        .replacen("Max-Forwards: 70", "Max-Forwards: 0", 1);
    lab.recv(INSIDE, PBX, &inv);
    let msgs = lab.take();
    assert!(
        msgs.iter()
            .any(|(f, m)| f.remote == addr(PBX) && describe(m) == "483/INVITE")
    );
    assert!(!msgs.iter().any(|(f, _)| f.remote == addr(CARRIER1)));
    assert_eq!(lab.engine.active_calls(), 0);
    // One hop left: forwarded with Max-Forwards 0.
    let inv = String::from_utf8(pbx_invite(46, "+4930123456", None).to_vec())
        .unwrap()
        .replacen("Max-Forwards: 70", "Max-Forwards: 1", 1);
    lab.recv(INSIDE, PBX, &inv);
    let inv_b = lab.find(CARRIER1, "INVITE");
    assert_eq!(inv_b.max_forwards(), Some(0));
}

#[test]
fn max_calls_caps_concurrent_calls() {
    let mut lab = lab_with(quickstart_with_sip("  max_calls: 2"));
    for n in 50..52 {
        lab.recv_msg(INSIDE, PBX, pbx_invite(n, "+4930123456", None));
        lab.find(CARRIER1, "INVITE");
    }
    lab.recv_msg(INSIDE, PBX, pbx_invite(52, "+4930123456", None));
    let msgs = lab.take();
    assert!(
        msgs.iter()
            .any(|(f, m)| f.remote == addr(PBX) && describe(m) == "503/INVITE"),
        "third call refused"
    );
    assert!(!msgs.iter().any(|(f, _)| f.remote == addr(CARRIER1)));
    assert_eq!(lab.engine.active_calls(), 2);
}

#[test]
fn oversize_udp_request_gets_513() {
    let mut lab = lab();
    let filler = "X-Filler: ".to_owned() + &"a".repeat(100) + "\n";
    let inv = String::from_utf8(pbx_invite(47, "+4930123456", None).to_vec())
        .unwrap()
        .replacen(
            "Max-Forwards: 70\r\n",
            &format!("Max-Forwards: 70\r\n{}", filler.repeat(170)),
            1,
        );
    assert!(crlf(&inv).len() > 16 * 1024);
    lab.recv(INSIDE, PBX, &inv);
    let msgs = lab.take();
    let r = msgs
        .iter()
        .find(|(f, m)| f.remote == addr(PBX) && describe(m) == "513/INVITE")
        .expect("513 to the PBX")
        .1
        .clone();
    assert_eq!(r.reason(), b"Message Too Large");
    let warning = String::from_utf8_lossy(r.header(HeaderName::Warning).unwrap()).to_string();
    assert!(warning.contains("16384"), "{warning}");
    assert!(!msgs.iter().any(|(f, _)| f.remote == addr(CARRIER1)));
    assert_eq!(lab.engine.stats().malformed_answered, 1);
    assert_eq!(lab.engine.active_calls(), 0);
}

/// What the UDP transport hands on for an oversize datagram: the first
/// 16 KiB + 1 bytes, the head cut mid-way. Still answered 513.
#[test]
fn oversize_datagram_cut_by_the_transport_gets_513() {
    let mut lab = lab();
    let filler = "X-Filler: ".to_owned() + &"a".repeat(100) + "\n";
    let inv = String::from_utf8(pbx_invite(48, "+4930123456", None).to_vec())
        .unwrap()
        .replacen(
            "CSeq: 1 INVITE\r\n",
            &format!("CSeq: 1 INVITE\r\n{}", filler.repeat(200)),
            1,
        );
    let mut data = crlf(&inv);
    data.truncate(16 * 1024 + 1);
    assert!(
        !String::from_utf8_lossy(&data).contains("\r\n\r\n"),
        "head cut"
    );
    lab.recv_bytes(
        INSIDE,
        palisade_sip::Transport::Udp,
        PBX,
        bytes::Bytes::from(data),
    );
    let r = lab.find(PBX, "513/INVITE");
    assert_eq!(r.call_id(), "pbx-call-48@127.0.0.10");
    assert_eq!(lab.engine.stats().malformed_answered, 1);
}
