//! Non-INVITE client transaction: every transition of RFC 3261 Figure 6,
//! Timer E/F/K schedules, reliable variants.

mod common;

use bytes::Bytes;
use common::{drain, ms, origin, run_until, s, secs};
use palisade_transaction::{
    ClientNonInvite, ClientNonInviteState as S, Event, ResponseDisposition as D, TimerConfig,
};

const OPTIONS: &[u8] = b"OPTIONS sip:127.0.0.20 SIP/2.0\r\n\r\n";

fn udp(t0: std::time::Instant) -> ClientNonInvite {
    ClientNonInvite::new(
        t0,
        &TimerConfig::default(),
        false,
        Bytes::from_static(OPTIONS),
    )
}

fn tcp(t0: std::time::Instant) -> ClientNonInvite {
    ClientNonInvite::new(
        t0,
        &TimerConfig::default(),
        true,
        Bytes::from_static(OPTIONS),
    )
}

#[test]
fn udp_timer_e_doubles_up_to_t2_and_timer_f_times_out() {
    let t0 = origin();
    let mut c = udp(t0);
    assert_eq!(c.state(), S::Trying);
    let log = run_until(&mut c, t0, t0, t0 + s(100));
    assert_eq!(
        log.tx_times(),
        secs(&[0.0, 0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5, 31.5])
    );
    assert!(log.tx.iter().all(|(_, b)| b.as_ref() == OPTIONS));
    assert_eq!(
        log.events,
        vec![(s(32), Event::Timeout), (s(32), Event::Terminated)]
    );
    assert!(c.is_terminated());
}

#[test]
fn proceeding_retransmits_every_t2() {
    let t0 = origin();
    let mut c = udp(t0);
    let mut log = run_until(&mut c, t0, t0, t0 + ms(600));
    assert_eq!(c.on_response(t0 + ms(600), 100), D::PassToTu);
    assert_eq!(c.state(), S::Proceeding);
    assert_eq!(
        c.on_response(t0 + ms(700), 100),
        D::PassToTu,
        "1xx in Proceeding"
    );
    log.extend(run_until(&mut c, t0, t0 + ms(700), t0 + s(100)));
    // The pending Timer E (1.5 s) fires, then E is reset to T2 each time.
    assert_eq!(
        log.tx_times(),
        secs(&[0.0, 0.5, 1.5, 5.5, 9.5, 13.5, 17.5, 21.5, 25.5, 29.5])
    );
    assert_eq!(log.event_list(), vec![Event::Timeout, Event::Terminated]);
    assert_eq!(log.events[0].0, s(32), "Timer F runs in Proceeding too");
}

#[test]
fn trying_final_goes_to_completed_and_timer_k_ends_it() {
    let t0 = origin();
    let mut c = udp(t0);
    let mut log = drain(&mut c, t0, t0);
    assert_eq!(c.on_response(t0 + ms(200), 200), D::PassToTu);
    assert_eq!(c.state(), S::Completed);
    assert_eq!(c.poll_timeout(), Some(t0 + ms(5200)), "Timer K = T4");
    // Retransmissions and late responses are absorbed.
    assert_eq!(c.on_response(t0 + s(1), 200), D::Absorb);
    assert_eq!(c.on_response(t0 + s(1), 100), D::Absorb);
    assert_eq!(c.on_response(t0 + s(1), 404), D::Absorb);
    log.extend(run_until(&mut c, t0, t0 + s(1), t0 + s(100)));
    assert_eq!(
        log.tx_times(),
        vec![ms(0)],
        "no retransmission after the final"
    );
    assert_eq!(log.events, vec![(ms(5200), Event::Terminated)]);
}

#[test]
fn proceeding_final_goes_to_completed() {
    let t0 = origin();
    let mut c = udp(t0);
    c.on_response(t0 + ms(100), 180);
    assert_eq!(c.on_response(t0 + s(3), 503), D::PassToTu);
    assert_eq!(c.state(), S::Completed);
    assert_eq!(c.poll_timeout(), Some(t0 + s(8)));
}

#[test]
fn reliable_transport_no_timer_e_and_zero_timer_k() {
    let t0 = origin();
    let mut c = tcp(t0);
    assert_eq!(c.poll_timeout(), Some(t0 + s(32)), "only Timer F");
    let log = run_until(&mut c, t0, t0, t0 + s(100));
    assert_eq!(log.tx_times(), vec![ms(0)]);
    assert_eq!(
        log.events,
        vec![(s(32), Event::Timeout), (s(32), Event::Terminated)]
    );

    let mut c = tcp(t0);
    let at = t0 + s(2);
    assert_eq!(c.on_response(at, 481), D::PassToTu);
    assert_eq!(c.poll_timeout(), Some(at), "Timer K = 0");
    c.handle_timeout(at);
    assert!(c.is_terminated());
}

#[test]
fn transport_errors_terminate_in_every_state() {
    let t0 = origin();
    for setup in [None, Some(100u16), Some(200)] {
        let mut c = udp(t0);
        if let Some(st) = setup {
            c.on_response(t0, st);
        }
        c.on_transport_error();
        let log = drain(&mut c, t0, t0);
        assert_eq!(
            log.event_list(),
            vec![Event::TransportError, Event::Terminated]
        );
        assert_eq!(c.state(), S::Terminated);
        c.on_transport_error();
        assert_eq!(c.poll_event(), None);
        assert_eq!(c.on_response(t0, 200), D::Absorb);
    }
}

#[test]
fn invalid_statuses_are_absorbed() {
    let t0 = origin();
    let mut c = udp(t0);
    for bad in [0, 1, 99, 700, 999] {
        assert_eq!(c.on_response(t0, bad), D::Absorb);
    }
    assert_eq!(c.state(), S::Trying);
}
