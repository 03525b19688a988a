//! The relay over real UDP on loopback: each test owns its own addresses
//! (relay side 127.0.77.N, peers 127.0.78.N) so tests run in parallel, and
//! plays the peers with plain sockets (SRTP peers use the `libsrtp` crate
//! directly, not the relay's wrapper).
#![allow(clippy::unwrap_used)]
// Real sockets, real time: the tests read the clock for their deadlines.
#![allow(clippy::disallowed_methods)]

use std::net::{SocketAddr, UdpSocket};
use std::sync::mpsc::{Receiver, sync_channel};
use std::time::{Duration, Instant};

use libsrtp::{MasterKey, ProtectionProfile, RecvSession, SendSession, StreamConfig};
use palisade_relay::{
    Command, Endpoint, Latch, Relay, RelayConfig, RelayControl, Report, SessionId, Side, SrtpKey,
    SrtpSuite, StreamStats,
};
use smallvec::SmallVec;

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn start(timeout_ms: u64, hold_ms: u64) -> (Relay, RelayControl, Receiver<Report>) {
    let (tx, rx) = sync_channel(64);
    let cfg = RelayConfig {
        threads: 2,
        timeout: Duration::from_millis(timeout_ms),
        hold_timeout: Duration::from_millis(hold_ms),
        dscp: 46,
        command_queue: 64,
    };
    let (relay, ctl) = Relay::start(cfg, tx).unwrap();
    (relay, ctl, rx)
}

fn endpoint(local: &str, remote: Option<&str>, mux: bool) -> Endpoint {
    Endpoint {
        local: addr(local),
        rtcp_mux: mux,
        remote: remote.map(addr),
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
    s.set_read_timeout(Some(Duration::from_millis(1500)))
        .unwrap();
    s
}

fn rtp(pt: u8, seq: u16, ssrc: u32) -> Vec<u8> {
    let mut p = vec![0x80, pt, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
    p[2..4].copy_from_slice(&seq.to_be_bytes());
    p[4..8].copy_from_slice(&(u32::from(seq) * 160).to_be_bytes());
    p[8..12].copy_from_slice(&ssrc.to_be_bytes());
    p.extend(std::iter::repeat_n((seq & 0xff) as u8, 160));
    p
}

fn recv(s: &UdpSocket) -> Option<(Vec<u8>, SocketAddr)> {
    let mut buf = [0u8; 2048];
    match s.recv_from(&mut buf) {
        Ok((n, from)) => Some((buf[..n].to_vec(), from)),
        Err(_) => None,
    }
}

/// Nothing arrives within `ms`.
fn silent(s: &UdpSocket, ms: u64) -> bool {
    s.set_read_timeout(Some(Duration::from_millis(ms))).unwrap();
    let r = recv(s).is_none();
    s.set_read_timeout(Some(Duration::from_millis(1500)))
        .unwrap();
    r
}

fn open(ctl: &RelayControl, id: u64, a: Endpoint, b: Endpoint) {
    ctl.send(Command::Open {
        session: SessionId(id),
        stream: 0,
        a,
        b,
    })
    .unwrap();
}

/// Sends until the first packet comes through (the Open is asynchronous).
fn prime(from: &UdpSocket, to: SocketAddr, pkt: &[u8], sink: &UdpSocket) -> (Vec<u8>, SocketAddr) {
    sink.set_read_timeout(Some(Duration::from_millis(50)))
        .unwrap();
    for _ in 0..60 {
        from.send_to(pkt, to).unwrap();
        if let Some(got) = recv(sink) {
            sink.set_read_timeout(Some(Duration::from_millis(1500)))
                .unwrap();
            return got;
        }
    }
    panic!("relay never forwarded to {:?}", sink.local_addr());
}

fn next_report(rx: &Receiver<Report>, ms: u64) -> Option<Report> {
    rx.recv_timeout(Duration::from_millis(ms)).ok()
}

fn close(ctl: &RelayControl, rx: &Receiver<Report>, id: u64) -> SmallVec<[StreamStats; 2]> {
    ctl.send(Command::Close {
        session: SessionId(id),
    })
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(3);
    while Instant::now() < deadline {
        if let Some(Report::Closed { session, streams }) = next_report(rx, 500)
            && session == SessionId(id)
        {
            return streams;
        }
    }
    panic!("no Closed for session {id}");
}

#[test]
fn plain_relay_both_ways_with_loss_and_close_stats() {
    let (_relay, ctl, rx) = start(60_000, 60_000);
    let pa = peer("127.0.78.1:4000");
    let pb = peer("127.0.78.1:5000");
    // B's answer is not in yet.
    open(
        &ctl,
        1,
        endpoint("127.0.77.1:20000", Some("127.0.78.1:4000"), false),
        endpoint("127.0.77.1:30000", None, false),
    );
    std::thread::sleep(Duration::from_millis(100));
    pa.send_to(&rtp(0, 1, 0xa), addr("127.0.77.1:20000"))
        .unwrap();
    std::thread::sleep(Duration::from_millis(100));
    assert!(ctl.stats().dropped_no_remote >= 1, "{:?}", ctl.stats());
    // The answer arrives.
    ctl.send(Command::Update {
        session: SessionId(1),
        stream: 0,
        side: Side::B,
        endpoint: endpoint("127.0.77.1:30000", Some("127.0.78.1:5000"), false),
    })
    .unwrap();
    // Priming may send its packet several times: another SSRC, so that the
    // duplicates do not offset the loss counted below (RFC 3550 A.3).
    let (first, from) = prime(&pa, addr("127.0.77.1:20000"), &rtp(0, 2, 0xdead), &pb);
    assert_eq!(
        from,
        addr("127.0.77.1:30000"),
        "B sees only Palisade's B address"
    );
    assert_eq!(first, rtp(0, 2, 0xdead), "payload untouched");
    // 3..=52 with 10, 20, 30 missing: 47 sent.
    let mut sent = 0;
    for seq in 3u16..=52 {
        if seq % 10 == 0 && seq <= 30 {
            continue;
        }
        pa.send_to(&rtp(0, seq, 0xa), addr("127.0.77.1:20000"))
            .unwrap();
        sent += 1;
        assert_eq!(recv(&pb).unwrap().0, rtp(0, seq, 0xa));
    }
    assert_eq!(sent, 47);
    for seq in 0u16..20 {
        pb.send_to(&rtp(8, seq, 0xb), addr("127.0.77.1:30000"))
            .unwrap();
        let (p, from) = recv(&pa).unwrap();
        assert_eq!(p, rtp(8, seq, 0xb));
        assert_eq!(from, addr("127.0.77.1:20000"));
    }
    let streams = close(&ctl, &rx, 1);
    assert_eq!(streams.len(), 1);
    let s = streams[0];
    // Seq 1 (not relayed: no remote yet) and the primer count as received.
    assert!(s.from_a.packets >= 49, "{s:?}");
    assert_eq!(s.from_a.lost, 3, "{s:?}");
    assert_eq!(s.from_b.packets, 20);
    assert_eq!(s.from_b.lost, 0);
    assert_eq!(s.from_b.bytes, 20 * 160);
    assert!(s.from_b.mos.unwrap() > 4.0, "{s:?}");
    assert!(s.from_a.mos.unwrap() < s.from_b.mos.unwrap(), "{s:?}");
    assert_eq!(ctl.stats().sessions_open, 0);
    assert_eq!(ctl.stats().ports_bound, 0);
}

#[test]
fn learn_latches_the_real_source_and_strict_refuses_it() {
    let (_relay, ctl, rx) = start(60_000, 60_000);
    // A's SDP says 127.0.78.2:4000 but it sends from :4002 (NAT).
    let pa = peer("127.0.78.2:4002");
    let intruder = peer("127.0.78.2:4004");
    let pb = peer("127.0.78.2:5000");
    open(
        &ctl,
        2,
        endpoint("127.0.77.2:20000", Some("127.0.78.2:4000"), true),
        endpoint("127.0.77.2:30000", Some("127.0.78.2:5000"), true),
    );
    prime(&pa, addr("127.0.77.2:20000"), &rtp(0, 1, 1), &pb);
    // B's media goes to where A really is.
    pb.send_to(&rtp(0, 1, 2), addr("127.0.77.2:30000")).unwrap();
    assert_eq!(recv(&pa).unwrap().0, rtp(0, 1, 2));
    // Another source is dropped and counted.
    let before = ctl.stats().dropped_foreign_source;
    intruder
        .send_to(&rtp(0, 2, 9), addr("127.0.77.2:20000"))
        .unwrap();
    assert!(silent(&pb, 200));
    assert_eq!(ctl.stats().dropped_foreign_source, before + 1);
    let s = close(&ctl, &rx, 2);
    assert_eq!(s[0].from_a.dropped, 1);

    // Strict: only the signalled address is accepted.
    let mut a = endpoint("127.0.77.2:20002", Some("127.0.78.2:4000"), true);
    a.latch = Latch::Strict;
    open(
        &ctl,
        3,
        a,
        endpoint("127.0.77.2:30002", Some("127.0.78.2:5000"), true),
    );
    std::thread::sleep(Duration::from_millis(100));
    let before = ctl.stats().dropped_foreign_source;
    for seq in 0..5 {
        pa.send_to(&rtp(0, seq, 1), addr("127.0.77.2:20002"))
            .unwrap();
    }
    assert!(silent(&pb, 300));
    assert_eq!(ctl.stats().dropped_foreign_source, before + 5);
    // And B's media goes to the signalled address, not the NATed source.
    pb.send_to(&rtp(0, 1, 2), addr("127.0.77.2:30002")).unwrap();
    assert!(silent(&pa, 300));
    let s = close(&ctl, &rx, 3);
    assert_eq!(s[0].from_a.dropped, 5);
    assert_eq!(s[0].from_a.packets, 0);
}

fn key(suite: SrtpSuite, fill: u8, mki: Option<&[u8]>) -> SrtpKey {
    SrtpKey {
        suite,
        master_key: [fill; 16],
        master_salt: [fill ^ 0x5a; 14],
        mki: mki.map(SmallVec::from_slice),
    }
}

fn profile(s: SrtpSuite) -> ProtectionProfile {
    match s {
        SrtpSuite::AesCm128HmacSha1_80 => ProtectionProfile::Aes128CmHmacSha180,
        SrtpSuite::AesCm128HmacSha1_32 => ProtectionProfile::Aes128CmHmacSha132,
    }
}

fn crate_config(k: &SrtpKey) -> StreamConfig {
    let mki = k.mki.as_ref().map(|m| m.to_vec());
    StreamConfig::new(
        vec![MasterKey::new(&k.master_key, &k.master_salt, &mki)],
        &profile(k.suite),
        &ProtectionProfile::Aes128CmHmacSha180,
    )
}

/// An SRTP peer: encrypts with `send`, decrypts with `recv`.
struct SrtpPeer {
    tx: SendSession,
    rx: RecvSession,
    mki: Option<Vec<u8>>,
}

impl SrtpPeer {
    fn new(send: &SrtpKey, recv: &SrtpKey) -> SrtpPeer {
        let mut tx = SendSession::new();
        tx.add_stream(None, &crate_config(send)).unwrap();
        let mut rx = RecvSession::new();
        rx.add_stream(None, &crate_config(recv)).unwrap();
        SrtpPeer {
            tx,
            rx,
            mki: send.mki.as_ref().map(|m| m.to_vec()),
        }
    }
    fn protect(&mut self, p: Vec<u8>) -> Vec<u8> {
        self.tx.rtp_protect_mki(p, &self.mki).unwrap()
    }
    fn protect_rtcp(&mut self, p: Vec<u8>) -> Vec<u8> {
        self.tx.rtcp_protect_mki(p, &self.mki).unwrap()
    }
    fn unprotect(&mut self, p: Vec<u8>) -> Vec<u8> {
        self.rx.rtp_unprotect(p).unwrap()
    }
    fn unprotect_rtcp(&mut self, p: Vec<u8>) -> Vec<u8> {
        self.rx.rtcp_unprotect(p).unwrap()
    }
}

/// SRTP on side `srtp_side`, plain RTP on the other; media both ways.
fn srtp_bridge(n: u8, srtp_side: Side, suite: SrtpSuite, mki: Option<&[u8]>) {
    let (_relay, ctl, rx) = start(60_000, 60_000);
    let ip_relay = format!("127.0.77.{n}");
    let ip_peer = format!("127.0.78.{n}");
    let pa = peer(&format!("{ip_peer}:4000"));
    let pb = peer(&format!("{ip_peer}:5000"));
    let (la, lb) = (format!("{ip_relay}:20000"), format!("{ip_relay}:30000"));
    let mut a = endpoint(&la, Some(&format!("{ip_peer}:4000")), true);
    let mut b = endpoint(&lb, Some(&format!("{ip_peer}:5000")), true);
    // The peer's key (what it encrypts with) and Palisade's key for it.
    let peer_key = key(suite, 0x11, mki);
    let our_key = key(suite, 0x22, mki);
    let (srtp_ep, srtp_sock, plain_sock, srtp_local, plain_local) = match srtp_side {
        Side::A => (&mut a, &pa, &pb, addr(&la), addr(&lb)),
        Side::B => (&mut b, &pb, &pa, addr(&lb), addr(&la)),
    };
    srtp_ep.srtp_recv = Some(peer_key.clone());
    srtp_ep.srtp_send = Some(our_key.clone());
    open(&ctl, u64::from(n), a, b);
    let mut sp = SrtpPeer::new(&peer_key, &our_key);
    // SRTP peer -> plain peer.
    let mut got = None;
    for seq in 0u16..60 {
        let enc = sp.protect(rtp(0, seq, 0x5e));
        assert_ne!(enc[12..172], rtp(0, seq, 0x5e)[12..]);
        srtp_sock.send_to(&enc, srtp_local).unwrap();
        plain_sock
            .set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        if let Some((p, _)) = recv(plain_sock) {
            got = Some((seq, p));
            break;
        }
    }
    plain_sock
        .set_read_timeout(Some(Duration::from_millis(1500)))
        .unwrap();
    let (seq0, p) = got.expect("SRTP was never relayed as RTP");
    assert_eq!(p, rtp(0, seq0, 0x5e));
    for seq in seq0 + 1..seq0 + 20 {
        srtp_sock
            .send_to(&sp.protect(rtp(0, seq, 0x5e)), srtp_local)
            .unwrap();
        assert_eq!(recv(plain_sock).unwrap().0, rtp(0, seq, 0x5e));
    }
    // A tampered packet is dropped and counted.
    let mut bad = sp.protect(rtp(0, seq0 + 20, 0x5e));
    bad[30] ^= 0xff;
    srtp_sock.send_to(&bad, srtp_local).unwrap();
    assert!(silent(plain_sock, 200));
    assert_eq!(ctl.stats().srtp_failures, 1);
    // Plain peer -> SRTP peer.
    for seq in 0u16..20 {
        plain_sock.send_to(&rtp(8, seq, 0x91), plain_local).unwrap();
        let (enc, _) = recv(srtp_sock).unwrap();
        let tag = match suite {
            SrtpSuite::AesCm128HmacSha1_80 => 10,
            SrtpSuite::AesCm128HmacSha1_32 => 4,
        };
        assert_eq!(enc.len(), 172 + tag + mki.map_or(0, <[u8]>::len));
        if let Some(m) = mki {
            assert_eq!(&enc[172..172 + m.len()], m, "MKI sent");
        }
        assert_eq!(sp.unprotect(enc), rtp(8, seq, 0x91));
    }
    // SRTCP both ways (rtcp-mux): an RR from the SRTP peer arrives plain.
    let rr = rr_packet(0x5e, 0x91, 0, 0);
    srtp_sock
        .send_to(&sp.protect_rtcp(rr.clone()), srtp_local)
        .unwrap();
    assert_eq!(recv(plain_sock).unwrap().0, rr);
    let rr2 = rr_packet(0x91, 0x5e, 0, 0);
    plain_sock.send_to(&rr2, plain_local).unwrap();
    assert_eq!(sp.unprotect_rtcp(recv(srtp_sock).unwrap().0), rr2);
    let s = close(&ctl, &rx, u64::from(n));
    let (srtp_dir, plain_dir) = match srtp_side {
        Side::A => (s[0].from_a, s[0].from_b),
        Side::B => (s[0].from_b, s[0].from_a),
    };
    assert_eq!(srtp_dir.packets, 20);
    assert_eq!(srtp_dir.dropped, 1);
    assert_eq!(plain_dir.packets, 20);
}

#[test]
fn srtp_a_to_plain_b_80() {
    srtp_bridge(10, Side::A, SrtpSuite::AesCm128HmacSha1_80, None);
}

#[test]
fn plain_a_to_srtp_b_32() {
    srtp_bridge(11, Side::B, SrtpSuite::AesCm128HmacSha1_32, None);
}

#[test]
fn srtp_with_mki_both_suites() {
    srtp_bridge(
        12,
        Side::B,
        SrtpSuite::AesCm128HmacSha1_80,
        Some(&[0, 0, 0, 1]),
    );
    srtp_bridge(13, Side::A, SrtpSuite::AesCm128HmacSha1_32, Some(&[7]));
}

/// An RR from `ssrc` about `about`, with LSR/DLSR.
fn rr_packet(ssrc: u32, about: u32, lsr: u32, dlsr: u32) -> Vec<u8> {
    let mut p = vec![0x81, 201, 0, 7];
    p.extend_from_slice(&ssrc.to_be_bytes());
    p.extend_from_slice(&about.to_be_bytes());
    p.extend_from_slice(&[64, 0, 0, 3]); // 25 % lost, 3 cumulative
    p.extend_from_slice(&100u32.to_be_bytes());
    p.extend_from_slice(&160u32.to_be_bytes()); // jitter: 20 ms at 8 kHz
    p.extend_from_slice(&lsr.to_be_bytes());
    p.extend_from_slice(&dlsr.to_be_bytes());
    p
}

fn sr_packet(ssrc: u32, ntp: u64) -> Vec<u8> {
    let mut p = vec![0x80, 200, 0, 6];
    p.extend_from_slice(&ssrc.to_be_bytes());
    p.extend_from_slice(&ntp.to_be_bytes());
    p.extend_from_slice(&[0; 12]);
    p
}

#[test]
fn rtcp_mux_on_one_side_separate_on_the_other_with_rtt() {
    let (_relay, ctl, rx) = start(60_000, 60_000);
    let pa = peer("127.0.78.20:4000"); // mux
    let pb = peer("127.0.78.20:5000");
    let pb_rtcp = peer("127.0.78.20:5001");
    open(
        &ctl,
        20,
        endpoint("127.0.77.20:20000", Some("127.0.78.20:4000"), true),
        endpoint("127.0.77.20:30000", Some("127.0.78.20:5000"), false),
    );
    prime(&pa, addr("127.0.77.20:20000"), &rtp(0, 1, 0xa), &pb);
    // A's SR (mux) leaves from B's RTCP port to B's RTCP address.
    let sr = sr_packet(0xa, 0x0000_1234_5678_0000);
    pa.send_to(&sr, addr("127.0.77.20:20000")).unwrap();
    let (got, from) = recv(&pb_rtcp).unwrap();
    assert_eq!(got, sr);
    assert_eq!(from, addr("127.0.77.20:30001"));
    // B answers with an RR echoing it, 100 ms "later" by DLSR.
    std::thread::sleep(Duration::from_millis(150));
    let rr = rr_packet(0xb, 0xa, 0x1234_5678, 65_536 / 10);
    pb_rtcp.send_to(&rr, addr("127.0.77.20:30001")).unwrap();
    let (got, from) = recv(&pa).unwrap();
    assert_eq!(got, rr);
    assert_eq!(
        from,
        addr("127.0.77.20:20000"),
        "mux: RTCP from the RTP port"
    );
    assert!(silent(&pb, 100), "RTCP never reaches B's RTP port");
    let s = close(&ctl, &rx, 20);
    let a = s[0].from_a;
    assert_eq!(a.rtcp_fraction_lost, Some(0.25));
    assert_eq!(a.rtcp_jitter_ms, Some(20.0));
    let rtt = a.rtt_ms.expect("RTT from LSR/DLSR");
    assert!((20.0..200.0).contains(&rtt), "{rtt}");
    assert!(a.packets >= 1);
}

#[test]
fn payload_types_are_remapped_per_leg() {
    let (_relay, ctl, rx) = start(60_000, 60_000);
    let pa = peer("127.0.78.21:4000");
    let pb = peer("127.0.78.21:5000");
    let mut a = endpoint("127.0.77.21:20000", Some("127.0.78.21:4000"), true);
    let mut b = endpoint("127.0.77.21:30000", Some("127.0.78.21:5000"), true);
    // A negotiated telephone-event as 101, B as 96.
    b.pt_map.push((101, 96));
    a.pt_map.push((96, 101));
    open(&ctl, 21, a, b);
    prime(&pa, addr("127.0.77.21:20000"), &rtp(0, 1, 1), &pb);
    let mut ev = rtp(101, 2, 1);
    ev[1] |= 0x80; // marker: start of event
    pa.send_to(&ev, addr("127.0.77.21:20000")).unwrap();
    let (got, _) = recv(&pb).unwrap();
    assert_eq!(got[1], 0x80 | 96);
    assert_eq!(got[2..], ev[2..]);
    pa.send_to(&rtp(0, 3, 1), addr("127.0.77.21:20000"))
        .unwrap();
    assert_eq!(recv(&pb).unwrap().0[1], 0, "PCMU untouched");
    pb.send_to(&rtp(96, 1, 2), addr("127.0.77.21:30000"))
        .unwrap();
    assert_eq!(recv(&pa).unwrap().0[1], 101);
    close(&ctl, &rx, 21);
}

#[test]
fn timeout_after_silence_and_hold_timeout() {
    let (_relay, ctl, rx) = start(300, 1500);
    let pa = peer("127.0.78.22:4000");
    let pb = peer("127.0.78.22:5000");
    open(
        &ctl,
        22,
        endpoint("127.0.77.22:20000", Some("127.0.78.22:4000"), true),
        endpoint("127.0.77.22:30000", Some("127.0.78.22:5000"), true),
    );
    // Media keeps it alive...
    let t0 = Instant::now();
    prime(&pa, addr("127.0.77.22:20000"), &rtp(0, 1, 1), &pb);
    for seq in 2..12u16 {
        std::thread::sleep(Duration::from_millis(50));
        pa.send_to(&rtp(0, seq, 1), addr("127.0.77.22:20000"))
            .unwrap();
    }
    assert!(rx.try_recv().is_err(), "no timeout while media flows");
    // ...then silence: one Timeout.
    match next_report(&rx, 2000) {
        Some(Report::Timeout { session }) => assert_eq!(session, SessionId(22)),
        other => panic!("expected Timeout, got {other:?}"),
    }
    assert!(t0.elapsed() >= Duration::from_millis(800));
    assert!(next_report(&rx, 500).is_none(), "reported once");
    close(&ctl, &rx, 22);

    // On hold: the hold timeout applies.
    let mut a = endpoint("127.0.77.22:20002", Some("127.0.78.22:4000"), true);
    a.on_hold = true;
    let t0 = Instant::now();
    open(
        &ctl,
        23,
        a,
        endpoint("127.0.77.22:30002", Some("127.0.78.22:5000"), true),
    );
    match next_report(&rx, 3000) {
        Some(Report::Timeout { session }) => assert_eq!(session, SessionId(23)),
        other => panic!("expected Timeout, got {other:?}"),
    }
    let waited = t0.elapsed();
    assert!(waited >= Duration::from_millis(1400), "{waited:?}");
    assert_eq!(ctl.stats().timeouts, 2);
    close(&ctl, &rx, 23);
}

#[test]
fn bind_failed_when_the_port_is_taken() {
    let (_relay, ctl, rx) = start(60_000, 60_000);
    let _squatter = UdpSocket::bind("127.0.77.23:30001").unwrap(); // B's RTCP port
    open(
        &ctl,
        24,
        endpoint("127.0.77.23:20000", Some("127.0.78.23:4000"), false),
        endpoint("127.0.77.23:30000", Some("127.0.78.23:5000"), false),
    );
    match next_report(&rx, 2000) {
        Some(Report::BindFailed {
            session,
            addr: a,
            os_error,
        }) => {
            assert_eq!(os_error, Some(98), "EADDRINUSE: the port is taken");
            assert_eq!(session, SessionId(24));
            assert_eq!(a, addr("127.0.77.23:30001"));
        }
        other => panic!("expected BindFailed, got {other:?}"),
    }
    std::thread::sleep(Duration::from_millis(50));
    let st = ctl.stats();
    assert_eq!((st.sessions_open, st.ports_bound), (0, 0), "{st:?}");
    // The ports A had are free again.
    UdpSocket::bind("127.0.77.23:20000").unwrap();
}

#[test]
fn stop_closes_every_session_and_full_report_channel_keeps_timeouts() {
    let (tx, rx) = sync_channel(1);
    let cfg = RelayConfig {
        threads: 1,
        timeout: Duration::from_millis(200),
        hold_timeout: Duration::from_millis(200),
        dscp: 46,
        command_queue: 4,
    };
    let (relay, ctl) = Relay::start(cfg, tx).unwrap();
    for i in 0..3u16 {
        open(
            &ctl,
            30 + u64::from(i),
            endpoint(&format!("127.0.77.30:{}", 20000 + 2 * i), None, true),
            endpoint(&format!("127.0.77.30:{}", 30000 + 2 * i), None, true),
        );
    }
    // Three timeouts through a channel of one: none lost, none blocks.
    std::thread::sleep(Duration::from_millis(800));
    let mut timed_out = Vec::new();
    for _ in 0..3 {
        match next_report(&rx, 1000) {
            Some(Report::Timeout { session }) => timed_out.push(session.0),
            other => panic!("expected Timeout, got {other:?}"),
        }
    }
    timed_out.sort_unstable();
    assert_eq!(timed_out, [30, 31, 32]);
    // A bounded command queue says Busy instead of blocking.
    let mut busy = 0;
    for i in 0..100u64 {
        if ctl
            .send(Command::Close {
                session: SessionId(1000 + i),
            })
            .is_err()
        {
            busy += 1;
        }
    }
    assert!(busy > 0, "a queue of 4 must fill up");
    // stop() closes the rest, reporting what fits (one slot here).
    let reader = std::thread::spawn(move || {
        let mut closed = 0;
        while let Ok(r) = rx.recv_timeout(Duration::from_secs(2)) {
            if matches!(r, Report::Closed { .. }) {
                closed += 1;
            }
        }
        closed
    });
    relay.stop();
    let closed = reader.join().unwrap();
    assert!(closed >= 1);
    let st = ctl.stats();
    assert_eq!(st.sessions_open, 0);
    assert_eq!(st.ports_bound, 0);
    assert_eq!(closed as u64 + st.reports_dropped, 3, "{st:?}");
    assert!(
        ctl.send(Command::Close {
            session: SessionId(1)
        })
        .is_err()
    );
}

#[test]
fn a_burst_larger_than_one_turn_is_relayed_in_order() {
    let (_relay, ctl, rx) = start(60_000, 60_000);
    let pa = peer("127.0.78.24:4000");
    // The receiving peer needs the relay's socket buffers to hold the burst.
    let pb = palisade_relay::sock::bind_media(addr("127.0.78.24:5000"), 0).unwrap();
    pb.set_nonblocking(false).unwrap();
    pb.set_read_timeout(Some(Duration::from_millis(1500)))
        .unwrap();
    open(
        &ctl,
        40,
        endpoint("127.0.77.24:20000", Some("127.0.78.24:4000"), true),
        endpoint("127.0.77.24:30000", Some("127.0.78.24:5000"), true),
    );
    prime(&pa, addr("127.0.77.24:20000"), &rtp(0, 0, 0x77), &pb);
    // More than 16 batches of 32 queued at once: the thread comes back to
    // the socket on its next turn (edge-triggered epoll says nothing more).
    let burst = 600u16;
    let reader = std::thread::spawn(move || {
        let mut got = Vec::new();
        while let Some((p, _)) = recv(&pb) {
            got.push(u16::from_be_bytes([p[2], p[3]]));
            if got.len() == usize::from(burst) {
                break;
            }
        }
        got
    });
    for seq in 1..=burst {
        pa.send_to(&rtp(0, seq, 0x77), addr("127.0.77.24:20000"))
            .unwrap();
    }
    let got = reader.join().unwrap();
    assert_eq!(got.len(), usize::from(burst), "{:?}", ctl.stats());
    assert!(got.windows(2).all(|w| w[1] == w[0] + 1), "in order");
    let s = close(&ctl, &rx, 40);
    assert_eq!(s[0].from_a.lost, 0);
}

#[test]
fn a_closed_sessions_sockets_serve_the_next_session_on_their_ports() {
    let (_relay, ctl, rx) = start(60_000, 60_000);
    let old_a = peer("127.0.78.25:4000");
    let old_b = peer("127.0.78.25:5000");
    let (la, lb) = ("127.0.77.25:20000", "127.0.77.25:30000");
    open(
        &ctl,
        50,
        endpoint(la, Some("127.0.78.25:4000"), false),
        endpoint(lb, Some("127.0.78.25:5000"), false),
    );
    prime(&old_a, addr(la), &rtp(0, 1, 1), &old_b);
    let before = ctl.stats();
    assert_eq!((before.ports_bound, before.ports_spare), (4, 0));
    close(&ctl, &rx, 50);
    let st = ctl.stats();
    assert_eq!(
        (st.ports_bound, st.ports_spare),
        (0, 4),
        "RTP and RTCP of both ends kept bound: {st:?}"
    );
    // Its tail reaches the spare and is dropped there.
    old_a.send_to(&rtp(0, 2, 1), addr(la)).unwrap();
    assert!(silent(&old_b, 200));
    // The next session on those ports (the same thread, as the media
    // manager arranges) gets the sockets back: nothing new is bound.
    let next = (51u64..).find(|i| ctl.lane_of(SessionId(*i)) == ctl.lane_of(SessionId(50)));
    let next = next.unwrap();
    let new_a = peer("127.0.78.25:4100");
    let new_b = peer("127.0.78.25:5100");
    open(
        &ctl,
        next,
        endpoint(la, Some("127.0.78.25:4100"), false),
        endpoint(lb, Some("127.0.78.25:5100"), false),
    );
    prime(&new_a, addr(la), &rtp(0, 1, 2), &new_b);
    let st = ctl.stats();
    assert_eq!((st.ports_bound, st.ports_spare), (4, 0), "{st:?}");
    // The ended call's peer keeps sending: never latched by the new call.
    let foreign = st.dropped_foreign_source;
    for seq in 3..8 {
        old_a.send_to(&rtp(0, seq, 1), addr(la)).unwrap();
    }
    assert!(
        silent(&new_b, 200),
        "the old peer's stream reached the new call"
    );
    assert!(ctl.stats().dropped_foreign_source >= foreign + 5);
    // The new peers talk both ways.
    new_b.send_to(&rtp(0, 1, 3), addr(lb)).unwrap();
    assert!(recv(&new_a).is_some());
    close(&ctl, &rx, next);
    // A session of the other thread gets them too: the spares move over
    // (no port is ever bound twice, nothing fails).
    assert_eq!(ctl.stats().ports_spare, 4);
    let other = (next + 1..)
        .find(|i| ctl.lane_of(SessionId(*i)) != ctl.lane_of(SessionId(50)))
        .unwrap();
    open(
        &ctl,
        other,
        endpoint(la, Some("127.0.78.25:4100"), false),
        endpoint(lb, Some("127.0.78.25:5100"), false),
    );
    prime(&new_a, addr(la), &rtp(0, 9, 4), &new_b);
    let st = ctl.stats();
    assert_eq!((st.ports_bound, st.ports_spare), (4, 0), "{st:?}");
    assert!(rx.try_recv().is_err(), "no BindFailed");
    close(&ctl, &rx, other);
}
