//! Shared by the kernel tests: each re-runs itself (`ip netns exec NS <this
//! binary> NAME --exact`) inside a network namespace it creates, with
//! `PALISADE_NFT_NETNS` set, so tables, sockets, conntrack and every `nft`
//! run live there and the host's ruleset is never touched. The namespace is
//! deleted afterwards, whatever happened. Needs root; missing `ip`/`nft` or
//! no permission fails the test (it is never skipped).
#![allow(dead_code)]

use std::process::{Command, Stdio};

/// Set in the re-run test process: the namespace it runs in.
pub const ENV: &str = "PALISADE_NFT_NETNS";

/// A namespace deleted on drop.
pub struct Netns(pub String);

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).output();
    }
}

pub fn require_tool(tool: &str, arg: &str) {
    let ok = Command::new(tool)
        .arg(arg)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        ok,
        "`{tool}` is missing or does not run: this test needs it"
    );
}

/// This namespace's conntrack table, as `/proc/net/nf_conntrack` lists it.
/// Fails the test when it cannot be read: the tests that look at conntrack
/// never pass without looking.
pub fn conntrack_table() -> String {
    std::fs::read_to_string("/proc/net/nf_conntrack").unwrap_or_else(|e| {
        panic!(
            "cannot read /proc/net/nf_conntrack ({e}): this test needs nf_conntrack \
             with its procfs view (CONFIG_NF_CONNTRACK_PROCFS)"
        )
    })
}

/// Runs `body` in a fresh namespace (see the module docs); `test` is the
/// test function's name, `tag` makes the namespace name unique.
pub fn in_netns(test: &str, tag: &str, body: impl FnOnce()) {
    if let Some(ns) = std::env::var_os(ENV) {
        // Never run the body outside the namespace made for it.
        let out = Command::new("ip")
            .args(["netns", "identify"])
            .output()
            .expect("ip netns identify");
        let here = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        assert_eq!(
            here,
            ns.to_string_lossy(),
            "not inside the test's namespace"
        );
        body();
        return;
    }
    require_tool("ip", "-V");
    require_tool("nft", "--version");
    let name = format!("pnl-{}-{tag}", std::process::id());
    let _ = Command::new("ip").args(["netns", "del", &name]).output();
    let out = Command::new("ip")
        .args(["netns", "add", &name])
        .output()
        .expect("ip netns add");
    assert!(
        out.status.success(),
        "`ip netns add {name}` failed (this test needs root): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let ns = Netns(name);
    let exe = std::env::current_exe().expect("current_exe");
    let out = Command::new("ip")
        .args(["netns", "exec", &ns.0])
        .arg(&exe)
        .args([test, "--exact", "--nocapture", "--test-threads=1"])
        .env(ENV, &ns.0)
        .output()
        .expect("re-running the test in the namespace");
    let text = format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && text.contains("1 passed"),
        "{test} failed inside network namespace {}:\n{text}",
        ns.0
    );
    drop(ns);
}
