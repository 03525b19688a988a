//! Non-INVITE server transaction: RFC 3261 17.2.2.

use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::common::{Core, Due, Event, StatusClass, impl_machine};
use crate::config::TimerConfig;
use crate::error::Error;

/// States of [`ServerNonInvite`] (RFC 3261 Figure 8).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ServerNonInviteState {
    /// The request was passed to the TU; nothing sent yet.
    Trying,
    /// A provisional response was sent.
    Proceeding,
    /// A final response was sent; Timer J absorbs request retransmissions.
    Completed,
    /// Done; drain the queues and drop the machine.
    Terminated,
}

impl ServerNonInviteState {
    /// The state's name as in the RFC figure.
    pub fn as_str(self) -> &'static str {
        match self {
            ServerNonInviteState::Trying => "Trying",
            ServerNonInviteState::Proceeding => "Proceeding",
            ServerNonInviteState::Completed => "Completed",
            ServerNonInviteState::Terminated => "Terminated",
        }
    }
}

/// The non-INVITE server transaction (also used for CANCEL).
///
/// Transition table: RFC 3261 Figure 8. Quoted arc labels are the figure's
/// "event / action"; `-` is "no action".
///
/// | state      | event (figure label)          | action (figure label)                  | next       |
/// |------------|-------------------------------|----------------------------------------|------------|
/// | -          | "Request received" ([`new`])  | "pass to TU"                           | Trying     |
/// | Trying     | request retransmission        | `-` (absorbed, RFC 3261 17.2.2)        | Trying     |
/// | Trying     | "1xx from TU"                 | "send response"                        | Proceeding |
/// | Trying     | "200-699 from TU"             | "send response"; start J               | Completed  |
/// | Proceeding | "1xx from TU"                 | "send response"                        | Proceeding |
/// | Proceeding | "Request"                     | "send response" (the last provisional) | Proceeding |
/// | Proceeding | "200-699 from TU"             | "send response"; start J               | Completed  |
/// | Proceeding | "Transport Err."              | "Inform TU": [`Event::TransportError`] | Terminated |
/// | Completed  | "Request"                     | "send response" (the final again)      | Completed  |
/// | Completed  | "Transport Err."              | "Inform TU": [`Event::TransportError`] | Terminated |
/// | Completed  | "Timer J fires"               | `-`                                    | Terminated |
///
/// Additions, not in the figure: a response from the TU in Completed (a
/// second final, RFC 3261 17.2.2 "MUST be discarded") returns
/// [`Error::WrongState`]; a transport error in Trying informs the TU and
/// terminates.
///
/// Timer J is 64*T1 on unreliable transports and zero on reliable ones
/// (RFC 3261 17.2.2). Trying and Proceeding have no timer: the TU must answer
/// (a B2BUA answers at the latest when its own client transaction's Timer F
/// fires, 64*T1 later).
///
/// [`new`]: ServerNonInvite::new
#[derive(Debug)]
pub struct ServerNonInvite {
    core: Core,
    state: ServerNonInviteState,
    last_response: Option<Bytes>,
}

impl ServerNonInvite {
    /// Starts the transaction in Trying for a request that was just passed
    /// to the TU.
    pub fn new(_now: Instant, cfg: &TimerConfig, reliable: bool) -> Self {
        ServerNonInvite {
            core: Core::new(cfg, reliable),
            state: ServerNonInviteState::Trying,
            last_response: None,
        }
    }

    /// A retransmission of the request arrived: absorbed in Trying, the last
    /// response is queued again in Proceeding and Completed.
    pub fn on_request_retransmit(&mut self, _now: Instant) {
        match self.state {
            ServerNonInviteState::Proceeding | ServerNonInviteState::Completed => {
                if let Some(msg) = &self.last_response {
                    self.core.resend(msg);
                }
            }
            ServerNonInviteState::Trying | ServerNonInviteState::Terminated => {}
        }
    }

    /// The TU sends `response` with status `status`: 1xx keeps the
    /// transaction in Proceeding, 200-699 moves it to Completed.
    pub fn send_response(
        &mut self,
        now: Instant,
        status: u16,
        response: Bytes,
    ) -> Result<(), Error> {
        use ServerNonInviteState as S;
        let class = StatusClass::of(status).ok_or(Error::InvalidStatus(status))?;
        match self.state {
            S::Trying | S::Proceeding => {}
            S::Terminated => return Err(Error::Terminated),
            S::Completed => {
                return Err(Error::WrongState {
                    action: "send_response",
                    state: S::Completed.as_str(),
                });
            }
        }
        self.core.send(response.clone())?;
        self.last_response = Some(response);
        if class == StatusClass::Provisional {
            self.state = S::Proceeding;
        } else {
            let j = if self.core.reliable {
                Duration::ZERO
            } else {
                self.core.timers.t1_x64()
            };
            self.core.start_end(now, j, false); // Timer J
            self.state = S::Completed;
        }
        Ok(())
    }

    /// The transport failed to send for this transaction (RFC 3261 17.2.4).
    pub fn on_transport_error(&mut self) {
        if self.state != ServerNonInviteState::Terminated {
            self.core.emit(Event::TransportError);
            self.terminate();
        }
    }

    /// Earliest pending timer deadline.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.core.poll_timeout()
    }

    /// Fires the timers due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.state == ServerNonInviteState::Terminated {
            return;
        }
        match self.core.due(now) {
            Due::End { timeout } => {
                if timeout {
                    self.core.emit(Event::Timeout);
                }
                self.terminate();
            }
            // This machine never arms a retransmission timer.
            Due::Retransmit(_) => self.core.stop_retx(),
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
    pub fn state(&self) -> ServerNonInviteState {
        self.state
    }

    /// Whether the machine reached Terminated.
    pub fn is_terminated(&self) -> bool {
        self.state == ServerNonInviteState::Terminated
    }

    fn terminate(&mut self) {
        self.state = ServerNonInviteState::Terminated;
        self.core.terminate();
    }
}

impl_machine!(ServerNonInvite, ServerNonInviteState);
