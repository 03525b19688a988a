//! Benchmark: the Palisade relay in its own process. Opens `--sessions`
//! plain-RTP sessions (rtcp-mux, Learn latching) on the benchmark address
//! plan through the `Relay` API, prints `ready`, relays for `--seconds`,
//! prints its counters and stops.
#![allow(clippy::unwrap_used, clippy::disallowed_methods)]

#[path = "common/mod.rs"]
mod common;

use std::sync::mpsc::sync_channel;
use std::time::{Duration, Instant};

use palisade_relay::{Command, Endpoint, Latch, Relay, RelayConfig, SessionId};
use smallvec::SmallVec;

fn main() {
    let args = common::Args::parse();
    let topo = common::Topo::from_args(&args);
    let threads: usize = args.get("threads", 1);
    let seconds: u64 = args.get("seconds", 60);
    let (tx, rx) = sync_channel(4096);
    let cfg = RelayConfig {
        threads,
        command_queue: 4096,
        ..RelayConfig::default()
    };
    let (relay, ctl) = Relay::start(cfg, tx).expect("relay start");
    let ep = |local, remote| Endpoint {
        local,
        rtcp_mux: true,
        remote: Some(remote),
        remote_rtcp: None,
        latch: Latch::Learn,
        srtp_recv: None,
        srtp_send: None,
        pt_map: SmallVec::new(),
        on_hold: false,
    };
    for i in 0..topo.sessions {
        let mut cmd = Command::Open {
            session: SessionId(i as u64),
            stream: 0,
            a: ep(topo.a_local(i), topo.peer_a(i)),
            b: ep(topo.b_local(i), topo.peer_b(i)),
        };
        // The queue is bounded: retry while the threads catch up.
        loop {
            match ctl.send(cmd) {
                Ok(()) => break,
                Err(busy) => {
                    cmd = busy.0;
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
        }
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while ctl.stats().ports_bound < 2 * topo.sessions as u64 {
        if let Ok(r) = rx.try_recv() {
            eprintln!("relay_server: {r:?}");
            std::process::exit(3);
        }
        assert!(Instant::now() < deadline, "sessions not open after 30 s");
        std::thread::sleep(Duration::from_millis(10));
    }
    println!("ready sessions={} threads={}", topo.sessions, ctl.threads());
    let end = Instant::now() + Duration::from_secs(seconds);
    while Instant::now() < end {
        std::thread::sleep(Duration::from_millis(100));
        while rx.try_recv().is_ok() {}
    }
    println!("{:?}", ctl.stats());
    relay.stop();
}
