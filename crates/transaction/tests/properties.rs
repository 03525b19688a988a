//! Property tests: random inputs and time steps against every machine, and
//! the timer queue against a model.

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::origin;
use palisade_transaction::{
    ClientInvite, ClientInviteState, ClientNonInvite, Event, Machine, ServerInvite,
    ServerInviteState, ServerNonInvite, ServerNonInviteState, TimerConfig, TimerQueue,
    Uas2xxRetransmitter,
};
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Op {
    /// Let time pass, firing every deadline at its own instant.
    Advance(u64),
    /// A late engine: time jumps, then one `handle_timeout`.
    Late(u64),
    /// A response from the network (client machines).
    Response(u16),
    /// A response from the TU (server machines).
    TuResponse(u16),
    RequestRetransmit,
    Ack,
    SendAck,
    CancelSent,
    TransportError,
}

fn status() -> impl Strategy<Value = u16> {
    prop_oneof![
        3 => 100u16..=199,
        3 => 200u16..=299,
        3 => 300u16..=699,
        1 => any::<u16>(),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0u64..40_000).prop_map(Op::Advance),
        1 => (0u64..40_000).prop_map(Op::Late),
        3 => status().prop_map(Op::Response),
        3 => status().prop_map(Op::TuResponse),
        2 => Just(Op::RequestRetransmit),
        2 => Just(Op::Ack),
        1 => Just(Op::SendAck),
        1 => Just(Op::CancelSent),
        1 => Just(Op::TransportError),
    ]
}

fn config() -> impl Strategy<Value = TimerConfig> {
    (1u64..=1000, 1u64..=16, 0u64..=10_000).prop_map(|(t1, k, t4)| TimerConfig {
        t1: Duration::from_millis(t1),
        t2: Duration::from_millis(t1 * k),
        t4: Duration::from_millis(t4),
    })
}

/// The inputs each machine understands; other ops are ignored for it.
trait Drive: Machine {
    fn apply(&mut self, op: &Op, now: Instant);
}

impl Drive for ClientInvite {
    fn apply(&mut self, op: &Op, now: Instant) {
        match op {
            Op::Response(st) => {
                let needs_ack = self.on_response(now, *st).needs_ack();
                let acked = self.send_ack(Bytes::from_static(b"ACK"));
                assert_eq!(
                    acked.is_ok(),
                    needs_ack,
                    "send_ack accepted exactly when needed"
                );
            }
            Op::SendAck => {
                let _ = self.send_ack(Bytes::from_static(b"ACK2"));
            }
            Op::CancelSent => self.on_cancel_sent(now),
            Op::TransportError => self.on_transport_error(),
            _ => {}
        }
    }
}

impl Drive for ClientNonInvite {
    fn apply(&mut self, op: &Op, now: Instant) {
        match op {
            Op::Response(st) => {
                let _ = self.on_response(now, *st);
            }
            Op::TransportError => self.on_transport_error(),
            _ => {}
        }
    }
}

impl Drive for ServerInvite {
    fn apply(&mut self, op: &Op, now: Instant) {
        match op {
            Op::TuResponse(st) => {
                let _ = self.send_response(now, *st, Bytes::from(st.to_string()));
            }
            Op::RequestRetransmit => self.on_request_retransmit(now),
            Op::Ack => {
                let _ = self.on_ack(now);
            }
            Op::TransportError => self.on_transport_error(),
            _ => {}
        }
    }
}

impl Drive for ServerNonInvite {
    fn apply(&mut self, op: &Op, now: Instant) {
        match op {
            Op::TuResponse(st) => {
                let _ = self.send_response(now, *st, Bytes::from(st.to_string()));
            }
            Op::RequestRetransmit => self.on_request_retransmit(now),
            Op::TransportError => self.on_transport_error(),
            _ => {}
        }
    }
}

impl Drive for Uas2xxRetransmitter {
    fn apply(&mut self, op: &Op, now: Instant) {
        if let Op::Ack = op {
            let _ = self.on_ack(now);
        }
    }
}

/// What the harness saw of one machine.
struct Run<M> {
    m: M,
    now: Instant,
    /// Time of the last input (creation counts).
    last_input: Instant,
    terminated_events: usize,
    timeout_events: usize,
    terminated_at: Option<Instant>,
}

impl<M: Drive> Run<M> {
    fn new(m: M, now: Instant) -> Self {
        let mut r = Run {
            m,
            now,
            last_input: now,
            terminated_events: 0,
            timeout_events: 0,
            terminated_at: None,
        };
        r.drain();
        r
    }

    fn drain(&mut self) {
        while self.m.poll_transmit().is_some() {}
        while let Some(e) = self.m.poll_event() {
            match e {
                Event::Terminated => {
                    assert!(self.m.is_terminated());
                    self.terminated_events += 1;
                    self.terminated_at.get_or_insert(self.now);
                }
                Event::Timeout => {
                    assert_eq!(self.terminated_events, 0);
                    self.timeout_events += 1;
                }
                Event::TransportError => assert_eq!(self.terminated_events, 0),
            }
        }
        assert!(self.terminated_events <= 1, "Terminated reported once");
        assert!(self.timeout_events <= 1, "Timeout reported at most once");
        if self.m.is_terminated() {
            assert_eq!(self.m.poll_timeout(), None);
        }
    }

    fn fire(&mut self, at: Instant) {
        self.now = at;
        self.m.handle_timeout(at);
        if let Some(next) = self.m.poll_timeout() {
            assert!(
                next > at,
                "poll_timeout went backwards relative to a fired timer"
            );
        }
        self.drain();
    }

    /// Engine loop up to `target`, firing each deadline at its instant.
    fn advance_to(&mut self, target: Instant) {
        for _ in 0..1_000_000 {
            match self.m.poll_timeout() {
                Some(d) if d <= target => self.fire(d.max(self.now)),
                _ => break,
            }
        }
        self.now = self.now.max(target);
    }

    fn input(&mut self, op: &Op) {
        let before = self.m.poll_timeout();
        self.m.apply(op, self.now);
        if let Some(after) = self.m.poll_timeout() {
            assert!(
                Some(after) == before || after >= self.now,
                "an input scheduled a timer in the past"
            );
        }
        self.last_input = self.now;
        self.drain();
    }

    fn play(&mut self, ops: &[Op]) {
        for op in ops {
            match op {
                Op::Advance(ms) => self.advance_to(self.now + Duration::from_millis(*ms)),
                Op::Late(ms) => {
                    let at = self.now + Duration::from_millis(*ms);
                    self.fire(at);
                }
                other => self.input(other),
            }
        }
    }
}

fn t1x64(cfg: &TimerConfig) -> Duration {
    cfg.t1 * 64
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn client_non_invite_terminates_within_64_t1_plus_t4_of_last_input(
        cfg in config(), reliable in any::<bool>(), ops in prop::collection::vec(op(), 0..40)
    ) {
        let t0 = origin();
        let mut r = Run::new(ClientNonInvite::new(t0, &cfg, reliable, Bytes::from_static(b"OPTIONS")), t0);
        r.play(&ops);
        let bound = r.last_input + t1x64(&cfg) + cfg.t4;
        r.advance_to(bound);
        prop_assert!(r.m.is_terminated());
        prop_assert_eq!(r.terminated_events, 1);
        prop_assert!(r.terminated_at.unwrap() <= bound.max(r.now));
    }

    #[test]
    fn server_non_invite_terminates_within_64_t1_of_the_final(
        cfg in config(), reliable in any::<bool>(), ops in prop::collection::vec(op(), 0..40)
    ) {
        let t0 = origin();
        let mut r = Run::new(ServerNonInvite::new(t0, &cfg, reliable), t0);
        r.play(&ops);
        if matches!(r.m.state(), ServerNonInviteState::Trying | ServerNonInviteState::Proceeding) {
            prop_assert_eq!(r.m.poll_timeout(), None, "waits for the TU without a timer");
            // The TU answers (as the B2BUA does at the latest on its Timer F).
            r.input(&Op::TuResponse(500));
        }
        let bound = r.last_input + t1x64(&cfg) + cfg.t4;
        r.advance_to(bound);
        prop_assert!(r.m.is_terminated());
        prop_assert_eq!(r.terminated_events, 1);
    }

    #[test]
    fn client_invite_terminates_unless_waiting_in_proceeding(
        cfg in config(), reliable in any::<bool>(), ops in prop::collection::vec(op(), 0..40)
    ) {
        let t0 = origin();
        let mut r = Run::new(ClientInvite::new(t0, &cfg, reliable, Bytes::from_static(b"INVITE")), t0);
        r.play(&ops);
        if r.m.state() == ClientInviteState::Proceeding {
            // Without a CANCEL it may wait for the final response forever.
            r.input(&Op::CancelSent);
        }
        let bound = r.last_input + t1x64(&cfg).max(Duration::from_secs(32));
        r.advance_to(bound);
        prop_assert!(r.m.is_terminated());
        prop_assert_eq!(r.terminated_events, 1);
        prop_assert!(r.m.has_provisional() || r.m.state() != ClientInviteState::Proceeding);
    }

    #[test]
    fn server_invite_terminates_within_64_t1_plus_t4_of_the_final(
        cfg in config(), reliable in any::<bool>(), ops in prop::collection::vec(op(), 0..40)
    ) {
        let t0 = origin();
        let mut r = Run::new(ServerInvite::new(t0, &cfg, reliable), t0);
        r.play(&ops);
        if r.m.state() == ServerInviteState::Proceeding {
            prop_assert_eq!(r.m.poll_timeout(), None);
            r.input(&Op::TuResponse(486));
        }
        let bound = r.last_input + t1x64(&cfg) + cfg.t4;
        r.advance_to(bound);
        prop_assert!(r.m.is_terminated());
        prop_assert_eq!(r.terminated_events, 1);
    }

    #[test]
    fn uas_2xx_retransmitter_stops_within_64_t1(
        cfg in config(), ops in prop::collection::vec(op(), 0..40)
    ) {
        let t0 = origin();
        let mut r = Run::new(Uas2xxRetransmitter::new(t0, &cfg, Bytes::from_static(b"200")), t0);
        r.play(&ops);
        r.advance_to(t0 + t1x64(&cfg));
        prop_assert!(r.m.is_terminated());
        prop_assert_eq!(r.terminated_events, 1);
    }
}

#[derive(Debug, Clone)]
enum QOp {
    Schedule(u8, u64),
    Cancel(u8),
    Pop(u64),
}

fn qop() -> impl Strategy<Value = QOp> {
    prop_oneof![
        5 => (0u8..16, 0u64..1000).prop_map(|(k, d)| QOp::Schedule(k, d)),
        2 => (0u8..16).prop_map(QOp::Cancel),
        2 => (0u64..1000).prop_map(QOp::Pop),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    /// `TimerQueue` pops exactly the non-cancelled keys, in deadline order,
    /// ties in scheduling order; a model map says what should be there.
    #[test]
    fn timer_queue_matches_model(ops in prop::collection::vec(qop(), 0..200)) {
        let t0 = origin();
        let mut q = TimerQueue::new();
        // key -> (deadline offset, order of the schedule that set it)
        let mut model: HashMap<u8, (u64, u64)> = HashMap::new();
        let mut order = 0u64;
        for op in ops {
            match op {
                QOp::Schedule(k, d) => {
                    // Rescheduling at the same deadline keeps the old order.
                    if model.get(&k).map(|&(old, _)| old) != Some(d) {
                        model.insert(k, (d, order));
                        order += 1;
                    }
                    q.schedule(k, t0 + Duration::from_millis(d));
                }
                QOp::Cancel(k) => {
                    prop_assert_eq!(q.cancel(&k), model.remove(&k).is_some());
                }
                QOp::Pop(now) => {
                    let mut due: Vec<(u64, u64, u8)> = model
                        .iter()
                        .filter(|&(_, &(d, _))| d <= now)
                        .map(|(&k, &(d, o))| (d, o, k))
                        .collect();
                    due.sort_unstable();
                    let expected: Vec<u8> = due.iter().map(|&(_, _, k)| k).collect();
                    for k in &expected {
                        model.remove(k);
                    }
                    let got: Vec<u8> = q.pop_expired(t0 + Duration::from_millis(now)).collect();
                    prop_assert_eq!(got, expected);
                }
            }
            prop_assert_eq!(q.len(), model.len());
            let next = model.values().map(|&(d, _)| d).min();
            prop_assert_eq!(q.next_deadline(), next.map(|d| t0 + Duration::from_millis(d)));
            prop_assert!(q.heap_len() <= 2 * q.len() + 64, "stale entries are compacted");
        }
    }
}
