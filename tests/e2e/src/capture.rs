//! Packet capture with tshark on the loopback interface, limited to a slot's
//! network, and the media flows it saw.
//!
//! [`Capture::start`] runs `tshark -i lo` with a capture filter for the
//! slot's `127.100.N.0/24` (so parallel tests never see each other's
//! packets) and waits until it is capturing; [`Capture::stop`] ends it and
//! reads the file back with RTP/RTCP dissection forced on (heuristics), one
//! [`Packet`] per RTP or RTCP datagram.

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::net::{self, now};
use crate::paths;
use crate::slots::Slot;

/// A running capture.
#[derive(Debug)]
pub struct Capture {
    child: Option<Child>,
    file: PathBuf,
    log: PathBuf,
}

/// One captured RTP or RTCP datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Packet {
    /// Source address.
    pub src: Ipv4Addr,
    /// Source port.
    pub src_port: u16,
    /// Destination address.
    pub dst: Ipv4Addr,
    /// Destination port.
    pub dst_port: u16,
    /// RTCP rather than RTP.
    pub rtcp: bool,
    /// The DiffServ code point of the IP header.
    pub dscp: u8,
}

impl Capture {
    /// Starts capturing UDP on `lo` for `slot`'s network into
    /// `<dir>/<label>.pcapng`. Panics if tshark is missing or does not start
    /// within 10 s.
    pub fn start(slot: Slot, dir: &std::path::Path, label: &str) -> Capture {
        let tshark = paths::require_tool("tshark");
        let file = dir.join(format!("{label}.pcapng"));
        let log = dir.join(format!("{label}.tshark.log"));
        let _ = std::fs::remove_file(&file);
        let err =
            std::fs::File::create(&log).unwrap_or_else(|e| panic!("create {}: {e}", log.display()));
        let filter = format!("udp and net {}/24", slot.net().ip(0));
        let child = Command::new(tshark)
            .args(["-i", "lo", "-n", "-q", "-f", &filter, "-w"])
            .arg(&file)
            // A hard stop whatever happens to the test.
            .args(["-a", "duration:120"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn tshark: {e}"));
        let mut cap = Capture {
            child: Some(child),
            file,
            log,
        };
        let ready = net::wait_until(Duration::from_secs(10), || {
            std::fs::read_to_string(&cap.log).is_ok_and(|l| l.contains("Capturing on"))
                || cap.exited()
        });
        assert!(
            ready && !cap.exited(),
            "tshark did not start capturing:\n{}",
            std::fs::read_to_string(&cap.log).unwrap_or_default()
        );
        // dumpcap reports "Capturing on" just before the first read.
        std::thread::sleep(Duration::from_millis(300));
        cap
    }

    fn exited(&mut self) -> bool {
        self.child
            .as_mut()
            .is_none_or(|c| matches!(c.try_wait(), Ok(Some(_))))
    }

    /// Stops the capture (SIGINT, so the file is complete) and returns every
    /// RTP and RTCP datagram it holds, in order.
    pub fn stop(mut self) -> Vec<Packet> {
        // Let the last packets reach the file.
        std::thread::sleep(Duration::from_millis(500));
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("sh")
                .arg("-c")
                .arg(format!("kill -INT {}", child.id()))
                .status();
            let deadline = now() + Duration::from_secs(10);
            while now() < deadline && matches!(child.try_wait(), Ok(None)) {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        read(&self.file)
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The RTP and RTCP datagrams in a capture file (RTP found by tshark's
/// heuristic dissector, which checks version, payload type and more).
pub fn read(file: &std::path::Path) -> Vec<Packet> {
    let tshark = paths::require_tool("tshark");
    let out = Command::new(tshark)
        .args(["-n", "-r"])
        .arg(file)
        .args([
            "-o",
            "rtp.heuristic_rtp:TRUE",
            "-o",
            "rtcp.heuristic_rtcp:TRUE",
            "-Y",
            "(rtp && !rtcp) || rtcp",
            "-T",
            "fields",
            "-e",
            "ip.src",
            "-e",
            "udp.srcport",
            "-e",
            "ip.dst",
            "-e",
            "udp.dstport",
            "-e",
            "rtcp.pt",
            "-e",
            "ip.dsfield.dscp",
        ])
        .output()
        .unwrap_or_else(|e| panic!("run tshark -r {}: {e}", file.display()));
    assert!(
        out.status.success(),
        "tshark -r {} failed: {}",
        file.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            Some(Packet {
                src: f.first()?.parse().ok()?,
                src_port: f.get(1)?.parse().ok()?,
                dst: f.get(2)?.parse().ok()?,
                dst_port: f.get(3)?.parse().ok()?,
                rtcp: f.get(4).is_some_and(|p| !p.is_empty()),
                dscp: f.get(5)?.parse().ok()?,
            })
        })
        .collect()
}

/// The DSCP of every SIP datagram `src` sent, in a capture file.
pub fn sip_dscp(file: &std::path::Path, src: Ipv4Addr) -> Vec<u8> {
    let tshark = paths::require_tool("tshark");
    let out = Command::new(tshark)
        .args(["-n", "-r"])
        .arg(file)
        .args(["-Y", &format!("sip && ip.src == {src}")])
        .args(["-T", "fields", "-e", "ip.dsfield.dscp"])
        .output()
        .unwrap_or_else(|e| panic!("run tshark -r {}: {e}", file.display()));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

/// Capture times (seconds since the epoch) of the frames of `file` that match
/// the display filter `filter`.
pub fn frame_times(file: &std::path::Path, filter: &str) -> Vec<f64> {
    let tshark = paths::require_tool("tshark");
    let out = Command::new(tshark)
        .args(["-n", "-r"])
        .arg(file)
        .args([
            "-o",
            "rtp.heuristic_rtp:TRUE",
            "-o",
            "rtcp.heuristic_rtcp:TRUE",
        ])
        .args(["-Y", filter])
        .args(["-T", "fields", "-e", "frame.time_epoch"])
        .output()
        .unwrap_or_else(|e| panic!("run tshark -r {}: {e}", file.display()));
    assert!(
        out.status.success(),
        "tshark -r {} -Y {filter:?} failed: {}",
        file.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

/// When RTP (not RTCP) from `src` to `dst` was captured.
pub fn rtp_times(file: &std::path::Path, src: Ipv4Addr, dst: Ipv4Addr) -> Vec<f64> {
    frame_times(
        file,
        &format!("rtp && !rtcp && ip.src == {src} && ip.dst == {dst}"),
    )
}

/// When SIP responses with `status` to `method` from `src` to `dst` were captured.
pub fn sip_response_times(
    file: &std::path::Path,
    src: Ipv4Addr,
    dst: Ipv4Addr,
    status: u16,
    method: &str,
) -> Vec<f64> {
    frame_times(
        file,
        &format!(
            "sip.Status-Code == {status} && sip.CSeq.method == \"{method}\" && ip.src == {src} && ip.dst == {dst}"
        ),
    )
}
