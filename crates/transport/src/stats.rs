//! Counters: atomics inside, a plain snapshot outside.

use std::sync::atomic::{AtomicU64, Ordering};

macro_rules! counters {
    ($( $(#[$doc:meta])* $name:ident ),* $(,)?) => {
        /// A snapshot of the transport counters, taken by
        /// [`Transports::stats`](crate::Transports::stats). All but
        /// `tcp_open_connections` only ever grow.
        #[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
        pub struct TransportStats {
            $( $(#[$doc])* pub $name: u64, )*
        }

        #[derive(Debug, Default)]
        pub(crate) struct Counters {
            $( pub(crate) $name: AtomicU64, )*
        }

        impl Counters {
            pub(crate) fn snapshot(&self) -> TransportStats {
                TransportStats {
                    $( $name: self.$name.load(Ordering::Relaxed), )*
                }
            }
        }
    };
}

counters! {
    /// Datagrams read from UDP sockets (every one: delivered, dropped, oversize or keepalive).
    udp_received,
    /// Datagrams handed to the kernel by `send`.
    udp_sent,
    /// Datagrams dropped because the inbound channel was full.
    udp_dropped_inbound_full,
    /// UDP sends that failed (including a full socket send buffer).
    udp_send_errors,
    /// UDP receive errors reported by the socket (the loop keeps going).
    udp_recv_errors,
    /// Datagrams longer than the listener's `max_message_bytes` (handed on cut, for a 513).
    oversize,
    /// TCP connections accepted and admitted on listeners.
    tcp_accepted,
    /// Outbound TCP connections established by `send`.
    tcp_connected,
    /// Outbound TCP connections that failed or timed out while connecting.
    tcp_connect_failures,
    /// Established TCP connections (inbound or outbound) that have closed.
    tcp_closed,
    /// Whole SIP messages read from TCP connections and delivered.
    tcp_messages_received,
    /// SIP messages written to TCP connections (pongs not included).
    tcp_messages_sent,
    /// TCP connections closed because their stream could not be framed (sum of the three below).
    tcp_framing_errors,
    /// ... of which: a message or unfinished head exceeded `max_message_bytes`.
    tcp_framing_too_large,
    /// ... of which: a message had no Content-Length.
    tcp_framing_missing_content_length,
    /// ... of which: Content-Length was not a number or appeared twice with different values.
    tcp_framing_bad_content_length,
    /// TCP connections refused because `max_connections` were open (inbound accepted-and-closed, outbound not opened).
    tcp_rejected_max_connections,
    /// Messages refused by `send` because the connection's queue was full.
    tcp_send_queue_full,
    /// TCP connections currently open or connecting (a gauge).
    tcp_open_connections,
    /// CRLF keepalives received: TCP pings and pongs, empty or all-CRLF UDP datagrams.
    keepalives,
}

pub(crate) fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}
