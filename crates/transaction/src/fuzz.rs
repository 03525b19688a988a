//! Fuzzing entry point: bytes become an event sequence for all machines.
//!
//! Compiled for tests and with the `fuzzing` feature only. The cargo-fuzz
//! target `fuzz/fuzz_targets/transaction.rs` calls [`fuzz_drive`]; the unit
//! tests below call it on fixed inputs so it also runs on stable.

use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::common::{Event, Machine, OUTBOX_CAPACITY};
use crate::{
    ClientInvite, ClientNonInvite, ServerInvite, ServerNonInvite, TimerConfig, TimerQueue,
    Uas2xxRetransmitter,
};

/// The origin of a virtual clock. The machines never read the clock; this
/// one reading only anchors test and fuzz time lines, which then advance by
/// adding durations.
#[allow(clippy::disallowed_methods)] // see above: origin of a virtual clock, not read again
pub(crate) fn test_origin() -> Instant {
    Instant::now()
}

/// Status codes the interpreter picks from: every class boundary and some
/// out-of-range values.
const STATUSES: [u16; 24] = [
    100, 180, 183, 199, 200, 202, 299, 300, 302, 401, 404, 408, 481, 486, 487, 500, 503, 600, 603,
    699, 0, 99, 700, 65535,
];

/// Upper bound of timer firings one advance may take per machine; far above
/// what any machine needs (Timer A fires at most 7 times with T1 = 1 ms and
/// the smallest T2; E and G at most 64*T1/T1 times).
const MAX_FIRINGS: usize = 10_000;

/// Interprets `data` as a sequence of inputs for a [`ClientInvite`], a
/// [`ClientNonInvite`], a [`ServerInvite`], a [`ServerNonInvite`], a
/// [`Uas2xxRetransmitter`] and a [`TimerQueue`], checking invariants as it
/// goes. Panics (the fuzzer's signal) only when an invariant breaks:
///
/// * `is_terminated()` agrees with `state()`, and a terminated machine has
///   no timer;
/// * after `handle_timeout(now)`, `poll_timeout()` is `None` or after `now`
///   (timers never go backwards relative to a fired timer);
/// * [`Event::Terminated`] comes exactly once, only when terminated, and
///   [`Event::Timeout`] is followed by it;
/// * one drain never yields more than [`OUTBOX_CAPACITY`] messages;
/// * the timer queue pops exactly the keys the machines report due.
pub fn fuzz_drive(data: &[u8]) {
    fuzz_drive_at(test_origin(), data);
}

fn fuzz_drive_at(t0: Instant, data: &[u8]) {
    let mut input = data.iter().copied();
    let flags = input.next().unwrap_or(0);
    let reliable = flags & 1 != 0;
    let ms = Duration::from_millis;
    let cfg = match (flags >> 1) & 3 {
        0 => TimerConfig::default(),
        1 => TimerConfig {
            t1: ms(1),
            t2: ms(1),
            t4: ms(0),
        },
        2 => TimerConfig {
            t1: Duration::ZERO,
            t2: Duration::ZERO,
            t4: Duration::ZERO,
        },
        _ => TimerConfig {
            t1: ms(100),
            t2: ms(150),
            t4: ms(300),
        },
    };
    let mut h = Harness::new(t0, cfg, reliable);
    while let Some(op) = input.next() {
        let arg = input.next().unwrap_or(0);
        h.step(op, arg);
        h.check_all();
    }
    // Let every timer run out: afterwards only machines waiting for their
    // TU (Proceeding or Trying) may be alive.
    let end = h.now + Duration::from_secs(3 * 3600 * 64);
    h.advance_to(end);
    h.check_all();
    assert!(h.ci.m.is_terminated() || h.ci.m.poll_timeout().is_none());
    assert!(h.cn.m.is_terminated(), "client non-INVITE always ends");
    assert!(h.u2.m.is_terminated(), "2xx retransmission always ends");
    assert!(h.si.m.is_terminated() || h.si.m.poll_timeout().is_none());
    assert!(h.sn.m.is_terminated() || h.sn.m.poll_timeout().is_none());
}

/// A machine plus what the harness observed of it.
struct Slot<M> {
    m: M,
    terminated_events: u32,
    pending_timeout: bool,
}

impl<M: Machine> Slot<M> {
    fn new(m: M) -> Self {
        Slot {
            m,
            terminated_events: 0,
            pending_timeout: false,
        }
    }

    fn drain(&mut self) {
        let mut sent = 0;
        while self.m.poll_transmit().is_some() {
            sent += 1;
            assert!(sent <= OUTBOX_CAPACITY, "transmit queue is bounded");
        }
        while let Some(e) = self.m.poll_event() {
            match e {
                Event::Terminated => {
                    assert!(
                        self.m.is_terminated(),
                        "Terminated event only when terminated"
                    );
                    self.terminated_events += 1;
                    assert_eq!(self.terminated_events, 1, "Terminated reported once");
                    self.pending_timeout = false;
                }
                Event::Timeout => {
                    assert_eq!(self.terminated_events, 0, "no Timeout after Terminated");
                    self.pending_timeout = true;
                }
                Event::TransportError => {
                    assert_eq!(self.terminated_events, 0, "no error after Terminated");
                }
            }
        }
        assert!(!self.pending_timeout, "Timeout is followed by Terminated");
    }

    fn check(&self) {
        if self.m.is_terminated() {
            assert_eq!(
                self.m.poll_timeout(),
                None,
                "terminated machines have no timer"
            );
        }
    }

    /// Fires every deadline up to `target` at its own instant, as an engine
    /// would. `now` is the current time (inputs may have left overdue timers).
    fn advance(&mut self, now: Instant, target: Instant) {
        for _ in 0..MAX_FIRINGS {
            let Some(d) = self.m.poll_timeout() else {
                return;
            };
            if d > target {
                return;
            }
            let at = d.max(now);
            self.m.handle_timeout(at);
            if let Some(next) = self.m.poll_timeout() {
                assert!(next > at, "poll_timeout went backwards after a fired timer");
            }
            self.drain();
        }
        panic!("more than {MAX_FIRINGS} timer firings in one advance");
    }

    /// One late `handle_timeout` at `now`, whatever is due.
    fn kick(&mut self, now: Instant) {
        self.m.handle_timeout(now);
        if let Some(next) = self.m.poll_timeout() {
            assert!(
                next > now,
                "poll_timeout went backwards after a fired timer"
            );
        }
        self.drain();
    }
}

struct Harness {
    now: Instant,
    cfg: TimerConfig,
    reliable: bool,
    ci: Slot<ClientInvite>,
    cn: Slot<ClientNonInvite>,
    si: Slot<ServerInvite>,
    sn: Slot<ServerNonInvite>,
    u2: Slot<Uas2xxRetransmitter>,
    queue: TimerQueue<u8>,
}

impl Harness {
    fn new(now: Instant, cfg: TimerConfig, reliable: bool) -> Self {
        let mut h = Harness {
            now,
            cfg,
            reliable,
            ci: Slot::new(ClientInvite::new(
                now,
                &cfg,
                reliable,
                Bytes::from_static(b"INVITE"),
            )),
            cn: Slot::new(ClientNonInvite::new(
                now,
                &cfg,
                reliable,
                Bytes::from_static(b"OPTIONS"),
            )),
            si: Slot::new(ServerInvite::new(now, &cfg, reliable)),
            sn: Slot::new(ServerNonInvite::new(now, &cfg, reliable)),
            u2: Slot::new(Uas2xxRetransmitter::new(
                now,
                &cfg,
                Bytes::from_static(b"200"),
            )),
            queue: TimerQueue::new(),
        };
        h.sync_queue();
        h
    }

    fn deadlines(&self) -> [Option<Instant>; 5] {
        [
            self.ci.m.poll_timeout(),
            self.cn.m.poll_timeout(),
            self.si.m.poll_timeout(),
            self.sn.m.poll_timeout(),
            self.u2.m.poll_timeout(),
        ]
    }

    fn sync_queue(&mut self) {
        for (key, d) in (0u8..).zip(self.deadlines()) {
            self.queue.set(key, d);
            assert_eq!(self.queue.deadline(&key), d);
        }
    }

    fn advance_to(&mut self, target: Instant) {
        // The queue must pop exactly the machines with a deadline <= target,
        // in deadline order.
        let mut expected: Vec<(Instant, u8)> = (0u8..)
            .zip(self.deadlines())
            .filter_map(|(k, d)| d.filter(|d| *d <= target).map(|d| (d, k)))
            .collect();
        expected.sort();
        let popped: Vec<u8> = self.queue.pop_expired(target).collect();
        let keys: Vec<u8> = expected.iter().map(|&(_, k)| k).collect();
        let mut sorted_popped = popped.clone();
        sorted_popped.sort_unstable();
        let mut sorted_keys = keys.clone();
        sorted_keys.sort_unstable();
        assert_eq!(sorted_popped, sorted_keys, "timer queue pops the due keys");
        let popped_deadlines: Vec<Instant> = popped
            .iter()
            .filter_map(|k| expected.iter().find(|(_, e)| e == k).map(|&(d, _)| d))
            .collect();
        assert!(
            popped_deadlines.windows(2).all(|w| w[0] <= w[1]),
            "in deadline order"
        );

        let now = self.now;
        self.ci.advance(now, target);
        self.cn.advance(now, target);
        self.si.advance(now, target);
        self.sn.advance(now, target);
        self.u2.advance(now, target);
        self.now = self.now.max(target);
        self.sync_queue();
    }

    fn step(&mut self, op: u8, arg: u8) {
        let now = self.now;
        let status = STATUSES[usize::from(arg) % STATUSES.len()];
        let body = Bytes::from(vec![arg]);
        match op % 16 {
            0 => {
                let step = self.cfg.t1.max(Duration::from_millis(1)) / 4;
                self.advance_to(now + step * u32::from(arg));
            }
            1 => {
                let d = self.ci.m.on_response(now, status);
                if d.needs_ack() && arg & 0x80 == 0 {
                    assert_eq!(self.ci.m.send_ack(Bytes::from_static(b"ACK")), Ok(()));
                }
            }
            2 => {
                let _ = self.ci.m.send_ack(body);
            }
            3 => self.ci.m.on_cancel_sent(now),
            4 => {
                let _ = self.cn.m.on_response(now, status);
            }
            5 => {
                let _ = self.si.m.send_response(now, status, body);
            }
            6 => self.si.m.on_request_retransmit(now),
            7 => {
                if self.si.m.on_ack(now) {
                    let _ = self.u2.m.on_ack(now);
                }
            }
            8 => {
                let _ = self.sn.m.send_response(now, status, body);
            }
            9 => self.sn.m.on_request_retransmit(now),
            10 => match arg % 4 {
                0 => self.ci.m.on_transport_error(),
                1 => self.cn.m.on_transport_error(),
                2 => self.si.m.on_transport_error(),
                _ => self.sn.m.on_transport_error(),
            },
            11 => self.recreate(arg, now),
            12 => {
                // handle_timeout with nothing due must change nothing.
                let before = self.deadlines();
                let due_any = before.iter().flatten().any(|d| *d <= now);
                self.ci.kick(now);
                self.cn.kick(now);
                self.si.kick(now);
                self.sn.kick(now);
                self.u2.kick(now);
                if !due_any {
                    assert_eq!(self.deadlines(), before);
                }
            }
            13 => {
                self.ci.drain();
                self.cn.drain();
                self.si.drain();
                self.sn.drain();
                self.u2.drain();
            }
            14 => self.advance_to(now + Duration::from_secs(u64::from(arg))),
            _ => {
                // A late engine: time jumps, then one handle_timeout per machine.
                let later = now + Duration::from_millis(u64::from(arg) * 37);
                self.now = later;
                self.ci.kick(later);
                self.cn.kick(later);
                self.si.kick(later);
                self.sn.kick(later);
                self.u2.kick(later);
            }
        }
        self.sync_queue();
    }

    fn recreate(&mut self, which: u8, now: Instant) {
        let (cfg, rel) = (&self.cfg, self.reliable);
        match which % 5 {
            0 => {
                self.ci = Slot::new(ClientInvite::new(
                    now,
                    cfg,
                    rel,
                    Bytes::from_static(b"INVITE"),
                ))
            }
            1 => {
                self.cn = Slot::new(ClientNonInvite::new(
                    now,
                    cfg,
                    rel,
                    Bytes::from_static(b"BYE"),
                ))
            }
            2 => self.si = Slot::new(ServerInvite::new(now, cfg, rel)),
            3 => self.sn = Slot::new(ServerNonInvite::new(now, cfg, rel)),
            _ => {
                self.u2 = Slot::new(Uas2xxRetransmitter::new(
                    now,
                    cfg,
                    Bytes::from_static(b"200"),
                ))
            }
        }
    }

    fn check_all(&mut self) {
        assert_eq!(
            self.ci.m.is_terminated(),
            self.ci.m.state() == crate::ClientInviteState::Terminated
        );
        assert_eq!(
            self.cn.m.is_terminated(),
            self.cn.m.state() == crate::ClientNonInviteState::Terminated
        );
        assert_eq!(
            self.si.m.is_terminated(),
            self.si.m.state() == crate::ServerInviteState::Terminated
        );
        assert_eq!(
            self.sn.m.is_terminated(),
            self.sn.m.state() == crate::ServerNonInviteState::Terminated
        );
        self.ci.check();
        self.cn.check();
        self.si.check();
        self.sn.check();
        self.u2.check();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn random_bytes_run_clean(data in prop::collection::vec(any::<u8>(), 0..512)) {
            fuzz_drive(&data);
        }
    }

    #[test]
    fn fixed_inputs_run_clean() {
        let inputs: [&[u8]; 10] = [
            b"",
            b"\x00",
            b"\x01",
            // UDP defaults: 180 to the INVITE, CANCEL guard, time passes.
            &[0, 1, 1, 3, 0, 0, 255, 14, 200],
            // TCP: 486 then ACK, server 487 then ACK, let timers run.
            &[1, 1, 13, 5, 14, 7, 0, 0, 10],
            // Tiny T1: everything fires at once; late engine.
            &[2, 15, 255, 15, 255, 12, 0, 4, 4, 8, 10],
            // Zero config (normalised), recreate machines, transport errors.
            &[4, 11, 0, 11, 1, 10, 0, 10, 1, 10, 2, 10, 3, 12, 0],
            // Server INVITE 2xx path with ACKs passed to the TU.
            &[6, 5, 1, 5, 4, 7, 0, 6, 0, 5, 4, 14, 40],
            // Queue filling: many distinct provisionals without draining.
            &[
                0, 5, 1, 5, 2, 5, 3, 5, 1, 5, 2, 5, 3, 8, 1, 8, 2, 8, 3, 13, 0,
            ],
            // Every op code once with assorted arguments.
            &[
                3, 0, 7, 1, 9, 2, 11, 3, 13, 4, 17, 5, 19, 6, 23, 7, 29, 8, 31, 9, 37, 10, 41, 11,
                43, 12, 47, 13, 53, 14, 59, 15, 61,
            ],
        ];
        for data in inputs {
            fuzz_drive(data);
        }
    }

    #[test]
    fn pseudo_random_inputs_run_clean() {
        // A fixed xorshift stream: deterministic, broad coverage.
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        for _ in 0..300 {
            let len = (x % 200) as usize;
            let data: Vec<u8> = (0..len)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    (x >> 24) as u8
                })
                .collect();
            fuzz_drive(&data);
        }
    }
}
