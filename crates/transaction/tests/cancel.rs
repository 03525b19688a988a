//! CANCEL scenarios (RFC 3261 9.1 and 9.2), both sides.

mod common;

use bytes::Bytes;
use common::{drain, ms, origin, run_until, s};
use palisade_transaction::{
    ClientInvite, ClientInviteState, ClientKey, ClientNonInvite, ClientNonInviteState, Event,
    MethodClass, ResponseDisposition as D, ServerInvite, ServerInviteState, ServerKey,
    ServerNonInvite, ServerNonInviteState, TimerConfig,
};

const INVITE: &[u8] = b"INVITE sip:bob@127.0.0.20 SIP/2.0\r\n\r\n";
const CANCEL: &[u8] = b"CANCEL sip:bob@127.0.0.20 SIP/2.0\r\n\r\n";
const ACK: &[u8] = b"ACK sip:bob@127.0.0.20 SIP/2.0\r\n\r\n";

#[test]
fn client_invite_is_cancelled_after_180_and_acks_the_487() {
    let t0 = origin();
    let cfg = TimerConfig::default();
    let branch = "z9hG4bK-leg2-1";
    let invite_key = ClientKey::new(branch, MethodClass::of_request("INVITE"));
    let cancel_key = ClientKey::new(branch, MethodClass::of_request("CANCEL"));
    assert_ne!(invite_key, cancel_key, "same branch, two transactions");

    let mut inv = ClientInvite::new(t0, &cfg, false, Bytes::from_static(INVITE));
    let mut log = drain(&mut inv, t0, t0);
    assert!(!inv.has_provisional(), "no CANCEL before a provisional");
    assert_eq!(inv.on_response(t0 + ms(80), 180), D::PassToTu);
    assert!(inv.has_provisional());

    // The TU gives up ringing at 20 s and sends CANCEL as its own transaction.
    let at_cancel = t0 + s(20);
    let mut can = ClientNonInvite::new(at_cancel, &cfg, false, Bytes::from_static(CANCEL));
    inv.on_cancel_sent(at_cancel);
    let cancel_log = drain(&mut can, t0, at_cancel);
    assert_eq!(cancel_log.tx_bytes(), vec![Bytes::from_static(CANCEL)]);
    // 200 for the CANCEL: the CANCEL transaction completes, Timer K = T4.
    // (The engine matched the 200 by its CSeq method to the CANCEL key.)
    assert_eq!(
        ClientKey::new(branch, MethodClass::of_response("CANCEL")),
        cancel_key
    );
    assert_eq!(can.on_response(at_cancel + ms(30), 200), D::PassToTu);
    assert_eq!(can.state(), ClientNonInviteState::Completed);

    // 487 for the INVITE: ACK needed.
    let at_487 = at_cancel + ms(60);
    assert_eq!(inv.on_response(at_487, 487), D::PassToTuAndAck);
    assert_eq!(inv.state(), ClientInviteState::Completed);
    inv.send_ack(Bytes::from_static(ACK)).unwrap();
    log.extend(drain(&mut inv, t0, at_487));
    // The 487 is retransmitted (our ACK got lost): ACK again, absorbed.
    assert_eq!(inv.on_response(at_487 + ms(500), 487), D::Absorb);
    log.extend(drain(&mut inv, t0, at_487 + ms(500)));
    assert_eq!(
        log.tx_times_of(ACK),
        vec![at_487 - t0, at_487 + ms(500) - t0]
    );

    // Both end on their own; the CANCEL guard never fires.
    let end = run_until(&mut inv, t0, at_487 + ms(500), t0 + s(200));
    assert_eq!(end.events, vec![(at_487 + s(32) - t0, Event::Terminated)]);
    let end = run_until(&mut can, t0, at_cancel, t0 + s(200));
    assert_eq!(
        end.events,
        vec![(at_cancel + ms(30) + s(5) - t0, Event::Terminated)]
    );
}

#[test]
fn cancel_without_final_response_gives_up_after_64_t1() {
    let t0 = origin();
    let cfg = TimerConfig::default();
    let mut inv = ClientInvite::new(t0, &cfg, true, Bytes::from_static(INVITE));
    inv.on_response(t0 + s(1), 183);
    inv.on_cancel_sent(t0 + s(10));
    let log = run_until(&mut inv, t0, t0 + s(10), t0 + s(200));
    assert_eq!(
        log.events,
        vec![(s(42), Event::Timeout), (s(42), Event::Terminated)]
    );
}

#[test]
fn server_invite_in_proceeding_answers_487_after_cancel() {
    let t0 = origin();
    let cfg = TimerConfig::default();
    let branch = "z9hG4bK-pbx-77";
    let invite_key = ServerKey::new(
        branch,
        "127.0.0.10",
        Some(5070),
        MethodClass::of_request("INVITE"),
    );
    let mut inv = ServerInvite::new(t0, &cfg, false);
    inv.send_response(t0, 100, Bytes::from_static(b"100"))
        .unwrap();
    inv.send_response(t0 + ms(50), 180, Bytes::from_static(b"180"))
        .unwrap();
    let _ = drain(&mut inv, t0, t0 + ms(50));

    // A CANCEL arrives: its own server transaction, which finds the INVITE.
    let at = t0 + s(5);
    let cancel_key = ServerKey::new(
        branch,
        "127.0.0.10",
        Some(5070),
        MethodClass::of_request("CANCEL"),
    );
    assert_ne!(cancel_key, invite_key);
    assert_eq!(cancel_key.with_method(MethodClass::Invite), invite_key);
    let mut can = ServerNonInvite::new(at, &cfg, false);
    can.send_response(at, 200, Bytes::from_static(b"200 CANCEL"))
        .unwrap();
    assert_eq!(can.state(), ServerNonInviteState::Completed);
    // The TU answers the INVITE with 487 while it is still in Proceeding.
    assert_eq!(inv.state(), ServerInviteState::Proceeding);
    inv.send_response(at, 487, Bytes::from_static(b"487"))
        .unwrap();
    assert_eq!(inv.state(), ServerInviteState::Completed);
    assert_eq!(inv.poll_transmit().as_deref(), Some(&b"487"[..]));
    // The ACK arrives (with the INVITE's key).
    let ack_key = ServerKey::new(
        branch,
        "127.0.0.10",
        Some(5070),
        MethodClass::of_request("ACK"),
    );
    assert_eq!(ack_key, invite_key);
    assert!(!inv.on_ack(at + ms(20)));
    assert_eq!(inv.state(), ServerInviteState::Confirmed);
    let log = run_until(&mut inv, t0, at + ms(20), t0 + s(100));
    assert!(log.tx.is_empty(), "no 487 retransmission after the ACK");
    assert_eq!(log.events, vec![(ms(10_020), Event::Terminated)]);
    // A CANCEL retransmission gets the 200 again, until Timer J.
    can.on_request_retransmit(at + s(1));
    assert_eq!(can.poll_transmit().as_deref(), Some(&b"200 CANCEL"[..]));
    let log = run_until(&mut can, t0, at + s(1), t0 + s(100));
    assert_eq!(log.events, vec![(s(37), Event::Terminated)]);
}
