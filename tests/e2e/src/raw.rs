//! Raw-socket probes: arbitrary bytes to Palisade over UDP or TCP, and whatever
//! comes back within a time limit.

use std::io::{ErrorKind, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpStream, UdpSocket};
use std::time::Duration;

use socket2::{Domain, Protocol, Socket, Type};

use crate::net::now;

/// A UDP socket bound to `ip` on an ephemeral port.
pub fn udp_socket(ip: Ipv4Addr) -> UdpSocket {
    UdpSocket::bind(SocketAddrV4::new(ip, 0)).unwrap_or_else(|e| panic!("bind UDP on {ip}: {e}"))
}

/// Sends `payload` from `socket` to `to` and collects every datagram that
/// arrives within `wait` (the whole window is always waited out).
pub fn udp_send_collect(
    socket: &UdpSocket,
    to: SocketAddr,
    payload: &[u8],
    wait: Duration,
) -> Vec<Vec<u8>> {
    socket
        .send_to(payload, to)
        .unwrap_or_else(|e| panic!("UDP send to {to}: {e}"));
    udp_collect(socket, wait, usize::MAX)
}

/// Collects up to `max` datagrams arriving within `wait`.
pub fn udp_collect(socket: &UdpSocket, wait: Duration, max: usize) -> Vec<Vec<u8>> {
    let deadline = now() + wait;
    let mut got = Vec::new();
    let mut buf = vec![0u8; 65_536];
    while got.len() < max {
        let left = deadline.saturating_duration_since(now());
        if left.is_zero() {
            break;
        }
        socket
            .set_read_timeout(Some(left))
            .unwrap_or_else(|e| panic!("set_read_timeout: {e}"));
        match socket.recv_from(&mut buf) {
            Ok((n, _)) => got.push(buf[..n].to_vec()),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => break,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            // ICMP port unreachable from an earlier send: nobody listens.
            Err(e) if e.kind() == ErrorKind::ConnectionRefused => break,
            Err(e) => panic!("UDP receive: {e}"),
        }
    }
    got
}

/// Sends `payload` from a fresh socket on `from_ip` and returns the first
/// datagram back, if one arrives within `wait`.
pub fn udp_request(
    from_ip: Ipv4Addr,
    to: SocketAddr,
    payload: &[u8],
    wait: Duration,
) -> Option<Vec<u8>> {
    let socket = udp_socket(from_ip);
    socket
        .send_to(payload, to)
        .unwrap_or_else(|e| panic!("UDP send to {to}: {e}"));
    udp_collect(&socket, wait, 1).into_iter().next()
}

/// What a TCP probe saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TcpOutcome {
    /// Every byte received before the peer closed or the window ended.
    pub received: Vec<u8>,
    /// Whether the peer closed (FIN or RST) within the window.
    pub closed_by_peer: bool,
}

/// A TCP connection from `from_ip` (ephemeral port) to `to`.
pub fn tcp_connect(from_ip: Ipv4Addr, to: SocketAddr) -> TcpStream {
    let socket = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP))
        .unwrap_or_else(|e| panic!("TCP socket: {e}"));
    socket
        .bind(&SocketAddr::V4(SocketAddrV4::new(from_ip, 0)).into())
        .unwrap_or_else(|e| panic!("bind TCP on {from_ip}: {e}"));
    socket
        .connect_timeout(&to.into(), Duration::from_secs(3))
        .unwrap_or_else(|e| panic!("TCP connect {from_ip} -> {to}: {e}"));
    socket.into()
}

/// Connects from `from_ip` to `to`, writes `payload`, then reads until the peer
/// closes or `wait` passes. Our side never half-closes, so an unfinished frame
/// stays unfinished.
pub fn tcp_exchange(
    from_ip: Ipv4Addr,
    to: SocketAddr,
    payload: &[u8],
    wait: Duration,
) -> TcpOutcome {
    let mut stream = tcp_connect(from_ip, to);
    tcp_send_collect(&mut stream, payload, wait)
}

/// Writes `payload` on `stream`, then reads until the peer closes or `wait` passes.
pub fn tcp_send_collect(stream: &mut TcpStream, payload: &[u8], wait: Duration) -> TcpOutcome {
    let to = stream
        .peer_addr()
        .map_or_else(|_| "peer".to_string(), |a| a.to_string());
    let mut out = TcpOutcome {
        received: Vec::new(),
        closed_by_peer: false,
    };
    if let Err(e) = stream.write_all(payload) {
        // The peer may close mid-write on an oversize frame.
        if matches!(e.kind(), ErrorKind::BrokenPipe | ErrorKind::ConnectionReset) {
            out.closed_by_peer = true;
            return out;
        }
        panic!("TCP write to {to}: {e}");
    }
    let deadline = now() + wait;
    let mut buf = [0u8; 8192];
    loop {
        let left = deadline.saturating_duration_since(now());
        if left.is_zero() {
            break;
        }
        stream
            .set_read_timeout(Some(left))
            .unwrap_or_else(|e| panic!("set_read_timeout: {e}"));
        match stream.read(&mut buf) {
            Ok(0) => {
                out.closed_by_peer = true;
                break;
            }
            Ok(n) => out.received.extend_from_slice(&buf[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => break,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e)
                if matches!(
                    e.kind(),
                    ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted
                ) =>
            {
                out.closed_by_peer = true;
                break;
            }
            Err(e) => panic!("TCP read from {to}: {e}"),
        }
    }
    out
}

/// Splits a TCP byte stream into SIP messages by Content-Length (missing means 0).
pub fn split_stream(mut bytes: &[u8]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        while bytes.starts_with(b"\r\n") {
            bytes = &bytes[2..];
        }
        let Some(head_end) = bytes.windows(4).position(|w| w == b"\r\n\r\n") else {
            if !bytes.is_empty() {
                out.push(bytes.to_vec());
            }
            return out;
        };
        let head = String::from_utf8_lossy(&bytes[..head_end]);
        let body_len = head
            .lines()
            .filter_map(|l| l.split_once(':'))
            .find(|(n, _)| {
                n.trim().eq_ignore_ascii_case("content-length")
                    || n.trim().eq_ignore_ascii_case("l")
            })
            .and_then(|(_, v)| v.trim().parse::<usize>().ok())
            .unwrap_or(0);
        let end = (head_end + 4 + body_len).min(bytes.len());
        out.push(bytes[..end].to_vec());
        bytes = &bytes[end..];
    }
}

/// An out-of-dialog OPTIONS from `from` to `to` with this Call-ID.
pub fn options_request(
    from: SocketAddr,
    to: SocketAddr,
    transport: &str,
    call_id: &str,
) -> Vec<u8> {
    format!(
        "OPTIONS sip:{to} SIP/2.0\r\n\
         Via: SIP/2.0/{transport} {from};branch=z9hG4bK-{call_id};rport\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:probe@{from}>;tag=e2e-{call_id}\r\n\
         To: <sip:{to}>\r\n\
         Call-ID: {call_id}\r\n\
         CSeq: 1 OPTIONS\r\n\
         Accept: application/sdp\r\n\
         Content-Length: 0\r\n\r\n"
    )
    .into_bytes()
}

/// Sends an OPTIONS over UDP from `from_ip` and returns the response with the
/// same Call-ID, if one arrives within `wait`.
pub fn udp_options(
    from_ip: Ipv4Addr,
    to: SocketAddr,
    call_id: &str,
    wait: Duration,
) -> Option<Vec<u8>> {
    let socket = udp_socket(from_ip);
    let from = socket
        .local_addr()
        .unwrap_or_else(|e| panic!("local_addr: {e}"));
    let req = options_request(from, to, "UDP", call_id);
    socket
        .send_to(&req, to)
        .unwrap_or_else(|e| panic!("UDP send to {to}: {e}"));
    let deadline = now() + wait;
    loop {
        let left = deadline.saturating_duration_since(now());
        if left.is_zero() {
            return None;
        }
        let got = udp_collect(&socket, left, 1);
        let first = got.into_iter().next()?;
        let text = String::from_utf8_lossy(&first);
        if text.contains(call_id) {
            return Some(first);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_a_stream_by_content_length() {
        let s =
            b"\r\nSIP/2.0 400 Bad\r\nContent-Length: 3\r\n\r\nabcSIP/2.0 200 OK\r\nl: 0\r\n\r\n";
        let parts = split_stream(s);
        assert_eq!(parts.len(), 2);
        assert!(parts[0].ends_with(b"abc"));
        assert!(parts[1].starts_with(b"SIP/2.0 200"));
    }

    #[test]
    fn udp_round_trip_against_a_local_echo() {
        let echo = udp_socket("127.100.252.1".parse().unwrap());
        let echo_addr = echo.local_addr().unwrap();
        let t = std::thread::spawn(move || {
            let mut buf = [0u8; 1500];
            let (n, from) = echo.recv_from(&mut buf).unwrap();
            echo.send_to(&buf[..n], from).unwrap();
        });
        let back = udp_request(
            "127.100.252.2".parse().unwrap(),
            echo_addr,
            b"ping",
            Duration::from_secs(2),
        );
        t.join().unwrap();
        assert_eq!(back.as_deref(), Some(&b"ping"[..]));
    }

    #[test]
    fn tcp_exchange_sees_the_peer_close() {
        let l = std::net::TcpListener::bind("127.100.252.3:0").unwrap();
        let addr = l.local_addr().unwrap();
        let t = std::thread::spawn(move || {
            let (mut s, peer) = l.accept().unwrap();
            assert_eq!(peer.ip().to_string(), "127.100.252.4");
            let mut buf = [0u8; 4];
            s.read_exact(&mut buf).unwrap();
            s.write_all(b"pong").unwrap();
        });
        let out = tcp_exchange(
            "127.100.252.4".parse().unwrap(),
            addr,
            b"ping",
            Duration::from_secs(2),
        );
        t.join().unwrap();
        assert_eq!(out.received, b"pong");
        assert!(out.closed_by_peer);
    }
}
