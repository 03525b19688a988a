//! INVITE server transaction: RFC 3261 17.2.1, corrected by RFC 6026 7.1.

use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::common::{Core, Due, Event, StatusClass, impl_machine};
use crate::config::TimerConfig;
use crate::error::Error;

/// States of [`ServerInvite`] (RFC 3261 Figure 7 with RFC 6026's Accepted).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ServerInviteState {
    /// The INVITE was passed to the TU; provisional responses may be sent.
    Proceeding,
    /// A 300-699 was sent; Timer G (unreliable) retransmits it until the ACK
    /// or Timer H.
    Completed,
    /// The ACK for the 300-699 arrived; Timer I absorbs ACK retransmissions.
    Confirmed,
    /// A 2xx was sent (RFC 6026); INVITE retransmissions are absorbed and
    /// ACKs go to the TU until Timer L.
    Accepted,
    /// Done; drain the queues and drop the machine.
    Terminated,
}

impl ServerInviteState {
    /// The state's name as in the RFC figures.
    pub fn as_str(self) -> &'static str {
        match self {
            ServerInviteState::Proceeding => "Proceeding",
            ServerInviteState::Completed => "Completed",
            ServerInviteState::Confirmed => "Confirmed",
            ServerInviteState::Accepted => "Accepted",
            ServerInviteState::Terminated => "Terminated",
        }
    }
}

/// The INVITE server transaction.
///
/// Transition table: RFC 3261 Figure 7 as replaced by RFC 6026 Figure 7.
/// Quoted arc labels are the figures' "event / action"; `-` is "no action".
///
/// | state      | event (figure label)          | action (figure label)                              | next       |
/// |------------|-------------------------------|----------------------------------------------------|------------|
/// | -          | "INVITE" ([`new`])            | "pass INV to TU"                                   | Proceeding |
/// | Proceeding | "INVITE" (retransmission)     | "send response" (the last provisional, if any)     | Proceeding |
/// | Proceeding | "101-199 from TU"             | "send response"                                    | Proceeding |
/// | Proceeding | "2xx from TU"                 | "send response"; start L                           | Accepted   |
/// | Proceeding | "300-699 from TU"             | "send response"; start G (unreliable), H           | Completed  |
/// | Proceeding | "Transport Err."              | "Inform TU": [`Event::TransportError`]             | Terminated |
/// | Completed  | "INVITE" (retransmission)     | "send response" (the final again)                  | Completed  |
/// | Completed  | "Timer G fires"               | "send response"; G = MIN(2*G, T2)                  | Completed  |
/// | Completed  | "ACK"                         | `-`; start I                                       | Confirmed  |
/// | Completed  | "Timer H fires"               | `-` (we report [`Event::Timeout`])                 | Terminated |
/// | Completed  | "Transport Err."              | "Inform TU": [`Event::TransportError`]             | Terminated |
/// | Confirmed  | "ACK" (retransmission)        | `-` (absorbed)                                     | Confirmed  |
/// | Confirmed  | "Timer I fires"               | `-`                                                | Terminated |
/// | Accepted   | "INVITE" (retransmission)     | `-` (absorbed)                                     | Accepted   |
/// | Accepted   | "2xx from TU"                 | "send response" (the TU core's 2xx retransmission) | Accepted   |
/// | Accepted   | "ACK"                         | "to TU": [`on_ack`] returns `true`                 | Accepted   |
/// | Accepted   | "Transport Err."              | "Inform TU": [`Event::TransportError`]             | Accepted   |
/// | Accepted   | "Timer L fires"               | `-`                                                | Terminated |
///
/// Additions, not in the figures: the "send 100 if TU won't in 200 ms" arc
/// is left to the TU (the B2BUA engine sends 100 Trying at once); an ACK in
/// Proceeding (no final yet) is absorbed; any other response from the TU
/// (e.g. a second final) is an [`Error::WrongState`]; a transport error in
/// Confirmed informs the TU and terminates.
///
/// The 2xx itself is not retransmitted by this machine (RFC 6026 7.1): the
/// TU core does that, see [`crate::Uas2xxRetransmitter`], and may route its
/// retransmissions through [`send_response`] or straight to the transport.
///
/// Reliable transports (RFC 3261 17.2.1): no Timer G, Timer I = 0; Timers H
/// and L stay 64*T1. Every state but Proceeding terminates within 64*T1 + T4
/// of entering it.
///
/// [`new`]: ServerInvite::new
/// [`on_ack`]: ServerInvite::on_ack
/// [`send_response`]: ServerInvite::send_response
#[derive(Debug)]
pub struct ServerInvite {
    core: Core,
    state: ServerInviteState,
    last_provisional: Option<Bytes>,
    final_response: Option<Bytes>,
}

impl ServerInvite {
    /// Starts the transaction in Proceeding for an INVITE that was just
    /// passed to the TU. Nothing is queued: the TU sends 100 Trying (or
    /// another response) with [`ServerInvite::send_response`].
    pub fn new(_now: Instant, cfg: &TimerConfig, reliable: bool) -> Self {
        ServerInvite {
            core: Core::new(cfg, reliable),
            state: ServerInviteState::Proceeding,
            last_provisional: None,
            final_response: None,
        }
    }

    /// A retransmission of the INVITE arrived: the last provisional response
    /// (Proceeding) or the final response (Completed) is queued again; in
    /// the other states the retransmission is absorbed.
    pub fn on_request_retransmit(&mut self, _now: Instant) {
        let again = match self.state {
            ServerInviteState::Proceeding => self.last_provisional.as_ref(),
            ServerInviteState::Completed => self.final_response.as_ref(),
            _ => None,
        };
        if let Some(msg) = again {
            self.core.resend(msg);
        }
    }

    /// The TU sends `response` with status `status` (see the table for what
    /// each class does in each state).
    pub fn send_response(
        &mut self,
        now: Instant,
        status: u16,
        response: Bytes,
    ) -> Result<(), Error> {
        use ServerInviteState as S;
        let class = StatusClass::of(status).ok_or(Error::InvalidStatus(status))?;
        match (self.state, class) {
            (S::Terminated, _) => return Err(Error::Terminated),
            (S::Proceeding, _) | (S::Accepted, StatusClass::Success) => {}
            (s, _) => {
                return Err(Error::WrongState {
                    action: "send_response",
                    state: s.as_str(),
                });
            }
        }
        self.core.can_send(&response)?;
        match (self.state, class) {
            (S::Proceeding, StatusClass::Provisional) => {
                self.core.send(response.clone())?;
                self.last_provisional = Some(response);
            }
            (S::Proceeding, StatusClass::Success) => {
                self.core.send(response)?;
                self.last_provisional = None;
                self.core.start_end(now, self.core.timers.t1_x64(), false); // Timer L
                self.state = S::Accepted;
            }
            (S::Proceeding, StatusClass::Failure) => {
                self.core.send(response.clone())?;
                self.last_provisional = None;
                self.final_response = Some(response);
                let t1 = self.core.timers.t1;
                self.core.start_retx(now, t1); // Timer G
                self.core.start_end(now, self.core.timers.t1_x64(), true); // Timer H
                self.state = S::Completed;
            }
            // Accepted + 2xx: pass the TU core's (re)transmission through.
            _ => self.core.send(response)?,
        }
        Ok(())
    }

    /// An ACK matching this transaction arrived. Returns `true` when the TU
    /// must see it (Accepted, RFC 6026), `false` when it was absorbed:
    /// Completed moves to Confirmed (Timer I: T4, zero if reliable),
    /// Confirmed absorbs retransmissions, and an ACK in Proceeding or
    /// Terminated is stray.
    pub fn on_ack(&mut self, now: Instant) -> bool {
        match self.state {
            ServerInviteState::Completed => {
                self.core.stop_timers();
                let i = if self.core.reliable {
                    Duration::ZERO
                } else {
                    self.core.timers.t4
                };
                self.core.start_end(now, i, false); // Timer I
                self.state = ServerInviteState::Confirmed;
                false
            }
            ServerInviteState::Accepted => true,
            _ => false,
        }
    }

    /// The transport failed to send for this transaction (RFC 3261 17.2.4).
    pub fn on_transport_error(&mut self) {
        match self.state {
            ServerInviteState::Terminated => {}
            ServerInviteState::Accepted => self.core.emit(Event::TransportError),
            _ => {
                self.core.emit(Event::TransportError);
                self.terminate();
            }
        }
    }

    /// Earliest pending timer deadline.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.core.poll_timeout()
    }

    /// Fires the timers due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.state == ServerInviteState::Terminated {
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
                // Timer G: the final response again, interval doubles up to T2.
                if let Some(msg) = &self.final_response {
                    self.core.resend(msg);
                }
                let next = fired.interval.saturating_mul(2).min(self.core.timers.t2);
                self.core.rearm_retx(fired, next, now);
            }
            Due::Nothing => {}
        }
    }

    /// Next message to put on the wire (responses and their retransmissions).
    pub fn poll_transmit(&mut self) -> Option<Bytes> {
        self.core.poll_transmit()
    }

    /// Next event for the TU.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.core.poll_event()
    }

    /// Current state.
    pub fn state(&self) -> ServerInviteState {
        self.state
    }

    /// Whether the machine reached Terminated.
    pub fn is_terminated(&self) -> bool {
        self.state == ServerInviteState::Terminated
    }

    fn terminate(&mut self) {
        self.state = ServerInviteState::Terminated;
        self.core.terminate();
    }
}

impl_machine!(ServerInvite, ServerInviteState);
