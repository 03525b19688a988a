//! A virtual lab for the engine: the quickstart topology, a virtual clock,
//! and helpers to play the PBX and the carrier with real SIP text.

#![allow(dead_code, clippy::unwrap_used)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use palisade_b2bua::{CallEventKind, Engine, Event, Flow};
use palisade_config::{Config, ZoneId};
use palisade_sip::{HeaderName, Message, MessageWriter, ParseLimits, Transport, reason_phrase};

pub const PBX: &str = "127.0.0.10:5070";
pub const CARRIER1: &str = "127.0.0.20:5080";
pub const CARRIER2: &str = "127.0.0.21:5080";
pub const INSIDE: ZoneId = ZoneId(0);
pub const OUTSIDE: ZoneId = ZoneId(1);

pub fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

pub fn quickstart() -> Config {
    let text = include_str!("../../../../configs/quickstart.yaml");
    palisade_config::load_str(text, "quickstart.yaml").unwrap()
}

/// Quickstart with extra YAML appended under `sip:` (e.g. shorter timeouts).
pub fn quickstart_with_sip(sip: &str) -> Config {
    let text = include_str!("../../../../configs/quickstart.yaml");
    let text = format!("{text}\nsip:\n{sip}\n");
    palisade_config::load_str(&text, "quickstart.yaml").unwrap()
}

pub struct Lab {
    pub engine: Engine,
    pub now: Instant,
    /// Everything the engine sent, with where it went.
    pub sent: Vec<(Flow, Message)>,
    pub events: Vec<Event>,
    /// CRLF keepalives sent (not SIP messages), with where they went.
    pub pings: Vec<(Flow, Bytes)>,
    cursor: usize,
}

pub fn lab() -> Lab {
    lab_with(quickstart())
}

#[allow(clippy::disallowed_methods)] // the virtual clock needs one real origin
pub fn lab_with(cfg: Config) -> Lab {
    Lab {
        engine: Engine::new(Arc::new(cfg), [7; 32]),
        now: Instant::now(),
        sent: Vec::new(),
        events: Vec::new(),
        pings: Vec::new(),
        cursor: 0,
    }
}

impl Lab {
    fn drain(&mut self) {
        while let Some(t) = self.engine.poll_transmit() {
            if !t.data.is_empty() && t.data.iter().all(|b| matches!(b, b'\r' | b'\n')) {
                self.pings.push((t.flow, t.data.clone()));
                continue;
            }
            let m = Message::parse(
                t.data.clone(),
                &ParseLimits {
                    max_message_bytes: 1 << 20,
                    max_headers: 1000,
                },
            )
            .unwrap_or_else(|e| {
                panic!(
                    "engine sent an unparseable message ({e}):\n{}",
                    String::from_utf8_lossy(&t.data)
                )
            });
            self.sent.push((t.flow, m));
        }
        while let Some(e) = self.engine.poll_event() {
            self.events.push(e);
        }
    }

    /// Delivers `text` (LF line ends become CRLF) from `from` on `zone`.
    pub fn recv(&mut self, zone: ZoneId, from: &str, text: &str) {
        self.recv_bytes(zone, Transport::Udp, from, Bytes::from(crlf(text)));
    }

    pub fn recv_bytes(&mut self, zone: ZoneId, transport: Transport, from: &str, data: Bytes) {
        self.engine
            .handle_message(self.now, zone, transport, addr(from), data);
        self.drain();
    }

    /// Delivers an already-built message.
    pub fn recv_msg(&mut self, zone: ZoneId, from: &str, data: Bytes) {
        self.recv_bytes(zone, Transport::Udp, from, data);
    }

    /// Advances the virtual clock, firing timers on the way.
    pub fn advance(&mut self, d: Duration) {
        let end = self.now + d;
        while let Some(t) = self.engine.poll_timeout() {
            if t > end {
                break;
            }
            self.now = t.max(self.now);
            self.engine.handle_timeout(self.now);
            self.drain();
        }
        self.now = end;
        self.engine.handle_timeout(self.now);
        self.drain();
    }

    /// Messages sent since the last call to `take`.
    pub fn take(&mut self) -> Vec<(Flow, Message)> {
        let out = self.sent[self.cursor..].to_vec();
        self.cursor = self.sent.len();
        out
    }

    /// The single new message sent to `to` matching `pred`; panics otherwise.
    pub fn expect(&mut self, to: &str, what: &str) -> Message {
        let new = self.take();
        let hits: Vec<&Message> = new
            .iter()
            .filter(|(f, m)| f.remote == addr(to) && describe(m) == what)
            .map(|(_, m)| m)
            .collect();
        assert!(
            hits.len() == 1,
            "expected one {what} to {to}, got: {:?}",
            new.iter()
                .map(|(f, m)| format!("{} -> {}", describe(m), f.remote))
                .collect::<Vec<_>>()
        );
        hits[0].clone()
    }

    /// Like [`Self::expect`] but tolerates other messages in the batch.
    pub fn find(&mut self, to: &str, what: &str) -> Message {
        let new = self.take();
        new.iter()
            .find(|(f, m)| f.remote == addr(to) && describe(m) == what)
            .map(|(_, m)| m.clone())
            .unwrap_or_else(|| {
                panic!(
                    "no {what} to {to} in {:?}",
                    new.iter()
                        .map(|(f, m)| format!("{} -> {}", describe(m), f.remote))
                        .collect::<Vec<_>>()
                )
            })
    }

    pub fn call_events(&self) -> Vec<CallEventKind> {
        self.events
            .iter()
            .filter_map(|e| match e {
                Event::Call(c) => Some(c.kind.clone()),
                _ => None,
            })
            .collect()
    }
}

/// `INVITE`, `ACK`, `200/INVITE`... for assertions.
pub fn describe(m: &Message) -> String {
    match m.status() {
        Some(s) => format!("{s}/{}", m.cseq().method),
        None => m.method().map(|m| m.to_string()).unwrap_or_default(),
    }
}

pub fn crlf(text: &str) -> Vec<u8> {
    let mut s = text.replace("\r\n", "\n").replace('\n', "\r\n");
    if !s.ends_with("\r\n\r\n") {
        s.push_str("\r\n");
    }
    s.into_bytes()
}

pub const PBX_SDP: &str = "v=0\r\no=pbx 111 1 IN IP4 127.0.0.10\r\ns=-\r\nc=IN IP4 127.0.0.10\r\nt=0 0\r\nm=audio 40000 RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\n";
pub const CARRIER_SDP: &str = "v=0\r\no=carrier 222 1 IN IP4 127.0.0.20\r\ns=-\r\nc=IN IP4 127.0.0.20\r\nt=0 0\r\nm=audio 50000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n";

/// An INVITE from the PBX toward `number`.
pub fn pbx_invite(n: u32, number: &str, sdp: Option<&str>) -> Bytes {
    let mut w = MessageWriter::request(
        &palisade_sip::Method::Invite,
        &format!("sip:{number}@127.0.0.1:5060;user=phone"),
    );
    w.header(
        HeaderName::Via,
        &format!("SIP/2.0/UDP 127.0.0.10:5070;branch=z9hG4bK-pbx-{n};rport"),
    )
    .header(HeaderName::MaxForwards, "70")
    .header(
        HeaderName::From,
        &format!("\"Reception\" <sip:+4989555000@127.0.0.10:5070>;tag=pbxtag{n}"),
    )
    .header(HeaderName::To, &format!("<sip:{number}@127.0.0.1>"))
    .header(HeaderName::CallId, &format!("pbx-call-{n}@127.0.0.10"))
    .header(HeaderName::CSeq, "1 INVITE")
    .header(HeaderName::Contact, "<sip:pbx@127.0.0.10:5070>")
    .header(HeaderName::UserAgent, "Acme PBX 12")
    .header_named("X-Internal-Host", b"pbx1.corp.example 127.0.0.10")
    .header_named("P-Asserted-Identity", b"<sip:+4989555000@127.0.0.10>");
    match sdp {
        Some(b) => w.finish(Some("application/sdp"), b.as_bytes()),
        None => w.finish_empty(),
    }
}

/// A response to `req` as a peer would send it.
pub fn reply(
    req: &Message,
    status: u16,
    to_tag: Option<&str>,
    contact: Option<&str>,
    sdp: Option<&str>,
) -> Bytes {
    let mut w = MessageWriter::response_to(req, status, reason_phrase(status), None, to_tag);
    if let Some(c) = contact {
        w.header(HeaderName::Contact, c);
    }
    w.header(HeaderName::Server, "PeerSwitch 9");
    if status == 503 {
        w.header(HeaderName::RetryAfter, "30");
    }
    match sdp {
        Some(b) => w.finish(Some("application/sdp"), b.as_bytes()),
        None => w.finish_empty(),
    }
}

/// An in-dialog request a peer sends on the dialog it has with Palisade:
/// `dialog` is a message Palisade sent to the peer in that dialog (a request
/// from Palisade, where From is Palisade) or received from it.
pub struct PeerDialog {
    pub local: String,  // the peer's own From/To value with tag
    pub remote: String, // Palisade's value with tag
    pub call_id: String,
    pub target: String, // Palisade's Contact URI
    pub via_host: String,
    pub cseq: u32,
    pub branch_seq: u32,
}

impl PeerDialog {
    /// The PBX's dialog after it got a 2xx (or 18x) from Palisade.
    pub fn from_uac_side(invite: &Bytes, resp: &Message, via_host: &str) -> Self {
        let inv = Message::parse(invite.clone(), &ParseLimits::default()).unwrap();
        Self {
            local: header(&inv, HeaderName::From),
            remote: header(resp, HeaderName::To),
            call_id: inv.call_id().to_owned(),
            target: resp.contacts().next().unwrap().unwrap().uri_str.to_owned(),
            via_host: via_host.to_owned(),
            cseq: inv.cseq().seq,
            branch_seq: 0,
        }
    }

    /// The carrier's dialog after it answered Palisade's INVITE with `to_tag`.
    pub fn from_uas_side(invite: &Message, to_tag: &str, via_host: &str) -> Self {
        Self {
            local: format!("{};tag={to_tag}", header(invite, HeaderName::To)),
            remote: header(invite, HeaderName::From),
            call_id: invite.call_id().to_owned(),
            target: invite
                .contacts()
                .next()
                .unwrap()
                .unwrap()
                .uri_str
                .to_owned(),
            via_host: via_host.to_owned(),
            cseq: 5000,
            branch_seq: 0,
        }
    }

    pub fn request(
        &mut self,
        method: &str,
        body: Option<(&str, &str)>,
        contact: Option<&str>,
    ) -> Bytes {
        let m = palisade_sip::Method::from_bytes(method.as_bytes()).unwrap();
        let seq = if m == palisade_sip::Method::Ack {
            self.cseq
        } else {
            self.cseq += 1;
            self.cseq
        };
        self.branch_seq += 1;
        let mut w = MessageWriter::request(&m, &self.target);
        w.header(
            HeaderName::Via,
            &format!(
                "SIP/2.0/UDP {};branch=z9hG4bK-{}-{}-{method}",
                self.via_host,
                self.call_id.len(),
                self.branch_seq
            ),
        )
        .header(HeaderName::MaxForwards, "70")
        .header(HeaderName::From, &self.local)
        .header(HeaderName::To, &self.remote)
        .header(HeaderName::CallId, &self.call_id)
        .header(HeaderName::CSeq, &format!("{seq} {method}"));
        if let Some(c) = contact {
            w.header(HeaderName::Contact, c);
        }
        match body {
            Some((ct, b)) => w.finish(Some(ct), b.as_bytes()),
            None => w.finish_empty(),
        }
    }

    /// The ACK for a 2xx (reuses the INVITE's CSeq).
    pub fn ack(&mut self, invite_cseq: u32, body: Option<&str>) -> Bytes {
        let saved = self.cseq;
        self.cseq = invite_cseq;
        let b = self.request("ACK", body.map(|b| ("application/sdp", b)), None);
        self.cseq = saved;
        b
    }
}

pub fn header(m: &Message, name: HeaderName) -> String {
    m.headers()
        .find(|h| h.name == name)
        .map(|h| h.value_str().unwrap().to_owned())
        .unwrap()
}

/// Asserts nothing in `m` (headers and body, `c=` lines excepted until the
/// media issue anchors media) contains any of `forbidden`.
pub fn assert_no_leak(m: &Message, forbidden: &[&str]) {
    let text = String::from_utf8_lossy(m.raw());
    for line in text.lines() {
        if line.starts_with("c=") {
            continue;
        }
        for f in forbidden {
            assert!(
                !line.contains(f),
                "leak of {f:?} in line {line:?} of:\n{text}"
            );
        }
    }
}
