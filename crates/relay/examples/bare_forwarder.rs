//! Benchmark ceiling: a bare UDP forwarder on the same address plan and the
//! same batched I/O (`recvmmsg`/`sendmmsg`, mio) as the relay, but no
//! parsing, no latching, no statistics: a packet on session i's A port
//! leaves from its B port to B's peer, and the reverse. Prints `ready`,
//! forwards for `--seconds`, then exits.
#![allow(clippy::unwrap_used, clippy::disallowed_methods)]

#[path = "common/mod.rs"]
mod common;

use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use mio::net::UdpSocket;
use mio::{Events, Interest, Poll, Token};
use palisade_relay::batch::{BATCH, Batch};
use palisade_relay::sock::bind_media;

fn main() {
    let args = common::Args::parse();
    let topo = common::Topo::from_args(&args);
    let threads: usize = args.get("threads", 1).max(1);
    let seconds: u64 = args.get("seconds", 60);
    let mut handles = Vec::new();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    for t in 0..threads {
        let ready = ready_tx.clone();
        handles.push(std::thread::spawn(move || {
            let mut poll = Poll::new().unwrap();
            // socks[2k] = A side, socks[2k+1] = B side; dst[n] = where packets
            // arriving on socks[n] go (sent from socks[n ^ 1]).
            let mut socks = Vec::new();
            let mut dst: Vec<SocketAddr> = Vec::new();
            for i in (0..topo.sessions).filter(|i| i % threads == t) {
                for (local, to) in [
                    (topo.a_local(i), topo.peer_b(i)),
                    (topo.b_local(i), topo.peer_a(i)),
                ] {
                    let mut s = UdpSocket::from_std(bind_media(local, 46).unwrap());
                    poll.registry()
                        .register(&mut s, Token(socks.len()), Interest::READABLE)
                        .unwrap();
                    socks.push(s);
                    dst.push(to);
                }
            }
            ready.send(()).unwrap();
            let mut events = Events::with_capacity(1024);
            let mut batch = Batch::new();
            let mut items = Vec::with_capacity(BATCH);
            let end = Instant::now() + Duration::from_secs(seconds);
            while Instant::now() < end {
                poll.poll(&mut events, Some(Duration::from_millis(100)))
                    .ok();
                for ev in events.iter() {
                    let n = ev.token().0;
                    while let Ok(got) = batch.recv(socks[n].as_raw_fd()) {
                        items.clear();
                        items.extend((0..got).map(|k| (k, dst[n])));
                        batch.send(socks[n ^ 1].as_raw_fd(), &items);
                        if got < BATCH {
                            break;
                        }
                    }
                }
            }
        }));
    }
    for _ in 0..threads {
        ready_rx.recv().unwrap();
    }
    println!("ready sessions={} threads={threads}", topo.sessions);
    for h in handles {
        h.join().unwrap();
    }
}
