//! The UAS core's 2xx retransmission: RFC 3261 13.3.1.4.

use std::time::Instant;

use bytes::Bytes;

use crate::common::{Core, Due, Event, impl_machine};
use crate::config::TimerConfig;

/// States of [`Uas2xxRetransmitter`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Uas2xxState {
    /// Waiting for the ACK, retransmitting the 2xx.
    Retransmitting,
    /// The ACK arrived.
    Acked,
    /// 64*T1 passed without an ACK; the TU should send BYE.
    GaveUp,
}

/// Retransmits a 2xx response to INVITE until the ACK arrives
/// (RFC 3261 13.3.1.4). With RFC 6026 the INVITE server transaction no
/// longer does this; the TU core does, with one of these per 2xx it sends.
///
/// | state          | event                    | action                                            | next       |
/// |----------------|--------------------------|---------------------------------------------------|------------|
/// | -              | 2xx sent by the TU ([`new`]) | start retransmit timer at T1, give-up at 64*T1 | Retransmitting |
/// | Retransmitting | retransmit timer fires   | 2xx to [`poll_transmit`]; interval = MIN(2*interval, T2) | Retransmitting |
/// | Retransmitting | ACK ([`on_ack`])         | stop; [`Event::Terminated`]                       | Acked      |
/// | Retransmitting | 64*T1 passed             | [`Event::Timeout`], [`Event::Terminated`]         | GaveUp     |
///
/// The first transmission of the 2xx is not this helper's job: the TU sends
/// it through [`crate::ServerInvite::send_response`] (which moves the server
/// transaction to Accepted) and creates the retransmitter at the same
/// instant. Retransmissions can go straight to the transport, or through
/// `ServerInvite::send_response` while it is in Accepted; both end 64*T1
/// after the 2xx. With the defaults the 2xx is repeated at 0.5, 1.5, 3.5,
/// 7.5, 11.5, 15.5, ... 31.5 s and the helper gives up at 32 s.
///
/// The retransmissions run whatever the transport: RFC 3261 13.3.1.4 has no
/// exception for reliable transports, because the 2xx travels end to end,
/// across hops that may be unreliable.
///
/// [`new`]: Uas2xxRetransmitter::new
/// [`poll_transmit`]: Uas2xxRetransmitter::poll_transmit
/// [`on_ack`]: Uas2xxRetransmitter::on_ack
#[derive(Debug)]
pub struct Uas2xxRetransmitter {
    core: Core,
    state: Uas2xxState,
    response: Bytes,
}

impl Uas2xxRetransmitter {
    /// Starts retransmitting `response`, which the TU sent at `now`.
    pub fn new(now: Instant, cfg: &TimerConfig, response: Bytes) -> Self {
        let mut core = Core::new(cfg, false);
        let t1 = core.timers.t1;
        core.start_retx(now, t1);
        core.start_end(now, core.timers.t1_x64(), true);
        Uas2xxRetransmitter {
            core,
            state: Uas2xxState::Retransmitting,
            response,
        }
    }

    /// The ACK for the 2xx arrived (the dialog layer matched it). Returns
    /// `true` if this stopped the retransmissions, `false` if they had
    /// already stopped (ACK retransmission, or after giving up).
    pub fn on_ack(&mut self, _now: Instant) -> bool {
        if self.state != Uas2xxState::Retransmitting {
            return false;
        }
        self.state = Uas2xxState::Acked;
        self.core.terminate();
        true
    }

    /// Earliest pending timer deadline.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.core.poll_timeout()
    }

    /// Fires the timers due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.state != Uas2xxState::Retransmitting {
            return;
        }
        match self.core.due(now) {
            Due::End { .. } => {
                self.state = Uas2xxState::GaveUp;
                self.core.emit(Event::Timeout);
                self.core.terminate();
            }
            Due::Retransmit(fired) => {
                self.core.resend(&self.response);
                let next = fired.interval.saturating_mul(2).min(self.core.timers.t2);
                self.core.rearm_retx(fired, next, now);
            }
            Due::Nothing => {}
        }
    }

    /// Next 2xx retransmission to put on the wire.
    pub fn poll_transmit(&mut self) -> Option<Bytes> {
        self.core.poll_transmit()
    }

    /// Next event for the TU.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.core.poll_event()
    }

    /// Current state.
    pub fn state(&self) -> Uas2xxState {
        self.state
    }

    /// Whether retransmission stopped (ACKed or gave up).
    pub fn is_terminated(&self) -> bool {
        self.state != Uas2xxState::Retransmitting
    }
}

impl_machine!(Uas2xxRetransmitter, Uas2xxState);
