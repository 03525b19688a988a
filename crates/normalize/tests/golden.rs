//! Golden tests: `tests/golden/<case>/` holds `config.yaml` (its first line
//! says `# golden: trunk=NAME direction=in|out [source_trunk=NAME]`), `in.sip`,
//! and the expected `out.sip` (byte-exact) and `fired.txt`. Every case runs
//! through the library here, and through the built binary in
//! `crates/palisade/tests/normalize_cli.rs`.
//!
//! `BLESS=1 cargo test -p palisade-normalize --test golden` rewrites the
//! expected files (review the diff before committing).

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::sync::Arc;

use palisade_config::normalization::RuleDirection;

fn golden_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden")
}

struct Case {
    name: String,
    dir: PathBuf,
    trunk: String,
    direction: RuleDirection,
    source_trunk: Option<String>,
}

fn cases() -> Vec<Case> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(golden_dir()).unwrap() {
        let dir = entry.unwrap().path();
        if !dir.is_dir() {
            continue;
        }
        let cfg = std::fs::read_to_string(dir.join("config.yaml")).unwrap();
        let first = cfg.lines().next().unwrap();
        let spec = first
            .strip_prefix("# golden:")
            .unwrap_or_else(|| panic!("{}: first line must be `# golden: ...`", dir.display()));
        let (mut trunk, mut direction, mut source_trunk) = (None, None, None);
        for kv in spec.split_whitespace() {
            match kv.split_once('=').unwrap() {
                ("trunk", v) => trunk = Some(v.to_owned()),
                ("direction", "in") => direction = Some(RuleDirection::In),
                ("direction", "out") => direction = Some(RuleDirection::Out),
                ("source_trunk", v) => source_trunk = Some(v.to_owned()),
                other => panic!("{}: unknown {other:?}", dir.display()),
            }
        }
        out.push(Case {
            name: dir.file_name().unwrap().to_string_lossy().into_owned(),
            trunk: trunk.unwrap(),
            direction: direction.unwrap(),
            source_trunk,
            dir,
        });
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

#[test]
fn every_golden_case_matches() {
    let bless = std::env::var_os("BLESS").is_some();
    let cases = cases();
    assert!(
        cases.len() >= 20,
        "golden cases went missing: {}",
        cases.len()
    );
    let mut failures = Vec::new();
    for c in &cases {
        let cfg = palisade_config::load(&c.dir.join("config.yaml"))
            .unwrap_or_else(|e| panic!("{}: {e}", c.name));
        let input = std::fs::read(c.dir.join("in.sip")).unwrap();
        let run = palisade_normalize::dry_run(
            Arc::new(cfg),
            &c.trunk,
            c.direction,
            c.source_trunk.as_deref(),
            &input,
        )
        .unwrap_or_else(|e| panic!("{}: {e}", c.name));
        let fired = run.fired_text();
        if bless {
            std::fs::write(c.dir.join("out.sip"), &run.output).unwrap();
            std::fs::write(c.dir.join("fired.txt"), &fired).unwrap();
            continue;
        }
        let want_out = std::fs::read(c.dir.join("out.sip")).unwrap();
        let want_fired = std::fs::read_to_string(c.dir.join("fired.txt")).unwrap();
        if run.output[..] != want_out[..] {
            failures.push(format!(
                "{}: out.sip differs:\n{}",
                c.name,
                palisade_normalize::unified_diff(
                    &String::from_utf8_lossy(&want_out),
                    &String::from_utf8_lossy(&run.output)
                )
            ));
        }
        if fired != want_fired {
            failures.push(format!(
                "{}: fired.txt differs:\n--- want\n{want_fired}--- got\n{fired}",
                c.name
            ));
        }
        // The result is a SIP message the engine would accept.
        palisade_sip::Message::parse(run.output.clone(), &palisade_sip::ParseLimits::default())
            .unwrap_or_else(|e| panic!("{}: output does not parse: {e}", c.name));
        assert!(
            run.output.windows(2).filter(|w| w == b"\r\n").count()
                == run.output.iter().filter(|&&b| b == b'\n').count(),
            "{}: output has bare LF line ends",
            c.name
        );
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
