//! Benchmark load generator: G.711-like RTP (172-byte packets, 160 payload
//! bytes, 20 ms timestamps) both ways through a relay, paced at `--rate`
//! packets per second in total until `--packets` were sent or
//! `--max-seconds` passed; counts what comes back out on the peer sockets.
//! `--targets FILE` (lines `A_TARGET B_TARGET`, one per session) replaces
//! the address plan's relay ports (rtpengine allocates its own).
//! Prints `sent=N received=N seconds=S`.
#![allow(clippy::unwrap_used, clippy::disallowed_methods)]

#[path = "common/mod.rs"]
mod common;

use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use mio::net::UdpSocket;
use mio::{Events, Interest, Poll, Token};
use palisade_relay::batch::{BATCH, Batch};

fn main() {
    let args = common::Args::parse();
    let topo = common::Topo::from_args(&args);
    let rate: f64 = args.get("rate", 100_000.0);
    let total: u64 = args.get("packets", 1_000_000);
    let max_seconds: f64 = args.get("max-seconds", 60.0);
    let targets: Vec<(SocketAddr, SocketAddr)> = match args.opt("targets") {
        Some(file) => std::fs::read_to_string(&file)
            .unwrap()
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| {
                let mut it = l.split_whitespace();
                (
                    it.next().unwrap().parse().unwrap(),
                    it.next().unwrap().parse().unwrap(),
                )
            })
            .collect(),
        None => (0..topo.sessions)
            .map(|i| (topo.a_local(i), topo.b_local(i)))
            .collect(),
    };
    assert_eq!(targets.len(), topo.sessions, "one target line per session");
    // Peer sockets: [A0..AK, B0..BK].
    let k = topo.sockets;
    let mut socks: Vec<UdpSocket> = Vec::new();
    for side in 0..2 {
        for j in 0..k {
            let addr = if side == 0 {
                topo.peer_a(j)
            } else {
                topo.peer_b(j)
            };
            let s = palisade_relay::sock::bind_media(addr, 0).unwrap();
            socks.push(UdpSocket::from_std(s));
        }
    }
    let fds: Vec<i32> = socks.iter().map(|s| s.as_raw_fd()).collect();
    let received = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let rx_thread = {
        let received = received.clone();
        let done = done.clone();
        std::thread::spawn(move || {
            let mut poll = Poll::new().unwrap();
            for (n, s) in socks.iter_mut().enumerate() {
                poll.registry()
                    .register(s, Token(n), Interest::READABLE)
                    .unwrap();
            }
            let mut events = Events::with_capacity(64);
            let mut batch = Batch::new();
            let mut quiet_since: Option<Instant> = None;
            loop {
                poll.poll(&mut events, Some(Duration::from_millis(50))).ok();
                let mut got_any = false;
                for ev in events.iter() {
                    while let Ok(n) = batch.recv(socks[ev.token().0].as_raw_fd()) {
                        got_any = true;
                        received.fetch_add(n as u64, Ordering::Relaxed);
                        if n < BATCH {
                            break;
                        }
                    }
                }
                if done.load(Ordering::Acquire) {
                    if got_any {
                        quiet_since = None;
                    } else if quiet_since.get_or_insert_with(Instant::now).elapsed()
                        > Duration::from_millis(500)
                    {
                        return;
                    }
                }
            }
        })
    };
    // Send order: grouped by source socket so batches share one.
    let mut order: Vec<(usize, usize)> =
        (0..topo.sessions).flat_map(|i| [(i, 0), (i, 1)]).collect();
    order.sort_by_key(|&(i, dir)| (dir * k + i % k, i));
    let mut seq = vec![0u16; 2 * topo.sessions];
    let mut batch = Batch::new();
    let mut items: Vec<(usize, SocketAddr)> = Vec::with_capacity(BATCH);
    let start = Instant::now();
    let mut sent: u64 = 0;
    let mut cursor = 0usize;
    let mut cur_fd = -1;
    let flush = |batch: &mut Batch, items: &mut Vec<(usize, SocketAddr)>, fd: i32| -> u64 {
        if items.is_empty() {
            return 0;
        }
        let s = batch.send(fd, items);
        items.clear();
        (s.sent + s.failed) as u64
    };
    while sent < total {
        let elapsed = start.elapsed().as_secs_f64();
        if elapsed > max_seconds {
            break;
        }
        let due = ((elapsed * rate) as u64).min(total);
        if due <= sent {
            std::thread::sleep(Duration::from_micros(200));
            continue;
        }
        let mut todo = due - sent;
        while todo > 0 {
            let (i, dir) = order[cursor];
            cursor = (cursor + 1) % order.len();
            let fd = fds[dir * k + i % k];
            if fd != cur_fd || items.len() == BATCH {
                let n = flush(&mut batch, &mut items, cur_fd);
                sent += n;
                cur_fd = fd;
            }
            let s = &mut seq[2 * i + dir];
            *s = s.wrapping_add(1);
            let slot = items.len();
            let buf = batch.buffer(slot);
            buf.clear();
            buf.extend_from_slice(&[0x80, if dir == 0 { 0 } else { 8 }]);
            buf.extend_from_slice(&s.to_be_bytes());
            buf.extend_from_slice(&(u32::from(*s) * 160).to_be_bytes());
            buf.extend_from_slice(&((2 * i + dir) as u32).to_be_bytes());
            buf.resize(172, 0xd5);
            let dst = if dir == 0 { targets[i].0 } else { targets[i].1 };
            items.push((slot, dst));
            todo -= 1;
        }
        let n = flush(&mut batch, &mut items, cur_fd);
        sent += n;
    }
    let seconds = start.elapsed().as_secs_f64();
    done.store(true, Ordering::Release);
    rx_thread.join().unwrap();
    println!(
        "sent={sent} received={} seconds={seconds:.3}",
        received.load(Ordering::Relaxed)
    );
}
