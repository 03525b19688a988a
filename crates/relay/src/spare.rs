//! Spare sockets: when a session ends normally, its sockets stay bound and
//! registered for up to [`crate::SPARE_IDLE`], shared by every relay
//! thread, so the next session given one of those ports (the media manager
//! hands out recently freed ports first) costs no `socket`, `bind`,
//! `setsockopt`, `epoll_ctl` or `close` at all when it lands on the same
//! thread, and two `epoll_ctl` when it lands on another. Whatever reaches a
//! spare (the tail of the ended call) is read and dropped; the next session
//! refuses that call's peer for [`crate::REUSE_GUARD`].
//!
//! One map for all threads keeps a port from ever being bound twice: a
//! thread binding a port looks here first, under the same lock a thread
//! keeping a spare takes.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use mio::net::UdpSocket;
use mio::{Registry, Token};

use crate::batch::{BATCH, Batch};

#[derive(Debug)]
struct Entry {
    sock: UdpSocket,
    /// The relay thread whose epoll set has it, and under which token.
    lane: usize,
    token: Token,
    since: Instant,
    /// The peer it served, refused by the next session for a while.
    prev: Option<SocketAddr>,
}

/// A spare handed to a new session.
#[derive(Debug)]
pub(crate) struct Taken {
    pub sock: UdpSocket,
    /// Still registered with the taking thread under this token; `None`:
    /// it came from another thread, register it anew.
    pub token: Option<Token>,
    pub prev: Option<SocketAddr>,
}

/// What reading a spare found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Drained {
    /// Read and dropped this many datagrams; the socket is empty now.
    Done(usize),
    /// Read and dropped a full batch: more may be waiting.
    More(usize),
    /// The token no longer stands for a spare of this thread.
    Gone,
}

/// The spares of every relay thread.
#[derive(Debug)]
pub(crate) struct SparePool {
    inner: Mutex<HashMap<SocketAddr, Entry>>,
    /// Each thread's epoll registry, to take a spare's registration away.
    registries: Vec<Registry>,
    count: AtomicU64,
}

impl SparePool {
    pub(crate) fn new(registries: Vec<Registry>) -> SparePool {
        SparePool {
            inner: Mutex::new(HashMap::new()),
            registries,
            count: AtomicU64::new(0),
        }
    }

    /// Spares held now.
    pub(crate) fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    /// Keeps `sock` (bound on `addr`, registered by `lane` under `token`)
    /// as a spare; hands it back when the pool is full.
    pub(crate) fn keep(
        &self,
        addr: SocketAddr,
        sock: UdpSocket,
        lane: usize,
        token: Token,
        since: Instant,
        prev: Option<SocketAddr>,
    ) -> Result<(), UdpSocket> {
        let Ok(mut map) = self.inner.lock() else {
            return Err(sock);
        };
        let cap = crate::SPARE_CAP.saturating_mul(self.registries.len().max(1));
        if map.len() >= cap || map.contains_key(&addr) {
            return Err(sock);
        }
        map.insert(
            addr,
            Entry {
                sock,
                lane,
                token,
                since,
                prev,
            },
        );
        self.count.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// The spare bound on `addr`, for a session of `lane`.
    pub(crate) fn take(&self, addr: SocketAddr, lane: usize) -> Option<Taken> {
        let mut e = self.inner.lock().ok()?.remove(&addr)?;
        self.count.fetch_sub(1, Ordering::Relaxed);
        if e.lane == lane {
            return Some(Taken {
                sock: e.sock,
                token: Some(e.token),
                prev: e.prev,
            });
        }
        // Another thread's: out of its epoll set (it frees the token when it
        // next looks at it). Failing that, the socket is closed and the
        // caller binds afresh.
        let reg = self.registries.get(e.lane)?;
        reg.deregister(&mut e.sock).ok()?;
        Some(Taken {
            sock: e.sock,
            token: None,
            prev: e.prev,
        })
    }

    /// Closes the spare `lane` kept on `addr` under `token` at `since`, if
    /// it is still that one. Returns whether `token` no longer stands for
    /// a spare of `lane` (closed now, or taken by a session since).
    pub(crate) fn expire(
        &self,
        addr: SocketAddr,
        lane: usize,
        token: Token,
        since: Instant,
    ) -> bool {
        let Ok(mut map) = self.inner.lock() else {
            return false;
        };
        match map.get(&addr) {
            Some(e) if e.lane == lane && e.token == token && e.since == since => {
                map.remove(&addr);
                self.count.fetch_sub(1, Ordering::Relaxed);
                true
            }
            // Kept again later under the same token: a later expiry's.
            Some(e) if e.lane == lane && e.token == token => false,
            _ => true,
        }
    }

    /// Reads and drops what is waiting on the spare `lane` keeps on `addr`
    /// under `token`.
    pub(crate) fn drain(
        &self,
        addr: SocketAddr,
        lane: usize,
        token: Token,
        batch: &mut Batch,
    ) -> Drained {
        let Ok(map) = self.inner.lock() else {
            return Drained::Gone;
        };
        let Some(e) = map
            .get(&addr)
            .filter(|e| e.lane == lane && e.token == token)
        else {
            return Drained::Gone;
        };
        let fd = e.sock.as_raw_fd();
        loop {
            return match batch.recv(fd) {
                Ok(n) if n < BATCH => Drained::Done(n),
                Ok(n) => Drained::More(n),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => Drained::Done(0),
            };
        }
    }
}
