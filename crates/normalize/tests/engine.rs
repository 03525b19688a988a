//! Normalization inside the real call engine: `through_engine` (what
//! `palisade normalize --from-trunk` prints) on the `engine-run/` fixture,
//! and a response code map applied to a carrier's answer on its way to the
//! PBX (486 -> 480).

#![allow(clippy::unwrap_used, clippy::disallowed_methods)] // tests: one real clock origin

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use palisade_b2bua::Engine;
use palisade_config::ZoneId;
use palisade_config::normalization::RuleDirection;
use palisade_normalize::{DryRunError, Program, install, through_engine};
use palisade_sip::{Message, MessageWriter, ParseLimits, Transport};

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/engine-run")
}

fn cfg() -> Arc<palisade_config::Config> {
    Arc::new(palisade_config::load(&fixture().join("config.yaml")).unwrap())
}

fn invite() -> Vec<u8> {
    std::fs::read(fixture().join("pbx-invite.sip")).unwrap()
}

fn header_lines(b: &Bytes) -> Vec<String> {
    let text = String::from_utf8_lossy(b);
    let head = text.split("\r\n\r\n").next().unwrap().to_owned();
    head.lines().map(str::to_owned).collect()
}

#[test]
fn a_pbx_invite_becomes_what_the_carrier_receives() {
    let run = through_engine(cfg(), Instant::now(), "pbx", "carrier", &invite(), None).unwrap();
    assert!(run.delivered(), "{}", run.text_report());
    assert_eq!(run.sent_to, Some("127.0.0.20:5080".parse().unwrap()));
    let out = run.output.clone().unwrap();
    let lines = header_lines(&out);
    // The engine's own leg: Palisade's Via, Contact, Call-ID, From host;
    // the carrier's profile on the numbers; the PBX's headers gone.
    assert_eq!(
        lines[0],
        "INVITE sip:071100100@127.0.0.20:5080;user=phone SIP/2.0"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("Via: SIP/2.0/UDP 127.0.0.2:5060;branch=z9hG4bK"))
    );
    assert!(
        lines
            .iter()
            .any(|l| l == "Contact: <sip:127.0.0.2:5060;transport=udp>")
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("From: \"Reception\" <sip:089555123@127.0.0.2>;tag="))
    );
    assert!(lines.iter().any(|l| l == "X-MS-SBC: Palisade/SBC/0.1"));
    assert!(lines.iter().any(|l| l == "User-Agent: Palisade"));
    let m = Message::parse(out.clone(), &ParseLimits::default()).unwrap();
    assert_ne!(m.call_id(), "pbx-call-1@pbx1.corp.example");
    for l in &lines {
        assert!(
            !l.contains("127.0.0.10") && !l.contains("Acme"),
            "topology leak: {l}"
        );
        assert!(!l.starts_with("X-Internal-Host"), "{l}");
    }
    // pass_headers lets P-Asserted-Identity cross (with Palisade's host, not
    // the PBX's); both profiles rewrote its number.
    assert!(
        lines
            .iter()
            .any(|l| l == "P-Asserted-Identity: <sip:089555000@127.0.0.2>"),
        "{lines:?}"
    );
    // What fired, in order: the PBX's inbound profile, then the carrier's outbound one.
    let fired: Vec<(String, RuleDirection, String)> = run
        .fired
        .iter()
        .map(|f| {
            (
                f.trunk.clone(),
                f.direction,
                format!("{}/{}", f.fired.profile, f.fired.rule),
            )
        })
        .collect();
    assert_eq!(
        fired,
        [
            ("pbx".into(), RuleDirection::In, "pbx-in/tidy".into()),
            (
                "carrier".into(),
                RuleDirection::Out,
                "carrier-de/e164-to-national".into()
            ),
            (
                "carrier".into(),
                RuleDirection::Out,
                "carrier-de/identity".into()
            ),
        ]
    );
    assert!(
        run.notes
            .iter()
            .any(|n| n.contains("REGISTER was answered 200 (simulated)"))
    );
    assert!(run.answers.iter().any(|a| a.starts_with(b"SIP/2.0 100 ")));
    let report = run.text_report();
    assert!(
        report.contains("[carrier out] carrier-de/identity\n  + X-MS-SBC: Palisade/SBC/0.1\n"),
        "{report}"
    );
    assert!(
        report.contains("-X-Internal-Host: pbx1.corp.example\n"),
        "{report}"
    );
    assert!(
        report.contains("+Via: SIP/2.0/UDP 127.0.0.2:5060"),
        "{report}"
    );
    // The same run twice prints the same thing (fixed seed).
    let again = through_engine(cfg(), Instant::now(), "pbx", "carrier", &invite(), None).unwrap();
    assert_eq!(again.output, run.output);
    assert_eq!(run.json()["delivered"], true);
}

#[test]
fn refusals_and_other_routes_are_reported_not_invented() {
    let cfg = cfg();
    // No route for this number (routes only send +49 to the carrier).
    let text = String::from_utf8(invite())
        .unwrap()
        .replace("+4971100100", "+1415555");
    let run = through_engine(
        Arc::clone(&cfg),
        Instant::now(),
        "pbx",
        "carrier",
        text.as_bytes(),
        None,
    )
    .unwrap();
    assert!(!run.delivered());
    assert_eq!(run.rejected, Some((404, "no-route")));
    assert!(run.answers.iter().any(|a| a.starts_with(b"SIP/2.0 404 ")));
    assert!(
        run.text_report()
            .contains("Palisade answered 404 (no-route)")
    );
    // The carrier calling a PBX number goes to the PBX, not the carrier.
    let inbound = String::from_utf8(invite())
        .unwrap()
        .replace("+4971100100", "+4930123555")
        .replace("127.0.0.10:5070", "127.0.0.20:5080");
    let run = through_engine(
        Arc::clone(&cfg),
        Instant::now(),
        "carrier",
        "carrier",
        inbound.as_bytes(),
        None,
    )
    .unwrap();
    assert_eq!(run.routed_elsewhere.as_deref(), Some("pbx"));
    assert!(
        run.text_report()
            .contains("the routes send this message to pbx")
    );
    // A response is not something a trunk sends first.
    let resp = b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 127.0.0.10:5070;branch=z9hG4bK1\r\nFrom: <sip:a@b>;tag=1\r\nTo: <sip:a@b>;tag=2\r\nCall-ID: c\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n";
    assert!(matches!(
        through_engine(
            Arc::clone(&cfg),
            Instant::now(),
            "pbx",
            "carrier",
            resp,
            None
        ),
        Err(DryRunError::NotARequest)
    ));
    assert!(matches!(
        through_engine(cfg, Instant::now(), "nope", "carrier", &invite(), None),
        Err(DryRunError::UnknownTrunk { .. })
    ));
}

fn parse(b: &Bytes) -> Message {
    Message::parse(b.clone(), &ParseLimits::default()).unwrap()
}

#[test]
fn the_carriers_486_reaches_the_pbx_as_480() {
    let cfg = cfg();
    let mut engine = Engine::new(Arc::clone(&cfg), [9; 32]);
    install(&mut engine, &Program::new(Arc::clone(&cfg)));
    let now = Instant::now();
    let (pbx, carrier) = (
        "127.0.0.10:5070".parse().unwrap(),
        "127.0.0.20:5080".parse().unwrap(),
    );
    let (inside, outside) = (ZoneId(0), ZoneId(1));
    // Register to the carrier first (the trunk is down until then).
    engine.sync_edge(now);
    engine.handle_timeout(now);
    let reg = std::iter::from_fn(|| engine.poll_transmit())
        .map(|t| parse(&t.data))
        .find(|m| m.method() == Some(&palisade_sip::Method::Register))
        .unwrap();
    let ok = MessageWriter::response_to(&reg, 200, "OK", None, Some("r")).finish_empty();
    engine.handle_message(now, outside, Transport::Udp, carrier, ok);
    let (input, _) = palisade_normalize::prepare_input(&invite());
    engine.handle_message(now, inside, Transport::Udp, pbx, input);
    let inv = std::iter::from_fn(|| engine.poll_transmit())
        .filter(|t| t.flow.remote == carrier)
        .map(|t| parse(&t.data))
        .find(|m| m.method() == Some(&palisade_sip::Method::Invite))
        .unwrap();
    let busy = MessageWriter::response_to(&inv, 486, "Busy Here", None, Some("c1")).finish_empty();
    engine.handle_message(now, outside, Transport::Udp, carrier, busy);
    let sent: Vec<palisade_b2bua::Transmit> =
        std::iter::from_fn(|| engine.poll_transmit()).collect();
    let finals: Vec<String> = sent
        .iter()
        .filter(|t| t.flow.remote == pbx)
        .map(|t| parse(&t.data))
        .filter(|m| m.status().is_some_and(|s| s >= 300))
        .map(|m| {
            String::from_utf8_lossy(m.raw())
                .lines()
                .next()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(finals, ["SIP/2.0 480 Temporarily Unavailable"]);
    // The carrier's 486 itself is ACKed as it came (the map is for the PBX).
    assert!(
        sent.iter()
            .any(|t| t.flow.remote == carrier && t.data.starts_with(b"ACK ")),
        "the 486 is ACKed"
    );
}
