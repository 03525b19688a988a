//! The seams other crates plug into: media hook, guard hook, inbound stages,
//! and ending a call from outside.

#![allow(clippy::unwrap_used)]

mod support;

use std::sync::{Arc, Mutex};
use std::time::Instant;

use bytes::Bytes;
use palisade_b2bua::{
    CallEnd, CallEventKind, CallInfo, CallRef, EndReason, Flow, GuardHook, MediaHook, MediaRefusal,
    SdpContext, SdpKind, Stage, StageContext, Verdict,
};
use palisade_config::TrunkId;
use palisade_sip::{Editor, Message};
use support::*;

#[derive(Debug, Default)]
struct Seen {
    sdp: Vec<(palisade_b2bua::Side, SdpKind, bool)>,
    released: Vec<CallRef>,
    ended: Vec<(CallRef, EndReason, bool)>,
    answered: Vec<CallRef>,
}

#[derive(Debug)]
struct FakeMedia {
    seen: Arc<Mutex<Seen>>,
    refuse_offers: bool,
}

impl MediaHook for FakeMedia {
    fn sdp(
        &mut self,
        _now: Instant,
        ctx: &SdpContext<'_>,
        sdp: &[u8],
    ) -> Result<Bytes, MediaRefusal> {
        self.seen
            .lock()
            .unwrap()
            .sdp
            .push((ctx.from, ctx.kind, ctx.early));
        if self.refuse_offers && ctx.kind == SdpKind::Offer {
            return Err(MediaRefusal {
                status: 503,
                reason: "no-ports",
            });
        }
        let mut out = sdp.to_vec();
        out.extend_from_slice(format!("a=x-anchored:{}\r\n", ctx.to_zone.name).as_bytes());
        Ok(Bytes::from(out))
    }

    fn release(&mut self, _now: Instant, call: CallRef) {
        self.seen.lock().unwrap().released.push(call);
    }
}

#[derive(Debug)]
struct FakeGuard {
    seen: Arc<Mutex<Seen>>,
}

impl GuardHook for FakeGuard {
    fn request(
        &mut self,
        _now: Instant,
        flow: &Flow,
        _trunk: Option<TrunkId>,
        _msg: &Message,
    ) -> Verdict {
        if flow.remote.ip().to_string() == "127.0.0.99" {
            Verdict::Drop
        } else {
            Verdict::Allow
        }
    }

    fn call_start(&mut self, _now: Instant, info: &CallInfo<'_>) -> Verdict {
        if info.number.starts_with("+882") {
            Verdict::Reject(403)
        } else {
            Verdict::Allow
        }
    }

    fn call_answered(&mut self, _now: Instant, call: CallRef) {
        self.seen.lock().unwrap().answered.push(call);
    }

    fn call_ended(&mut self, _now: Instant, call: CallRef, end: &CallEnd) {
        self.seen
            .lock()
            .unwrap()
            .ended
            .push((call, end.reason, end.answered));
    }
}

#[test]
fn media_hook_sees_offer_and_answer_and_releases() {
    let seen = Arc::new(Mutex::new(Seen::default()));
    let mut lab = lab();
    lab.engine.set_media(Box::new(FakeMedia {
        seen: seen.clone(),
        refuse_offers: false,
    }));
    lab.recv_msg(INSIDE, PBX, pbx_invite(1, "+4930123456", Some(PBX_SDP)));
    let inv = lab.find(CARRIER1, "INVITE");
    assert!(String::from_utf8_lossy(inv.body()).ends_with("a=x-anchored:outside\r\n"));
    lab.recv_msg(
        OUTSIDE,
        CARRIER1,
        reply(
            &inv,
            183,
            Some("t"),
            Some("<sip:c@127.0.0.20:5080>"),
            Some(CARRIER_SDP),
        ),
    );
    lab.recv_msg(
        OUTSIDE,
        CARRIER1,
        reply(
            &inv,
            200,
            Some("t"),
            Some("<sip:c@127.0.0.20:5080>"),
            Some(CARRIER_SDP),
        ),
    );
    let ok = lab.find(PBX, "200/INVITE");
    assert!(String::from_utf8_lossy(ok.body()).ends_with("a=x-anchored:inside\r\n"));
    use palisade_b2bua::Side::{A, B};
    assert_eq!(
        seen.lock().unwrap().sdp,
        vec![
            (A, SdpKind::Offer, false),
            (B, SdpKind::Answer, true),
            (B, SdpKind::Answer, false)
        ]
    );
    let call = lab_call(&lab);
    assert!(
        lab.engine
            .terminate_call(lab.now, call, EndReason::MediaTimeout)
    );
    assert!(
        !lab.engine
            .terminate_call(lab.now, call, EndReason::MediaTimeout),
        "already ending"
    );
    lab.advance(std::time::Duration::ZERO);
    assert_eq!(seen.lock().unwrap().released.len(), 1);
    let msgs = lab.take();
    assert!(
        msgs.iter()
            .any(|(f, m)| f.remote == addr(PBX) && describe(m) == "BYE")
    );
    assert!(
        msgs.iter()
            .any(|(f, m)| f.remote == addr(CARRIER1) && describe(m) == "BYE")
    );
    assert!(matches!(
        lab.call_events().last(),
        Some(CallEventKind::Ended {
            reason: EndReason::MediaTimeout,
            ..
        })
    ));
}

fn lab_call(lab: &Lab) -> CallRef {
    lab.events
        .iter()
        .find_map(|e| match e {
            palisade_b2bua::Event::Call(c) => Some(c.call),
            _ => None,
        })
        .unwrap()
}

#[test]
fn media_refusal_rejects_the_call_cleanly() {
    let seen = Arc::new(Mutex::new(Seen::default()));
    let mut lab = lab();
    lab.engine.set_media(Box::new(FakeMedia {
        seen,
        refuse_offers: true,
    }));
    lab.recv_msg(INSIDE, PBX, pbx_invite(2, "+4930123456", Some(PBX_SDP)));
    let msgs = lab.take();
    assert!(
        msgs.iter()
            .any(|(f, m)| f.remote == addr(PBX) && describe(m) == "503/INVITE")
    );
    assert!(
        !msgs.iter().any(|(f, _)| f.remote == addr(CARRIER1)),
        "nothing reaches the carrier"
    );
    assert_eq!(lab.engine.active_calls(), 0);
    assert_eq!(lab.engine.stats().media_refused, 1);
}

#[test]
fn late_offer_ack_reuses_the_invite_cseq_through_the_media_hook() {
    let seen = Arc::new(Mutex::new(Seen::default()));
    let mut lab = lab();
    lab.engine.set_media(Box::new(FakeMedia {
        seen: seen.clone(),
        refuse_offers: false,
    }));
    let inv = pbx_invite(3, "+4930123456", None);
    lab.recv_msg(INSIDE, PBX, inv.clone());
    let inv_b = lab.find(CARRIER1, "INVITE");
    lab.recv_msg(
        OUTSIDE,
        CARRIER1,
        reply(
            &inv_b,
            200,
            Some("lo"),
            Some("<sip:c@127.0.0.20:5080>"),
            Some(CARRIER_SDP),
        ),
    );
    let ok = lab.find(PBX, "200/INVITE");
    let mut pbx = PeerDialog::from_uac_side(&inv, &ok, "127.0.0.10:5070");
    lab.recv_msg(INSIDE, PBX, pbx.ack(1, Some(PBX_SDP)));
    let ack = lab.find(CARRIER1, "ACK");
    assert_eq!(
        ack.cseq().seq,
        inv_b.cseq().seq,
        "2xx ACK carries the INVITE's CSeq"
    );
    use palisade_b2bua::Side::{A, B};
    assert_eq!(
        seen.lock().unwrap().sdp,
        vec![(B, SdpKind::Offer, false), (A, SdpKind::Answer, false)]
    );
}

#[test]
fn guard_drops_rejects_and_observes_calls() {
    let seen = Arc::new(Mutex::new(Seen::default()));
    let mut lab = lab();
    lab.engine
        .set_guard(Box::new(FakeGuard { seen: seen.clone() }));
    // Banned source: no answer at all.
    lab.recv(INSIDE, "127.0.0.99:5060", "OPTIONS sip:127.0.0.1 SIP/2.0\nVia: SIP/2.0/UDP 127.0.0.99:5060;branch=z9hG4bKb\nFrom: <sip:s@127.0.0.99>;tag=x\nTo: <sip:127.0.0.1>\nCall-ID: ban\nCSeq: 1 OPTIONS\nContent-Length: 0\n\n");
    assert!(lab.take().is_empty());
    assert_eq!(lab.engine.stats().guard_dropped, 1);
    // Premium destination: refused before anything goes out.
    lab.recv_msg(INSIDE, PBX, pbx_invite(4, "+88213", None));
    let msgs = lab.take();
    assert!(
        msgs.iter()
            .any(|(f, m)| f.remote == addr(PBX) && describe(m) == "403/INVITE")
    );
    assert!(!msgs.iter().any(|(f, _)| f.remote == addr(CARRIER1)));
    // A normal call: answered, ended, reported.
    lab.recv_msg(INSIDE, PBX, pbx_invite(5, "+4930123456", Some(PBX_SDP)));
    let inv = lab.find(CARRIER1, "INVITE");
    lab.recv_msg(OUTSIDE, CARRIER1, reply(&inv, 486, Some("b"), None, None));
    let s = seen.lock().unwrap();
    assert!(s.answered.is_empty());
    assert_eq!(s.ended.len(), 1);
    assert_eq!(s.ended[0].1, EndReason::Rejected);
    assert!(!s.ended[0].2);
}

/// Rewrites a national number (leading 0) in the Request-URI to E.164.
#[derive(Debug)]
struct NationalToE164;

impl Stage for NationalToE164 {
    fn name(&self) -> &'static str {
        "national-to-e164"
    }

    fn apply(&self, _ctx: &StageContext<'_>, edit: &mut Editor<'_>) {
        let m = edit.message();
        if let Some(rest) = m.request_uri_str().and_then(|u| u.strip_prefix("sip:0")) {
            let new = format!("sip:+49{rest}");
            edit.set_request_uri(&new);
        }
    }
}

#[test]
fn inbound_stages_run_before_routing() {
    let mut lab = lab();
    lab.engine
        .set_inbound_stages(TrunkId(1), vec![Box::new(NationalToE164)]);
    // The carrier sends a national number; only the E.164 form has a route to the PBX.
    let inv = "INVITE sip:030123456@127.0.0.2:5060 SIP/2.0\nVia: SIP/2.0/UDP 127.0.0.20:5080;branch=z9hG4bK-nat\nMax-Forwards: 70\nFrom: <sip:+15551234567@127.0.0.20>;tag=n\nTo: <sip:030123456@127.0.0.2>\nCall-ID: national-1\nCSeq: 1 INVITE\nContact: <sip:c@127.0.0.20:5080>\nContent-Length: 0\n\n";
    lab.recv(OUTSIDE, CARRIER1, inv);
    let to_pbx = lab.find(PBX, "INVITE");
    assert_eq!(
        to_pbx.request_uri_str(),
        Some("sip:+4930123456@127.0.0.10:5070")
    );
}

fn fake_media_lab(sip: Option<&str>) -> (Lab, Arc<Mutex<Seen>>) {
    let seen = Arc::new(Mutex::new(Seen::default()));
    let mut lab = match sip {
        Some(s) => lab_with(quickstart_with_sip(s)),
        None => lab(),
    };
    lab.engine.set_media(Box::new(FakeMedia {
        seen: seen.clone(),
        refuse_offers: false,
    }));
    (lab, seen)
}

fn released(seen: &Arc<Mutex<Seen>>) -> usize {
    seen.lock().unwrap().released.len()
}

#[test]
fn media_is_released_once_when_the_caller_cancels() {
    let (mut lab, seen) = fake_media_lab(None);
    let inv = pbx_invite(60, "+4930123456", Some(PBX_SDP));
    lab.recv_msg(INSIDE, PBX, inv.clone());
    let inv_b = lab.find(CARRIER1, "INVITE");
    lab.recv_msg(
        OUTSIDE,
        CARRIER1,
        reply(
            &inv_b,
            180,
            Some("r"),
            Some("<sip:c@127.0.0.20:5080>"),
            None,
        ),
    );
    assert_eq!(released(&seen), 0);
    let cancel = String::from_utf8(inv.to_vec())
        .unwrap()
        .replacen("INVITE sip:", "CANCEL sip:", 1)
        .replace("CSeq: 1 INVITE", "CSeq: 1 CANCEL");
    let cancel =
        cancel.split("Content-Type").next().unwrap().to_owned() + "Content-Length: 0\r\n\r\n";
    lab.recv(INSIDE, PBX, &cancel);
    lab.find(CARRIER1, "CANCEL");
    assert_eq!(released(&seen), 1);
    lab.recv_msg(OUTSIDE, CARRIER1, reply(&inv_b, 487, Some("r"), None, None));
    lab.advance(std::time::Duration::from_secs(40));
    assert_eq!(released(&seen), 1, "released exactly once");
}

#[test]
fn media_is_released_once_on_busy_and_on_all_members_failing() {
    // 486: final, no failover.
    let (mut lab, seen) = fake_media_lab(None);
    lab.recv_msg(INSIDE, PBX, pbx_invite(61, "+4930123456", Some(PBX_SDP)));
    let inv = lab.find(CARRIER1, "INVITE");
    lab.recv_msg(OUTSIDE, CARRIER1, reply(&inv, 486, Some("b"), None, None));
    lab.find(PBX, "486/INVITE");
    assert_eq!(released(&seen), 1);
    // 503 from both members: the failover keeps the media; the end releases it.
    let (mut lab, seen) = fake_media_lab(None);
    lab.recv_msg(INSIDE, PBX, pbx_invite(62, "+4930123456", Some(PBX_SDP)));
    let inv1 = lab.find(CARRIER1, "INVITE");
    lab.recv_msg(OUTSIDE, CARRIER1, reply(&inv1, 503, Some("x"), None, None));
    let inv2 = lab.find(CARRIER2, "INVITE");
    assert_eq!(released(&seen), 0, "failover keeps the call's media");
    lab.recv_msg(OUTSIDE, CARRIER2, reply(&inv2, 503, Some("y"), None, None));
    lab.find(PBX, "500/INVITE");
    assert_eq!(released(&seen), 1);
    lab.advance(std::time::Duration::from_secs(40));
    assert_eq!(released(&seen), 1);
}

#[test]
fn media_is_released_once_on_the_no_answer_timeout() {
    let (mut lab, seen) = fake_media_lab(Some("  no_answer_timeout_seconds: 3"));
    lab.recv_msg(INSIDE, PBX, pbx_invite(63, "+4930123456", Some(PBX_SDP)));
    let inv = lab.find(CARRIER1, "INVITE");
    lab.recv_msg(
        OUTSIDE,
        CARRIER1,
        reply(&inv, 180, Some("r"), Some("<sip:c@127.0.0.20:5080>"), None),
    );
    lab.advance(std::time::Duration::from_secs(2));
    assert_eq!(released(&seen), 0);
    lab.advance(std::time::Duration::from_secs(2));
    assert_eq!(released(&seen), 1);
    assert!(matches!(
        lab.call_events().last(),
        Some(CallEventKind::Ended {
            reason: EndReason::NoAnswer,
            ..
        })
    ));
}

#[test]
fn update_with_sdp_passes_the_media_hook_offer_then_answer() {
    let (mut lab, seen) = fake_media_lab(None);
    let inv = pbx_invite(64, "+4930123456", Some(PBX_SDP));
    lab.recv_msg(INSIDE, PBX, inv.clone());
    let inv_b = lab.find(CARRIER1, "INVITE");
    lab.recv_msg(
        OUTSIDE,
        CARRIER1,
        reply(
            &inv_b,
            200,
            Some("t"),
            Some("<sip:c@127.0.0.20:5080>"),
            Some(CARRIER_SDP),
        ),
    );
    let ok = lab.find(PBX, "200/INVITE");
    let mut pbx = PeerDialog::from_uac_side(&inv, &ok, "127.0.0.10:5070");
    lab.recv_msg(INSIDE, PBX, pbx.ack(1, None));
    seen.lock().unwrap().sdp.clear();
    let hold = PBX_SDP.replace("o=pbx 111 1", "o=pbx 111 2") + "a=sendonly\r\n";
    lab.recv_msg(
        INSIDE,
        PBX,
        pbx.request("UPDATE", Some(("application/sdp", &hold)), None),
    );
    let up = lab.find(CARRIER1, "UPDATE");
    assert!(String::from_utf8_lossy(up.body()).ends_with("a=sendonly\r\na=x-anchored:outside\r\n"));
    lab.recv_msg(
        OUTSIDE,
        CARRIER1,
        reply(
            &up,
            200,
            None,
            Some("<sip:c@127.0.0.20:5080>"),
            Some(CARRIER_SDP),
        ),
    );
    let ok = lab.find(PBX, "200/UPDATE");
    assert!(String::from_utf8_lossy(ok.body()).ends_with("a=x-anchored:inside\r\n"));
    use palisade_b2bua::Side::{A, B};
    assert_eq!(
        seen.lock().unwrap().sdp,
        vec![(A, SdpKind::Offer, false), (B, SdpKind::Answer, false)]
    );
    assert_eq!(released(&seen), 0);
}

#[test]
fn media_quality_becomes_the_calls_media_stats_event() {
    let (mut lab, _seen) = fake_media_lab(None);
    lab.recv_msg(INSIDE, PBX, pbx_invite(65, "+4930123456", Some(PBX_SDP)));
    let inv = lab.find(CARRIER1, "INVITE");
    lab.recv_msg(OUTSIDE, CARRIER1, reply(&inv, 486, Some("b"), None, None));
    let call = lab_call(&lab);
    let q = palisade_b2bua::StreamQuality {
        stream: 0,
        a: palisade_b2bua::DirectionQuality {
            packets: 100,
            jitter_ms: 0.4,
            rtcp_fraction_lost: Some(0.01),
            mos: Some(4.4),
            ..Default::default()
        },
        b: Default::default(),
    };
    lab.engine.media_stats(call, vec![q]);
    lab.engine.media_stats(call, Vec::new());
    lab.advance(std::time::Duration::ZERO);
    let stats: Vec<_> = lab
        .events
        .iter()
        .filter_map(|e| match e {
            palisade_b2bua::Event::Call(c) => match &c.kind {
                CallEventKind::MediaStats { streams } => Some((c.call, streams.clone())),
                _ => None,
            },
            _ => None,
        })
        .collect();
    assert_eq!(
        stats,
        vec![(call, vec![q])],
        "one event, nothing for no streams"
    );
    // It follows the call's end, under the same call reference.
    let kinds = lab.call_events();
    assert!(matches!(
        kinds[kinds.len() - 2],
        CallEventKind::Ended { .. }
    ));
}
