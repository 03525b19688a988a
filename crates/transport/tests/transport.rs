//! Loopback tests of the UDP and TCP transports.

// Tests may unwrap (the codebase rule); the helpers below are not `#[test]` fns.
#![allow(clippy::unwrap_used)]

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use bytes::Bytes;
use palisade_sip::Transport;
use palisade_transport::{
    ListenerId, ListenerSpec, Outgoing, Received, SendError, TcpSettings, TransportError,
    TransportStats, Transports,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::mpsc;
use tokio::time::timeout;

const WAIT: Duration = Duration::from_secs(5);
const UDP: ListenerId = ListenerId(1);
const TCP: ListenerId = ListenerId(2);

fn lo(last: u8, port: u16) -> SocketAddr {
    SocketAddr::new(IpAddr::V4(Ipv4Addr::new(127, 0, 0, last)), port)
}

fn spec(id: ListenerId, transport: Transport, bind: SocketAddr) -> ListenerSpec {
    ListenerSpec {
        recv_buffer_bytes: 1 << 20,
        send_buffer_bytes: 1 << 20,
        dscp: 46,
        ..ListenerSpec::new(id, transport, bind)
    }
}

fn tcp_settings() -> TcpSettings {
    TcpSettings {
        idle_timeout: Duration::from_secs(60),
        max_connections: 16,
        connect_timeout: Duration::from_secs(2),
        per_connection_queue: 8,
    }
}

/// A SIP-shaped message with a correct Content-Length.
fn sip(tag: &str) -> Vec<u8> {
    let body = format!("body-{tag}");
    format!(
        "OPTIONS sip:{tag}@example.test SIP/2.0\r\nVia: SIP/2.0/TCP x;branch=z9hG4bK{tag}\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

async fn start(
    specs: Vec<ListenerSpec>,
    tcp: TcpSettings,
    inbound_capacity: usize,
) -> (Transports, mpsc::Receiver<Received>) {
    let (tx, rx) = mpsc::channel(inbound_capacity);
    let t = Transports::start(specs, tcp, tx).await.unwrap();
    (t, rx)
}

async fn next(rx: &mut mpsc::Receiver<Received>) -> Received {
    timeout(WAIT, rx.recv())
        .await
        .expect("timed out waiting for a message")
        .unwrap()
}

/// Nothing more arrives within a short while.
async fn assert_quiet(rx: &mut mpsc::Receiver<Received>) {
    if let Ok(Some(r)) = timeout(Duration::from_millis(200), rx.recv()).await {
        panic!("unexpected message: {r:?}");
    }
}

/// Polls the counters until `cond` holds; panics with the last snapshot if it never does.
async fn eventually(t: &Transports, cond: impl Fn(&TransportStats) -> bool) -> TransportStats {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let s = t.stats();
        if cond(&s) {
            return s;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "condition never held: {s:#?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Reads until the peer closes; panics if it stays open.
async fn assert_closed_by_peer(stream: &mut TcpStream) {
    let mut buf = [0u8; 1024];
    loop {
        match timeout(WAIT, stream.read(&mut buf)).await {
            Err(_) => panic!("connection was not closed"),
            Ok(Ok(0)) | Ok(Err(_)) => return,
            Ok(Ok(_)) => continue,
        }
    }
}

async fn read_exact(stream: &mut TcpStream, n: usize) -> Vec<u8> {
    let mut buf = vec![0u8; n];
    timeout(WAIT, stream.read_exact(&mut buf))
        .await
        .unwrap()
        .unwrap();
    buf
}

// ---------------------------------------------------------------- UDP

#[tokio::test]
async fn udp_receives_and_sends_back() {
    let (t, mut rx) = start(
        vec![spec(UDP, Transport::Udp, lo(1, 0))],
        tcp_settings(),
        16,
    )
    .await;
    let local = t.local_addr(UDP).unwrap();
    assert_ne!(local.port(), 0);
    let peer = UdpSocket::bind(lo(1, 0)).await.unwrap();
    let msg = sip("u1");
    peer.send_to(&msg, local).await.unwrap();

    let r = next(&mut rx).await;
    assert_eq!(r.listener, UDP);
    assert_eq!(r.transport, Transport::Udp);
    assert_eq!(r.local, local);
    assert_eq!(r.remote, peer.local_addr().unwrap());
    assert_eq!(r.data, Bytes::from(msg));

    let reply = Bytes::from(sip("reply"));
    t.send(Outgoing {
        listener: UDP,
        transport: Transport::Udp,
        remote: r.remote,
        data: reply.clone(),
    })
    .unwrap();
    let mut buf = [0u8; 2048];
    let (n, from) = timeout(WAIT, peer.recv_from(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&buf[..n], &reply[..]);
    assert_eq!(from, local);

    let s = t.stats();
    assert_eq!((s.udp_received, s.udp_sent, s.udp_send_errors), (1, 1, 0));
    t.shutdown().await;
}

#[tokio::test]
async fn udp_cuts_oversize_and_ignores_keepalives() {
    let mut sp = spec(UDP, Transport::Udp, lo(1, 0));
    sp.max_message_bytes = 100;
    let (t, mut rx) = start(vec![sp], tcp_settings(), 16).await;
    let local = t.local_addr(UDP).unwrap();
    let peer = UdpSocket::bind(lo(1, 0)).await.unwrap();

    peer.send_to(&[b'x'; 101], local).await.unwrap(); // one byte over: oversize
    peer.send_to(b"", local).await.unwrap(); // keepalive
    peer.send_to(b"\r\n\r\n", local).await.unwrap(); // keepalive
    peer.send_to(&[b'y'; 100], local).await.unwrap(); // exactly the cap: delivered
    peer.send_to(&[b'z'; 3000], local).await.unwrap(); // far over: cut at the cap + 1

    let r = next(&mut rx).await;
    assert_eq!(
        r.data,
        Bytes::from(vec![b'x'; 101]),
        "oversize: delivered as read"
    );
    let r = next(&mut rx).await;
    assert_eq!(r.data, Bytes::from(vec![b'y'; 100]));
    let r = next(&mut rx).await;
    assert_eq!(
        r.data,
        Bytes::from(vec![b'z'; 101]),
        "cut one byte past the cap"
    );
    let s = eventually(&t, |s| s.udp_received == 5).await;
    assert_eq!(
        (s.oversize, s.keepalives, s.udp_dropped_inbound_full),
        (2, 2, 0)
    );
    assert_quiet(&mut rx).await;
    t.shutdown().await;
}

#[tokio::test]
async fn udp_full_inbound_channel_drops_and_keeps_reading() {
    let (t, mut rx) = start(vec![spec(UDP, Transport::Udp, lo(1, 0))], tcp_settings(), 1).await;
    let local = t.local_addr(UDP).unwrap();
    let peer = UdpSocket::bind(lo(1, 0)).await.unwrap();
    for i in 0..5 {
        peer.send_to(&sip(&format!("m{i}")), local).await.unwrap();
    }
    let s = eventually(&t, |s| s.udp_received == 5).await;
    assert_eq!(s.udp_dropped_inbound_full, 4);
    assert_eq!(next(&mut rx).await.data, Bytes::from(sip("m0")));

    // The loop is still running: the next datagram gets through.
    peer.send_to(&sip("after"), local).await.unwrap();
    assert_eq!(next(&mut rx).await.data, Bytes::from(sip("after")));
    assert_eq!(t.stats().udp_dropped_inbound_full, 4);
    t.shutdown().await;
}

// ---------------------------------------------------------------- TCP inbound

#[tokio::test]
async fn tcp_inbound_frames_pongs_and_answers_on_same_connection() {
    let (t, mut rx) = start(
        vec![spec(TCP, Transport::Tcp, lo(1, 0))],
        tcp_settings(),
        16,
    )
    .await;
    let local = t.local_addr(TCP).unwrap();
    let mut client = TcpStream::connect(local).await.unwrap();
    let (m1, m2, m3) = (sip("one"), sip("two"), sip("three"));

    // Two messages in one write.
    client
        .write_all(&[m1.clone(), m2.clone()].concat())
        .await
        .unwrap();
    // A ping, then one message split across three writes.
    client.write_all(b"\r\n\r\n").await.unwrap();
    for part in [&m3[..10], &m3[10..40], &m3[40..]] {
        client.write_all(part).await.unwrap();
        client.flush().await.unwrap();
        tokio::time::sleep(Duration::from_millis(30)).await;
    }

    let client_addr = client.local_addr().unwrap();
    for expected in [&m1, &m2, &m3] {
        let r = next(&mut rx).await;
        assert_eq!(r.data, Bytes::from(expected.clone()));
        assert_eq!((r.listener, r.transport), (TCP, Transport::Tcp));
        assert_eq!((r.local, r.remote), (local, client_addr));
    }
    assert_quiet(&mut rx).await;
    // The ping was answered with a single CRLF.
    assert_eq!(read_exact(&mut client, 2).await, b"\r\n");

    // A response to the client's address leaves on the same connection.
    let resp = sip("response");
    t.send(Outgoing {
        listener: TCP,
        transport: Transport::Tcp,
        remote: client_addr,
        data: Bytes::from(resp.clone()),
    })
    .unwrap();
    assert_eq!(read_exact(&mut client, resp.len()).await, resp);

    let s = eventually(&t, |s| s.tcp_messages_sent == 1).await;
    assert_eq!(s.tcp_accepted, 1);
    assert_eq!(s.tcp_connected, 0, "no new connection may be opened");
    assert_eq!(s.tcp_messages_received, 3);
    assert_eq!(s.keepalives, 1);
    assert_eq!(s.tcp_open_connections, 1);

    // The peer closing is noticed and the table is cleaned.
    drop(client);
    let s = eventually(&t, |s| s.tcp_closed == 1).await;
    assert_eq!(s.tcp_open_connections, 0);
    t.shutdown().await;
}

#[tokio::test]
async fn tcp_missing_content_length_closes_connection() {
    let (t, mut rx) = start(
        vec![spec(TCP, Transport::Tcp, lo(1, 0))],
        tcp_settings(),
        16,
    )
    .await;
    let local = t.local_addr(TCP).unwrap();
    let mut client = TcpStream::connect(local).await.unwrap();
    let good = sip("good");
    client.write_all(&good).await.unwrap();
    client
        .write_all(b"OPTIONS sip:a@example.test SIP/2.0\r\nVia: SIP/2.0/TCP x\r\n\r\n")
        .await
        .unwrap();
    assert_eq!(next(&mut rx).await.data, Bytes::from(good));
    assert_closed_by_peer(&mut client).await;
    let s = eventually(&t, |s| s.tcp_closed == 1).await;
    assert_eq!(
        (s.tcp_framing_errors, s.tcp_framing_missing_content_length),
        (1, 1)
    );
    assert_eq!(s.tcp_open_connections, 0);
    assert_quiet(&mut rx).await;
    t.shutdown().await;
}

#[tokio::test]
async fn tcp_oversize_closes_connection() {
    let mut sp = spec(TCP, Transport::Tcp, lo(1, 0));
    sp.max_message_bytes = 200;
    let (t, mut rx) = start(vec![sp], tcp_settings(), 16).await;
    let local = t.local_addr(TCP).unwrap();

    // A head announcing a body past the cap.
    let mut c1 = TcpStream::connect(local).await.unwrap();
    c1.write_all(b"INVITE sip:a@example.test SIP/2.0\r\nContent-Length: 500\r\n\r\n")
        .await
        .unwrap();
    assert_closed_by_peer(&mut c1).await;

    // A head that never ends and outgrows the cap.
    let mut c2 = TcpStream::connect(local).await.unwrap();
    c2.write_all(&[b'a'; 300]).await.unwrap();
    assert_closed_by_peer(&mut c2).await;

    let s = eventually(&t, |s| s.tcp_closed == 2).await;
    assert_eq!((s.tcp_framing_errors, s.tcp_framing_too_large), (2, 2));
    assert_eq!(s.tcp_open_connections, 0);
    assert_quiet(&mut rx).await;
    t.shutdown().await;
}

#[tokio::test]
async fn tcp_idle_connection_is_closed_active_one_is_not() {
    let mut settings = tcp_settings();
    settings.idle_timeout = Duration::from_millis(300);
    let (t, mut rx) = start(vec![spec(TCP, Transport::Tcp, lo(1, 0))], settings, 16).await;
    let local = t.local_addr(TCP).unwrap();

    let mut idle = TcpStream::connect(local).await.unwrap();
    let mut busy = TcpStream::connect(local).await.unwrap();
    let started = tokio::time::Instant::now();
    // Keep `busy` active for twice the idle timeout.
    for i in 0..6 {
        busy.write_all(&sip(&format!("keep{i}"))).await.unwrap();
        next(&mut rx).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_closed_by_peer(&mut idle).await;
    assert!(started.elapsed() >= Duration::from_millis(300));
    let s = eventually(&t, |s| s.tcp_closed == 1).await;
    assert_eq!(s.tcp_open_connections, 1, "the busy connection stays open");

    // Now `busy` goes quiet too and is closed.
    assert_closed_by_peer(&mut busy).await;
    let s = eventually(&t, |s| s.tcp_closed == 2).await;
    assert_eq!(s.tcp_open_connections, 0);
    t.shutdown().await;
}

#[tokio::test]
async fn tcp_max_connections_is_enforced() {
    let mut settings = tcp_settings();
    settings.max_connections = 2;
    let (t, mut rx) = start(vec![spec(TCP, Transport::Tcp, lo(1, 0))], settings, 16).await;
    let local = t.local_addr(TCP).unwrap();

    let mut c1 = TcpStream::connect(local).await.unwrap();
    let _c2 = TcpStream::connect(local).await.unwrap();
    eventually(&t, |s| s.tcp_accepted == 2).await;
    let mut c3 = TcpStream::connect(local).await.unwrap();
    assert_closed_by_peer(&mut c3).await;
    let s = eventually(&t, |s| s.tcp_rejected_max_connections == 1).await;
    assert_eq!((s.tcp_accepted, s.tcp_open_connections), (2, 2));

    // Outbound connections count against the same cap.
    let err = t
        .send(Outgoing {
            listener: TCP,
            transport: Transport::Tcp,
            remote: lo(1, 9),
            data: Bytes::from(sip("x")),
        })
        .unwrap_err();
    assert!(
        matches!(err, SendError::MaxConnections { limit: 2, .. }),
        "{err}"
    );
    assert_eq!(t.stats().tcp_rejected_max_connections, 2);

    // Admitted connections still work, and a closed one frees its slot.
    c1.write_all(&sip("c1")).await.unwrap();
    assert_eq!(next(&mut rx).await.data, Bytes::from(sip("c1")));
    drop(c1);
    eventually(&t, |s| s.tcp_open_connections == 1).await;
    let mut c4 = TcpStream::connect(local).await.unwrap();
    c4.write_all(&sip("c4")).await.unwrap();
    assert_eq!(next(&mut rx).await.data, Bytes::from(sip("c4")));
    assert_eq!(t.stats().tcp_accepted, 3);
    t.shutdown().await;
}

// ---------------------------------------------------------------- TCP outbound

#[tokio::test]
async fn tcp_outbound_connects_from_listener_ip_and_reuses_connection() {
    // Our listener on 127.0.0.3, the peer on 127.0.0.1: the source IP shows which one we used.
    let (t, mut rx) = start(
        vec![spec(TCP, Transport::Tcp, lo(3, 0))],
        tcp_settings(),
        16,
    )
    .await;
    let peer = TcpListener::bind(lo(1, 0)).await.unwrap();
    let peer_addr = peer.local_addr().unwrap();
    let out = |tag: &str| Outgoing {
        listener: TCP,
        transport: Transport::Tcp,
        remote: peer_addr,
        data: Bytes::from(sip(tag)),
    };

    t.send(out("first")).unwrap();
    let (mut conn, from) = timeout(WAIT, peer.accept()).await.unwrap().unwrap();
    assert_eq!(from.ip(), lo(3, 0).ip(), "connects from the listener's IP");
    assert_ne!(
        from.port(),
        t.local_addr(TCP).unwrap().port(),
        "from an ephemeral port"
    );
    assert_eq!(
        read_exact(&mut conn, sip("first").len()).await,
        sip("first")
    );

    t.send(out("second")).unwrap();
    assert_eq!(
        read_exact(&mut conn, sip("second").len()).await,
        sip("second")
    );
    assert!(
        timeout(Duration::from_millis(200), peer.accept())
            .await
            .is_err(),
        "the second send must reuse the connection"
    );

    // The peer's reply on that connection arrives on our listener.
    conn.write_all(&sip("reply")).await.unwrap();
    let r = next(&mut rx).await;
    assert_eq!(r.data, Bytes::from(sip("reply")));
    assert_eq!(
        (r.listener, r.transport, r.remote),
        (TCP, Transport::Tcp, peer_addr)
    );
    assert_eq!(r.local, from);

    let s = t.stats();
    assert_eq!(
        (s.tcp_connected, s.tcp_accepted, s.tcp_messages_sent),
        (1, 0, 2)
    );
    t.shutdown().await;
}

#[tokio::test]
async fn tcp_send_queue_is_bounded() {
    let mut settings = tcp_settings();
    settings.per_connection_queue = 2;
    let (t, _rx) = start(vec![spec(TCP, Transport::Tcp, lo(1, 0))], settings, 16).await;
    let peer = TcpListener::bind(lo(1, 0)).await.unwrap();
    let remote = peer.local_addr().unwrap();
    let out = |tag: &str| Outgoing {
        listener: TCP,
        transport: Transport::Tcp,
        remote,
        data: Bytes::from(sip(tag)),
    };
    // Single-threaded runtime: nothing drains the queue until we yield.
    t.send(out("q1")).unwrap();
    t.send(out("q2")).unwrap();
    let err = t.send(out("q3")).unwrap_err();
    assert!(matches!(err, SendError::QueueFull { .. }), "{err}");
    assert_eq!(t.stats().tcp_send_queue_full, 1);

    let (mut conn, _) = timeout(WAIT, peer.accept()).await.unwrap().unwrap();
    let expected = [sip("q1"), sip("q2")].concat();
    assert_eq!(read_exact(&mut conn, expected.len()).await, expected);
    t.shutdown().await;
}

#[tokio::test]
async fn tcp_connect_failure_is_counted_and_cleaned_up() {
    let (t, _rx) = start(
        vec![spec(TCP, Transport::Tcp, lo(1, 0))],
        tcp_settings(),
        16,
    )
    .await;
    let closed_port = {
        let l = std::net::TcpListener::bind(lo(1, 0)).unwrap();
        l.local_addr().unwrap()
    };
    let out = Outgoing {
        listener: TCP,
        transport: Transport::Tcp,
        remote: closed_port,
        data: Bytes::from(sip("nobody")),
    };
    t.send(out.clone()).unwrap();
    let s = eventually(&t, |s| s.tcp_connect_failures == 1).await;
    assert_eq!(
        (s.tcp_open_connections, s.tcp_connected, s.tcp_closed),
        (0, 0, 0)
    );
    // The failed attempt left nothing behind: the next send tries again.
    t.send(out).unwrap();
    eventually(&t, |s| s.tcp_connect_failures == 2).await;
    t.shutdown().await;
}

// ---------------------------------------------------------------- errors and lifecycle

#[tokio::test]
async fn bind_failure_names_the_address_and_binds_nothing() {
    // TCP: a plain listener already holds the port.
    let holder = std::net::TcpListener::bind(lo(1, 0)).unwrap();
    let taken = holder.local_addr().unwrap();
    // A free UDP port for the listener that binds fine before the failure.
    let udp_addr = std::net::UdpSocket::bind(lo(1, 0))
        .unwrap()
        .local_addr()
        .unwrap();

    let (tx, _rx) = mpsc::channel(4);
    let err = Transports::start(
        vec![
            spec(UDP, Transport::Udp, udp_addr),
            spec(TCP, Transport::Tcp, taken),
        ],
        tcp_settings(),
        tx.clone(),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(err, TransportError::Bind { addr, id: TCP, step: "bind", .. } if addr == taken),
        "{err:?}"
    );
    assert!(err.to_string().contains(&taken.to_string()), "{err}");
    // All or nothing: the UDP socket bound before the failure was released
    // (a socket without SO_REUSEPORT could not share the port otherwise).
    std::net::UdpSocket::bind(udp_addr).unwrap();

    // UDP: a socket without SO_REUSEPORT holds the port.
    let holder = std::net::UdpSocket::bind(lo(1, 0)).unwrap();
    let taken = holder.local_addr().unwrap();
    let err = Transports::start(vec![spec(UDP, Transport::Udp, taken)], tcp_settings(), tx)
        .await
        .unwrap_err();
    assert!(err.to_string().contains(&taken.to_string()), "{err}");
    assert!(err.to_string().starts_with("udp listener 1 on"), "{err}");
}

#[tokio::test]
async fn invalid_specs_are_refused() {
    let (tx, _rx) = mpsc::channel(4);
    let dup = vec![
        spec(UDP, Transport::Udp, lo(1, 0)),
        spec(UDP, Transport::Tcp, lo(1, 0)),
    ];
    let err = Transports::start(dup, tcp_settings(), tx.clone())
        .await
        .unwrap_err();
    assert!(
        matches!(err, TransportError::DuplicateListener(UDP)),
        "{err:?}"
    );

    let mut bad_dscp = spec(UDP, Transport::Udp, lo(1, 0));
    bad_dscp.dscp = 64;
    let err = Transports::start(vec![bad_dscp], tcp_settings(), tx.clone())
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            TransportError::InvalidSetting {
                setting: "dscp",
                ..
            }
        ),
        "{err:?}"
    );

    let tls = vec![spec(UDP, Transport::Tls, lo(1, 0))];
    let err = Transports::start(tls, tcp_settings(), tx.clone())
        .await
        .unwrap_err();
    assert!(
        matches!(err, TransportError::UnsupportedTransport { .. }),
        "{err:?}"
    );

    let mut zero_queue = tcp_settings();
    zero_queue.per_connection_queue = 0;
    let err = Transports::start(vec![], zero_queue, tx).await.unwrap_err();
    assert!(
        matches!(err, TransportError::InvalidSetting { .. }),
        "{err:?}"
    );
}

#[tokio::test]
async fn send_refuses_what_no_listener_serves() {
    let specs = vec![
        spec(UDP, Transport::Udp, lo(1, 0)),
        spec(TCP, Transport::Tcp, lo(1, 0)),
    ];
    let (t, _rx) = start(specs, tcp_settings(), 4).await;
    let out = |listener, transport, remote| Outgoing {
        listener,
        transport,
        remote,
        data: Bytes::from_static(b"x"),
    };
    let err = t
        .send(out(ListenerId(9), Transport::Udp, lo(1, 9)))
        .unwrap_err();
    assert!(
        matches!(err, SendError::UnknownListener(ListenerId(9))),
        "{err}"
    );
    let err = t.send(out(UDP, Transport::Tcp, lo(1, 9))).unwrap_err();
    assert!(
        matches!(
            err,
            SendError::TransportMismatch {
                actual: Transport::Udp,
                ..
            }
        ),
        "{err}"
    );
    let v6: SocketAddr = "[::1]:5060".parse().unwrap();
    let err = t.send(out(TCP, Transport::Tcp, v6)).unwrap_err();
    assert!(matches!(err, SendError::AddressFamily { .. }), "{err}");
    t.shutdown().await;
}

#[tokio::test]
async fn shutdown_closes_listeners_and_connections() {
    let specs = vec![
        spec(UDP, Transport::Udp, lo(1, 0)),
        spec(TCP, Transport::Tcp, lo(1, 0)),
    ];
    let (t, _rx) = start(specs, tcp_settings(), 4).await;
    let tcp_local = t.local_addr(TCP).unwrap();
    let udp_local = t.local_addr(UDP).unwrap();
    let mut client = TcpStream::connect(tcp_local).await.unwrap();
    eventually(&t, |s| s.tcp_open_connections == 1).await;

    let other = t.clone();
    timeout(WAIT, t.shutdown()).await.expect("shutdown hangs");
    assert_closed_by_peer(&mut client).await;
    assert!(
        TcpStream::connect(tcp_local).await.is_err(),
        "listener still accepts"
    );
    // The UDP port is free again for a socket without SO_REUSEPORT.
    std::net::UdpSocket::bind(udp_local).unwrap();
    let err = other
        .send(Outgoing {
            listener: UDP,
            transport: Transport::Udp,
            remote: lo(1, 9),
            data: Bytes::from_static(b"x"),
        })
        .unwrap_err();
    assert!(matches!(err, SendError::Closed), "{err}");
    let s = other.stats();
    assert_eq!((s.tcp_open_connections, s.tcp_closed), (0, 1));
    assert_eq!(other.local_addr(UDP), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_reader_waits_when_inbound_is_full() {
    // Capacity 1 and nobody reading: the reader must hold back, not drop.
    let (t, mut rx) = start(vec![spec(TCP, Transport::Tcp, lo(1, 0))], tcp_settings(), 1).await;
    let mut client = TcpStream::connect(t.local_addr(TCP).unwrap())
        .await
        .unwrap();
    let all: Vec<u8> = (0..20).flat_map(|i| sip(&format!("bp{i}"))).collect();
    client.write_all(&all).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(t.stats().tcp_messages_received <= 2, "{:?}", t.stats());
    for i in 0..20 {
        assert_eq!(
            next(&mut rx).await.data,
            Bytes::from(sip(&format!("bp{i}")))
        );
    }
    assert_eq!(t.stats().tcp_messages_received, 20);
    t.shutdown().await;
}
