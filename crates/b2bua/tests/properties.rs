//! Property tests: whatever peers send, in whatever order and timing, the
//! engine never panics, only sends parseable messages (checked by the lab),
//! and every call, transaction and timer is released once calls end.

#![allow(clippy::unwrap_used)]

mod support;

use std::time::Duration;

use palisade_sip::{Message, ParseLimits};
use proptest::prelude::*;
use support::*;

#[derive(Debug, Clone)]
enum Act {
    PbxInvite {
        n: u8,
        sdp: bool,
    },
    CarrierInbound {
        n: u8,
    },
    /// Answer the newest INVITE the carrier (or PBX) got with this status.
    PeerReply {
        to_pbx_side: bool,
        status: u16,
        tag: u8,
    },
    /// Replay an earlier message Palisade sent, as if the peer echoed it.
    Echo(usize),
    /// Retransmit an earlier message Palisade received.
    Replay(usize),
    /// A BYE or other in-dialog request built from the newest 2xx.
    PbxInDialog(&'static str),
    Garbage(Vec<u8>),
    Advance(u16),
}

fn act() -> impl Strategy<Value = Act> {
    prop_oneof![
        (0u8..4, any::<bool>()).prop_map(|(n, sdp)| Act::PbxInvite { n, sdp }),
        (0u8..4).prop_map(|n| Act::CarrierInbound { n }),
        (
            any::<bool>(),
            prop_oneof![
                Just(100u16),
                Just(180),
                Just(183),
                Just(200),
                Just(486),
                Just(503),
                Just(408),
                Just(302),
                Just(603)
            ],
            0u8..3
        )
            .prop_map(|(to_pbx_side, status, tag)| Act::PeerReply {
                to_pbx_side,
                status,
                tag
            }),
        any::<usize>().prop_map(Act::Echo),
        any::<usize>().prop_map(Act::Replay),
        prop_oneof![
            Just("BYE"),
            Just("INFO"),
            Just("INVITE"),
            Just("UPDATE"),
            Just("ACK"),
            Just("CANCEL")
        ]
        .prop_map(Act::PbxInDialog),
        proptest::collection::vec(any::<u8>(), 0..64).prop_map(Act::Garbage),
        (0u16..5000).prop_map(Act::Advance),
    ]
}

fn carrier_invite(n: u8) -> String {
    format!(
        "INVITE sip:+49301234{n:02}@127.0.0.2:5060 SIP/2.0\nVia: SIP/2.0/UDP 127.0.0.20:5080;branch=z9hG4bK-in-{n}\nMax-Forwards: 70\nFrom: <sip:+1555@127.0.0.20>;tag=cin{n}\nTo: <sip:+49301234{n:02}@127.0.0.2>\nCall-ID: carrier-in-{n}\nCSeq: 1 INVITE\nContact: <sip:c@127.0.0.20:5080>\nContent-Length: 0\n\n"
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    #[test]
    fn engine_survives_anything_and_releases_everything(acts in proptest::collection::vec(act(), 1..60)) {
        let mut lab = lab_with(quickstart_with_sip("  member_timeout_ms: 1000\n  no_answer_timeout_seconds: 20"));
        let mut received: Vec<(palisade_config::ZoneId, String, bytes::Bytes)> = Vec::new();
        for a in acts {
            match a {
                Act::PbxInvite { n, sdp } => {
                    let m = pbx_invite(u32::from(n), "+4930123456", sdp.then_some(PBX_SDP));
                    received.push((INSIDE, PBX.to_owned(), m.clone()));
                    lab.recv_msg(INSIDE, PBX, m);
                }
                Act::CarrierInbound { n } => {
                    let m = bytes::Bytes::from(crlf(&carrier_invite(n)));
                    received.push((OUTSIDE, CARRIER1.to_owned(), m.clone()));
                    lab.recv_msg(OUTSIDE, CARRIER1, m);
                }
                Act::PeerReply { to_pbx_side, status, tag } => {
                    let peer = if to_pbx_side { PBX } else { CARRIER1 };
                    let inv = lab.sent.iter().rev().find(|(f, m)| f.remote == addr(peer) && describe(m) == "INVITE").map(|(_, m)| m.clone());
                    if let Some(inv) = inv {
                        let t = format!("t{tag}");
                        let r = reply(&inv, status, (status > 100).then_some(t.as_str()), Some("<sip:peer@127.0.0.20:5080>"), (status == 200).then_some(CARRIER_SDP));
                        let zone = if to_pbx_side { INSIDE } else { OUTSIDE };
                        received.push((zone, peer.to_owned(), r.clone()));
                        lab.recv_msg(zone, peer, r);
                    }
                }
                Act::Echo(i) => {
                    if !lab.sent.is_empty() {
                        let (f, m) = lab.sent[i % lab.sent.len()].clone();
                        let from = f.remote.to_string();
                        lab.recv_msg(f.zone, &from, m.raw().clone());
                    }
                }
                Act::Replay(i) => {
                    if !received.is_empty() {
                        let (z, from, m) = received[i % received.len()].clone();
                        lab.recv_msg(z, &from, m);
                    }
                }
                Act::PbxInDialog(method) => {
                    let ok = lab.sent.iter().rev().find(|(f, m)| f.remote == addr(PBX) && m.status().is_some_and(|s| (180..300).contains(&s)) && m.to_tag().is_some() && m.cseq().method == palisade_sip::Method::Invite && m.contacts().next().is_some()).map(|(_, m)| m.clone());
                    if let Some(ok) = ok {
                        let inv = received.iter().rev().find(|(_, _, b)| {
                            Message::parse(b.clone(), &ParseLimits::default()).is_ok_and(|m| m.call_id() == ok.call_id())
                        });
                        if let Some((_, _, inv)) = inv {
                            let mut d = PeerDialog::from_uac_side(inv, &ok, "127.0.0.10:5070");
                            let m = if method == "ACK" { d.ack(1, None) } else { d.request(method, None, Some("<sip:pbx@127.0.0.10:5070>")) };
                            received.push((INSIDE, PBX.to_owned(), m.clone()));
                            lab.recv_msg(INSIDE, PBX, m);
                        }
                    }
                }
                Act::Garbage(g) => lab.recv_msg(INSIDE, PBX, bytes::Bytes::from(g)),
                Act::Advance(ms) => lab.advance(Duration::from_millis(u64::from(ms))),
            }
        }
        lab.engine.terminate_all(lab.now);
        lab.advance(Duration::from_secs(300));
        let s = lab.engine.stats();
        prop_assert_eq!(s.active_calls, 0, "calls left: {:?}", lab.engine);
        prop_assert_eq!(s.server_transactions, 0);
        prop_assert_eq!(s.client_transactions, 0);
        prop_assert_eq!(s.internal_errors, 0);
        prop_assert_eq!(lab.engine.cac_held_calls(), 0, "admission slots leaked");
        prop_assert_eq!(lab.engine.poll_timeout(), None, "a timer is still armed");
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    /// The fuzz target's entry point on random input (stable stand-in for `cargo fuzz run engine`).
    #[test]
    fn engine_fuzz_entry_accepts_random_input(data in proptest::collection::vec(any::<u8>(), 0..3000)) {
        palisade_b2bua::fuzz::drive(origin(), &data);
    }
}

#[allow(clippy::disallowed_methods)] // the virtual clock needs one real origin
fn origin() -> std::time::Instant {
    std::time::Instant::now()
}

#[test]
fn engine_fuzz_seed_corpus() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus/engine");
    let mut n = 0;
    for e in std::fs::read_dir(dir).unwrap() {
        palisade_b2bua::fuzz::drive(origin(), &std::fs::read(e.unwrap().path()).unwrap());
        n += 1;
    }
    assert!(n >= 3);
}
