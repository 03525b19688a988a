//! The built `palisade` binary: exit codes, config errors, binding, OPTIONS,
//! SIGTERM drain and SIGHUP reload.
//!
//! Every test uses its own addresses in 127.0.55.0/24 (all of 127/8 is local
//! on Linux) so tests can run in parallel without sharing a port. Signals are
//! sent with the `kill` command; no unsafe code.

// Test helpers panic on purpose: a failed step fails the test.
#![allow(clippy::unwrap_used)]

use std::fs;
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_palisade");

/// A fresh directory for one test.
fn test_dir(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("palisade-cli")
        .join(name);
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap();
    dir
}

#[allow(clippy::disallowed_methods)] // Tests measure real time.
fn now() -> Instant {
    Instant::now()
}

/// Addresses of one test's lab.
#[derive(Clone, Copy)]
struct Net {
    inside: &'static str,
    outside: &'static str,
    pbx: &'static str,
    carrier: &'static str,
}

impl Net {
    fn inside(&self) -> SocketAddr {
        format!("{}:5060", self.inside).parse().unwrap()
    }
    fn outside(&self) -> SocketAddr {
        format!("{}:5060", self.outside).parse().unwrap()
    }
    fn pbx(&self) -> SocketAddr {
        format!("{}:5070", self.pbx).parse().unwrap()
    }
    fn carrier(&self) -> SocketAddr {
        format!("{}:5080", self.carrier).parse().unwrap()
    }

    /// A valid configuration: PBX on the inside, carrier on the outside.
    fn config(&self, format: &str, level: &str) -> String {
        let Net {
            inside,
            outside,
            pbx,
            carrier,
        } = self;
        format!(
            "\
node:
  name: cli-test
zones:
  - name: inside
    sip_address: {inside}
    media:
      port_min: 20000
      port_max: 20999
  - name: outside
    sip_address: {outside}
    media:
      port_min: 30000
      port_max: 30999
trunks:
  - name: pbx
    zone: inside
    members:
      - address: {pbx}
        port: 5070
  - name: carrier
    zone: outside
    members:
      - address: {carrier}
        port: 5080
routes:
  - name: pbx-to-carrier
    from_trunk: pbx
    to_trunk: carrier
sip:
  member_timeout_ms: 4000
shutdown:
  grace_seconds: 1
logging:
  format: {format}
  level: {level}
# These tests run on the host: no nftables, no alert database.
guard:
  mode: off
"
        )
    }
}

/// `text` with the first line whose trimmed text is `from` replaced by `to`
/// (same indentation); returns the text and the 1-based line number.
fn replace_line(text: &str, from: &str, to: &str) -> (String, usize) {
    let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
    let idx = lines
        .iter()
        .position(|l| l.trim() == from)
        .unwrap_or_else(|| panic!("no line {from:?}"));
    let indent = lines[idx].len() - lines[idx].trim_start().len();
    lines[idx] = format!("{}{to}", " ".repeat(indent));
    (lines.join("\n") + "\n", idx + 1)
}

fn check_config(path: &Path) -> Output {
    Command::new(BIN)
        .arg("check-config")
        .arg(path)
        .env_remove("RUST_LOG")
        .output()
        .unwrap()
}

/// A running `palisade run`, killed on drop if still alive.
struct Palisade {
    child: Child,
    log: PathBuf,
}

impl Palisade {
    fn start(config: &Path) -> Palisade {
        let log = config.with_extension("log");
        let child = Command::new(BIN)
            .arg("run")
            .arg("--config")
            .arg(config)
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        Palisade { child, log }
    }

    fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.child.id().to_string())
            .status()
            .unwrap();
        assert!(status.success(), "kill -{name} failed");
    }

    /// Waits for exit; panics with the log after `limit`.
    fn wait_exit(&mut self, limit: Duration) -> ExitStatus {
        let deadline = now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                now() < deadline,
                "palisade did not exit within {limit:?}\n--- log ---\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits until the log contains `needle`; panics with the log after `limit`.
    fn wait_log(&mut self, needle: &str, limit: Duration) {
        let deadline = now() + limit;
        loop {
            if self.log().contains(needle) {
                return;
            }
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!(
                    "palisade exited ({status}) before logging {needle:?}\n--- log ---\n{}",
                    self.log()
                );
            }
            assert!(
                now() < deadline,
                "no {needle:?} in the log within {limit:?}\n--- log ---\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits until an OPTIONS from `from` to `to` is answered with 200; returns it.
    fn wait_ready(&mut self, from: &str, to: SocketAddr) -> String {
        let deadline = now() + Duration::from_secs(15);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("palisade exited ({status})\n--- log ---\n{}", self.log());
            }
            if let Some(resp) = options(from, to, Duration::from_millis(250))
                && resp.starts_with("SIP/2.0 200")
            {
                return resp;
            }
            assert!(
                now() < deadline,
                "no 200 to OPTIONS on {to}\n--- log ---\n{}",
                self.log()
            );
        }
    }
}

impl Drop for Palisade {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

static SEQ: AtomicU64 = AtomicU64::new(0);

fn unique(what: &str) -> String {
    format!(
        "{what}-{}-{}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    )
}

/// Sends one OPTIONS over UDP from `from` (ephemeral port) and returns the
/// first answer within `wait`.
fn options(from: &str, to: SocketAddr, wait: Duration) -> Option<String> {
    let sock = UdpSocket::bind((from, 0)).unwrap();
    let local = sock.local_addr().unwrap();
    let branch = unique("z9hG4bKopt");
    let msg = format!(
        "OPTIONS sip:{to} SIP/2.0\r\n\
         Via: SIP/2.0/UDP {local};branch={branch};rport\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:probe@{from}>;tag={tag}\r\n\
         To: <sip:{to}>\r\n\
         Call-ID: {call_id}\r\n\
         CSeq: 1 OPTIONS\r\n\
         Content-Length: 0\r\n\r\n",
        tag = unique("t"),
        call_id = unique("opt"),
    );
    sock.send_to(msg.as_bytes(), to).unwrap();
    sock.set_read_timeout(Some(wait)).unwrap();
    let mut buf = [0u8; 65_535];
    let (n, _) = sock.recv_from(&mut buf).ok()?;
    Some(String::from_utf8_lossy(&buf[..n]).into_owned())
}

/// The value of the first header `name` (case-insensitive) in `msg`.
fn header<'a>(msg: &'a str, name: &str) -> &'a str {
    msg.lines()
        .find_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.trim().eq_ignore_ascii_case(name).then(|| v.trim())
        })
        .unwrap_or_else(|| panic!("no {name} header in\n{msg}"))
}

/// Every Via line of `msg`, in order, as written.
fn vias(msg: &str) -> Vec<&str> {
    msg.lines()
        .filter(|l| {
            l.split_once(':')
                .is_some_and(|(n, _)| n.trim().eq_ignore_ascii_case("via"))
        })
        .collect()
}

/// A response to `req` with `status`, copying Via, From, To (adding
/// `to_tag` when given), Call-ID and CSeq.
fn response(req: &str, status: &str, to_tag: Option<&str>, contact: Option<&str>) -> String {
    let mut out = format!("SIP/2.0 {status}\r\n");
    for v in vias(req) {
        out.push_str(v.trim_end_matches('\r'));
        out.push_str("\r\n");
    }
    out.push_str(&format!("From: {}\r\n", header(req, "From")));
    match to_tag {
        Some(t) => out.push_str(&format!("To: {};tag={t}\r\n", header(req, "To"))),
        None => out.push_str(&format!("To: {}\r\n", header(req, "To"))),
    }
    out.push_str(&format!("Call-ID: {}\r\n", header(req, "Call-ID")));
    out.push_str(&format!("CSeq: {}\r\n", header(req, "CSeq")));
    if let Some(c) = contact {
        out.push_str(&format!("Contact: <sip:{c}>\r\n"));
    }
    out.push_str("Content-Length: 0\r\n\r\n");
    out
}

/// Receives one message on `sock` within `wait`.
fn recv(sock: &UdpSocket, wait: Duration) -> Option<(String, SocketAddr)> {
    sock.set_read_timeout(Some(wait)).unwrap();
    let mut buf = [0u8; 65_535];
    let (n, from) = sock.recv_from(&mut buf).ok()?;
    Some((String::from_utf8_lossy(&buf[..n]).into_owned(), from))
}

/// Receives until a message whose first line starts with `start` arrives
/// (past 100 Trying, retransmissions...), within `wait`.
fn recv_until(sock: &UdpSocket, start: &str, wait: Duration) -> (String, SocketAddr) {
    let deadline = now() + wait;
    loop {
        let left = deadline.saturating_duration_since(now());
        assert!(!left.is_zero(), "no {start:?} on {:?}", sock.local_addr());
        if let Some((msg, from)) = recv(sock, left)
            && msg.starts_with(start)
        {
            return (msg, from);
        }
    }
}

fn quickstart() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../configs/quickstart.yaml")
}

#[test]
fn version_names_the_crate_version() {
    let out = Command::new(BIN).arg("--version").output().unwrap();
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("palisade {}", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn usage_errors_exit_2() {
    for args in [&["run"][..], &[], &["frobnicate"], &["check-config"]] {
        let out = Command::new(BIN).args(args).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "palisade {args:?}");
    }
}

#[test]
fn check_config_accepts_the_quickstart() {
    let path = quickstart();
    let out = check_config(&path);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!("{}: ok (2 zones, 2 trunks, 2 routes)\n", path.display())
    );
}

#[test]
fn check_config_points_at_file_line_column_and_field() {
    let dir = test_dir("check-bad");
    let net = Net {
        inside: "127.0.55.200",
        outside: "127.0.55.201",
        pbx: "127.0.55.202",
        carrier: "127.0.55.203",
    };
    let good = net.config("text", "info");
    let cases = [
        // Out of the type's range (a parse error).
        ("port: 5070", "port: 70000", "trunks[0].members[0].port"),
        // Unknown key.
        ("level: info", "levle: info", "logging.levle"),
        // A rule: a reference to a trunk that does not exist.
        (
            "to_trunk: carrier",
            "to_trunk: nowhere",
            "routes[0].to_trunk",
        ),
    ];
    for (i, (from, to, field)) in cases.into_iter().enumerate() {
        let (text, line) = replace_line(&good, from, to);
        let path = dir.join(format!("bad-{i}.yaml"));
        fs::write(&path, text).unwrap();
        let out = check_config(&path);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "`{to}` accepted: {stderr}");
        assert!(out.stdout.is_empty(), "stdout on error: {:?}", out.stdout);
        let prefix = format!("{}:{line}:", path.display());
        let diag = stderr
            .lines()
            .find(|l| l.starts_with(&prefix))
            .unwrap_or_else(|| panic!("no {prefix}COL diagnostic for `{to}`:\n{stderr}"));
        let (col, rest) = diag[prefix.len()..].split_once(": ").unwrap();
        assert!(col.parse::<u32>().unwrap() >= 1, "{diag}");
        assert!(rest.starts_with(field), "{diag} does not name {field}");
    }
    let out = check_config(&dir.join("missing.yaml"));
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("missing.yaml"));
}

#[test]
fn run_with_a_broken_config_exits_2_without_binding() {
    let dir = test_dir("run-bad");
    let net = Net {
        inside: "127.0.55.1",
        outside: "127.0.55.2",
        pbx: "127.0.55.101",
        carrier: "127.0.55.102",
    };
    // The zones are fine; only a route is wrong, so a binary that binds
    // before validating everything would open 127.0.55.1:5060.
    let (text, line) = replace_line(
        &net.config("text", "debug"),
        "to_trunk: carrier",
        "to_trunk: nowhere",
    );
    let path = dir.join("bad.yaml");
    fs::write(&path, text).unwrap();
    let started = now();
    let mut p = Palisade::start(&path);
    let status = p.wait_exit(Duration::from_secs(5));
    assert_eq!(status.code(), Some(2), "{}", p.log());
    assert!(now() - started < Duration::from_secs(5));
    let log = p.log();
    assert!(
        log.contains(&format!("{}:{line}:", path.display())) && log.contains("routes[0].to_trunk"),
        "{log}"
    );
    assert!(!log.contains("listening"), "{log}");
    // Nothing was left bound (and nothing is bound by another test).
    UdpSocket::bind(net.inside()).expect("inside UDP port is free");
    TcpListener::bind(net.inside()).expect("inside TCP port is free");
    UdpSocket::bind(net.outside()).expect("outside UDP port is free");
}

#[test]
fn run_exits_3_when_a_listener_cannot_bind() {
    let dir = test_dir("run-busy");
    let net = Net {
        inside: "127.0.55.7",
        outside: "127.0.55.8",
        pbx: "127.0.55.107",
        carrier: "127.0.55.108",
    };
    let path = dir.join("p.yaml");
    fs::write(&path, net.config("text", "info")).unwrap();
    let _busy = UdpSocket::bind(net.outside()).unwrap();
    let mut p = Palisade::start(&path);
    let status = p.wait_exit(Duration::from_secs(5));
    let log = p.log();
    assert_eq!(status.code(), Some(3), "{log}");
    assert!(log.contains("127.0.55.8:5060"), "{log}");
    // The listeners bound before the failure were released.
    UdpSocket::bind(net.inside()).expect("inside UDP port is free");
}

#[test]
fn run_answers_options_and_drains_on_sigterm() {
    let dir = test_dir("run-options");
    let net = Net {
        inside: "127.0.55.3",
        outside: "127.0.55.4",
        pbx: "127.0.55.103",
        carrier: "127.0.55.104",
    };
    let path = dir.join("p.yaml");
    fs::write(&path, net.config("text", "info")).unwrap();
    let mut p = Palisade::start(&path);
    let resp = p.wait_ready(net.pbx, net.inside());
    let allow = header(&resp, "Allow");
    for m in ["INVITE", "ACK", "BYE", "CANCEL", "OPTIONS"] {
        assert!(allow.contains(m), "Allow: {allow}");
    }
    // The outside zone answers too (from any source).
    let resp = options(net.carrier, net.outside(), Duration::from_secs(2)).unwrap();
    assert!(resp.starts_with("SIP/2.0 200"), "{resp}");

    let sent = now();
    p.signal("TERM");
    let status = p.wait_exit(Duration::from_secs(5));
    let log = p.log();
    assert_eq!(status.code(), Some(0), "{log}");
    // No calls: nothing to wait for.
    assert!(now() - sent < Duration::from_secs(3), "{log}");
    for step in [
        "shutdown requested: draining",
        "drain complete: no active calls",
        "transports shut down",
        "final stats",
        "palisade stopped",
    ] {
        assert!(log.contains(step), "no {step:?} in\n{log}");
    }
    UdpSocket::bind(net.inside()).expect("inside UDP port is free after exit");
}

#[test]
fn sighup_reloads_a_valid_config_and_keeps_the_old_one_otherwise() {
    let dir = test_dir("run-reload");
    let net = Net {
        inside: "127.0.55.5",
        outside: "127.0.55.6",
        pbx: "127.0.55.105",
        carrier: "127.0.55.106",
    };
    let path = dir.join("p.yaml");
    let good = net.config("json", "info");
    fs::write(&path, &good).unwrap();
    let mut p = Palisade::start(&path);
    p.wait_ready(net.pbx, net.inside());
    // JSON lines, fields flattened.
    let first = p.log().lines().next().unwrap_or_default().to_owned();
    assert!(
        first.starts_with('{') && first.ends_with('}') && first.contains("\"level\":\"INFO\""),
        "{first}"
    );

    // A live change: applied.
    let (text, _) = replace_line(&good, "member_timeout_ms: 4000", "member_timeout_ms: 3000");
    fs::write(&path, text).unwrap();
    p.signal("HUP");
    p.wait_log("\"message\":\"reloaded\"", Duration::from_secs(5));
    let resp = options(net.pbx, net.inside(), Duration::from_secs(2)).unwrap();
    assert!(resp.starts_with("SIP/2.0 200"), "{resp}");

    // A change that needs a restart: refused, named, old config kept.
    let (text, _) = replace_line(&good, "name: cli-test", "name: renamed");
    fs::write(&path, text).unwrap();
    p.signal("HUP");
    p.wait_log("node.name", Duration::from_secs(5));
    p.wait_log(
        "reload refused: keeping the running configuration",
        Duration::from_secs(5),
    );

    // A broken file: the error with its location, old config kept.
    let (text, _) = replace_line(&good, "to_trunk: carrier", "to_trunk: nowhere");
    fs::write(&path, text).unwrap();
    p.signal("HUP");
    p.wait_log("routes[0].to_trunk", Duration::from_secs(5));
    p.wait_log(
        "reload failed: keeping the running configuration",
        Duration::from_secs(5),
    );
    assert_eq!(p.log().matches("\"message\":\"reloaded\"").count(), 1);

    let resp = options(net.pbx, net.inside(), Duration::from_secs(2)).unwrap();
    assert!(resp.starts_with("SIP/2.0 200"), "{resp}");
    p.signal("TERM");
    assert_eq!(p.wait_exit(Duration::from_secs(5)).code(), Some(0));
}

#[test]
fn sigterm_drains_then_ends_calls_with_bye_after_the_grace_period() {
    let dir = test_dir("run-drain");
    let net = Net {
        inside: "127.0.55.9",
        outside: "127.0.55.10",
        pbx: "127.0.55.11",
        carrier: "127.0.55.12",
    };
    let path = dir.join("p.yaml");
    fs::write(&path, net.config("text", "debug")).unwrap();
    let pbx = UdpSocket::bind(net.pbx()).unwrap();
    let carrier = UdpSocket::bind(net.carrier()).unwrap();
    let mut p = Palisade::start(&path);
    p.wait_ready(net.pbx, net.inside());
    let wait = Duration::from_secs(5);

    // The PBX calls; the carrier answers; the PBX ACKs.
    let inside = net.inside();
    let pbx_addr = net.pbx();
    let invite = |call_id: &str, branch: &str| {
        format!(
            "INVITE sip:+4930999@{inside} SIP/2.0\r\n\
             Via: SIP/2.0/UDP {pbx_addr};branch={branch};rport\r\n\
             Max-Forwards: 70\r\n\
             From: <sip:100@{pbx_addr}>;tag=pbxtag\r\n\
             To: <sip:+4930999@{inside}>\r\n\
             Call-ID: {call_id}\r\n\
             CSeq: 1 INVITE\r\n\
             Contact: <sip:100@{pbx_addr}>\r\n\
             Content-Length: 0\r\n\r\n"
        )
    };
    let call_id = unique("drain-call");
    pbx.send_to(invite(&call_id, "z9hG4bKdrain1").as_bytes(), inside)
        .unwrap();
    let (b_invite, from) = recv_until(&carrier, "INVITE ", wait);
    let carrier_addr = net.carrier();
    carrier
        .send_to(
            response(
                &b_invite,
                "200 OK",
                Some("cartag"),
                Some(&carrier_addr.to_string()),
            )
            .as_bytes(),
            from,
        )
        .unwrap();
    let (ok, _) = recv_until(&pbx, "SIP/2.0 200", wait);
    let to = header(&ok, "To");
    let ack = format!(
        "ACK sip:{inside} SIP/2.0\r\n\
         Via: SIP/2.0/UDP {pbx_addr};branch=z9hG4bKdrainack;rport\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:100@{pbx_addr}>;tag=pbxtag\r\n\
         To: {to}\r\n\
         Call-ID: {call_id}\r\n\
         CSeq: 1 ACK\r\n\
         Content-Length: 0\r\n\r\n"
    );
    pbx.send_to(ack.as_bytes(), inside).unwrap();
    p.wait_log("event=answered", wait);

    // SIGTERM: new calls are refused with 503 while the call goes on.
    p.signal("TERM");
    p.wait_log("draining", wait);
    let refused_id = unique("drain-refused");
    pbx.send_to(invite(&refused_id, "z9hG4bKdrain2").as_bytes(), inside)
        .unwrap();
    let (refused, _) = recv_until(&pbx, "SIP/2.0 503", wait);
    assert_eq!(header(&refused, "Call-ID"), refused_id);

    // After the 1 s grace: BYE on both legs; answer them.
    let (bye_b, from_b) = recv_until(&carrier, "BYE ", wait);
    carrier
        .send_to(response(&bye_b, "200 OK", None, None).as_bytes(), from_b)
        .unwrap();
    let (bye_a, from_a) = recv_until(&pbx, "BYE ", wait);
    assert_eq!(header(&bye_a, "Call-ID"), call_id);
    pbx.send_to(response(&bye_a, "200 OK", None, None).as_bytes(), from_a)
        .unwrap();

    let status = p.wait_exit(Duration::from_secs(6));
    let log = p.log();
    assert_eq!(status.code(), Some(0), "{log}");
    for step in [
        "grace period over: ending remaining calls",
        "event=ended reason=shutdown",
        "calls ended: waiting for their BYE and CANCEL transactions",
        "linger over",
        "palisade stopped",
    ] {
        assert!(log.contains(step), "no {step:?} in\n{log}");
    }
}

/// `palisade alerts ack|resolve|false-positive`: each moves the alert on,
/// records who and the note (as `show` prints them), a move backwards is
/// refused with exit 2 and changes nothing, and a missing `--by` too.
#[test]
fn alerts_ack_resolve_and_false_positive_round_trip() {
    use palisade_guard::{AlertEvent, CallEvidence, Severity, Subject};
    let dir = test_dir("alerts-lifecycle");
    let db = dir.join("alerts.db");
    {
        let mut store = palisade_alerts::Store::open(&db).unwrap();
        for (rule, who) in [("irsf", "pbx"), ("wangiri", "carrier")] {
            let ev = AlertEvent {
                rule: rule.into(),
                kind: "high_risk_destination".into(),
                severity: Severity::Critical,
                subject: Subject {
                    kind: "trunk".into(),
                    value: who.into(),
                },
                measure: 2,
                threshold: 2,
                action: "reject".into(),
                at_unix_ms: 1_767_601_800_000,
                occurrences: 1,
                evidence: vec![CallEvidence {
                    time_unix_ms: 1_767_601_800_000,
                    from: "+4989555000".into(),
                    to: "+88212345678".into(),
                    duration_ms: 0,
                    result: "rejected".into(),
                }],
            };
            store.record(&ev, 10).unwrap();
        }
    }
    let cli = |args: &[&str]| -> Output {
        Command::new(BIN)
            .arg("alerts")
            .args(args)
            .arg("--db")
            .arg(&db)
            .output()
            .unwrap()
    };
    let show = |id: &str| -> serde_json::Value {
        let out = cli(&["show", id]);
        assert!(out.status.success(), "{out:?}");
        serde_json::from_slice(&out.stdout).unwrap()
    };
    assert_eq!(show("1")["status"], "open");

    let out = cli(&["ack", "1", "--by", "alice", "--note", "looking into it"]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "alert 1 is acknowledged (by alice)"
    );
    let a = show("1");
    assert_eq!(
        (&a["status"], &a["status_by"], &a["status_note"]),
        (
            &serde_json::json!("acknowledged"),
            &serde_json::json!("alice"),
            &serde_json::json!("looking into it")
        ),
        "{a}"
    );
    let out = cli(&["resolve", "1", "--by", "bob", "--note", "blocked the range"]);
    assert!(out.status.success(), "{out:?}");
    let a = show("1");
    assert_eq!(
        (&a["status"], &a["status_by"]),
        (&serde_json::json!("resolved"), &serde_json::json!("bob"))
    );
    assert_eq!(a["status_note"], "blocked the range");

    // Backwards is refused: exit 2, the alert stays resolved.
    let out = cli(&["ack", "1", "--by", "carol"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert_eq!(show("1")["status"], "resolved");

    // Straight from open to false-positive; --by is required.
    let out = cli(&["false-positive", "2", "--by", " ", "--note", "x"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert_eq!(show("2")["status"], "open");
    let out = cli(&["false-positive", "2", "--by", "dave", "--note", "test call"]);
    assert!(out.status.success(), "{out:?}");
    let a = show("2");
    assert_eq!(a["status"], "false-positive");
    assert_eq!(a["status_by"], "dave");
    assert_eq!(a["status_note"], "test call");

    // The list filters by status.
    let out = cli(&["list", "--status", "false-positive", "--json"]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(text.lines().count(), 1, "{text}");
    assert!(text.contains("\"rule\":\"wangiri\""), "{text}");
    // An unknown id: exit 2.
    let out = cli(&["resolve", "99", "--by", "x"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
}
