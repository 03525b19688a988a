//! Non-INVITE client transaction: RFC 3261 17.1.2.

use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::common::{Core, Due, Event, ResponseDisposition, StatusClass, impl_machine};
use crate::config::TimerConfig;

/// States of [`ClientNonInvite`] (RFC 3261 Figure 6).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ClientNonInviteState {
    /// The request was sent; no response yet. Timers E (unreliable) and F run.
    Trying,
    /// A provisional response arrived; E continues at T2, F still runs.
    Proceeding,
    /// A final response arrived; Timer K absorbs its retransmissions.
    Completed,
    /// Done; drain the queues and drop the machine.
    Terminated,
}

impl ClientNonInviteState {
    /// The state's name as in the RFC figure.
    pub fn as_str(self) -> &'static str {
        match self {
            ClientNonInviteState::Trying => "Trying",
            ClientNonInviteState::Proceeding => "Proceeding",
            ClientNonInviteState::Completed => "Completed",
            ClientNonInviteState::Terminated => "Terminated",
        }
    }
}

/// The non-INVITE client transaction (also used for CANCEL, RFC 3261 9.1).
///
/// Transition table: RFC 3261 Figure 6. Quoted arc labels are the figure's
/// "event / action"; `-` is "no action".
///
/// | state      | event (figure label)         | action (figure label)                               | next       |
/// |------------|------------------------------|-----------------------------------------------------|------------|
/// | -          | "Request from TU" ([`new`])  | "send request"; start E (unreliable), F             | Trying     |
/// | Trying     | "Timer E fires"              | "send request"; E = MIN(2*E, T2)                    | Trying     |
/// | Trying     | "Timer F fires"              | "inform TU": [`Event::Timeout`]                     | Terminated |
/// | Trying     | "Transport Err."             | "Inform TU": [`Event::TransportError`]              | Terminated |
/// | Trying     | "1xx"                        | "resp. to TU": [`PassToTu`]                         | Proceeding |
/// | Trying     | "200-699"                    | "resp. to TU": [`PassToTu`]; start K                | Completed  |
/// | Proceeding | "Timer E fires"              | "send request"; E = T2                              | Proceeding |
/// | Proceeding | "1xx"                        | "resp. to TU": [`PassToTu`]                         | Proceeding |
/// | Proceeding | "200-699"                    | "resp. to TU": [`PassToTu`]; start K                | Completed  |
/// | Proceeding | "Timer F fires"              | "inform TU": [`Event::Timeout`]                     | Terminated |
/// | Proceeding | "Transport Err."             | "inform TU": [`Event::TransportError`]              | Terminated |
/// | Completed  | "Timer K fires"              | `-`                                                 | Terminated |
///
/// Additions, not in the figure: in Completed every response (final
/// retransmissions, late 1xx) is [`Absorb`]ed, as is anything with a status
/// outside 100..=699 and anything once Terminated; a transport error in
/// Completed informs the TU and terminates.
///
/// Timer E starts at T1 and doubles up to T2 (over UDP with the defaults the
/// request goes out at 0, 0.5, 1.5, 3.5, 7.5, 11.5, ... 31.5 s and Timer F
/// ends it at 32 s). Reliable transports (RFC 3261 17.1.2.2): no Timer E,
/// Timer K = 0. The machine always terminates within 64*T1 of its creation
/// or T4 of the final response, whichever comes first.
///
/// [`new`]: ClientNonInvite::new
/// [`PassToTu`]: ResponseDisposition::PassToTu
/// [`Absorb`]: ResponseDisposition::Absorb
#[derive(Debug)]
pub struct ClientNonInvite {
    core: Core,
    state: ClientNonInviteState,
    request: Bytes,
}

impl ClientNonInvite {
    /// Starts the transaction in Trying and queues `request` for transmission.
    pub fn new(now: Instant, cfg: &TimerConfig, reliable: bool, request: Bytes) -> Self {
        let mut core = Core::new(cfg, reliable);
        core.resend(&request);
        let t1 = core.timers.t1;
        core.start_retx(now, t1); // Timer E
        core.start_end(now, core.timers.t1_x64(), true); // Timer F
        ClientNonInvite {
            core,
            state: ClientNonInviteState::Trying,
            request,
        }
    }

    /// A response with `status` arrived for this transaction.
    pub fn on_response(&mut self, now: Instant, status: u16) -> ResponseDisposition {
        use ClientNonInviteState as S;
        let Some(class) = StatusClass::of(status) else {
            return ResponseDisposition::Absorb;
        };
        match (self.state, class) {
            (S::Trying | S::Proceeding, StatusClass::Provisional) => {
                self.state = S::Proceeding;
                ResponseDisposition::PassToTu
            }
            (S::Trying | S::Proceeding, StatusClass::Success | StatusClass::Failure) => {
                self.core.stop_timers();
                let k = if self.core.reliable {
                    Duration::ZERO
                } else {
                    self.core.timers.t4
                };
                self.core.start_end(now, k, false); // Timer K
                self.state = S::Completed;
                ResponseDisposition::PassToTu
            }
            _ => ResponseDisposition::Absorb,
        }
    }

    /// The transport failed to send for this transaction (RFC 3261 17.1.4).
    pub fn on_transport_error(&mut self) {
        if self.state != ClientNonInviteState::Terminated {
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
        if self.state == ClientNonInviteState::Terminated {
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
                self.core.resend(&self.request);
                let t2 = self.core.timers.t2;
                let next = if self.state == ClientNonInviteState::Proceeding {
                    t2
                } else {
                    fired.interval.saturating_mul(2).min(t2)
                };
                self.core.rearm_retx(fired, next, now);
            }
            Due::Nothing => {}
        }
    }

    /// Next message to put on the wire (the request and its retransmissions).
    pub fn poll_transmit(&mut self) -> Option<Bytes> {
        self.core.poll_transmit()
    }

    /// Next event for the TU.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.core.poll_event()
    }

    /// Current state.
    pub fn state(&self) -> ClientNonInviteState {
        self.state
    }

    /// Whether the machine reached Terminated.
    pub fn is_terminated(&self) -> bool {
        self.state == ClientNonInviteState::Terminated
    }

    fn terminate(&mut self) {
        self.state = ClientNonInviteState::Terminated;
        self.core.terminate();
    }
}

impl_machine!(ClientNonInvite, ClientNonInviteState);
