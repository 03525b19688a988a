//! The command line: `check-config` accepts the generated config and rejects
//! broken ones with `FILE:LINE:COLUMN: field.path: message`; `run` with a bad
//! config exits non-zero without ever binding its ports; SIGHUP changes a
//! route without dropping the call in progress.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use palisade_e2e::net::{self, now};
use palisade_e2e::{Lab, LabConfig, Slot, palisade_bin};

/// The generated config with the first line equal to `from` (trimmed)
/// replaced by `to` (same indentation); returns the text and the 1-based line.
fn break_config(slot: Slot, from: &str, to: &str) -> (String, usize) {
    let good = LabConfig::default().render(slot);
    let mut lines: Vec<String> = good.lines().map(str::to_string).collect();
    let idx = lines
        .iter()
        .position(|l| l.trim() == from)
        .unwrap_or_else(|| panic!("no line {from:?} in the generated config"));
    let indent = lines[idx].len() - lines[idx].trim_start().len();
    lines[idx] = format!("{}{to}", " ".repeat(indent));
    (lines.join("\n") + "\n", idx + 1)
}

/// Asserts stderr has a `path:line:col: ...field...` diagnostic.
fn assert_diagnostic(stderr: &str, path: &Path, line: usize, field: &str) {
    let prefix = format!("{}:{line}:", path.display());
    let diag = stderr
        .lines()
        .find(|l| l.starts_with(&prefix))
        .unwrap_or_else(|| panic!("no `{prefix}COL: ...` diagnostic in stderr:\n{stderr}"));
    let rest = &diag[prefix.len()..];
    let (col, msg) = rest
        .split_once(':')
        .unwrap_or_else(|| panic!("no column in {diag:?}"));
    let col: usize = col
        .parse()
        .unwrap_or_else(|_| panic!("column is not a number in {diag:?}"));
    assert!(col >= 1, "{diag:?}");
    assert!(
        msg.starts_with(' ') && msg.contains(field),
        "diagnostic {diag:?} does not name {field}"
    );
}

#[test]
fn check_config_accepts_the_generated_config() {
    let dir = Slot::CheckConfigGood.fresh_dir();
    let path = dir.join("good.yaml");
    std::fs::write(&path, LabConfig::default().render(Slot::CheckConfigGood)).unwrap();
    let out = Command::new(palisade_bin())
        .arg("check-config")
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "check-config rejected the harness config: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn check_config_points_at_file_line_column() {
    let dir = Slot::CheckConfigBad.fresh_dir();
    let cases = [
        // A value out of its type's range.
        ("udp_port: 5060", "udp_port: 70000", "udp_port"),
        // An unknown key (deny_unknown_fields).
        ("tcp_port: 5060", "tcp_portt: 5060", "tcp_portt"),
        // A reference to a trunk that does not exist.
        ("to_trunk: carrier", "to_trunk: nowhere", "to_trunk"),
    ];
    for (i, (from, to, field)) in cases.into_iter().enumerate() {
        let (text, line) = break_config(Slot::CheckConfigBad, from, to);
        let path = dir.join(format!("bad-{i}.yaml"));
        std::fs::write(&path, text).unwrap();
        let out = Command::new(palisade_bin())
            .arg("check-config")
            .arg(&path)
            .output()
            .unwrap();
        assert!(!out.status.success(), "check-config accepted `{to}`");
        assert_diagnostic(&String::from_utf8_lossy(&out.stderr), &path, line, field);
    }
}

#[test]
fn run_with_a_bad_config_exits_without_binding() {
    let slot = Slot::RunBadConfig;
    let dir = slot.fresh_dir();
    let net = slot.net();
    // Zones parse fine; only the route is wrong, so nothing may be bound.
    let (text, line) = break_config(slot, "to_trunk: carrier", "to_trunk: nowhere");
    let path = dir.join("bad.yaml");
    std::fs::write(&path, text).unwrap();
    let stderr_path = dir.join("stderr.log");
    let mut child = Command::new(palisade_bin())
        .arg("run")
        .arg("--config")
        .arg(&path)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&stderr_path).unwrap())
        .spawn()
        .unwrap();
    let deadline = now() + Duration::from_secs(10);
    let mut bound = false;
    let status = loop {
        bound |= net::udp_bound(net.inside())
            || net::tcp_listening(net.inside())
            || net::udp_bound(net.outside());
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("palisade run kept running with a bad config");
        }
        std::thread::sleep(Duration::from_millis(2));
    };
    assert!(!status.success(), "palisade run exited 0 on a bad config");
    assert!(
        !bound,
        "palisade bound its ports before rejecting the config"
    );
    assert!(!net::udp_bound(net.inside()));
    let stderr = std::fs::read_to_string(&stderr_path).unwrap();
    assert_diagnostic(&stderr, &path, line, "to_trunk");
}

/// SIGHUP with a changed route: the call answered before the reload goes on
/// to its BYE on the old route; the next call takes the new one.
#[test]
fn sighup_changes_a_route_without_dropping_the_answered_call() {
    let slot = Slot::ReloadRoute;
    let net = slot.net();
    // Split the carrier group: `carrier` keeps the primary, `backup` gets the secondary.
    let secondary = format!(
        "      - address: {}\n        port: 5080\n        transport: udp\n",
        net.carrier_secondary_ip()
    );
    let base = LabConfig::default().render(slot);
    assert!(base.contains(&secondary), "{base}");
    let before = base.replacen(
        &secondary,
        &format!("  - name: backup\n    zone: outside\n    members:\n{secondary}"),
        1,
    );
    let after = before.replacen(
        "    from_trunk: pbx\n    to_trunk: carrier\n",
        "    from_trunk: pbx\n    to_trunk: backup\n",
        1,
    );
    assert_ne!(before, after, "no pbx route to change");
    let lab = Lab::builder(slot).config_text(before).start();
    let primary = lab.carrier_primary("uas_answer").spawn_uas();
    let backup = lab.carrier_secondary("uas_answer").spawn_uas();
    // A 4-second call, reloaded under its feet once answered.
    let first = lab.pbx_uac("uac_call").pause_ms(4000).spawn();
    lab.wait_log(&["event=answered"], Duration::from_secs(10));
    std::fs::write(lab.config_path(), after).unwrap();
    let pid = lab.pid().unwrap();
    assert!(
        Command::new("kill")
            .args(["-HUP", &pid.to_string()])
            .status()
            .unwrap()
            .success()
    );
    lab.wait_log(&["reloaded", "trunks=3"], Duration::from_secs(5));
    let first = first.wait();
    first.assert_success(1);
    let primary = primary.wait();
    primary.assert_success(1);
    let methods: Vec<String> = primary
        .received()
        .iter()
        .filter_map(|m| m.method())
        .collect();
    assert_eq!(
        methods,
        ["INVITE", "ACK", "BYE"],
        "the answered call's BYE went its old way"
    );
    // The next call takes the new route.
    lab.pbx_uac("uac_call")
        .pause_ms(200)
        .run()
        .assert_success(1);
    let backup = backup.wait();
    backup.assert_success(1);
    let log = lab.log();
    let routed: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("event=started"))
        .collect();
    assert_eq!(routed.len(), 2, "{routed:?}");
    assert!(routed[0].contains("to_trunk=carrier"), "{}", routed[0]);
    assert!(routed[1].contains("to_trunk=backup"), "{}", routed[1]);
    assert!(
        log.lines()
            .filter(|l| l.contains("event=ended"))
            .all(|l| l.contains("reason=caller-bye")),
        "a call ended otherwise:\n{log}"
    );
}
