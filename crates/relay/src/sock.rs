//! Media socket setup (socket2): exclusive bind, DSCP, buffers.

use std::io;
use std::net::SocketAddr;

use socket2::{Domain, Protocol, Socket, Type};

/// Socket buffer size asked for each media socket: a few hundred packets of
/// headroom per port without pinning much kernel memory (the kernel caps it
/// at net.core.rmem_max / wmem_max).
pub const MEDIA_SOCKET_BUFFER_BYTES: usize = 256 * 1024;

/// Binds a non-blocking UDP socket on `addr` for media: SO_REUSEADDR off (a
/// port another process holds fails with `AddrInUse`), IP_TOS or
/// IPV6_TCLASS set to `dscp << 2`, buffers raised moderately.
pub fn bind_media(addr: SocketAddr, dscp: u8) -> io::Result<std::net::UdpSocket> {
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    socket.set_reuse_address(false)?;
    let tos = u32::from(dscp & 0x3f) << 2;
    if addr.is_ipv4() {
        socket.set_tos_v4(tos)?;
    } else {
        socket.set_only_v6(true)?;
        socket.set_tclass_v6(tos)?;
    }
    // Best effort: a smaller buffer is not a reason to refuse a call.
    let _ = socket.set_recv_buffer_size(MEDIA_SOCKET_BUFFER_BYTES);
    let _ = socket.set_send_buffer_size(MEDIA_SOCKET_BUFFER_BYTES);
    socket.set_nonblocking(true)?;
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
    }
}
