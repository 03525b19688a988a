//! baresip as a real SIP phone on either side of Palisade, and sox to check
//! what it heard.
//!
//! Each instance gets its own config directory (generated here): a SIP
//! listener on the peer's slot address, one account (no registration), the
//! `aufile` module playing a WAV file as the microphone, and the `sndfile`
//! filter recording what was sent and received (`rec/dump-*-dec.wav` is
//! what the far side's audio decoded to). `mediaenc=srtp-mand` makes an
//! instance insist on SRTP (SDES). The phone hangs up when its file ends.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::net::now;
use crate::paths;

/// One baresip instance being configured.
#[derive(Debug, Clone)]
pub struct Baresip {
    dir: PathBuf,
    listen: SocketAddr,
    account: String,
    tone: PathBuf,
    rtp_ports: (u16, u16),
    srtp: bool,
    dial: Option<String>,
    quit_after: Duration,
}

/// A running instance.
#[derive(Debug)]
pub struct BaresipProcess {
    child: Option<Child>,
    dir: PathBuf,
    limit: Duration,
}

impl Baresip {
    /// An instance in `dir` (created), listening for SIP on `listen`, with
    /// account AOR `aor` (`sip:user@host`), playing `tone`.
    pub fn new(dir: &Path, listen: SocketAddr, aor: &str, tone: &Path) -> Self {
        Baresip {
            dir: dir.to_path_buf(),
            listen,
            account: format!("<{aor}>;regint=0;answermode=auto;audio_codecs=PCMU"),
            tone: tone.to_path_buf(),
            rtp_ports: (40000, 40019),
            srtp: false,
            dial: None,
            quit_after: Duration::from_secs(10),
        }
    }

    /// Insist on SRTP (SDES): `mediaenc=srtp-mand`.
    pub fn srtp(mut self) -> Self {
        self.srtp = true;
        self
    }

    /// Local RTP port range.
    pub fn rtp_ports(mut self, min: u16, max: u16) -> Self {
        self.rtp_ports = (min, max);
        self
    }

    /// Call `uri` at start.
    pub fn dial(mut self, uri: &str) -> Self {
        self.dial = Some(uri.to_string());
        self
    }

    /// Quit after this long (hanging up what is left).
    pub fn quit_after(mut self, t: Duration) -> Self {
        self.quit_after = t;
        self
    }

    /// Writes the config and starts baresip. Panics if it is not installed.
    pub fn spawn(self) -> BaresipProcess {
        let baresip = paths::require_tool("baresip");
        let rec = self.dir.join("rec");
        std::fs::create_dir_all(&rec).unwrap_or_else(|e| panic!("create {}: {e}", rec.display()));
        let config = format!(
            "poll_method epoll\n\
             sip_listen {listen}\n\
             audio_player aufile,/dev/null\n\
             audio_alert aufile,/dev/null\n\
             audio_source aufile,{tone}\n\
             rtp_ports {min}-{max}\n\
             module_path /usr/lib/baresip/modules\n\
             module stdio.so\n\
             module g711.so\n\
             module aufile.so\n\
             module sndfile.so\n\
             module srtp.so\n\
             module_app account.so\n\
             module_app menu.so\n\
             snd_path {rec}\n",
            listen = self.listen,
            tone = self.tone.display(),
            min = self.rtp_ports.0,
            max = self.rtp_ports.1,
            rec = rec.display(),
        );
        std::fs::write(self.dir.join("config"), config)
            .unwrap_or_else(|e| panic!("write baresip config: {e}"));
        let mut account = self.account.clone();
        if self.srtp {
            account.push_str(";mediaenc=srtp-mand");
        }
        std::fs::write(self.dir.join("accounts"), format!("{account}\n"))
            .unwrap_or_else(|e| panic!("write baresip accounts: {e}"));
        let out = std::fs::File::create(self.dir.join("baresip.log"))
            .unwrap_or_else(|e| panic!("create baresip.log: {e}"));
        let err = out.try_clone().unwrap_or_else(|e| panic!("dup: {e}"));
        let mut cmd = Command::new(baresip);
        cmd.arg("-f")
            .arg(&self.dir)
            .arg("-t")
            .arg(self.quit_after.as_secs().max(1).to_string());
        if let Some(uri) = &self.dial {
            cmd.arg("-e").arg(format!("/dial {uri}"));
        }
        let child = cmd
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn baresip: {e}"));
        BaresipProcess {
            child: Some(child),
            dir: self.dir,
            limit: self.quit_after + Duration::from_secs(10),
        }
    }
}

impl BaresipProcess {
    /// Its log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("baresip.log")).unwrap_or_default()
    }

    /// Waits until the log contains `needle` (bounded); false on timeout.
    pub fn wait_log(&self, needle: &str, limit: Duration) -> bool {
        crate::net::wait_until(limit, || self.log().contains(needle))
    }

    /// Waits for it to quit (bounded; killed past the limit).
    pub fn wait(mut self) -> String {
        if let Some(mut child) = self.child.take() {
            let deadline = now() + self.limit;
            while now() < deadline && matches!(child.try_wait(), Ok(None)) {
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        self.log()
    }

    /// The recording of what it received (decoded), if any.
    pub fn received_recording(&self) -> Option<PathBuf> {
        let rec = self.dir.join("rec");
        std::fs::read_dir(rec)
            .ok()?
            .filter_map(Result::ok)
            .map(|e| e.path())
            .find(|p| p.to_string_lossy().ends_with("-dec.wav"))
    }
}

impl Drop for BaresipProcess {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// What `sox FILE -n stat` says about a recording.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AudioStat {
    /// Length in seconds.
    pub seconds: f64,
    /// RMS amplitude (0..1).
    pub rms: f64,
    /// sox's rough frequency estimate, Hz.
    pub frequency: f64,
}

/// Runs `sox FILE -n stat`. Panics if sox is missing or fails.
pub fn audio_stat(file: &Path) -> AudioStat {
    let sox = paths::require_tool("sox");
    let out = Command::new(sox)
        .arg(file)
        .args(["-n", "stat"])
        .output()
        .unwrap_or_else(|e| panic!("run sox: {e}"));
    let text = String::from_utf8_lossy(&out.stderr).into_owned();
    let field = |name: &str| -> f64 {
        text.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.rsplit(':').next())
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("sox stat of {}: no {name:?} in\n{text}", file.display()))
    };
    AudioStat {
        seconds: field("Length (seconds)"),
        rms: field("RMS     amplitude"),
        frequency: field("Rough   frequency"),
    }
}

/// Writes a `seconds`-long sine tone of `hz` (8 kHz, 16-bit mono WAV) with sox.
pub fn make_tone(file: &Path, hz: u32, seconds: u32) {
    let sox = paths::require_tool("sox");
    let st = Command::new(sox)
        .args(["-n", "-r", "8000", "-c", "1", "-b", "16"])
        .arg(file)
        .args([
            "synth",
            &seconds.to_string(),
            "sine",
            &hz.to_string(),
            "vol",
            "0.5",
        ])
        .status()
        .unwrap_or_else(|e| panic!("run sox: {e}"));
    assert!(st.success(), "sox could not write {}", file.display());
}

/// Writes a `seconds`-long sine tone of `hz` as 8 kHz mu-law WAV (SIPp's
/// `rtp_stream` plays it as PCMU).
pub fn make_ulaw_tone(file: &Path, hz: u32, seconds: u32) {
    let sox = paths::require_tool("sox");
    let st = Command::new(sox)
        .args(["-n", "-r", "8000", "-c", "1", "-e", "u-law"])
        .arg(file)
        .args(["synth", &seconds.to_string(), "sine", &hz.to_string()])
        .status()
        .unwrap_or_else(|e| panic!("run sox: {e}"));
    assert!(st.success(), "sox could not write {}", file.display());
}
