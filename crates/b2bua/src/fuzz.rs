//! Entry point for the `engine` fuzz target: decodes the input into a
//! sequence of datagrams from the lab's peers and clock steps, feeds the
//! engine (quickstart config), and checks that it never panics, never
//! reports an internal error, and that every message it sends parses.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use palisade_config::ZoneId;
use palisade_sip::{Message, ParseLimits, Transport};

use crate::Engine;

const PEERS: [(u16, &str); 4] = [
    (0, "127.0.0.10:5070"),
    (1, "127.0.0.20:5080"),
    (1, "127.0.0.21:5080"),
    (0, "127.0.0.66:5060"),
];

/// Runs one fuzz input. `origin` is the virtual clock's start.
pub fn drive(origin: Instant, data: &[u8]) {
    let Ok(cfg) = palisade_config::load_str(
        include_str!("../../../configs/quickstart.yaml"),
        "quickstart.yaml",
    ) else {
        return;
    };
    let mut engine = Engine::new(Arc::new(cfg), [1; 32]);
    let mut now = origin;
    let mut sent: Vec<Bytes> = Vec::new();
    // Records: [op, peer, len_hi, len_lo, bytes...]; op selects datagram,
    // replay of something Palisade sent, or a clock step.
    let mut rest = data;
    while rest.len() >= 2 {
        let (op, peer) = (rest[0], usize::from(rest[1]) % PEERS.len());
        rest = &rest[2..];
        let (zone, addr) = PEERS[peer];
        let Ok(remote) = addr.parse::<SocketAddr>() else {
            return;
        };
        match op % 3 {
            0 => {
                let len = rest
                    .first()
                    .map_or(0, |&b| usize::from(b) * 8)
                    .min(rest.len().saturating_sub(1));
                let msg = rest.get(1..=len).unwrap_or_default();
                rest = rest.get(len + 1..).unwrap_or_default();
                engine.handle_message(
                    now,
                    ZoneId(zone),
                    Transport::Udp,
                    remote,
                    Bytes::copy_from_slice(msg),
                );
            }
            1 => {
                if let Some(m) = sent.get(usize::from(op) % sent.len().max(1)).cloned() {
                    engine.handle_message(now, ZoneId(zone), Transport::Udp, remote, m);
                }
            }
            _ => {
                now += Duration::from_millis(u64::from(op) * 250);
                engine.handle_timeout(now);
            }
        }
        while let Some(t) = engine.poll_transmit() {
            let limits = ParseLimits {
                max_message_bytes: usize::MAX,
                max_headers: usize::MAX,
            };
            if let Err(e) = Message::parse(t.data.clone(), &limits) {
                panic!("engine sent an unparseable message: {e}");
            }
            if sent.len() < 256 {
                sent.push(t.data);
            }
        }
        while engine.poll_event().is_some() {}
    }
    engine.terminate_all(now);
    engine.handle_timeout(now + Duration::from_secs(600));
    assert_eq!(engine.stats().internal_errors, 0);
}
