//! The quickstart as a newcomer runs it: `configs/quickstart.yaml` itself
//! (addresses as shipped: 127.0.0.1/.2 for Palisade, .10 the PBX, .20/.21 the
//! carriers) and the README's exact SIPp commands for a test call, copied out
//! of README.md at run time. The quickstart's guard enforces with nftables
//! (`auto`), so the whole test runs in a network namespace it creates: the
//! host's ruleset is never touched and the 127.0.0.x addresses are this
//! test's alone (no other test can see them).
#![allow(clippy::unwrap_used)]

use std::fs::File;
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::Duration;

use palisade_e2e::http;
use palisade_e2e::net::{self, wait_until};
use palisade_e2e::netns::in_netns;
use palisade_e2e::paths::workspace_root;
use palisade_e2e::{Slot, palisade_bin, raw, require_tool};

/// The commands of the first ```sh block after `heading` in README.md, with
/// `\` continuations joined and comments dropped.
fn readme_commands(readme: &str, heading: &str) -> Vec<String> {
    let section = readme
        .split_once(heading)
        .unwrap_or_else(|| panic!("README.md has no {heading:?}"))
        .1;
    let block = section
        .split_once("```sh\n")
        .and_then(|(_, rest)| rest.split_once("```"))
        .unwrap_or_else(|| panic!("no sh block under {heading:?}"))
        .0;
    let mut out = Vec::new();
    let mut cur = String::new();
    for line in block.lines() {
        let line = line.trim();
        if line.starts_with('#') || line.is_empty() {
            continue;
        }
        match line.strip_suffix('\\') {
            Some(part) => {
                cur.push_str(part.trim_end());
                cur.push(' ');
            }
            None => {
                cur.push_str(line);
                out.push(std::mem::take(&mut cur));
            }
        }
    }
    out
}

fn pid_alive(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
        && !std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .is_ok_and(|s| s.split_whitespace().nth(2) == Some("Z"))
}

/// Kills a process this test started if it still runs when the test ends
/// (a failed assertion unwinds past the normal stop); checks the command
/// line first, so a reused PID is left alone.
struct KillOnDrop {
    pid: u32,
    command: &'static str,
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let cmdline = std::fs::read(format!("/proc/{}/cmdline", self.pid)).unwrap_or_default();
        if pid_alive(self.pid) && String::from_utf8_lossy(&cmdline).contains(self.command) {
            let _ = Command::new("kill")
                .args(["-KILL", &self.pid.to_string()])
                .status();
        }
    }
}

#[test]
fn quickstart_config_and_readme_commands_place_a_call() {
    const NAME: &str = "quickstart_config_and_readme_commands_place_a_call";
    in_netns(Slot::Quickstart, NAME, || {
        let sipp = require_tool("sipp");
        assert!(sipp.is_file());
        let root = workspace_root().canonicalize().unwrap();
        let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
        // "Run it": the binary on the shipped file, nothing else.
        let run = readme_commands(&readme, "## Run it (quickstart)");
        assert_eq!(
            run,
            ["cargo run --release -p palisade -- run --config configs/quickstart.yaml"],
            "the README's run command changed; update this test"
        );
        let config = root.join("configs/quickstart.yaml");
        let dir = Slot::Quickstart.fresh_dir();
        let log_path = dir.join("palisade.log");
        let log = File::create(&log_path).unwrap();
        let mut palisade = Command::new(palisade_bin())
            .args(["run", "--config"])
            .arg(&config)
            // alerts.database_path (palisade-state/alerts.db) is relative: keep it out of the tree.
            .current_dir(&dir)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        let _reap_palisade = KillOnDrop {
            pid: palisade.id(),
            command: "quickstart.yaml",
        };
        let inside: SocketAddr = "127.0.0.1:5060".parse().unwrap();
        let log_text = || std::fs::read_to_string(&log_path).unwrap_or_default();
        let ready = wait_until(Duration::from_secs(15), || {
            raw::udp_options(
                "127.0.0.10".parse().unwrap(),
                inside,
                "quickstart-ready",
                Duration::from_millis(250),
            )
            .is_some_and(|r| r.starts_with(b"SIP/2.0 200"))
                || matches!(palisade.try_wait(), Ok(Some(_)))
        });
        assert!(
            ready && matches!(palisade.try_wait(), Ok(None)),
            "palisade on the quickstart config did not come up:\n{}",
            log_text()
        );
        // The guard enforces in this namespace's kernel, as the README says.
        let table = Command::new("nft")
            .args(["list", "table", "inet", "palisade"])
            .output()
            .unwrap();
        assert!(
            table.status.success(),
            "no nftables table: {}\n{}",
            String::from_utf8_lossy(&table.stderr),
            log_text()
        );
        assert!(!log_text().contains("FALLING BACK"), "{}", log_text());

        // "Place a test call in two minutes", command for command.
        let cmds = readme_commands(&readme, "### Place a test call in two minutes");
        assert_eq!(cmds.len(), 2, "{cmds:?}");
        assert!(
            cmds[0].starts_with("sipp -sf tests/e2e/scenarios/uas_answer.xml ")
                && cmds[0].ends_with(" -bg"),
            "{}",
            cmds[0]
        );
        assert!(
            cmds[1].starts_with("sipp -sf tests/e2e/scenarios/uac_call.xml "),
            "{}",
            cmds[1]
        );
        let sh = |label: &str, cmd: &str| {
            let out = File::create(dir.join(format!("{label}.stdout"))).unwrap();
            Command::new("timeout")
                .args(["60", "sh", "-c", cmd])
                .current_dir(&root)
                .stdin(Stdio::null())
                .stdout(out.try_clone().unwrap())
                .stderr(out)
                .status()
                .unwrap()
        };
        // The carrier goes to the background (-bg) and says its PID (the
        // foreground sipp's exit status says nothing: it exits 1 in -bg mode).
        let _ = sh("carrier", &cmds[0]);
        let carrier_out = std::fs::read_to_string(dir.join("carrier.stdout")).unwrap();
        let carrier_pid: u32 = carrier_out
            .split("PID=[")
            .nth(1)
            .and_then(|r| r.split(']').next())
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("no background PID in: {carrier_out}"));
        let _reap_carrier = KillOnDrop {
            pid: carrier_pid,
            command: "sipp",
        };
        // The background SIPp has bound its port before the call.
        let carrier: SocketAddr = "127.0.0.20:5080".parse().unwrap();
        assert!(
            wait_until(Duration::from_secs(10), || net::udp_bound(carrier)),
            "the README's carrier never bound {carrier}: {carrier_out}"
        );
        let pbx = sh("pbx", &cmds[1]);
        let pbx_out = std::fs::read_to_string(dir.join("pbx.stdout")).unwrap_or_default();
        let carrier_done = wait_until(Duration::from_secs(10), || !pid_alive(carrier_pid));
        if !carrier_done {
            // Ours to stop: the background SIPp this test started.
            let _ = Command::new("kill").arg(carrier_pid.to_string()).status();
        }
        assert!(
            pbx.success(),
            "the README's PBX command failed ({pbx}):\n{pbx_out}\n--- palisade ---\n{}",
            log_text()
        );
        assert!(
            carrier_done,
            "the README's carrier (-m 1) did not finish its call"
        );

        // Palisade logged the call as the README shows it.
        let wanted: [&[&str]; 3] = [
            &[
                "event=started",
                "from_trunk=pbx",
                "to_trunk=carrier",
                "number=+4971100100",
                "a_call_id=",
                "b_call_id=",
            ],
            &[
                "event=ended",
                "reason=caller-bye",
                "member=127.0.0.20:5080",
                "setup_ms=",
            ],
            &["event=media-stats", "stream=0", "a_packets=", "a_mos="],
        ];
        assert!(
            wait_until(Duration::from_secs(5), || log_text()
                .contains("event=media-stats")),
            "{}",
            log_text()
        );
        let text = log_text();
        let call = text
            .lines()
            .find(|l| l.contains("event=started"))
            .and_then(|l| l.split_whitespace().find(|w| w.starts_with("call=")))
            .unwrap_or_else(|| panic!("no started line:\n{text}"))
            .to_string();
        for needles in wanted {
            assert!(
                text.lines()
                    .any(|l| l.contains(&call) && needles.iter().all(|n| l.contains(n))),
                "no line with {call} {needles:?} in:\n{text}"
            );
        }
        // No fraud rule or admission limit of the quickstart stood in the way.
        for bad in [
            "fraud alert",
            "guard decision",
            "request rejected",
            "event=rejected",
        ] {
            assert!(!text.contains(bad), "{bad:?} in:\n{text}");
        }
        assert!(dir.join("palisade-state/alerts.db").is_file());

        // The admin endpoint of the quickstart: the call and the guard's
        // kernel enforcement show in /metrics, the engine answers /health.
        let admin: SocketAddr = "127.0.0.1:9091".parse().unwrap();
        let m = http::get(admin, "/metrics").expect("no answer from /metrics");
        assert_eq!(m.status, 200, "{m:?}");
        assert!(
            m.head
                .contains("content-type: application/openmetrics-text"),
            "{m:?}"
        );
        assert!(m.body.ends_with("# EOF\n"), "{}", m.body);
        for (name, want) in [
            ("palisade_calls_started_total", 1),
            ("palisade_calls_answered_total", 1),
            ("palisade_calls_ended_total", 1),
            ("palisade_calls_active", 0),
            ("palisade_guard_fallback_mode", 0),
            ("palisade_guard_bans_active", 0),
            ("palisade_media_ports_in_use", 0),
        ] {
            assert_eq!(
                http::metric(&m.body, name),
                Some(want),
                "{name}:\n{}",
                m.body
            );
        }
        // The README's call sends no RTP; the relay's counters are there.
        assert!(
            http::metric(&m.body, "palisade_relay_packets_total").is_some(),
            "{}",
            m.body
        );
        assert_eq!(
            http::metric(&m.body, "palisade_media_sdp_total{kind=\"offer\"}"),
            Some(1),
            "{}",
            m.body
        );
        let h = http::get(admin, "/health").expect("no answer from /health");
        assert_eq!((h.status, h.body.as_str()), (200, "ok\n"), "{h:?}");
        let st = http::get(admin, "/api/v1/status").expect("no answer from /api/v1/status");
        let v: serde_json::Value = serde_json::from_str(&st.body).unwrap();
        assert_eq!(v["node"], "palisade-quickstart", "{v}");
        assert_eq!(v["guard_blocking"], "nftables", "{v}");
        assert_eq!(v["media_anchored"], true, "{v}");
        assert_eq!(http::get(admin, "/nothing").map(|a| a.status), Some(404));
        assert_eq!(
            http::request(admin, "POST", "/metrics").map(|a| a.status),
            Some(405)
        );

        let _ = Command::new("kill")
            .args(["-TERM", &palisade.id().to_string()])
            .status();
        let stopped = wait_until(Duration::from_secs(10), || {
            matches!(palisade.try_wait(), Ok(Some(_)))
        });
        if !stopped {
            let _ = palisade.kill();
        }
        let status = palisade.wait().unwrap();
        assert!(
            stopped && status.success(),
            "exit {status}:\n{}",
            log_text()
        );
    });
}
