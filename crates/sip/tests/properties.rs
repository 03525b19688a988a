//! Property tests: generated messages survive write → parse → write, edits
//! keep identity, arbitrary mutations never panic, and stream framing
//! reassembles any split of a byte stream.

use bytes::Bytes;
use palisade_sip::framing::{Frame, next_frame};
use palisade_sip::*;
use proptest::prelude::*;

fn token() -> impl Strategy<Value = String> {
    "[A-Za-z0-9][A-Za-z0-9.!%*_+`'~-]{0,15}"
}

fn host() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z][a-z0-9-]{0,10}(\\.[a-z][a-z0-9]{0,8}){0,2}",
        any::<[u8; 4]>().prop_map(|o| format!("{}.{}.{}.{}", o[0], o[1], o[2], o[3])),
        any::<[u16; 8]>().prop_map(|s| format!("[{}]", std::net::Ipv6Addr::from(s))),
    ]
}

#[derive(Debug, Clone)]
struct Gen {
    method: Method,
    user: String,
    host: String,
    port: Option<u16>,
    branch: String,
    from_tag: String,
    to_tag: Option<String>,
    call_id: String,
    seq: u32,
    extra: Vec<(String, String)>,
    body: Vec<u8>,
    compact: bool,
}

fn message_gen() -> impl Strategy<Value = Gen> {
    (
        prop_oneof![
            Just(Method::Invite),
            Just(Method::Options),
            Just(Method::Bye),
            Just(Method::Info),
            token().prop_filter_map("ext", |t| Method::from_bytes(t.as_bytes()))
        ],
        "[+]?[0-9]{1,15}",
        host(),
        proptest::option::of(1u16..),
        token(),
        token(),
        proptest::option::of(token()),
        "[A-Za-z0-9.@_-]{1,40}",
        0u32..(1 << 31),
        proptest::collection::vec(("X-[A-Za-z]{1,10}", "[ -~]{0,40}"), 0..8),
        proptest::collection::vec(any::<u8>(), 0..300),
        any::<bool>(),
    )
        .prop_map(
            |(
                method,
                user,
                host,
                port,
                branch,
                from_tag,
                to_tag,
                call_id,
                seq,
                extra,
                body,
                compact,
            )| Gen {
                method,
                user,
                host,
                port,
                branch,
                from_tag,
                to_tag,
                call_id,
                seq,
                extra,
                body,
                compact,
            },
        )
}

fn write(g: &Gen) -> Bytes {
    let hp = match g.port {
        Some(p) => format!("{}:{p}", g.host),
        None => g.host.clone(),
    };
    let mut w = MessageWriter::request(&g.method, &format!("sip:{}@{hp}", g.user));
    let name = |long: &str, short: &str| {
        if g.compact {
            short.to_owned()
        } else {
            long.to_owned()
        }
    };
    w.header_named(
        &name("Via", "v"),
        format!("SIP/2.0/UDP {hp};branch=z9hG4bK{};rport", g.branch).as_bytes(),
    );
    w.header_named(
        &name("From", "f"),
        format!("\"Caller\" <sip:a@{hp}>;tag={}", g.from_tag).as_bytes(),
    );
    let to = match &g.to_tag {
        Some(t) => format!("<sip:{}@{hp}>;tag={t}", g.user),
        None => format!("<sip:{}@{hp}>", g.user),
    };
    w.header_named(&name("To", "t"), to.as_bytes());
    w.header_named(&name("Call-ID", "i"), g.call_id.as_bytes());
    w.header_fmt(HeaderName::CSeq, format_args!("{} {}", g.seq, g.method));
    for (n, v) in &g.extra {
        w.header_named(n, v.trim().as_bytes());
    }
    w.finish(Some("application/octet-stream"), &g.body)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn write_parse_round_trip(g in message_gen()) {
        let bytes = write(&g);
        let m = Message::parse(bytes.clone(), &ParseLimits { max_message_bytes: 1 << 20, ..Default::default() }).unwrap();
        prop_assert_eq!(m.method(), Some(&g.method));
        prop_assert_eq!(m.call_id(), g.call_id.as_str());
        prop_assert_eq!(m.cseq().seq, g.seq);
        prop_assert_eq!(m.from_tag(), Some(g.from_tag.as_str()));
        prop_assert_eq!(m.to_tag(), g.to_tag.as_deref());
        let branch = format!("z9hG4bK{}", g.branch);
        prop_assert_eq!(m.branch(), Some(branch.as_str()));
        prop_assert_eq!(m.request_uri().unwrap().number(), Some(g.user.as_str()));
        prop_assert_eq!(m.top_via().unwrap().port, g.port);
        prop_assert_eq!(m.body(), &g.body[..]);
        for (n, v) in &g.extra {
            prop_assert!(m.headers().any(|h| h.is_named(n) && h.value == v.trim().as_bytes()));
        }
        // Lossless: no edits → identical bytes.
        prop_assert_eq!(Editor::new(&m).finish(), bytes);
    }

    #[test]
    fn mutations_never_panic(g in message_gen(), flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..8), cut in any::<usize>()) {
        let mut bytes = write(&g).to_vec();
        for (pos, b) in flips {
            let i = pos % bytes.len();
            bytes[i] = b;
        }
        let cut = cut % (bytes.len() + 1);
        palisade_sip::fuzz::message(&bytes[..cut]);
        palisade_sip::fuzz::message(&bytes);
    }

    #[test]
    fn framing_reassembles_any_split(gs in proptest::collection::vec(message_gen(), 1..5), splits in proptest::collection::vec(any::<usize>(), 0..10)) {
        let mut stream = Vec::new();
        let mut expected = Vec::new();
        for (i, g) in gs.iter().enumerate() {
            let m = write(g);
            if i % 2 == 1 { stream.extend_from_slice(b"\r\n\r\n"); }
            expected.push(m.clone());
            stream.extend_from_slice(&m);
        }
        // Feed the stream in chunks; collect complete messages.
        let mut cuts: Vec<usize> = splits.iter().map(|s| s % (stream.len() + 1)).collect();
        cuts.push(stream.len());
        cuts.sort_unstable();
        let mut buf: Vec<u8> = Vec::new();
        let mut got = Vec::new();
        let mut fed = 0;
        for c in cuts {
            buf.extend_from_slice(&stream[fed..c]);
            fed = c;
            loop {
                match next_frame(&buf, 1 << 20).unwrap() {
                    Frame::Message(n) => { got.push(buf.drain(..n).collect::<Vec<u8>>()); }
                    Frame::Ping(n) | Frame::Pong(n) => { buf.drain(..n); }
                    Frame::Incomplete => break,
                }
            }
        }
        prop_assert!(buf.is_empty());
        prop_assert_eq!(got.len(), expected.len());
        for (g, e) in got.iter().zip(&expected) {
            prop_assert_eq!(&g[..], &e[..]);
        }
    }
}

#[test]
fn fuzz_entry_points_accept_the_torture_corpus() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/torture");
    for sub in ["valid", "invalid", "ipv6"] {
        for e in std::fs::read_dir(dir.join(sub)).unwrap() {
            let data = std::fs::read(e.unwrap().path()).unwrap();
            palisade_sip::fuzz::message(&data);
            palisade_sip::fuzz::framing(&data);
        }
    }
}
