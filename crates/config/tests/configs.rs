//! The shipped configurations, the broken examples in `tests/bad/`, and a
//! property test that the loader never panics — all through the public API.

// A test file: helpers outside #[test] fns may unwrap too.
#![allow(clippy::unwrap_used)]

use std::fs;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use palisade_config::{ConfigError, TrunkId, ZoneId, load, load_str};
use proptest::prelude::*;

fn repo_path(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(rel)
}

#[test]
fn quickstart_loads_and_routes_like_the_design_notes() {
    let c = load(&repo_path("configs/quickstart.yaml")).unwrap();
    let inside = c.zone_by_name("inside").unwrap().id;
    let outside = c.zone_by_name("outside").unwrap().id;
    let ip = |s: &str| s.parse::<IpAddr>().unwrap();
    let pbx = c.trunk_for_source(inside, ip("127.0.0.10")).unwrap();
    let carrier = c.trunk_for_source(outside, ip("127.0.0.21")).unwrap();
    assert_eq!(c.trunk(pbx).unwrap().name, "pbx");
    assert_eq!(c.trunk(carrier).unwrap().name, "carrier");
    // Untrusted sources and the wrong zone identify no trunk.
    assert_eq!(c.trunk_for_source(outside, ip("127.0.0.66")), None);
    assert_eq!(c.trunk_for_source(outside, ip("127.0.0.10")), None);
    // Anything the PBX dials goes to the carrier; the carrier reaches DIDs +4930123*.
    assert_eq!(c.route_for(pbx, "+15551234").unwrap().to_trunk, carrier);
    assert_eq!(c.route_for(carrier, "+493012345").unwrap().to_trunk, pbx);
    assert!(c.route_for(carrier, "+4940999").is_none());
    let members: Vec<_> = c
        .trunk(carrier)
        .unwrap()
        .members
        .iter()
        .map(|m| m.socket_addr())
        .collect();
    assert_eq!(
        members,
        [
            "127.0.0.20:5080".parse().unwrap(),
            "127.0.0.21:5080".parse().unwrap()
        ]
    );
}

#[test]
fn reference_loads() {
    let c = load(&repo_path("configs/reference.yaml")).unwrap();
    assert_eq!(c.zones().len(), 2);
    assert_eq!(c.zone(ZoneId(1)).unwrap().media.port_min, 30000);
    assert_eq!(c.trunk(TrunkId(0)).unwrap().source_addresses.len(), 1);
}

#[test]
fn unreadable_file_is_file_colon_message() {
    let e = load(Path::new("/nonexistent/palisade.yaml")).unwrap_err();
    assert!(matches!(e, ConfigError::Read { .. }));
    let text = e.to_string();
    assert!(text.starts_with("/nonexistent/palisade.yaml: "), "{text}");
    assert_eq!(e.line(), None);
}

#[test]
fn errors_name_the_file_as_given() {
    let e = load(&repo_path("crates/config/tests/bad/port-overflow.yaml")).unwrap_err();
    let text = e.to_string();
    assert!(text.ends_with("bad/port-overflow.yaml:12:15: trunks[0].members[1].port: invalid value: integer 70000, expected u16"), "{text}");
}

/// Each file in tests/bad/ starts with `# expect: LINE:COLUMN [PATH] [| MESSAGE PART]`
/// describing the first problem the loader must report.
#[test]
fn bad_configs_fail_where_their_first_line_says() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/bad");
    let mut files: Vec<_> = fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    files.sort();
    assert!(files.len() >= 10, "too few bad configs: {files:?}");
    let mut failures = Vec::new();
    for path in &files {
        let text = fs::read_to_string(path).unwrap();
        let spec = text
            .lines()
            .next()
            .and_then(|l| l.strip_prefix("# expect: "))
            .unwrap_or_else(|| {
                panic!(
                    "{}: first line must be `# expect: L:C path`",
                    path.display()
                )
            });
        let (place, msg) = spec
            .split_once(" | ")
            .map_or((spec, None), |(p, m)| (p, Some(m)));
        let (pos, want_path) = place.split_once(' ').unwrap_or((place, ""));
        let (line, col) = pos.split_once(':').unwrap();
        let want = (
            line.parse::<u64>().unwrap(),
            col.parse::<u64>().unwrap(),
            want_path.trim(),
        );
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        match load_str(&text, &name) {
            Ok(_) => failures.push(format!("{name}: loaded, expected an error at {spec}")),
            Err(e) => {
                let p = &e.problems()[0];
                let got = (p.line, p.column, p.path.as_str());
                if got != want || msg.is_some_and(|m| !p.message.contains(m)) {
                    failures.push(format!("{name}: expected {spec}\n  got {e}"));
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Byte ranges of every run of digits in `text`.
fn number_spans(text: &str) -> Vec<(usize, usize)> {
    regex::Regex::new("[0-9]+")
        .unwrap()
        .find_iter(text)
        .map(|m| (m.start(), m.end()))
        .collect()
}

fn replacement() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<u64>().prop_map(|v| v.to_string()),
        any::<i64>().prop_map(|v| v.to_string()),
        (0u32..70_000).prop_map(|v| v.to_string()),
        Just("0".to_owned()),
        Just("65535".to_owned()),
        Just("65536".to_owned()),
        Just("340282366920938463463374607431768211456".to_owned()),
        Just("1.5".to_owned()),
        Just("1e9".to_owned()),
        Just("0x1F".to_owned()),
        Just("".to_owned()),
    ]
}

fn exercise(c: &palisade_config::Config, original: &palisade_config::Config) {
    let _ = original.reload_check(c);
    let _ = c.reload_check(original);
    for z in c.zones() {
        let _ = c.trunk_for_source(z.id, "127.0.0.10".parse().unwrap());
        let _ = c.trunk_for_source(z.id, "::ffff:127.0.0.20".parse().unwrap());
    }
    for t in c.trunks() {
        let _ = c.route_for(t.id, "+493012345");
        let _ = c.route_for(t.id, "");
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// Numbers in quickstart (ports, addresses' octets, ranges) replaced by
    /// anything: the loader returns Ok or Err, never panics, and what it
    /// accepts is usable.
    #[test]
    fn mutated_numbers_never_panic(
        picks in proptest::collection::vec((any::<proptest::sample::Index>(), replacement()), 1..8)
    ) {
        let text = fs::read_to_string(repo_path("configs/quickstart.yaml")).unwrap();
        let original = load_str(&text, "quickstart.yaml").unwrap();
        let spans = number_spans(&text);
        let mut edits: Vec<(usize, usize, String)> = picks
            .into_iter()
            .map(|(i, s)| {
                let (a, b) = spans[i.index(spans.len())];
                (a, b, s)
            })
            .collect();
        edits.sort_by_key(|e| std::cmp::Reverse(e.0));
        edits.dedup_by_key(|e| e.0);
        let mut mutated = text.clone();
        for (a, b, s) in edits {
            mutated.replace_range(a..b, &s);
        }
        match load_str(&mutated, "mutated.yaml") {
            Ok(c) => exercise(&c, &original),
            Err(e) => {
                prop_assert!(!e.problems().is_empty());
                prop_assert!(e.to_string().starts_with("mutated.yaml:"));
            }
        }
    }

    /// Dropping any one line of reference.yaml never panics the loader either.
    #[test]
    fn dropped_lines_never_panic(i in any::<proptest::sample::Index>()) {
        let text = fs::read_to_string(repo_path("configs/reference.yaml")).unwrap();
        let original = load_str(&text, "reference.yaml").unwrap();
        let lines: Vec<&str> = text.lines().collect();
        let drop = i.index(lines.len());
        let mutated: String = lines.iter().enumerate().filter(|(n, _)| *n != drop).map(|(_, l)| format!("{l}\n")).collect();
        if let Ok(c) = load_str(&mutated, "dropped.yaml") {
            exercise(&c, &original);
        }
    }
}
