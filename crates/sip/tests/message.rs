//! Message-level behaviour: parsing, typed access, lossless round trips, edits.

use bytes::Bytes;
use palisade_sip::*;

fn parse(s: &str) -> Result<Message, ParseError> {
    Message::parse(
        Bytes::copy_from_slice(s.as_bytes()),
        &ParseLimits::default(),
    )
}

const INVITE: &str = "INVITE sip:+4930123456@127.0.0.2:5060;user=phone SIP/2.0\r\n\
Via: SIP/2.0/UDP 127.0.0.10:5070;branch=z9hG4bK-abc;rport\r\n\
Max-Forwards: 70\r\n\
From: \"PBX\" <sip:+4989555000@127.0.0.10:5070>;tag=from1\r\n\
To: <sip:+4930123456@127.0.0.2>\r\n\
Call-ID: call-1@127.0.0.10\r\n\
CSeq: 1 INVITE\r\n\
Contact: <sip:pbx@127.0.0.10:5070;transport=udp>\r\n\
X-Custom:   keep   me  \r\n\
Allow: INVITE, ACK, BYE,CANCEL\r\n\
Content-Type: application/sdp\r\n\
Content-Length: 10\r\n\
\r\n\
v=0\r\no=x\r\n";

#[test]
fn parses_an_invite() {
    let m = parse(INVITE).unwrap();
    assert!(m.is_request());
    assert_eq!(m.method(), Some(&Method::Invite));
    assert_eq!(
        m.request_uri_str(),
        Some("sip:+4930123456@127.0.0.2:5060;user=phone")
    );
    assert_eq!(m.request_uri().unwrap().number(), Some("+4930123456"));
    assert_eq!(m.call_id(), "call-1@127.0.0.10");
    assert_eq!(m.cseq().seq, 1);
    assert_eq!(m.from_tag(), Some("from1"));
    assert_eq!(m.to_tag(), None);
    assert_eq!(m.branch(), Some("z9hG4bK-abc"));
    assert_eq!(m.max_forwards(), Some(70));
    assert_eq!(m.body(), b"v=0\r\no=x\r\n");
    assert!(m.has_sdp());
    assert_eq!(m.header_named("x-custom"), Some(b"keep   me".as_slice()));
    assert_eq!(
        m.tokens(HeaderName::Allow).collect::<Vec<_>>(),
        ["INVITE", "ACK", "BYE", "CANCEL"]
    );
    let c = m.contacts().next().unwrap().unwrap();
    assert_eq!(
        c.uri.as_sip().unwrap().params.get("transport"),
        Some(Some("udp"))
    );
    assert_eq!(m.from().unwrap().display, Some("\"PBX\""));
}

#[test]
fn parses_a_response_with_odd_reason() {
    let raw = b"SIP/2.0 180 Kl\xe4ngelt\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nFrom: <sip:a@h>;tag=1\r\nTo: <sip:b@h>;tag=2\r\nCall-ID: x\r\nCSeq: 7 INVITE\r\nContent-Length: 0\r\n\r\n";
    let m = Message::parse(Bytes::from_static(raw), &ParseLimits::default()).unwrap();
    assert_eq!(m.status(), Some(180));
    assert_eq!(m.reason(), b"Kl\xe4ngelt");
    assert_eq!(m.to_tag(), Some("2"));
    let empty_reason = "SIP/2.0 200 \r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nFrom: <sip:a@h>;tag=1\r\nTo: <sip:b@h>\r\nCall-ID: x\r\nCSeq: 7 INVITE\r\n\r\n";
    assert_eq!(parse(empty_reason).unwrap().reason(), b"");
}

#[test]
fn compact_forms_folding_and_multi_values() {
    let raw = "OPTIONS sip:h SIP/2.0\r\n\
v: SIP/2.0/UDP a.example.com;branch=z9hG4bK1 ,SIP/2.0/TCP b.example.com:5061;branch=z9hG4bK0\r\n\
V: SIP/2.0/UDP c.example.com;branch=z9hG4bKc\r\n\
f: <sip:a@h>;tag=1\r\n\
t: <sip:b@h>\r\n\
i: compact\r\n\
CSEQ: 9 OPTIONS\r\n\
m: <sip:x@h>, \"Y\" <sip:y@h>;q=0.5\r\n\
Subject: first line\r\n  continued\r\n\
l: 0\r\n\r\n";
    let m = parse(raw).unwrap();
    let vias: Vec<_> = m.vias().map(|v| v.unwrap().host_raw).collect();
    assert_eq!(vias, ["a.example.com", "b.example.com", "c.example.com"]);
    assert_eq!(m.call_id(), "compact");
    assert_eq!(m.contacts().count(), 2);
    assert_eq!(
        m.header(HeaderName::Subject),
        Some(b"first line\r\n  continued".as_slice())
    );
}

#[test]
fn ipv6_everywhere() {
    let raw = "REGISTER sip:[2001:db8::9] SIP/2.0\r\nVia: SIP/2.0/UDP [2001:db8::10]:5060;branch=z9hG4bK6\r\nFrom: <sip:u@[2001:db8::10]>;tag=1\r\nTo: <sip:u@[2001:db8::10]>\r\nCall-ID: v6\r\nCSeq: 1 REGISTER\r\nContact: <sip:u@[2001:db8::10]:5060>\r\nContent-Length: 0\r\n\r\n";
    let m = parse(raw).unwrap();
    let v = m.top_via().unwrap();
    assert_eq!(v.host, Host::V6("2001:db8::10".parse().unwrap()));
    assert_eq!(v.port, Some(5060));
}

#[test]
fn unedited_message_round_trips_byte_exact() {
    let m = parse(INVITE).unwrap();
    assert_eq!(&Editor::new(&m).finish()[..], INVITE.as_bytes());
}

#[test]
fn edits_apply_and_keep_other_lines_exact() {
    let m = parse(INVITE).unwrap();
    let mut e = Editor::new(&m);
    let ua = m.headers().find(|h| h.is_named("x-custom")).unwrap().index;
    e.set_request_uri("sip:+4930123456@127.0.0.20:5080")
        .remove(ua)
        .remove_all(HeaderName::Allow)
        .append("X-MS-SBC", b"Palisade/SBC/0.1")
        .set_body(None, Bytes::from_static(b"v=0\r\n"));
    let out = e.finish();
    let text = std::str::from_utf8(&out).unwrap();
    assert!(text.starts_with("INVITE sip:+4930123456@127.0.0.20:5080 SIP/2.0\r\n"));
    assert!(!text.contains("X-Custom"));
    assert!(!text.contains("Allow"));
    assert!(text.contains("X-MS-SBC: Palisade/SBC/0.1\r\n"));
    assert!(text.contains("Content-Length: 5\r\n"));
    assert!(text.contains("Via: SIP/2.0/UDP 127.0.0.10:5070;branch=z9hG4bK-abc;rport\r\n"));
    let again = Message::parse(out, &ParseLimits::default()).unwrap();
    assert_eq!(again.body(), b"v=0\r\n");
}

#[test]
fn editor_sanitises_injected_lines() {
    let m = parse(INVITE).unwrap();
    let mut e = Editor::new(&m);
    e.append("X-Evil", b"a\r\nVia: SIP/2.0/UDP evil");
    let out = Message::parse(e.finish(), &ParseLimits::default()).unwrap();
    assert_eq!(out.vias().count(), 1);
}

#[test]
fn writer_builds_parseable_messages() {
    let mut w = MessageWriter::request(&Method::Bye, "sip:carrier@127.0.0.20:5080");
    w.header(
        HeaderName::Via,
        "SIP/2.0/UDP 127.0.0.2:5060;branch=z9hG4bKxyz;rport",
    )
    .header(HeaderName::From, "<sip:a@127.0.0.2>;tag=a")
    .header(HeaderName::To, "<sip:b@127.0.0.20>;tag=b")
    .header(HeaderName::CallId, "c1")
    .header_fmt(HeaderName::CSeq, format_args!("{} BYE", 2))
    .header(HeaderName::MaxForwards, "70");
    let m = Message::parse(w.finish_empty(), &ParseLimits::default()).unwrap();
    assert_eq!(m.method(), Some(&Method::Bye));
    assert_eq!(m.cseq().seq, 2);
    assert_eq!(m.body(), b"");
}

#[test]
fn response_to_fills_rport_and_tag() {
    let m = parse(INVITE).unwrap();
    let src = "127.0.0.99:6000".parse().unwrap();
    let r = MessageWriter::response_to(&m, 100, "Trying", Some(src), Some("t1")).finish_empty();
    let text = std::str::from_utf8(&r).unwrap();
    assert!(
        text.contains(
            "Via: SIP/2.0/UDP 127.0.0.10:5070;branch=z9hG4bK-abc;rport=6000;received=127.0.0.99\r\n"
        ),
        "{text}"
    );
    assert!(text.contains("To: <sip:+4930123456@127.0.0.2>;tag=t1\r\n"));
    let resp = Message::parse(r, &ParseLimits::default()).unwrap();
    assert_eq!(resp.status(), Some(100));
    assert_eq!(resp.top_via().unwrap().rport(), Some(Some(6000)));
}

#[test]
fn salvage_answers_broken_requests() {
    let broken = "INVITE sip:h SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.66:5060;branch=z9hG4bKq\r\nFrom: <sip:a@h>;tag=1\r\nTo: <sip:b@h>\r\nCall-ID: s\r\nCSeq: 1 INVITE\r\nContent-Length: zz\r\n\r\n";
    let err = parse(broken).unwrap_err();
    assert_eq!(err.kind, ErrorKind::BadContentLength);
    let s = salvage_request(broken.as_bytes()).unwrap();
    let r = s.response(400, "Bad Request", "127.0.0.1", &err.to_string(), None);
    let resp = Message::parse(r, &ParseLimits::default()).unwrap();
    assert_eq!(resp.status(), Some(400));
    assert_eq!(resp.call_id(), "s");
    assert!(
        resp.header(HeaderName::Warning)
            .unwrap()
            .starts_with(b"399 127.0.0.1 \"invalid Content-Length")
    );
    // ACKs and responses are never answered.
    assert!(salvage_request(broken.replace("INVITE sip", "ACK sip").as_bytes()).is_none());
    assert!(salvage_request(b"SIP/2.0 200 OK\r\nVia: x\r\n\r\n").is_none());
    assert!(salvage_request(b"garbage").is_none());
}

#[test]
fn cancel_and_failure_ack_follow_rfc3261() {
    let inv = parse(INVITE).unwrap();
    let cancel = Message::parse(MessageWriter::cancel_for(&inv), &ParseLimits::default()).unwrap();
    assert_eq!(cancel.method(), Some(&Method::Cancel));
    assert_eq!(cancel.request_uri_str(), inv.request_uri_str());
    assert_eq!(cancel.branch(), inv.branch());
    assert_eq!(cancel.cseq().seq, inv.cseq().seq);
    assert_eq!(cancel.call_id(), inv.call_id());
    assert_eq!(cancel.to_tag(), None);
    let resp = parse(
        &INVITE
            .replace(
                "INVITE sip:+4930123456@127.0.0.2:5060;user=phone SIP/2.0",
                "SIP/2.0 486 Busy Here",
            )
            .replace(
                "To: <sip:+4930123456@127.0.0.2>",
                "To: <sip:+4930123456@127.0.0.2>;tag=busy",
            ),
    )
    .unwrap();
    let ack = Message::parse(
        MessageWriter::ack_for_failure(&inv, &resp),
        &ParseLimits::default(),
    )
    .unwrap();
    assert_eq!(ack.method(), Some(&Method::Ack));
    assert_eq!(ack.to_tag(), Some("busy"));
    assert_eq!(ack.branch(), inv.branch());
    assert_eq!(ack.cseq().method, Method::Ack);
    assert_eq!(reason_phrase(486), "Busy Here");
    assert_eq!(reason_phrase(499), "Client Error");
}

/// The typed values the engine and the edge read, decoded from headers
/// written in every shape the grammar allows (compact `k`/`c`, repeated
/// headers, lists, odd case and whitespace).
#[test]
fn typed_values_decode() {
    let raw = "INVITE sip:b@h SIP/2.0\r\n\
Via: SIP/2.0/UDP h;branch=z9hG4bK1\r\n\
From: <sip:a@h>;tag=1\r\n\
To: <sip:b@h>\r\n\
Call-ID: typed\r\n\
CSeq: 3 INVITE\r\n\
Expires:  0120 \r\n\
Route: <sip:p1.example.com;lr>, <sip:p2.example.com:5070;lr;transport=tcp>\r\n\
Route: <sip:[2001:db8::1];lr>\r\n\
Record-Route: \"edge\" <sip:rr.example.com;lr>;x=1\r\n\
supported: timer , 100rel,path\r\n\
k: gruu\r\n\
Require: 100rel\r\n\
c: Application/SDP ; charset=utf-8\r\n\
Content-Length: 4\r\n\r\nv=0\n";
    let m = parse(raw).unwrap();
    assert_eq!(m.expires(), Some(120));
    let routes: Vec<_> = m.routes().map(|r| r.unwrap()).collect();
    assert_eq!(routes.len(), 3, "two in one line, one repeated");
    assert_eq!(routes[0].uri_str, "sip:p1.example.com;lr");
    let p2 = routes[1].uri.as_sip().unwrap();
    assert_eq!(p2.host, Host::Domain("p2.example.com"));
    assert_eq!(p2.port, Some(5070));
    assert_eq!(p2.params.get("lr"), Some(None));
    assert_eq!(p2.params.get("transport"), Some(Some("tcp")));
    assert_eq!(
        routes[2].uri.as_sip().unwrap().host,
        Host::V6("2001:db8::1".parse().unwrap())
    );
    let rr: Vec<_> = m.record_routes().map(|r| r.unwrap()).collect();
    assert_eq!(rr.len(), 1);
    assert_eq!(rr[0].display, Some("\"edge\""));
    assert_eq!(rr[0].uri_str, "sip:rr.example.com;lr");
    assert_eq!(rr[0].params.get("x"), Some(Some("1")));
    assert_eq!(
        m.tokens(HeaderName::Supported).collect::<Vec<_>>(),
        ["timer", "100rel", "path", "gruu"]
    );
    assert_eq!(
        m.tokens(HeaderName::Require).collect::<Vec<_>>(),
        ["100rel"]
    );
    assert_eq!(m.content_type(), Some("Application/SDP ; charset=utf-8"));
    assert!(
        m.has_sdp(),
        "media type matched case-insensitively, params ignored"
    );
    // Not SDP: another type, or SDP declared with no body.
    let other = raw.replace(
        "c: Application/SDP ; charset=utf-8",
        "Content-Type: text/plain",
    );
    assert!(!parse(&other).unwrap().has_sdp());
    let empty = raw.replace(
        "Content-Length: 4\r\n\r\nv=0\n",
        "Content-Length: 0\r\n\r\n",
    );
    assert!(!parse(&empty).unwrap().has_sdp());
    // Non-numeric Expires decodes to nothing rather than a wrong number.
    let bad = raw.replace("Expires:  0120 ", "Expires: soon");
    assert_eq!(parse(&bad).unwrap().expires(), None);
}

/// RFC 4475 3.1.1.1 (wsinv): tags and values survive the tortuous whitespace.
#[test]
fn tortuous_whitespace_decodes() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/torture/valid/wsinv-tortuous-whitespace.sip"
    );
    let data = std::fs::read(path).unwrap();
    let m = Message::parse(Bytes::from(data), &ParseLimits::default()).unwrap();
    assert_eq!(m.to_tag(), Some("1918181833n"));
    assert_eq!(m.from_tag(), Some("98asjd8"));
    let to = m.to().unwrap();
    assert_eq!(to.uri_str, "sip:vivekg@chair-dnrc.example.com");
    let from = m.from().unwrap();
    assert_eq!(from.display, Some("\"J Rosenberg \\\\\\\"\""));
    assert_eq!(from.uri_str, "sip:jdrosen@example.com");
    assert_eq!(m.max_forwards(), Some(68));
    assert_eq!(m.cseq().seq, 9);
    assert_eq!(m.cseq().method, Method::Invite);
    assert_eq!(m.call_id(), "wsinv.ndaksdj@192.0.2.1");
    let vias: Vec<_> = m.vias().map(|v| v.unwrap()).collect();
    assert_eq!(vias.len(), 3);
    assert_eq!((vias[0].transport, vias[0].host_raw), ("UDP", "192.0.2.2"));
    assert_eq!(vias[0].branch(), Some("390skdjuw"));
    assert_eq!(vias[1].transport, "TCP");
    assert_eq!(vias[1].host_raw, "spindle.example.com");
    assert_eq!(vias[1].branch(), Some("z9hG4bK9ikj8"));
    assert_eq!(vias[2].branch(), Some("z9hG4bK30239"));
    let contact = m.contacts().next().unwrap().unwrap();
    assert_eq!(contact.uri_str, "sip:jdrosen@example.com");
    assert_eq!(contact.params.get("q"), Some(Some("0.33")));
    assert_eq!(contact.params.get("secondparam"), Some(None));
    let route = m.routes().next().unwrap().unwrap();
    assert_eq!(
        route.uri.as_sip().unwrap().params.get("unknownwith"),
        Some(Some("value"))
    );
    assert_eq!(m.content_type(), Some("application/sdp"));
}

/// Over the size cap (16 KiB on UDP by default): a typed error naming the
/// cap, at the cap's offset, that answers 513.
#[test]
fn oversize_message_is_too_large_with_513() {
    let filler = "X-Filler: ".to_owned() + &"a".repeat(100) + "\r\n";
    let raw = format!(
        "INVITE sip:b@h SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nFrom: <sip:a@h>;tag=1\r\nTo: <sip:b@h>\r\nCall-ID: big\r\nCSeq: 1 INVITE\r\n{}Content-Length: 0\r\n\r\n",
        filler.repeat(170)
    );
    assert!(raw.len() > 16 * 1024);
    let limits = ParseLimits::default();
    assert_eq!(limits.max_message_bytes, 16 * 1024);
    let e = parse(&raw).unwrap_err();
    assert_eq!(e.kind, ErrorKind::TooLarge { limit: 16384 });
    assert_eq!(e.offset, 16384);
    assert_eq!(e.status_code(), 513);
    // Just under the cap parses.
    let fits = format!(
        "INVITE sip:b@h SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nFrom: <sip:a@h>;tag=1\r\nTo: <sip:b@h>\r\nCall-ID: big\r\nCSeq: 1 INVITE\r\n{}Content-Length: 0\r\n\r\n",
        filler.repeat(140)
    );
    assert!(fits.len() < 16 * 1024);
    assert!(parse(&fits).is_ok());
}
