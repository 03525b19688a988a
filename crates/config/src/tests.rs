//! Unit tests: every rule, with the line, column and field path it reports.

use std::net::IpAddr;
use std::time::Duration;

use super::*;

/// A minimal valid document; tests prepend sections to it or write their own.
const BASE: &str = "\
zones:
  - name: inside
    sip_address: 127.0.0.1
trunks:
  - name: pbx
    zone: inside
    members:
      - address: 127.0.0.10
routes:
  - name: all
    to_trunk: pbx
";

fn problems(yaml: &str) -> Vec<Problem> {
    match load_str(yaml, "t.yaml") {
        Ok(_) => panic!("expected an error for:\n{yaml}"),
        Err(e) => {
            assert_eq!(e.file(), "t.yaml");
            e.problems().to_vec()
        }
    }
}

/// Asserts `yaml` fails with exactly one problem, at `line:column` on `path`,
/// whose message contains `msg`.
#[track_caller]
fn expect_one(yaml: &str, line: u64, column: u64, path: &str, msg: &str) {
    let ps = problems(yaml);
    assert_eq!(
        ps.len(),
        1,
        "expected one problem, got {ps:#?}\nfor:\n{yaml}"
    );
    let p = &ps[0];
    assert_eq!(
        (p.line, p.column, p.path.as_str()),
        (line, column, path),
        "wrong place for {p:?}\nin:\n{yaml}"
    );
    assert!(
        p.message.contains(msg),
        "message {:?} lacks {msg:?}",
        p.message
    );
}

fn ok(yaml: &str) -> Config {
    match load_str(yaml, "t.yaml") {
        Ok(c) => c,
        Err(e) => panic!("expected success, got:\n{e}\nfor:\n{yaml}"),
    }
}

fn repo_file(name: &str) -> String {
    let path = format!("{}/../../configs/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

// ---------------------------------------------------------------- defaults

#[test]
fn minimal_document_takes_every_default() {
    let c = ok(BASE);
    assert_eq!(c.node().name, "palisade");
    assert_eq!(c.node().user_agent, "Palisade");
    let s = c.sip();
    assert_eq!(s.t1, Duration::from_millis(500));
    assert_eq!(s.t2, Duration::from_millis(4000));
    assert_eq!(s.t4, Duration::from_millis(5000));
    assert_eq!(s.max_udp_message_bytes, 16384);
    assert_eq!(s.max_tcp_message_bytes, 65536);
    assert_eq!(s.udp_mtu_bytes, 1300);
    assert_eq!(s.max_forwards, 70);
    assert_eq!(s.member_timeout, Duration::from_millis(4000));
    assert_eq!(s.no_answer_timeout, Duration::from_secs(180));
    assert_eq!(s.max_calls, 100_000);
    assert_eq!(s.udp_receive_buffer_bytes, 8_388_608);
    assert_eq!(s.udp_send_buffer_bytes, 4_194_304);
    assert_eq!(s.tcp_receive_buffer_bytes, 1_048_576);
    assert_eq!(s.tcp_idle_timeout, Duration::from_secs(600));
    assert_eq!(s.tcp_max_connections, 4096);
    assert_eq!(s.tcp_connect_timeout, Duration::from_millis(2000));
    let z = &c.zones()[0];
    assert_eq!(z.id, ZoneId(0));
    assert_eq!(z.transports, vec![Transport::Udp, Transport::Tcp]);
    assert_eq!((z.udp_port, z.tcp_port), (5060, 5060));
    assert_eq!(
        z.media,
        MediaRange {
            address: "127.0.0.1".parse().unwrap(),
            port_min: 20000,
            port_max: 29999
        }
    );
    assert_eq!(z.dscp_sip, 24);
    let t = &c.trunks()[0];
    assert_eq!((t.id, t.zone), (TrunkId(0), ZoneId(0)));
    assert_eq!(t.members[0].port, 5060);
    assert_eq!(t.members[0].transport, Transport::Udp);
    assert_eq!(t.member_timeout, Duration::from_millis(4000));
    assert!(t.source_addresses.is_empty() && t.pass_headers.is_empty());
    let r = &c.routes()[0];
    assert!(r.from_trunk.is_none() && r.number_prefixes.is_empty() && r.number_regex.is_none());
    assert_eq!(c.shutdown().grace, Duration::from_secs(30));
    assert_eq!(c.logging().format, LogFormat::Text);
    assert_eq!(c.logging().level, "info");
    assert_eq!(c.logging().batch, Duration::from_millis(100));
    let m = c.media();
    assert!(m.anchor);
    assert_eq!(m.relay_threads, 0);
    assert_eq!(m.timeout, Duration::from_secs(60));
    assert_eq!(m.hold_timeout, Duration::from_secs(3600));
    assert_eq!(m.dscp_rtp, 46);
    assert_eq!(m.kernel_forwarding, NftMode::Off);
    assert_eq!(m.kernel_forwarding_after, Duration::from_millis(1000));
    assert_eq!(t.media, TrunkMedia::default());
    assert_eq!(t.media.srtp, SrtpPolicy::Off);
    assert_eq!(t.media.rtcp_mux, RtcpMuxPolicy::Auto);
    assert_eq!(t.media.latching, Latching::Learn);
    assert!(t.media.codecs.is_empty());
}

/// reference.yaml writes every defaulted key with its default value, so it
/// must load to the same settings as a file that leaves them all out.
#[test]
fn reference_values_are_the_code_defaults() {
    let r = ok(&repo_file("reference.yaml"));
    let d = ok(BASE);
    assert_eq!(r.node(), d.node());
    assert_eq!(r.sip(), d.sip());
    assert_eq!(r.shutdown(), d.shutdown());
    assert_eq!(r.logging(), d.logging());
    assert_eq!(r.media(), d.media());
    // Trunk `pbx` spells out the media defaults.
    assert_eq!(r.trunks()[0].media, d.trunks()[0].media);
    assert_eq!(r.alerts(), d.alerts());
    let (rg, dg) = (r.guard(), d.guard());
    assert_eq!(
        (
            rg.mode,
            rg.nftables,
            &rg.nftables_table,
            rg.ban,
            rg.max_sources,
            rg.max_bans
        ),
        (
            dg.mode,
            dg.nftables,
            &dg.nftables_table,
            dg.ban,
            dg.max_sources,
            dg.max_bans
        )
    );
    assert_eq!(rg.trusted.requests, dg.trusted.requests);
    assert_eq!(rg.default_limits, dg.default_limits);
    assert_eq!(rg.scanners, dg.scanners);
    assert_eq!(rg.kernel_meter, dg.kernel_meter);
    let (rf, df) = (r.fraud(), d.fraud());
    assert_eq!(rf.high_risk_prefixes, df.high_risk_prefixes);
    assert_eq!(rf.emergency_numbers, df.emergency_numbers);
    assert_eq!(
        (
            rf.business_days,
            rf.business_hours,
            rf.nights,
            rf.weekend_days
        ),
        (
            df.business_days,
            df.business_hours,
            df.nights,
            df.weekend_days
        )
    );
    // Zone `inside` and its first member spell out the defaults too.
    let (rz, dz) = (&r.zones()[0], &d.zones()[0]);
    assert_eq!(rz, dz);
    assert_eq!(
        r.trunks()[1].members[0].transport,
        d.trunks()[0].members[0].transport
    );
}

#[test]
fn quickstart_and_reference_load() {
    let q = ok(&repo_file("quickstart.yaml"));
    assert_eq!(q.node().name, "palisade-quickstart");
    assert_eq!(q.zones().len(), 2);
    assert_eq!(q.trunks().len(), 2);
    let r = ok(&repo_file("reference.yaml"));
    assert_eq!(
        r.trunks()[0].pass_headers,
        ["p-asserted-identity", "privacy"]
    );
    assert!(r.routes()[0].number_regex.is_some());
}

// ------------------------------------------------------------ parse errors

#[test]
fn port_out_of_u16_names_value_and_type() {
    let yaml = BASE.replace(
        "      - address: 127.0.0.10\n",
        "      - address: 127.0.0.10\n        port: 70000\n",
    );
    expect_one(
        &yaml,
        9,
        15,
        "trunks[0].members[0].port",
        "invalid value: integer 70000, expected u16",
    );
    let e = load_str(&yaml, "configs/x.yaml").unwrap_err();
    assert_eq!(
        e.to_string(),
        "configs/x.yaml:9:15: trunks[0].members[0].port: invalid value: integer 70000, expected u16"
    );
    assert!(matches!(e, ConfigError::Parse { .. }));
}

#[test]
fn unknown_keys_are_errors_at_the_key() {
    expect_one(
        &format!("{BASE}colour: blue\n"),
        12,
        1,
        "colour",
        "unknown field `colour`",
    );
    let yaml = BASE.replace(
        "    zone: inside\n",
        "    zone: inside\n    zones: inside\n",
    );
    expect_one(&yaml, 7, 5, "trunks[0].zones", "unknown field `zones`");
    let yaml = BASE.replace(
        "      - address: 127.0.0.10\n",
        "      - address: 127.0.0.10\n        prot: 1\n",
    );
    expect_one(
        &yaml,
        9,
        9,
        "trunks[0].members[0].prot",
        "unknown field `prot`",
    );
    expect_one(
        &format!("sip:\n  t1: 5\n{BASE}"),
        2,
        3,
        "sip.t1",
        "expected one of",
    );
}

#[test]
fn missing_required_keys_name_the_field() {
    let no_routes = BASE.split("routes:").next().unwrap();
    expect_one(no_routes, 1, 1, "routes", "missing field `routes`");
    let yaml = BASE.replace("    zone: inside\n", "");
    expect_one(&yaml, 5, 5, "trunks[0].zone", "missing field `zone`");
    let yaml = BASE.replace("    sip_address: 127.0.0.1\n", "");
    expect_one(
        &yaml,
        2,
        5,
        "zones[0].sip_address",
        "missing field `sip_address`",
    );
}

#[test]
fn wrong_types_point_at_the_value() {
    let yaml = BASE.replace(
        "zones:\n  - name: inside\n    sip_address: 127.0.0.1\n",
        "zones: inside\n",
    );
    expect_one(&yaml, 1, 8, "zones", "sequence");
    expect_one(
        &format!("sip:\n  t1_ms: -5\n{BASE}"),
        2,
        10,
        "sip.t1_ms",
        "integer -5, expected u64",
    );
    expect_one(
        &format!("sip:\n  t1_ms: 1.5\n{BASE}"),
        2,
        10,
        "sip.t1_ms",
        "floating point 1.5",
    );
    expect_one(
        &format!("logging:\n  format: yaml\n{BASE}"),
        2,
        11,
        "logging.format",
        "unknown variant `yaml`, expected one of text, json",
    );
    expect_one(
        &format!("logging:\n  batch_ms: 5000\n{BASE}"),
        2,
        13,
        "logging.batch_ms",
        "5000 is out of range: must be 0..=1000",
    );
}

#[test]
fn yaml_syntax_errors_are_located() {
    // An unclosed flow sequence where a string belongs: the `[` is blamed.
    let yaml = BASE.replace("    zone: inside\n", "    zone: [inside\n");
    expect_one(&yaml, 6, 11, "trunks[0].zone", "expected string");
    // Bad indentation cuts the trunk's mapping short; the typed pass would
    // see a missing `zone`, but the syntax error is what gets reported.
    let yaml = BASE.replace("  - name: pbx\n", "  - name: pbx\n   zone: x\n");
    expect_one(&yaml, 6, 4, "", "did not find expected '-' indicator");
    // A tab where indentation belongs.
    let yaml = BASE.replace("    zone: inside\n", "\tzone: inside\n");
    // The scanner reports it at the plain scalar it was reading.
    expect_one(&yaml, 5, 11, "trunks[0]", "found a tab");
}

#[test]
fn duplicate_keys_are_errors() {
    expect_one(
        &format!("node:\n  name: a\n  name: b\n{BASE}"),
        3,
        3,
        "node.name",
        "duplicate key `name`",
    );
}

#[test]
fn empty_and_multi_document_files() {
    expect_one("", 1, 1, "", "empty file");
    expect_one("# only a comment\n", 1, 1, "", "empty file");
    // The parser points at the second document's first node.
    expect_one(
        &format!("{BASE}---\n{BASE}"),
        13,
        1,
        "",
        "more than one YAML document",
    );
}

#[test]
fn control_characters_never_reach_the_message() {
    let yaml = format!("\"bad\\nkey\\u001b\": 1\n{BASE}");
    let p = &problems(&yaml)[0];
    assert!(!p.message.chars().any(char::is_control), "{p:?}");
    assert!(!p.path.chars().any(char::is_control), "{p:?}");
}

// ------------------------------------------------------------------ node

#[test]
fn node_name_charset_and_length() {
    expect_one(
        &format!("node:\n  name: my node\n{BASE}"),
        2,
        9,
        "node.name",
        "contains ' '",
    );
    let long = "a".repeat(65);
    expect_one(
        &format!("node:\n  name: {long}\n{BASE}"),
        2,
        9,
        "node.name",
        "1..=64",
    );
    ok(&format!("node:\n  name: Edge-1.example_A\n{BASE}"));
}

#[test]
fn user_agent_is_header_safe() {
    expect_one(
        &format!("node:\n  user_agent: \"\"\n{BASE}"),
        2,
        15,
        "node.user_agent",
        "1..=128",
    );
    expect_one(
        &format!("node:\n  user_agent: \"Pal\\tisade\"\n{BASE}"),
        2,
        15,
        "node.user_agent",
        "printable ASCII",
    );
    expect_one(
        &format!("node:\n  user_agent: \"SBC \"\n{BASE}"),
        2,
        15,
        "node.user_agent",
        "space",
    );
    assert_eq!(
        ok(&format!("node:\n  user_agent: Acme SBC/1.0\n{BASE}"))
            .node()
            .user_agent,
        "Acme SBC/1.0"
    );
}

// ------------------------------------------------------------------- sip

#[test]
fn every_sip_number_is_range_checked() {
    let cases: &[(&str, u64)] = &[
        ("t1_ms", 49),
        ("t1_ms", 5001),
        ("t2_ms", 60_001),
        ("t4_ms", 499),
        ("max_udp_message_bytes", 65508),
        ("max_udp_message_bytes", 1023),
        ("max_tcp_message_bytes", 1_048_577),
        ("udp_mtu_bytes", 575),
        ("max_forwards", 0),
        ("max_forwards", 256),
        ("member_timeout_ms", 99),
        ("no_answer_timeout_seconds", 0),
        ("max_calls", 0),
        ("udp_receive_buffer_bytes", 4095),
        ("udp_send_buffer_bytes", 1_073_741_825),
        ("tcp_receive_buffer_bytes", 1_073_741_825),
        ("tcp_idle_timeout_seconds", 86_401),
        ("tcp_max_connections", 0),
        ("tcp_connect_timeout_ms", 99),
    ];
    for (key, v) in cases {
        let column = key.len() as u64 + 5;
        expect_one(
            &format!("sip:\n  {key}: {v}\n{BASE}"),
            2,
            column,
            &format!("sip.{key}"),
            &format!("{v} is out of range"),
        );
    }
}

#[test]
fn t2_must_not_be_below_t1() {
    expect_one(
        &format!("sip:\n  t1_ms: 1000\n  t2_ms: 900\n{BASE}"),
        3,
        10,
        "sip.t2_ms",
        "below t1_ms",
    );
    // t1 above the default t2: the only key written is blamed.
    expect_one(
        &format!("sip:\n  t1_ms: 4500\n{BASE}"),
        2,
        10,
        "sip.t1_ms",
        "default t2_ms",
    );
    let c = ok(&format!("sip:\n  t1_ms: 4500\n  t2_ms: 4500\n{BASE}"));
    assert_eq!(c.sip().t2, Duration::from_millis(4500));
}

#[test]
fn shutdown_grace_range() {
    expect_one(
        &format!("shutdown:\n  grace_seconds: 3601\n{BASE}"),
        2,
        18,
        "shutdown.grace_seconds",
        "0..=3600",
    );
    assert_eq!(
        ok(&format!("shutdown:\n  grace_seconds: 0\n{BASE}"))
            .shutdown()
            .grace,
        Duration::ZERO
    );
}

#[test]
fn logging_level_is_a_filter_directive() {
    expect_one(
        &format!("logging:\n  level: infoo\n{BASE}"),
        2,
        10,
        "logging.level",
        "`infoo` is not a level",
    );
    expect_one(
        &format!("logging:\n  level: \"palisade=loud\"\n{BASE}"),
        2,
        10,
        "logging.level",
        "directive",
    );
    expect_one(
        &format!("logging:\n  level: \"\"\n{BASE}"),
        2,
        10,
        "logging.level",
        "empty",
    );
    let c = ok(&format!(
        "logging:\n  format: json\n  level: \"warn,palisade_b2bua=debug\"\n{BASE}"
    ));
    assert_eq!(c.logging().format, LogFormat::Json);
    assert_eq!(c.logging().level, "warn,palisade_b2bua=debug");
}

// ----------------------------------------------------------------- zones

/// Two zones, lines 1-9; tests replace parts of it.
const TWO_ZONES: &str = "\
zones:
  - name: inside
    sip_address: 127.0.0.1
  - name: outside
    sip_address: 127.0.0.2
trunks:
  - name: pbx
    zone: inside
    members:
      - address: 127.0.0.10
routes:
  - name: all
    to_trunk: pbx
";

#[test]
fn zone_count_is_bounded() {
    let yaml = BASE.replace(
        "zones:\n  - name: inside\n    sip_address: 127.0.0.1\n",
        "zones: []\n",
    );
    let ps = problems(&yaml);
    // The trunk's zone no longer exists either; the count comes first.
    assert_eq!(
        (ps[0].line, ps[0].column, ps[0].path.as_str()),
        (1, 8, "zones")
    );
    assert!(ps[0].message.contains("at least one zone"));
    let mut many = String::from("zones:\n");
    for i in 0..17 {
        many.push_str(&format!("  - name: z{i}\n    sip_address: 127.0.1.{i}\n"));
    }
    let yaml = BASE.replace(
        "zones:\n  - name: inside\n    sip_address: 127.0.0.1\n",
        &many.replace("z0", "inside"),
    );
    expect_one(&yaml, 2, 3, "zones", "17 zones; at most 16");
}

#[test]
fn zone_names_are_lowercase_tokens_and_unique() {
    let yaml = TWO_ZONES.replace("name: outside", "name: Outside");
    expect_one(&yaml, 4, 11, "zones[1].name", "contains 'O'");
    let yaml = TWO_ZONES.replace("name: outside", "name: inside");
    expect_one(
        &yaml,
        4,
        11,
        "zones[1].name",
        "duplicate zone name `inside` (also zones[0])",
    );
    let yaml = TWO_ZONES.replace("name: outside", &format!("name: {}", "x".repeat(33)));
    expect_one(&yaml, 4, 11, "zones[1].name", "1..=32");
}

#[test]
fn sip_address_must_be_a_concrete_ip() {
    let at = |v: &str| TWO_ZONES.replace("sip_address: 127.0.0.2", &format!("sip_address: {v}"));
    expect_one(
        &at("sbc.example.com"),
        5,
        18,
        "zones[1].sip_address",
        "DNS names are not supported yet; use an IP",
    );
    expect_one(
        &at("127.0.0.256"),
        5,
        18,
        "zones[1].sip_address",
        "not an IP address",
    );
    expect_one(&at("0.0.0.0"), 5, 18, "zones[1].sip_address", "unspecified");
    expect_one(&at("\"::\""), 5, 18, "zones[1].sip_address", "unspecified");
    expect_one(&at("224.0.0.1"), 5, 18, "zones[1].sip_address", "multicast");
    expect_one(
        &at("\"[::1]\""),
        5,
        18,
        "zones[1].sip_address",
        "without brackets",
    );
    let c = ok(&at("\"::1\""));
    assert_eq!(c.zones()[1].sip_address, "::1".parse::<IpAddr>().unwrap());
}

#[test]
fn transports_udp_tcp_only() {
    let with = |t: &str| {
        TWO_ZONES.replace(
            "    sip_address: 127.0.0.2\n",
            &format!("    sip_address: 127.0.0.2\n    transports: {t}\n"),
        )
    };
    expect_one(
        &with("[udp, tls]"),
        6,
        23,
        "zones[1].transports[1]",
        "tls is not supported yet",
    );
    expect_one(
        &with("[udp, sctp]"),
        6,
        23,
        "zones[1].transports[1]",
        "unknown transport `sctp`",
    );
    expect_one(
        &with("[udp, udp]"),
        6,
        23,
        "zones[1].transports[1]",
        "listed twice",
    );
    expect_one(
        &with("[]"),
        6,
        17,
        "zones[1].transports",
        "at least one transport",
    );
    let c = ok(&with("[tcp]"));
    let z = &c.zones()[1];
    assert_eq!(z.transports, vec![Transport::Tcp]);
    assert!(z.listen_addr(Transport::Udp).is_none());
    assert_eq!(
        z.listen_addrs().collect::<Vec<_>>(),
        vec![(Transport::Tcp, "127.0.0.2:5060".parse().unwrap())]
    );
}

#[test]
fn sip_ports_nonzero_and_not_shared() {
    let yaml = TWO_ZONES.replace(
        "    sip_address: 127.0.0.2\n",
        "    sip_address: 127.0.0.2\n    udp_port: 0\n",
    );
    expect_one(&yaml, 6, 15, "zones[1].udp_port", "port 0");
    // Same address: the default ports collide on both transports.
    let yaml = TWO_ZONES.replace(
        "sip_address: 127.0.0.2",
        "sip_address: 127.0.0.1\n    media:\n      port_min: 30000\n      port_max: 30999",
    );
    let ps = problems(&yaml);
    assert_eq!(ps.len(), 2, "{ps:#?}");
    assert!(ps.iter().all(|p| (p.line, p.column) == (4, 5)), "{ps:#?}");
    assert_eq!(ps[0].path, "zones[1].udp_port");
    assert_eq!(ps[1].path, "zones[1].tcp_port");
    assert!(
        ps[0]
            .message
            .contains("127.0.0.1:5060/udp is already the listener of zone `inside`")
    );
    // Same address, different ports: fine.
    ok(&TWO_ZONES.replace(
        "sip_address: 127.0.0.2",
        "sip_address: 127.0.0.1\n    udp_port: 5070\n    tcp_port: 5070\n    media:\n      port_min: 30000\n      port_max: 30999",
    ));
}

#[test]
fn media_range_rules() {
    let media = |m: &str| {
        TWO_ZONES.replace(
            "    sip_address: 127.0.0.2\n",
            &format!("    sip_address: 127.0.0.2\n    media:\n{m}"),
        )
    };
    expect_one(
        &media("      port_min: 30001\n      port_max: 39999\n"),
        7,
        17,
        "zones[1].media.port_min",
        "odd",
    );
    expect_one(
        &media("      port_min: 30000\n      port_max: 30000\n"),
        8,
        17,
        "zones[1].media.port_max",
        "below port_max",
    );
    // Only port_min written, above the default port_max: port_min is blamed.
    expect_one(
        &media("      port_min: 40000\n"),
        7,
        17,
        "zones[1].media.port_min",
        "below port_max (29999)",
    );
    expect_one(
        &media("      port_min: 0\n"),
        7,
        17,
        "zones[1].media.port_min",
        "port 0",
    );
    expect_one(
        &media("      address: media.example\n"),
        7,
        16,
        "zones[1].media.address",
        "DNS names",
    );
    let c = ok(&media("      address: 127.0.0.3\n      port_min: 20000\n"));
    assert_eq!(
        c.zones()[1].media,
        MediaRange {
            address: "127.0.0.3".parse().unwrap(),
            port_min: 20000,
            port_max: 29999
        }
    );
}

#[test]
fn media_ranges_on_one_address_must_not_overlap() {
    let yaml = TWO_ZONES.replace(
        "    sip_address: 127.0.0.2\n",
        "    sip_address: 127.0.0.2\n    media:\n      address: 127.0.0.1\n      port_min: 29998\n      port_max: 39999\n",
    );
    expect_one(
        &yaml,
        7,
        7,
        "zones[1].media",
        "ports 29998-39999 on 127.0.0.1 overlap zone `inside` (20000-29999)",
    );
    // Same ranges on different addresses are fine (the defaults).
    ok(TWO_ZONES);
}

#[test]
fn sip_udp_port_inside_a_media_range() {
    // Port 20000 is in zone inside's media range, but on another address.
    ok(&TWO_ZONES.replace(
        "    sip_address: 127.0.0.2\n",
        "    sip_address: 127.0.0.2\n    udp_port: 20000\n    media:\n      port_min: 40000\n      port_max: 40999\n",
    ));
    let yaml = TWO_ZONES.replace(
        "    sip_address: 127.0.0.2\n",
        "    sip_address: 127.0.0.2\n    media:\n      port_min: 5000\n      port_max: 5999\n",
    );
    expect_one(
        &yaml,
        4,
        5,
        "zones[1].udp_port",
        "127.0.0.2:5060/udp is inside the media range 5000-5999 of zone `outside`",
    );
}

#[test]
fn dscp_range() {
    let yaml = TWO_ZONES.replace(
        "    sip_address: 127.0.0.2\n",
        "    sip_address: 127.0.0.2\n    dscp_sip: 64\n",
    );
    expect_one(&yaml, 6, 15, "zones[1].dscp_sip", "0..=63");
}

// ---------------------------------------------------------------- trunks

#[test]
fn trunk_zone_must_exist() {
    let yaml = BASE.replace("    zone: inside\n", "    zone: outside\n");
    expect_one(
        &yaml,
        6,
        11,
        "trunks[0].zone",
        "no zone named `outside` (zones: inside)",
    );
}

#[test]
fn trunk_names_unique_and_tokens() {
    let yaml = format!(
        "{}  - name: pbx\n    zone: inside\n    members:\n      - address: 127.0.0.11\n{}",
        &BASE[..BASE.find("routes:").unwrap()],
        &BASE[BASE.find("routes:").unwrap()..]
    );
    expect_one(
        &yaml,
        9,
        11,
        "trunks[1].name",
        "duplicate trunk name `pbx` (also trunks[0])",
    );
    expect_one(
        &BASE
            .replace("name: pbx", "name: \"p b x\"")
            .replace("to_trunk: pbx", "to_trunk: \"p b x\""),
        5,
        11,
        "trunks[0].name",
        "contains ' '",
    );
}

#[test]
fn member_count_is_bounded() {
    let yaml = BASE.replace(
        "    members:\n      - address: 127.0.0.10\n",
        "    members: []\n",
    );
    expect_one(&yaml, 7, 14, "trunks[0].members", "at least one member");
    let mut many = String::from("    members:\n");
    for i in 0..17 {
        many.push_str(&format!(
            "      - address: 127.0.0.10\n        port: {}\n",
            5000 + i
        ));
    }
    let yaml = BASE.replace("    members:\n      - address: 127.0.0.10\n", &many);
    expect_one(&yaml, 8, 7, "trunks[0].members", "17 members; at most 16");
}

#[test]
fn member_address_rules() {
    let at = |v: &str| BASE.replace("address: 127.0.0.10", &format!("address: {v}"));
    expect_one(
        &at("carrier.example.com"),
        8,
        18,
        "trunks[0].members[0].address",
        "is a DNS name: write it as `host: carrier.example.com`",
    );
    expect_one(
        &at("\"::1\""),
        8,
        18,
        "trunks[0].members[0].address",
        "address families differ",
    );
    expect_one(
        &at("0.0.0.0"),
        8,
        18,
        "trunks[0].members[0].address",
        "unspecified",
    );
}

#[test]
fn member_transport_rules() {
    let with = |t: &str| {
        BASE.replace(
            "      - address: 127.0.0.10\n",
            &format!("      - address: 127.0.0.10\n        transport: {t}\n"),
        )
    };
    expect_one(
        &with("tls"),
        9,
        20,
        "trunks[0].members[0].transport",
        "tls is not supported yet",
    );
    expect_one(
        &with("ws"),
        9,
        20,
        "trunks[0].members[0].transport",
        "unknown transport `ws`",
    );
    let udp_only = with("tcp").replace(
        "    sip_address: 127.0.0.1\n",
        "    sip_address: 127.0.0.1\n    transports: [udp]\n",
    );
    expect_one(
        &udp_only,
        10,
        20,
        "trunks[0].members[0].transport",
        "tcp is not enabled on zone `inside` (its transports: udp)",
    );
    assert_eq!(
        ok(&with("tcp")).trunks()[0].members[0].transport,
        Transport::Tcp
    );
}

#[test]
fn duplicate_members_are_errors() {
    let yaml = BASE.replace(
        "      - address: 127.0.0.10\n",
        "      - address: 127.0.0.10\n      - address: 127.0.0.10\n",
    );
    expect_one(
        &yaml,
        9,
        9,
        "trunks[0].members[1]",
        "127.0.0.10:5060 over udp is listed twice",
    );
}

/// Three trunks in one zone, lines 1-20.
const THREE_TRUNKS: &str = "\
zones:
  - name: inside
    sip_address: 127.0.0.1
trunks:
  - name: a
    zone: inside
    members:
      - address: 127.0.0.10
    source_addresses: [127.0.1.0/24]
  - name: b
    zone: inside
    members:
      - address: 127.0.0.20
    source_addresses: [\"127.0.2.0/24\", \"::1\"]
  - name: c
    zone: inside
    members:
      - address: 127.0.0.30
routes:
  - name: all
    to_trunk: a
";

#[test]
fn source_addresses_parse_and_normalise() {
    let c = ok(THREE_TRUNKS);
    let b = c.trunk_by_name("b").unwrap();
    assert_eq!(
        b.source_addresses,
        vec![
            "127.0.2.0/24".parse::<IpNet>().unwrap(),
            "::1/128".parse().unwrap()
        ]
    );
    let yaml = THREE_TRUNKS.replace("127.0.1.0/24", "127.0.1.5/24");
    expect_one(
        &yaml,
        9,
        24,
        "trunks[0].source_addresses[0]",
        "host bits set; did you mean 127.0.1.0/24?",
    );
    let yaml = THREE_TRUNKS.replace("127.0.1.0/24", "127.0.1.0/33");
    expect_one(
        &yaml,
        9,
        24,
        "trunks[0].source_addresses[0]",
        "not an IP address or CIDR",
    );
    let yaml = THREE_TRUNKS.replace("127.0.1.0/24", "pbx.example");
    expect_one(&yaml, 9, 24, "trunks[0].source_addresses[0]", "DNS names");
}

#[test]
fn sources_may_not_overlap_between_trunks_of_a_zone() {
    // c's member lies in a's network: reported at the later entry, c's member.
    let yaml = THREE_TRUNKS.replace("address: 127.0.0.30", "address: 127.0.1.7");
    expect_one(
        &yaml,
        18,
        18,
        "trunks[2].members[0].address",
        "127.0.1.7/32 overlaps 127.0.1.0/24 (trunks[0].source_addresses[0]) of trunk `a`",
    );
    // The same member address in two trunks.
    let yaml = THREE_TRUNKS.replace("address: 127.0.0.30", "address: 127.0.0.20");
    expect_one(
        &yaml,
        18,
        18,
        "trunks[2].members[0].address",
        "of trunk `b`",
    );
    // A wide network of b swallows a's entries (b's is later: blamed) and
    // c's member (c's is later: blamed). One problem per pair of trunks.
    let yaml = THREE_TRUNKS.replace("\"127.0.2.0/24\"", "\"127.0.0.0/16\"");
    let ps = problems(&yaml);
    let places: Vec<_> = ps
        .iter()
        .map(|p| (p.line, p.column, p.path.as_str()))
        .collect();
    assert_eq!(
        places,
        vec![
            (14, 24, "trunks[1].source_addresses[0]"),
            (18, 18, "trunks[2].members[0].address")
        ],
        "{ps:#?}"
    );
    assert!(ps[0].message.contains("of trunk `a`"), "{ps:#?}");
    assert!(
        ps[1].message.contains(
            "127.0.0.30/32 overlaps 127.0.0.0/16 (trunks[1].source_addresses[0]) of trunk `b`"
        ),
        "{ps:#?}"
    );
    // Within one trunk, nesting is fine (member inside its own network).
    ok(&THREE_TRUNKS.replace("127.0.1.0/24", "127.0.0.8/29"));
    // Different zones may share addresses.
    let yaml = TWO_ZONES.replace(
        "routes:",
        "  - name: pbx2\n    zone: outside\n    members:\n      - address: 127.0.0.10\nroutes:",
    );
    ok(&yaml);
}

#[test]
fn member_timeout_override() {
    let yaml = BASE.replace(
        "    zone: inside\n",
        "    zone: inside\n    member_timeout_ms: 1500\n",
    );
    assert_eq!(
        ok(&yaml).trunks()[0].member_timeout,
        Duration::from_millis(1500)
    );
    let yaml = BASE.replace(
        "    zone: inside\n",
        "    zone: inside\n    member_timeout_ms: 50\n",
    );
    expect_one(&yaml, 7, 24, "trunks[0].member_timeout_ms", "100..=120000");
    // The sip-wide value is inherited.
    let c = ok(&format!("sip:\n  member_timeout_ms: 2500\n{BASE}"));
    assert_eq!(c.trunks()[0].member_timeout, Duration::from_millis(2500));
}

#[test]
fn pass_headers_reject_structural_headers() {
    let with = |h: &str| {
        BASE.replace(
            "    zone: inside\n",
            &format!("    zone: inside\n    pass_headers: [{h}]\n"),
        )
    };
    for (h, long) in [
        ("Via", "Via"),
        ("v", "Via"),
        ("call-id", "Call-ID"),
        ("I", "Call-ID"),
        ("Route", "Route"),
        ("Record-Route", "Record-Route"),
        ("m", "Contact"),
        ("f", "From"),
        ("t", "To"),
        ("CSEQ", "CSeq"),
        ("l", "Content-Length"),
        ("max-forwards", "Max-Forwards"),
    ] {
        expect_one(
            &with(&format!("Privacy, {h}")),
            7,
            29,
            "trunks[0].pass_headers[1]",
            &format!("{long} is structural"),
        );
    }
    expect_one(
        &with("\"X Bad\""),
        7,
        20,
        "trunks[0].pass_headers[0]",
        "not a header name",
    );
    expect_one(
        &with("Privacy, privacy"),
        7,
        29,
        "trunks[0].pass_headers[1]",
        "listed twice",
    );
    let c = ok(&with("P-Asserted-Identity, X-Custom"));
    let t = &c.trunks()[0];
    assert_eq!(t.pass_headers, ["p-asserted-identity", "x-custom"]);
    assert!(t.passes_header("X-CUSTOM"));
    assert!(!t.passes_header("Via"));
}

// ---------------------------------------------------------------- routes

#[test]
fn route_references_must_exist() {
    let yaml = BASE.replace(
        "    to_trunk: pbx\n",
        "    from_trunk: carrier\n    to_trunk: pbxx\n",
    );
    let ps = problems(&yaml);
    assert_eq!(ps.len(), 2, "{ps:#?}");
    assert_eq!(
        (ps[0].line, ps[0].column, ps[0].path.as_str()),
        (11, 17, "routes[0].from_trunk")
    );
    assert!(ps[0].message.contains("no trunk named `carrier`"));
    assert_eq!(
        (ps[1].line, ps[1].column, ps[1].path.as_str()),
        (12, 15, "routes[0].to_trunk")
    );
}

#[test]
fn route_count_and_names() {
    let yaml = BASE.replace(
        "routes:\n  - name: all\n    to_trunk: pbx\n",
        "routes: []\n",
    );
    expect_one(&yaml, 9, 9, "routes", "at least one route");
    let yaml = format!("{BASE}  - name: all\n    to_trunk: pbx\n");
    expect_one(
        &yaml,
        12,
        11,
        "routes[1].name",
        "duplicate route name `all`",
    );
}

#[test]
fn number_prefix_rules() {
    let with = |p: &str| {
        BASE.replace(
            "    to_trunk: pbx\n",
            &format!("    number_prefixes: [{p}]\n    to_trunk: pbx\n"),
        )
    };
    expect_one(
        &with("\"+49\", \"0x\""),
        11,
        30,
        "routes[0].number_prefixes[1]",
        "contains 'x'",
    );
    expect_one(
        &with("\"\""),
        11,
        23,
        "routes[0].number_prefixes[0]",
        "1..=32",
    );
    expect_one(
        &with(&format!("\"{}\"", "1".repeat(33))),
        11,
        23,
        "routes[0].number_prefixes[0]",
        "1..=32",
    );
    ok(&with("\"*#+0123456789\""));
}

#[test]
fn number_regex_compiled_at_load() {
    let with = |r: &str| {
        BASE.replace(
            "    to_trunk: pbx\n",
            &format!("    number_regex: {r}\n    to_trunk: pbx\n"),
        )
    };
    expect_one(
        &with("\"^(49\""),
        11,
        19,
        "routes[0].number_regex",
        "invalid regex: unclosed group",
    );
    expect_one(
        &with(&format!("\"{}\"", "a".repeat(1025))),
        11,
        19,
        "routes[0].number_regex",
        "1..=1024",
    );
    expect_one(
        &with("\"[0-9]{1000}{1000}\""),
        11,
        19,
        "routes[0].number_regex",
        "invalid regex",
    );
    assert!(
        ok(&with("\"^\\\\+49\"")).routes()[0]
            .number_regex
            .as_ref()
            .unwrap()
            .is_match("+4930")
    );
}

// ------------------------------------------------------------ collection

#[test]
fn all_semantic_problems_are_reported_in_file_order() {
    let yaml = format!(
        "sip:\n  max_forwards: 0\n{}",
        BASE.replace("zone: inside", "zone: nowhere")
            .replace("to_trunk: pbx", "to_trunk: nobody")
    );
    let e = load_str(&yaml, "many.yaml").unwrap_err();
    let ps = e.problems();
    let places: Vec<_> = ps.iter().map(|p| (p.line, p.path.as_str())).collect();
    assert_eq!(
        places,
        vec![
            (2, "sip.max_forwards"),
            (8, "trunks[0].zone"),
            (13, "routes[0].to_trunk")
        ]
    );
    let text = e.to_string();
    assert_eq!(text.lines().count(), 3);
    assert!(text.lines().all(|l| l.starts_with("many.yaml:")), "{text}");
    assert_eq!(e.field_path(), Some("sip.max_forwards"));
}

// --------------------------------------------------------------- lookups

#[test]
fn lookups_by_id_and_name() {
    let c = ok(&repo_file("quickstart.yaml"));
    let outside = c.zone_by_name("outside").unwrap();
    assert_eq!(outside.id, ZoneId(1));
    assert_eq!(c.zone(outside.id).unwrap().name, "outside");
    let carrier = c.trunk_by_name("carrier").unwrap();
    assert_eq!(c.trunk(carrier.id).unwrap().zone, outside.id);
    assert!(c.zone_by_name("Outside").is_none());
    assert!(c.trunk(TrunkId(99)).is_none());
    assert!(c.zone(ZoneId(99)).is_none());
    assert_eq!(
        carrier.members[1].socket_addr(),
        "127.0.0.21:5080".parse().unwrap()
    );
}

#[test]
fn trunk_for_source_most_specific_wins() {
    let yaml = THREE_TRUNKS
        .replace("127.0.1.0/24", "127.0.0.0/24")
        .replace("address: 127.0.0.30", "address: 127.0.0.8");
    // a owns 127.0.0.0/24 and 127.0.0.10; b's member .20 and c's .8 lie in it.
    let ps = problems(&yaml);
    assert!(!ps.is_empty(), "overlap must be an error");

    let c = ok(&THREE_TRUNKS.replace("127.0.1.0/24", "127.0.0.8/29"));
    let z = ZoneId(0);
    let ip = |s: &str| s.parse::<IpAddr>().unwrap();
    let a = c.trunk_by_name("a").unwrap().id;
    let b = c.trunk_by_name("b").unwrap().id;
    let t3 = c.trunk_by_name("c").unwrap().id;
    assert_eq!(c.trunk_for_source(z, ip("127.0.0.10")), Some(a));
    assert_eq!(c.trunk_for_source(z, ip("127.0.0.9")), Some(a));
    assert_eq!(c.trunk_for_source(z, ip("127.0.0.20")), Some(b));
    assert_eq!(c.trunk_for_source(z, ip("127.0.2.200")), Some(b));
    assert_eq!(c.trunk_for_source(z, ip("::1")), Some(b));
    assert_eq!(c.trunk_for_source(z, ip("::ffff:127.0.0.30")), Some(t3));
    assert_eq!(c.trunk_for_source(z, ip("127.0.0.66")), None);
    assert_eq!(c.trunk_for_source(ZoneId(1), ip("127.0.0.10")), None);
}

#[test]
fn trunk_for_source_prefers_longer_prefix_within_a_trunk() {
    // Same trunk, nested entries: any match is that trunk, and the host entry
    // wins over the network.
    let c = ok(&THREE_TRUNKS.replace("[127.0.1.0/24]", "[127.0.0.0/28, 127.0.0.8/30]"));
    let a = c.trunk_by_name("a").unwrap().id;
    let ip = |s: &str| s.parse::<IpAddr>().unwrap();
    assert_eq!(c.trunk_for_source(ZoneId(0), ip("127.0.0.9")), Some(a));
    assert_eq!(c.trunk_for_source(ZoneId(0), ip("127.0.0.1")), Some(a));
    assert_eq!(c.trunk_for_source(ZoneId(0), ip("127.0.0.16")), None);
}

/// Routes exercising order, trunk filters, prefixes and regexes.
const ROUTED: &str = "\
zones:
  - name: inside
    sip_address: 127.0.0.1
trunks:
  - name: pbx
    zone: inside
    members:
      - address: 127.0.0.10
  - name: carrier
    zone: inside
    members:
      - address: 127.0.0.20
  - name: backup
    zone: inside
    members:
      - address: 127.0.0.21
routes:
  - name: emergency
    number_prefixes: [\"112\", \"110\"]
    to_trunk: carrier
  - name: pbx-intl
    from_trunk: pbx
    number_regex: \"^00[1-9]\"
    to_trunk: backup
  - name: to-dids
    number_prefixes: [\"+4930123\"]
    number_regex: \"^\\\\+4930123[0-9]{2}$\"
    to_trunk: pbx
  - name: pbx-rest
    from_trunk: pbx
    to_trunk: carrier
";

#[test]
fn route_for_first_match_in_file_order() {
    let c = ok(ROUTED);
    let id = |n: &str| c.trunk_by_name(n).unwrap().id;
    let name = |from: &str, num: &str| c.route_for(id(from), num).map(|r| r.name.as_str());
    assert_eq!(name("pbx", "112"), Some("emergency"));
    assert_eq!(name("carrier", "1120"), Some("emergency"));
    assert_eq!(name("pbx", "0044123"), Some("pbx-intl"));
    assert_eq!(name("carrier", "0044123"), None);
    assert_eq!(name("carrier", "+493012345"), Some("to-dids"));
    assert_eq!(
        name("carrier", "+4930123456"),
        None,
        "regex anchors to two digits"
    );
    assert_eq!(
        name("pbx", "+493012345"),
        Some("to-dids"),
        "any-trunk route before pbx-rest"
    );
    assert_eq!(name("pbx", "+4940"), Some("pbx-rest"));
    assert_eq!(name("backup", "+4940"), None);
    assert_eq!(c.route_for(id("pbx"), "5").unwrap().to_trunk, id("carrier"));
    // An id this configuration does not know only gets the any-trunk routes.
    assert_eq!(
        c.route_for(TrunkId(500), "112").map(|r| r.name.as_str()),
        Some("emergency")
    );
    assert!(c.route_for(TrunkId(500), "0044").is_none());
}

// ---------------------------------------------------------------- reload

#[test]
fn reload_allows_trunks_routes_timeouts_level() {
    let old = ok(&repo_file("quickstart.yaml"));
    let text = repo_file("quickstart.yaml")
        .replace("port: 5070", "port: 5071")
        .replace("\"+4930123\"", "\"+4930999\"")
        .replace("level: info", "level: debug")
        .replace("node:\n", "sip:\n  t1_ms: 250\n  member_timeout_ms: 1000\n  no_answer_timeout_seconds: 60\nshutdown:\n  grace_seconds: 5\nnode:\n");
    let new = ok(&text);
    assert_eq!(old.reload_check(&new), Ok(()));
    assert_eq!(old.reload_check(&old), Ok(()));
}

#[test]
fn reload_lists_every_change_that_needs_a_restart() {
    let old = ok(&repo_file("quickstart.yaml"));
    let text = repo_file("quickstart.yaml")
        .replace("sip_address: 127.0.0.2", "sip_address: 127.0.0.3")
        .replace("port_min: 30000", "port_min: 30002")
        .replace("format: text", "format: json")
        .replace("node:\n", "sip:\n  max_udp_message_bytes: 9000\nnode:\n");
    let new = ok(&text);
    let changes = old.reload_check(&new).unwrap_err();
    assert_eq!(
        changes,
        vec![
            "sip.max_udp_message_bytes: 16384 -> 9000 (needs a restart)",
            "zones[1].sip_address: 127.0.0.2 -> 127.0.0.3 (needs a restart)",
            "zones[1].media.port_min: 30000 -> 30002 (needs a restart)",
            "logging.format: Text -> Json (needs a restart)",
        ]
    );
    let renamed = ok(&repo_file("quickstart.yaml").replace("outside", "dmz"));
    let changes = old.reload_check(&renamed).unwrap_err();
    assert_eq!(
        changes,
        vec!["zones: [\"inside\", \"outside\"] -> [\"inside\", \"dmz\"] (needs a restart)"]
    );
    let tcp_only = ok(&repo_file("quickstart.yaml")
        .replace(
            "    udp_port: 5060\n    tcp_port: 5060\n    media:\n      address: 127.0.0.1",
            "    transports: [tcp]\n    media:\n      address: 127.0.0.1",
        )
        .replace(
            "transport: udp\n  - name: carrier",
            "transport: tcp\n  - name: carrier",
        ));
    assert_eq!(
        old.reload_check(&tcp_only).unwrap_err(),
        vec!["zones[0].transports: [Udp, Tcp] -> [Tcp] (needs a restart)"]
    );
}

// ------------------------------------------------------------------- media

#[test]
fn media_section_and_trunk_policy_load() {
    let yaml = BASE.replace(
        "      - address: 127.0.0.10\n",
        "      - address: 127.0.0.10\n    media:\n      srtp: required\n      rtcp_mux: off\n      codecs: [PCMA, g722, opus]\n      latching: strict\n",
    );
    let yaml = format!(
        "{yaml}media:\n  anchor: false\n  relay_threads: 3\n  timeout_seconds: 20\n  hold_timeout_seconds: 90\n  dscp_rtp: 34\n  kernel_forwarding: auto\n  kernel_forwarding_after_ms: 250\n"
    );
    let c = ok(&yaml);
    let m = c.media();
    assert!(!m.anchor);
    assert_eq!(m.kernel_forwarding, NftMode::Auto);
    assert_eq!(m.kernel_forwarding_after, Duration::from_millis(250));
    assert_eq!(m.relay_threads, 3);
    assert_eq!(m.timeout, Duration::from_secs(20));
    assert_eq!(m.hold_timeout, Duration::from_secs(90));
    assert_eq!(m.dscp_rtp, 34);
    let t = &c.trunks()[0].media;
    assert_eq!(t.srtp, SrtpPolicy::Required);
    assert_eq!(t.rtcp_mux, RtcpMuxPolicy::Off);
    assert_eq!(t.latching, Latching::Strict);
    assert_eq!(t.codecs, ["PCMA", "g722", "opus"]);
}

#[test]
fn media_values_are_checked_with_their_location() {
    expect_one(
        &format!("{BASE}media:\n  timeout_seconds: 0\n"),
        13,
        20,
        "media.timeout_seconds",
        "0 is out of range: must be 1..=86400",
    );
    expect_one(
        &format!("{BASE}media:\n  dscp_rtp: 64\n"),
        13,
        13,
        "media.dscp_rtp",
        "out of range",
    );
    expect_one(
        &format!("{BASE}media:\n  kernel_forwarding: yes\n"),
        13,
        22,
        "media.kernel_forwarding",
        "off",
    );
    let with = |m: &str| {
        BASE.replace(
            "      - address: 127.0.0.10\n",
            &format!("      - address: 127.0.0.10\n    media:\n{m}"),
        )
    };
    expect_one(
        &with("      codecs: [PCMA, pcma]\n"),
        10,
        22,
        "trunks[0].media.codecs[1]",
        "pcma is listed twice",
    );
    expect_one(
        &with("      codecs: [\"PC MA\"]\n"),
        10,
        16,
        "trunks[0].media.codecs[0]",
        "contains ' '",
    );
    let ps = problems(&with("      srtp: maybe\n"));
    assert_eq!(ps.len(), 1);
    assert_eq!(
        (ps[0].line, ps[0].path.as_str()),
        (10, "trunks[0].media.srtp")
    );
    assert!(ps[0].message.contains("unknown variant"), "{ps:?}");
    let ps = problems(&with("      rtcpmux: on\n"));
    assert!(ps[0].message.contains("unknown field `rtcpmux`"), "{ps:?}");
}

#[test]
fn media_section_needs_a_restart_but_trunk_policy_reloads() {
    let old = ok(BASE);
    let new = ok(&format!("{BASE}media:\n  timeout_seconds: 30\n"));
    let err = old.reload_check(&new).unwrap_err();
    assert_eq!(err.len(), 1);
    assert!(err[0].starts_with("media.timeout_seconds: "), "{err:?}");
    let new = ok(&BASE.replace(
        "      - address: 127.0.0.10\n",
        "      - address: 127.0.0.10\n    media:\n      srtp: optional\n",
    ));
    assert!(old.reload_check(&new).is_ok());
}

// ------------------------------------------------- reference completeness

/// A generic YAML tree, to walk reference.yaml and write modified copies.
#[derive(Debug, Clone)]
enum Node {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Seq(Vec<Node>),
    Map(Vec<(String, Node)>),
}

impl<'de> serde::Deserialize<'de> for Node {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Node;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("any YAML node")
            }
            fn visit_unit<E>(self) -> Result<Node, E> {
                Ok(Node::Null)
            }
            fn visit_none<E>(self) -> Result<Node, E> {
                Ok(Node::Null)
            }
            fn visit_bool<E>(self, v: bool) -> Result<Node, E> {
                Ok(Node::Bool(v))
            }
            fn visit_i64<E>(self, v: i64) -> Result<Node, E> {
                Ok(Node::Int(v))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Node, E> {
                i64::try_from(v).map(Node::Int).map_err(E::custom)
            }
            fn visit_f64<E>(self, v: f64) -> Result<Node, E> {
                Ok(Node::Float(v))
            }
            fn visit_str<E>(self, v: &str) -> Result<Node, E> {
                Ok(Node::Str(v.to_owned()))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut a: A) -> Result<Node, A::Error> {
                let mut out = Vec::new();
                while let Some(n) = a.next_element()? {
                    out.push(n);
                }
                Ok(Node::Seq(out))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut a: A) -> Result<Node, A::Error> {
                let mut out = Vec::new();
                while let Some((k, v)) = a.next_entry::<String, Node>()? {
                    out.push((k, v));
                }
                Ok(Node::Map(out))
            }
        }
        d.deserialize_any(V)
    }
}

impl serde::Serialize for Node {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::{SerializeMap, SerializeSeq};
        match self {
            Node::Null => s.serialize_unit(),
            Node::Bool(b) => s.serialize_bool(*b),
            Node::Int(i) => s.serialize_i64(*i),
            Node::Float(f) => s.serialize_f64(*f),
            Node::Str(v) => s.serialize_str(v),
            Node::Seq(items) => {
                let mut seq = s.serialize_seq(Some(items.len()))?;
                for i in items {
                    seq.serialize_element(i)?;
                }
                seq.end()
            }
            Node::Map(entries) => {
                let mut map = s.serialize_map(Some(entries.len()))?;
                for (k, v) in entries {
                    map.serialize_entry(k, v)?;
                }
                map.end()
            }
        }
    }
}

/// Every mapping in `node`, with its path (`trunks[0].members[0]`).
fn mappings(node: &Node, path: String, out: &mut Vec<(String, Vec<String>)>) {
    match node {
        Node::Map(entries) => {
            out.push((
                path.clone(),
                entries.iter().map(|(k, _)| k.clone()).collect(),
            ));
            for (k, v) in entries {
                let p = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                mappings(v, p, out);
            }
        }
        Node::Seq(items) => {
            for (i, v) in items.iter().enumerate() {
                mappings(v, format!("{path}[{i}]"), out);
            }
        }
        _ => {}
    }
}

/// Adds a key named `probe` to the mapping at `path` in `node`.
fn insert_probe(node: &mut Node, path: &str) {
    let mut cur = node;
    for step in path.split('.').filter(|s| !s.is_empty()) {
        let (key, indices) = match step.find('[') {
            Some(i) => (&step[..i], &step[i..]),
            None => (step, ""),
        };
        if let Node::Map(entries) = cur {
            cur = &mut entries.iter_mut().find(|(k, _)| k == key).unwrap().1;
        }
        for idx in indices.split(['[', ']']).filter(|s| !s.is_empty()) {
            if let Node::Seq(items) = cur {
                cur = &mut items[idx.parse::<usize>().unwrap()];
            }
        }
    }
    if let Node::Map(entries) = cur {
        entries.push(("zz_probe".to_owned(), Node::Null));
    }
}

/// The raw schema is the source of truth: for every mapping in
/// reference.yaml, add an unknown key and let serde's `deny_unknown_fields`
/// list the fields that struct has. Each must be written in the reference.
/// Nested structs are reached because their parent's keys must be present.
#[test]
fn reference_documents_every_schema_field() {
    let text = repo_file("reference.yaml");
    // Untyped, `on`/`off` read as YAML 1.1 booleans and would be written back
    // as true/false, which the typed enums (srtp, rtcp_mux) reject; quote them.
    let text = text
        .replace(": off ", ": \"off\" ")
        .replace(": on ", ": \"on\" ");
    let tree: Node = serde_saphyr::from_str(&text).unwrap();
    let mut maps = Vec::new();
    mappings(&tree, String::new(), &mut maps);
    assert!(maps.len() >= 10, "walked too little: {maps:?}");
    // Keys written in any element of a list count for all of its elements.
    let shape = |p: &str| {
        let mut out = String::new();
        let mut in_index = false;
        for c in p.chars() {
            match c {
                '[' => {
                    in_index = true;
                    out.push_str("[]");
                }
                ']' => in_index = false,
                _ if in_index => {}
                _ => out.push(c),
            }
        }
        out
    };
    let mut written: std::collections::HashMap<String, Vec<String>> = Default::default();
    for (path, keys) in &maps {
        written
            .entry(shape(path))
            .or_default()
            .extend(keys.iter().cloned());
    }
    let mut missing = std::collections::BTreeSet::new();
    let mut checked = 0;
    for (path, _) in &maps {
        let keys = &written[&shape(path)];
        let mut probed = tree.clone();
        insert_probe(&mut probed, path);
        let yaml = serde_saphyr::to_string(&probed).unwrap();
        let err = serde_saphyr::from_str::<raw::RawConfig>(&yaml).expect_err(&yaml);
        let serde_saphyr::Error::SerdeUnknownField {
            field, expected, ..
        } = err.without_snippet()
        else {
            panic!("probing {path}: unexpected error {err}\n{yaml}");
        };
        assert_eq!(field, "zz_probe");
        for f in expected {
            if !keys.iter().any(|k| k == f) {
                missing.insert(if path.is_empty() {
                    (*f).to_owned()
                } else {
                    format!("{}.{f}", shape(path))
                });
            }
        }
        checked += 1;
    }
    assert!(
        missing.is_empty(),
        "configs/reference.yaml lacks: {missing:?}"
    );
    // Top level, node, sip, 2 zones + media, 2 trunks + 4 members + health +
    // 2 media + their normalization, 2 routes, media, shutdown, logging, dns
    // (16 + 3 + 2 + 3), the normalization section: privacy, profiles, rules,
    // matches, actions and their arguments (52); guard + trusted,
    // default_limits, zone_limits[0], scanners,
    // kernel_meter; fraud + business_hours, nights, rules[0] + warning,
    // critical; alerts (14); edge: zone cac, trunk keepalive/cac/auth/
    // registration, registrar + a user, nat + its keepalive, call_admission (10);
    // admin (1).
    assert_eq!(checked, 100);
}

/// Every key line in reference.yaml carries a comment, on the line or just above.
#[test]
fn reference_comments_every_key() {
    let text = repo_file("reference.yaml");
    let mut prev = "";
    let mut bare = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let t = line.trim_start().trim_start_matches("- ");
        let is_key = t.split_once(':').is_some_and(|(k, _)| {
            !k.is_empty()
                && k.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        }) && !t.starts_with('#');
        if is_key && !line.contains(" # ") && !prev.trim_start().starts_with('#') {
            bare.push(format!("{}: {line}", i + 1));
        }
        prev = line;
    }
    assert!(
        bare.is_empty(),
        "reference.yaml keys without a comment:\n{}",
        bare.join("\n")
    );
}

// ------------------------------------------------- DNS members, health, dns

/// BASE with its member replaced by `member` (lines indented under `members:`).
fn with_member(member: &str) -> String {
    BASE.replace("      - address: 127.0.0.10\n", member)
}

#[test]
fn host_members_are_dns_names_resolved_later() {
    let c = ok(&with_member(
        "      - host: SIP.Carrier.Example.\n      - address: 127.0.0.10\n      - host: b.carrier.example\n        port: 5070\n      - host: c.carrier.example\n        transport: tcp\n",
    ));
    let t = &c.trunks()[0];
    // Only IP members in `members`; every member, in order, in `destinations`.
    assert_eq!(t.members.len(), 1);
    assert!(t.has_dns_members());
    let dns: Vec<&DnsMember> = t
        .destinations
        .iter()
        .filter_map(|d| match d {
            Destination::Dns(d) => Some(d),
            Destination::Ip(_) => None,
        })
        .collect();
    assert_eq!(dns.len(), 3);
    assert!(matches!(t.destinations[1], Destination::Ip(_)));
    assert_eq!(dns[0].host, "sip.carrier.example");
    assert_eq!((dns[0].port, dns[0].transport), (None, None));
    assert_eq!(dns[0].uri_host(), "sip.carrier.example");
    assert_eq!((dns[1].port, dns[1].transport), (Some(5070), None));
    assert_eq!(dns[1].uri_host(), "b.carrier.example:5070");
    assert_eq!(dns[2].transport, Some(Transport::Tcp));
    // Hosts are not source addresses: only the IP member is.
    assert_eq!(
        c.trunk_for_source(ZoneId(0), "127.0.0.10".parse().unwrap()),
        Some(TrunkId(0))
    );
}

#[test]
fn host_member_rules() {
    expect_one(
        &with_member("      - host: 127.0.0.10\n"),
        8,
        15,
        "trunks[0].members[0].host",
        "is an IP address: write it as `address: 127.0.0.10`",
    );
    for bad in ["-a.example", "a..example", "a_b.example", "a.example.123"] {
        expect_one(
            &with_member(&format!("      - host: {bad}\n")),
            8,
            15,
            "trunks[0].members[0].host",
            "is not a DNS name",
        );
    }
    expect_one(
        &with_member("      - host: a.example\n        address: 127.0.0.10\n"),
        8,
        15,
        "trunks[0].members[0].host",
        "not both",
    );
    expect_one(
        &with_member("      - port: 5060\n"),
        8,
        9,
        "trunks[0].members[0]",
        "`address` (an IP) or `host` (a DNS name) is required",
    );
    expect_one(
        &with_member("      - host: a.example\n      - host: A.example.\n"),
        9,
        9,
        "trunks[0].members[1]",
        "host a.example is listed twice",
    );
    let tls_zone = BASE.replace(
        "    sip_address: 127.0.0.1\n",
        "    sip_address: 127.0.0.1\n    transports: [udp]\n",
    );
    expect_one(
        &tls_zone.replace(
            "      - address: 127.0.0.10\n",
            "      - host: a.example\n        transport: tcp\n      - address: 127.0.0.10\n",
        ),
        10,
        20,
        "trunks[0].members[0].transport",
        "tcp is not enabled on zone `inside`",
    );
}

#[test]
fn health_defaults_and_rules() {
    let c = ok(BASE);
    let h = c.trunks()[0].health;
    assert_eq!(h.probe, Probe::Off);
    assert_eq!(
        (h.interval, h.timeout, h.down_after, h.up_after),
        (Duration::from_secs(30), Duration::from_millis(2000), 3, 2)
    );
    let with = |section: &str| {
        BASE.replace(
            "      - address: 127.0.0.10\n",
            &format!("      - address: 127.0.0.10\n    health:\n{section}"),
        )
    };
    let h = ok(&with("      interval_seconds: 5\n")).trunks()[0].health;
    assert_eq!(
        h.probe,
        Probe::Options,
        "the section alone turns probing on"
    );
    assert_eq!(h.interval, Duration::from_secs(5));
    let h = ok(&with("      probe: off\n")).trunks()[0].health;
    assert_eq!(h.probe, Probe::Off);
    expect_one(
        &with("      interval_seconds: 1\n      timeout_ms: 1500\n"),
        11,
        19,
        "trunks[0].health.timeout_ms",
        "longer than interval_seconds",
    );
    expect_one(
        &with("      down_after: 0\n"),
        10,
        19,
        "trunks[0].health.down_after",
        "out of range",
    );
    let ps = problems(&with("      probe: ping\n"));
    assert_eq!(ps.len(), 1, "{ps:?}");
    assert!(ps[0].path.contains("probe"), "{ps:?}");
}

#[test]
fn dns_section() {
    let d = ok(BASE);
    let dns = d.dns();
    assert!(dns.servers.is_empty());
    assert_eq!(
        (dns.timeout, dns.min_ttl, dns.max_ttl, dns.negative_ttl),
        (
            Duration::from_millis(2000),
            Duration::from_secs(5),
            Duration::from_secs(3600),
            Duration::from_secs(30)
        )
    );
    let c = ok(&format!(
        "dns:\n  servers: [\"127.0.0.53\", \"127.0.0.54:5353\", \"[::1]:53\"]\n  min_ttl_seconds: 1\n{BASE}"
    ));
    let s: Vec<String> = c.dns().servers.iter().map(|s| s.to_string()).collect();
    assert_eq!(s, ["127.0.0.53:53", "127.0.0.54:5353", "[::1]:53"]);
    expect_one(
        &format!("dns:\n  servers: [\"dns.example\"]\n{BASE}"),
        2,
        13,
        "dns.servers[0]",
        "is not IP or IP:PORT",
    );
    expect_one(
        &format!("dns:\n  min_ttl_seconds: 60\n  max_ttl_seconds: 10\n{BASE}"),
        3,
        20,
        "dns.max_ttl_seconds",
        "below min_ttl_seconds",
    );
}

#[test]
fn reference_dns_member_and_health() {
    let r = ok(&repo_file("reference.yaml"));
    let carrier = &r.trunks()[1];
    assert!(matches!(
        &carrier.destinations[2],
        Destination::Dns(d) if d.host == "sip.carrier.example" && d.transport == Some(Transport::Udp)
    ));
    assert_eq!(carrier.health.probe, Probe::Options);
    let d = ok(BASE);
    assert_eq!(
        (carrier.health.interval, carrier.health.timeout),
        (d.trunks()[0].health.interval, d.trunks()[0].health.timeout)
    );
    assert_eq!(r.dns(), d.dns());
}
// ------------------------------------------------------------------- guard

#[test]
fn guard_sections_are_validated_with_locations() {
    let c = ok(BASE);
    assert_eq!(c.guard().mode, GuardMode::Enforce);
    assert_eq!(c.guard().nftables, NftMode::Auto);
    assert!(c.fraud().rules.is_empty());
    expect_one(
        &format!("{BASE}guard:\n  mode: loud\n"),
        13,
        9,
        "guard.mode",
        "unknown value `loud`",
    );
    // Call admission control lives in trunks[].cac and zones[].cac only.
    expect_one(
        &format!("{BASE}guard:\n  trunk_limits:\n    - trunk: carrier\n"),
        13,
        3,
        "guard.trunk_limits",
        "unknown field `trunk_limits`",
    );
    expect_one(
        &format!("{BASE}guard:\n  allow: [10.0.0.0/8]\n  deny: [10.1.0.0/16]\n"),
        14,
        10,
        "guard.deny[0]",
        "overlaps the allow-list",
    );
    expect_one(
        &format!("{BASE}fraud:\n  timezone: Mars/Olympus\n"),
        13,
        13,
        "fraud.timezone",
        "not an IANA time zone",
    );
    expect_one(
        &format!(
            "{BASE}fraud:\n  rules:\n    - {{name: a, kind: calls_per_minute, warning: {{threshold: 9}}, critical: {{threshold: 3}}}}\n"
        ),
        14,
        88,
        "fraud.rules[0].critical.threshold",
        "below the warning threshold",
    );
    expect_one(
        &format!(
            "{BASE}fraud:\n  rules:\n    - {{name: a, kind: walking, warning: {{threshold: 9}}}}\n"
        ),
        14,
        23,
        "fraud.rules[0].kind",
        "unknown value `walking`",
    );
    expect_one(
        &format!("{BASE}fraud:\n  high_risk_prefixes: [\"882\"]\n"),
        13,
        24,
        "fraud.high_risk_prefixes[0]",
        "`+` followed by",
    );
}

// ---------------------------------------------------------------- admin

#[test]
fn admin_is_off_unless_listen_is_given() {
    assert_eq!(ok(BASE).admin().listen, None);
    let c = ok(&format!("admin:\n  listen: 127.0.0.1:9091\n{BASE}"));
    assert_eq!(c.admin().listen, Some("127.0.0.1:9091".parse().unwrap()));
    let c = ok(&format!("admin:\n  listen: \"[::1]:9091\"\n{BASE}"));
    assert_eq!(c.admin().listen, Some("[::1]:9091".parse().unwrap()));
}

#[test]
fn admin_listen_must_be_ip_port() {
    for bad in [
        "127.0.0.1",
        "localhost:9091",
        "127.0.0.1:0",
        "127.0.0.1:70000",
    ] {
        expect_one(
            &format!("admin:\n  listen: \"{bad}\"\n{BASE}"),
            2,
            11,
            "admin.listen",
            "is not IP:PORT",
        );
    }
}

#[test]
fn admin_off_loopback_needs_an_explicit_yes() {
    expect_one(
        &format!("admin:\n  listen: 0.0.0.0:9091\n{BASE}"),
        2,
        11,
        "admin.listen",
        "no authentication",
    );
    let c = ok(&format!(
        "admin:\n  listen: 0.0.0.0:9091\n  allow_non_loopback: true\n{BASE}"
    ));
    assert_eq!(c.admin().listen, Some("0.0.0.0:9091".parse().unwrap()));
}

#[test]
fn admin_unknown_field_is_refused() {
    let e = load_str(&format!("admin:\n  port: 9091\n{BASE}"), "t.yaml").unwrap_err();
    assert!(e.to_string().contains("port"), "{e}");
}

#[test]
fn admin_listen_change_needs_a_restart() {
    let a = ok(&format!("admin:\n  listen: 127.0.0.1:9091\n{BASE}"));
    let b = ok(&format!("admin:\n  listen: 127.0.0.1:9092\n{BASE}"));
    let changes = a.reload_check(&b).unwrap_err();
    assert!(
        changes.iter().any(|c| c.starts_with("admin.listen")),
        "{changes:?}"
    );
}
