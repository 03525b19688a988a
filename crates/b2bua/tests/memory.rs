//! Per-call signalling state: how much heap an established call holds in
//! the engine (both dialogs, the call record, timers, indexes), counted by dhat's
//! allocator, not estimated. Media state lives in `palisade-media`
//! and the relay, and is measured by `bench/sbc/run.py memory`.
//!
//! The target (issue: performance): at most 8 KiB per established call.

#![allow(clippy::unwrap_used)]

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use palisade_b2bua::Engine;
use palisade_sip::{Message, ParseLimits, Transport};
use support::{CARRIER_SDP, INSIDE, OUTSIDE, PBX, PBX_SDP, addr, pbx_invite, reply};

/// dhat's allocator counts every live heap byte of this test process.
#[global_allocator]
static ALLOC: dhat::Alloc = dhat::Alloc;

fn live_bytes() -> usize {
    dhat::HeapStats::get().curr_bytes
}

const CONFIG: &str = "
zones:
  - {name: inside, sip_address: 127.0.0.1}
  - {name: outside, sip_address: 127.0.0.2}
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

fn drain(engine: &mut Engine) -> Vec<(palisade_b2bua::Flow, Message)> {
    let limits = ParseLimits::default();
    let mut out = Vec::new();
    while let Some(t) = engine.poll_transmit() {
        out.push((t.flow, Message::parse(t.data, &limits).unwrap()));
    }
    while engine.poll_event().is_some() {}
    while engine.poll_edge_event().is_some() {}
    out
}

/// Places call `n` from the PBX and answers it; every side ACKed. Returns
/// the PBX's dialog.
fn establish(engine: &mut Engine, now: Instant, n: u32) -> support::PeerDialog {
    let invite = pbx_invite(n, "+4971100100", Some(PBX_SDP));
    engine.handle_message(now, INSIDE, Transport::Udp, addr(PBX), invite.clone());
    let sent = drain(engine);
    let invite_b = sent
        .iter()
        .find(|(f, m)| f.remote == addr(CARRIER) && m.method().is_some())
        .map(|(_, m)| m.clone())
        .unwrap();
    let tag = format!("carrier-{n}");
    let contact = "<sip:carrier@127.0.0.20:5080>";
    let ok = reply(&invite_b, 200, Some(&tag), Some(contact), Some(CARRIER_SDP));
    engine.handle_message(now, OUTSIDE, Transport::Udp, addr(CARRIER), ok);
    let sent = drain(engine);
    let ok_a = sent
        .iter()
        .find(|(f, m)| f.remote == addr(PBX) && m.status() == Some(200))
        .map(|(_, m)| m.clone())
        .unwrap();
    let mut pbx = support::PeerDialog::from_uac_side(&invite, &ok_a, "127.0.0.10:5070");
    // Branches unique across calls (the helper numbers them per dialog).
    pbx.branch_seq = n * 16;
    engine.handle_message(now, INSIDE, Transport::Udp, addr(PBX), pbx.ack(1, None));
    drain(engine);
    pbx
}

/// The PBX hangs up; the carrier answers Palisade's BYE.
fn hang_up(engine: &mut Engine, now: Instant, pbx: &mut support::PeerDialog) {
    engine.handle_message(
        now,
        INSIDE,
        Transport::Udp,
        addr(PBX),
        pbx.request("BYE", None, None),
    );
    for (f, m) in drain(engine) {
        if f.remote == addr(CARRIER) && m.method().is_some() {
            let ok = reply(&m, 200, None, None, None);
            engine.handle_message(now, OUTSIDE, Transport::Udp, addr(CARRIER), ok);
            drain(engine);
        }
    }
}

#[test]
#[allow(clippy::disallowed_methods)] // the virtual clock needs one real origin
fn an_established_call_holds_at_most_8_kib_of_signalling_state() {
    let _profiler = dhat::Profiler::builder().testing().build();
    let cfg = palisade_config::load_str(CONFIG, "memory.yaml").unwrap();
    let mut engine = Engine::new(Arc::new(cfg), [3; 32]);
    let mut now = Instant::now();
    const CALLS: u32 = 2000;
    // Warm up with as many calls and transactions at once as measured
    // below, then end them: every table reaches its working capacity, so
    // the difference is what calls hold, not what tables reserve.
    let mut dialogs: Vec<_> = (0..CALLS).map(|n| establish(&mut engine, now, n)).collect();
    for d in &mut dialogs {
        hang_up(&mut engine, now, d);
    }
    drop(dialogs);
    now += Duration::from_secs(40);
    engine.handle_timeout(now);
    drain(&mut engine);
    assert_eq!(engine.stats().active_calls, 0);
    let before = live_bytes();
    for n in CALLS..2 * CALLS {
        establish(&mut engine, now, n);
    }
    // Setup transactions (Timer K, the INVITE server's 64*T1) are done: what
    // is left is what an established call keeps.
    now += Duration::from_secs(40);
    engine.handle_timeout(now);
    drain(&mut engine);
    let after = live_bytes();
    assert_eq!(engine.stats().active_calls, u64::from(CALLS));
    let per_call = after.saturating_sub(before) / CALLS as usize;
    println!("signalling state per established call: {per_call} bytes");
    assert!(
        per_call <= 8 * 1024,
        "an established call holds {per_call} bytes of engine state (target: 8 KiB)"
    );
    assert!(per_call > 0, "the counter saw the calls");
}
