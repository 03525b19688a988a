//! Property tests: random messages through random valid rule programs never
//! panic, always give a message that parses, and never change Call-ID,
//! CSeq, tags or the Via branch. Also the fuzz entry on mutated bytes.

#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use palisade_b2bua::{Direction, StageContext};
use palisade_config::normalization::RuleDirection;
use palisade_normalize::{NormalizeStage, Program};
use palisade_sip::{Editor, Message, ParseLimits};
use proptest::prelude::*;

const HEAD: &str = "\
zones:
  - name: inside
    sip_address: 127.0.0.1
trunks:
  - name: pbx
    zone: inside
    members: [{address: 127.0.0.10}]
    normalization: {inbound: [a], outbound: [a, b]}
  - name: carrier
    zone: inside
    trusted: false
    members: [{address: 127.0.0.20}]
    normalization: {inbound: [b], outbound: [b]}
routes:
  - name: all
    to_trunk: pbx
normalization:
  profiles:
";

fn header_name() -> impl Strategy<Value = &'static str> {
    prop::sample::select(vec![
        "X-A",
        "X-Internal-Id",
        "Subject",
        "s",
        "Supported",
        "k",
        "User-Agent",
        "Server",
        "Diversion",
        "P-Asserted-Identity",
        "Privacy",
        "Organization",
        "Contact",
        "From",
        "To",
        "Accept",
    ])
}

fn value() -> impl Strategy<Value = String> {
    prop::sample::select(vec![
        "x",
        "timer, 100rel",
        "<sip:+4989123@h>;reason=busy",
        "\"Q, R\" <sip:0891@h;user=phone>",
        "id",
        "a=b;c",
        "",
    ])
    .prop_map(str::to_owned)
}

fn regex() -> impl Strategy<Value = &'static str> {
    prop::sample::select(vec![
        "^0",
        "[0-9]+",
        "(a|b)",
        ".*",
        "sip:",
        "\\+49(.*)",
        "x$",
    ])
}

fn action() -> impl Strategy<Value = String> {
    let editable = prop::sample::select(vec![
        "X-A",
        "Subject",
        "Supported",
        "k",
        "User-Agent",
        "Diversion",
        "Organization",
    ]);
    let params_hdr = prop::sample::select(vec!["Diversion", "To", "From", "Contact", "X-A"]);
    let target = prop::sample::select(vec!["ruri", "to", "from", "pai", "diversion"]);
    prop_oneof![
        (editable.clone(), value()).prop_map(|(n, v)| format!("add_header: {{name: {n}, value: {v:?}}}")),
        (editable.clone(), value()).prop_map(|(n, v)| format!("set_header: {{name: {n}, value: {v:?}}}")),
        (editable.clone(), value()).prop_map(|(n, v)| format!("replace_header: {{name: {n}, value: {v:?}}}")),
        header_name()
            .prop_filter("removable", |n| !["Contact", "From", "To"].contains(n))
            .prop_map(|n| format!("remove_header: {n}")),
        (editable.clone(), regex(), value()).prop_map(|(n, r, v)| format!(
            "rewrite_header: {{name: {n}, regex: {r:?}, replace: {v:?}}}"
        )),
        (params_hdr.clone(), prop::option::of("[a-z]{1,3}"))
            .prop_map(|(h, v)| match v {
                Some(v) => format!("set_param: {{header: {h}, name: p, value: {v}}}"),
                None => format!("set_param: {{header: {h}, name: flag}}"),
            }),
        params_hdr.clone().prop_map(|h| format!("remove_param: {{header: {h}, name: reason}}")),
        (params_hdr, regex()).prop_map(|(h, r)| format!(
            "rewrite_param: {{header: {h}, name: reason, regex: {r:?}, replace: \"z\"}}"
        )),
        prop::collection::vec(header_name(), 0..4)
            .prop_map(|hs| format!("keep_headers: [{}]", hs.join(", "))),
        Just("set_user_agent: \"Palisade\"".to_owned()),
        (prop::collection::hash_set(target, 1..4), 0..7u8).prop_map(|(ts, kind)| {
            let ts: Vec<_> = ts.into_iter().collect();
            let what = match kind {
                0 => "e164: {country_code: \"49\"}".to_owned(),
                1 => "national: {country_code: \"49\"}".to_owned(),
                2 => "strip_prefix: \"0\"".to_owned(),
                3 => "add_prefix: \"*31#\"".to_owned(),
                4 => "regex: \"^(\\\\d)(.*)$\", replace: \"$2$1\"".to_owned(),
                5 => "user_phone: true".to_owned(),
                _ => "user_phone: false".to_owned(),
            };
            format!("number: {{targets: [{}], {what}}}", ts.join(", "))
        }),
        Just("map_status: [{from: 486, to: 480}, {from: 183, to: 180}, {from: 404, reason: \"Nope\"}]".to_owned()),
    ]
}

fn rule_match() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(String::new()),
        Just("match: {direction: out}".to_owned()),
        Just("match: {methods: [INVITE, BYE]}".to_owned()),
        Just("match: {status: [\"4xx\", 183]}".to_owned()),
        header_name().prop_map(|h| format!("match: {{header_present: {h}}}")),
        header_name().prop_map(|h| format!("match: {{header_absent: {h}}}")),
        regex().prop_map(|r| format!("match: {{number_regex: {r:?}}}")),
        regex().prop_map(|r| format!("match: {{ruri_regex: {r:?}}}")),
        Just("match: {source_trunk: pbx}".to_owned()),
    ]
}

fn program_yaml() -> impl Strategy<Value = String> {
    let profile =
        || prop::collection::vec((rule_match(), prop::collection::vec(action(), 1..5)), 1..4);
    (profile(), profile()).prop_map(|(a, b)| {
        let mut y = HEAD.to_owned();
        for (name, rules) in [("a", a), ("b", b)] {
            y.push_str(&format!("    - name: {name}\n      rules:\n"));
            for (i, (m, actions)) in rules.into_iter().enumerate() {
                y.push_str(&format!("        - name: r{i}\n"));
                if !m.is_empty() {
                    y.push_str(&format!("          {m}\n"));
                }
                y.push_str("          actions:\n");
                for a in actions {
                    y.push_str(&format!("            - {a}\n"));
                }
            }
        }
        y
    })
}

fn message() -> impl Strategy<Value = String> {
    let start = prop_oneof![
        prop::sample::select(vec!["INVITE", "BYE", "CANCEL", "ACK", "OPTIONS", "MESSAGE"])
            .prop_map(|m| (
                format!("{m} sip:@NUM@@127.0.0.1;user=phone SIP/2.0"),
                m.to_owned()
            )),
        prop::sample::select(vec![
            "180 Ringing",
            "183 Progress",
            "486 Busy Here",
            "404 Not Found",
            "200 OK"
        ])
        .prop_map(|s| (format!("SIP/2.0 {s}"), "INVITE".to_owned())),
    ];
    let number = prop::sample::select(vec![
        "+4989123",
        "089123",
        "0049891",
        "123",
        "anonymous",
        "0",
    ]);
    let from = prop::sample::select(vec![
        "\"A, b\" <sip:@NUM@@h>;tag=f1",
        "sip:@NUM@@h;tag=f1",
        "<tel:@NUM@>;tag=f1",
        "Anon <sip:@NUM@@h;user=phone>;tag=f1;x=y",
    ]);
    let to = prop::sample::select(vec!["<sip:@NUM@@h>", "<sip:@NUM@@h>;tag=t1", "sip:@NUM@@h"]);
    let extra = prop::collection::vec((header_name(), value()), 0..8);
    let body = prop::option::of("[a-z=\r\n ]{0,40}");
    (start, number, from, to, extra, body).prop_map(
        |((start, cseq_method), num, from, to, extra, body)| {
            let mut m = start.replace("@NUM@", num);
            m.push_str("\r\nVia: SIP/2.0/UDP 127.0.0.10:5070;branch=z9hG4bKp1\r\n");
            m.push_str(&format!("From: {}\r\n", from.replace("@NUM@", num)));
            m.push_str(&format!("To: {}\r\n", to.replace("@NUM@", num)));
            m.push_str("Call-ID: prop-1\r\n");
            m.push_str(&format!("CSeq: 7 {cseq_method}\r\nMax-Forwards: 70\r\n"));
            for (n, v) in extra {
                // From/To appear once: extra ones would make the input invalid.
                if ["From", "To"].contains(&n) {
                    continue;
                }
                m.push_str(&format!("{n}: {v}\r\n"));
            }
            match body {
                Some(b) => m.push_str(&format!(
                    "Content-Type: text/plain\r\nContent-Length: {}\r\n\r\n{b}",
                    b.len()
                )),
                None => m.push_str("Content-Length: 0\r\n\r\n"),
            }
            m
        },
    )
}

fn check(program: &Arc<Program>, msg: &Message) {
    let cfg = Arc::clone(program.config());
    for t in cfg.trunks() {
        for (dir, d) in [
            (RuleDirection::In, Direction::Inbound),
            (RuleDirection::Out, Direction::Outbound),
        ] {
            let Some(stage) = NormalizeStage::new(program, t.id, dir) else {
                continue;
            };
            let ctx = StageContext {
                trunk: t.id,
                trunk_name: &t.name,
                direction: d,
                source: Some(msg),
                other_trunk: Some(cfg.trunks()[0].id),
            };
            let mut edit = Editor::new(msg);
            let fired = stage.run(&ctx, &mut edit, true);
            let out = edit.finish();
            let unlimited = ParseLimits {
                max_message_bytes: usize::MAX,
                max_headers: usize::MAX,
            };
            let again = Message::parse(out.clone(), &unlimited).unwrap_or_else(|e| {
                panic!(
                    "unparseable result ({e}):\n{}\nfired: {fired:#?}",
                    String::from_utf8_lossy(&out)
                )
            });
            assert_eq!(again.call_id(), msg.call_id());
            assert_eq!(again.cseq(), msg.cseq());
            assert_eq!(again.from_tag(), msg.from_tag());
            assert_eq!(again.to_tag(), msg.to_tag());
            assert_eq!(again.branch(), msg.branch());
            assert_eq!(again.body(), msg.body());
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    #[test]
    fn random_messages_through_random_programs_stay_valid_sip(yaml in program_yaml(), text in message()) {
        let cfg = palisade_config::load_str(&yaml, "prop.yaml")
            .unwrap_or_else(|e| panic!("generated config must be valid: {e}\n{yaml}"));
        let program = Program::new(Arc::new(cfg));
        // A few generated combinations are not SIP (`tel:anonymous`): skip those.
        let parsed = Message::parse(bytes::Bytes::from(text), &ParseLimits::default());
        prop_assume!(parsed.is_ok());
        check(&program, &parsed.unwrap());
    }

    #[test]
    fn fuzz_entry_survives_mutated_messages(
        text in message(),
        flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..6),
    ) {
        let mut bytes = text.into_bytes();
        for (i, b) in flips {
            let at = i.index(bytes.len());
            bytes[at] = b;
        }
        palisade_normalize::fuzz::normalize(&bytes);
    }
}

#[test]
fn fuzz_seeds_run_clean() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus/normalize");
    let mut n = 0;
    for e in std::fs::read_dir(&dir).unwrap() {
        let data = std::fs::read(e.unwrap().path()).unwrap();
        palisade_normalize::fuzz::normalize(&data);
        n += 1;
    }
    assert!(n >= 5, "seed corpus missing in {}", dir.display());
}
