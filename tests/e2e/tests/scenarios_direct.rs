//! Every SIPp scenario validated against its counterpart directly (UAC -> UAS,
//! no Palisade in between), plus the callee-only scenarios against raw UDP.
//! These pass without Palisade; they prove a failing end-to-end test is about
//! Palisade, not about the scenarios or the harness.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::time::Duration;

use palisade_e2e::msglog::Direction;
use palisade_e2e::{Net, Sipp, Slot, Transport, assert_topology_hidden, numbers, raw};

/// The callee at the primary carrier's address, expecting the caller (PBX address) as its peer.
fn uas(dir: &Path, net: Net, scenario: &str) -> Sipp {
    Sipp::new(dir, "uas", scenario)
        .local(net.carrier_primary())
        .key("expect_peer", net.pbx_ip())
}

/// The caller at the PBX's address, calling the callee directly.
fn uac(dir: &Path, net: Net, scenario: &str) -> Sipp {
    Sipp::new(dir, "uac", scenario)
        .local(net.pbx())
        .remote(net.carrier_primary())
        .key("expect_peer", net.carrier_primary_ip())
        .key("caller", numbers::PBX_CALLER)
        .key("callee", numbers::EXTERNAL)
}

fn setup(slot: Slot) -> (PathBuf, Net) {
    (slot.fresh_dir(), slot.net())
}

/// Runs `uac_scn` against `uas_scn` for one call; both must succeed.
fn pair(slot: Slot, uas_scn: &str, uac_scn: &str) {
    let (dir, net) = setup(slot);
    let callee = uas(&dir, net, uas_scn).spawn_uas();
    let caller = uac(&dir, net, uac_scn).pause_ms(100).run();
    caller.assert_success(1);
    callee.wait().assert_success(1);
}

#[test]
fn basic_call() {
    pair(Slot::DirectBasicCall, "uas_answer", "uac_call");
}

#[test]
fn late_offer() {
    pair(Slot::DirectLateOffer, "uas_late_offer", "uac_late_offer");
}

#[test]
fn busy() {
    pair(Slot::DirectBusy, "uas_busy", "uac_expect_486");
}

#[test]
fn cancel() {
    pair(Slot::DirectCancel, "uas_ring_cancel", "uac_cancel");
}

#[test]
fn reinvite_hold() {
    pair(
        Slot::DirectReinviteHold,
        "uas_reinvite_hold",
        "uac_reinvite_hold",
    );
}

#[test]
fn callee_bye() {
    pair(Slot::DirectCalleeBye, "uas_callee_bye", "uac_expect_bye");
}

#[test]
fn info() {
    pair(Slot::DirectInfo, "uas_info", "uac_info");
}

#[test]
fn options() {
    pair(Slot::DirectOptions, "uas_options", "options_ping");
}

#[test]
fn call_over_tcp() {
    let (dir, net) = setup(Slot::DirectTcp);
    let callee = uas(&dir, net, "uas_answer")
        .transport(Transport::Tcp)
        .spawn_uas();
    let caller = uac(&dir, net, "uac_call").transport(Transport::Tcp).run();
    caller.assert_success(1);
    assert!(caller.messages().iter().all(|m| m.transport == "TCP"));
    // The callee's timewait ends when the caller closes its connection, which
    // SIPp counts as a failed call; what matters is it saw the whole call.
    let callee = callee.kill();
    let got: Vec<_> = callee
        .received()
        .iter()
        .filter_map(|m| m.method())
        .collect();
    assert_eq!(got, ["INVITE", "ACK", "BYE"]);
}

#[test]
fn the_checks_in_the_scenarios_bite() {
    // The callee expects requests from an address nobody uses: the call
    // completes, but the callee marks it failed (exit 1).
    let (dir, net) = setup(Slot::DirectChecks);
    let callee = uas(&dir, net, "uas_answer")
        .key("expect_peer", "127.9.9.9")
        .spawn_uas();
    let caller = uac(&dir, net, "uac_call").run();
    caller.assert_success(1);
    let callee = callee.wait();
    callee.assert_exit(1);
    assert_eq!(callee.stats.map(|s| s.failed), Some(1));
    // And the caller checks the answer's Contact the same way.
    let callee = uas(&dir, net, "uas_answer").spawn_uas();
    let caller = uac(&dir, net, "uac_call")
        .key("expect_peer", "127.9.9.9")
        .run();
    caller.assert_exit(1);
    callee.wait().assert_success(1);
}

#[test]
fn load_100_calls_at_50_cps() {
    let (dir, net) = setup(Slot::DirectLoad);
    let callee = uas(&dir, net, "uas_answer").calls(100).spawn_uas();
    let caller = uac(&dir, net, "uac_call")
        .calls(100)
        .rate(50)
        .limit(100)
        .run();
    caller.assert_success(100);
    callee.wait().assert_success(100);
}

fn raw_invite(from: std::net::SocketAddr, to: std::net::SocketAddr, call_id: &str) -> Vec<u8> {
    format!(
        "INVITE sip:{callee}@{to} SIP/2.0\r\n\
         Via: SIP/2.0/UDP {from};branch=z9hG4bK-{call_id}\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:{caller}@{from}>;tag=t-{call_id}\r\n\
         To: <sip:{callee}@{to}>\r\n\
         Call-ID: {call_id}\r\n\
         CSeq: 1 INVITE\r\n\
         Contact: <sip:{caller}@{from}>\r\n\
         Content-Type: application/sdp\r\n\
         Content-Length: 28\r\n\r\n\
         v=0\r\nm=audio 4000 RTP/AVP 0\r\n",
        callee = numbers::EXTERNAL,
        caller = numbers::PBX_CALLER,
    )
    .into_bytes()
}

#[test]
fn retry_after_callee_answers_503_and_takes_the_ack() {
    let (dir, net) = setup(Slot::DirectRetryAfter);
    let callee = uas(&dir, net, "uas_503_retry_after").spawn_uas();
    let sock = raw::udp_socket(net.pbx_ip());
    let me = sock.local_addr().unwrap();
    let got = raw::udp_send_collect(
        &sock,
        net.carrier_primary(),
        &raw_invite(me, net.carrier_primary(), "ra-1"),
        Duration::from_millis(300),
    );
    assert!(!got.is_empty(), "no response");
    assert!(
        got.iter().all(|r| r.starts_with(b"SIP/2.0 503 ")),
        "only the 503 (and its retransmissions)"
    );
    let resp = String::from_utf8_lossy(&got[0]).into_owned();
    assert!(resp.starts_with("SIP/2.0 503 "), "{resp}");
    assert!(resp.contains("\r\nRetry-After: 30\r\n"), "{resp}");
    let to = resp.lines().find(|l| l.starts_with("To:")).unwrap();
    let ack = format!(
        "ACK sip:{}@{} SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bK-ra-1\r\nMax-Forwards: 70\r\n\
         From: <sip:{}@{me}>;tag=t-ra-1\r\n{to}\r\nCall-ID: ra-1\r\nCSeq: 1 ACK\r\nContent-Length: 0\r\n\r\n",
        numbers::EXTERNAL,
        net.carrier_primary(),
        numbers::PBX_CALLER,
    );
    sock.send_to(ack.as_bytes(), net.carrier_primary()).unwrap();
    callee.wait().assert_success(1);
}

#[test]
fn silent_callee_never_answers() {
    let (dir, net) = setup(Slot::DirectSilent);
    let callee = uas(&dir, net, "uas_silent").spawn_uas();
    let sock = raw::udp_socket(net.pbx_ip());
    let me = sock.local_addr().unwrap();
    let invite = raw_invite(me, net.carrier_primary(), "silent-1");
    // The INVITE and a retransmission: no answer to either.
    for _ in 0..2 {
        let got = raw::udp_send_collect(
            &sock,
            net.carrier_primary(),
            &invite,
            Duration::from_millis(700),
        );
        assert!(
            got.is_empty(),
            "the silent callee answered: {:?}",
            String::from_utf8_lossy(&got[0])
        );
    }
    let log = callee.kill().messages();
    assert!(
        log.iter().all(|m| m.direction == Direction::Received),
        "it sent something"
    );
    assert!(log.iter().filter(|m| m.is_request("INVITE")).count() >= 1);
}

#[test]
fn leak_scanner_catches_a_call_without_a_b2bua() {
    // Without Palisade in between each side sees the other's addresses,
    // identifiers and headers: the scanner must say so, naming the PBX
    // address and the marker tokens.
    // The marked scenarios: their marker headers must be caught too.
    let (dir, net) = setup(Slot::DirectLeakScan);
    let callee = uas(&dir, net, "uas_answer_marked").spawn_uas();
    let caller = uac(&dir, net, "uac_call_marked").run();
    caller.assert_success(1);
    let callee = callee.wait();
    callee.assert_success(1);
    let pbx_log = caller.messages();
    let carrier_log = callee.messages();
    let err = catch_unwind(AssertUnwindSafe(|| {
        assert_topology_hidden(net, &pbx_log, &[&carrier_log])
    }))
    .expect_err("a direct call leaks everything");
    let text = err.downcast_ref::<String>().cloned().unwrap_or_default();
    assert!(text.contains(&net.pbx_ip().to_string()), "{text}");
    assert!(text.contains("identifier"), "{text}");
    for marker in [
        "header value mark-uac-xheader",
        "header value mark-uac-useragent",
        "header value mark-uac-warntext",
        "header value mark-uas-server",
        "header value mark-uas-recroute",
        "header value mark-uas-pheader",
    ] {
        assert!(text.contains(marker), "{marker} not reported:\n{text}");
    }
    assert!(
        text.contains("carrier received") && text.contains("PBX received"),
        "{text}"
    );
}
