//! Shared by the benchmark examples: a tiny `--key value` parser and the
//! benchmark's address plan (see bench/media/README.md).
#![allow(dead_code)]

use std::net::{IpAddr, SocketAddr};

/// `--key value` arguments.
pub struct Args(Vec<String>);

impl Args {
    pub fn parse() -> Args {
        let a: Vec<String> = std::env::args().skip(1).collect();
        if a.iter().any(|x| x == "--help" || x == "-h") {
            eprintln!("options: --key value (see bench/media/README.md)");
            std::process::exit(0);
        }
        Args(a)
    }

    pub fn get<T: std::str::FromStr>(&self, key: &str, default: T) -> T {
        let flag = format!("--{key}");
        match self.0.iter().position(|x| *x == flag) {
            None => default,
            Some(i) => match self.0.get(i + 1).map(|v| v.parse::<T>()) {
                Some(Ok(v)) => v,
                _ => {
                    eprintln!("bad or missing value for {flag}");
                    std::process::exit(2);
                }
            },
        }
    }

    pub fn opt(&self, key: &str) -> Option<String> {
        let flag = format!("--{key}");
        let i = self.0.iter().position(|x| *x == flag)?;
        self.0.get(i + 1).cloned()
    }
}

/// Where everything lives: session `i` is relayed between `a_local(i)` and
/// `b_local(i)`; its peers are generator sockets shared by every `sockets`-th
/// session.
#[derive(Clone, Copy)]
pub struct Topo {
    pub sessions: usize,
    pub relay_a: IpAddr,
    pub relay_b: IpAddr,
    pub port_base: u16,
    pub peer_a: IpAddr,
    pub peer_b: IpAddr,
    pub peer_port: u16,
    pub sockets: usize,
}

impl Topo {
    pub fn from_args(a: &Args) -> Topo {
        Topo {
            sessions: a.get("sessions", 1000usize),
            relay_a: a.get(
                "relay-a",
                "127.0.77.100"
                    .parse()
                    .unwrap_or(IpAddr::from([127, 0, 0, 1])),
            ),
            relay_b: a.get(
                "relay-b",
                "127.0.77.101"
                    .parse()
                    .unwrap_or(IpAddr::from([127, 0, 0, 1])),
            ),
            port_base: a.get("port-base", 20000u16),
            peer_a: a.get(
                "peer-a",
                "127.0.78.100"
                    .parse()
                    .unwrap_or(IpAddr::from([127, 0, 0, 1])),
            ),
            peer_b: a.get(
                "peer-b",
                "127.0.78.101"
                    .parse()
                    .unwrap_or(IpAddr::from([127, 0, 0, 1])),
            ),
            peer_port: a.get("peer-port", 40000u16),
            sockets: a.get("sockets", 4usize).max(1),
        }
    }

    pub fn a_local(&self, i: usize) -> SocketAddr {
        SocketAddr::new(self.relay_a, self.port_base + 2 * i as u16)
    }
    pub fn b_local(&self, i: usize) -> SocketAddr {
        SocketAddr::new(self.relay_b, self.port_base + 2 * i as u16)
    }
    pub fn peer_a(&self, i: usize) -> SocketAddr {
        SocketAddr::new(self.peer_a, self.peer_port + (i % self.sockets) as u16)
    }
    pub fn peer_b(&self, i: usize) -> SocketAddr {
        SocketAddr::new(self.peer_b, self.peer_port + (i % self.sockets) as u16)
    }
}
