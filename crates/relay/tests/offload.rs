//! Kernel forwarding policy, over real UDP on loopback with a recording
//! offloader in place of the kernel: which streams are handed over and
//! when, what is taken back (update, re-latch, close), and how the kernel's
//! counters keep an offloaded stream alive and counted. The kernel side
//! itself (nftables + conntrack) is proved in `palisade-nft`'s tests and
//! the end-to-end media test. Addresses: relay 127.0.77.2NN, peers
//! 127.0.78.2NN.
#![allow(clippy::unwrap_used)]
#![allow(clippy::disallowed_methods)]

use std::collections::HashMap;
use std::net::{SocketAddr, UdpSocket};
use std::sync::mpsc::{Receiver, sync_channel};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use palisade_relay::{
    Command, Endpoint, FlowCounters, Latch, OffloadConfig, OffloadFlow, OffloadOp, OffloadStream,
    Offloader, Relay, RelayConfig, RelayControl, Report, SessionId, Side,
};
use smallvec::SmallVec;

#[derive(Debug, Default)]
struct Kernel {
    ops: Vec<OffloadOp>,
    counters: HashMap<OffloadFlow, (u64, u64)>,
    fail: bool,
}

#[derive(Debug, Clone, Default)]
struct Fake(Arc<Mutex<Kernel>>);

impl Offloader for Fake {
    fn apply(&mut self, ops: &[OffloadOp]) -> Result<(), String> {
        let mut k = self.0.lock().unwrap();
        if k.fail {
            return Err("refused".into());
        }
        for op in ops {
            k.ops.push(*op);
            match op {
                OffloadOp::Add(s) => {
                    for f in s.flows() {
                        k.counters.insert(f, (0, 0));
                    }
                }
                OffloadOp::Remove(s) => {
                    for f in s.flows() {
                        k.counters.remove(&f);
                    }
                }
            }
        }
        Ok(())
    }

    fn counters(&mut self, out: &mut Vec<FlowCounters>) -> Result<(), String> {
        let k = self.0.lock().unwrap();
        out.extend(
            k.counters
                .iter()
                .map(|(f, &(packets, bytes))| FlowCounters {
                    flow: *f,
                    packets,
                    bytes,
                }),
        );
        Ok(())
    }
}

impl Fake {
    fn ops(&self) -> Vec<OffloadOp> {
        self.0.lock().unwrap().ops.clone()
    }

    /// The kernel forwarded `n` more 200-byte packets each way.
    fn forward(&self, n: u64) {
        for v in self.0.lock().unwrap().counters.values_mut() {
            v.0 += n;
            v.1 += 200 * n;
        }
    }
}

/// Streams are handed over after this much RTP in user space.
const AFTER_MS: u64 = 300;

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn start(timeout_ms: u64) -> (Relay, RelayControl, Receiver<Report>, Fake) {
    let (tx, rx) = sync_channel(64);
    let cfg = RelayConfig {
        threads: 2,
        timeout: Duration::from_millis(timeout_ms),
        hold_timeout: Duration::from_millis(timeout_ms),
        dscp: 0,
        command_queue: 64,
    };
    let fake = Fake::default();
    let ocfg = OffloadConfig {
        after: Duration::from_millis(AFTER_MS),
        poll: Duration::from_millis(40),
        forward_v4: false,
        forward_v6: false,
    };
    let (relay, ctl) =
        Relay::start_with_offload(cfg, tx, Some((ocfg, Box::new(fake.clone())))).unwrap();
    (relay, ctl, rx, fake)
}

fn endpoint(local: &str, remote: &str) -> Endpoint {
    Endpoint {
        local: addr(local),
        rtcp_mux: true,
        remote: Some(addr(remote)),
        remote_rtcp: None,
        latch: Latch::Learn,
        srtp_recv: None,
        srtp_send: None,
        pt_map: SmallVec::new(),
        on_hold: false,
    }
}

fn peer(a: &str) -> UdpSocket {
    let s = UdpSocket::bind(a).unwrap();
    s.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    s
}

fn rtp(seq: u16) -> Vec<u8> {
    let mut p = vec![0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 7];
    p[2..4].copy_from_slice(&seq.to_be_bytes());
    p[4..8].copy_from_slice(&(u32::from(seq) * 160).to_be_bytes());
    p.extend(std::iter::repeat_n(0xd5, 160));
    p
}

/// RTP both ways for `ms`, 20 ms apart; returns how many came through to B.
fn talk(pa: &UdpSocket, ra: SocketAddr, pb: &UdpSocket, rb: SocketAddr, ms: u64) -> usize {
    let mut got = 0;
    let mut buf = [0u8; 2048];
    // The Open is asynchronous: first make sure the relay has the session.
    let mut primed = false;
    for _ in 0..50 {
        pa.send_to(&rtp(0), ra).unwrap();
        if pb.recv_from(&mut buf).is_ok() {
            primed = true;
            break;
        }
    }
    assert!(primed, "the relay never forwarded A's RTP");
    let end = Instant::now() + Duration::from_millis(ms);
    let mut seq = 0u16;
    while Instant::now() < end {
        seq += 1;
        pa.send_to(&rtp(seq), ra).unwrap();
        pb.send_to(&rtp(seq), rb).unwrap();
        if pb.recv_from(&mut buf).is_ok() {
            got += 1;
        }
        let _ = pa.recv_from(&mut buf);
        std::thread::sleep(Duration::from_millis(20));
    }
    got
}

fn wait_for(what: &str, ms: u64, mut f: impl FnMut() -> bool) {
    let end = Instant::now() + Duration::from_millis(ms);
    while Instant::now() < end {
        if f() {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    panic!("timed out waiting for {what}");
}

fn closed(ctl: &RelayControl, rx: &Receiver<Report>, id: u64) -> Report {
    ctl.send(Command::Close {
        session: SessionId(id),
    })
    .unwrap();
    let end = Instant::now() + Duration::from_secs(3);
    while Instant::now() < end {
        if let Ok(r @ Report::Closed { .. }) = rx.recv_timeout(Duration::from_millis(200)) {
            return r;
        }
    }
    panic!("no Closed");
}

fn key(pa: &str, la: &str, pb: &str, lb: &str) -> OffloadStream {
    OffloadStream {
        a: OffloadFlow {
            peer: addr(pa),
            local: addr(la),
        },
        b: OffloadFlow {
            peer: addr(pb),
            local: addr(lb),
        },
    }
}

/// Test `n`'s stream (session `n`): Palisade's ports 127.0.77.N:20000 (A)
/// and :30000 (B), the peers 127.0.78.N:4000 and :5000.
struct Pair {
    id: u64,
    la: String,
    lb: String,
    peer_a: String,
    peer_b: String,
    pa: UdpSocket,
    pb: UdpSocket,
}

fn pair(n: u8) -> Pair {
    let (peer_a, peer_b) = (format!("127.0.78.{n}:4000"), format!("127.0.78.{n}:5000"));
    Pair {
        id: u64::from(n),
        la: format!("127.0.77.{n}:20000"),
        lb: format!("127.0.77.{n}:30000"),
        pa: peer(&peer_a),
        pb: peer(&peer_b),
        peer_a,
        peer_b,
    }
}

impl Pair {
    /// B's endpoint as signalled in the Open.
    fn b(&self) -> Endpoint {
        endpoint(&self.lb, &self.peer_b)
    }

    /// Opens the session with A's endpoint and `b`.
    fn open(&self, ctl: &RelayControl, b: Endpoint) {
        ctl.send(Command::Open {
            session: SessionId(self.id),
            stream: 0,
            a: endpoint(&self.la, &self.peer_a),
            b,
        })
        .unwrap();
    }

    /// RTP both ways for `ms` (B's end: `pb`).
    fn talk_with(&self, pb: &UdpSocket, ms: u64) -> usize {
        talk(&self.pa, addr(&self.la), pb, addr(&self.lb), ms)
    }

    fn talk(&self, ms: u64) -> usize {
        self.talk_with(&self.pb, ms)
    }

    /// The stream as the kernel would be given it, B's peer at `peer_b`.
    fn key(&self, peer_b: &str) -> OffloadStream {
        key(&self.peer_a, &self.la, peer_b, &self.lb)
    }
}

#[test]
fn plain_stream_is_handed_over_kept_alive_by_counters_and_taken_back_on_close() {
    let (_relay, ctl, rx, fake) = start(500);
    let p = pair(201);
    p.open(&ctl, p.b());
    let expect = p.key(&p.peer_b);
    // Not before AFTER_MS of RTP relayed in user space (checked when the
    // first 100 ms of talk took less than that, as they do unless the
    // machine stalls).
    let t = Instant::now();
    assert!(p.talk(100) > 0);
    if t.elapsed() < Duration::from_millis(AFTER_MS - 50) {
        assert!(fake.ops().is_empty(), "too early: {:?}", fake.ops());
    }
    p.talk(AFTER_MS + 100);
    wait_for("the Add", 1000, || {
        fake.ops() == vec![OffloadOp::Add(expect)]
    });
    assert_eq!(ctl.stats().streams_offloaded, 1);
    // The peers now talk through "the kernel" only: the counters alone keep
    // the session from timing out (timeout 500 ms, 1 s of kernel traffic).
    for _ in 0..20 {
        fake.forward(2);
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        rx.try_iter().all(|r| !matches!(r, Report::Timeout { .. })),
        "kernel-forwarded media is media"
    );
    wait_for("the counters", 1000, || ctl.stats().packets_offloaded >= 80);
    let Report::Closed { streams, .. } = closed(&ctl, &rx, p.id) else {
        unreachable!()
    };
    // The removal reaches the kernel with the offload thread's next batch.
    wait_for("the Remove", 1000, || fake.ops().len() == 2);
    assert_eq!(
        fake.ops(),
        vec![OffloadOp::Add(expect), OffloadOp::Remove(expect)]
    );
    assert_eq!(ctl.stats().streams_offloaded, 0);
    let from_a = streams[0].from_a;
    assert_eq!(from_a.offloaded, 40, "{from_a:?}");
    assert!(from_a.packets > 40, "user-space packets and the kernel's");
    assert_eq!(from_a.lost, 0, "the hand-over is not loss: {from_a:?}");
    assert!(from_a.mos.is_some());
}

#[test]
fn silent_kernel_counters_let_the_media_timeout_fire() {
    let (_relay, ctl, rx, fake) = start(400);
    let p = pair(202);
    p.open(&ctl, p.b());
    p.talk(AFTER_MS + 200);
    wait_for("the Add", 1000, || !fake.ops().is_empty());
    let t0 = Instant::now();
    let r = rx.recv_timeout(Duration::from_secs(3)).unwrap();
    assert_eq!(
        r,
        Report::Timeout {
            session: SessionId(p.id)
        }
    );
    assert!(
        t0.elapsed() >= Duration::from_millis(250),
        "{:?}",
        t0.elapsed()
    );
}

#[test]
fn srtp_or_payload_rewrite_stays_in_user_space() {
    let (_relay, ctl, _rx, fake) = start(5000);
    let p = pair(203);
    let mut b = p.b();
    b.pt_map.push((0, 8));
    p.open(&ctl, b);
    assert!(p.talk(AFTER_MS + 200) > 5);
    assert!(fake.ops().is_empty(), "{:?}", fake.ops());
    assert_eq!(ctl.stats().streams_offloaded, 0);
}

#[test]
fn new_signalling_takes_the_stream_back_and_it_qualifies_again() {
    let (_relay, ctl, _rx, fake) = start(5000);
    let p = pair(204);
    let pb2 = peer("127.0.78.204:5002");
    p.open(&ctl, p.b());
    let first = p.key(&p.peer_b);
    p.talk(AFTER_MS + 200);
    wait_for("the Add", 1000, || {
        fake.ops() == vec![OffloadOp::Add(first)]
    });
    // A re-INVITE moves B to another port.
    ctl.send(Command::Update {
        session: SessionId(p.id),
        stream: 0,
        side: Side::B,
        endpoint: endpoint(&p.lb, "127.0.78.204:5002"),
    })
    .unwrap();
    wait_for("the Remove", 1000, || fake.ops().len() == 2);
    assert_eq!(fake.ops()[1], OffloadOp::Remove(first));
    p.talk_with(&pb2, AFTER_MS + 200);
    wait_for("the new Add", 1000, || fake.ops().len() == 3);
    assert_eq!(fake.ops()[2], OffloadOp::Add(p.key("127.0.78.204:5002")));
}

#[test]
fn a_refusing_kernel_is_counted_and_media_keeps_flowing() {
    let (_relay, ctl, _rx, fake) = start(5000);
    fake.0.lock().unwrap().fail = true;
    let p = pair(205);
    p.open(&ctl, p.b());
    p.talk(AFTER_MS + 200);
    wait_for("the failure", 1000, || ctl.stats().offload_failures > 0);
    assert!(ctl.take_offload_error().is_some_and(|e| e == "refused"));
    assert!(p.talk(200) > 5, "user space relays on");
}
