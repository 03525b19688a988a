//! Transports and socket-state checks read from `/proc/net`, so waiting for a
//! peer to bind never races it for the port.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

/// A SIP transport as the harness uses it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// UDP.
    Udp,
    /// TCP.
    Tcp,
}

impl Transport {
    /// SIPp's `-t` value: one socket for all calls.
    pub fn sipp_flag(self) -> &'static str {
        match self {
            Transport::Udp => "u1",
            Transport::Tcp => "t1",
        }
    }
    /// The config's `transport:` value.
    pub fn config_name(self) -> &'static str {
        match self {
            Transport::Udp => "udp",
            Transport::Tcp => "tcp",
        }
    }
    /// The Via transport token.
    pub fn via_name(self) -> &'static str {
        match self {
            Transport::Udp => "UDP",
            Transport::Tcp => "TCP",
        }
    }
}

/// `/proc/net` spells an IPv4 address as the hex of its in-memory (network
/// order) bytes read as a native integer, and the port as plain hex.
fn proc_net_key(addr: SocketAddr) -> Option<String> {
    match addr.ip() {
        IpAddr::V4(ip) => Some(format!(
            "{:08X}:{:04X}",
            u32::from_ne_bytes(ip.octets()),
            addr.port()
        )),
        IpAddr::V6(_) => None,
    }
}

/// Whether a UDP socket is bound to exactly `addr`.
pub fn udp_bound(addr: SocketAddr) -> bool {
    proc_net_has(addr, "/proc/net/udp", None)
}

/// Whether a TCP socket listens on exactly `addr`.
pub fn tcp_listening(addr: SocketAddr) -> bool {
    // State 0A is TCP_LISTEN.
    proc_net_has(addr, "/proc/net/tcp", Some("0A"))
}

/// Whether `addr` is bound for `transport` (UDP bound, TCP listening).
pub fn bound(addr: SocketAddr, transport: Transport) -> bool {
    match transport {
        Transport::Udp => udp_bound(addr),
        Transport::Tcp => tcp_listening(addr),
    }
}

fn proc_net_has(addr: SocketAddr, table: &str, state: Option<&str>) -> bool {
    let Some(key) = proc_net_key(addr) else {
        return false;
    };
    let text = std::fs::read_to_string(table)
        .unwrap_or_else(|e| panic!("cannot read {table} (Linux only): {e}"));
    text.lines().skip(1).any(|line| {
        let mut cols = line.split_whitespace();
        let local = cols.nth(1);
        let st = cols.nth(1);
        local == Some(key.as_str()) && state.is_none_or(|s| st == Some(s))
    })
}

/// Polls `cond` every 20 ms until it holds or `limit` passes.
pub fn wait_until(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    #[allow(clippy::disallowed_methods)] // Test harness: real time is what we wait on.
    let deadline = Instant::now() + limit;
    loop {
        if cond() {
            return true;
        }
        #[allow(clippy::disallowed_methods)]
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The current instant. The harness is I/O code and reads the clock here only.
#[allow(clippy::disallowed_methods)] // Test harness: waits are on real time.
pub fn now() -> Instant {
    Instant::now()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_net_key_matches_kernel_spelling() {
        let key = proc_net_key("127.100.250.20:5080".parse().unwrap()).unwrap();
        if cfg!(target_endian = "little") {
            assert_eq!(key, "14FA647F:13D8");
        }
    }

    #[test]
    fn sees_a_bound_udp_socket() {
        let s = std::net::UdpSocket::bind("127.100.251.1:0").unwrap();
        let addr = s.local_addr().unwrap();
        assert!(udp_bound(addr));
        drop(s);
        assert!(!udp_bound(addr));
    }

    #[test]
    fn sees_a_listening_tcp_socket() {
        let l = std::net::TcpListener::bind("127.100.251.2:0").unwrap();
        let addr = l.local_addr().unwrap();
        assert!(tcp_listening(addr));
        assert!(!udp_bound(addr));
    }
}
