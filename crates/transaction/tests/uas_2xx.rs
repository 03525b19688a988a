//! RFC 3261 13.3.1.4: the UAS core's 2xx retransmission.

mod common;

use bytes::Bytes;
use common::{drain, ms, origin, run_until, s, secs};
use palisade_transaction::{
    Event, ServerInvite, ServerInviteState, TimerConfig, Uas2xxRetransmitter, Uas2xxState,
};

const R200: &[u8] = b"SIP/2.0 200 OK\r\n\r\n";

#[test]
fn retransmits_at_t1_doubling_to_t2_and_gives_up_at_64_t1() {
    let t0 = origin();
    let mut r = Uas2xxRetransmitter::new(t0, &TimerConfig::default(), Bytes::from_static(R200));
    assert_eq!(r.state(), Uas2xxState::Retransmitting);
    assert_eq!(
        r.poll_transmit(),
        None,
        "the first 2xx is sent by the TU, not here"
    );
    let log = run_until(&mut r, t0, t0, t0 + s(100));
    assert_eq!(
        log.tx_times(),
        secs(&[0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5, 31.5])
    );
    assert!(log.tx.iter().all(|(_, b)| b.as_ref() == R200));
    assert_eq!(
        log.events,
        vec![(s(32), Event::Timeout), (s(32), Event::Terminated)],
        "the TU should send BYE"
    );
    assert_eq!(r.state(), Uas2xxState::GaveUp);
    assert!(r.is_terminated());
    assert!(!r.on_ack(t0 + s(40)));
}

#[test]
fn ack_stops_retransmission() {
    let t0 = origin();
    let mut r = Uas2xxRetransmitter::new(t0, &TimerConfig::default(), Bytes::from_static(R200));
    let mut log = run_until(&mut r, t0, t0, t0 + s(2));
    assert!(r.on_ack(t0 + s(2)));
    assert!(!r.on_ack(t0 + ms(2100)), "ACK retransmission");
    assert_eq!(r.state(), Uas2xxState::Acked);
    assert_eq!(r.poll_timeout(), None);
    log.extend(drain(&mut r, t0, t0 + s(2)));
    log.extend(run_until(&mut r, t0, t0 + s(2), t0 + s(100)));
    assert_eq!(log.tx_times(), secs(&[0.5, 1.5]));
    assert_eq!(log.events, vec![(s(2), Event::Terminated)]);
}

#[test]
fn retransmits_on_reliable_transports_too_and_works_with_server_invite() {
    let t0 = origin();
    let cfg = TimerConfig::default();
    // A TCP server transaction: 2xx from the TU moves it to Accepted.
    let mut st = ServerInvite::new(t0, &cfg, true);
    st.send_response(t0, 200, Bytes::from_static(R200)).unwrap();
    assert_eq!(st.poll_transmit().as_deref(), Some(R200));
    let mut r = Uas2xxRetransmitter::new(t0, &cfg, Bytes::from_static(R200));
    // Route the retransmissions through the transaction (Accepted allows it).
    let mut now = t0;
    let mut sent = Vec::new();
    while let Some(d) = r.poll_timeout() {
        if d > t0 + s(3) {
            break;
        }
        now = d;
        r.handle_timeout(now);
        while let Some(b) = r.poll_transmit() {
            st.send_response(now, 200, b).unwrap();
        }
        while let Some(b) = st.poll_transmit() {
            sent.push((now - t0, b));
        }
    }
    assert_eq!(
        sent.iter().map(|(t, _)| *t).collect::<Vec<_>>(),
        secs(&[0.5, 1.5])
    );
    // The ACK reaches the server transaction in Accepted: it goes to the TU,
    // which stops the retransmitter.
    now += ms(100);
    assert!(st.on_ack(now));
    assert!(r.on_ack(now));
    assert_eq!(st.state(), ServerInviteState::Accepted);
    assert_eq!(r.poll_timeout(), None);
}
