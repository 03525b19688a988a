//! Network namespaces for tests that program nftables.
//!
//! [`in_netns`] runs a test's body inside a namespace the test creates: the
//! test binary re-runs itself (`ip netns exec NS <test binary> NAME --exact`)
//! with `PALISADE_E2E_NETNS` set, so Palisade, SIPp, sipvicious, `nft` and
//! the harness's own probes all live in the namespace, and the host's
//! ruleset is never touched. The namespace is deleted afterwards, whatever
//! happened.

use std::process::Command;

use crate::paths::require_tool;
use crate::slots::Slot;

/// Set in the re-run test process: the namespace it runs in.
pub const ENV: &str = "PALISADE_E2E_NETNS";

/// A namespace that is deleted on drop.
#[derive(Debug)]
pub struct Netns {
    name: String,
}

impl Netns {
    /// Creates `palisade-e2e-<slot>-<pid>` with loopback up.
    pub fn create(slot: Slot) -> Netns {
        require_tool("ip");
        let name = format!("pe2e-{}-{}", slot as u8, std::process::id());
        let _ = Command::new("ip").args(["netns", "del", &name]).output();
        let ok = Command::new("ip")
            .args(["netns", "add", &name])
            .status()
            .is_ok_and(|s| s.success());
        assert!(
            ok,
            "`ip netns add {name}` failed: these tests need root (CAP_SYS_ADMIN and CAP_NET_ADMIN)"
        );
        let ns = Netns { name };
        ns.exec("ip", &["link", "set", "lo", "up"]);
        ns
    }

    /// The namespace's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Runs `cmd args` inside; panics unless it succeeds; returns stdout.
    pub fn exec(&self, cmd: &str, args: &[&str]) -> String {
        let out = Command::new("ip")
            .args(["netns", "exec", &self.name, cmd])
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("ip netns exec {} {cmd}: {e}", self.name));
        assert!(
            out.status.success(),
            "{cmd} {args:?} in {} failed: {}",
            self.name,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}

/// Runs `body` inside a fresh network namespace for `slot` (see the module
/// docs); `test` is the test function's name. Panics (failing the test) if
/// the body failed, with its output.
pub fn in_netns(slot: Slot, test: &str, body: impl FnOnce()) {
    if std::env::var_os(ENV).is_some() {
        body();
        return;
    }
    require_tool("nft");
    let ns = Netns::create(slot);
    let exe = std::env::current_exe().unwrap_or_else(|e| panic!("current_exe: {e}"));
    let out = Command::new("ip")
        .args(["netns", "exec", ns.name()])
        .arg(&exe)
        .args([test, "--exact", "--nocapture", "--test-threads=1"])
        .env(ENV, ns.name())
        .output()
        .unwrap_or_else(|e| panic!("re-running {test} in {}: {e}", ns.name()));
    let text = format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let dir = crate::paths::out_root().join(slot.name());
    let _ = std::fs::create_dir_all(&dir);
    let _ = std::fs::write(dir.join("test-output.txt"), &text);
    assert!(
        out.status.success() && text.contains("1 passed"),
        "{test} failed inside network namespace {}:\n{text}",
        ns.name()
    );
}

/// `nft -j list set inet <table> <set>` addresses (inside the current namespace).
pub fn nft_set(table: &str, set: &str) -> Vec<String> {
    let out = Command::new("nft")
        .args(["-j", "list", "set", "inet", table, set])
        .output()
        .unwrap_or_else(|e| panic!("nft: {e}"));
    if !out.status.success() {
        return Vec::new();
    }
    let text = String::from_utf8_lossy(&out.stdout);
    // Elements are either "a.b.c.d" or {"elem": {"val": "a.b.c.d", ...}}.
    let mut ips = Vec::new();
    for part in text.split("\"val\": \"").skip(1) {
        if let Some(end) = part.find('"') {
            ips.push(part[..end].to_string());
        }
    }
    if let Some(elem) = text.split("\"elem\": [").nth(1) {
        for part in elem.split('"') {
            if part.parse::<std::net::IpAddr>().is_ok() && !ips.iter().any(|i| i == part) {
                ips.push(part.to_string());
            }
        }
    }
    ips
}

/// Packets counted by the named counter `name` of `inet <table>`.
pub fn nft_counter(table: &str, name: &str) -> u64 {
    let out = Command::new("nft")
        .args(["list", "counter", "inet", table, name])
        .output()
        .unwrap_or_else(|e| panic!("nft: {e}"));
    let text = String::from_utf8_lossy(&out.stdout);
    text.split("packets ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

/// The text of `nft list ruleset`.
pub fn nft_ruleset() -> String {
    let out = Command::new("nft")
        .args(["list", "ruleset"])
        .output()
        .unwrap_or_else(|e| panic!("nft: {e}"));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A counting table of the test's own (`inet e2e_count`), inside the
/// current namespace: per labelled source, UDP and TCP packets to `port`
/// counted twice, by a chain before Palisade's (priority -200: everything
/// the source sent) and one after it (priority 100: what Palisade's table
/// let through to the socket). It accepts everything; Palisade never
/// touches it. Install it after Palisade started.
#[derive(Debug)]
pub struct SourceCounters {
    labels: Vec<String>,
}

/// The counting table's name.
pub const COUNT_TABLE: &str = "e2e_count";

impl SourceCounters {
    /// Counts packets from each `(label, source)` to destination port `port`.
    pub fn install(sources: &[(&str, std::net::IpAddr)], port: u16) -> SourceCounters {
        let mut text = format!(
            "add table inet {COUNT_TABLE}\ndelete table inet {COUNT_TABLE}\ntable inet {COUNT_TABLE} {{\n"
        );
        for (label, _) in sources {
            text.push_str(&format!(
                "\tcounter sent_{label} {{ }}\n\tcounter passed_{label} {{ }}\n"
            ));
        }
        for (chain, prio, kind) in [("before", -200, "sent"), ("after", 100, "passed")] {
            text.push_str(&format!(
                "\tchain {chain} {{\n\t\ttype filter hook input priority {prio}; policy accept;\n"
            ));
            for (label, ip) in sources {
                let fam = if ip.is_ipv4() { "ip" } else { "ip6" };
                text.push_str(&format!(
                    "\t\t{fam} saddr {ip} meta l4proto {{ udp, tcp }} th dport {port} counter name {kind}_{label}\n"
                ));
            }
            text.push_str("\t}\n");
        }
        text.push_str("}\n");
        let mut child = Command::new("nft")
            .args(["-f", "-"])
            .stdin(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("nft: {e}"));
        {
            use std::io::Write as _;
            let mut stdin = child.stdin.take().unwrap_or_else(|| panic!("nft stdin"));
            stdin
                .write_all(text.as_bytes())
                .unwrap_or_else(|e| panic!("nft stdin: {e}"));
        }
        let out = child
            .wait_with_output()
            .unwrap_or_else(|e| panic!("nft: {e}"));
        assert!(
            out.status.success(),
            "counting table refused: {}\n{text}",
            String::from_utf8_lossy(&out.stderr)
        );
        SourceCounters {
            labels: sources.iter().map(|(l, _)| (*l).to_string()).collect(),
        }
    }

    fn check(&self, label: &str) {
        assert!(
            self.labels.iter().any(|l| l == label),
            "no counter for {label}"
        );
    }

    /// Packets `label` sent to the port (before any filtering).
    pub fn sent(&self, label: &str) -> u64 {
        self.check(label);
        nft_counter(COUNT_TABLE, &format!("sent_{label}"))
    }

    /// Packets from `label` that got past Palisade's table (reached the socket).
    pub fn passed(&self, label: &str) -> u64 {
        self.check(label);
        nft_counter(COUNT_TABLE, &format!("passed_{label}"))
    }
}
