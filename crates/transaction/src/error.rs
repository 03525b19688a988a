//! The crate's one error type.

/// Errors returned by the transaction machines and helpers.
///
/// Grouped by who is at fault. Note what is *not* here: peer misbehaviour.
/// A stray, late, duplicated or out-of-range message from the network is
/// absorbed by the machines (the caller is told through a return value such
/// as [`crate::ResponseDisposition::Absorb`]), never reported as an error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    // ---- The caller (TU or engine) broke the API contract ----
    /// An operation was attempted on a terminated transaction.
    #[error("the transaction is terminated")]
    Terminated,
    /// The operation is not allowed in the machine's current state, e.g. a
    /// second final response from the TU, or `send_ack` before a 300-699.
    #[error("{action} is not allowed in the {state} state")]
    WrongState {
        /// What was attempted.
        action: &'static str,
        /// The state the machine was in.
        state: &'static str,
    },
    /// The TU tried to send a response whose status is not in 100..=699.
    #[error("status code {0} is not a SIP response status (100..=699)")]
    InvalidStatus(u16),
    /// `send_ack` was called twice for the same final response.
    #[error("an ACK was already supplied for this transaction")]
    AckAlreadySent,
    /// The transmit queue holds its maximum number of distinct messages; the
    /// caller must drain `poll_transmit` before queueing more.
    #[error("{0} messages are waiting to be sent; drain poll_transmit first")]
    TransmitQueueFull(usize),

    // ---- Configuration ----
    /// A [`crate::TimerConfig`] value is out of range (see
    /// [`crate::TimerConfig::validate`]).
    #[error("invalid timer configuration: {0}")]
    InvalidTimerConfig(&'static str),
}
