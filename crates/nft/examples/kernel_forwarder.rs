//! Benchmark: kernel forwarding (the media table, conntrack NAT) on the
//! relay benchmark's address plan (see bench/media/README.md).
//!
//! Installs the media table `--table` (default `relaybench`; local ranges
//! `relay-a` and `relay-b`, ports `port-base`..=29999, max_streams =
//! sessions, DSCP 46), binds a UDP socket on every relay port (as a relay
//! keeps its sockets bound; the table forwards before they see anything),
//! hands every session's two directions to the kernel in batches of
//! `--batch` directions over netlink, prints `ready sessions=N`, then waits
//! `--seconds` (at most one hour), or until stdin reaches EOF with
//! `--eof-stops true` (bench/media/run.sh stops it that way). On the way
//! out it prints the kernel's `fwd` counters (`kernel packets=N
//! directions=N`), removes the streams (elements and connections) and
//! deletes the table. Killed by a signal it leaves the table behind: run it
//! in a network namespace of its own (run.sh does), which takes the table
//! along when deleted.
//!
//! Needs CAP_NET_ADMIN and `nft`.
#![allow(clippy::unwrap_used)]

#[path = "../../relay/examples/common/mod.rs"]
mod common;

use std::io::Read as _;
use std::net::UdpSocket;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use palisade_nft::Nft;
use palisade_nft::Ports;
use palisade_nft::media::{Direction, MediaOffload, MediaTableSpec};

/// The longest `--seconds` honoured.
const MAX_SECONDS: u64 = 3600;

fn main() {
    let args = common::Args::parse();
    let topo = common::Topo::from_args(&args);
    let seconds: u64 = args.get("seconds", 60u64).min(MAX_SECONDS);
    let table: String = args.get("table", "relaybench".to_owned());
    let batch: usize = args.get("batch", 128usize).max(2);
    let eof_stops: bool = args.get("eof-stops", false);
    let last_port = topo
        .port_base
        .checked_add(u16::try_from(2 * topo.sessions).unwrap_or(u16::MAX))
        .unwrap_or_else(|| fail("the sessions' ports do not fit below 65536"))
        .max(29999);

    let nft = Nft::new(&table);
    let spec = MediaTableSpec {
        name: table.clone(),
        local: [topo.relay_a, topo.relay_b]
            .into_iter()
            .map(|ip| {
                (
                    ip,
                    Ports {
                        first: topo.port_base,
                        last: last_port,
                    },
                )
            })
            .collect(),
        max_streams: u32::try_from(topo.sessions).unwrap_or(u32::MAX),
        dscp: 46,
    };
    if let Err(e) = nft.install_media(&spec) {
        fail(&format!("installing the media table: {e}"));
    }
    // From here on the table exists: every failure removes it.
    let die = |what: String| -> ! {
        let _ = nft.remove();
        fail(&what)
    };

    let mut sockets = Vec::with_capacity(2 * topo.sessions);
    for i in 0..topo.sessions {
        for local in [topo.a_local(i), topo.b_local(i)] {
            match UdpSocket::bind(local) {
                Ok(s) => sockets.push(s),
                Err(e) => die(format!("binding {local}: {e}")),
            }
        }
    }

    // Session i, A: A's peer -> Palisade's A port, out of Palisade's B port
    // to B's peer; B: the reverse.
    let directions: Vec<Direction> = (0..topo.sessions)
        .flat_map(|i| {
            [
                Direction {
                    peer: topo.peer_a(i),
                    local: topo.a_local(i),
                    out_local: topo.b_local(i),
                    out_peer: topo.peer_b(i),
                },
                Direction {
                    peer: topo.peer_b(i),
                    local: topo.b_local(i),
                    out_local: topo.a_local(i),
                    out_peer: topo.peer_a(i),
                },
            ]
        })
        .collect();
    let mut offload = match MediaOffload::open(&table) {
        Ok(o) => o,
        Err(e) => die(format!("netlink: {e}")),
    };
    for chunk in directions.chunks(batch) {
        if let Err(e) = offload.apply(chunk, &[]) {
            die(format!("adding streams: {e}"));
        }
    }
    println!(
        "ready sessions={} directions={} table={table}",
        topo.sessions,
        directions.len()
    );

    let stop = Arc::new(AtomicBool::new(false));
    if eof_stops {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut sink = [0u8; 256];
            let mut stdin = std::io::stdin().lock();
            while matches!(stdin.read(&mut sink), Ok(n) if n > 0) {}
            stop.store(true, Ordering::Release);
        });
    }
    // Counted sleeps, not a clock: bounded either way.
    for _ in 0..seconds * 10 {
        if stop.load(Ordering::Acquire) {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }

    let mut counters = Vec::new();
    match offload.counters(&mut counters) {
        Ok(()) => println!(
            "kernel packets={} bytes={} directions={}",
            counters.iter().map(|c| c.packets).sum::<u64>(),
            counters.iter().map(|c| c.bytes).sum::<u64>(),
            counters.len()
        ),
        Err(e) => eprintln!("kernel_forwarder: reading counters: {e}"),
    }
    let mut code = 0;
    for chunk in directions.chunks(batch) {
        if let Err(e) = offload.apply(&[], chunk) {
            eprintln!("kernel_forwarder: removing streams: {e}");
            code = 1;
            break;
        }
    }
    drop(sockets);
    if let Err(e) = nft.remove() {
        eprintln!("kernel_forwarder: removing table {table}: {e}");
        code = 1;
    }
    std::process::exit(code);
}

fn fail(what: &str) -> ! {
    eprintln!("kernel_forwarder: {what}");
    std::process::exit(1);
}
