//! `normalization:` and the trunks' `trusted` / `normalization` keys: what
//! loads, and the located errors for what does not.

#![allow(clippy::unwrap_used)]

use palisade_config::normalization::{Action, NumberRewrite, RuleDirection, StatusMatch};
use palisade_config::{Problem, load_str};

const HEAD: &str = "\
zones:
  - name: inside
    sip_address: 127.0.0.1
trunks:
  - name: pbx
    zone: inside
    members: [{address: 127.0.0.10}]
    normalization: {inbound: [p], outbound: [p]}
  - name: carrier
    zone: inside
    trusted: false
    members: [{address: 127.0.0.20}]
routes:
  - name: all
    to_trunk: pbx
normalization:
  profiles:
    - name: p
      rules:
";

fn problems(yaml: &str) -> Vec<Problem> {
    match load_str(yaml, "n.yaml") {
        Ok(_) => panic!("expected an error for:\n{yaml}"),
        Err(e) => e.problems().to_vec(),
    }
}

/// Exactly one problem, at `line:column` on `path`, whose message contains `msg`.
#[track_caller]
fn expect_one(rules: &str, line: u64, column: u64, path: &str, msg: &str) {
    let yaml = format!("{HEAD}{rules}");
    let ps = problems(&yaml);
    assert_eq!(ps.len(), 1, "{ps:#?}\nfor:\n{yaml}");
    let p = &ps[0];
    assert_eq!(
        (p.line, p.column, p.path.as_str()),
        (line, column, path),
        "{p:?}"
    );
    assert!(p.message.contains(msg), "{:?} lacks {msg:?}", p.message);
}

#[test]
fn a_full_profile_loads_typed() {
    let rule = [
        "        - name: everything",
        "          match:",
        "            direction: out",
        "            methods: [INVITE]",
        "            status: [486, \"5xx\"]",
        "            header_present: k",
        "            number_regex: \"^\\\\+49\"",
        "            source_trunk: carrier",
        "          actions:",
        "            - number: {targets: [ruri, to], e164: {country_code: \"49\"}}",
        "            - map_status: [{from: 486, to: 480}]",
        "            - remove_header: X-Internal",
        "",
    ]
    .join("\n");
    let yaml = format!("{HEAD}{rule}");
    let cfg = load_str(&yaml, "n.yaml").unwrap();
    let t = &cfg.trunks()[0];
    assert!(t.trusted);
    assert!(!cfg.trunks()[1].trusted);
    assert_eq!(t.normalization.inbound.len(), 1);
    let p = &cfg.normalization().profiles[0];
    let r = &p.rules[0];
    assert_eq!(r.when.direction, Some(RuleDirection::Out));
    assert_eq!(
        r.when.status,
        [StatusMatch::Code(486), StatusMatch::Class(5)]
    );
    // Compact form `k` resolves to Supported.
    assert_eq!(r.when.header_present.as_ref().unwrap().name, "Supported");
    assert!(r.when.source_trunk.is_some());
    let Action::Number(n) = &r.actions[0] else {
        panic!()
    };
    let Some(NumberRewrite::ToE164(plan)) = &n.rewrite else {
        panic!()
    };
    assert_eq!(
        (
            plan.national_prefix.as_str(),
            plan.international_prefix.as_str()
        ),
        ("0", "00")
    );
    assert!(cfg.normalization().privacy.honour_privacy_id);
}

#[test]
fn bad_regex_is_located() {
    expect_one(
        "        - name: r\n          match: {number_regex: \"^(0\"}\n          actions: [{remove_header: X-A}]\n",
        21,
        33,
        "normalization.profiles[0].rules[0].match.number_regex",
        "invalid regex: unclosed group",
    );
    expect_one(
        "        - name: r\n          match: {ruri_regex: \"^(sip\"}\n          actions: [{remove_header: X-A}]\n",
        21,
        31,
        "normalization.profiles[0].rules[0].match.ruri_regex",
        "invalid regex: unclosed group",
    );
    expect_one(
        "        - name: r\n          actions:\n            - rewrite_header: {name: X-A, regex: \"[\", replace: x}\n",
        22,
        50,
        "normalization.profiles[0].rules[0].actions[0].rewrite_header.regex",
        "invalid regex",
    );
}

#[test]
fn replacement_groups_must_exist() {
    expect_one(
        "        - name: r\n          actions:\n            - number: {targets: [ruri], regex: \"^0(.*)\", replace: \"+49$2\"}\n",
        22,
        67,
        "normalization.profiles[0].rules[0].actions[0].number.replace",
        "`$2` names no capture group",
    );
}

#[test]
fn unknown_profile_lists_the_known_ones() {
    let yaml = format!("{HEAD}        - name: r\n          actions: [{{remove_header: X-A}}]\n")
        .replace("outbound: [p]", "outbound: [teams]");
    let ps = problems(&yaml);
    assert_eq!(ps.len(), 1, "{ps:#?}");
    assert_eq!((ps[0].line, ps[0].column), (8, 46));
    assert_eq!(ps[0].path, "trunks[0].normalization.outbound[0]");
    assert_eq!(ps[0].message, "unknown profile `teams` (profiles: p)");
}

#[test]
fn structural_headers_cannot_be_removed() {
    expect_one(
        "        - name: r\n          actions: [{remove_header: v}]\n",
        21,
        37,
        "normalization.profiles[0].rules[0].actions[0].remove_header",
        "Via is structural and can never be removed (structural: Via, From, To, Call-ID, CSeq, Contact, Max-Forwards, Route, Record-Route, Content-*)",
    );
    expect_one(
        "        - name: r\n          actions: [{remove_header: Content-Disposition}]\n",
        21,
        37,
        "normalization.profiles[0].rules[0].actions[0].remove_header",
        "Content-Disposition is structural",
    );
    expect_one(
        "        - name: r\n          actions: [{add_header: {name: Call-ID, value: x}}]\n",
        21,
        41,
        "normalization.profiles[0].rules[0].actions[0].add_header.name",
        "add_header cannot change Call-ID",
    );
    expect_one(
        "        - name: r\n          actions: [{set_header: {name: From, value: x}}]\n",
        21,
        41,
        "normalization.profiles[0].rules[0].actions[0].set_header.name",
        "writing it whole would drop its tag",
    );
}

#[test]
fn one_key_per_action_and_sane_values() {
    expect_one(
        "        - name: r\n          actions: [{remove_header: X-A, set_user_agent: x}]\n",
        21,
        21,
        "normalization.profiles[0].rules[0].actions[0]",
        "one key per action (got remove_header, set_user_agent)",
    );
    expect_one(
        "        - name: r\n          actions: [{map_status: [{from: 486, to: 200}]}]\n",
        21,
        51,
        "normalization.profiles[0].rules[0].actions[0].map_status[0].to",
        "200 cannot be mapped",
    );
    expect_one(
        "        - name: r\n          actions: [{map_status: [{from: 486, to: 180}]}]\n",
        21,
        51,
        "normalization.profiles[0].rules[0].actions[0].map_status[0].to",
        "changes the kind of response",
    );
    expect_one(
        "        - name: r\n          actions: [{remove_header: q}]\n",
        21,
        37,
        "normalization.profiles[0].rules[0].actions[0].remove_header",
        "unknown header `q`",
    );
    expect_one(
        "        - name: r\n          match: {source_trunk: nobody}\n          actions: [{remove_header: X-A}]\n",
        21,
        33,
        "normalization.profiles[0].rules[0].match.source_trunk",
        "no trunk named `nobody`",
    );
    expect_one(
        "        - name: r\n          actions: [{number: {targets: [ruri, cc], add_prefix: \"0\"}}]\n",
        21,
        47,
        "normalization.profiles[0].rules[0].actions[0].number.targets[1]",
        "unknown target `cc`",
    );
    expect_one(
        "        - name: r\n          actions: [{number: {targets: [ruri], e164: {country_code: \"49\"}, add_prefix: \"0\"}}]\n",
        21,
        88,
        "normalization.profiles[0].rules[0].actions[0].number.add_prefix",
        "one rewrite per number action",
    );
    expect_one(
        "        - name: r\n          actions: [{add_header: {name: X-A, value: \"a\\r\\nVia: x\"}}]\n",
        21,
        53,
        "normalization.profiles[0].rules[0].actions[0].add_header.value",
        "must not contain control characters",
    );
}

#[test]
fn unknown_keys_are_refused_with_their_place() {
    let yaml = format!("{HEAD}        - name: r\n          actions: [{{delete_header: X-A}}]\n");
    let e = load_str(&yaml, "n.yaml").unwrap_err();
    let p = &e.problems()[0];
    assert_eq!(p.line, 21);
    assert!(p.message.contains("delete_header"), "{p:?}");
}
