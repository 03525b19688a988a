//! Batched UDP I/O: `recvmmsg(2)` and `sendmmsg(2)` over preallocated
//! buffers. This is the only module of the crate with `unsafe` code; each
//! block says why it is sound.
//!
//! A [`Batch`] owns [`BATCH`] packet buffers of [`BUF_CAPACITY`] bytes each,
//! allocated once. [`Batch::recv`] fills them from one socket in one system
//! call; the caller rewrites packets in place and then hands a list of
//! `(buffer index, destination)` to [`Batch::send`], which sends them from
//! one socket in one system call. Nothing is allocated per packet.

use std::io;
use std::mem::{size_of, zeroed};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::RawFd;

/// Packets per system call.
pub const BATCH: usize = 32;
/// Bytes per packet buffer: an Ethernet-MTU packet plus SRTP's tag, MKI and
/// SRTCP index, with room to spare. Longer datagrams are dropped.
pub const BUF_CAPACITY: usize = 2048;

/// Preallocated buffers and message headers for one relay thread.
pub struct Batch {
    bufs: Vec<Vec<u8>>,
    truncated: [bool; BATCH],
    names: Vec<libc::sockaddr_storage>,
    iovs: Vec<libc::iovec>,
    hdrs: Vec<libc::mmsghdr>,
    out_names: Vec<libc::sockaddr_storage>,
    out_iovs: Vec<libc::iovec>,
    out_hdrs: Vec<libc::mmsghdr>,
}

impl std::fmt::Debug for Batch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Batch")
            .field("buffers", &self.bufs.len())
            .finish()
    }
}

// SAFETY: the raw pointers inside the C headers point only into this
// Batch's own heap allocations (buffers, names, iovecs), which move with it;
// they are rewritten before every system call and never shared.
unsafe impl Send for Batch {}

impl Default for Batch {
    fn default() -> Self {
        Self::new()
    }
}

/// Outcome of [`Batch::send`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Sent {
    /// Datagrams the kernel accepted.
    pub sent: usize,
    /// Datagrams dropped (socket buffer full, unreachable destination, ...).
    pub failed: usize,
    /// Payload bytes of the datagrams accepted.
    pub bytes: usize,
}

impl Batch {
    /// Allocates the buffers (the only allocation a batch ever makes).
    pub fn new() -> Batch {
        // SAFETY: sockaddr_storage, iovec and mmsghdr are plain C structs for
        // which all-zero bytes are a valid (empty) value.
        let (name, iov, hdr) = unsafe {
            (
                zeroed::<libc::sockaddr_storage>(),
                zeroed::<libc::iovec>(),
                zeroed::<libc::mmsghdr>(),
            )
        };
        Batch {
            bufs: (0..BATCH)
                .map(|_| Vec::with_capacity(BUF_CAPACITY))
                .collect(),
            truncated: [false; BATCH],
            names: vec![name; BATCH],
            iovs: vec![iov; BATCH],
            hdrs: vec![hdr; BATCH],
            out_names: vec![name; BATCH],
            out_iovs: vec![iov; BATCH],
            out_hdrs: vec![hdr; BATCH],
        }
    }

    /// Receives up to [`BATCH`] datagrams from `fd` without blocking.
    /// Returns how many (0 never: `WouldBlock` when there is nothing).
    pub fn recv(&mut self, fd: RawFd) -> io::Result<usize> {
        for i in 0..BATCH {
            let buf = &mut self.bufs[i];
            buf.clear();
            if buf.capacity() < BUF_CAPACITY {
                buf.reserve(BUF_CAPACITY);
            }
            self.iovs[i] = libc::iovec {
                iov_base: buf.as_mut_ptr().cast(),
                iov_len: buf.capacity(),
            };
            let h = &mut self.hdrs[i];
            h.msg_len = 0;
            h.msg_hdr.msg_name = (&raw mut self.names[i]).cast();
            h.msg_hdr.msg_namelen = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            h.msg_hdr.msg_iov = &raw mut self.iovs[i];
            h.msg_hdr.msg_iovlen = 1;
            h.msg_hdr.msg_control = std::ptr::null_mut();
            h.msg_hdr.msg_controllen = 0;
            h.msg_hdr.msg_flags = 0;
        }
        // SAFETY: every header points at a live name buffer of the size it
        // states and at one iovec describing the spare capacity of a live
        // Vec; none of them moves or is touched until the call returns.
        let n = unsafe {
            libc::recvmmsg(
                fd,
                self.hdrs.as_mut_ptr(),
                BATCH as libc::c_uint,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        let n = n as usize;
        for i in 0..n {
            let h = &self.hdrs[i];
            let len = (h.msg_len as usize).min(self.bufs[i].capacity());
            self.truncated[i] = h.msg_hdr.msg_flags & libc::MSG_TRUNC != 0;
            // SAFETY: the kernel wrote `msg_len` bytes into this buffer's
            // spare capacity (clamped to the capacity it was given).
            unsafe { self.bufs[i].set_len(len) };
        }
        Ok(n)
    }

    /// Buffer `i` of the last receive (its length is the datagram's) and its
    /// source. `None` as source for a truncated datagram or an unknown
    /// address family: drop it.
    pub fn packet(&mut self, i: usize) -> (&mut Vec<u8>, Option<SocketAddr>) {
        let src = if self.truncated[i] {
            None
        } else {
            from_storage(&self.names[i], self.hdrs[i].msg_hdr.msg_namelen)
        };
        (&mut self.bufs[i], src)
    }

    /// Buffer `i`, to fill before [`Batch::send`] (a sender that does not
    /// receive; keep it within [`BUF_CAPACITY`] to avoid reallocating).
    pub fn buffer(&mut self, i: usize) -> &mut Vec<u8> {
        &mut self.bufs[i]
    }

    /// Sends buffers `items[k].0` to `items[k].1` from `fd`, in as few
    /// system calls as the kernel allows; at most [`BATCH`] items.
    pub fn send(&mut self, fd: RawFd, items: &[(usize, SocketAddr)]) -> Sent {
        let count = items.len().min(BATCH);
        let mut out = Sent::default();
        let mut valid = 0;
        for &(idx, dst) in &items[..count] {
            let Some(buf) = self.bufs.get(idx) else {
                out.failed += 1;
                continue;
            };
            let namelen = to_storage(dst, &mut self.out_names[valid]);
            self.out_iovs[valid] = libc::iovec {
                iov_base: buf.as_ptr().cast_mut().cast(),
                iov_len: buf.len(),
            };
            let h = &mut self.out_hdrs[valid];
            h.msg_len = 0;
            h.msg_hdr.msg_name = (&raw mut self.out_names[valid]).cast();
            h.msg_hdr.msg_namelen = namelen;
            h.msg_hdr.msg_iov = &raw mut self.out_iovs[valid];
            h.msg_hdr.msg_iovlen = 1;
            h.msg_hdr.msg_control = std::ptr::null_mut();
            h.msg_hdr.msg_controllen = 0;
            h.msg_hdr.msg_flags = 0;
            valid += 1;
        }
        let mut off = 0;
        while off < valid {
            // SAFETY: headers off..valid point at initialised names and at
            // iovecs over live buffers (read-only for the kernel); nothing
            // moves until the call returns.
            let n = unsafe {
                libc::sendmmsg(
                    fd,
                    self.out_hdrs.as_mut_ptr().add(off),
                    (valid - off) as libc::c_uint,
                    libc::MSG_DONTWAIT,
                )
            };
            if n < 0 {
                let err = io::Error::last_os_error();
                match err.kind() {
                    io::ErrorKind::Interrupted => continue,
                    io::ErrorKind::WouldBlock => {
                        // Socket buffer full: drop the rest of the batch.
                        out.failed += valid - off;
                        break;
                    }
                    _ => {
                        // This datagram failed (unreachable, refused): skip it.
                        out.failed += 1;
                        off += 1;
                    }
                }
                continue;
            }
            let n = n as usize;
            for h in &self.out_hdrs[off..off + n] {
                out.bytes += h.msg_len as usize;
            }
            out.sent += n;
            off += n;
        }
        out
    }
}

/// Writes `addr` as a C socket address; returns its length.
fn to_storage(addr: SocketAddr, storage: &mut libc::sockaddr_storage) -> libc::socklen_t {
    match addr {
        SocketAddr::V4(a) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: a.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from_ne_bytes(a.ip().octets()),
                },
                sin_zero: [0; 8],
            };
            // SAFETY: sockaddr_storage is larger than and suitably aligned
            // for every socket address type, sockaddr_in included.
            unsafe { std::ptr::write((storage as *mut libc::sockaddr_storage).cast(), sin) };
            size_of::<libc::sockaddr_in>() as libc::socklen_t
        }
        SocketAddr::V6(a) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: a.port().to_be(),
                sin6_flowinfo: a.flowinfo(),
                sin6_addr: libc::in6_addr {
                    s6_addr: a.ip().octets(),
                },
                sin6_scope_id: a.scope_id(),
            };
            // SAFETY: as above, for sockaddr_in6.
            unsafe { std::ptr::write((storage as *mut libc::sockaddr_storage).cast(), sin6) };
            size_of::<libc::sockaddr_in6>() as libc::socklen_t
        }
    }
}

/// Reads a C socket address written by the kernel.
fn from_storage(storage: &libc::sockaddr_storage, len: libc::socklen_t) -> Option<SocketAddr> {
    let len = len as usize;
    match i32::from(storage.ss_family) {
        libc::AF_INET if len >= size_of::<libc::sockaddr_in>() => {
            // SAFETY: the family says the storage holds a sockaddr_in, and
            // sockaddr_storage is aligned for it.
            let sin =
                unsafe { &*(storage as *const libc::sockaddr_storage).cast::<libc::sockaddr_in>() };
            Some(SocketAddr::V4(SocketAddrV4::new(
                Ipv4Addr::from(sin.sin_addr.s_addr.to_ne_bytes()),
                u16::from_be(sin.sin_port),
            )))
        }
        libc::AF_INET6 if len >= size_of::<libc::sockaddr_in6>() => {
            // SAFETY: as above, for sockaddr_in6.
            let sin6 = unsafe {
                &*(storage as *const libc::sockaddr_storage).cast::<libc::sockaddr_in6>()
            };
            Some(SocketAddr::V6(SocketAddrV6::new(
                Ipv6Addr::from(sin6.sin6_addr.s6_addr),
                u16::from_be(sin6.sin6_port),
                sin6.sin6_flowinfo,
                sin6.sin6_scope_id,
            )))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::UdpSocket;
    use std::os::fd::AsRawFd;

    #[test]
    fn address_round_trip() {
        for s in ["127.0.0.1:5004", "[::1]:6000", "[fe80::1%2]:7"] {
            let a: SocketAddr = s.parse().unwrap();
            // SAFETY-free: zeroed via Batch::new's path.
            let b = Batch::new();
            let mut st = b.names[0];
            let len = to_storage(a, &mut st);
            assert_eq!(from_storage(&st, len), Some(a));
        }
    }

    #[test]
    fn receives_and_sends_batches() {
        let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
        let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
        let sink = UdpSocket::bind("127.0.0.1:0").unwrap();
        sink.set_read_timeout(Some(std::time::Duration::from_secs(2)))
            .unwrap();
        let mut b = Batch::new();
        assert_eq!(
            b.recv(rx.as_raw_fd()).unwrap_err().kind(),
            io::ErrorKind::WouldBlock
        );
        for i in 0..40u8 {
            tx.send_to(&[i; 100], rx.local_addr().unwrap()).unwrap();
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
        let n = b.recv(rx.as_raw_fd()).unwrap();
        assert_eq!(n, BATCH);
        let (p, src) = b.packet(5);
        assert_eq!(p.len(), 100);
        assert_eq!(p[0], 5);
        assert_eq!(src, Some(tx.local_addr().unwrap()));
        let dst = sink.local_addr().unwrap();
        let items: Vec<_> = (0..n).map(|i| (i, dst)).collect();
        let sent = b.send(rx.as_raw_fd(), &items);
        assert_eq!(sent.sent, BATCH);
        assert_eq!(sent.bytes, BATCH * 100);
        let mut buf = [0u8; 200];
        for i in 0..BATCH {
            let (len, from) = sink.recv_from(&mut buf).unwrap();
            assert_eq!(
                (len, buf[0], from),
                (100, i as u8, rx.local_addr().unwrap())
            );
        }
        assert_eq!(b.recv(rx.as_raw_fd()).unwrap(), 8);
    }
}
