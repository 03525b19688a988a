//! A PBX behind a real NAT. Three network namespaces the test creates:
//!
//! ```text
//!  lan ns                      router ns (nftables masquerade)        wan ns
//!  PBX 192.168.77.10:5070 ─── 192.168.77.1 | 198.51.100.2 ─────────── 198.51.100.1 Palisade inside
//!                                                                     127.0.0.2 Palisade outside
//!                                                                     127.0.0.20:5080 carrier
//! ```
//!
//! The PBX registers with digest from behind the NAT (its Via and Contact
//! name 192.168.77.10; Palisade sees 198.51.100.2), then the carrier calls
//! its DID and the INVITE reaches the PBX through the NAT mapping of the
//! flow it registered from; the PBX then calls out from behind the NAT
//! with RTP whose SDP `c=` is its private address: the PBX trunk is
//! configured `latching: strict`, yet the detected NAT makes Palisade learn
//! the NAT's address, so the tone reaches the carrier and the carrier's echo
//! comes back to the PBX through the NAT. tshark runs in the LAN namespace
//! (what the PBX sees: the echo, and Palisade's CRLF keepalives every 2 s)
//! and in the WAN namespace (only the NAT's address, never the private one).
//! Nothing touches the host's network: every address lives in the namespaces.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use palisade_e2e::capture::{Packet, read};
use palisade_e2e::net::{now, wait_until};
use palisade_e2e::{Sipp, Slot, numbers, palisade_bin, paths};

const PHONE_HA1_MD5: &str = "4de9752ac16abc1a67bd004ddd921544";

struct Namespaces {
    names: Vec<String>,
    /// The PBX's interface in the LAN namespace.
    lan_if: String,
}

fn run(args: &[&str]) {
    let ip = paths::require_tool("ip");
    let out = Command::new(&ip)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("ip {args:?}: {e}"));
    assert!(
        out.status.success(),
        "ip {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn in_ns(ns: &str, cmd: &str, args: &[&str]) {
    let mut full = vec!["netns", "exec", ns, cmd];
    full.extend_from_slice(args);
    run(&full);
}

impl Namespaces {
    fn create() -> Self {
        paths::require_tool("nft");
        let id = std::process::id() % 100_000;
        let (lan, rtr, wan) = (
            format!("pe-lan-{id}"),
            format!("pe-rtr-{id}"),
            format!("pe-wan-{id}"),
        );
        let me = Namespaces {
            names: vec![lan.clone(), rtr.clone(), wan.clone()],
            lan_if: format!("pp{id}"),
        };
        for n in &me.names {
            let _ = Command::new("ip").args(["netns", "del", n]).output();
            run(&["netns", "add", n]);
            in_ns(n, "ip", &["link", "set", "lo", "up"]);
        }
        let (vw, vr, vl, vp) = (
            format!("pw{id}"),
            format!("pr{id}"),
            format!("pl{id}"),
            format!("pp{id}"),
        );
        // wan <-> router
        run(&[
            "link", "add", &vw, "netns", &wan, "type", "veth", "peer", "name", &vr, "netns", &rtr,
        ]);
        // router <-> lan
        run(&[
            "link", "add", &vl, "netns", &rtr, "type", "veth", "peer", "name", &vp, "netns", &lan,
        ]);
        in_ns(&wan, "ip", &["addr", "add", "198.51.100.1/24", "dev", &vw]);
        in_ns(&wan, "ip", &["link", "set", &vw, "up"]);
        in_ns(&rtr, "ip", &["addr", "add", "198.51.100.2/24", "dev", &vr]);
        in_ns(&rtr, "ip", &["link", "set", &vr, "up"]);
        in_ns(&rtr, "ip", &["addr", "add", "192.168.77.1/24", "dev", &vl]);
        in_ns(&rtr, "ip", &["link", "set", &vl, "up"]);
        in_ns(&lan, "ip", &["addr", "add", "192.168.77.10/24", "dev", &vp]);
        in_ns(&lan, "ip", &["link", "set", &vp, "up"]);
        in_ns(
            &lan,
            "ip",
            &["route", "add", "default", "via", "192.168.77.1"],
        );
        in_ns(&rtr, "sysctl", &["-q", "-w", "net.ipv4.ip_forward=1"]);
        in_ns(&rtr, "nft", &["add", "table", "ip", "nat"]);
        in_ns(
            &rtr,
            "nft",
            &["add chain ip nat post { type nat hook postrouting priority 100 ; }"],
        );
        in_ns(
            &rtr,
            "nft",
            &[
                "add",
                "rule",
                "ip",
                "nat",
                "post",
                "oifname",
                &vr,
                "masquerade",
            ],
        );
        me
    }
    fn lan(&self) -> &str {
        &self.names[0]
    }
    fn wan(&self) -> &str {
        &self.names[2]
    }
}

impl Drop for Namespaces {
    fn drop(&mut self) {
        for n in &self.names {
            let _ = Command::new("ip").args(["netns", "del", n]).output();
        }
    }
}

/// tshark inside a namespace, writing `file`.
struct NsCapture {
    child: Option<Child>,
    file: PathBuf,
    log: PathBuf,
}

impl NsCapture {
    fn start(ns: &str, iface: &str, file: PathBuf) -> NsCapture {
        let tshark = paths::require_tool("tshark");
        let log = file.with_extension("tshark.log");
        let err = std::fs::File::create(&log).unwrap_or_else(|e| panic!("{e}"));
        let child = Command::new(paths::require_tool("ip"))
            .args(["netns", "exec", ns])
            .arg(tshark)
            .args(["-i", iface, "-n", "-q", "-f", "udp", "-w"])
            .arg(&file)
            .args(["-a", "duration:120"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn tshark in {ns}: {e}"));
        let cap = NsCapture {
            child: Some(child),
            file,
            log,
        };
        let ready = wait_until(Duration::from_secs(10), || {
            std::fs::read_to_string(&cap.log).is_ok_and(|l| l.contains("Capturing on"))
        });
        assert!(
            ready,
            "tshark did not start in {ns}:\n{}",
            std::fs::read_to_string(&cap.log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(300));
        cap
    }

    /// Stops (SIGINT, so the file is complete); returns the file.
    fn stop(mut self) -> PathBuf {
        std::thread::sleep(Duration::from_millis(500));
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-INT", &c.id().to_string()])
                .status();
            let done = wait_until(Duration::from_secs(10), || {
                matches!(c.try_wait(), Ok(Some(_)))
            });
            if !done {
                let _ = c.kill();
            }
            let _ = c.wait();
        }
        self.file.clone()
    }
}

impl Drop for NsCapture {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Packets per (source, destination) address.
fn flows(pkts: &[Packet]) -> std::collections::BTreeMap<(String, String), usize> {
    let mut m = std::collections::BTreeMap::new();
    for p in pkts {
        *m.entry((p.src.to_string(), p.dst.to_string())).or_insert(0) += 1;
    }
    m
}

/// Datagrams in `file` matching the display filter `filter`.
fn count(file: &std::path::Path, filter: &str) -> usize {
    let out = Command::new(paths::require_tool("tshark"))
        .args(["-n", "-r"])
        .arg(file)
        .args(["-Y", filter, "-T", "fields", "-e", "frame.number"])
        .output()
        .unwrap_or_else(|e| panic!("tshark -r: {e}"));
    String::from_utf8_lossy(&out.stdout).lines().count()
}

struct Palisade {
    child: Option<Child>,
    log: PathBuf,
}

impl Palisade {
    fn log(&self) -> String {
        std::fs::read(&self.log)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }
    fn wait_log(&self, needle: &str, limit: Duration) {
        assert!(
            wait_until(limit, || self.log().contains(needle)),
            "palisade never logged {needle:?}:\n{}",
            self.log()
        );
    }
}

impl Drop for Palisade {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill").arg(c.id().to_string()).status();
            let exited = wait_until(Duration::from_secs(5), || {
                matches!(c.try_wait(), Ok(Some(_)))
            });
            if !exited {
                let _ = c.kill();
            }
            let _ = c.wait();
        }
    }
}

const CONFIG: &str = "node: {name: e2e-nat}
zones:
  - name: inside
    sip_address: 198.51.100.1
    media: {address: 198.51.100.1, port_min: 20000, port_max: 20999}
  - name: outside
    sip_address: 127.0.0.2
    media: {address: 127.0.0.2, port_min: 30000, port_max: 30999}
trunks:
  - name: pbx
    zone: inside
    members: [{address: 198.51.100.99, port: 5070}]
    # Strict latching, as for a PBX on the LAN; a PBX detected behind a NAT
    # learns anyway (its SDP address never sends).
    media: {latching: strict}
  - name: carrier
    zone: outside
    members: [{address: 127.0.0.20, port: 5080}]
routes:
  - {name: pbx-to-carrier, from_trunk: pbx, to_trunk: carrier}
  - {name: carrier-to-pbx, from_trunk: carrier, number_prefixes: ['+4930123'], to_trunk: pbx, to_registered: true}
registrar:
  trunk: pbx
  realm: palisade.e2e
  users: [{user: '+4930123555', ha1_md5: HA1}]
nat:
  keepalive: {method: crlf, interval_seconds: 2}
shutdown: {grace_seconds: 1}
logging: {level: debug, batch_ms: 0}
";

#[test]
fn nated_pbx_registers_and_calls_through_masquerade() {
    let dir = Slot::EdgeNatNetns.fresh_dir();
    let ns = Namespaces::create();
    let config = dir.join("palisade.yaml");
    std::fs::write(&config, CONFIG.replace("HA1", PHONE_HA1_MD5)).unwrap_or_else(|e| panic!("{e}"));
    let log = dir.join("palisade.log");
    let out = std::fs::File::create(&log).unwrap_or_else(|e| panic!("{e}"));
    let err = out.try_clone().unwrap_or_else(|e| panic!("{e}"));
    let child = Command::new(paths::require_tool("ip"))
        .args(["netns", "exec", ns.wan()])
        .arg(palisade_bin())
        .args(["run", "--config"])
        .arg(&config)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .unwrap_or_else(|e| panic!("spawn palisade: {e}"));
    let palisade = Palisade {
        child: Some(child),
        log,
    };
    palisade.wait_log("palisade started", Duration::from_secs(15));
    // What the PBX sees (its own interface) and what the WAN side sees.
    let lan_cap = NsCapture::start(ns.lan(), &ns.lan_if, dir.join("lan.pcapng"));
    let wan_cap = NsCapture::start(ns.wan(), "any", dir.join("wan.pcapng"));

    let pbx_addr = "192.168.77.10:5070"
        .parse()
        .unwrap_or_else(|e| panic!("{e}"));
    let inside = "198.51.100.1:5060"
        .parse()
        .unwrap_or_else(|e| panic!("{e}"));
    let carrier_addr = "127.0.0.20:5080".parse().unwrap_or_else(|e| panic!("{e}"));
    let outside = "127.0.0.2:5060".parse().unwrap_or_else(|e| panic!("{e}"));

    // 1. The PBX registers from behind the NAT.
    Sipp::new(&dir, "pbx-register", "uac_register")
        .netns(ns.lan())
        .local(pbx_addr)
        .remote(inside)
        .key("user", numbers::DID)
        .key("domain", "palisade.e2e")
        .key("contact_host", "192.168.77.10")
        .key("contact_port", "5070")
        .arg("-au")
        .arg(numbers::DID)
        .arg("-ap")
        .arg("phone-secret")
        // The digest uri is the Request-URI (SIPp: `sip:` + this; default ip:port).
        .arg("-auth_uri")
        .arg("palisade.e2e")
        .run()
        .assert_success(1);
    palisade.wait_log("event=registered", Duration::from_secs(5));
    let registered_at = now();
    let text = palisade.log();
    let line = text
        .lines()
        .find(|l| l.contains("event=registered"))
        .unwrap_or_default();
    assert!(
        line.contains("remote=198.51.100.2:"),
        "seen from the NAT's address: {line}"
    );
    assert!(line.contains("nated=true"), "{line}");

    // 2. The carrier calls the DID: the INVITE crosses the NAT to the PBX.
    let pbx = Sipp::new(&dir, "pbx-uas", "uas_answer")
        .netns(ns.lan())
        .local(pbx_addr)
        .key("expect_peer", "198.51.100.1")
        .spawn();
    let carrier = Sipp::new(&dir, "carrier-uac", "uac_call")
        .netns(ns.wan())
        .local(carrier_addr)
        .remote(outside)
        .key("expect_peer", "127.0.0.2")
        .key("caller", numbers::EXTERNAL)
        .key("callee", numbers::DID);
    std::thread::sleep(Duration::from_millis(700));
    carrier.pause_ms(200).run().assert_success(1);
    pbx.wait().assert_success(1);

    // 3. The PBX calls out from behind the NAT (its flow identifies its
    // trunk) and plays a 2 s tone from its private address; the carrier
    // echoes every packet back.
    palisade_e2e::baresip::make_ulaw_tone(&dir.join("tone.wav"), 1000, 2);
    let uas = Sipp::new(&dir, "carrier-uas", "uas_answer")
        .netns(ns.wan())
        .local(carrier_addr)
        .key("expect_peer", "127.0.0.2")
        .arg("-rtp_echo")
        .spawn();
    std::thread::sleep(Duration::from_millis(700));
    Sipp::new(&dir, "pbx-uac", "uac_rtp")
        .netns(ns.lan())
        .local(pbx_addr)
        .remote(inside)
        .key("expect_peer", "198.51.100.1")
        .key("caller", numbers::DID)
        .key("callee", numbers::EXTERNAL)
        .pause_ms(2500)
        .run()
        .assert_success(1);
    uas.wait().assert_success(1);
    // The call's started event says the caller is NATed.
    let started = palisade
        .log()
        .lines()
        .find(|l| l.contains("event=started") && l.contains("from_trunk=pbx"))
        .map(str::to_owned)
        .unwrap_or_default();
    assert!(started.contains("nated=true"), "{started}");
    // Keepalives every 2 s: give them at least 6 s since the registration.
    let since = now().saturating_duration_since(registered_at);
    if since < Duration::from_secs(6) {
        std::thread::sleep(Duration::from_secs(6) - since);
    }
    let lan = lan_cap.stop();
    let wan = wan_cap.stop();

    // Media: the tone left the PBX from its private address, reached the
    // carrier from Palisade's outside address, and the echo came back to
    // the PBX through the NAT.
    let lan_flows = flows(&read(&lan));
    let wan_flows = flows(&read(&wan));
    eprintln!("LAN RTP flows: {lan_flows:?}\nWAN RTP flows: {wan_flows:?}");
    let get = |m: &std::collections::BTreeMap<(String, String), usize>, s: &str, d: &str| {
        m.get(&(s.to_owned(), d.to_owned())).copied().unwrap_or(0)
    };
    for (m, s, d, what) in [
        (
            &lan_flows,
            "192.168.77.10",
            "198.51.100.1",
            "PBX -> Palisade (LAN side)",
        ),
        (
            &wan_flows,
            "198.51.100.2",
            "198.51.100.1",
            "NAT -> Palisade",
        ),
        (&wan_flows, "127.0.0.2", "127.0.0.20", "Palisade -> carrier"),
        (
            &wan_flows,
            "127.0.0.20",
            "127.0.0.2",
            "carrier echo -> Palisade",
        ),
        (
            &wan_flows,
            "198.51.100.1",
            "198.51.100.2",
            "Palisade -> NAT (learnt)",
        ),
        (
            &lan_flows,
            "198.51.100.1",
            "192.168.77.10",
            "echo -> PBX through the NAT",
        ),
    ] {
        let n = get(m, s, d);
        assert!(
            n >= 90,
            "{what}: {n} RTP packets\nLAN: {lan_flows:?}\nWAN: {wan_flows:?}"
        );
    }
    assert!(
        wan_flows
            .keys()
            .all(|(s, d)| s != "192.168.77.10" && d != "192.168.77.10"),
        "the private address never appears outside the NAT: {wan_flows:?}"
    );
    // CRLF keepalives (nat.keepalive: crlf every 2 s) reach the PBX through
    // its NAT mapping: 4-byte datagrams from Palisade's SIP port.
    let pings = count(
        &lan,
        "ip.src == 198.51.100.1 && udp.srcport == 5060 && ip.dst == 192.168.77.10 && udp.dstport == 5070 && udp.length == 12",
    );
    assert!(
        pings >= 2,
        "{pings} CRLF keepalives reached the PBX in its namespace"
    );
    drop(palisade);
    drop(ns);
}
