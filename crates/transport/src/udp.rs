//! UDP listeners: socket setup, the receive loop, and sends.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use palisade_sip::Transport;
use socket2::{Domain, Protocol, SockRef, Socket, Type};
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, watch};

use crate::stats::bump;
use crate::{ERROR_BACKOFF, Inner, ListenerId, ListenerSpec, Received, SendError, TransportError};
use crate::{bind_error, set_dscp};

/// The largest payload a UDP datagram can carry.
const MAX_UDP_PAYLOAD: usize = 65_535;

/// Creates, tunes and binds a UDP socket (non-blocking, ready for tokio).
pub(crate) fn bind(spec: &ListenerSpec) -> Result<std::net::UdpSocket, TransportError> {
    let addr = spec.bind;
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))
        .map_err(bind_error(spec, "create socket"))?;
    if addr.is_ipv6() {
        socket
            .set_only_v6(true)
            .map_err(bind_error(spec, "set IPV6_V6ONLY"))?;
    }
    socket
        .set_reuse_address(true)
        .map_err(bind_error(spec, "set SO_REUSEADDR"))?;
    socket
        .set_reuse_port(true)
        .map_err(bind_error(spec, "set SO_REUSEPORT"))?;
    if spec.recv_buffer_bytes > 0 {
        socket
            .set_recv_buffer_size(spec.recv_buffer_bytes)
            .map_err(bind_error(spec, "set SO_RCVBUF"))?;
        report_buffer(
            spec,
            "SO_RCVBUF",
            spec.recv_buffer_bytes,
            socket.recv_buffer_size(),
        );
    }
    if spec.send_buffer_bytes > 0 {
        socket
            .set_send_buffer_size(spec.send_buffer_bytes)
            .map_err(bind_error(spec, "set SO_SNDBUF"))?;
        report_buffer(
            spec,
            "SO_SNDBUF",
            spec.send_buffer_bytes,
            socket.send_buffer_size(),
        );
    }
    set_dscp(SockRef::from(&socket), addr.is_ipv4(), spec.dscp)
        .map_err(bind_error(spec, "set IP_TOS/IPV6_TCLASS"))?;
    socket
        .set_nonblocking(true)
        .map_err(bind_error(spec, "set O_NONBLOCK"))?;
    socket
        .bind(&addr.into())
        .map_err(bind_error(spec, "bind"))?;
    Ok(socket.into())
}

/// Linux grants at most `net.core.[rw]mem_max` (and reports twice what it
/// grants); say so when the kernel clamped the request.
pub(crate) fn report_buffer(
    spec: &ListenerSpec,
    option: &str,
    requested: usize,
    granted: io::Result<usize>,
) {
    match granted {
        Ok(granted) if granted < requested => tracing::warn!(
            listener = %spec.id, addr = %spec.bind, option, requested, granted,
            "kernel clamped the socket buffer; raise net.core.rmem_max/wmem_max to get more"
        ),
        Ok(granted) => {
            tracing::debug!(listener = %spec.id, option, requested, granted, "socket buffer")
        }
        Err(e) => {
            tracing::debug!(listener = %spec.id, option, error = %e, "cannot read socket buffer size")
        }
    }
}

/// Reads datagrams until shutdown and hands each to the inbound channel.
///
/// One `recv_from` per datagram for now. A batched path (`recvmmsg` through
/// quinn-udp, or one `SO_REUSEPORT` socket per worker) replaces only the read
/// in this loop and feeds each datagram to [`handle_datagram`], which holds all
/// the per-datagram policy.
pub(crate) async fn receive_loop(
    inner: Arc<Inner>,
    listener: ListenerId,
    socket: Arc<UdpSocket>,
    local: SocketAddr,
    max_message_bytes: usize,
    mut shutdown: watch::Receiver<bool>,
) {
    // One byte more than the cap: a datagram that fills it is oversize.
    let mut buf = vec![0u8; max_message_bytes.min(MAX_UDP_PAYLOAD) + 1];
    loop {
        let read = tokio::select! {
            biased;
            _ = shutdown.wait_for(|stop| *stop) => break,
            read = socket.recv_from(&mut buf) => read,
        };
        match read {
            Ok((len, remote)) => {
                let datagram = buf.get(..len).unwrap_or(&buf);
                let delivered =
                    handle_datagram(&inner, listener, local, remote, datagram, max_message_bytes);
                if !delivered {
                    tracing::warn!(%listener, "inbound channel closed; stopping UDP receive loop");
                    break;
                }
            }
            Err(e) => {
                bump(&inner.counters.udp_recv_errors);
                tracing::warn!(%listener, error = %e, "UDP receive error");
                tokio::select! {
                    biased;
                    _ = shutdown.wait_for(|stop| *stop) => break,
                    () = tokio::time::sleep(ERROR_BACKOFF) => {}
                }
            }
        }
    }
}

/// Counts and filters one datagram and offers it to the inbound channel.
/// Returns false when the channel is closed (nobody will ever read it).
fn handle_datagram(
    inner: &Inner,
    listener: ListenerId,
    local: SocketAddr,
    remote: SocketAddr,
    datagram: &[u8],
    max_message_bytes: usize,
) -> bool {
    let counters = &inner.counters;
    bump(&counters.udp_received);
    if datagram.len() > max_message_bytes {
        // Counted, and handed on as read (cut one byte past the cap): the
        // engine rejects it as too large and answers 513 when its head
        // names who to answer.
        bump(&counters.oversize);
        tracing::debug!(%listener, %remote, "oversize UDP datagram");
    }
    // Empty datagrams and bare CRLFs are NAT keepalives, not messages.
    if datagram.iter().all(|b| matches!(b, b'\r' | b'\n')) {
        bump(&counters.keepalives);
        return true;
    }
    let msg = Received {
        listener,
        transport: Transport::Udp,
        local,
        remote,
        data: Bytes::copy_from_slice(datagram),
    };
    match inner.inbound.try_send(msg) {
        Ok(()) => true,
        Err(mpsc::error::TrySendError::Full(_)) => {
            bump(&counters.udp_dropped_inbound_full);
            true
        }
        Err(mpsc::error::TrySendError::Closed(_)) => false,
    }
}

/// One non-blocking send on the listener's socket.
pub(crate) fn send(
    inner: &Inner,
    socket: &UdpSocket,
    remote: SocketAddr,
    data: &[u8],
) -> Result<(), SendError> {
    match socket.try_send_to(data, remote) {
        Ok(_) => {
            bump(&inner.counters.udp_sent);
            Ok(())
        }
        Err(e) => {
            bump(&inner.counters.udp_send_errors);
            if e.kind() == io::ErrorKind::WouldBlock {
                Err(SendError::UdpWouldBlock { remote })
            } else {
                Err(SendError::Udp { remote, source: e })
            }
        }
    }
}
