//! A builder for SIPp runs, and what a run left behind.
//!
//! Every run logs into the test's output directory: `<label>.msg` (every
//! message, `-trace_msg`), `<label>.err` (`-trace_err`), `<label>.log`
//! (`-trace_logs`), `<label>.csv` (`-trace_stat`) and `<label>.stdout`. A
//! global `-timeout` with `-timeout_error` bounds every run, so nothing hangs.
//! SIPp exits 0 iff every call succeeded; callees (UAS) are spawned first and
//! waited on until their port is bound.

use std::fs::File;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use crate::msglog::{self, SipMessage};
use crate::net::{self, Transport, now};
use crate::paths;
use crate::slots::PEER_MEDIA_PORT;

/// One SIPp invocation being configured.
#[derive(Debug, Clone)]
pub struct Sipp {
    dir: PathBuf,
    label: String,
    scenario: PathBuf,
    local: Option<SocketAddr>,
    remote: Option<SocketAddr>,
    transport: Transport,
    calls: u32,
    rate: Option<u32>,
    limit: Option<u32>,
    media: Option<(Ipv4Addr, u16)>,
    keys: Vec<(String, String)>,
    timeout: Duration,
    pause_ms: Option<u64>,
    extra: Vec<String>,
    /// Run inside this network namespace (`ip netns exec`).
    netns: Option<String>,
}

/// The files a SIPp run writes.
#[derive(Debug, Clone)]
pub struct SippFiles {
    /// `-message_file`.
    pub messages: PathBuf,
    /// `-error_file`.
    pub errors: PathBuf,
    /// `-log_file` (scenario `<log>` actions).
    pub log: PathBuf,
    /// `-stf` statistics CSV.
    pub stats: PathBuf,
    /// stdout and stderr (the final screen).
    pub stdout: PathBuf,
}

impl SippFiles {
    fn new(dir: &Path, label: &str) -> Self {
        SippFiles {
            messages: dir.join(format!("{label}.msg")),
            errors: dir.join(format!("{label}.err")),
            log: dir.join(format!("{label}.log")),
            stats: dir.join(format!("{label}.csv")),
            stdout: dir.join(format!("{label}.stdout")),
        }
    }

    /// Error file, log and the tail of the screen, for failure messages.
    pub fn diagnostics(&self) -> String {
        let mut out = String::new();
        for (what, path, tail) in [
            ("errors", &self.errors, 40),
            ("log", &self.log, 40),
            ("screen", &self.stdout, 30),
        ] {
            if let Ok(text) = std::fs::read(path) {
                let text = String::from_utf8_lossy(&text);
                let lines: Vec<&str> = text.lines().collect();
                let start = lines.len().saturating_sub(tail);
                out.push_str(&format!(
                    "--- {what} ({}) ---\n{}\n",
                    path.display(),
                    lines[start..].join("\n")
                ));
            }
        }
        out
    }
}

impl Sipp {
    /// A run of `tests/e2e/scenarios/<scenario>.xml` logging into `dir` as `label`.
    /// Defaults: UDP (`-t u1`), one call, 30 s global timeout.
    pub fn new(dir: impl Into<PathBuf>, label: &str, scenario: &str) -> Self {
        Sipp {
            dir: dir.into(),
            label: label.to_string(),
            scenario: paths::scenario(scenario),
            local: None,
            remote: None,
            transport: Transport::Udp,
            calls: 1,
            rate: None,
            limit: None,
            media: None,
            keys: Vec::new(),
            timeout: Duration::from_secs(30),
            pause_ms: None,
            extra: Vec::new(),
            netns: None,
        }
    }

    /// Local SIP address (`-i`, `-p`); media defaults to the same IP.
    pub fn local(mut self, addr: SocketAddr) -> Self {
        self.local = Some(addr);
        self
    }
    /// Remote SIP address (the positional argument).
    pub fn remote(mut self, addr: SocketAddr) -> Self {
        self.remote = Some(addr);
        self
    }
    /// Transport (`-t u1` or `-t t1`).
    pub fn transport(mut self, t: Transport) -> Self {
        self.transport = t;
        self
    }
    /// Calls to place or take before exiting (`-m`).
    pub fn calls(mut self, n: u32) -> Self {
        self.calls = n;
        self
    }
    /// Calls per second (`-r`).
    pub fn rate(mut self, cps: u32) -> Self {
        self.rate = Some(cps);
        self
    }
    /// Most calls at once (`-l`).
    pub fn limit(mut self, n: u32) -> Self {
        self.limit = Some(n);
        self
    }
    /// Media address and port (`-mi`, `-mp`); defaults to the local IP and 16000.
    pub fn media(mut self, ip: Ipv4Addr, port: u16) -> Self {
        self.media = Some((ip, port));
        self
    }
    /// A scenario keyword (`-key name value`). Setting a key again replaces it.
    pub fn key(mut self, name: &str, value: impl ToString) -> Self {
        self.keys.retain(|(k, _)| k != name);
        self.keys.push((name.to_string(), value.to_string()));
        self
    }
    /// Global timeout (`-timeout`, with `-timeout_error`).
    pub fn timeout(mut self, t: Duration) -> Self {
        self.timeout = t;
        self
    }
    /// Length of `<pause/>` without its own duration (`-d`).
    pub fn pause_ms(mut self, ms: u64) -> Self {
        self.pause_ms = Some(ms);
        self
    }
    /// Any other SIPp argument.
    /// Runs SIPp inside network namespace `ns` (created by the test).
    /// `spawn_uas` cannot see its socket there: use `spawn` and wait.
    pub fn netns(mut self, ns: &str) -> Self {
        self.netns = Some(ns.to_owned());
        self
    }
    pub fn arg(mut self, a: impl Into<String>) -> Self {
        self.extra.push(a.into());
        self
    }

    /// The command-line arguments.
    pub fn args(&self) -> Vec<String> {
        let files = SippFiles::new(&self.dir, &self.label);
        let mut a: Vec<String> = vec![
            "-sf".into(),
            self.scenario.display().to_string(),
            "-nostdin".into(),
            "-t".into(),
            self.transport.sipp_flag().into(),
            "-m".into(),
            self.calls.to_string(),
            "-timeout".into(),
            format!("{}s", self.timeout.as_secs().max(1)),
            "-timeout_error".into(),
            "-trace_msg".into(),
            "-message_file".into(),
            files.messages.display().to_string(),
            "-trace_err".into(),
            "-error_file".into(),
            files.errors.display().to_string(),
            "-trace_logs".into(),
            "-log_file".into(),
            files.log.display().to_string(),
            "-trace_stat".into(),
            "-stf".into(),
            files.stats.display().to_string(),
            "-fd".into(),
            "1".into(),
        ];
        if let Some(local) = self.local {
            a.extend([
                "-i".into(),
                local.ip().to_string(),
                "-p".into(),
                local.port().to_string(),
            ]);
        }
        let media = self.media.or_else(|| match self.local {
            Some(SocketAddr::V4(v4)) => Some((*v4.ip(), PEER_MEDIA_PORT)),
            _ => None,
        });
        if let Some((ip, port)) = media {
            a.extend(["-mi".into(), ip.to_string(), "-mp".into(), port.to_string()]);
        }
        if let Some(r) = self.rate {
            a.extend(["-r".into(), r.to_string()]);
        }
        if let Some(l) = self.limit {
            a.extend(["-l".into(), l.to_string()]);
        }
        if let Some(d) = self.pause_ms {
            a.extend(["-d".into(), d.to_string()]);
        }
        for (k, v) in &self.keys {
            a.extend(["-key".into(), k.clone(), v.clone()]);
        }
        a.extend(self.extra.iter().cloned());
        if let Some(remote) = self.remote {
            a.push(remote.to_string());
        }
        a
    }

    /// Starts SIPp in the background. Panics if `sipp` is not on PATH.
    pub fn spawn(self) -> SippProcess {
        let sipp = paths::require_tool("sipp");
        std::fs::create_dir_all(&self.dir)
            .unwrap_or_else(|e| panic!("create {}: {e}", self.dir.display()));
        let files = SippFiles::new(&self.dir, &self.label);
        for f in [&files.messages, &files.errors, &files.log, &files.stats] {
            let _ = std::fs::remove_file(f);
        }
        let stdout = File::create(&files.stdout)
            .unwrap_or_else(|e| panic!("create {}: {e}", files.stdout.display()));
        let stderr = stdout
            .try_clone()
            .unwrap_or_else(|e| panic!("dup stdout file: {e}"));
        let args = self.args();
        std::fs::write(
            self.dir.join(format!("{}.cmd", self.label)),
            format!("sipp {}\n", args.join(" ")),
        )
        .unwrap_or_else(|e| panic!("write command file: {e}"));
        let mut cmd = match &self.netns {
            Some(ns) => {
                let mut c = Command::new(paths::require_tool("ip"));
                c.args(["netns", "exec", ns.as_str()]).arg(&sipp);
                c
            }
            None => Command::new(sipp),
        };
        let child = cmd
            .args(&args)
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn sipp ({}): {e}", self.label));
        SippProcess {
            child: Some(child),
            label: self.label,
            files,
            local: self.local,
            transport: self.transport,
            limit: self.timeout + Duration::from_secs(15),
        }
    }

    /// Starts a callee and waits (up to 5 s) until its SIP port is bound.
    pub fn spawn_uas(self) -> SippProcess {
        let local = self
            .local
            .unwrap_or_else(|| panic!("{}: a UAS needs .local()", self.label));
        let transport = self.transport;
        let mut p = self.spawn();
        let ready = net::wait_until(Duration::from_secs(5), || {
            net::bound(local, transport) || p.exited()
        });
        assert!(
            ready && !p.exited(),
            "SIPp {} did not bind {local}/{transport:?}:\n{}",
            p.label,
            p.files.diagnostics()
        );
        p
    }

    /// Runs to completion and returns the outcome (not yet asserted).
    pub fn run(self) -> SippOutcome {
        self.spawn().wait()
    }
}

/// A running (or finished) SIPp process. Killed on drop if still running.
#[derive(Debug)]
pub struct SippProcess {
    child: Option<Child>,
    label: String,
    files: SippFiles,
    local: Option<SocketAddr>,
    transport: Transport,
    limit: Duration,
}

impl SippProcess {
    /// The label the run logs under.
    pub fn label(&self) -> &str {
        &self.label
    }

    /// Its files.
    pub fn files(&self) -> &SippFiles {
        &self.files
    }

    /// The messages it logged so far.
    pub fn messages(&self) -> Vec<SipMessage> {
        msglog::read(&self.files.messages)
    }

    fn exited(&mut self) -> bool {
        match self.child.as_mut() {
            Some(c) => matches!(c.try_wait(), Ok(Some(_))),
            None => true,
        }
    }

    /// Whether it is still running.
    pub fn running(&mut self) -> bool {
        !self.exited()
    }

    /// Soft exit (SIGUSR1, SIPp's `q`): no new calls, the calls in progress
    /// finish, then it exits with its usual status (0: every call
    /// succeeded). For callers that keep calling until the test says stop.
    pub fn quit(self) -> SippOutcome {
        if let Some(c) = &self.child {
            // Through the shell's kill builtin: the harness stays free of unsafe code.
            let _ = Command::new("sh")
                .arg("-c")
                .arg(format!("kill -USR1 {}", c.id()))
                .status();
        }
        self.wait()
    }

    /// Waits for SIPp to exit by itself (bounded by its `-timeout` plus a
    /// margin; past that it is killed and the test fails).
    pub fn wait(mut self) -> SippOutcome {
        let mut child = self
            .child
            .take()
            .unwrap_or_else(|| panic!("{} already reaped", self.label));
        let deadline = now() + self.limit;
        let status = loop {
            match child.try_wait() {
                Ok(Some(s)) => break s,
                Ok(None) if now() >= deadline => {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!(
                        "SIPp {} still running after {:?} despite -timeout; killed:\n{}",
                        self.label,
                        self.limit,
                        self.files.diagnostics()
                    );
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(20)),
                Err(e) => panic!("wait for sipp {}: {e}", self.label),
            }
        };
        self.outcome(Some(status))
    }

    /// Kills SIPp now (for callees that never finish by design) and returns
    /// what it logged; the exit status is not meaningful and not recorded.
    pub fn kill(mut self) -> SippOutcome {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        self.outcome(None)
    }

    fn outcome(&self, status: Option<ExitStatus>) -> SippOutcome {
        SippOutcome {
            label: self.label.clone(),
            exit_code: status.and_then(|s| s.code()),
            killed: status.is_none(),
            stats: SippStats::read(&self.files.stats),
            files: self.files.clone(),
            local: self.local,
            transport: self.transport,
        }
    }
}

impl Drop for SippProcess {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Call counters from SIPp's statistics CSV (cumulative, last row).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SippStats {
    /// Calls created (incoming plus outgoing).
    pub created: u64,
    /// Calls that completed their scenario.
    pub successful: u64,
    /// Calls that failed.
    pub failed: u64,
}

impl SippStats {
    /// Parses the last row of a `-trace_stat` CSV; `None` if absent or unreadable.
    pub fn read(path: &Path) -> Option<SippStats> {
        let text = std::fs::read_to_string(path).ok()?;
        Self::parse(&text)
    }

    /// Parses CSV text (semicolon-separated, header row first).
    pub fn parse(text: &str) -> Option<SippStats> {
        let mut lines = text.lines().filter(|l| !l.trim().is_empty());
        let header: Vec<&str> = lines.next()?.split(';').collect();
        let last: Vec<&str> = lines.next_back()?.split(';').collect();
        let field = |name: &str| -> Option<u64> {
            let i = header.iter().position(|h| *h == name)?;
            last.get(i)?.trim().parse().ok()
        };
        Some(SippStats {
            created: field("TotalCallCreated")?,
            successful: field("SuccessfulCall(C)")?,
            failed: field("FailedCall(C)")?,
        })
    }
}

/// What a finished SIPp run left behind.
#[derive(Debug, Clone)]
pub struct SippOutcome {
    /// Its label.
    pub label: String,
    /// Exit code (`None` if killed by us or by a signal).
    pub exit_code: Option<i32>,
    /// Whether we killed it.
    pub killed: bool,
    /// Final counters, if the CSV was written.
    pub stats: Option<SippStats>,
    /// Its files.
    pub files: SippFiles,
    local: Option<SocketAddr>,
    transport: Transport,
}

impl SippOutcome {
    /// Every message it logged.
    pub fn messages(&self) -> Vec<SipMessage> {
        msglog::read(&self.files.messages)
    }

    /// Messages it received.
    pub fn received(&self) -> Vec<SipMessage> {
        self.messages()
            .into_iter()
            .filter(|m| m.direction == msglog::Direction::Received)
            .collect()
    }

    /// Asserts SIPp exited 0 (every call succeeded) after exactly `calls`
    /// successful calls and no failed one.
    pub fn assert_success(&self, calls: u64) {
        let stats = self.stats;
        assert!(
            self.exit_code == Some(0)
                && stats.is_some_and(|s| s.successful == calls && s.failed == 0),
            "SIPp {} ({:?} on {:?}): exit {:?}, stats {stats:?}, expected {calls} successful calls and none failed\n{}",
            self.label,
            self.transport,
            self.local,
            self.exit_code,
            self.files.diagnostics()
        );
    }

    /// Asserts SIPp exited with `code` (1: some call failed, 99: normal exit
    /// without calls processed).
    pub fn assert_exit(&self, code: i32) {
        assert_eq!(
            self.exit_code,
            Some(code),
            "SIPp {}: unexpected exit status\n{}",
            self.label,
            self.files.diagnostics()
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats_come_from_the_last_row() {
        let csv = "StartTime;TotalCallCreated;CurrentCall;SuccessfulCall(P);SuccessfulCall(C);FailedCall(P);FailedCall(C)\n\
                   a;0;0;0;0;0;0;\n\
                   b;5;0;1;4;0;1;\n";
        let s = SippStats::parse(csv).unwrap();
        assert_eq!(
            s,
            SippStats {
                created: 5,
                successful: 4,
                failed: 1
            }
        );
    }

    #[test]
    fn args_carry_keys_media_and_remote_last() {
        let s = Sipp::new("/tmp/x", "pbx", "uac_call")
            .local("127.100.20.10:5070".parse().unwrap())
            .remote("127.100.20.1:5060".parse().unwrap())
            .key("callee", "+49")
            .key("callee", "+4971")
            .transport(Transport::Tcp);
        let a = s.args();
        assert_eq!(a.last().map(String::as_str), Some("127.100.20.1:5060"));
        let joined = a.join(" ");
        assert!(joined.contains("-t t1"), "{joined}");
        assert!(joined.contains("-mi 127.100.20.10 -mp 16000"), "{joined}");
        assert!(
            joined.contains("-key callee +4971") && !joined.contains("+49 "),
            "{joined}"
        );
        assert!(joined.contains("-timeout 30s -timeout_error"), "{joined}");
    }
}
