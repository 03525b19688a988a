//! Entry point for the `engine` fuzz target: decodes the input into a
//! sequence of datagrams from the lab's peers and clock steps, feeds the
//! engine (quickstart config), and checks that it never panics, never
//! reports an internal error, and that every message it sends parses.

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
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

/// The quickstart config with the edge features on, so fuzzed input also
/// reaches the registrar, digest checks, outbound registration, keepalives
/// and calls to registered users: the PBX trunk registers users and
/// challenges INVITEs, the carrier wants credentials and a registration.
fn config_text() -> String {
    let base = include_str!("../../../configs/quickstart.yaml");
    let carrier_cac = "    cac:\n      max_concurrent_calls: 500\n";
    let carrier_edge = "    auth: {username: fuzz, password: secret}\n    registration: {expires_seconds: 120, retry_seconds: 1}\n    keepalive: {method: options, interval_seconds: 5}\n";
    let inbound_route = "    number_prefixes: [\"+4930123\"]\n    to_trunk: pbx\n";
    format!(
        "{}\nregistrar:\n  trunk: pbx\n  realm: fuzz\n  users:\n    - user: \"+4930123555\"\n      ha1_md5: 0123456789abcdef0123456789abcdef\nnat:\n  keepalive: {{method: crlf, interval_seconds: 5}}\n",
        base.replacen(carrier_cac, &format!("{carrier_edge}{carrier_cac}"), 1)
            .replacen(
                inbound_route,
                &format!("{inbound_route}    to_registered: true\n"),
                1
            )
    )
}

/// Runs one fuzz input. `origin` is the virtual clock's start.
pub fn drive(origin: Instant, data: &[u8]) {
    // Loaded once per process: parsing YAML per input would dominate the run.
    static CONFIG: OnceLock<Option<Arc<palisade_config::Config>>> = OnceLock::new();
    let Some(cfg) = CONFIG.get_or_init(|| {
        palisade_config::load_str(&config_text(), "quickstart.yaml+edge")
            .ok()
            .map(Arc::new)
    }) else {
        return;
    };
    let mut engine = Engine::new(Arc::clone(cfg), [1; 32]);
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

#[cfg(test)]
mod tests {
    #[test]
    fn the_fuzz_config_loads_with_the_edge_features_on() {
        let cfg = palisade_config::load_str(&super::config_text(), "fuzz")
            .unwrap_or_else(|e| panic!("the fuzz target would test nothing: {e:?}"));
        assert!(cfg.registrar().is_some());
        let carrier = cfg.trunks().iter().find(|t| t.name == "carrier").unwrap();
        assert!(carrier.auth.is_some() && carrier.registration.is_some());
        assert!(cfg.routes().iter().any(|r| r.to_registered));
    }
}
