//! INVITE client transaction: RFC 3261 17.1.1, corrected by RFC 6026 7.2.

use std::time::Instant;

use bytes::Bytes;

use crate::common::{Core, Due, Event, ResponseDisposition, StatusClass, impl_machine};
use crate::config::{TIMER_D_UNRELIABLE, TimerConfig};
use crate::error::Error;

/// States of [`ClientInvite`] (RFC 3261 Figure 5 with RFC 6026's Accepted).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ClientInviteState {
    /// The INVITE was sent; no response yet. Timers A (unreliable) and B run.
    Calling,
    /// A provisional response arrived. No retransmission, no timer (unless
    /// [`ClientInvite::on_cancel_sent`] armed the CANCEL guard).
    Proceeding,
    /// A 300-699 arrived and was ACKed; Timer D absorbs its retransmissions.
    Completed,
    /// A 2xx arrived (RFC 6026); further 2xx go to the TU until Timer M.
    Accepted,
    /// Done; drain the queues and drop the machine.
    Terminated,
}

impl ClientInviteState {
    /// The state's name as in the RFC figures.
    pub fn as_str(self) -> &'static str {
        match self {
            ClientInviteState::Calling => "Calling",
            ClientInviteState::Proceeding => "Proceeding",
            ClientInviteState::Completed => "Completed",
            ClientInviteState::Accepted => "Accepted",
            ClientInviteState::Terminated => "Terminated",
        }
    }
}

/// The INVITE client transaction.
///
/// Transition table: RFC 3261 Figure 5 as replaced by RFC 6026 Figure 5.
/// Quoted arc labels are the figures' "event / action"; `-` is "no action".
///
/// | state      | event (figure label)             | action (figure label)                         | next       |
/// |------------|----------------------------------|-----------------------------------------------|------------|
/// | -          | "INVITE from TU" ([`new`])       | "INVITE sent"; start A (unreliable), B        | Calling    |
/// | Calling    | "Timer A fires"                  | "Reset A, INVITE sent" (A doubles, uncapped)  | Calling    |
/// | Calling    | "Timer B fires"                  | "inform TU": [`Event::Timeout`]               | Terminated |
/// | Calling    | "Transport Err."                 | "inform TU": [`Event::TransportError`]        | Terminated |
/// | Calling    | "1xx"                            | "1xx to TU": [`PassToTu`]; stop A and B       | Proceeding |
/// | Calling    | "2xx"                            | "2xx to TU": [`PassToTu`]; start M            | Accepted   |
/// | Calling    | "300-699"                        | "ACK sent, resp. to TU": [`PassToTuAndAck`]; start D | Completed |
/// | Proceeding | "1xx"                            | "1xx to TU": [`PassToTu`]                     | Proceeding |
/// | Proceeding | "2xx"                            | "2xx to TU": [`PassToTu`]; start M            | Accepted   |
/// | Proceeding | "300-699"                        | "ACK sent, resp. to TU": [`PassToTuAndAck`]; start D | Completed |
/// | Completed  | "300-699" (retransmission)       | "ACK sent" (the stored ACK again): [`Absorb`] | Completed  |
/// | Completed  | "Timer D fires"                  | `-`                                           | Terminated |
/// | Completed  | "Transport Err."                 | "inform TU": [`Event::TransportError`]        | Terminated |
/// | Accepted   | "2xx"                            | "2xx to TU": [`PassToTu`] (the TU re-ACKs)    | Accepted   |
/// | Accepted   | "Timer M fires"                  | `-`                                           | Terminated |
///
/// Additions, not in the figure:
/// * Proceeding + [`on_cancel_sent`]: arms a 64*T1 guard (RFC 3261 9.1: with
///   no final response 64*T1 after the CANCEL, the transaction is given up);
///   expiry reports [`Event::Timeout`] and terminates.
/// * Any response not listed (1xx after a final, 2xx in Completed, 300-699
///   in Accepted, a status outside 100..=699, anything once Terminated) is
///   [`Absorb`]ed without a state change.
/// * Transport errors: Proceeding behaves like Calling; in Accepted the TU is
///   informed and the machine stays (it sends nothing there; Timer M still
///   bounds it).
///
/// Reliable transports (TCP/TLS, RFC 3261 17.1.1.2): Timer A is off and
/// Timer D is zero. Every state reaches Terminated within 64*T1 (Timer B or M)
/// or 32 s (D) of its last transition, except Proceeding, which waits for
/// the final response as long as the TU lets it (the TU ends ringing with a
/// CANCEL and then calls [`on_cancel_sent`]).
///
/// The ACK for a 300-699 is built by the caller (it copies headers of the
/// INVITE and the response, RFC 3261 17.1.1.3) and handed over with
/// [`send_ack`] right after [`on_response`] returned [`PassToTuAndAck`]; with
/// a reliable transport Timer D is zero, so do that before the next
/// [`handle_timeout`].
///
/// [`new`]: ClientInvite::new
/// [`on_response`]: ClientInvite::on_response
/// [`send_ack`]: ClientInvite::send_ack
/// [`on_cancel_sent`]: ClientInvite::on_cancel_sent
/// [`handle_timeout`]: ClientInvite::handle_timeout
/// [`PassToTu`]: ResponseDisposition::PassToTu
/// [`PassToTuAndAck`]: ResponseDisposition::PassToTuAndAck
/// [`Absorb`]: ResponseDisposition::Absorb
#[derive(Debug)]
pub struct ClientInvite {
    core: Core,
    state: ClientInviteState,
    request: Bytes,
    ack: Option<Bytes>,
    has_provisional: bool,
}

impl ClientInvite {
    /// Starts the transaction in Calling and queues `request` (the INVITE)
    /// for transmission.
    pub fn new(now: Instant, cfg: &TimerConfig, reliable: bool, request: Bytes) -> Self {
        let mut core = Core::new(cfg, reliable);
        core.resend(&request);
        let t1 = core.timers.t1;
        core.start_retx(now, t1); // Timer A
        core.start_end(now, core.timers.t1_x64(), true); // Timer B
        ClientInvite {
            core,
            state: ClientInviteState::Calling,
            request,
            ack: None,
            has_provisional: false,
        }
    }

    /// A response with `status` arrived for this transaction.
    pub fn on_response(&mut self, now: Instant, status: u16) -> ResponseDisposition {
        use ClientInviteState as S;
        let Some(class) = StatusClass::of(status) else {
            return ResponseDisposition::Absorb;
        };
        match (self.state, class) {
            (S::Calling | S::Proceeding, StatusClass::Provisional) => {
                self.has_provisional = true;
                if self.state == S::Calling {
                    // Timer B only matters in Calling (17.1.1.2).
                    self.core.stop_timers();
                    self.state = S::Proceeding;
                }
                ResponseDisposition::PassToTu
            }
            (S::Calling | S::Proceeding, StatusClass::Success) => {
                self.core.stop_timers();
                self.core.start_end(now, self.core.timers.t1_x64(), false); // Timer M
                self.state = S::Accepted;
                ResponseDisposition::PassToTu
            }
            (S::Calling | S::Proceeding, StatusClass::Failure) => {
                self.core.stop_timers();
                let d = if self.core.reliable {
                    std::time::Duration::ZERO
                } else {
                    TIMER_D_UNRELIABLE
                };
                self.core.start_end(now, d, false); // Timer D
                self.state = S::Completed;
                ResponseDisposition::PassToTuAndAck
            }
            (S::Completed, StatusClass::Failure) => {
                if let Some(ack) = &self.ack {
                    self.core.resend(ack);
                }
                ResponseDisposition::Absorb
            }
            (S::Accepted, StatusClass::Success) => ResponseDisposition::PassToTu,
            _ => ResponseDisposition::Absorb,
        }
    }

    /// Hands over the ACK for the 300-699 response (Completed only, once).
    /// It is transmitted now and again for every retransmission of the final
    /// response while Timer D runs.
    pub fn send_ack(&mut self, ack: Bytes) -> Result<(), Error> {
        match self.state {
            ClientInviteState::Completed if self.ack.is_some() => Err(Error::AckAlreadySent),
            ClientInviteState::Completed => {
                self.core.send(ack.clone())?;
                self.ack = Some(ack);
                Ok(())
            }
            ClientInviteState::Terminated => Err(Error::Terminated),
            s => Err(Error::WrongState {
                action: "send_ack",
                state: s.as_str(),
            }),
        }
    }

    /// The TU sent a CANCEL for this INVITE (as its own [`crate::ClientNonInvite`]).
    /// In Proceeding this arms a 64*T1 guard (RFC 3261 9.1): if no final
    /// response arrives by then, the machine reports [`Event::Timeout`] and
    /// terminates. Repeated calls keep the first deadline. In other states
    /// it does nothing: Calling is already bounded by Timer B, and after a
    /// final response the CANCEL lost the race.
    pub fn on_cancel_sent(&mut self, now: Instant) {
        if self.state == ClientInviteState::Proceeding && !self.core.has_end() {
            self.core.start_end(now, self.core.timers.t1_x64(), true);
        }
    }

    /// The transport failed to send for this transaction (RFC 3261 17.1.4).
    pub fn on_transport_error(&mut self) {
        match self.state {
            ClientInviteState::Terminated => {}
            ClientInviteState::Accepted => self.core.emit(Event::TransportError),
            _ => {
                self.core.emit(Event::TransportError);
                self.terminate();
            }
        }
    }

    /// Whether a provisional response was received: a CANCEL may only be
    /// sent after one (RFC 3261 9.1).
    pub fn has_provisional(&self) -> bool {
        self.has_provisional
    }

    /// Earliest pending timer deadline.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.core.poll_timeout()
    }

    /// Fires the timers due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.state == ClientInviteState::Terminated {
            return;
        }
        match self.core.due(now) {
            Due::End { timeout } => {
                if timeout {
                    self.core.emit(Event::Timeout);
                }
                self.terminate();
            }
            Due::Retransmit(fired) => {
                // Timer A: INVITE again, interval doubles without cap.
                self.core.resend(&self.request);
                self.core
                    .rearm_retx(fired, fired.interval.saturating_mul(2), now);
            }
            Due::Nothing => {}
        }
    }

    /// Next message to put on the wire (the INVITE, its retransmissions, the ACK).
    pub fn poll_transmit(&mut self) -> Option<Bytes> {
        self.core.poll_transmit()
    }

    /// Next event for the TU.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.core.poll_event()
    }

    /// Current state.
    pub fn state(&self) -> ClientInviteState {
        self.state
    }

    /// Whether the machine reached Terminated.
    pub fn is_terminated(&self) -> bool {
        self.state == ClientInviteState::Terminated
    }

    fn terminate(&mut self) {
        self.state = ClientInviteState::Terminated;
        self.core.terminate();
    }
}

impl_machine!(ClientInvite, ClientInviteState);
