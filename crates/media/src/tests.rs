//! Manager tests: offer/answer flows on a real `Config`, with a recording
//! relay sink standing in for the relay threads.

// Tests read the clock (the manager itself never does).
#![allow(clippy::disallowed_methods)]

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use palisade_b2bua::{CallRef, MediaHook, SdpContext, SdpKind, Side};
use palisade_config::Config;
use palisade_relay::{Busy, Command, Endpoint, Latch, Report, SessionId, SrtpSuite};
use proptest::prelude::*;

use super::*;
use crate::sdp::Sdp;

/// Records every command; refuses them while `busy` is set.
#[derive(Debug, Clone, Default)]
struct Recorder {
    sent: Arc<Mutex<Vec<Command>>>,
    busy: Arc<Mutex<bool>>,
}

impl RelaySink for Recorder {
    #[allow(clippy::result_large_err)]
    fn send(&mut self, cmd: Command) -> Result<(), Busy> {
        if *self.busy.lock().unwrap() {
            return Err(Busy(cmd));
        }
        self.sent.lock().unwrap().push(cmd);
        Ok(())
    }
}

impl Recorder {
    fn take(&self) -> Vec<Command> {
        std::mem::take(&mut *self.sent.lock().unwrap())
    }
    fn set_busy(&self, b: bool) {
        *self.busy.lock().unwrap() = b;
    }
}

fn config(carrier_media: &str, pbx_media: &str, inside_max: u16) -> Config {
    let yaml = format!(
        "zones:
  - name: inside
    sip_address: 127.0.0.1
    media: {{port_min: 20000, port_max: {inside_max}}}
  - name: outside
    sip_address: 127.0.0.2
    media: {{port_min: 30000, port_max: 30999}}
trunks:
  - name: pbx
    zone: inside
    members: [{{address: 127.0.0.10, port: 5070}}]
    media: {{{pbx_media}}}
  - name: carrier
    zone: outside
    members: [{{address: 127.0.0.20, port: 5080}}]
    media: {{{carrier_media}}}
routes:
  - name: out
    from_trunk: pbx
    to_trunk: carrier
"
    );
    palisade_config::load_str(&yaml, "t.yaml").unwrap()
}

struct Rig {
    cfg: Config,
    media: SharedMedia,
    relay: Recorder,
    /// Legs A and B behind a NAT (what the engine detected).
    nated: [bool; 2],
}

impl Rig {
    fn new(carrier: &str, pbx: &str) -> Rig {
        Self::with_range(carrier, pbx, 20999)
    }

    fn with_range(carrier: &str, pbx: &str, inside_max: u16) -> Rig {
        let cfg = config(carrier, pbx, inside_max);
        let relay = Recorder::default();
        let media = SharedMedia::new(&cfg, Box::new(relay.clone()), [3; 32]);
        Rig {
            cfg,
            media,
            relay,
            nated: [false; 2],
        }
    }

    /// SDP from leg `from` of call `call`.
    fn sdp(
        &mut self,
        call: u64,
        from: Side,
        kind: SdpKind,
        body: &str,
    ) -> Result<String, palisade_b2bua::MediaRefusal> {
        let t = self.cfg.trunks();
        let z = self.cfg.zones();
        let (fz, tz, ft, tt, peer) = match from {
            Side::A => (&z[0], &z[1], &t[0], &t[1], "127.0.0.10:5070"),
            Side::B => (&z[1], &z[0], &t[1], &t[0], "127.0.0.20:5080"),
        };
        let (from_nated, to_nated) = match from {
            Side::A => (self.nated[0], self.nated[1]),
            Side::B => (self.nated[1], self.nated[0]),
        };
        let ctx = SdpContext {
            call: CallRef(call),
            from,
            kind,
            early: false,
            from_zone: fz,
            to_zone: tz,
            from_trunk: ft,
            to_trunk: tt,
            from_peer: peer.parse().unwrap(),
            from_nated,
            to_nated,
        };
        self.media
            .sdp(Instant::now(), &ctx, body.as_bytes())
            .map(|b| String::from_utf8(b.to_vec()).unwrap())
    }

    fn offer(&mut self, call: u64, from: Side, body: &str) -> String {
        self.sdp(call, from, SdpKind::Offer, body).unwrap()
    }

    fn answer(&mut self, call: u64, from: Side, body: &str) -> String {
        self.sdp(call, from, SdpKind::Answer, body).unwrap()
    }

    fn release(&mut self, call: u64) {
        self.media.release(Instant::now(), CallRef(call));
    }
}

const PBX_OFFER: &str = "v=0\r\no=pbx 100 1 IN IP4 127.0.0.10\r\ns=call\r\nc=IN IP4 127.0.0.10\r\nt=0 0\r\na=ice-lite\r\nm=audio 16000 RTP/AVP 0 8 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\na=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-16\r\na=ptime:20\r\na=candidate:1 1 UDP 2130706431 127.0.0.10 16000 typ host\r\na=ice-ufrag:abcd\r\na=x-vendor:keep\r\na=sendrecv\r\n";

const CARRIER_ANSWER: &str = "v=0\r\no=carrier 200 1 IN IP4 127.0.0.20\r\ns=-\r\nc=IN IP4 127.0.0.20\r\nt=0 0\r\nm=audio 17000 RTP/AVP 8 101\r\na=rtpmap:8 PCMA/8000\r\na=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-15\r\na=sendrecv\r\n";

fn lines(sdp: &str) -> Vec<&str> {
    sdp.split("\r\n").filter(|l| !l.is_empty()).collect()
}

fn m_port(sdp: &str) -> u16 {
    Sdp::parse(sdp.as_bytes()).unwrap().media[0].port
}

fn opens(cmds: &[Command]) -> Vec<(u8, Endpoint, Endpoint)> {
    cmds.iter()
        .filter_map(|c| match c {
            Command::Open { stream, a, b, .. } => Some((*stream, a.clone(), b.clone())),
            _ => None,
        })
        .collect()
}

fn updates(cmds: &[Command]) -> Vec<(palisade_relay::Side, Endpoint)> {
    cmds.iter()
        .filter_map(|c| match c {
            Command::Update { side, endpoint, .. } => Some((*side, endpoint.clone())),
            _ => None,
        })
        .collect()
}

fn update_for(cmds: &[Command], side: palisade_relay::Side) -> Endpoint {
    updates(cmds)
        .into_iter()
        .find(|(s, _)| *s == side)
        .map(|(_, e)| e)
        .unwrap_or_else(|| panic!("no update for {side:?} in {cmds:?}"))
}

fn sa(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

#[test]
fn offer_and_answer_hide_each_side_and_open_the_relay() {
    let mut r = Rig::new("", "");
    let out = r.offer(1, Side::A, PBX_OFFER);
    // The carrier sees only Palisade's outside media address.
    assert!(!out.contains("127.0.0.10"), "{out}");
    assert!(out.contains("c=IN IP4 127.0.0.2\r\n"), "{out}");
    let l = lines(&out);
    assert!(
        l[1].starts_with("o=- ") && l[1].ends_with(" 1 IN IP4 127.0.0.2"),
        "{out}"
    );
    let port = m_port(&out);
    assert!((30000..31000).contains(&port) && port.is_multiple_of(2));
    assert!(
        l.contains(&format!("a=rtcp:{}", port + 1).as_str()),
        "{out}"
    );
    assert!(!out.contains("candidate") && !out.contains("ice-"), "{out}");
    assert!(l.contains(&"a=x-vendor:keep") && l.contains(&"a=ptime:20"));
    assert!(l.contains(&"m=audio 30000 RTP/AVP 0 8 101"), "{out}");
    let cmds = r.relay.take();
    let o = opens(&cmds);
    assert_eq!(o.len(), 1);
    let (stream, a, b) = &o[0];
    assert_eq!(*stream, 0);
    assert_eq!(a.remote, Some(sa("127.0.0.10:16000")));
    assert_eq!(a.remote_rtcp, Some(sa("127.0.0.10:16001")));
    assert_eq!(a.local.ip().to_string(), "127.0.0.1");
    assert_eq!(b.local, sa(&format!("127.0.0.2:{port}")));
    assert_eq!(b.remote, None);
    assert_eq!(a.latch, Latch::Learn);

    let ans = r.answer(1, Side::B, CARRIER_ANSWER);
    assert!(!ans.contains("127.0.0.20"), "{ans}");
    assert!(ans.contains("c=IN IP4 127.0.0.1\r\n"), "{ans}");
    let a_port = m_port(&ans);
    assert_eq!(a.local.port(), a_port);
    assert!(
        lines(&ans).contains(&"m=audio 20000 RTP/AVP 8 101"),
        "{ans}"
    );
    let cmds = r.relay.take();
    let ub = update_for(&cmds, palisade_relay::Side::B);
    assert_eq!(ub.remote, Some(sa("127.0.0.20:17000")));
    assert_eq!(ub.remote_rtcp, Some(sa("127.0.0.20:17001")));
    assert!(ub.pt_map.is_empty() && !ub.on_hold);
    let ua = update_for(&cmds, palisade_relay::Side::A);
    assert_eq!(ua.remote, Some(sa("127.0.0.10:16000")));
    assert_eq!(r.media.stats().ports_in_use, 2);
    // Release: Close, ports quarantined until the relay says Closed.
    r.release(1);
    assert_eq!(
        r.relay.take(),
        vec![Command::Close {
            session: SessionId(1)
        }]
    );
    assert_eq!(r.media.stats().ports_quarantined, 2);
    assert_eq!(r.media.stats().ports_in_use, 2);
    r.media.on_report(&Report::Closed {
        session: SessionId(1),
        streams: Default::default(),
    });
    let s = r.media.stats();
    assert_eq!((s.ports_in_use, s.ports_quarantined, s.calls), (0, 0, 0));
    // A late SDP for the released call allocates nothing.
    assert_eq!(
        r.sdp(1, Side::A, SdpKind::Offer, PBX_OFFER)
            .unwrap_err()
            .status,
        500
    );
    assert_eq!(r.media.stats().ports_in_use, 0);
}

#[test]
fn failover_repeats_the_offer_and_second_answers_reapply() {
    let mut r = Rig::new("", "");
    let first = r.offer(1, Side::A, PBX_OFFER);
    r.relay.take();
    // The next trunk member gets the very same offer, nothing new opened.
    assert_eq!(r.offer(1, Side::A, PBX_OFFER), first);
    assert!(r.relay.take().is_empty());
    let early = r.sdp(1, Side::B, SdpKind::Answer, CARRIER_ANSWER).unwrap();
    let fin = r.answer(1, Side::B, CARRIER_ANSWER);
    assert_eq!(
        early, fin,
        "200 repeating the 183's answer: same SDP, same version"
    );
    // An answer with another address (another fork) updates the relay.
    let other = CARRIER_ANSWER.replace("17000", "17002");
    let fork = r.answer(1, Side::B, &other);
    assert_eq!(fork, fin, "what leg A sees does not change");
    let cmds = r.relay.take();
    let last_b = updates(&cmds)
        .into_iter()
        .rfind(|(s, _)| *s == palisade_relay::Side::B)
        .unwrap()
        .1;
    assert_eq!(last_b.remote, Some(sa("127.0.0.20:17002")));
    assert_eq!(r.media.stats().offers_repeated, 1);
}

#[test]
fn answer_without_offer_is_refused() {
    let mut r = Rig::new("", "");
    let e = r
        .sdp(9, Side::B, SdpKind::Answer, CARRIER_ANSWER)
        .unwrap_err();
    assert_eq!((e.status, e.reason), (488, "no-offer"));
    let e = r
        .sdp(9, Side::A, SdpKind::Offer, "v=0\r\nbroken")
        .unwrap_err();
    assert_eq!((e.status, e.reason), (488, "bad-sdp"));
    assert_eq!(r.media.stats().refused_bad_sdp, 1);
}

const SRTP_OFFER: &str = "v=0\r\no=ms 1 1 IN IP4 127.0.0.20\r\ns=-\r\nc=IN IP4 127.0.0.20\r\nt=0 0\r\nm=audio 18000 RTP/SAVP 0 96\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:96 telephone-event/8000\r\na=crypto:2 AES_CM_128_HMAC_SHA1_80 inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz|2^31|1:4\r\na=crypto:3 AES_CM_128_HMAC_SHA1_32 inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz|2^31|1:4\r\na=rtcp-mux\r\n";

#[test]
fn srtp_toward_the_carrier_plain_toward_the_pbx() {
    let mut r = Rig::new("srtp: required", "");
    let out = r.offer(1, Side::A, PBX_OFFER);
    let l = lines(&out);
    assert!(
        l.iter()
            .any(|x| x.starts_with("m=audio ") && x.contains(" RTP/SAVP ")),
        "{out}"
    );
    let crypto: Vec<&&str> = l.iter().filter(|x| x.starts_with("a=crypto:")).collect();
    assert_eq!(crypto.len(), 1);
    let ours = Crypto::parse(crypto[0].strip_prefix("a=crypto:").unwrap()).unwrap();
    assert_eq!(ours.key.suite, SrtpSuite::AesCm128HmacSha1_80);
    r.relay.take();
    // The carrier answers with its own key.
    let ans = CARRIER_ANSWER.replace("RTP/AVP", "RTP/SAVP").replace(
        "a=sendrecv",
        "a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVphYmNk\r\na=sendrecv",
    );
    let to_pbx = r.answer(1, Side::B, &ans);
    assert!(
        !to_pbx.contains("crypto") && to_pbx.contains("RTP/AVP"),
        "{to_pbx}"
    );
    let cmds = r.relay.take();
    let ub = update_for(&cmds, palisade_relay::Side::B);
    assert_eq!(ub.srtp_send.as_ref(), Some(&ours.key));
    assert!(ub.srtp_recv.is_some());
    let ua = update_for(&cmds, palisade_relay::Side::A);
    assert!(ua.srtp_send.is_none() && ua.srtp_recv.is_none());
    // An answer without crypto toward a trunk that requires SRTP ends the call.
    let mut r = Rig::new("srtp: required", "");
    r.offer(2, Side::A, PBX_OFFER);
    let e = r
        .sdp(2, Side::B, SdpKind::Answer, CARRIER_ANSWER)
        .unwrap_err();
    assert_eq!((e.status, e.reason), (488, "srtp-required"));
}

/// Palisade's own SDES keys: a fresh master key and salt for every leg of
/// every call (and never the peer's), each matching what the relay encrypts
/// with toward that leg.
#[test]
fn srtp_keys_are_distinct_per_leg_and_per_call() {
    let mut r = Rig::new("srtp: required", "srtp: required");
    let pbx_offer = PBX_OFFER.replace("RTP/AVP", "RTP/SAVP").replace(
        "a=sendrecv",
        "a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz\r\na=sendrecv",
    );
    let carrier_answer = CARRIER_ANSWER.replace("RTP/AVP", "RTP/SAVP").replace(
        "a=sendrecv",
        "a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVphYmNk\r\na=sendrecv",
    );
    let key_in = |sdp: &str| {
        let line = lines(sdp)
            .into_iter()
            .find(|l| l.starts_with("a=crypto:"))
            .unwrap_or_else(|| panic!("no a=crypto in {sdp}"));
        Crypto::parse(line.strip_prefix("a=crypto:").unwrap())
            .unwrap()
            .key
    };
    let peer_keys = [key_in(&pbx_offer), key_in(&carrier_answer)];
    let mut ours = Vec::new();
    for call in 1..=3 {
        let to_carrier = r.offer(call, Side::A, &pbx_offer);
        let to_pbx = r.answer(call, Side::B, &carrier_answer);
        let (kb, ka) = (key_in(&to_carrier), key_in(&to_pbx));
        let cmds = r.relay.take();
        assert_eq!(
            update_for(&cmds, palisade_relay::Side::B).srtp_send,
            Some(kb.clone())
        );
        assert_eq!(
            update_for(&cmds, palisade_relay::Side::A).srtp_send,
            Some(ka.clone())
        );
        ours.push(ka);
        ours.push(kb);
    }
    for (i, k) in ours.iter().enumerate() {
        assert!(!peer_keys.contains(k), "key {i} is a peer's");
        for (j, other) in ours.iter().enumerate().skip(i + 1) {
            assert_ne!(
                k.master_key, other.master_key,
                "keys {i} and {j} share a master key"
            );
            assert_ne!(
                k.master_salt, other.master_salt,
                "keys {i} and {j} share a salt"
            );
        }
    }
}

#[test]
fn srtp_offer_with_both_suites_and_mki_is_answered_with_one() {
    // Inbound: the carrier (Teams-like) offers SRTP with _80 and _32 and MKI;
    // the PBX does plain RTP.
    let mut r = Rig::new("srtp: optional", "");
    let to_pbx = r.offer(1, Side::B, SRTP_OFFER);
    assert!(
        !to_pbx.contains("crypto") && to_pbx.contains(" RTP/AVP "),
        "{to_pbx}"
    );
    assert!(
        lines(&to_pbx)
            .iter()
            .any(|l| l.starts_with("m=audio 20000 RTP/AVP 0 96")),
        "{to_pbx}"
    );
    // auto rtcp-mux: the carrier offered it, so the PBX is offered it too.
    assert!(to_pbx.contains("a=rtcp-mux"), "{to_pbx}");
    let o = opens(&r.relay.take());
    let (_, a, b) = &o[0];
    let peer_key = b.srtp_recv.clone().unwrap();
    assert_eq!(peer_key.mki.as_deref(), Some(&[0, 0, 0, 1][..]));
    assert_eq!(b.remote_rtcp, b.remote, "carrier accepted with rtcp-mux");
    assert_eq!(a.remote, None);
    let pbx_answer = "v=0\r\no=pbx 5 5 IN IP4 127.0.0.10\r\ns=-\r\nc=IN IP4 127.0.0.10\r\nt=0 0\r\nm=audio 16000 RTP/AVP 0 96\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:96 telephone-event/8000\r\n";
    let to_carrier = r.answer(1, Side::A, pbx_answer);
    let l = lines(&to_carrier);
    let crypto: Vec<&&str> = l.iter().filter(|x| x.starts_with("a=crypto:")).collect();
    assert_eq!(crypto.len(), 1, "{to_carrier}");
    assert!(crypto[0].starts_with("a=crypto:2 AES_CM_128_HMAC_SHA1_80 inline:"));
    assert!(
        l.iter()
            .any(|x| x.starts_with("m=audio 30000 RTP/SAVP 0 96")),
        "{to_carrier}"
    );
    assert!(l.contains(&"a=rtcp-mux"), "{to_carrier}");
    assert!(!to_carrier.contains("127.0.0.10"));
    let cmds = r.relay.take();
    let ub = update_for(&cmds, palisade_relay::Side::B);
    assert!(ub.rtcp_mux && ub.srtp_recv == Some(peer_key));
    let sent = Crypto::parse(crypto[0].strip_prefix("a=crypto:").unwrap()).unwrap();
    assert_eq!(ub.srtp_send, Some(sent.key));
    let ua = update_for(&cmds, palisade_relay::Side::A);
    assert!(!ua.rtcp_mux, "the PBX did not accept rtcp-mux");
    assert_eq!(ua.remote_rtcp, Some(sa("127.0.0.10:16001")));
}

#[test]
fn srtp_policy_refusals() {
    // An SRTP-only offer toward a trunk with srtp off.
    let mut r = Rig::new("", "");
    let e = r.sdp(1, Side::B, SdpKind::Offer, SRTP_OFFER).unwrap_err();
    assert_eq!((e.status, e.reason), (488, "srtp-not-allowed"));
    // A plain offer from a trunk that requires SRTP.
    let mut r = Rig::new("", "srtp: required");
    let e = r.sdp(1, Side::A, SdpKind::Offer, PBX_OFFER).unwrap_err();
    assert_eq!((e.status, e.reason), (488, "srtp-required"));
    assert_eq!(r.media.stats().refused_srtp, 1);
    assert_eq!(r.media.stats().ports_in_use, 0);
    // Optional: best-effort crypto in an RTP/AVP offer.
    let mut r = Rig::new("srtp: optional", "");
    let out = r.offer(1, Side::A, PBX_OFFER);
    assert!(
        out.contains(" RTP/AVP ") && out.contains("a=crypto:1 AES_CM_128_HMAC_SHA1_80"),
        "{out}"
    );
    // The carrier answers plain: plain it is.
    r.relay.take();
    r.answer(1, Side::B, CARRIER_ANSWER);
    let ub = update_for(&r.relay.take(), palisade_relay::Side::B);
    assert!(ub.srtp_send.is_none() && ub.srtp_recv.is_none());
}

#[test]
fn codec_allow_list_filters_orders_and_keeps_dtmf() {
    let mut r = Rig::new("codecs: [PCMA, pcmu]", "");
    let out = r.offer(1, Side::A, PBX_OFFER);
    assert!(
        lines(&out).contains(&"m=audio 30000 RTP/AVP 8 0 101"),
        "{out}"
    );
    let mut r = Rig::new("codecs: [G722]", "");
    let e = r.sdp(1, Side::A, SdpKind::Offer, PBX_OFFER).unwrap_err();
    assert_eq!((e.status, e.reason), (488, "no-common-codec"));
    // The PBX's own list applies to what it offers too.
    let mut r = Rig::new("", "codecs: [PCMU]");
    let out = r.offer(1, Side::A, PBX_OFFER);
    let l = lines(&out);
    assert!(l.contains(&"m=audio 30000 RTP/AVP 0 101"), "{out}");
    assert!(!l.iter().any(|x| x.starts_with("a=rtpmap:8")), "{out}");
}

#[test]
fn dtmf_payload_numbers_stay_per_leg() {
    let mut r = Rig::new("", "");
    r.offer(1, Side::A, PBX_OFFER);
    // The carrier answers telephone-event as 96 where the PBX uses 101.
    let ans = CARRIER_ANSWER.replace("101", "96");
    let to_pbx = r.answer(1, Side::B, &ans);
    assert!(
        lines(&to_pbx).contains(&"a=rtpmap:101 telephone-event/8000"),
        "{to_pbx}"
    );
    assert!(
        lines(&to_pbx).contains(&"m=audio 20000 RTP/AVP 8 101"),
        "{to_pbx}"
    );
    let cmds = r.relay.take();
    let ub = update_for(&cmds, palisade_relay::Side::B);
    assert_eq!(
        ub.pt_map.as_slice(),
        &[(101, 96)],
        "PBX's 101 becomes the carrier's 96"
    );
    let ua = update_for(&cmds, palisade_relay::Side::A);
    assert!(
        ua.pt_map.is_empty(),
        "the carrier sends what we offered (101)"
    );

    // Later the carrier re-offers (hold) with its own numbering: the PBX
    // still sees 101.
    let reoffer = "v=0\r\no=carrier 200 2 IN IP4 127.0.0.20\r\ns=-\r\nc=IN IP4 127.0.0.20\r\nt=0 0\r\nm=audio 17000 RTP/AVP 8 96\r\na=rtpmap:8 PCMA/8000\r\na=rtpmap:96 telephone-event/8000\r\na=sendonly\r\n";
    let to_pbx = r.offer(1, Side::B, reoffer);
    let l = lines(&to_pbx);
    assert!(l.contains(&"m=audio 20000 RTP/AVP 8 101"), "{to_pbx}");
    assert!(l.contains(&"a=rtpmap:101 telephone-event/8000") && l.contains(&"a=sendonly"));
    let pbx_ans = "v=0\r\no=pbx 100 2 IN IP4 127.0.0.10\r\ns=-\r\nc=IN IP4 127.0.0.10\r\nt=0 0\r\nm=audio 16000 RTP/AVP 8 101\r\na=rtpmap:8 PCMA/8000\r\na=rtpmap:101 telephone-event/8000\r\na=recvonly\r\n";
    let to_carrier = r.answer(1, Side::A, pbx_ans);
    assert!(
        lines(&to_carrier).contains(&"m=audio 30000 RTP/AVP 8 96"),
        "{to_carrier}"
    );
    assert!(lines(&to_carrier).contains(&"a=recvonly"), "{to_carrier}");
    let cmds = r.relay.take();
    let ua = update_for(&cmds, palisade_relay::Side::A);
    assert_eq!(ua.pt_map.as_slice(), &[(96, 101)]);
    assert!(ua.on_hold);
}

#[test]
fn hold_and_unhold_keep_ports_and_bump_the_version() {
    let mut r = Rig::new("", "");
    let first = r.offer(1, Side::A, PBX_OFFER);
    r.answer(1, Side::B, CARRIER_ANSWER);
    r.relay.take();
    let hold = PBX_OFFER
        .replace("a=sendrecv", "a=sendonly")
        .replace(" 100 1 ", " 100 2 ");
    let out = r.offer(1, Side::A, &hold);
    assert_eq!(m_port(&out), m_port(&first));
    let version = |s: &str| lines(s)[1].split(' ').nth(2).unwrap().to_owned();
    assert_eq!(version(&first), "1");
    assert_eq!(version(&out), "2");
    assert!(lines(&out).contains(&"a=sendonly"));
    assert!(
        r.relay.take().is_empty(),
        "no relay change before the answer"
    );
    let ans = CARRIER_ANSWER.replace("a=sendrecv", "a=recvonly");
    let to_pbx = r.answer(1, Side::B, &ans);
    assert!(lines(&to_pbx).contains(&"a=recvonly"));
    let cmds = r.relay.take();
    assert!(updates(&cmds).iter().all(|(_, e)| e.on_hold));
    // Unhold, with a new port on the PBX side.
    let unhold = PBX_OFFER
        .replace(" 100 1 ", " 100 3 ")
        .replace("16000", "16100");
    let out = r.offer(1, Side::A, &unhold);
    assert_eq!(version(&out), "3");
    r.answer(1, Side::B, CARRIER_ANSWER);
    let cmds = r.relay.take();
    let ua = update_for(&cmds, palisade_relay::Side::A);
    assert_eq!(ua.remote, Some(sa("127.0.0.10:16100")));
    assert!(!ua.on_hold);
    assert_eq!(r.media.stats().ports_in_use, 2);
    // Old-style hold (c=0.0.0.0) reads as sendonly.
    let null = PBX_OFFER
        .replace("c=IN IP4 127.0.0.10", "c=IN IP4 0.0.0.0")
        .replace(" 100 1 ", " 100 4 ");
    let out = r.offer(1, Side::A, &null);
    assert!(
        lines(&out).contains(&"a=sendonly") && out.contains("c=IN IP4 127.0.0.2"),
        "{out}"
    );
}

#[test]
fn late_offer_from_the_callee_answered_in_the_ack() {
    let mut r = Rig::new("", "");
    // INVITE without SDP: the 200 from B carries the offer, A's ACK the answer.
    let to_pbx = r.offer(1, Side::B, CARRIER_ANSWER);
    assert!(to_pbx.contains("c=IN IP4 127.0.0.1") && !to_pbx.contains("127.0.0.20"));
    let o = opens(&r.relay.take());
    assert_eq!(o[0].2.remote, Some(sa("127.0.0.20:17000")));
    let ack = "v=0\r\no=pbx 1 1 IN IP4 127.0.0.10\r\ns=-\r\nc=IN IP4 127.0.0.10\r\nt=0 0\r\nm=audio 16000 RTP/AVP 8 101\r\na=rtpmap:101 telephone-event/8000\r\n";
    let to_carrier = r.answer(1, Side::A, ack);
    assert!(to_carrier.contains("c=IN IP4 127.0.0.2") && !to_carrier.contains("127.0.0.10"));
    let ua = update_for(&r.relay.take(), palisade_relay::Side::A);
    assert_eq!(ua.remote, Some(sa("127.0.0.10:16000")));
}

#[test]
fn port_exhaustion_is_503_and_recovers_after_closed() {
    // Inside range 20000-20003: two port pairs.
    let mut r = Rig::with_range("", "", 20003);
    r.offer(1, Side::A, PBX_OFFER);
    r.offer(2, Side::A, PBX_OFFER);
    let e = r.sdp(3, Side::A, SdpKind::Offer, PBX_OFFER).unwrap_err();
    assert_eq!((e.status, e.reason), (503, "no-media-ports"));
    assert_eq!(r.media.stats().refused_no_ports, 1);
    // The failed call holds nothing on the outside either.
    assert_eq!(r.media.ports_in_use(palisade_config::ZoneId(1)), 2);
    r.release(3);
    r.release(1);
    let e = r.sdp(4, Side::A, SdpKind::Offer, PBX_OFFER).unwrap_err();
    assert_eq!(e.status, 503, "quarantined until the relay reports Closed");
    r.media.on_report(&Report::Closed {
        session: SessionId(1),
        streams: Default::default(),
    });
    let out = r.offer(5, Side::A, PBX_OFFER);
    assert_eq!(m_port(&out) % 2, 0);
}

#[test]
fn relay_busy_is_503_and_closes_are_retried() {
    let mut r = Rig::new("", "");
    r.relay.set_busy(true);
    let e = r.sdp(1, Side::A, SdpKind::Offer, PBX_OFFER).unwrap_err();
    assert_eq!((e.status, e.reason), (503, "relay-busy"));
    assert_eq!(r.media.stats().relay_busy, 1);
    r.relay.set_busy(false);
    r.offer(2, Side::A, PBX_OFFER);
    r.relay.set_busy(true);
    r.release(2);
    assert_eq!(r.media.stats().closes_deferred, 1);
    r.relay.set_busy(false);
    r.relay.take();
    r.media.tick(Instant::now());
    assert_eq!(
        r.relay.take(),
        vec![Command::Close {
            session: SessionId(2)
        }]
    );
    // Call 1 never reached the relay: nothing to close, its ports are free.
    r.release(1);
    assert!(r.relay.take().is_empty());
    let s = r.media.stats();
    assert_eq!(
        (s.ports_quarantined, s.ports_in_use),
        (2, 2),
        "only call 2's"
    );
}

#[test]
fn unanchorable_streams_are_disabled_and_rtcp_mux_follows_policy() {
    let mut r = Rig::new("rtcp_mux: on", "");
    let two = format!(
        "{PBX_OFFER}m=image 16002 udptl t38\r\na=T38FaxVersion:0\r\nm=video 0 RTP/AVP 96\r\n"
    );
    let out = r.offer(1, Side::A, &two);
    let l = lines(&out);
    assert!(
        l.contains(&"m=image 0 udptl t38") && l.contains(&"m=video 0 RTP/AVP 96"),
        "{out}"
    );
    assert!(
        l.contains(&"a=rtcp-mux"),
        "rtcp_mux on: always offered\n{out}"
    );
    assert_eq!(opens(&r.relay.take()).len(), 1);
    let ans = format!("{CARRIER_ANSWER}m=image 0 udptl t38\r\nm=video 0 RTP/AVP 96\r\n");
    let to_pbx = r.answer(1, Side::B, &ans);
    let l = lines(&to_pbx);
    assert!(l.contains(&"m=image 0 udptl t38"), "{to_pbx}");
    assert!(
        !l.contains(&"a=rtcp-mux"),
        "the PBX did not offer it\n{to_pbx}"
    );
    let mut r = Rig::new("", "rtcp_mux: off");
    let muxed = PBX_OFFER.replace("a=sendrecv", "a=rtcp-mux");
    let out = r.offer(1, Side::A, &muxed);
    assert!(!out.contains("rtcp-mux"), "{out}");
}

#[test]
fn strict_latching_reaches_the_relay() {
    let mut r = Rig::new("latching: strict", "");
    r.offer(1, Side::A, PBX_OFFER);
    let o = opens(&r.relay.take());
    assert_eq!((o[0].1.latch, o[0].2.latch), (Latch::Learn, Latch::Strict));
}

#[test]
fn a_nated_peer_learns_even_on_a_strict_trunk() {
    // Both trunks strict; the PBX (leg A) is behind a NAT, the carrier is not.
    let mut r = Rig::new("latching: strict", "latching: strict");
    r.nated = [true, false];
    r.offer(1, Side::A, PBX_OFFER);
    let o = opens(&r.relay.take());
    assert_eq!((o[0].1.latch, o[0].2.latch), (Latch::Learn, Latch::Strict));
    // The carrier's offer toward the NATed PBX: the same per-leg choice.
    let mut r = Rig::new("latching: strict", "latching: strict");
    r.nated = [true, false];
    r.offer(2, Side::B, PBX_OFFER);
    let o = opens(&r.relay.take());
    assert_eq!((o[0].1.latch, o[0].2.latch), (Latch::Learn, Latch::Strict));
}

#[test]
fn bind_failure_frees_ports_without_waiting_for_closed() {
    let mut r = Rig::new("", "");
    r.offer(1, Side::A, PBX_OFFER);
    let call = r.media.on_report(&Report::BindFailed {
        session: SessionId(1),
        addr: sa("127.0.0.1:20000"),
        os_error: Some(98),
    });
    assert_eq!(call, CallRef(1));
    r.relay.take();
    r.release(1);
    assert_eq!(r.media.stats().ports_in_use, 0);
}

#[test]
fn a_lost_closed_report_does_not_leak_ports() {
    let mut r = Rig::new("", "");
    r.offer(1, Side::A, PBX_OFFER);
    let t0 = Instant::now();
    r.media.release(t0, CallRef(1));
    r.media.tick(t0 + QUARANTINE_LIMIT / 2);
    assert_eq!(r.media.stats().ports_quarantined, 2);
    r.media.tick(t0 + QUARANTINE_LIMIT);
    let s = r.media.stats();
    assert_eq!(
        (s.ports_quarantined, s.ports_in_use, s.quarantine_expired),
        (0, 0, 1)
    );
}

// ---------------------------------------------------------------- properties

fn arb_line() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("a=sendonly".to_owned()),
        Just("a=inactive".to_owned()),
        Just("a=rtcp-mux".to_owned()),
        Just("a=rtcp:9 IN IP4 10.9.9.9".to_owned()),
        Just("a=candidate:1 1 udp 1 10.9.9.9 9 typ host".to_owned()),
        Just("c=IN IP4 10.9.9.9".to_owned()),
        Just("c=IN IP6 fd00::9".to_owned()),
        Just(
            "a=crypto:1 AES_CM_128_HMAC_SHA1_32 inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz"
                .to_owned()
        ),
        Just("a=fmtp:101 0-15".to_owned()),
        (0u8..128, "[A-Za-z0-9-]{1,8}", 1000u32..50000)
            .prop_map(|(pt, n, r)| format!("a=rtpmap:{pt} {n}/{r}")),
        "[a-z]=[ -~]{0,20}",
        "a=[a-z-]{1,10}:[ -~]{0,20}",
    ]
}

fn arb_media() -> impl Strategy<Value = String> {
    (
        prop_oneof![Just("audio"), Just("video"), Just("image")],
        prop_oneof![Just(0u16), 1u16..65535],
        prop_oneof![
            Just("RTP/AVP"),
            Just("RTP/SAVP"),
            Just("RTP/AVPF"),
            Just("UDP/TLS/RTP/SAVPF"),
            Just("udptl")
        ],
        prop::collection::vec(0u8..128, 1..6),
        prop::collection::vec(arb_line(), 0..8),
    )
        .prop_map(|(k, p, proto, fmts, lines)| {
            let f: Vec<String> = fmts.iter().map(u8::to_string).collect();
            let mut s = format!("m={k} {p} {proto} {}\r\n", f.join(" "));
            for l in lines {
                s.push_str(&l);
                s.push_str("\r\n");
            }
            s
        })
}

fn arb_sdp() -> impl Strategy<Value = String> {
    (
        prop::collection::vec(arb_line(), 0..4),
        prop::collection::vec(arb_media(), 0..4),
    )
        .prop_map(|(session, media)| {
            let mut s =
                "v=0\r\no=peer 1 1 IN IP4 10.9.9.9\r\ns=-\r\nc=IN IP4 10.9.9.9\r\nt=0 0\r\n"
                    .to_owned();
            for l in session {
                s.push_str(&l);
                s.push_str("\r\n");
            }
            for m in media {
                s.push_str(&m);
            }
            s
        })
}

fn policies() -> impl Strategy<Value = String> {
    (
        prop_oneof![Just("off"), Just("optional"), Just("required")],
        prop_oneof![Just("auto"), Just("on"), Just("off")],
        prop_oneof![Just("[]"), Just("[PCMA]"), Just("[opus, PCMU]")],
    )
        .prop_map(|(s, m, c)| format!("srtp: {s}, rtcp_mux: {m}, codecs: {c}"))
}

/// One case of the rewrite property: what each leg receives parses, names
/// only Palisade's media address for that leg, and uses ports from that
/// zone's range; and releasing the call (plus Closed) frees every port.
/// Returns whether the offer and the answer were accepted.
fn rewrite_case(
    offer: &str,
    answer: &str,
    carrier: &str,
    pbx: &str,
    from_b: bool,
) -> Result<(bool, bool), TestCaseError> {
    let mut r = Rig::new(carrier, pbx);
    let (x, y) = if from_b {
        (Side::B, Side::A)
    } else {
        (Side::A, Side::B)
    };
    let addr = |side: Side| {
        if side == Side::A {
            "127.0.0.1"
        } else {
            "127.0.0.2"
        }
    };
    let range = |side: Side| {
        if side == Side::A {
            20000u16..21000
        } else {
            30000u16..31000
        }
    };
    let check = |out: &str, to: Side| {
        prop_assert!(
            !out.contains("10.9.9.9") && !out.contains("fd00::9"),
            "{}",
            out
        );
        let sdp = Sdp::parse(out.as_bytes()).unwrap();
        for (i, m) in sdp.media.iter().enumerate() {
            if m.port != 0 {
                prop_assert!(range(to).contains(&m.port), "{}", out);
                let c = sdp.connection(i).unwrap().addr.unwrap().to_string();
                prop_assert_eq!(c, addr(to));
            }
        }
        prop_assert!(!out.contains("a=candidate"));
        Ok(())
    };
    let mut accepted = (false, false);
    if let Ok(out) = r.sdp(1, x, SdpKind::Offer, offer) {
        accepted.0 = true;
        check(&out, y)?;
        if let Ok(out) = r.sdp(1, y, SdpKind::Answer, answer) {
            accepted.1 = true;
            check(&out, x)?;
        }
        // A re-offer of the answer SDP from the other side.
        if let Ok(out) = r.sdp(1, y, SdpKind::Offer, answer) {
            check(&out, x)?;
        }
    }
    r.release(1);
    r.media.on_report(&Report::Closed {
        session: SessionId(1),
        streams: Default::default(),
    });
    let s = r.media.stats();
    prop_assert_eq!((s.ports_in_use, s.ports_quarantined, s.calls), (0, 0, 0));
    Ok(accepted)
}

/// The rewrite property over generated SDP and policies. It only checks
/// what Palisade accepted, so it also asserts that a fair share of offers
/// and answers were accepted: a generator drifting into producing only
/// refusals would otherwise make it pass without checking anything.
#[test]
fn rewritten_sdp_never_leaks_and_ports_balance() {
    use proptest::test_runner::{Config as RunnerConfig, TestRunner};
    use std::sync::atomic::{AtomicUsize, Ordering};
    const CASES: u32 = 300;
    let (offers, answers) = (AtomicUsize::new(0), AtomicUsize::new(0));
    let mut runner = TestRunner::new(RunnerConfig::with_cases(CASES));
    let strategy = (
        prop_oneof![arb_sdp(), arb_plausible_sdp()],
        prop_oneof![arb_sdp(), arb_plausible_sdp()],
        policies(),
        policies(),
        any::<bool>(),
    );
    runner
        .run(&strategy, |(offer, answer, carrier, pbx, from_b)| {
            let (o, a) = rewrite_case(&offer, &answer, &carrier, &pbx, from_b)?;
            offers.fetch_add(usize::from(o), Ordering::Relaxed);
            answers.fetch_add(usize::from(a), Ordering::Relaxed);
            Ok(())
        })
        .unwrap();
    let (o, a) = (offers.into_inner(), answers.into_inner());
    // Measured: about 40% of offers and of answers with these generators.
    assert!(
        o * 100 >= CASES as usize * 25,
        "only {o} of {CASES} offers accepted"
    );
    assert!(
        a * 100 >= CASES as usize * 20,
        "only {a} of {CASES} answers accepted"
    );
}

/// SDP a real phone or carrier would send: one or two audio streams with
/// common codecs and attributes, sometimes SRTP or ICE, always with a
/// connection address to hide.
fn arb_plausible_sdp() -> impl Strategy<Value = String> {
    (
        prop::collection::vec(
            (
                2u16..30000,
                prop_oneof![Just("RTP/AVP"), Just("RTP/SAVP")],
                prop::sample::subsequence(vec![0u8, 8, 9, 18, 101, 111], 1..5),
                prop::collection::vec(
                    prop_oneof![
                        Just("a=sendrecv"),
                        Just("a=sendonly"),
                        Just("a=ptime:20"),
                        Just("a=rtcp-mux"),
                        Just("a=candidate:1 1 udp 1 10.9.9.9 9 typ host"),
                        Just("a=rtcp:9 IN IP4 10.9.9.9"),
                        Just(
                            "a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz"
                        ),
                    ],
                    0..4,
                ),
            ),
            1..3,
        ),
        any::<bool>(),
    )
        .prop_map(|(media, v6)| {
            let c = if v6 { "IN IP6 fd00::9" } else { "IN IP4 10.9.9.9" };
            let mut s = format!("v=0\r\no=peer 1 1 IN IP4 10.9.9.9\r\ns=-\r\nc={c}\r\nt=0 0\r\n");
            for (port, proto, fmts, lines) in media {
                let f: Vec<String> = fmts.iter().map(u8::to_string).collect();
                s.push_str(&format!("m=audio {} {proto} {}\r\n", port * 2, f.join(" ")));
                for pt in &fmts {
                    let name = match pt {
                        0 => "PCMU/8000",
                        8 => "PCMA/8000",
                        9 => "G722/8000",
                        18 => "G729/8000",
                        101 => "telephone-event/8000",
                        _ => "opus/48000/2",
                    };
                    s.push_str(&format!("a=rtpmap:{pt} {name}\r\n"));
                }
                for l in lines {
                    s.push_str(l);
                    s.push_str("\r\n");
                }
            }
            s
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    /// The parser never panics and what it accepts writes back to an
    /// equivalent model.
    #[test]
    fn parser_round_trips(body in prop::collection::vec(any::<u8>(), 0..400), sdp in arb_sdp()) {
        let _ = Sdp::parse(&body);
        if let Ok(parsed) = Sdp::parse(sdp.as_bytes()) {
            let again = Sdp::parse(&parsed.to_bytes()).unwrap();
            prop_assert_eq!(again, parsed);
        }
    }
}

/// The fuzz target's seeds, run on stable.
#[test]
fn fuzz_seeds_run_clean() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../fuzz/corpus/sdp");
    let mut n = 0;
    for e in std::fs::read_dir(dir).unwrap() {
        let data = std::fs::read(e.unwrap().path()).unwrap();
        crate::fuzz::sdp(&data);
        n += 1;
    }
    assert!(n >= 8, "only {n} seeds");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    /// The fuzz entry point on random bytes and on generated SDP pairs.
    #[test]
    fn fuzz_entry_never_panics(raw in prop::collection::vec(any::<u8>(), 0..300), a in arb_sdp(), b in arb_sdp()) {
        crate::fuzz::sdp(&raw);
        let mut pair = a.into_bytes();
        pair.push(0);
        pair.extend_from_slice(b.as_bytes());
        crate::fuzz::sdp(&pair);
    }
}
