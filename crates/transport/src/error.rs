//! The crate's errors, grouped by who is at fault.

use std::io;
use std::net::SocketAddr;

use palisade_sip::Transport;

use crate::ListenerId;

/// Why [`Transports::start`](crate::Transports::start) failed.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    // --- Config: the listener specs or settings are wrong for this host. ---
    /// A listener socket could not be created, tuned or bound. Names the address.
    #[error("{transport} listener {id} on {addr}: {step}: {source}")]
    Bind {
        /// The listener that failed.
        id: ListenerId,
        /// Its transport.
        transport: Transport,
        /// The address it was to bind.
        addr: SocketAddr,
        /// What was being done (`bind`, `set SO_REUSEPORT`, ...).
        step: &'static str,
        /// The operating system's error.
        #[source]
        source: io::Error,
    },
    /// Two specs carry the same listener id.
    #[error("listener id {0} is used by more than one listener")]
    DuplicateListener(ListenerId),
    /// The transport is not one this crate serves (TLS lives elsewhere).
    #[error("listener {id} on {addr}: transport {transport} is not served by palisade-transport")]
    UnsupportedTransport {
        /// The listener.
        id: ListenerId,
        /// The transport asked for.
        transport: Transport,
        /// The address it was to bind.
        addr: SocketAddr,
    },
    /// A setting is out of range.
    #[error("invalid transport setting {setting}: {reason}")]
    InvalidSetting {
        /// Which setting (`dscp`, `tcp.per_connection_queue`, ...).
        setting: &'static str,
        /// Why it is refused.
        reason: &'static str,
    },

    // --- Internal: the process is not set up as this crate expects. ---
    /// `start` was not called inside a tokio runtime.
    #[error("palisade-transport needs a tokio runtime")]
    NoRuntime,
}

/// Why [`Transports::send`](crate::Transports::send) did not take a message.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    // --- Caller: the engine asked for something no listener provides. ---
    /// No listener has this id.
    #[error("no listener {0}")]
    UnknownListener(ListenerId),
    /// The listener serves another transport than the one asked for.
    #[error("listener {listener} is {actual}, not {requested}")]
    TransportMismatch {
        /// The listener.
        listener: ListenerId,
        /// The transport it serves.
        actual: Transport,
        /// The transport the message asked for.
        requested: Transport,
    },
    /// The remote address is IPv4 and the listener IPv6, or the other way round.
    #[error("listener {listener} on {local} cannot reach {remote}: address family differs")]
    AddressFamily {
        /// The listener.
        listener: ListenerId,
        /// Its local address.
        local: SocketAddr,
        /// The destination.
        remote: SocketAddr,
    },

    // --- Network / peer: the operating system refused the datagram. ---
    /// A UDP send failed for a reason other than a full socket buffer.
    #[error("udp send to {remote} failed: {source}")]
    Udp {
        /// The destination.
        remote: SocketAddr,
        /// The operating system's error.
        #[source]
        source: io::Error,
    },

    // --- Internal: a bounded resource is full or the transports are closed. ---
    /// The UDP socket's send buffer is full; the datagram was dropped.
    #[error("udp socket send buffer full: datagram to {remote} dropped")]
    UdpWouldBlock {
        /// The destination.
        remote: SocketAddr,
    },
    /// The TCP connection's bounded send queue is full; the message was dropped.
    #[error("tcp send queue to {remote} is full: message dropped")]
    QueueFull {
        /// The destination.
        remote: SocketAddr,
    },
    /// Opening a connection would exceed `TcpSettings::max_connections`.
    #[error("tcp connection limit ({limit}) reached: cannot connect to {remote}")]
    MaxConnections {
        /// The destination.
        remote: SocketAddr,
        /// The configured limit.
        limit: usize,
    },
    /// [`Transports::shutdown`](crate::Transports::shutdown) has run.
    #[error("transports are shut down")]
    Closed,
}
