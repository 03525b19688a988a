//! The media table against the real kernel: installed with `nft -f`, streams
//! handed over and taken back with [`MediaOffload`], traffic over loopback.
//!
//! The test re-runs itself (`ip netns exec NS <this binary> NAME --exact`)
//! inside a network namespace it creates, with `PALISADE_NFT_NETNS` set; the
//! namespace is deleted afterwards, whatever happened. Needs root; missing
//! `ip`/`nft` or no permission fails the test (it is never skipped). The
//! DSCP of forwarded packets is read from an `AF_PACKET` capture on `lo`.

#![allow(clippy::unwrap_used)]

use std::io::Read as _;
use std::net::{SocketAddr, UdpSocket};
use std::process::Command;
use std::time::Duration;

use palisade_nft::media::{Direction, DirectionCounters, MediaOffload, MediaTableSpec};
use palisade_nft::{Nft, Ports};
use socket2::{Domain, Protocol, Socket, Type};

mod support;

use support::in_netns;
const TABLE: &str = "pm_test";
/// RTP payload length of every RTP-looking datagram sent.
const RTP_LEN: usize = 172;
/// How long an expected packet may take.
const HIT: Duration = Duration::from_secs(1);
/// How long to wait to believe nothing arrives.
const MISS: Duration = Duration::from_millis(300);

/// Runs a command; panics unless it succeeds. Returns its stdout.
fn run(cmd: &str, args: &[&str]) -> String {
    let out = Command::new(cmd).args(args).output();
    let out = out.unwrap_or_else(|e| panic!("{cmd}: {e}"));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{cmd} {args:?} failed: {err}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn sa(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn udp(addr: SocketAddr) -> UdpSocket {
    UdpSocket::bind(addr).unwrap_or_else(|e| panic!("bind {addr}: {e}"))
}

/// An RTP-looking datagram (version 2, payload type 0) numbered `seq`.
fn rtp(seq: u16) -> Vec<u8> {
    let mut p = vec![0u8; RTP_LEN];
    p[0] = 0x80;
    p[2..4].copy_from_slice(&seq.to_be_bytes());
    p
}

/// An RTCP-looking datagram of packet type `pt` (200 SR .. 204 APP).
fn rtcp(pt: u8) -> Vec<u8> {
    let mut p = vec![0u8; 28];
    p[0] = 0x80;
    p[1] = pt;
    p
}

/// Sends `msg` from `src` to `to`; `dst` must get exactly it, from `from`.
fn expect(src: &UdpSocket, to: SocketAddr, msg: &[u8], dst: &UdpSocket, from: SocketAddr) {
    src.send_to(msg, to).unwrap();
    dst.set_read_timeout(Some(HIT)).unwrap();
    let mut buf = [0u8; 512];
    let me = dst.local_addr().unwrap();
    let who = src.local_addr().unwrap();
    let (n, got_from) = dst
        .recv_from(&mut buf)
        .unwrap_or_else(|e| panic!("{who} -> {to}: nothing reached {me}: {e}"));
    assert_eq!(&buf[..n], msg, "{who} -> {to}: {me} got another datagram");
    assert_eq!(got_from, from, "{who} -> {to}: {me} saw the wrong source");
}

/// Nothing arrives at any of `socks` (each gets [`MISS`] to show otherwise).
fn expect_nothing(socks: &[&UdpSocket]) {
    let mut buf = [0u8; 512];
    for s in socks {
        s.set_read_timeout(Some(MISS)).unwrap();
        if let Ok((n, from)) = s.recv_from(&mut buf) {
            let me = s.local_addr().unwrap();
            panic!("{me} got {n} bytes from {from}, expected nothing");
        }
    }
}

/// Both directions of a stream between `a` (on Palisade's `la`) and `b` (on `lb`).
fn stream(a: SocketAddr, la: SocketAddr, lb: SocketAddr, b: SocketAddr) -> [Direction; 2] {
    [
        Direction {
            peer: a,
            local: la,
            out_local: lb,
            out_peer: b,
        },
        Direction {
            peer: b,
            local: lb,
            out_local: la,
            out_peer: a,
        },
    ]
}

/// The kernel counters, sorted by peer.
fn counters(off: &mut MediaOffload) -> Vec<DirectionCounters> {
    let mut c = Vec::new();
    off.counters(&mut c).expect("counters");
    c.sort_by_key(|d| d.peer);
    c
}

/// What the counters must be: `(peer, local, packets)`, sorted by peer; `ip`
/// is the IP header length.
fn want(mut dirs: Vec<(SocketAddr, SocketAddr, u64)>, ip: u64) -> Vec<DirectionCounters> {
    dirs.sort_by_key(|d| d.0);
    let bytes = |p: u64| p * (ip + 8 + RTP_LEN as u64);
    dirs.into_iter()
        .map(|(peer, local, packets)| DirectionCounters {
            peer,
            local,
            packets,
            bytes: bytes(packets),
        })
        .collect()
}

/// Conntrack lines with one of `ports` as a source or destination port.
fn conntrack_with(ports: &[u16]) -> Vec<String> {
    let text = support::conntrack_table();
    let hit = |tok: &str| ports.iter().any(|p| tok.ends_with(&format!("port={p}")));
    let lines = text.lines().filter(|l| l.split_whitespace().any(hit));
    lines.map(str::to_owned).collect()
}

/// The stream on `ports` has exactly one conntrack entry.
fn assert_one_connection(ports: &[u16]) {
    let ct = conntrack_with(ports);
    assert_eq!(ct.len(), 1, "one connection for the stream: {ct:?}");
}

/// The stream on `ports` left no conntrack entry behind.
fn assert_no_connection(ports: &[u16]) {
    let ct = conntrack_with(ports);
    assert!(ct.is_empty(), "connections outlive the stream: {ct:?}");
}

/// A capture of every frame on `lo` (from its creation on).
fn capture() -> Socket {
    let all = Protocol::from(i32::from(0x0003u16.to_be())); // ETH_P_ALL
    let s = Socket::new(Domain::PACKET, Type::RAW, Some(all)).expect("AF_PACKET socket");
    s.set_read_timeout(Some(HIT)).unwrap();
    s
}

/// Destination and DSCP of a UDP datagram in an IPv4 or IPv6 packet.
fn udp_dst_dscp(ip: &[u8]) -> Option<(SocketAddr, u8)> {
    let port = |at: usize| Some(u16::from_be_bytes(ip.get(at..at + 2)?.try_into().ok()?));
    match ip.first()? >> 4 {
        4 if *ip.get(9)? == 17 => {
            let a: [u8; 4] = ip.get(16..20)?.try_into().ok()?;
            let ihl = usize::from(ip[0] & 0x0f) * 4;
            Some((SocketAddr::from((a, port(ihl + 2)?)), ip[1] >> 2))
        }
        6 if *ip.get(6)? == 17 => {
            let a: [u8; 16] = ip.get(24..40)?.try_into().ok()?;
            let class = (ip[0] & 0x0f) << 4 | ip[1] >> 4;
            Some((SocketAddr::from((a, port(42)?)), class >> 2))
        }
        _ => None,
    }
}

/// The DSCP of the next captured datagram to `dst`.
fn dscp_to(cap: &Socket, dst: SocketAddr) -> u8 {
    let mut buf = [0u8; 2048];
    for _ in 0..200 {
        let n = (&*cap).read(&mut buf);
        let n = n.unwrap_or_else(|e| panic!("no datagram to {dst} captured: {e}"));
        // `lo` frames carry a 14-byte Ethernet header.
        match buf.get(14..n).and_then(udp_dst_dscp) {
            Some((to, dscp)) if to == dst => return dscp,
            _ => {}
        }
    }
    panic!("no datagram to {dst} among 200 captured frames");
}

#[test]
fn media_table_forwards_rtp_keeps_rtcp_and_strangers_and_cleans_up() {
    in_netns(
        "media_table_forwards_rtp_keeps_rtcp_and_strangers_and_cleans_up",
        "media",
        body,
    );
}

fn body() {
    run("ip", &["link", "set", "lo", "up"]);
    let ports = |first, last| Ports { first, last };
    let spec = MediaTableSpec {
        name: TABLE.into(),
        local: vec![
            ("127.0.0.1".parse().unwrap(), ports(20000, 20999)),
            ("127.0.0.2".parse().unwrap(), ports(30000, 30999)),
            ("::1".parse().unwrap(), ports(40000, 40999)),
        ],
        max_streams: 100,
        dscp: 46,
    };
    let nft = Nft::new(TABLE);
    nft.install_media(&spec).expect("install the media table");
    assert!(run("nft", &["list", "tables"]).contains("table inet pm_test"));

    let (la, lb) = (sa("127.0.0.1:20000"), sa("127.0.0.2:30000"));
    let (a_at, b_at, b2_at) = (
        sa("127.0.0.10:4000"),
        sa("127.0.0.20:5000"),
        sa("127.0.0.20:5002"),
    );
    let (relay_a, relay_b) = (udp(la), udp(lb));
    let (a, b, b2, stranger) = (udp(a_at), udp(b_at), udp(b2_at), udp(sa("127.0.0.66:7777")));

    // Before any offload everything reaches the relay.
    expect(&a, la, &rtp(1), &relay_a, a_at);
    expect(&b, lb, &rtp(1), &relay_b, b_at);
    expect_nothing(&[&a, &b, &relay_a, &relay_b]);

    // Handed over: RTP crosses in the kernel, from Palisade's other port, with DSCP 46.
    let ab = stream(a_at, la, lb, b_at);
    let mut off = MediaOffload::open(TABLE).expect("open");
    off.apply(&ab, &[]).expect("add the stream");
    let cap = capture();
    let (mut a2b, mut b2a) = (0u64, 0u64);
    for seq in 10..13 {
        expect(&a, la, &rtp(seq), &b, lb);
        expect(&b, lb, &rtp(seq), &a, la);
        (a2b, b2a) = (a2b + 1, b2a + 1);
    }
    assert_eq!(dscp_to(&cap, b_at), 46, "DSCP of what B receives");
    assert_eq!(dscp_to(&cap, a_at), 46, "DSCP of what A receives");
    expect_nothing(&[&relay_a, &relay_b]);
    // The relay's own packets still leave from its ports.
    expect(&relay_a, a_at, b"relay", &a, la);

    // RTCP (every type, on the forwarded 4-tuple) and strangers stay with Palisade.
    for pt in 200..=204 {
        expect(&a, la, &rtcp(pt), &relay_a, a_at);
        expect(&b, lb, &rtcp(pt), &relay_b, b_at);
    }
    expect(&stranger, la, &rtp(99), &relay_a, sa("127.0.0.66:7777"));
    expect(&stranger, lb, &rtp(99), &relay_b, sa("127.0.0.66:7777"));
    // Neither does what is not RTP on the forwarded 4-tuple: a STUN
    // binding request (first two bits 00), a short keepalive.
    let stun = [
        0x00, 0x01, 0x00, 0x00, 0x21, 0x12, 0xa4, 0x42, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    ];
    expect(&a, la, &stun, &relay_a, a_at);
    expect(&b, lb, b"\r\n\r\n", &relay_b, b_at);
    expect_nothing(&[&a, &b]);

    // Counters: the forwarded RTP only, IP datagram bytes.
    let got = counters(&mut off);
    assert_eq!(got, want(vec![(a_at, la, a2b), (b_at, lb, b2a)], 20));
    assert_one_connection(&[20000, 30000]);

    // Removed: no element, no connection, the relay gets everything again.
    off.apply(&[], &ab).expect("remove the stream");
    assert_no_connection(&[20000, 30000]);
    assert_eq!(counters(&mut off), []);
    expect(&a, la, &rtp(20), &relay_a, a_at);
    expect(&b, lb, &rtp(20), &relay_b, b_at);
    expect_nothing(&[&a, &b]);

    // Re-added towards B2 (adding, removing nothing) ...
    let ab2 = stream(a_at, la, lb, b2_at);
    off.apply(&ab2, &[]).expect("add the stream towards B2");
    // (B2 speaks first this time: A's packets then match the reply tuple.)
    expect(&b2, lb, &rtp(30), &a, la);
    expect(&a, la, &rtp(30), &b2, lb);
    expect_nothing(&[&b, &relay_a, &relay_b]);
    // ... then swapped back to B in one transaction.
    off.apply(&ab, &ab2).expect("swap B2 for B");
    expect(&a, la, &rtp(31), &b, lb);
    expect(&b, lb, &rtp(31), &a, la);
    expect(&b2, lb, &rtp(31), &relay_b, b2_at);
    expect_nothing(&[&b2, &relay_a, &relay_b]);
    let got = counters(&mut off);
    assert_eq!(got, want(vec![(a_at, la, 1), (b_at, lb, 1)], 20));
    off.apply(&[], &ab).expect("remove the stream");
    assert_no_connection(&[20000, 30000]);

    // IPv6, both ends and both Palisade ports on ::1.
    let (l6a, l6b, p6a, p6b) = (
        sa("[::1]:40000"),
        sa("[::1]:40002"),
        sa("[::1]:4006"),
        sa("[::1]:5006"),
    );
    let (relay6a, relay6b, a6, b6) = (udp(l6a), udp(l6b), udp(p6a), udp(p6b));
    expect(&a6, l6a, &rtp(40), &relay6a, p6a);
    let s6 = stream(p6a, l6a, l6b, p6b);
    off.apply(&s6, &[]).expect("add the IPv6 stream");
    let cap = capture();
    for seq in 41..43 {
        expect(&a6, l6a, &rtp(seq), &b6, l6b);
        expect(&b6, l6b, &rtp(seq), &a6, l6a);
    }
    assert_eq!(dscp_to(&cap, p6b), 46, "DSCP of what B6 receives");
    expect(&a6, l6a, &rtcp(201), &relay6a, p6a);
    expect_nothing(&[&relay6a, &relay6b, &b6]);
    let got = counters(&mut off);
    assert_eq!(got, want(vec![(p6a, l6a, 2), (p6b, l6b, 2)], 40));
    assert_one_connection(&[40000, 40002]);
    off.apply(&[], &s6).expect("remove the IPv6 stream");
    assert_no_connection(&[40000, 40002]);
    assert_eq!(counters(&mut off), []);
    expect(&a6, l6a, &rtp(44), &relay6a, p6a);
    expect_nothing(&[&b6]);

    // The table goes; what it forwarded reaches the relay again.
    nft.remove().expect("remove the table");
    assert!(!run("nft", &["list", "tables"]).contains(TABLE));
    expect(&a, la, &rtp(50), &relay_a, a_at);
}
