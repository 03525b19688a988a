//! CPU of one whole anchored call in the sans-IO core: the engine and the
//! media manager (no sockets, no relay, no logging), INVITE with SDP, 100,
//! 180, 200 with SDP, ACK, BYE, 200, timers run. The figure includes the
//! peers' share (parsing what Palisade sent, writing their answers), so read
//! it as a before/after comparison of the core. What is left of a call's
//! CPU in `bench/sbc/run.py` beyond this is the kernel (sockets, wakeups)
//! and the binary's loop. Run: `cargo bench -p palisade-media --bench call`.

#![allow(clippy::unwrap_used)]

#[path = "../../b2bua/tests/support/mod.rs"]
mod support;

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use palisade_b2bua::Engine;
use palisade_media::{RelaySink, SharedMedia};
use palisade_relay::{Busy, Command};
use palisade_sip::{Message, ParseLimits, Transport};
use support::{CARRIER_SDP, INSIDE, OUTSIDE, PBX, PBX_SDP, PeerDialog, addr, pbx_invite, reply};

/// The relay's queue, minus the relay.
#[derive(Debug)]
struct Discard;

impl RelaySink for Discard {
    #[allow(clippy::result_large_err)]
    fn send(&mut self, _cmd: Command) -> Result<(), Busy> {
        Ok(())
    }
}

const CONFIG: &str = "
zones:
  - name: inside
    sip_address: 127.0.0.1
    media: {port_min: 20000, port_max: 29999}
  - name: outside
    sip_address: 127.0.0.2
    media: {port_min: 30000, port_max: 39999}
trunks:
  - name: pbx
    zone: inside
    members: [{address: 127.0.0.10, port: 5070}]
  - name: carrier
    zone: outside
    members: [{address: 127.0.0.20, port: 5080}]
routes:
  - {name: out, from_trunk: pbx, to_trunk: carrier}
";
const CARRIER: &str = "127.0.0.20:5080";

struct Rig {
    engine: Engine,
    now: Instant,
    n: u32,
    limits: ParseLimits,
}

impl Rig {
    #[allow(clippy::disallowed_methods)] // the virtual clock needs one real origin
    fn new() -> Self {
        let cfg = palisade_config::load_str(CONFIG, "bench.yaml").unwrap();
        let media = SharedMedia::new(&cfg, Box::new(Discard), [5; 32]);
        let mut engine = Engine::new(Arc::new(cfg), [4; 32]);
        engine.set_media(Box::new(media));
        Rig {
            engine,
            now: Instant::now(),
            n: 0,
            limits: ParseLimits::default(),
        }
    }

    /// What the engine sent since the last call, parsed as a peer would.
    fn sent(&mut self) -> Vec<(std::net::SocketAddr, Message)> {
        let mut out = Vec::new();
        while let Some(t) = self.engine.poll_transmit() {
            out.push((t.flow.remote, Message::parse(t.data, &self.limits).unwrap()));
        }
        while self.engine.poll_event().is_some() {}
        out
    }

    fn recv(&mut self, zone: palisade_config::ZoneId, from: &str, data: bytes::Bytes) {
        self.engine
            .handle_message(self.now, zone, Transport::Udp, addr(from), data);
    }

    fn request_to(&mut self, to: &str) -> Message {
        let want = addr(to);
        self.sent()
            .into_iter()
            .find(|(r, m)| *r == want && m.method().is_some())
            .map(|(_, m)| m)
            .unwrap()
    }

    /// One whole call; the clock moves 10 ms per call so timers run.
    fn call(&mut self) {
        self.n += 1;
        let n = self.n;
        let invite = pbx_invite(n, "+4971100100", Some(PBX_SDP));
        self.recv(INSIDE, PBX, invite.clone());
        let invite_b = self.request_to(CARRIER);
        let tag = format!("c{n}");
        let contact = Some("<sip:carrier@127.0.0.20:5080>");
        self.recv(OUTSIDE, CARRIER, reply(&invite_b, 100, None, None, None));
        self.recv(
            OUTSIDE,
            CARRIER,
            reply(&invite_b, 180, Some(&tag), contact, None),
        );
        self.recv(
            OUTSIDE,
            CARRIER,
            reply(&invite_b, 200, Some(&tag), contact, Some(CARRIER_SDP)),
        );
        let ok = self
            .sent()
            .into_iter()
            .find(|(r, m)| *r == addr(PBX) && m.status() == Some(200))
            .map(|(_, m)| m)
            .unwrap();
        let mut pbx = PeerDialog::from_uac_side(&invite, &ok, "127.0.0.10:5070");
        pbx.branch_seq = n * 16;
        self.recv(INSIDE, PBX, pbx.ack(1, None));
        self.recv(INSIDE, PBX, pbx.request("BYE", None, None));
        let bye_b = self.request_to(CARRIER);
        self.recv(OUTSIDE, CARRIER, reply(&bye_b, 200, None, None, None));
        self.sent();
        self.now += Duration::from_millis(10);
        self.engine.handle_timeout(self.now);
        self.sent();
    }
}

fn bench(c: &mut Criterion) {
    let mut rig = Rig::new();
    let mut g = c.benchmark_group("call");
    g.throughput(Throughput::Elements(1));
    g.bench_function("anchored call, engine + media manager", |b| {
        b.iter(|| {
            rig.call();
            black_box(&rig.engine);
        });
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
