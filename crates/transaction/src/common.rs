//! Plumbing shared by the machines: bounded queues, timer slots, events.
//!
//! Each machine keeps at most two timers at a time: a retransmission timer
//! (A, E or G; also the 2xx retransmission) and an "end" timer whose expiry
//! terminates the machine (B, D, F, H, I, J, K, L, M, or the CANCEL guard of
//! [`crate::ClientInvite::on_cancel_sent`]). When both are due at the same
//! instant the end timer wins: e.g. Timer B at 64*T1 ends a client INVITE
//! without one more retransmission.

use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::Error;
use crate::config::{TimerConfig, Timers};

/// Maximum number of distinct messages waiting in one machine's transmit
/// queue. TU-initiated sends beyond it fail with
/// [`Error::TransmitQueueFull`]; retransmissions are coalesced with an
/// identical waiting message, so they never fill the queue.
pub const OUTBOX_CAPACITY: usize = 8;

/// Events are deduplicated, and there are three kinds.
const EVENT_CAPACITY: usize = 4;

/// What the transaction user must learn from a machine, via `poll_event`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Event {
    /// A timeout timer fired without the expected message:
    /// * client INVITE: Timer B in Calling, or the CANCEL guard of
    ///   [`crate::ClientInvite::on_cancel_sent`] (the TU treats it as a 408);
    /// * client non-INVITE: Timer F (the TU treats it as a 408);
    /// * server INVITE: Timer H, the ACK for a 300-699 never came;
    /// * [`crate::Uas2xxRetransmitter`]: no ACK for the 2xx within 64*T1 (the
    ///   TU should end the session with BYE, RFC 3261 13.3.1.4).
    ///
    /// Always followed by [`Event::Terminated`].
    Timeout,
    /// The caller reported a transport failure with `on_transport_error`.
    /// In every state but Accepted the machine then terminates.
    TransportError,
    /// The machine reached its Terminated state. Reported exactly once; the
    /// engine may drop the machine after draining `poll_transmit`.
    Terminated,
}

/// What to do with a response that arrived for a client transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ResponseDisposition {
    /// Hand the response to the TU (first final response, any provisional
    /// while waiting for a final, and for INVITE every 2xx: RFC 6026).
    PassToTu,
    /// Hand the 300-699 response to the TU *and* build the ACK for it (the
    /// caller builds it with the codec, RFC 3261 17.1.1.3) and give it to
    /// [`crate::ClientInvite::send_ack`] right away.
    PassToTuAndAck,
    /// A retransmission or stray response the TU must not see.
    Absorb,
}

impl ResponseDisposition {
    /// Whether the TU must see the response.
    pub fn pass_to_tu(self) -> bool {
        !matches!(self, ResponseDisposition::Absorb)
    }

    /// Whether the caller must build an ACK and call `send_ack`.
    pub fn needs_ack(self) -> bool {
        matches!(self, ResponseDisposition::PassToTuAndAck)
    }
}

/// The quinn-style surface every machine offers, for generic engine code.
/// Each method has the same meaning as the inherent method of that name.
pub trait Machine {
    /// The machine's state enum.
    type State: Copy + Eq + std::fmt::Debug;
    /// Earliest pending timer deadline, `None` when no timer is armed.
    fn poll_timeout(&self) -> Option<Instant>;
    /// Fires the timers due at `now`.
    fn handle_timeout(&mut self, now: Instant);
    /// Next message to put on the wire.
    fn poll_transmit(&mut self) -> Option<Bytes>;
    /// Next event for the TU.
    fn poll_event(&mut self) -> Option<Event>;
    /// Current state.
    fn state(&self) -> Self::State;
    /// Whether the machine reached its final state.
    fn is_terminated(&self) -> bool;
}

/// Implements [`Machine`] by delegating to the inherent methods.
macro_rules! impl_machine {
    ($ty:ty, $state:ty) => {
        impl $crate::common::Machine for $ty {
            type State = $state;
            fn poll_timeout(&self) -> Option<::std::time::Instant> {
                <$ty>::poll_timeout(self)
            }
            fn handle_timeout(&mut self, now: ::std::time::Instant) {
                <$ty>::handle_timeout(self, now)
            }
            fn poll_transmit(&mut self) -> Option<::bytes::Bytes> {
                <$ty>::poll_transmit(self)
            }
            fn poll_event(&mut self) -> Option<$crate::common::Event> {
                <$ty>::poll_event(self)
            }
            fn state(&self) -> $state {
                <$ty>::state(self)
            }
            fn is_terminated(&self) -> bool {
                <$ty>::is_terminated(self)
            }
        }
    };
}
pub(crate) use impl_machine;

/// Status code classes as the machines see them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StatusClass {
    /// 100-199
    Provisional,
    /// 200-299
    Success,
    /// 300-699
    Failure,
}

impl StatusClass {
    pub(crate) fn of(status: u16) -> Option<Self> {
        match status {
            100..=199 => Some(StatusClass::Provisional),
            200..=299 => Some(StatusClass::Success),
            300..=699 => Some(StatusClass::Failure),
            _ => None,
        }
    }
}

/// A fixed-capacity FIFO that ignores a push of a value already waiting.
#[derive(Debug)]
pub(crate) struct Ring<T, const N: usize> {
    slots: [Option<T>; N],
    head: usize,
    len: usize,
}

impl<T: PartialEq, const N: usize> Ring<T, N> {
    pub(crate) fn new() -> Self {
        Ring {
            slots: std::array::from_fn(|_| None),
            head: 0,
            len: 0,
        }
    }

    fn slot(&self, i: usize) -> usize {
        (self.head + i) % N.max(1)
    }

    fn contains(&self, v: &T) -> bool {
        (0..self.len).any(|i| self.slots.get(self.slot(i)).and_then(Option::as_ref) == Some(v))
    }

    /// Whether `push` of `v` would succeed.
    pub(crate) fn accepts(&self, v: &T) -> bool {
        self.len < N || self.contains(v)
    }

    /// Appends `v` unless an equal value is already waiting. Gives `v` back
    /// when the ring is full.
    pub(crate) fn push(&mut self, v: T) -> Result<(), T> {
        if self.contains(&v) {
            return Ok(());
        }
        if self.len >= N {
            return Err(v);
        }
        let idx = self.slot(self.len);
        match self.slots.get_mut(idx) {
            Some(slot) => {
                *slot = Some(v);
                self.len += 1;
                Ok(())
            }
            None => Err(v),
        }
    }

    pub(crate) fn pop(&mut self) -> Option<T> {
        if self.len == 0 {
            return None;
        }
        let v = self.slots.get_mut(self.head).and_then(Option::take);
        self.head = self.slot(1);
        self.len -= 1;
        v
    }
}

/// A retransmission timer: fires at `at`; `interval` is the value it was
/// armed with (the next interval derives from it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Retx {
    pub(crate) at: Instant,
    pub(crate) interval: Duration,
}

/// A timer whose expiry terminates the machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct EndTimer {
    at: Instant,
    /// Whether expiry reports [`Event::Timeout`] before terminating.
    reports_timeout: bool,
}

/// What `handle_timeout` has to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Due {
    Nothing,
    /// The end timer fired; `timeout` says whether to report it.
    End {
        timeout: bool,
    },
    /// The retransmission timer fired.
    Retransmit(Retx),
}

/// Timers and queues of one machine.
#[derive(Debug)]
pub(crate) struct Core {
    pub(crate) timers: Timers,
    pub(crate) reliable: bool,
    retx: Option<Retx>,
    end: Option<EndTimer>,
    outbox: Ring<Bytes, OUTBOX_CAPACITY>,
    events: Ring<Event, EVENT_CAPACITY>,
}

impl Core {
    pub(crate) fn new(cfg: &TimerConfig, reliable: bool) -> Self {
        Core {
            timers: Timers::new(cfg),
            reliable,
            retx: None,
            end: None,
            outbox: Ring::new(),
            events: Ring::new(),
        }
    }

    pub(crate) fn poll_timeout(&self) -> Option<Instant> {
        match (self.retx.map(|r| r.at), self.end.map(|e| e.at)) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    pub(crate) fn due(&self, now: Instant) -> Due {
        if let Some(end) = self.end
            && end.at <= now
        {
            return Due::End {
                timeout: end.reports_timeout,
            };
        }
        match self.retx {
            Some(r) if r.at <= now => Due::Retransmit(r),
            _ => Due::Nothing,
        }
    }

    /// Arms the retransmission timer at `now + interval` on unreliable
    /// transports; on reliable ones retransmission timers stay off.
    pub(crate) fn start_retx(&mut self, now: Instant, interval: Duration) {
        self.retx = if self.reliable {
            None
        } else {
            now.checked_add(interval).map(|at| Retx { at, interval })
        };
    }

    /// Re-arms the retransmission timer after `fired` fired at `now`, with
    /// the next `interval`. The schedule stays anchored to the previous
    /// deadline (so exact polling gives the RFC schedule); if the caller was
    /// so late that the next deadline already passed, it restarts from `now`
    /// (one retransmission per firing, never a burst).
    pub(crate) fn rearm_retx(&mut self, fired: Retx, interval: Duration, now: Instant) {
        let at = match fired.at.checked_add(interval) {
            Some(at) if at > now => Some(at),
            _ => now.checked_add(interval),
        };
        self.retx = at.map(|at| Retx { at, interval });
    }

    pub(crate) fn stop_retx(&mut self) {
        self.retx = None;
    }

    /// Arms the end timer at `now + after`, replacing any other.
    pub(crate) fn start_end(&mut self, now: Instant, after: Duration, reports_timeout: bool) {
        self.end = now.checked_add(after).map(|at| EndTimer {
            at,
            reports_timeout,
        });
    }

    pub(crate) fn has_end(&self) -> bool {
        self.end.is_some()
    }

    pub(crate) fn stop_timers(&mut self) {
        self.retx = None;
        self.end = None;
    }

    /// Whether a TU-initiated `send` of `msg` would be accepted.
    pub(crate) fn can_send(&self, msg: &Bytes) -> Result<(), Error> {
        if self.outbox.accepts(msg) {
            Ok(())
        } else {
            Err(Error::TransmitQueueFull(OUTBOX_CAPACITY))
        }
    }

    /// Queues a TU-initiated message. Check `can_send` before changing state.
    pub(crate) fn send(&mut self, msg: Bytes) -> Result<(), Error> {
        self.outbox
            .push(msg)
            .map_err(|_| Error::TransmitQueueFull(OUTBOX_CAPACITY))
    }

    /// Queues a retransmission (a refcount clone). When the queue is full of
    /// other messages the retransmission is skipped, which the protocol
    /// handles like a lost packet.
    pub(crate) fn resend(&mut self, msg: &Bytes) {
        let _ = self.outbox.push(msg.clone());
    }

    pub(crate) fn emit(&mut self, event: Event) {
        let _ = self.events.push(event);
    }

    /// Stops all timers and reports [`Event::Terminated`].
    pub(crate) fn terminate(&mut self) {
        self.stop_timers();
        self.emit(Event::Terminated);
    }

    pub(crate) fn poll_transmit(&mut self) -> Option<Bytes> {
        self.outbox.pop()
    }

    pub(crate) fn poll_event(&mut self) -> Option<Event> {
        self.events.pop()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ring_is_fifo_bounded_and_dedups() {
        let mut r: Ring<u32, 3> = Ring::new();
        assert_eq!(r.pop(), None);
        assert_eq!(r.push(1), Ok(()));
        assert_eq!(r.push(2), Ok(()));
        assert_eq!(r.push(1), Ok(()), "duplicate is coalesced");
        assert_eq!(r.push(3), Ok(()));
        assert!(!r.accepts(&4));
        assert!(r.accepts(&2));
        assert_eq!(r.push(4), Err(4));
        assert_eq!(r.pop(), Some(1));
        assert_eq!(r.push(4), Ok(()));
        assert_eq!(r.pop(), Some(2));
        assert_eq!(r.pop(), Some(3));
        assert_eq!(r.pop(), Some(4));
        assert_eq!(r.pop(), None);
        // Wraps around many times without growing.
        for i in 0..100 {
            assert_eq!(r.push(i), Ok(()));
            assert_eq!(r.pop(), Some(i));
        }
    }

    #[test]
    fn status_classes() {
        assert_eq!(StatusClass::of(99), None);
        assert_eq!(StatusClass::of(100), Some(StatusClass::Provisional));
        assert_eq!(StatusClass::of(199), Some(StatusClass::Provisional));
        assert_eq!(StatusClass::of(200), Some(StatusClass::Success));
        assert_eq!(StatusClass::of(299), Some(StatusClass::Success));
        assert_eq!(StatusClass::of(300), Some(StatusClass::Failure));
        assert_eq!(StatusClass::of(699), Some(StatusClass::Failure));
        assert_eq!(StatusClass::of(700), None);
    }

    #[test]
    fn late_rearm_restarts_from_now() {
        let t0 = crate::fuzz::test_origin();
        let mut c = Core::new(&TimerConfig::default(), false);
        let fired = Retx {
            at: t0,
            interval: Duration::from_millis(500),
        };
        c.rearm_retx(fired, Duration::from_secs(1), t0);
        assert_eq!(c.poll_timeout(), Some(t0 + Duration::from_secs(1)));
        c.rearm_retx(fired, Duration::from_secs(1), t0 + Duration::from_secs(5));
        assert_eq!(c.poll_timeout(), Some(t0 + Duration::from_secs(6)));
    }
}
