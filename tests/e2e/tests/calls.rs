//! Call flows through Palisade: PBX (inside) <-> Palisade <-> carrier (outside).
//! Each test runs in its own slot; the SIPp scenarios themselves check that
//! every request reaching a peer targets that peer and comes from Palisade's
//! zone address (see tests/e2e/scenarios/*.xml), and these tests check the rest.

use std::time::Duration;

use palisade_e2e::msglog::{Direction, SipMessage};
use palisade_e2e::{Lab, Slot, Transport, numbers};

fn received(log: &[SipMessage]) -> Vec<&SipMessage> {
    log.iter()
        .filter(|m| m.direction == Direction::Received)
        .collect()
}

fn first_request<'a>(log: &'a [SipMessage], method: &str) -> &'a SipMessage {
    log.iter()
        .find(|m| m.direction == Direction::Received && m.is_request(method))
        .unwrap_or_else(|| panic!("no {method} received"))
}

/// Each leg is its own dialog: different Call-IDs.
fn assert_separate_legs(a: &[SipMessage], b: &[SipMessage]) {
    let ida = a
        .first()
        .and_then(SipMessage::call_id)
        .expect("a Call-ID on leg A");
    let idb = b
        .first()
        .and_then(SipMessage::call_id)
        .expect("a Call-ID on leg B");
    assert_ne!(ida, idb, "both legs share one Call-ID");
}

#[test]
fn outbound_pbx_to_carrier() {
    let lab = Lab::start(Slot::OutboundCall);
    let primary = lab.carrier_primary("uas_answer").spawn_uas();
    let secondary = lab.carrier_secondary("uas_answer").spawn_uas();
    let pbx = lab.pbx_uac("uac_call").pause_ms(200).run();
    pbx.assert_success(1);
    let primary = primary.wait();
    primary.assert_success(1);
    let carrier_log = primary.messages();
    // The dialled number survives; the request goes to the primary only.
    let invite = first_request(&carrier_log, "INVITE");
    assert!(
        invite
            .start_line()
            .starts_with(&format!("INVITE sip:{}@", numbers::EXTERNAL)),
        "{}",
        invite.start_line()
    );
    assert_separate_legs(&pbx.messages(), &carrier_log);
    let secondary = secondary.kill();
    assert!(
        secondary.received().is_empty(),
        "the secondary got traffic on a healthy primary"
    );
}

#[test]
fn inbound_carrier_to_pbx() {
    let lab = Lab::start(Slot::InboundCall);
    let pbx = lab.pbx_uas("uas_answer").spawn_uas();
    let carrier = lab.carrier_uac("uac_call").pause_ms(200).run();
    carrier.assert_success(1);
    let pbx = pbx.wait();
    pbx.assert_success(1);
    let invite = first_request(&pbx.messages(), "INVITE").start_line();
    assert!(
        invite.starts_with(&format!("INVITE sip:{}@", numbers::DID)),
        "{invite}"
    );
    assert_separate_legs(&carrier.messages(), &pbx.messages());
}

#[test]
fn late_offer_sdp_answer_travels_in_the_ack() {
    let lab = Lab::start(Slot::LateOffer);
    // uas_late_offer fails unless the INVITE has no SDP and the ACK has the answer.
    let carrier = lab.carrier_primary("uas_late_offer").spawn_uas();
    let pbx = lab.pbx_uac("uac_late_offer").run();
    pbx.assert_success(1);
    carrier.wait().assert_success(1);
}

#[test]
fn cancel_while_ringing() {
    let lab = Lab::start(Slot::Cancel);
    let carrier = lab.carrier_primary("uas_ring_cancel").spawn_uas();
    // uac_cancel requires 200 for the CANCEL, then 487; uas_ring_cancel requires the CANCEL and the ACK for its 487.
    let pbx = lab.pbx_uac("uac_cancel").run();
    pbx.assert_success(1);
    carrier.wait().assert_success(1);
}

#[test]
fn busy_486_is_relayed_and_not_failed_over() {
    let lab = Lab::start(Slot::Busy486);
    let primary = lab.carrier_primary("uas_busy").spawn_uas();
    let secondary = lab.carrier_secondary("uas_answer").spawn_uas();
    let pbx = lab.pbx_uac("uac_expect_486").run();
    pbx.assert_success(1);
    primary.wait().assert_success(1);
    std::thread::sleep(Duration::from_millis(500));
    let secondary = secondary.kill();
    assert!(
        secondary.received().is_empty(),
        "486 is final: Palisade must not try the secondary"
    );
    let finals: Vec<u16> = received(&pbx.messages())
        .iter()
        .filter_map(|m| m.status())
        .filter(|s| *s >= 200)
        .collect();
    assert!(
        finals.iter().all(|s| *s == 486),
        "the PBX got finals {finals:?}"
    );
}

#[test]
fn reinvite_hold_and_unhold() {
    let lab = Lab::start(Slot::ReinviteHold);
    let carrier = lab.carrier_primary("uas_reinvite_hold").spawn_uas();
    let pbx = lab.pbx_uac("uac_reinvite_hold").run();
    pbx.assert_success(1);
    let carrier = carrier.wait();
    carrier.assert_success(1);
    // The re-INVITEs and their answers (with marker headers) leak nothing either.
    let markers = palisade_e2e::leak::marker_values(&pbx.messages());
    assert!(markers.contains("mark-uac-reinvite-xheader"), "{markers:?}");
    let markers = palisade_e2e::leak::marker_values(&carrier.messages());
    assert!(
        markers.contains("mark-uas-reinvite-warntext"),
        "{markers:?}"
    );
    palisade_e2e::assert_topology_hidden(lab.net(), &pbx.messages(), &[&carrier.messages()]);
}

#[test]
fn bye_from_the_callee() {
    let lab = Lab::start(Slot::CalleeBye);
    let carrier = lab
        .carrier_primary("uas_callee_bye")
        .pause_ms(300)
        .spawn_uas();
    let pbx = lab.pbx_uac("uac_expect_bye").run();
    pbx.assert_success(1);
    carrier.wait().assert_success(1);
}

#[test]
fn info_is_relayed_in_dialog() {
    let lab = Lab::start(Slot::InfoRelayed);
    let carrier = lab.carrier_primary("uas_info").spawn_uas();
    let pbx = lab.pbx_uac("uac_info").run();
    pbx.assert_success(1);
    let carrier = carrier.wait();
    carrier.assert_success(1);
    let info = first_request(&carrier.messages(), "INFO").clone();
    assert_eq!(
        info.body(),
        b"Signal=5\r\nDuration=160\r\n",
        "INFO body altered"
    );
}

#[test]
fn options_to_palisade_answered_200_with_allow() {
    let lab = Lab::start(Slot::OptionsPing);
    // Raw probe on the inside zone.
    let resp = lab
        .options_ping(Duration::from_secs(2))
        .expect("no answer to OPTIONS");
    let text = String::from_utf8_lossy(&resp);
    assert!(text.starts_with("SIP/2.0 200"), "{text}");
    let allow = text
        .lines()
        .find(|l| l.to_ascii_lowercase().starts_with("allow:"))
        .unwrap_or_else(|| panic!("no Allow header: {text}"));
    for m in ["INVITE", "ACK", "BYE", "CANCEL", "OPTIONS"] {
        assert!(allow.contains(m), "Allow lacks {m}: {allow}");
    }
    // SIPp on both zones (options_ping checks 200 and Allow itself).
    let net = lab.net();
    lab.pbx_uac("options_ping").run().assert_success(1);
    lab.carrier_primary("options_ping")
        .remote(net.outside())
        .run()
        .assert_success(1);
}

#[test]
fn pbx_over_tcp() {
    let lab = Lab::builder(Slot::PbxOverTcp)
        .pbx_transport(Transport::Tcp)
        .start();
    let carrier = lab.carrier_primary("uas_answer").spawn_uas();
    let pbx = lab.pbx_uac("uac_call").pause_ms(200).run();
    pbx.assert_success(1);
    assert!(
        pbx.messages().iter().all(|m| m.transport == "TCP"),
        "the PBX leg left TCP"
    );
    let carrier = carrier.wait();
    carrier.assert_success(1);
    let invite = first_request(&carrier.messages(), "INVITE").clone();
    assert_eq!(invite.transport, "UDP");
    let via = invite.header("Via").unwrap_or_default();
    assert!(via.starts_with("SIP/2.0/UDP "), "carrier-side Via: {via}");
}
