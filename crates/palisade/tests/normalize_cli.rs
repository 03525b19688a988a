//! `palisade normalize`, the built binary: every golden case of
//! `crates/normalize/tests/golden/` gives byte-for-byte the expected message
//! (text and JSON output, file and standard input), and the exit codes: 2
//! for a bad config (with FILE:LINE:COLUMN), 2 for an unknown trunk, 4 for a
//! message that does not parse (with the byte offset).

#![allow(clippy::unwrap_used)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

const BIN: &str = env!("CARGO_BIN_EXE_palisade");

fn golden_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../normalize/tests/golden")
}

fn test_dir(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("palisade-normalize")
        .join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn run(args: &[&str], stdin: Option<&[u8]>) -> Output {
    let mut child = Command::new(BIN)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    if let Some(data) = stdin {
        input.write_all(data).unwrap();
    }
    drop(input);
    child.wait_with_output().unwrap()
}

/// `(dir, args)` for each golden case.
fn cases() -> Vec<(PathBuf, Vec<String>)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(golden_dir()).unwrap() {
        let dir = e.unwrap().path();
        if !dir.is_dir() {
            continue;
        }
        let cfg = std::fs::read_to_string(dir.join("config.yaml")).unwrap();
        let spec = cfg
            .lines()
            .next()
            .unwrap()
            .strip_prefix("# golden:")
            .unwrap();
        let mut args = vec![
            "normalize".to_owned(),
            "--config".to_owned(),
            dir.join("config.yaml").display().to_string(),
        ];
        for kv in spec.split_whitespace() {
            let (k, v) = kv.split_once('=').unwrap();
            args.push(format!("--{}", k.replace('_', "-")));
            args.push(v.to_owned());
        }
        out.push((dir, args));
    }
    out.sort();
    assert!(out.len() >= 20, "golden cases went missing");
    out
}

#[test]
fn every_golden_case_through_the_binary() {
    for (dir, args) in cases() {
        let name = dir.file_name().unwrap().to_string_lossy().into_owned();
        let want = std::fs::read(dir.join("out.sip")).unwrap();
        let fired = std::fs::read_to_string(dir.join("fired.txt")).unwrap();

        // Text report from a file: the message first, byte for byte.
        let mut a: Vec<&str> = args.iter().map(String::as_str).collect();
        let file = dir.join("in.sip").display().to_string();
        a.extend(["--file", &file]);
        let out = run(&a, None);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            out.stdout.starts_with(&want),
            "{name}: text output does not start with out.sip:\n{}",
            String::from_utf8_lossy(&out.stdout)
        );
        let report = String::from_utf8_lossy(&out.stdout[want.len()..]).into_owned();
        assert!(report.contains("===== rules fired"), "{name}: {report}");
        if fired.is_empty() {
            assert!(report.contains("(no rule fired)"), "{name}: {report}");
        } else {
            assert!(report.contains(&fired), "{name}: {report}\nlacks\n{fired}");
            assert!(
                report.contains("--- before\n+++ after\n@@ "),
                "{name}: {report}"
            );
        }

        // JSON from standard input.
        let mut a: Vec<&str> = args.iter().map(String::as_str).collect();
        a.push("--json");
        let input = std::fs::read(dir.join("in.sip")).unwrap();
        let out = run(&a, Some(&input));
        assert_eq!(out.status.code(), Some(0), "{name}");
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(
            v["message"].as_str().unwrap().as_bytes(),
            &want[..],
            "{name}: JSON message differs from out.sip"
        );
        let mut rendered = String::new();
        for f in v["fired"].as_array().unwrap() {
            rendered.push_str(&format!(
                "{}/{}\n",
                f["profile"].as_str().unwrap(),
                f["rule"].as_str().unwrap()
            ));
            let changes = f["changes"].as_array().unwrap();
            if changes.is_empty() {
                rendered.push_str("  (matched; nothing to change)\n");
            }
            for c in changes {
                rendered.push_str(&format!("  {}\n", c.as_str().unwrap()));
            }
        }
        assert_eq!(rendered, fired, "{name}: JSON fired rules differ");
        let crlf = String::from_utf8_lossy(&input)
            .replace("\r\n", "\n")
            .replace('\n', "\r\n");
        assert_eq!(
            v["changed"].as_bool(),
            Some(want != crlf.as_bytes()),
            "{name}"
        );
    }
}

const CFG_HEAD: &str = "\
zones:
  - name: inside
    sip_address: 127.0.0.1
trunks:
  - name: pbx
    zone: inside
    members: [{address: 127.0.0.10}]
    normalization: {outbound: [p]}
routes:
  - name: all
    to_trunk: pbx
normalization:
  profiles:
    - name: p
      rules:
        - name: r
          match: {number_regex: \"^(0\"}
          actions:
            - remove_header: Via
";

#[test]
fn config_errors_exit_2_with_locations() {
    let dir = test_dir("bad-config");
    let cfg = dir.join("bad.yaml");
    std::fs::write(&cfg, CFG_HEAD).unwrap();
    let out = run(
        &[
            "normalize",
            "--config",
            cfg.to_str().unwrap(),
            "--trunk",
            "pbx",
            "--direction",
            "out",
        ],
        Some(b""),
    );
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    let file = cfg.display().to_string();
    assert!(
        err.contains(&format!(
            "{file}:17:33: normalization.profiles[0].rules[0].match.number_regex: invalid regex"
        )),
        "{err}"
    );
    assert!(
        err.contains(&format!(
            "{file}:19:30: normalization.profiles[0].rules[0].actions[0].remove_header: Via is structural"
        )),
        "{err}"
    );
}

const GOOD: &str = "\
zones:
  - name: inside
    sip_address: 127.0.0.1
trunks:
  - name: pbx
    zone: inside
    members: [{address: 127.0.0.10}]
routes:
  - name: all
    to_trunk: pbx
";

#[test]
fn unknown_trunk_exits_2_and_bad_message_exits_4_with_offset() {
    let dir = test_dir("bad-input");
    let cfg = dir.join("good.yaml");
    std::fs::write(&cfg, GOOD).unwrap();
    let cfg = cfg.to_str().unwrap();
    let out = run(
        &[
            "normalize",
            "-c",
            cfg,
            "--trunk",
            "nope",
            "--direction",
            "in",
        ],
        Some(b""),
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no trunk named `nope` (trunks: pbx)"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // A header line without a colon, on line 3.
    let msg = b"OPTIONS sip:a@b SIP/2.0\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\nbroken line\nFrom: <sip:a@h>;tag=1\nTo: <sip:b@h>\nCall-ID: x\nCSeq: 1 OPTIONS\n\n";
    let out = run(
        &[
            "normalize",
            "-c",
            cfg,
            "--trunk",
            "pbx",
            "--direction",
            "in",
        ],
        Some(msg),
    );
    assert_eq!(out.status.code(), Some(4));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(
            "the message does not parse: malformed header line at byte 61 (line 3, column 1)"
        ),
        "{err}"
    );
    let missing = dir.join("absent.sip");
    let out = run(
        &[
            "normalize",
            "-c",
            cfg,
            "--trunk",
            "pbx",
            "--direction",
            "in",
            "--file",
            missing.to_str().unwrap(),
        ],
        None,
    );
    assert_eq!(out.status.code(), Some(4));
    // No profile on the trunk: the message comes back unchanged, and says so.
    let ok = b"OPTIONS sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nFrom: <sip:a@h>;tag=1\r\nTo: <sip:b@h>\r\nCall-ID: x\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n";
    let out = run(
        &[
            "normalize",
            "-c",
            cfg,
            "--trunk",
            "pbx",
            "--direction",
            "out",
        ],
        Some(ok),
    );
    assert_eq!(out.status.code(), Some(0));
    assert!(out.stdout.starts_with(ok));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("stages: none"), "{text}");
    assert!(text.contains("(no change)"), "{text}");
}

fn engine_fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../normalize/tests/engine-run")
}

#[test]
fn from_trunk_runs_the_message_through_the_engine() {
    let dir = engine_fixture();
    let cfg = dir.join("config.yaml").display().to_string();
    let msg = dir.join("pbx-invite.sip").display().to_string();
    let args = [
        "normalize",
        "--config",
        &cfg,
        "--trunk",
        "carrier",
        "--direction",
        "out",
        "--from-trunk",
        "pbx",
        "--file",
        &msg,
    ];
    let out = run(&args, None);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // What the carrier gets: Palisade's own leg, the carrier's profile, and
    // the SDP anchored by the same media manager as `run` (no sockets).
    assert!(
        text.starts_with("INVITE sip:071100100@127.0.0.20:5080;user=phone SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.2:5060;branch=z9hG4bK"),
        "{text}"
    );
    let head = text.split("\r\n\r\n").next().unwrap_or_default();
    assert!(
        !head.contains("127.0.0.10") && !head.contains("pbx-call-1"),
        "{head}"
    );
    let body = text.split("\r\n\r\n").nth(1).unwrap_or_default();
    assert!(body.contains("c=IN IP4 127.0.0.2\r\n"), "{body}");
    for want in [
        "X-MS-SBC: Palisade/SBC/0.1\r\n",
        "===== rules fired (received from trunk pbx at 127.0.0.10:5070, sent to trunk carrier at 127.0.0.20:5080) =====\n",
        "note: trunk carrier registers: its REGISTER was answered 200 (simulated) so it is up\n",
        "[pbx in] pbx-in/tidy\n  - X-Internal-Host: pbx1.corp.example\n",
        "[carrier out] carrier-de/identity\n  + X-MS-SBC: Palisade/SBC/0.1\n",
        "===== answered to trunk pbx =====\nSIP/2.0 100 Trying\n",
        "-Call-ID: pbx-call-1@pbx1.corp.example\n",
    ] {
        assert!(text.contains(want), "{want:?} missing in:\n{text}");
    }
    assert!(
        !text.contains("not-a-real-password"),
        "credentials never printed"
    );
    // JSON, from standard input.
    let mut a = args[..9].to_vec();
    a.push("--json");
    let out = run(&a, Some(&std::fs::read(&msg).unwrap()));
    assert_eq!(out.status.code(), Some(0));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["delivered"], true);
    assert_eq!(v["sent_to"], "127.0.0.20:5080");
    assert_eq!(v["fired"][0]["trunk"], "pbx");
    assert_eq!(v["fired"][0]["direction"], "in");
    assert!(
        v["message"]
            .as_str()
            .unwrap()
            .starts_with("INVITE sip:071100100@")
    );
    // Not delivered (no route for the number): the report says why, exit 5.
    let other = String::from_utf8(std::fs::read(&msg).unwrap())
        .unwrap()
        .replace("+4971100100", "+1415555");
    let out = run(&args[..9], Some(other.as_bytes()));
    assert_eq!(out.status.code(), Some(5));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("(nothing was sent to trunk carrier: Palisade answered 404 (no-route))"),
        "{text}"
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("did not reach trunk carrier"));
    // --from-trunk is about what is sent: --direction in is a usage error.
    let mut a = args.to_vec();
    a[6] = "in";
    assert_eq!(run(&a, None).status.code(), Some(2));
}
