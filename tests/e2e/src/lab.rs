//! A running Palisade in a slot's own loopback network.
//!
//! [`Lab::start`] writes the slot's config (the quickstart topology moved to
//! `127.100.N.0/24`) into `tests/e2e/out/<slot>/palisade.yaml`, spawns
//! `palisade run --config` with stdout and stderr in files beside it, and
//! waits (bounded) until Palisade answers an OPTIONS on its inside address. On
//! drop it checks Palisade is still alive (a crash fails the test), sends
//! SIGTERM, waits for the drain, then SIGKILL. Every failure prints the log tail.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::net::{Transport, now};
use crate::numbers;
use crate::paths;
use crate::raw;
use crate::sipp::Sipp;
use crate::slots::{ADMIN_PORT, Net, PALISADE_PORT, Slot};

/// Knobs for the generated config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LabConfig {
    /// Transport of the PBX trunk member (the carrier stays on UDP).
    pub pbx_transport: Transport,
    /// `sip.member_timeout_ms`: no answer from a carrier member within this fails over.
    pub member_timeout_ms: u64,
    /// `sip.t1_ms`.
    pub t1_ms: u64,
    /// `sip.no_answer_timeout_seconds`.
    pub no_answer_timeout_seconds: u64,
    /// `sip.max_udp_message_bytes` and `sip.max_tcp_message_bytes`: one cap for
    /// both, 16 KiB, which the malformed corpus's oversize case relies on.
    pub max_message_bytes: u64,
    /// `shutdown.grace_seconds`.
    pub shutdown_grace_seconds: u64,
    /// `logging.level`.
    pub log_level: String,
    /// `logging.batch_ms`: 0 here, so a test can read a line in the log as
    /// soon as the event that logs it is over (the shipped 100 ms batch runs
    /// in the quickstart test and the benchmark, and `palisade`'s unit tests).
    pub log_batch_ms: u64,
    /// The inside zone's media port range (the outside's is 30000-30999).
    pub inside_media_ports: (u16, u16),
    /// The top-level `media:` section as a YAML flow mapping body
    /// (`timeout_seconds: 2`), or empty for the defaults.
    pub media: String,
    /// The PBX trunk's `media:` policy (flow mapping body), or empty.
    pub pbx_media: String,
    /// The carrier trunk's `media:` policy (flow mapping body), or empty.
    pub carrier_media: String,
    /// YAML lines added to the `pbx` trunk (indented 4 spaces, each ending in a newline).
    pub pbx_trunk_extra: String,
    /// YAML lines added to the `carrier` trunk (indented 4 spaces).
    pub carrier_trunk_extra: String,
    /// Top-level YAML sections appended to the config (e.g. `normalization:`).
    pub extra_sections: String,
    /// The `guard:`, `fraud:` and `alerts:` sections, verbatim. The default
    /// turns the guard off (tests outside a network namespace must not touch
    /// the host's nftables) and keeps the database in the output directory.
    pub guard_yaml: String,
}

/// The guard sections of [`LabConfig::default`].
pub const GUARD_OFF: &str = "\
guard:
  mode: off
fraud:
  rules: []
alerts:
  database_path: alerts.db
";

impl Default for LabConfig {
    fn default() -> Self {
        LabConfig {
            pbx_transport: Transport::Udp,
            member_timeout_ms: 1500,
            t1_ms: 500,
            no_answer_timeout_seconds: 180,
            max_message_bytes: 16384,
            shutdown_grace_seconds: 2,
            log_level: "debug".to_string(),
            log_batch_ms: 0,
            inside_media_ports: (20000, 20999),
            media: String::new(),
            pbx_media: String::new(),
            carrier_media: String::new(),
            pbx_trunk_extra: String::new(),
            carrier_trunk_extra: String::new(),
            extra_sections: String::new(),
            guard_yaml: GUARD_OFF.to_string(),
        }
    }
}

/// `    media: {...}` for a trunk, or nothing.
fn trunk_media(policy: &str) -> String {
    if policy.is_empty() {
        String::new()
    } else {
        format!("    media: {{{policy}}}\n")
    }
}

impl LabConfig {
    /// The YAML for `slot`: the shape of configs/quickstart.yaml on the slot's addresses.
    pub fn render(&self, slot: Slot) -> String {
        let net = slot.net();
        let name = slot.name();
        let inside = net.inside_ip();
        let outside = net.outside_ip();
        let pbx = net.pbx_ip();
        let primary = net.carrier_primary_ip();
        let secondary = net.carrier_secondary_ip();
        let pbx_port = net.pbx().port();
        let carrier_port = net.carrier_primary().port();
        let pbx_transport = self.pbx_transport.config_name();
        let LabConfig {
            member_timeout_ms,
            t1_ms,
            no_answer_timeout_seconds,
            max_message_bytes,
            shutdown_grace_seconds,
            log_level,
            log_batch_ms,
            inside_media_ports: (inside_min, inside_max),
            media,
            pbx_media,
            carrier_media,
            pbx_trunk_extra,
            carrier_trunk_extra,
            extra_sections,
            guard_yaml,
            ..
        } = self;
        let pbx_media = trunk_media(pbx_media);
        let carrier_media = trunk_media(carrier_media);
        let media = if media.is_empty() {
            String::new()
        } else {
            format!("\nmedia: {{{media}}}\n")
        };
        format!(
            "# Generated by palisade-e2e for slot {name}: the quickstart topology on {inside}/24.\n\
node:\n\
\x20 name: e2e-{name}\n\
\n\
zones:\n\
\x20 - name: inside\n\
\x20   sip_address: {inside}\n\
\x20   udp_port: {PALISADE_PORT}\n\
\x20   tcp_port: {PALISADE_PORT}\n\
\x20   media:\n\
\x20     address: {inside}\n\
\x20     port_min: {inside_min}\n\
\x20     port_max: {inside_max}\n\
\x20 - name: outside\n\
\x20   sip_address: {outside}\n\
\x20   udp_port: {PALISADE_PORT}\n\
\x20   tcp_port: {PALISADE_PORT}\n\
\x20   media:\n\
\x20     address: {outside}\n\
\x20     port_min: 30000\n\
\x20     port_max: 30999\n\
\n\
trunks:\n\
\x20 - name: pbx\n\
\x20   zone: inside\n\
\x20   members:\n\
\x20     - address: {pbx}\n\
\x20       port: {pbx_port}\n\
\x20       transport: {pbx_transport}\n\
{pbx_media}\
{pbx_trunk_extra}\
\x20 - name: carrier\n\
\x20   zone: outside\n\
\x20   members:\n\
\x20     - address: {primary}\n\
\x20       port: {carrier_port}\n\
\x20       transport: udp\n\
\x20     - address: {secondary}\n\
\x20       port: {carrier_port}\n\
\x20       transport: udp\n\
{carrier_media}\
{carrier_trunk_extra}\
\n\
routes:\n\
\x20 - name: pbx-to-carrier\n\
\x20   from_trunk: pbx\n\
\x20   to_trunk: carrier\n\
\x20 - name: carrier-to-pbx\n\
\x20   from_trunk: carrier\n\
\x20   number_prefixes: [\"+4930123\"]\n\
\x20   to_trunk: pbx\n\
\n\
sip:\n\
\x20 member_timeout_ms: {member_timeout_ms}\n\
\x20 t1_ms: {t1_ms}\n\
\x20 no_answer_timeout_seconds: {no_answer_timeout_seconds}\n\
\x20 max_udp_message_bytes: {max_message_bytes}\n\
\x20 max_tcp_message_bytes: {max_message_bytes}\n\
{media}\
\n\
shutdown:\n\
\x20 grace_seconds: {shutdown_grace_seconds}\n\
\n\
logging:\n\
\x20 format: text\n\
\x20 level: {log_level}\n\
\x20 batch_ms: {log_batch_ms}\n\
\n\
admin:\n\
\x20 listen: {inside}:{ADMIN_PORT}\n\
{extra_sections}\
\n\
{guard_yaml}"
        )
    }
}

/// Configures a [`Lab`] before starting it.
#[derive(Debug, Clone)]
pub struct LabBuilder {
    slot: Slot,
    config: LabConfig,
    binary: Option<PathBuf>,
    ready_timeout: Duration,
    config_text: Option<String>,
}

impl LabBuilder {
    /// Writes this YAML instead of rendering [`LabConfig`] (start from
    /// `LabConfig::render` and edit it). `config` knobs still set the grace
    /// period and the PBX transport the helpers use.
    pub fn config_text(mut self, yaml: impl Into<String>) -> Self {
        self.config_text = Some(yaml.into());
        self
    }
    /// Replaces the config knobs.
    pub fn config(mut self, config: LabConfig) -> Self {
        self.config = config;
        self
    }
    /// Edits the config knobs in place.
    pub fn with(mut self, edit: impl FnOnce(&mut LabConfig)) -> Self {
        edit(&mut self.config);
        self
    }

    /// Replaces the `guard:`, `fraud:` and `alerts:` sections.
    pub fn guard_yaml(mut self, yaml: &str) -> Self {
        self.config.guard_yaml = yaml.to_string();
        self
    }
    /// Puts the PBX trunk on `t`.
    pub fn pbx_transport(mut self, t: Transport) -> Self {
        self.config.pbx_transport = t;
        self
    }
    /// Runs this program instead of the real binary (harness self-test only).
    pub fn binary(mut self, path: impl Into<PathBuf>) -> Self {
        self.binary = Some(path.into());
        self
    }
    /// How long Palisade may take to answer its first OPTIONS.
    pub fn ready_timeout(mut self, t: Duration) -> Self {
        self.ready_timeout = t;
        self
    }

    /// Writes the config, spawns Palisade and waits until it answers OPTIONS.
    pub fn start(self) -> Lab {
        let dir = self.slot.fresh_dir();
        let config_path = dir.join("palisade.yaml");
        let yaml = self
            .config_text
            .clone()
            .unwrap_or_else(|| self.config.render(self.slot));
        std::fs::write(&config_path, yaml)
            .unwrap_or_else(|e| panic!("write {}: {e}", config_path.display()));
        let binary = self.binary.clone().unwrap_or_else(paths::palisade_bin);
        let log_path = dir.join("palisade.log");
        let log = File::create(&log_path)
            .unwrap_or_else(|e| panic!("create {}: {e}", log_path.display()));
        let log_err = log
            .try_clone()
            .unwrap_or_else(|e| panic!("dup log file: {e}"));
        let child = Command::new(&binary)
            .arg("run")
            .arg("--config")
            .arg(&config_path)
            .current_dir(&dir)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {} run: {e}", binary.display()));
        let mut lab = Lab {
            slot: self.slot,
            dir,
            config_path,
            log_path,
            child: Some(child),
            grace: Duration::from_secs(self.config.shutdown_grace_seconds),
            pbx_transport: self.config.pbx_transport,
        };
        lab.wait_ready(self.ready_timeout);
        lab
    }
}

/// A running Palisade on a slot's network.
#[derive(Debug)]
pub struct Lab {
    slot: Slot,
    dir: PathBuf,
    config_path: PathBuf,
    log_path: PathBuf,
    child: Option<Child>,
    grace: Duration,
    pbx_transport: Transport,
}

impl Lab {
    /// A builder with the default config for `slot`.
    pub fn builder(slot: Slot) -> LabBuilder {
        LabBuilder {
            slot,
            config: LabConfig::default(),
            binary: None,
            ready_timeout: Duration::from_secs(15),
            config_text: None,
        }
    }

    /// Starts Palisade with the default config for `slot`.
    pub fn start(slot: Slot) -> Lab {
        Self::builder(slot).start()
    }

    /// The slot.
    pub fn slot(&self) -> Slot {
        self.slot
    }
    /// The slot's addresses.
    pub fn net(&self) -> Net {
        self.slot.net()
    }
    /// The admin endpoint of the rendered config (`admin.listen`).
    pub fn admin(&self) -> std::net::SocketAddr {
        std::net::SocketAddr::new(self.slot.net().inside_ip().into(), ADMIN_PORT)
    }
    /// The output directory (config, Palisade log, SIPp logs).
    pub fn dir(&self) -> &Path {
        &self.dir
    }
    /// The generated config file.
    pub fn config_path(&self) -> &Path {
        &self.config_path
    }

    /// Palisade's stdout and stderr so far.
    pub fn log(&self) -> String {
        std::fs::read(&self.log_path)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }

    /// Waits (bounded) until Palisade's log has a line containing every one
    /// of `needles`; returns that line. Panics with the log tail otherwise.
    pub fn wait_log(&self, needles: &[&str], limit: Duration) -> String {
        let deadline = now() + limit;
        loop {
            if let Some(line) = self
                .log()
                .lines()
                .find(|l| needles.iter().all(|n| l.contains(n)))
            {
                return line.to_string();
            }
            if now() >= deadline {
                panic!(
                    "palisade ({}) logged no line with {needles:?} within {limit:?}\n--- log tail ---\n{}",
                    self.slot.name(),
                    self.log_tail(60)
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The last `n` lines of Palisade's log.
    pub fn log_tail(&self, n: usize) -> String {
        let log = self.log();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    fn exit_status(&mut self) -> Option<ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
    }

    /// Panics (with the log tail) if Palisade has exited.
    pub fn assert_alive(&mut self) {
        if let Some(status) = self.exit_status() {
            panic!(
                "palisade ({}) is not running any more: {status}\n--- log tail ({}) ---\n{}",
                self.slot.name(),
                self.log_path.display(),
                self.log_tail(60)
            );
        }
    }

    /// Sends one OPTIONS from the PBX's address to the inside zone over UDP and
    /// returns the response, if any arrives within `wait`.
    pub fn options_ping(&self, wait: Duration) -> Option<Vec<u8>> {
        let net = self.net();
        static SEQ: AtomicU64 = AtomicU64::new(0);
        let seq = SEQ.fetch_add(1, Ordering::Relaxed);
        let call_id = format!("e2e-ping-{}-{}-{seq}", self.slot.name(), std::process::id());
        raw::udp_options(net.pbx_ip(), net.inside(), &call_id, wait)
    }

    fn wait_ready(&mut self, limit: Duration) {
        let deadline = now() + limit;
        loop {
            self.assert_alive();
            if let Some(resp) = self.options_ping(Duration::from_millis(250))
                && resp.starts_with(b"SIP/2.0 200")
            {
                return;
            }
            if now() >= deadline {
                panic!(
                    "palisade ({}) did not answer OPTIONS on {} within {limit:?}\n--- log tail ({}) ---\n{}",
                    self.slot.name(),
                    self.net().inside(),
                    self.log_path.display(),
                    self.log_tail(60)
                );
            }
        }
    }

    /// A SIPp run logging into this lab's directory.
    pub fn sipp(&self, label: &str, scenario: &str) -> Sipp {
        Sipp::new(&self.dir, label, scenario)
    }

    /// The PBX calling out: from `pbx:5070` to the inside zone on the PBX trunk's
    /// transport, dialling [`numbers::EXTERNAL`], expecting Palisade's inside
    /// address as its peer. Logs as `pbx`.
    pub fn pbx_uac(&self, scenario: &str) -> Sipp {
        let net = self.net();
        self.pbx_uas(scenario)
            .remote(net.inside())
            .key("caller", numbers::PBX_CALLER)
            .key("callee", numbers::EXTERNAL)
    }

    /// The PBX taking calls on `pbx:5070`, expecting Palisade's inside address.
    /// Logs as `pbx`.
    pub fn pbx_uas(&self, scenario: &str) -> Sipp {
        let net = self.net();
        self.sipp("pbx", scenario)
            .local(net.pbx())
            .transport(self.pbx_transport)
            .key("expect_peer", net.inside_ip())
    }

    /// The primary carrier member taking calls on `.20:5080`, expecting
    /// Palisade's outside address. Logs as `carrier1`.
    pub fn carrier_primary(&self, scenario: &str) -> Sipp {
        let net = self.net();
        self.sipp("carrier1", scenario)
            .local(net.carrier_primary())
            .key("expect_peer", net.outside_ip())
    }

    /// The secondary carrier member on `.21:5080`. Logs as `carrier2`.
    pub fn carrier_secondary(&self, scenario: &str) -> Sipp {
        let net = self.net();
        self.sipp("carrier2", scenario)
            .local(net.carrier_secondary())
            .key("expect_peer", net.outside_ip())
    }

    /// The carrier calling in from its primary member to the outside zone,
    /// dialling the DID [`numbers::DID`]. Logs as `carrier1`.
    pub fn carrier_uac(&self, scenario: &str) -> Sipp {
        let net = self.net();
        self.carrier_primary(scenario)
            .remote(net.outside())
            .key("caller", numbers::EXTERNAL)
            .key("callee", numbers::DID)
    }

    /// Palisade's process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Stops Palisade with SIGTERM and returns its exit status (SIGKILL after
    /// the grace period plus 5 s). Panics if it had already died.
    pub fn shutdown(mut self) -> ExitStatus {
        self.assert_alive();
        let status = self.terminate();
        status.unwrap_or_else(|| panic!("palisade ({}) could not be reaped", self.slot.name()))
    }

    fn terminate(&mut self) -> Option<ExitStatus> {
        let mut child = self.child.take()?;
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        // SIGTERM through the shell's kill builtin: the harness stays free of unsafe code.
        let _ = Command::new("sh")
            .arg("-c")
            .arg(format!("kill -TERM {}", child.id()))
            .status();
        let deadline = now() + self.grace + Duration::from_secs(5);
        while now() < deadline {
            if let Ok(Some(status)) = child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        child.wait().ok()
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        let crashed = self.exit_status();
        let _ = self.terminate();
        if std::thread::panicking() {
            eprintln!(
                "--- palisade ({}) log tail, {} ---\n{}",
                self.slot.name(),
                self.log_path.display(),
                self.log_tail(60)
            );
            return;
        }
        if let Some(status) = crashed {
            panic!(
                "palisade ({}) died during the test: {status}\n--- log tail ({}) ---\n{}",
                self.slot.name(),
                self.log_path.display(),
                self.log_tail(60)
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rendered_config_uses_only_the_slot_network() {
        let yaml = LabConfig::default().render(Slot::OutboundCall);
        for ip in [
            "127.100.20.1",
            "127.100.20.2",
            "127.100.20.10",
            "127.100.20.20",
            "127.100.20.21",
        ] {
            assert!(yaml.contains(ip), "{ip} missing:\n{yaml}");
        }
        assert!(!yaml.contains("127.0.0."), "{yaml}");
        assert!(yaml.contains("member_timeout_ms: 1500"));
        assert!(yaml.contains("number_prefixes: [\"+4930123\"]"));
        // Same shape as the quickstart: same top-level keys in the same order.
        let quickstart =
            std::fs::read_to_string(paths::workspace_root().join("configs/quickstart.yaml"))
                .unwrap();
        let top = |s: &str| -> Vec<String> {
            s.lines()
                .filter(|l| !l.starts_with('#') && !l.starts_with(' ') && l.ends_with(':'))
                .map(str::to_string)
                .collect()
        };
        let ours = top(&yaml);
        for key in top(&quickstart) {
            assert!(
                ours.contains(&key),
                "quickstart key {key} missing from the generated config"
            );
        }
    }

    #[test]
    fn pbx_on_tcp_changes_only_the_pbx_member() {
        let cfg = LabConfig {
            pbx_transport: Transport::Tcp,
            ..LabConfig::default()
        };
        let yaml = cfg.render(Slot::PbxOverTcp);
        assert_eq!(yaml.matches("transport: tcp").count(), 1);
        assert_eq!(yaml.matches("transport: udp").count(), 2);
    }
}
