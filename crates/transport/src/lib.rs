//! Palisade's SIP transports: UDP and TCP listeners and connections on tokio.
//!
//! Owns: sockets and stream framing. [`Transports::start`] binds one listener
//! per zone and transport (socket2 tuning: `SO_REUSEADDR`/`SO_REUSEPORT`, socket
//! buffer sizes, DSCP), reads UDP datagrams and TCP streams, cuts streams into
//! whole messages with [`palisade_sip::framing::next_frame`], answers CRLF
//! keepalive pings, and hands every message to the caller as a [`Received`] on a
//! bounded channel. [`Transports::send`] writes an [`Outgoing`] message on the
//! listener's UDP socket, or on a TCP connection it reuses (the one a request
//! came in on, RFC 3261 section 18.2.2) or opens. What it drops, it counts in
//! [`TransportStats`].
//!
//! Does not own: SIP parsing, routing or policy. It never looks inside a message
//! beyond framing; what to send where is decided by the sans-IO engine
//! (`palisade-b2bua`), and the `palisade` binary glues the two together. TLS is
//! not served here.
//!
//! Why hand-written: this is thin glue between tokio, socket2 and the framing in
//! `palisade-sip`; no published crate offers SIP stream framing with per-peer
//! connection reuse, bounded queues and the counters an SBC needs.
//!
//! Time: the idle timeout is measured with tokio timers; nothing here reads the
//! wall clock.

mod error;
mod stats;
mod tcp;
mod udp;

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};
use std::time::Duration;

use bytes::Bytes;
use palisade_sip::Transport;
use tokio::sync::{mpsc, watch};

pub use error::{SendError, TransportError};
pub use stats::TransportStats;

use stats::{Counters, bump};

/// Identifies a listener. Assigned by the caller, one per zone and transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ListenerId(pub u16);

impl fmt::Display for ListenerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// One socket to listen on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenerSpec {
    /// The caller's id for this listener; must be unique.
    pub id: ListenerId,
    /// [`Transport::Udp`] or [`Transport::Tcp`].
    pub transport: Transport,
    /// Address to bind (port 0 picks a free port; see [`Transports::local_addr`]).
    pub bind: SocketAddr,
    /// Largest message accepted: longer UDP datagrams are counted (`oversize`)
    /// and delivered cut one byte past it (so the receiver sees they are too
    /// large and can still answer 513), longer TCP messages close the connection.
    pub max_message_bytes: usize,
    /// `SO_RCVBUF`; 0 keeps the kernel default. For TCP it is set on the
    /// listening socket before `listen()`, so accepted connections inherit it
    /// (a fixed size switches off Linux's autotuning for them; 0 keeps it).
    pub recv_buffer_bytes: usize,
    /// `SO_SNDBUF` for UDP sockets; 0 keeps the kernel default. Not applied to TCP.
    pub send_buffer_bytes: usize,
    /// DiffServ code point (0-63), written as `IP_TOS`/`IPV6_TCLASS` = `dscp << 2`.
    pub dscp: u8,
}

impl ListenerSpec {
    /// A spec with defaults: 65,535-byte messages, 4 MiB socket buffers, DSCP 0.
    pub fn new(id: ListenerId, transport: Transport, bind: SocketAddr) -> Self {
        ListenerSpec {
            id,
            transport,
            bind,
            max_message_bytes: 65_535,
            recv_buffer_bytes: 4 << 20,
            send_buffer_bytes: 4 << 20,
            dscp: 0,
        }
    }
}

/// Settings shared by all TCP listeners and connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcpSettings {
    /// A connection with no bytes read or written for this long is closed (it
    /// closes between one and two times this after the last activity).
    /// `Duration::ZERO` keeps idle connections open.
    pub idle_timeout: Duration,
    /// Cap on open TCP connections, inbound and outbound together.
    pub max_connections: usize,
    /// How long an outbound connect may take.
    pub connect_timeout: Duration,
    /// Messages queued per connection before `send` refuses with
    /// [`SendError::QueueFull`]. At least 1.
    pub per_connection_queue: usize,
}

impl Default for TcpSettings {
    /// 10 minutes idle, 4,096 connections, 5 s connect, 256 queued messages.
    fn default() -> Self {
        TcpSettings {
            idle_timeout: Duration::from_secs(600),
            max_connections: 4096,
            connect_timeout: Duration::from_secs(5),
            per_connection_queue: 256,
        }
    }
}

/// A message that arrived.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received {
    /// The listener it arrived on (for TCP: whose connection carried it).
    pub listener: ListenerId,
    /// Its transport.
    pub transport: Transport,
    /// The local address of the socket it arrived on. For a TCP connection this
    /// side opened, that is the listener's IP with an ephemeral port.
    pub local: SocketAddr,
    /// The packet's source address and port (what RFC 3581 `received`/`rport` record).
    pub remote: SocketAddr,
    /// One whole message (UDP: one datagram; TCP: one framed message).
    pub data: Bytes,
}

/// A message to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outgoing {
    /// The listener to send from.
    pub listener: ListenerId,
    /// Must match the listener's transport.
    pub transport: Transport,
    /// Destination address and port.
    pub remote: SocketAddr,
    /// The serialised message.
    pub data: Bytes,
}

/// Handle to the running transports. Cheap to clone.
///
/// Dropping every handle does not stop the listeners: call [`Transports::shutdown`].
#[derive(Clone)]
pub struct Transports {
    inner: Arc<Inner>,
}

impl fmt::Debug for Transports {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let listeners = read(&self.inner.listeners);
        let mut ids: Vec<_> = listeners.iter().map(|(id, l)| (*id, l.local())).collect();
        ids.sort();
        f.debug_struct("Transports")
            .field("listeners", &ids)
            .field("closed", &self.inner.closed.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

/// A bound listener, as `send` needs it.
#[derive(Debug)]
enum Listener {
    Udp {
        socket: Arc<tokio::net::UdpSocket>,
        local: SocketAddr,
    },
    Tcp {
        local: SocketAddr,
        max_message_bytes: usize,
        dscp: u8,
    },
}

impl Listener {
    fn local(&self) -> SocketAddr {
        match self {
            Listener::Udp { local, .. } | Listener::Tcp { local, .. } => *local,
        }
    }

    fn transport(&self) -> Transport {
        match self {
            Listener::Udp { .. } => Transport::Udp,
            Listener::Tcp { .. } => Transport::Tcp,
        }
    }
}

/// TCP connections are found by the listener they belong to and the peer's address.
type ConnKey = (ListenerId, SocketAddr);

#[derive(Debug)]
struct ConnEntry {
    /// Tells this connection from a later one to the same key.
    id: u64,
    tx: mpsc::Sender<Bytes>,
}

/// The TCP connection table. Every entry belongs to a live connection task
/// holding a [`ConnGuard`], whose drop removes it: the table cannot leak, and
/// `open` never exceeds `max_connections`.
#[derive(Debug, Default)]
struct ConnTable {
    closed: bool,
    next_id: u64,
    /// Connections open or connecting (entries may be fewer: a newer connection
    /// from the same peer address replaces an older one's entry).
    open: usize,
    map: HashMap<ConnKey, ConnEntry>,
}

/// Why a connection was not admitted.
enum Refused {
    Closed,
    Full,
}

#[derive(Debug)]
struct Inner {
    runtime: tokio::runtime::Handle,
    tcp: TcpSettings,
    inbound: mpsc::Sender<Received>,
    listeners: RwLock<HashMap<ListenerId, Listener>>,
    conns: Mutex<ConnTable>,
    closed: AtomicBool,
    counters: Counters,
    /// Flipped to `true` by `shutdown`; every task holds a receiver, so
    /// `Sender::closed` tells when they have all finished.
    shutdown: watch::Sender<bool>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn read<T>(l: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(PoisonError::into_inner)
}

fn write<T>(l: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(PoisonError::into_inner)
}

impl Inner {
    /// Admit a connection into the table under `key`, replacing any older entry.
    fn admit(
        self: &Arc<Self>,
        table: &mut ConnTable,
        key: ConnKey,
        tx: mpsc::Sender<Bytes>,
        established: bool,
    ) -> Result<ConnGuard, Refused> {
        if table.closed {
            return Err(Refused::Closed);
        }
        if table.open >= self.tcp.max_connections {
            bump(&self.counters.tcp_rejected_max_connections);
            return Err(Refused::Full);
        }
        table.open += 1;
        self.set_open_gauge(table);
        table.next_id += 1;
        let id = table.next_id;
        table.map.insert(key, ConnEntry { id, tx });
        Ok(ConnGuard {
            inner: Arc::clone(self),
            key,
            id,
            established,
        })
    }

    fn set_open_gauge(&self, table: &ConnTable) {
        self.counters
            .tcp_open_connections
            .store(table.open as u64, Ordering::Relaxed);
    }
}

/// Held by a connection task for its whole life; dropping it takes the
/// connection out of the table and releases its slot.
#[derive(Debug)]
struct ConnGuard {
    inner: Arc<Inner>,
    key: ConnKey,
    id: u64,
    /// Set once the TCP handshake is done (always for accepted connections).
    established: bool,
}

impl ConnGuard {
    /// Stop routing new sends to this connection (it is about to close).
    fn deregister(&self) {
        let mut table = lock(&self.inner.conns);
        if table.map.get(&self.key).is_some_and(|e| e.id == self.id) {
            table.map.remove(&self.key);
        }
    }
}

impl Drop for ConnGuard {
    fn drop(&mut self) {
        let removed = {
            let mut table = lock(&self.inner.conns);
            let removed = if table.map.get(&self.key).is_some_and(|e| e.id == self.id) {
                table.map.remove(&self.key)
            } else {
                None
            };
            table.open = table.open.saturating_sub(1);
            self.inner.set_open_gauge(&table);
            removed
        };
        drop(removed);
        if self.established {
            bump(&self.inner.counters.tcp_closed);
        } else {
            bump(&self.inner.counters.tcp_connect_failures);
        }
    }
}

/// A listener socket bound during `start`, before its task is spawned.
enum Bound {
    Udp(ListenerSpec, tokio::net::UdpSocket),
    Tcp(ListenerSpec, tokio::net::TcpListener),
}

fn validate(spec: &ListenerSpec) -> Result<(), TransportError> {
    if spec.dscp > 63 {
        return Err(TransportError::InvalidSetting {
            setting: "dscp",
            reason: "must be 0-63",
        });
    }
    if spec.max_message_bytes == 0 {
        return Err(TransportError::InvalidSetting {
            setting: "max_message_bytes",
            reason: "must be at least 1",
        });
    }
    Ok(())
}

fn bind_error(
    spec: &ListenerSpec,
    step: &'static str,
) -> impl FnOnce(std::io::Error) -> TransportError + use<> {
    let (id, transport, addr) = (spec.id, spec.transport, spec.bind);
    move |source| TransportError::Bind {
        id,
        transport,
        addr,
        step,
        source,
    }
}

impl Transports {
    /// Binds every listener (all or nothing: the error names the failing
    /// address) and spawns the receive tasks.
    ///
    /// Received messages go into `inbound`. When it is full, UDP datagrams are
    /// dropped and counted (`udp_dropped_inbound_full`) so the socket loop never
    /// stalls; TCP readers wait, which pushes back on the peer through TCP flow
    /// control. Must be called inside a tokio runtime (timers and I/O enabled).
    pub async fn start(
        specs: Vec<ListenerSpec>,
        tcp: TcpSettings,
        inbound: mpsc::Sender<Received>,
    ) -> Result<Self, TransportError> {
        let runtime =
            tokio::runtime::Handle::try_current().map_err(|_| TransportError::NoRuntime)?;
        if tcp.per_connection_queue == 0 {
            return Err(TransportError::InvalidSetting {
                setting: "tcp.per_connection_queue",
                reason: "must be at least 1",
            });
        }
        if tcp.connect_timeout.is_zero() {
            return Err(TransportError::InvalidSetting {
                setting: "tcp.connect_timeout",
                reason: "must be longer than zero",
            });
        }
        let mut ids = HashSet::new();
        let mut bound = Vec::with_capacity(specs.len());
        // Bind everything first; on any error the sockets bound so far drop here.
        for spec in specs {
            validate(&spec)?;
            if !ids.insert(spec.id) {
                return Err(TransportError::DuplicateListener(spec.id));
            }
            match spec.transport {
                Transport::Udp => {
                    let std_socket = udp::bind(&spec)?;
                    let socket = tokio::net::UdpSocket::from_std(std_socket)
                        .map_err(bind_error(&spec, "register with tokio"))?;
                    bound.push(Bound::Udp(spec, socket));
                }
                Transport::Tcp => {
                    let std_listener = tcp::bind(&spec)?;
                    let listener = tokio::net::TcpListener::from_std(std_listener)
                        .map_err(bind_error(&spec, "register with tokio"))?;
                    bound.push(Bound::Tcp(spec, listener));
                }
                other => {
                    return Err(TransportError::UnsupportedTransport {
                        id: spec.id,
                        transport: other,
                        addr: spec.bind,
                    });
                }
            }
        }

        let (shutdown, _) = watch::channel(false);
        let mut listeners = HashMap::new();
        let mut tasks = Vec::new();
        for b in bound {
            match b {
                Bound::Udp(spec, socket) => {
                    let local = socket
                        .local_addr()
                        .map_err(bind_error(&spec, "read local address"))?;
                    let socket = Arc::new(socket);
                    listeners.insert(
                        spec.id,
                        Listener::Udp {
                            socket: Arc::clone(&socket),
                            local,
                        },
                    );
                    tasks.push((spec, local, Task::Udp(socket)));
                }
                Bound::Tcp(spec, listener) => {
                    let local = listener
                        .local_addr()
                        .map_err(bind_error(&spec, "read local address"))?;
                    listeners.insert(
                        spec.id,
                        Listener::Tcp {
                            local,
                            max_message_bytes: spec.max_message_bytes,
                            dscp: spec.dscp,
                        },
                    );
                    tasks.push((spec, local, Task::Tcp(listener)));
                }
            }
        }

        let inner = Arc::new(Inner {
            runtime,
            tcp,
            inbound,
            listeners: RwLock::new(listeners),
            conns: Mutex::new(ConnTable::default()),
            closed: AtomicBool::new(false),
            counters: Counters::default(),
            shutdown,
        });
        for (spec, local, task) in tasks {
            tracing::info!(listener = %spec.id, transport = %spec.transport, %local, "listening");
            let stop = inner.shutdown.subscribe();
            match task {
                Task::Udp(socket) => {
                    inner.runtime.spawn(udp::receive_loop(
                        Arc::clone(&inner),
                        spec.id,
                        socket,
                        local,
                        spec.max_message_bytes,
                        stop,
                    ));
                }
                Task::Tcp(listener) => {
                    inner.runtime.spawn(tcp::accept_loop(
                        Arc::clone(&inner),
                        spec.id,
                        listener,
                        spec.max_message_bytes,
                        spec.dscp,
                        stop,
                    ));
                }
            }
        }
        Ok(Transports { inner })
    }

    /// Sends one message without waiting.
    ///
    /// UDP: one `try_send_to` on the listener's socket; a full socket buffer is
    /// counted and refused ([`SendError::UdpWouldBlock`]).
    ///
    /// TCP: queues the message on the connection to `remote` that belongs to
    /// this listener, whether the peer opened it (so responses leave on the
    /// connection the request came in on, RFC 3261 section 18.2.2) or this side
    /// did. Without one it opens a connection from the listener's IP (ephemeral
    /// port, `connect_timeout`) and queues the message for it; if the connect
    /// then fails, the queued messages are dropped and `tcp_connect_failures`
    /// counts it. A full queue is counted and refused ([`SendError::QueueFull`]).
    pub fn send(&self, out: Outgoing) -> Result<(), SendError> {
        let inner = &self.inner;
        if inner.closed.load(Ordering::Acquire) {
            return Err(SendError::Closed);
        }
        let listeners = read(&inner.listeners);
        let Some(listener) = listeners.get(&out.listener) else {
            return Err(if inner.closed.load(Ordering::Acquire) {
                SendError::Closed
            } else {
                SendError::UnknownListener(out.listener)
            });
        };
        if listener.transport() != out.transport {
            return Err(SendError::TransportMismatch {
                listener: out.listener,
                actual: listener.transport(),
                requested: out.transport,
            });
        }
        let local = listener.local();
        if local.is_ipv4() != out.remote.is_ipv4() {
            return Err(SendError::AddressFamily {
                listener: out.listener,
                local,
                remote: out.remote,
            });
        }
        match listener {
            Listener::Udp { socket, .. } => udp::send(inner, socket, out.remote, &out.data),
            Listener::Tcp {
                local,
                max_message_bytes,
                dscp,
            } => {
                let params = tcp::OutboundParams {
                    local_ip: local.ip(),
                    max_message_bytes: *max_message_bytes,
                    dscp: *dscp,
                };
                drop(listeners);
                tcp::send(inner, params, out.listener, out.remote, out.data)
            }
        }
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> TransportStats {
        self.inner.counters.snapshot()
    }

    /// The address a listener is bound to (with the port the kernel picked for
    /// port 0), or `None` for an unknown id or after shutdown.
    pub fn local_addr(&self, id: ListenerId) -> Option<SocketAddr> {
        read(&self.inner.listeners).get(&id).map(Listener::local)
    }

    /// Closes every listener and connection and waits until all of their tasks
    /// have finished. Messages still queued on TCP connections are dropped.
    /// Afterwards `send` on any clone of this handle returns [`SendError::Closed`].
    pub async fn shutdown(self) {
        let inner = self.inner;
        let entries = {
            let mut table = lock(&inner.conns);
            table.closed = true;
            inner.closed.store(true, Ordering::Release);
            std::mem::take(&mut table.map)
        };
        drop(entries);
        let listeners = std::mem::take(&mut *write(&inner.listeners));
        drop(listeners);
        inner.shutdown.send_replace(true);
        inner.shutdown.closed().await;
        tracing::info!("transports shut down");
    }
}

enum Task {
    Udp(Arc<tokio::net::UdpSocket>),
    Tcp(tokio::net::TcpListener),
}

/// `IP_TOS` / `IPV6_TCLASS` from a DSCP value.
fn set_dscp(socket: socket2::SockRef<'_>, ipv4: bool, dscp: u8) -> std::io::Result<()> {
    let tos = u32::from(dscp) << 2;
    if ipv4 {
        socket.set_tos_v4(tos)
    } else {
        socket.set_tclass_v6(tos)
    }
}

/// How long a receive or accept loop pauses after an unexpected socket error,
/// so a persistent error cannot spin a core.
const ERROR_BACKOFF: Duration = Duration::from_millis(10);
