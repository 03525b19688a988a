//! "No allocation per packet", measured: a counting global allocator around
//! a burst of plain RTP through the relay, both ways. The relay threads and
//! this test are the only threads doing anything during the burst (this
//! file is its own test binary with one test), and the test's own side of
//! the burst is allocation-free (packets built before, received into a
//! stack buffer), so every allocation counted is the relay's.
//!
//! SRTP is measured too and bounded, not zero: the `libsrtp` crate
//! allocates a little per protected packet (see the crate README).

// The allocator wrapper needs `unsafe impl GlobalAlloc`; it only forwards.
#![allow(unsafe_code)]
#![allow(clippy::unwrap_used)]
// Real sockets, real time.
#![allow(clippy::disallowed_methods)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::sync_channel;
use std::time::Duration;

use libsrtp::{MasterKey, ProtectionProfile, SendSession, StreamConfig};
use palisade_relay::{
    Command, Endpoint, Latch, Relay, RelayConfig, SessionId, Side, SrtpKey, SrtpSuite,
};
use smallvec::SmallVec;

/// Counts allocations and reallocations, then forwards to the system allocator.
struct Counting;

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

// SAFETY: every method forwards to `System` with the caller's arguments
// unchanged, so `System`'s guarantees hold; the counter is an atomic.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: forwarded as received (see the impl).
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: forwarded as received.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: forwarded as received.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded as received.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn endpoint(local: &str, remote: &str) -> Endpoint {
    Endpoint {
        local: addr(local),
        rtcp_mux: false,
        remote: Some(addr(remote)),
        remote_rtcp: None,
        latch: Latch::Learn,
        srtp_recv: None,
        srtp_send: None,
        pt_map: SmallVec::new(),
        on_hold: false,
    }
}

fn rtp(pt: u8, seq: u16, ssrc: u32) -> Vec<u8> {
    let mut p = vec![0x80, pt, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
    p[2..4].copy_from_slice(&seq.to_be_bytes());
    p[4..8].copy_from_slice(&(u32::from(seq) * 160).to_be_bytes());
    p[8..12].copy_from_slice(&ssrc.to_be_bytes());
    p.extend(std::iter::repeat_n((seq & 0xff) as u8, 160));
    p
}

/// Sends `packets` from `from` to `to` in rounds of `round`, receiving each
/// round on `sink` into a stack buffer; returns how many arrived. Allocates
/// nothing itself.
fn burst(
    from: &UdpSocket,
    to: SocketAddr,
    packets: &[Vec<u8>],
    sink: &UdpSocket,
    round: usize,
) -> usize {
    let mut buf = [0u8; 2048];
    let mut got = 0;
    for chunk in packets.chunks(round) {
        for p in chunk {
            from.send_to(p, to).unwrap();
        }
        for _ in 0..chunk.len() {
            match sink.recv_from(&mut buf) {
                Ok(_) => got += 1,
                Err(_) => break,
            }
        }
    }
    got
}

fn peer(a: &str) -> UdpSocket {
    let s = UdpSocket::bind(a).unwrap();
    s.set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    s
}

fn srtp_key(fill: u8) -> SrtpKey {
    SrtpKey {
        suite: SrtpSuite::AesCm128HmacSha1_80,
        master_key: [fill; 16],
        master_salt: [fill ^ 0x5a; 14],
        mki: None,
    }
}

#[test]
fn plain_rtp_relays_without_allocating_and_srtp_allocates_little() {
    let (tx, _reports) = sync_channel(64);
    let cfg = RelayConfig {
        threads: 2,
        timeout: Duration::from_secs(60),
        hold_timeout: Duration::from_secs(60),
        dscp: 46,
        command_queue: 64,
    };
    let (_relay, ctl) = Relay::start(cfg, tx).unwrap();
    let pa = peer("127.0.78.40:4000");
    let pb = peer("127.0.78.40:5000");
    let (la, lb) = (addr("127.0.77.40:20000"), addr("127.0.77.40:30000"));
    ctl.send(Command::Open {
        session: SessionId(40),
        stream: 0,
        a: endpoint("127.0.77.40:20000", "127.0.78.40:4000"),
        b: endpoint("127.0.77.40:30000", "127.0.78.40:5000"),
    })
    .unwrap();
    let a_to_b: Vec<Vec<u8>> = (0u16..3000).map(|s| rtp(0, s, 0xa)).collect();
    let b_to_a: Vec<Vec<u8>> = (0u16..3000).map(|s| rtp(8, s, 0xb)).collect();
    // Warm up until both directions flow (the Open is asynchronous; the
    // first packets latch and size whatever is sized once).
    let mut warm = 0;
    for i in 0..100 {
        warm = burst(&pa, la, &a_to_b[i * 5..i * 5 + 5], &pb, 5)
            + burst(&pb, lb, &b_to_a[i * 5..i * 5 + 5], &pa, 5);
        if warm == 10 && i > 10 {
            break;
        }
    }
    assert_eq!(warm, 10, "the relay never carried both directions");

    // The counter sees allocations at all.
    let before = ALLOCATIONS.load(Ordering::SeqCst);
    let probe = std::hint::black_box(vec![1u8; 3]);
    assert!(ALLOCATIONS.load(Ordering::SeqCst) > before && probe.len() == 3);
    drop(probe);

    let before = ALLOCATIONS.load(Ordering::SeqCst);
    let ab = burst(&pa, la, &a_to_b[1000..], &pb, 50);
    let ba = burst(&pb, lb, &b_to_a[1000..], &pa, 50);
    let allocated = ALLOCATIONS.load(Ordering::SeqCst) - before;
    assert!(ab >= 1900 && ba >= 1900, "relayed {ab} and {ba} of 2000");
    assert_eq!(
        allocated,
        0,
        "{allocated} allocations while relaying {} plain RTP packets",
        ab + ba
    );

    // SRTP from A (decrypted toward plain B): bounded, and reported.
    ctl.send(Command::Update {
        session: SessionId(40),
        stream: 0,
        side: Side::A,
        endpoint: Endpoint {
            srtp_recv: Some(srtp_key(0x11)),
            srtp_send: Some(srtp_key(0x22)),
            ..endpoint("127.0.77.40:20000", "127.0.78.40:4000")
        },
    })
    .unwrap();
    let k = srtp_key(0x11);
    let mut tx = SendSession::new();
    tx.add_stream(
        None,
        &StreamConfig::new(
            vec![MasterKey::new(&k.master_key, &k.master_salt, &None)],
            &ProtectionProfile::Aes128CmHmacSha180,
            &ProtectionProfile::Aes128CmHmacSha180,
        ),
    )
    .unwrap();
    let srtp: Vec<Vec<u8>> = (0u16..1200)
        .map(|s| tx.rtp_protect(rtp(0, 5000 + s, 0x5e)).unwrap())
        .collect();
    let mut warm = 0;
    for i in 0..40 {
        warm = burst(&pa, la, &srtp[i * 5..i * 5 + 5], &pb, 5);
        if warm == 5 && i > 5 {
            break;
        }
    }
    assert_eq!(warm, 5, "SRTP never flowed after the update");
    let before = ALLOCATIONS.load(Ordering::SeqCst);
    let n = burst(&pa, la, &srtp[200..], &pb, 50);
    let unprotect = ALLOCATIONS.load(Ordering::SeqCst) - before;
    assert!(n >= 950, "relayed {n} of 1000 SRTP packets");
    // And plain B toward SRTP A (encrypted by the relay).
    let before = ALLOCATIONS.load(Ordering::SeqCst);
    let m = burst(&pb, lb, &b_to_a[..1000], &pa, 50);
    let protect = ALLOCATIONS.load(Ordering::SeqCst) - before;
    assert!(m >= 950, "relayed {m} of 1000 packets toward SRTP");
    let (per_in, per_out) = (unprotect as f64 / n as f64, protect as f64 / m as f64);
    println!(
        "SRTP: {per_in:.2} allocations per packet decrypted, {per_out:.2} per packet encrypted"
    );
    assert!(
        per_in <= 2.0 && per_out <= 2.0,
        "{per_in:.2}/{per_out:.2} allocations per SRTP packet (the relay README says about one)"
    );
}
