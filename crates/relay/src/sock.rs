//! Media socket setup (socket2): exclusive bind, DSCP, buffers.

use std::io;
use std::net::SocketAddr;
use std::sync::OnceLock;

use socket2::{Domain, Protocol, Socket, Type};

/// The receive buffer a media socket asks for when the system default
/// (net.core.rmem_default) is smaller: a few hundred packets of headroom per
/// port, so a relay thread busy elsewhere for a moment loses nothing. The
/// kernel doubles the value and caps it at net.core.rmem_max.
pub const MEDIA_SOCKET_BUFFER_BYTES: usize = 256 * 1024;

/// The send buffer is only raised when the system default is below this
/// (a relay sends as fast as it receives; the default is plenty on Linux).
pub const MEDIA_SOCKET_MIN_SEND_BUFFER_BYTES: usize = 64 * 1024;

/// The system's default socket buffer sizes (receive, send), read once.
fn default_buffers() -> (usize, usize) {
    static DEFAULTS: OnceLock<(usize, usize)> = OnceLock::new();
    *DEFAULTS.get_or_init(|| {
        let read = |p: &str| {
            std::fs::read_to_string(p)
                .ok()
                .and_then(|s| s.trim().parse().ok())
                .unwrap_or(0)
        };
        (
            read("/proc/sys/net/core/rmem_default"),
            read("/proc/sys/net/core/wmem_default"),
        )
    })
}

/// Binds a non-blocking UDP socket on `addr` for media: SO_REUSEADDR off
/// (the default; a port another process holds fails with `AddrInUse`),
/// IP_TOS or IPV6_TCLASS set to `dscp << 2`, the receive buffer raised to
/// [`MEDIA_SOCKET_BUFFER_BYTES`] when the default is smaller, the send
/// buffer only when its default is below
/// [`MEDIA_SOCKET_MIN_SEND_BUFFER_BYTES`].
///
/// Sockets come and go with every call, so this is on the call-setup path:
/// socket(2) creates it non-blocking and close-on-exec at once, and only the
/// options that differ from the defaults are set (four syscalls per socket
/// on a typical host, instead of eight).
pub fn bind_media(addr: SocketAddr, dscp: u8) -> io::Result<std::net::UdpSocket> {
    let socket = Socket::new(
        Domain::for_address(addr),
        Type::DGRAM.nonblocking().cloexec(),
        Some(Protocol::UDP),
    )?;
    let tos = u32::from(dscp & 0x3f) << 2;
    if addr.is_ipv4() {
        if tos != 0 {
            socket.set_tos_v4(tos)?;
        }
    } else {
        socket.set_only_v6(true)?;
        if tos != 0 {
            socket.set_tclass_v6(tos)?;
        }
    }
    // Best effort: a smaller buffer is not a reason to refuse a call.
    let (rcv, snd) = default_buffers();
    if rcv < MEDIA_SOCKET_BUFFER_BYTES {
        let _ = socket.set_recv_buffer_size(MEDIA_SOCKET_BUFFER_BYTES);
    }
    if snd < MEDIA_SOCKET_MIN_SEND_BUFFER_BYTES {
        let _ = socket.set_send_buffer_size(MEDIA_SOCKET_MIN_SEND_BUFFER_BYTES);
    }
    socket.bind(&addr.into())?;
    Ok(socket.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn taken_port_fails_and_tos_is_set() {
        let s = bind_media("127.0.0.1:0".parse().unwrap(), 46).unwrap();
        let addr = s.local_addr().unwrap();
        let again = bind_media(addr, 46).unwrap_err();
        assert_eq!(again.kind(), io::ErrorKind::AddrInUse);
        let s2 = Socket::from(s);
        assert_eq!(s2.tos_v4().unwrap(), 46 << 2);
        assert!(s2.nonblocking().unwrap(), "media sockets never block");
        assert!(s2.recv_buffer_size().unwrap() >= MEDIA_SOCKET_BUFFER_BYTES);
    }
}
