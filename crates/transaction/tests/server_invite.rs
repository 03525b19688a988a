//! INVITE server transaction: every transition of RFC 3261 Figure 7 / RFC
//! 6026 Figure 7, Timer G/H/I/L, reliable variants, misuse.

mod common;

use bytes::Bytes;
use common::{drain, ms, origin, run_until, s, secs};
use palisade_transaction::{
    Error, Event, OUTBOX_CAPACITY, ServerInvite, ServerInviteState as S, TimerConfig,
};

const R100: &[u8] = b"SIP/2.0 100 Trying\r\n\r\n";
const R180: &[u8] = b"SIP/2.0 180 Ringing\r\n\r\n";
const R200: &[u8] = b"SIP/2.0 200 OK\r\n\r\n";
const R486: &[u8] = b"SIP/2.0 486 Busy Here\r\n\r\n";

fn udp(t0: std::time::Instant) -> ServerInvite {
    ServerInvite::new(t0, &TimerConfig::default(), false)
}

fn tcp(t0: std::time::Instant) -> ServerInvite {
    ServerInvite::new(t0, &TimerConfig::default(), true)
}

fn b(x: &'static [u8]) -> Bytes {
    Bytes::from_static(x)
}

#[test]
fn proceeding_resends_the_last_provisional_on_invite_retransmission() {
    let t0 = origin();
    let mut v = udp(t0);
    assert_eq!(v.state(), S::Proceeding);
    assert_eq!(v.poll_timeout(), None);
    // Nothing sent yet: a retransmission has nothing to repeat.
    v.on_request_retransmit(t0);
    assert_eq!(v.poll_transmit(), None);
    v.send_response(t0, 100, b(R100)).unwrap();
    assert_eq!(v.poll_transmit().as_deref(), Some(R100));
    v.on_request_retransmit(t0 + ms(500));
    assert_eq!(v.poll_transmit().as_deref(), Some(R100));
    v.send_response(t0 + s(1), 180, b(R180)).unwrap();
    v.on_request_retransmit(t0 + ms(1500));
    let log = drain(&mut v, t0, t0 + ms(1500));
    assert_eq!(
        log.tx_bytes(),
        vec![b(R180)],
        "coalesced: 180 is still waiting"
    );
    v.on_request_retransmit(t0 + ms(1600));
    assert_eq!(v.poll_transmit().as_deref(), Some(R180));
    assert_eq!(v.state(), S::Proceeding);
    assert_eq!(v.poll_timeout(), None, "Proceeding has no timer");
}

#[test]
fn final_failure_retransmits_with_timer_g_until_timer_h() {
    let t0 = origin();
    let mut v = udp(t0);
    v.send_response(t0, 486, b(R486)).unwrap();
    assert_eq!(v.state(), S::Completed);
    let log = run_until(&mut v, t0, t0, t0 + s(100));
    assert_eq!(
        log.tx_times(),
        secs(&[0.0, 0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5, 31.5]),
        "Timer G: T1 doubling up to T2"
    );
    assert!(log.tx.iter().all(|(_, x)| x.as_ref() == R486));
    assert_eq!(
        log.events,
        vec![(s(32), Event::Timeout), (s(32), Event::Terminated)],
        "Timer H without ACK"
    );
    assert!(v.is_terminated());
}

#[test]
fn completed_resends_final_on_retransmission_and_ack_confirms() {
    let t0 = origin();
    let mut v = udp(t0);
    v.send_response(t0, 180, b(R180)).unwrap();
    v.send_response(t0 + s(1), 486, b(R486)).unwrap();
    let mut log = drain(&mut v, t0, t0 + s(1));
    assert_eq!(log.tx_bytes(), vec![b(R180), b(R486)]);
    // INVITE retransmission at 1.2 s: the final again, not the 180.
    v.on_request_retransmit(t0 + ms(1200));
    log.extend(drain(&mut v, t0, t0 + ms(1200)));
    log.extend(run_until(&mut v, t0, t0 + ms(1200), t0 + ms(2600)));
    assert_eq!(log.tx_times_of(R486), secs(&[1.0, 1.2, 1.5, 2.5]));
    // ACK: Confirmed, G and H stop, I = T4 starts.
    assert!(!v.on_ack(t0 + s(3)), "absorbed");
    assert_eq!(v.state(), S::Confirmed);
    assert_eq!(v.poll_timeout(), Some(t0 + s(8)));
    // ACK and INVITE retransmissions in Confirmed are absorbed.
    assert!(!v.on_ack(t0 + s(4)));
    v.on_request_retransmit(t0 + s(4));
    let log = run_until(&mut v, t0, t0 + s(4), t0 + s(100));
    assert!(log.tx.is_empty());
    assert_eq!(
        log.events,
        vec![(s(8), Event::Terminated)],
        "Timer I, no Timeout"
    );
}

#[test]
fn reliable_transport_no_timer_g_zero_timer_i() {
    let t0 = origin();
    // Timer H still 64*T1, no retransmissions.
    let mut v = tcp(t0);
    v.send_response(t0, 603, b(R486)).unwrap();
    assert_eq!(v.poll_timeout(), Some(t0 + s(32)));
    let log = run_until(&mut v, t0, t0, t0 + s(100));
    assert_eq!(log.tx_times(), vec![ms(0)]);
    assert_eq!(
        log.events,
        vec![(s(32), Event::Timeout), (s(32), Event::Terminated)]
    );

    // ACK: Confirmed with Timer I = 0.
    let mut v = tcp(t0);
    v.send_response(t0, 486, b(R486)).unwrap();
    let at = t0 + ms(40);
    assert!(!v.on_ack(at));
    assert_eq!(v.state(), S::Confirmed);
    assert_eq!(v.poll_timeout(), Some(at));
    v.handle_timeout(at);
    assert!(v.is_terminated());
}

#[test]
fn accepted_absorbs_invite_retransmissions_and_passes_acks() {
    let t0 = origin();
    let mut v = udp(t0);
    v.send_response(t0, 180, b(R180)).unwrap();
    v.send_response(t0 + s(2), 200, b(R200)).unwrap();
    assert_eq!(v.state(), S::Accepted);
    assert_eq!(v.poll_timeout(), Some(t0 + s(34)), "Timer L = 64*T1");
    let mut log = drain(&mut v, t0, t0 + s(2));
    assert_eq!(log.tx_bytes(), vec![b(R180), b(R200)]);
    // The machine does not retransmit the 2xx itself.
    log.extend(run_until(&mut v, t0, t0 + s(2), t0 + s(10)));
    assert_eq!(log.tx.len(), 2);
    // INVITE retransmissions are absorbed (neither 180 nor 200 again).
    v.on_request_retransmit(t0 + s(10));
    assert_eq!(v.poll_transmit(), None);
    // The TU core's 2xx retransmission passes through.
    v.send_response(t0 + s(11), 200, b(R200)).unwrap();
    assert_eq!(v.poll_transmit().as_deref(), Some(R200));
    // ACKs go to the TU, every one of them.
    assert!(v.on_ack(t0 + s(12)));
    assert!(v.on_ack(t0 + s(13)));
    assert_eq!(v.state(), S::Accepted);
    // No other response is allowed now.
    assert_eq!(
        v.send_response(t0 + s(14), 486, b(R486)),
        Err(Error::WrongState {
            action: "send_response",
            state: "Accepted"
        })
    );
    assert!(v.send_response(t0 + s(14), 180, b(R180)).is_err());
    let log = run_until(&mut v, t0, t0 + s(14), t0 + s(100));
    assert_eq!(
        log.events,
        vec![(s(34), Event::Terminated)],
        "Timer L, no Timeout"
    );
}

#[test]
fn reliable_accepted_keeps_timer_l() {
    let t0 = origin();
    let mut v = tcp(t0);
    v.send_response(t0, 200, b(R200)).unwrap();
    assert_eq!(v.poll_timeout(), Some(t0 + s(32)));
}

#[test]
fn transport_errors() {
    let t0 = origin();
    // Proceeding and Completed: inform TU, Terminated.
    for final_status in [None, Some(500u16)] {
        let mut v = udp(t0);
        v.send_response(t0, 100, b(R100)).unwrap();
        if let Some(st) = final_status {
            v.send_response(t0, st, b(R486)).unwrap();
        }
        v.on_transport_error();
        let log = drain(&mut v, t0, t0);
        assert_eq!(
            log.event_list(),
            vec![Event::TransportError, Event::Terminated]
        );
        assert_eq!(v.poll_timeout(), None);
    }
    // Confirmed: same.
    let mut v = udp(t0);
    v.send_response(t0, 500, b(R486)).unwrap();
    v.on_ack(t0);
    v.on_transport_error();
    assert!(v.is_terminated());
    // Accepted: inform TU, stay.
    let mut v = udp(t0);
    v.send_response(t0, 200, b(R200)).unwrap();
    v.on_transport_error();
    v.on_transport_error();
    let log = drain(&mut v, t0, t0);
    assert_eq!(
        log.event_list(),
        vec![Event::TransportError],
        "deduplicated"
    );
    assert_eq!(v.state(), S::Accepted);
}

#[test]
fn misuse_returns_errors() {
    let t0 = origin();
    let mut v = udp(t0);
    assert_eq!(
        v.send_response(t0, 99, b(R100)),
        Err(Error::InvalidStatus(99))
    );
    assert_eq!(
        v.send_response(t0, 700, b(R100)),
        Err(Error::InvalidStatus(700))
    );
    assert!(!v.on_ack(t0), "ACK before any final is stray");
    assert_eq!(v.state(), S::Proceeding);
    v.send_response(t0, 486, b(R486)).unwrap();
    assert_eq!(
        v.send_response(t0, 200, b(R200)),
        Err(Error::WrongState {
            action: "send_response",
            state: "Completed"
        })
    );
    v.on_ack(t0);
    assert!(v.send_response(t0, 200, b(R200)).is_err());
    run_until(&mut v, t0, t0, t0 + s(10));
    assert!(v.is_terminated());
    assert_eq!(
        v.send_response(t0 + s(10), 200, b(R200)),
        Err(Error::Terminated)
    );
    assert!(!v.on_ack(t0 + s(10)));
}

#[test]
fn full_transmit_queue_refuses_without_changing_state() {
    let t0 = origin();
    let mut v = udp(t0);
    for i in 0..OUTBOX_CAPACITY {
        let msg = Bytes::from(format!("SIP/2.0 183 Progress {i}\r\n\r\n"));
        v.send_response(t0, 183, msg).unwrap();
    }
    assert_eq!(
        v.send_response(t0, 200, b(R200)),
        Err(Error::TransmitQueueFull(OUTBOX_CAPACITY))
    );
    assert_eq!(v.state(), S::Proceeding, "refused send changes nothing");
    let mut n = 0;
    while v.poll_transmit().is_some() {
        n += 1;
    }
    assert_eq!(n, OUTBOX_CAPACITY);
    v.send_response(t0, 200, b(R200)).unwrap();
    assert_eq!(v.state(), S::Accepted);
}
