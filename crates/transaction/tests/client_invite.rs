//! INVITE client transaction: every transition of RFC 3261 Figure 5 / RFC
//! 6026 Figure 5, retransmission schedules, reliable variants, misuse.

mod common;

use bytes::Bytes;
use common::{drain, ms, origin, run_until, s, secs};
use palisade_transaction::{
    ClientInvite, ClientInviteState as S, Error, Event, ResponseDisposition as D, TimerConfig,
};

const INVITE: &[u8] = b"INVITE sip:bob@127.0.0.20 SIP/2.0\r\n\r\n";
const ACK: &[u8] = b"ACK sip:bob@127.0.0.20 SIP/2.0\r\n\r\n";

fn udp(t0: std::time::Instant) -> ClientInvite {
    ClientInvite::new(
        t0,
        &TimerConfig::default(),
        false,
        Bytes::from_static(INVITE),
    )
}

fn tcp(t0: std::time::Instant) -> ClientInvite {
    ClientInvite::new(
        t0,
        &TimerConfig::default(),
        true,
        Bytes::from_static(INVITE),
    )
}

#[test]
fn udp_timer_a_doubles_and_timer_b_times_out_at_64_t1() {
    let t0 = origin();
    let mut c = udp(t0);
    assert_eq!(c.state(), S::Calling);
    assert_eq!(c.poll_timeout(), Some(t0 + ms(500)));
    let log = run_until(&mut c, t0, t0, t0 + s(100));
    assert_eq!(
        log.tx_times(),
        secs(&[0.0, 0.5, 1.5, 3.5, 7.5, 15.5, 31.5]),
        "INVITE at 0, then Timer A at T1, 2T1, 4T1, ... uncapped"
    );
    assert!(log.tx.iter().all(|(_, b)| b.as_ref() == INVITE));
    assert_eq!(
        log.events,
        vec![(s(32), Event::Timeout), (s(32), Event::Terminated)],
        "Timer B = 64*T1 informs the TU"
    );
    assert_eq!(c.state(), S::Terminated);
    assert!(c.is_terminated());
    assert_eq!(c.poll_timeout(), None);
}

#[test]
fn scaled_t1_scales_the_whole_schedule() {
    let t0 = origin();
    let cfg = TimerConfig {
        t1: ms(100),
        ..TimerConfig::default()
    };
    let mut c = ClientInvite::new(t0, &cfg, false, Bytes::from_static(INVITE));
    let log = run_until(&mut c, t0, t0, t0 + s(100));
    assert_eq!(
        log.tx_times(),
        vec![
            ms(0),
            ms(100),
            ms(300),
            ms(700),
            ms(1500),
            ms(3100),
            ms(6300)
        ]
    );
    assert_eq!(log.events[0], (ms(6400), Event::Timeout));
}

#[test]
fn reliable_transport_sends_once_and_still_times_out() {
    let t0 = origin();
    let mut c = tcp(t0);
    assert_eq!(c.poll_timeout(), Some(t0 + s(32)), "only Timer B");
    let log = run_until(&mut c, t0, t0, t0 + s(100));
    assert_eq!(log.tx_times(), vec![ms(0)]);
    assert_eq!(log.event_list(), vec![Event::Timeout, Event::Terminated]);
    assert_eq!(log.events[0].0, s(32));
}

#[test]
fn calling_1xx_goes_to_proceeding_and_stops_all_timers() {
    let t0 = origin();
    let mut c = udp(t0);
    let mut log = run_until(&mut c, t0, t0, t0 + ms(700));
    assert!(!c.has_provisional());
    assert_eq!(c.on_response(t0 + ms(700), 100), D::PassToTu);
    assert_eq!(c.state(), S::Proceeding);
    assert!(c.has_provisional());
    assert_eq!(
        c.poll_timeout(),
        None,
        "no retransmission and no Timer B in Proceeding"
    );
    // Provisionals keep going to the TU.
    assert_eq!(c.on_response(t0 + s(1), 180), D::PassToTu);
    assert_eq!(c.on_response(t0 + s(2), 183), D::PassToTu);
    assert_eq!(c.on_response(t0 + s(2), 180), D::PassToTu);
    log.extend(run_until(&mut c, t0, t0 + s(2), t0 + s(300)));
    assert_eq!(log.tx_times(), secs(&[0.0, 0.5]));
    assert!(log.events.is_empty());
    assert_eq!(c.state(), S::Proceeding);
}

#[test]
fn calling_2xx_goes_to_accepted_and_timer_m_ends_it() {
    let t0 = origin();
    let mut c = udp(t0);
    assert_eq!(
        drain(&mut c, t0, t0).tx_bytes(),
        vec![Bytes::from_static(INVITE)]
    );
    assert_eq!(c.on_response(t0 + ms(300), 200), D::PassToTu);
    assert_eq!(c.state(), S::Accepted);
    assert_eq!(
        c.poll_timeout(),
        Some(t0 + ms(300) + s(32)),
        "Timer M = 64*T1"
    );
    // RFC 6026: 2xx retransmissions (and other forks' 2xx) reach the TU,
    // which ACKs each one itself.
    assert_eq!(c.on_response(t0 + s(1), 200), D::PassToTu);
    assert_eq!(c.on_response(t0 + s(5), 202), D::PassToTu);
    // Nothing else does.
    assert_eq!(c.on_response(t0 + s(6), 180), D::Absorb);
    assert_eq!(c.on_response(t0 + s(6), 486), D::Absorb);
    assert_eq!(c.state(), S::Accepted);
    let log = run_until(&mut c, t0, t0 + s(6), t0 + s(100));
    assert!(log.tx.is_empty(), "the transaction never ACKs a 2xx");
    assert_eq!(log.events, vec![(ms(32_300), Event::Terminated)]);
}

#[test]
fn proceeding_2xx_goes_to_accepted() {
    let t0 = origin();
    let mut c = tcp(t0);
    assert_eq!(c.on_response(t0 + s(1), 180), D::PassToTu);
    assert_eq!(c.on_response(t0 + s(10), 200), D::PassToTu);
    assert_eq!(c.state(), S::Accepted);
    assert_eq!(
        c.poll_timeout(),
        Some(t0 + s(42)),
        "Timer M is 64*T1 on TCP too"
    );
    let log = run_until(&mut c, t0, t0 + s(10), t0 + s(100));
    assert_eq!(log.events, vec![(s(42), Event::Terminated)]);
}

#[test]
fn calling_final_failure_needs_ack_resent_on_each_retransmission_until_timer_d() {
    let t0 = origin();
    let mut c = udp(t0);
    let mut log = drain(&mut c, t0, t0);
    assert_eq!(c.on_response(t0 + ms(200), 486), D::PassToTuAndAck);
    assert!(D::PassToTuAndAck.needs_ack() && D::PassToTuAndAck.pass_to_tu());
    assert_eq!(c.state(), S::Completed);
    assert_eq!(c.send_ack(Bytes::from_static(ACK)), Ok(()));
    log.extend(drain(&mut c, t0, t0 + ms(200)));
    assert_eq!(
        c.poll_timeout(),
        Some(t0 + ms(200) + s(32)),
        "Timer D = 32 s"
    );
    // Each retransmission of the 486 is absorbed and answered with the ACK.
    for at in [ms(700), ms(1700), ms(3700)] {
        assert_eq!(c.on_response(t0 + at, 486), D::Absorb);
        log.extend(drain(&mut c, t0, t0 + at));
    }
    // Responses of other classes are stray now.
    assert_eq!(c.on_response(t0 + s(4), 180), D::Absorb);
    assert_eq!(c.on_response(t0 + s(4), 200), D::Absorb);
    assert_eq!(
        c.send_ack(Bytes::from_static(ACK)),
        Err(Error::AckAlreadySent)
    );
    log.extend(run_until(&mut c, t0, t0 + s(4), t0 + s(100)));
    assert_eq!(log.tx_times_of(INVITE), vec![ms(0)], "Timer A stopped");
    assert_eq!(
        log.tx_times_of(ACK),
        vec![ms(200), ms(700), ms(1700), ms(3700)]
    );
    assert_eq!(
        log.events,
        vec![(ms(32_200), Event::Terminated)],
        "Timer D, no Timeout"
    );
}

#[test]
fn proceeding_final_failure_goes_to_completed() {
    let t0 = origin();
    let mut c = udp(t0);
    assert_eq!(c.on_response(t0 + ms(100), 180), D::PassToTu);
    assert_eq!(c.on_response(t0 + s(20), 603), D::PassToTuAndAck);
    assert_eq!(c.state(), S::Completed);
    assert_eq!(c.poll_timeout(), Some(t0 + s(52)));
}

#[test]
fn reliable_final_failure_has_zero_timer_d_but_the_ack_still_goes_out() {
    let t0 = origin();
    let mut c = tcp(t0);
    let _ = drain(&mut c, t0, t0);
    let at = t0 + s(1);
    assert_eq!(c.on_response(at, 404), D::PassToTuAndAck);
    assert_eq!(c.poll_timeout(), Some(at), "Timer D = 0");
    c.send_ack(Bytes::from_static(ACK)).unwrap();
    c.handle_timeout(at);
    assert_eq!(c.state(), S::Terminated);
    assert_eq!(
        c.poll_transmit().as_deref(),
        Some(ACK),
        "queued ACK survives termination"
    );
    assert_eq!(c.poll_transmit(), None);
    assert_eq!(c.poll_event(), Some(Event::Terminated));
    assert_eq!(c.poll_event(), None);
    assert_eq!(c.send_ack(Bytes::from_static(ACK)), Err(Error::Terminated));
}

#[test]
fn transport_errors() {
    let t0 = origin();
    // Calling: inform TU, Terminated.
    let mut c = udp(t0);
    c.on_transport_error();
    let log = drain(&mut c, t0, t0);
    assert_eq!(
        log.event_list(),
        vec![Event::TransportError, Event::Terminated]
    );
    assert_eq!(c.state(), S::Terminated);
    assert_eq!(c.poll_timeout(), None);
    c.on_transport_error();
    assert_eq!(c.poll_event(), None, "nothing after Terminated");

    // Proceeding: same.
    let mut c = udp(t0);
    c.on_response(t0, 180);
    c.on_transport_error();
    assert_eq!(c.state(), S::Terminated);

    // Completed (the ACK could not be sent): inform TU, Terminated.
    let mut c = udp(t0);
    c.on_response(t0, 500);
    c.send_ack(Bytes::from_static(ACK)).unwrap();
    c.on_transport_error();
    let log = drain(&mut c, t0, t0);
    assert_eq!(
        log.event_list(),
        vec![Event::TransportError, Event::Terminated]
    );

    // Accepted: the TU learns of it, Timer M still ends the transaction.
    let mut c = udp(t0);
    c.on_response(t0, 200);
    c.on_transport_error();
    assert_eq!(c.state(), S::Accepted);
    let log = run_until(&mut c, t0, t0, t0 + s(40));
    assert_eq!(
        log.events,
        vec![(s(0), Event::TransportError), (s(32), Event::Terminated)]
    );
}

#[test]
fn misuse_and_stray_input_never_panic() {
    let t0 = origin();
    let mut c = udp(t0);
    assert_eq!(
        c.send_ack(Bytes::from_static(ACK)),
        Err(Error::WrongState {
            action: "send_ack",
            state: "Calling"
        })
    );
    for bad in [0, 99, 700, u16::MAX] {
        assert_eq!(c.on_response(t0, bad), D::Absorb);
    }
    assert_eq!(c.state(), S::Calling);
    c.on_response(t0, 200);
    assert!(matches!(
        c.send_ack(Bytes::from_static(ACK)),
        Err(Error::WrongState { .. })
    ));
    run_until(&mut c, t0, t0, t0 + s(40));
    assert!(c.is_terminated());
    for st in [100, 200, 486] {
        assert_eq!(c.on_response(t0 + s(41), st), D::Absorb);
    }
    c.handle_timeout(t0 + s(1000));
    c.on_cancel_sent(t0 + s(1000));
    assert_eq!(c.poll_timeout(), None);
}

#[test]
fn cancel_guard_bounds_proceeding() {
    let t0 = origin();
    let mut c = udp(t0);
    // In Calling, Timer B already bounds the transaction.
    c.on_cancel_sent(t0);
    assert_eq!(c.poll_timeout(), Some(t0 + ms(500)));
    c.on_response(t0 + s(1), 180);
    assert_eq!(c.poll_timeout(), None);
    c.on_cancel_sent(t0 + s(10));
    assert_eq!(c.poll_timeout(), Some(t0 + s(42)), "64*T1 after the CANCEL");
    c.on_cancel_sent(t0 + s(20));
    assert_eq!(c.poll_timeout(), Some(t0 + s(42)), "first deadline kept");
    assert_eq!(c.on_response(t0 + s(30), 183), D::PassToTu);
    assert_eq!(
        c.poll_timeout(),
        Some(t0 + s(42)),
        "a provisional does not disarm it"
    );
    let log = run_until(&mut c, t0, t0 + s(30), t0 + s(100));
    assert_eq!(
        log.events,
        vec![(s(42), Event::Timeout), (s(42), Event::Terminated)]
    );
}

#[test]
fn late_engine_gets_one_retransmission_per_call() {
    let t0 = origin();
    let mut c = udp(t0);
    let _ = c.poll_transmit();
    // The engine wakes up at 5 s instead of 0.5 s.
    c.handle_timeout(t0 + s(5));
    assert!(c.poll_transmit().is_some());
    assert_eq!(
        c.poll_transmit(),
        None,
        "no burst of missed retransmissions"
    );
    assert!(c.poll_timeout().unwrap() > t0 + s(5));
}
