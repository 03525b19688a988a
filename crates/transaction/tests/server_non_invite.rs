//! Non-INVITE server transaction: every transition of RFC 3261 Figure 8,
//! Timer J, reliable variant, misuse.

mod common;

use bytes::Bytes;
use common::{drain, ms, origin, run_until, s};
use palisade_transaction::{Error, Event, ServerNonInvite, ServerNonInviteState as S, TimerConfig};

const R100: &[u8] = b"SIP/2.0 100 Trying\r\n\r\n";
const R200: &[u8] = b"SIP/2.0 200 OK\r\n\r\n";
const R404: &[u8] = b"SIP/2.0 404 Not Found\r\n\r\n";

fn udp(t0: std::time::Instant) -> ServerNonInvite {
    ServerNonInvite::new(t0, &TimerConfig::default(), false)
}

fn b(x: &'static [u8]) -> Bytes {
    Bytes::from_static(x)
}

#[test]
fn trying_absorbs_then_final_completes_and_timer_j_ends() {
    let t0 = origin();
    let mut v = udp(t0);
    assert_eq!(v.state(), S::Trying);
    assert_eq!(v.poll_timeout(), None);
    v.on_request_retransmit(t0 + ms(500));
    assert_eq!(v.poll_transmit(), None, "absorbed in Trying");
    v.send_response(t0 + s(1), 200, b(R200)).unwrap();
    assert_eq!(v.state(), S::Completed);
    assert_eq!(v.poll_timeout(), Some(t0 + s(33)), "Timer J = 64*T1");
    let mut log = drain(&mut v, t0, t0 + s(1));
    for at in [s(2), s(5)] {
        v.on_request_retransmit(t0 + at);
        log.extend(drain(&mut v, t0, t0 + at));
    }
    assert_eq!(
        v.send_response(t0 + s(6), 404, b(R404)),
        Err(Error::WrongState {
            action: "send_response",
            state: "Completed"
        }),
        "a second final is discarded"
    );
    log.extend(run_until(&mut v, t0, t0 + s(6), t0 + s(100)));
    assert_eq!(log.tx_times(), vec![s(1), s(2), s(5)]);
    assert!(log.tx.iter().all(|(_, x)| x.as_ref() == R200));
    assert_eq!(log.events, vec![(s(33), Event::Terminated)]);
    assert_eq!(
        v.send_response(t0 + s(100), 200, b(R200)),
        Err(Error::Terminated)
    );
    v.on_request_retransmit(t0 + s(100));
    assert_eq!(v.poll_transmit(), None);
}

#[test]
fn proceeding_resends_the_provisional_then_final() {
    let t0 = origin();
    let mut v = udp(t0);
    v.send_response(t0, 100, b(R100)).unwrap();
    assert_eq!(v.state(), S::Proceeding);
    assert_eq!(v.poll_transmit().as_deref(), Some(R100));
    v.on_request_retransmit(t0 + s(1));
    assert_eq!(v.poll_transmit().as_deref(), Some(R100));
    v.send_response(t0 + s(2), 100, b(R100)).unwrap();
    assert_eq!(v.state(), S::Proceeding, "1xx in Proceeding");
    v.send_response(t0 + s(3), 404, b(R404)).unwrap();
    let log = drain(&mut v, t0, t0 + s(3));
    assert_eq!(log.tx_bytes(), vec![b(R100), b(R404)]);
    assert_eq!(v.state(), S::Completed);
    v.on_request_retransmit(t0 + s(4));
    assert_eq!(v.poll_transmit().as_deref(), Some(R404));
}

#[test]
fn reliable_transport_zero_timer_j() {
    let t0 = origin();
    let mut v = ServerNonInvite::new(t0, &TimerConfig::default(), true);
    let at = t0 + ms(10);
    v.send_response(at, 200, b(R200)).unwrap();
    assert_eq!(v.poll_timeout(), Some(at));
    v.handle_timeout(at);
    assert!(v.is_terminated());
    assert_eq!(
        v.poll_transmit().as_deref(),
        Some(R200),
        "final survives termination"
    );
    assert_eq!(v.poll_event(), Some(Event::Terminated));
}

#[test]
fn transport_errors_terminate() {
    let t0 = origin();
    for setup in [None, Some(100u16), Some(200)] {
        let mut v = udp(t0);
        if let Some(st) = setup {
            v.send_response(t0, st, b(R200)).unwrap();
        }
        v.on_transport_error();
        let log = drain(&mut v, t0, t0);
        assert_eq!(
            log.event_list(),
            vec![Event::TransportError, Event::Terminated]
        );
        assert!(v.is_terminated());
        assert_eq!(v.poll_timeout(), None);
    }
}

#[test]
fn invalid_status_is_refused() {
    let t0 = origin();
    let mut v = udp(t0);
    assert_eq!(
        v.send_response(t0, 42, b(R200)),
        Err(Error::InvalidStatus(42))
    );
    assert_eq!(v.state(), S::Trying);
    assert_eq!(v.poll_transmit(), None);
}
