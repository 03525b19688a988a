//! Parsing cost of a typical INVITE with SDP, and of the B2BUA's hot reads.
//! Run: `cargo bench -p palisade-sip --bench parse`.

use bytes::Bytes;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use palisade_sip::{Editor, HeaderName, Message, ParseLimits};
use std::hint::black_box;

const INVITE: &[u8] = b"INVITE sip:+4930123456@127.0.0.2:5060;user=phone SIP/2.0\r\n\
Via: SIP/2.0/UDP 127.0.0.10:5070;branch=z9hG4bK-524287-1---b4c7b1d0ff3a;rport\r\n\
Max-Forwards: 70\r\n\
Contact: <sip:+4989555000@127.0.0.10:5070;transport=udp>\r\n\
To: <sip:+4930123456@127.0.0.2:5060;user=phone>\r\n\
From: \"Reception\" <sip:+4989555000@127.0.0.10:5070;user=phone>;tag=4f3e2a1b\r\n\
Call-ID: 8c3a7e2f-11b9-4c1d-9a7e-2d5f0b6c1a90@127.0.0.10\r\n\
CSeq: 1 INVITE\r\n\
Allow: INVITE, ACK, CANCEL, BYE, NOTIFY, REFER, MESSAGE, OPTIONS, INFO, SUBSCRIBE, UPDATE, PRACK\r\n\
Supported: replaces, timer, 100rel\r\n\
Session-Expires: 1800;refresher=uac\r\n\
Min-SE: 90\r\n\
User-Agent: Acme PBX 12.4.1\r\n\
P-Asserted-Identity: <sip:+4989555000@127.0.0.10>\r\n\
Content-Type: application/sdp\r\n\
Content-Length: 265\r\n\
\r\n\
v=0\r\n\
o=pbx 53655765 2353687637 IN IP4 127.0.0.10\r\n\
s=-\r\n\
c=IN IP4 127.0.0.10\r\n\
t=0 0\r\n\
m=audio 40000 RTP/AVP 0 8 9 18 101\r\n\
a=rtpmap:0 PCMU/8000\r\n\
a=rtpmap:8 PCMA/8000\r\n\
a=rtpmap:9 G722/8000\r\n\
a=rtpmap:18 G729/8000\r\n\
a=rtpmap:101 telephone-event/8000\r\n\
a=fmtp:101 0-15\r\n\
a=ptime:20\r\n\
a=sendrecv\r\n";

fn bench(c: &mut Criterion) {
    let raw = Bytes::from_static(INVITE);
    let limits = ParseLimits::default();
    assert!(Message::parse(raw.clone(), &limits).is_ok());
    let mut g = c.benchmark_group("sip");
    g.throughput(Throughput::Elements(1));
    g.bench_function("parse_invite_with_sdp", |b| {
        b.iter(|| Message::parse(black_box(raw.clone()), &limits))
    });
    let m = Message::parse(raw.clone(), &limits).unwrap_or_else(|e| panic!("{e}"));
    g.bench_function("decode_from_to_via_contact", |b| {
        b.iter(|| {
            let m = black_box(&m);
            (
                m.from().is_ok(),
                m.to().is_ok(),
                m.top_via().is_ok(),
                m.contacts().count(),
            )
        })
    });
    g.bench_function("edit_and_serialise", |b| {
        b.iter(|| {
            let mut e = Editor::new(black_box(&m));
            e.set_request_uri("sip:+4930123456@127.0.0.20:5080")
                .remove_all(HeaderName::UserAgent);
            e.finish()
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
