//! A DNS server for a test: Debian's `dnsmasq` on a slot address and a high
//! port, answering only from the records the test gives (no upstream, no
//! /etc/hosts, nothing outside loopback). Every query is logged to
//! `dnsmasq.log` in the test's directory, so a test can count them.
//! Killed on drop.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::net;
use crate::paths;

/// The port test DNS servers listen on (on their slot's `.53` address).
pub const DNS_PORT: u16 = 15353;

/// A running dnsmasq.
#[derive(Debug)]
pub struct Dnsmasq {
    child: Option<Child>,
    addr: SocketAddr,
    log: PathBuf,
}

/// `dnsmasq` on PATH, or in /usr/sbin (Debian's place, not always on a user's PATH).
fn binary() -> PathBuf {
    let sbin = Path::new("/usr/sbin/dnsmasq");
    if sbin.is_file() {
        return sbin.to_path_buf();
    }
    paths::require_tool("dnsmasq")
}

impl Dnsmasq {
    /// Starts dnsmasq on `addr` (UDP and TCP) authoritative-only for
    /// `domain`, with `records`: dnsmasq options such as
    /// `--srv-host=...`, `--host-record=...`, `--naptr-record=...`.
    /// Records get a TTL of `ttl_seconds`. Waits (5 s at most) until it is bound.
    pub fn start(
        dir: &Path,
        addr: SocketAddr,
        domain: &str,
        ttl_seconds: u32,
        records: &[String],
    ) -> Dnsmasq {
        let log = dir.join("dnsmasq.log");
        let _ = std::fs::remove_file(&log);
        let mut args: Vec<String> = vec![
            "--keep-in-foreground".into(),
            "--conf-file=/dev/null".into(),
            "--no-resolv".into(),
            "--no-hosts".into(),
            "--no-poll".into(),
            "--pid-file=".into(),
            "--bind-interfaces".into(),
            format!("--listen-address={}", addr.ip()),
            format!("--port={}", addr.port()),
            // Names of the domain are answered here only (NXDOMAIN/NODATA otherwise).
            format!("--local=/{domain}/"),
            format!("--local-ttl={ttl_seconds}"),
            "--log-queries".into(),
            format!("--log-facility={}", log.display()),
        ];
        args.extend(records.iter().cloned());
        std::fs::write(
            dir.join("dnsmasq.cmd"),
            format!("dnsmasq {}\n", args.join(" ")),
        )
        .unwrap_or_else(|e| panic!("write dnsmasq.cmd: {e}"));
        let out = std::fs::File::create(dir.join("dnsmasq.stdout"))
            .unwrap_or_else(|e| panic!("create dnsmasq.stdout: {e}"));
        let err = out.try_clone().unwrap_or_else(|e| panic!("dup: {e}"));
        let mut child = Command::new(binary())
            .args(&args)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn dnsmasq: {e}"));
        let ready = net::wait_until(Duration::from_secs(5), || {
            net::udp_bound(addr) || matches!(child.try_wait(), Ok(Some(_)))
        });
        let alive = matches!(child.try_wait(), Ok(None));
        if !(ready && alive) {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "dnsmasq did not bind {addr}:\n{}",
                std::fs::read_to_string(dir.join("dnsmasq.stdout")).unwrap_or_default()
            );
        }
        Dnsmasq {
            child: Some(child),
            addr,
            log,
        }
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Its query log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// How many queries of `qtype` (`A`, `SRV`, `NAPTR`...) for `name` it got.
    pub fn queries(&self, qtype: &str, name: &str) -> usize {
        let needle = format!("query[{qtype}] {name} ");
        self.log().lines().filter(|l| l.contains(&needle)).count()
    }
}

impl Drop for Dnsmasq {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
