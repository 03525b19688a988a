//! TCP listeners and connections: accept, connect, framing reader, queued writer.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use palisade_sip::Transport;
use palisade_sip::framing::{Frame, FramingError, next_frame};
use socket2::{Domain, Protocol, SockRef, Socket, Type};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::stats::bump;
use crate::{
    ConnGuard, ERROR_BACKOFF, Inner, ListenerId, ListenerSpec, Received, Refused, SendError,
    TransportError, bind_error, lock, set_dscp,
};

/// Pending connections the kernel queues for `accept`.
const LISTEN_BACKLOG: i32 = 1024;
/// Free space made in the read buffer before each read.
const READ_CHUNK: usize = 16 * 1024;
/// After the peer half-closes, how long queued writes may still drain.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);
/// The answer to a CRLF CRLF ping (RFC 5626 section 3.5.1).
const PONG: &[u8] = b"\r\n";

/// Creates, tunes, binds and starts listening on a TCP socket.
pub(crate) fn bind(spec: &ListenerSpec) -> Result<std::net::TcpListener, TransportError> {
    let addr = spec.bind;
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))
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
        crate::udp::report_buffer(
            spec,
            "SO_RCVBUF",
            spec.recv_buffer_bytes,
            socket.recv_buffer_size(),
        );
    }
    // Accepted sockets inherit these on Linux; they are set again after accept anyway.
    socket
        .set_tcp_nodelay(true)
        .map_err(bind_error(spec, "set TCP_NODELAY"))?;
    set_dscp(SockRef::from(&socket), addr.is_ipv4(), spec.dscp)
        .map_err(bind_error(spec, "set IP_TOS/IPV6_TCLASS"))?;
    socket
        .set_nonblocking(true)
        .map_err(bind_error(spec, "set O_NONBLOCK"))?;
    socket
        .bind(&addr.into())
        .map_err(bind_error(spec, "bind"))?;
    socket
        .listen(LISTEN_BACKLOG)
        .map_err(bind_error(spec, "listen"))?;
    Ok(socket.into())
}

/// Per-socket options for a connection, accepted or connected.
fn tune(stream: &TcpStream, ipv4: bool, dscp: u8) {
    if let Err(e) = stream.set_nodelay(true) {
        tracing::debug!(error = %e, "cannot set TCP_NODELAY");
    }
    if let Err(e) = set_dscp(SockRef::from(stream), ipv4, dscp) {
        tracing::debug!(error = %e, "cannot set DSCP");
    }
}

/// Accepts connections until shutdown. Beyond `max_connections` a connection
/// is accepted and closed at once, so it does not sit in the backlog.
pub(crate) async fn accept_loop(
    inner: Arc<Inner>,
    listener_id: ListenerId,
    listener: TcpListener,
    max_message_bytes: usize,
    dscp: u8,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let accepted = tokio::select! {
            biased;
            _ = shutdown.wait_for(|stop| *stop) => break,
            accepted = listener.accept() => accepted,
        };
        let (stream, remote) = match accepted {
            Ok(pair) => pair,
            Err(e) => {
                // EMFILE and friends: back off instead of spinning.
                tracing::warn!(listener = %listener_id, error = %e, "TCP accept error");
                tokio::select! {
                    biased;
                    _ = shutdown.wait_for(|stop| *stop) => break,
                    () = tokio::time::sleep(ERROR_BACKOFF) => {}
                }
                continue;
            }
        };
        let (tx, rx) = mpsc::channel(inner.tcp.per_connection_queue);
        let admitted = {
            let mut table = lock(&inner.conns);
            inner.admit(&mut table, (listener_id, remote), tx.clone(), true)
        };
        let guard = match admitted {
            Ok(guard) => guard,
            Err(Refused::Full) => {
                tracing::debug!(listener = %listener_id, %remote, "TCP connection limit reached; closing");
                drop(stream);
                continue;
            }
            Err(Refused::Closed) => break,
        };
        bump(&inner.counters.tcp_accepted);
        tune(&stream, remote.is_ipv4(), dscp);
        let conn = Connection {
            inner: Arc::clone(&inner),
            listener: listener_id,
            remote,
            max_message_bytes,
            tx,
            shutdown: shutdown.clone(),
        };
        inner.runtime.spawn(conn.run(stream, rx, guard));
    }
}

/// What `send` needs to open a connection for a TCP listener.
#[derive(Debug, Clone, Copy)]
pub(crate) struct OutboundParams {
    pub(crate) local_ip: IpAddr,
    pub(crate) max_message_bytes: usize,
    pub(crate) dscp: u8,
}

/// Queues `data` on the connection to `remote` for this listener, opening one if needed.
pub(crate) fn send(
    inner: &Arc<Inner>,
    params: OutboundParams,
    listener: ListenerId,
    remote: SocketAddr,
    data: Bytes,
) -> Result<(), SendError> {
    let key = (listener, remote);
    let mut table = lock(&inner.conns);
    let data = match table.map.get(&key) {
        Some(entry) => match entry.tx.try_send(data) {
            Ok(()) => return Ok(()),
            Err(mpsc::error::TrySendError::Full(_)) => {
                bump(&inner.counters.tcp_send_queue_full);
                return Err(SendError::QueueFull { remote });
            }
            // The connection is closing; open a fresh one.
            Err(mpsc::error::TrySendError::Closed(data)) => {
                table.map.remove(&key);
                data
            }
        },
        None => data,
    };
    let (tx, rx) = mpsc::channel(inner.tcp.per_connection_queue);
    let guard = match inner.admit(&mut table, key, tx.clone(), false) {
        Ok(guard) => guard,
        Err(Refused::Closed) => return Err(SendError::Closed),
        Err(Refused::Full) => {
            return Err(SendError::MaxConnections {
                remote,
                limit: inner.tcp.max_connections,
            });
        }
    };
    drop(table);
    // The queue is new and holds at least one message, so this cannot fail.
    if tx.try_send(data).is_err() {
        bump(&inner.counters.tcp_send_queue_full);
        return Err(SendError::QueueFull { remote });
    }
    let conn = Connection {
        inner: Arc::clone(inner),
        listener,
        remote,
        max_message_bytes: params.max_message_bytes,
        tx,
        shutdown: inner.shutdown.subscribe(),
    };
    inner
        .runtime
        .spawn(conn.connect_and_run(params.local_ip, params.dscp, rx, guard));
    Ok(())
}

/// Opens a TCP connection from `local_ip` (ephemeral port) to `remote`.
async fn connect(local_ip: IpAddr, remote: SocketAddr, dscp: u8) -> io::Result<TcpStream> {
    let socket = Socket::new(
        Domain::for_address(remote),
        Type::STREAM,
        Some(Protocol::TCP),
    )?;
    socket.set_nonblocking(true)?;
    socket.set_tcp_nodelay(true)?;
    set_dscp(SockRef::from(&socket), remote.is_ipv4(), dscp)?;
    if !local_ip.is_unspecified() {
        socket.bind(&SocketAddr::new(local_ip, 0).into())?;
    }
    let std_stream: std::net::TcpStream = socket.into();
    TcpSocket::from_std_stream(std_stream).connect(remote).await
}

/// Why a connection ended.
#[derive(Debug)]
enum Close {
    Shutdown,
    PeerClosed,
    Idle,
    ReadError(io::Error),
    Framing(FramingError),
    WriterDone,
    InboundClosed,
}

impl std::fmt::Display for Close {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Close::Shutdown => f.write_str("shutdown"),
            Close::PeerClosed => f.write_str("peer closed"),
            Close::Idle => f.write_str("idle timeout"),
            Close::ReadError(e) => write!(f, "read error: {e}"),
            Close::Framing(e) => write!(f, "framing error: {e}"),
            Close::WriterDone => f.write_str("writer ended"),
            Close::InboundClosed => f.write_str("inbound channel closed"),
        }
    }
}

/// One TCP connection's context, shared by its reader and writer.
struct Connection {
    inner: Arc<Inner>,
    listener: ListenerId,
    remote: SocketAddr,
    max_message_bytes: usize,
    /// For pongs; `send` uses the table's copy.
    tx: mpsc::Sender<Bytes>,
    shutdown: watch::Receiver<bool>,
}

impl Connection {
    async fn connect_and_run(
        mut self,
        local_ip: IpAddr,
        dscp: u8,
        rx: mpsc::Receiver<Bytes>,
        mut guard: ConnGuard,
    ) {
        let timeout = self.inner.tcp.connect_timeout;
        let connected = tokio::select! {
            biased;
            _ = self.shutdown.wait_for(|stop| *stop) => return,
            c = tokio::time::timeout(timeout, connect(local_ip, self.remote, dscp)) => c,
        };
        let stream = match connected {
            Ok(Ok(stream)) => stream,
            Ok(Err(e)) => {
                tracing::debug!(listener = %self.listener, remote = %self.remote, error = %e, "TCP connect failed");
                return;
            }
            Err(_) => {
                tracing::debug!(listener = %self.listener, remote = %self.remote, "TCP connect timed out");
                return;
            }
        };
        guard.established = true;
        bump(&self.inner.counters.tcp_connected);
        self.run(stream, rx, guard).await;
    }

    /// Runs the reader here and the writer as its own task until either ends.
    async fn run(mut self, stream: TcpStream, rx: mpsc::Receiver<Bytes>, guard: ConnGuard) {
        let local = match stream.local_addr() {
            Ok(local) => local,
            Err(e) => {
                tracing::debug!(remote = %self.remote, error = %e, "connection gone before it started");
                return;
            }
        };
        let activity = Arc::new(AtomicU64::new(0));
        let (reader, writer) = stream.into_split();
        let mut writer = self.inner.runtime.spawn(write_loop(
            Arc::clone(&self.inner),
            writer,
            rx,
            Arc::clone(&activity),
            self.shutdown.clone(),
        ));
        let why = self.read_loop(reader, local, &activity, &mut writer).await;
        tracing::debug!(listener = %self.listener, remote = %self.remote, reason = %why, "TCP connection closing");
        match why {
            Close::WriterDone => {}
            Close::PeerClosed => {
                // The peer may still read: let what is queued drain, then close.
                guard.deregister();
                drop(self.tx);
                tokio::select! {
                    biased;
                    _ = self.shutdown.wait_for(|stop| *stop) => writer.abort(),
                    _ = &mut writer => {}
                    () = tokio::time::sleep(DRAIN_TIMEOUT) => writer.abort(),
                }
            }
            _ => writer.abort(),
        }
        drop(guard);
    }

    async fn read_loop(
        &mut self,
        mut reader: OwnedReadHalf,
        local: SocketAddr,
        activity: &AtomicU64,
        writer: &mut JoinHandle<()>,
    ) -> Close {
        let idle = self.inner.tcp.idle_timeout;
        let mut buf = BytesMut::with_capacity(READ_CHUNK);
        loop {
            // Deliver everything already buffered.
            loop {
                match next_frame(&buf, self.max_message_bytes) {
                    Ok(Frame::Message(len)) => {
                        let msg = Received {
                            listener: self.listener,
                            transport: Transport::Tcp,
                            local,
                            remote: self.remote,
                            data: buf.split_to(len).freeze(),
                        };
                        bump(&self.inner.counters.tcp_messages_received);
                        // Backpressure: while the engine is behind, stop reading.
                        tokio::select! {
                            biased;
                            _ = self.shutdown.wait_for(|stop| *stop) => return Close::Shutdown,
                            sent = self.inner.inbound.send(msg) => {
                                if sent.is_err() {
                                    return Close::InboundClosed;
                                }
                            }
                        }
                    }
                    Ok(Frame::Ping(len)) => {
                        buf.advance(len);
                        bump(&self.inner.counters.keepalives);
                        // A full queue has replies on the way; those keep the path alive too.
                        let _ = self.tx.try_send(Bytes::from_static(PONG));
                    }
                    Ok(Frame::Pong(len)) => {
                        buf.advance(len);
                        bump(&self.inner.counters.keepalives);
                    }
                    Ok(Frame::Incomplete) => break,
                    Err(e) => {
                        self.count_framing_error(e);
                        return Close::Framing(e);
                    }
                }
            }
            buf.reserve(READ_CHUNK);
            let seen = activity.load(Ordering::Relaxed);
            tokio::select! {
                biased;
                _ = self.shutdown.wait_for(|stop| *stop) => return Close::Shutdown,
                _ = &mut *writer => return Close::WriterDone,
                read = reader.read_buf(&mut buf) => match read {
                    Ok(0) => return Close::PeerClosed,
                    Ok(_) => {
                        activity.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => return Close::ReadError(e),
                },
                () = tokio::time::sleep(idle), if !idle.is_zero() => {
                    if activity.load(Ordering::Relaxed) == seen {
                        return Close::Idle;
                    }
                }
            }
        }
    }

    fn count_framing_error(&self, e: FramingError) {
        let c = &self.inner.counters;
        bump(&c.tcp_framing_errors);
        bump(match e {
            FramingError::TooLarge { .. } => &c.tcp_framing_too_large,
            FramingError::MissingContentLength => &c.tcp_framing_missing_content_length,
            FramingError::BadContentLength { .. } => &c.tcp_framing_bad_content_length,
        });
        tracing::debug!(listener = %self.listener, remote = %self.remote, error = %e, "TCP framing error; closing");
    }
}

/// Drains the connection's queue onto the socket. Ends when every sender is
/// gone (then half-closes the socket), on a write error, or at shutdown.
async fn write_loop(
    inner: Arc<Inner>,
    mut writer: OwnedWriteHalf,
    mut rx: mpsc::Receiver<Bytes>,
    activity: Arc<AtomicU64>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let data = tokio::select! {
            biased;
            _ = shutdown.wait_for(|stop| *stop) => return,
            data = rx.recv() => match data {
                Some(data) => data,
                None => break,
            },
        };
        let written = tokio::select! {
            biased;
            _ = shutdown.wait_for(|stop| *stop) => return,
            written = writer.write_all(&data) => written,
        };
        if let Err(e) = written {
            tracing::debug!(error = %e, "TCP write failed");
            return;
        }
        activity.fetch_add(1, Ordering::Relaxed);
        if data.as_ref() != PONG {
            bump(&inner.counters.tcp_messages_sent);
        }
    }
    let _ = writer.shutdown().await;
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::ListenerId;

    /// The listening socket gets SO_REUSEPORT and the requested receive
    /// buffer (Linux reports twice what it grants; it may clamp to rmem_max),
    /// and a second socket can share the port, as with UDP.
    #[test]
    fn listener_sets_reuseport_and_receive_buffer() {
        let mut spec = ListenerSpec::new(
            ListenerId(1),
            Transport::Tcp,
            "127.0.0.1:0".parse().unwrap(),
        );
        spec.recv_buffer_bytes = 256 * 1024;
        let l = bind(&spec).unwrap();
        let sock = SockRef::from(&l);
        assert!(sock.reuse_port().unwrap());
        let granted = sock.recv_buffer_size().unwrap();
        let default = {
            let mut plain = spec.clone();
            plain.recv_buffer_bytes = 0;
            plain.bind = "127.0.0.1:0".parse().unwrap();
            let p = bind(&plain).unwrap();
            SockRef::from(&p).recv_buffer_size().unwrap()
        };
        assert_ne!(granted, default, "SO_RCVBUF was not applied");
        let rmem_max: usize = std::fs::read_to_string("/proc/sys/net/core/rmem_max")
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        assert_eq!(granted, 2 * (256 * 1024).min(rmem_max));
        spec.bind = l.local_addr().unwrap();
        let again = bind(&spec).unwrap();
        assert_eq!(again.local_addr().unwrap(), spec.bind);
    }
}
