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
//! flow it registered from; the PBX then calls out from behind the NAT.
//! Nothing touches the host's network: every address lives in the namespaces.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use palisade_e2e::net::wait_until;
use palisade_e2e::{Sipp, Slot, numbers, palisade_bin, paths};

const PHONE_HA1_MD5: &str = "4de9752ac16abc1a67bd004ddd921544";

struct Namespaces {
    names: Vec<String>,
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
logging: {level: debug}
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
        .run()
        .assert_success(1);
    palisade.wait_log("event=registered", Duration::from_secs(5));
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

    // 3. The PBX calls out from behind the NAT (its flow identifies its trunk).
    let uas = Sipp::new(&dir, "carrier-uas", "uas_answer")
        .netns(ns.wan())
        .local(carrier_addr)
        .key("expect_peer", "127.0.0.2")
        .spawn();
    std::thread::sleep(Duration::from_millis(700));
    Sipp::new(&dir, "pbx-uac", "uac_call")
        .netns(ns.lan())
        .local(pbx_addr)
        .remote(inside)
        .key("expect_peer", "198.51.100.1")
        .key("caller", numbers::DID)
        .key("callee", numbers::EXTERNAL)
        .pause_ms(200)
        .run()
        .assert_success(1);
    uas.wait().assert_success(1);
    drop(palisade);
    drop(ns);
}
