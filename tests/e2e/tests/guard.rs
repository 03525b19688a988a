//! The guard end to end: real scanners (sipvicious) and floods (SIPp) from
//! untrusted addresses, banned by nftables in a network namespace each test
//! creates, while the trusted PBX's calls go through; and the fraud rules,
//! one SIPp scenario per pattern, checked against the alert database.
#![allow(clippy::unwrap_used)]

use std::net::Ipv4Addr;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use palisade_e2e::net::{now, wait_until};
use palisade_e2e::netns::{in_netns, nft_counter, nft_ruleset, nft_set};
use palisade_e2e::{Lab, LabConfig, Slot, palisade_bin, raw, require_tool};

/// Guard on, enforcing, nftables required, short bans so expiry is seen.
const GUARD_NFT: &str = "\
guard:
  mode: enforce
  nftables: on
  ban_seconds: 6
  kernel_meter:
    packets_per_second: 400
    burst_packets: 800
    ban_seconds: 30
fraud:
  rules: []
alerts:
  database_path: alerts.db
";

/// Every fraud rule at once, with thresholds each scenario crosses alone.
const FRAUD: &str = "\
guard:
  mode: enforce
  nftables: off
fraud:
  timezone: Europe/Berlin
  business_hours: {days: [], start: \"08:00\", end: \"18:00\"}
  domestic_prefixes: [\"+49\"]
  rules:
    - {name: cpm, kind: calls_per_minute, warning: {threshold: 10}, critical: {threshold: 12, action: reject}}
    - {name: concurrent, kind: concurrent_calls, warning: {threshold: 4}}
    - {name: per-day, kind: calls_per_day, warning: {threshold: 1000}}
    - {name: minutes, kind: minutes_per_day, warning: {threshold: 600}}
    - {name: irsf, kind: high_risk_destination, window_seconds: 3600, warning: {threshold: 1}, critical: {threshold: 2, action: reject}}
    - {name: intl-night, kind: international_after_hours, window_seconds: 3600, warning: {threshold: 3}, critical: {threshold: 6, action: reject}}
    - {name: walking, kind: number_walking, max_step: 1, window_seconds: 600, warning: {threshold: 5}, critical: {threshold: 8, action: reject}}
    - {name: wangiri, kind: wangiri, short_call_seconds: 1, window_seconds: 300, warning: {threshold: 5}, critical: {threshold: 10, action: reject}}
    - {name: repeated, kind: repeated_calls, window_seconds: 300, warning: {threshold: 4}, critical: {threshold: 6, action: reject}}
    - {name: duration-cap, kind: max_call_duration, warning: {threshold: 3}, critical: {threshold: 5, action: teardown}}
alerts:
  database_path: alerts.db
";

fn run_tool(dir: &Path, label: &str, cmd: &str, args: &[&str]) {
    let tool = require_tool(cmd);
    let out = Command::new("timeout")
        .arg("40")
        .arg(tool)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{cmd}: {e}"));
    let text = format!(
        "$ {cmd} {}\n{}\n{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::write(dir.join(format!("{label}.txt")), text).unwrap();
}

/// Starts `cmd` (bounded by `timeout`) with its output in `dir/label.txt`.
fn spawn_tool(dir: &Path, label: &str, cmd: &str, args: &[&str]) -> std::process::Child {
    let tool = require_tool(cmd);
    let out = std::fs::File::create(dir.join(format!("{label}.txt"))).unwrap();
    let err = out.try_clone().unwrap();
    Command::new("timeout")
        .arg("40")
        .arg(tool)
        .args(args)
        .stdout(out)
        .stderr(err)
        .spawn()
        .unwrap_or_else(|e| panic!("{cmd}: {e}"))
}

fn log_lines_with<'a>(log: &'a str, needle: &str) -> Vec<&'a str> {
    log.lines().filter(|l| l.contains(needle)).collect()
}

#[test]
fn sipvicious_scanners_are_banned_in_the_kernel_while_the_trunk_calls() {
    const NAME: &str = "sipvicious_scanners_are_banned_in_the_kernel_while_the_trunk_calls";
    in_netns(Slot::GuardSipvicious, NAME, || {
        let slot = Slot::GuardSipvicious;
        let net = slot.net();
        // A table that is not Palisade's: it must survive untouched.
        let nft = require_tool("nft");
        for args in [
            &["add", "table", "inet", "bystander"][..],
            &[
                "add",
                "chain",
                "inet",
                "bystander",
                "c",
                "{ type filter hook input priority 0 ; policy accept ; }",
            ][..],
        ] {
            let out = Command::new(&nft).args(args).output().unwrap();
            assert!(
                out.status.success(),
                "nft {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }

        let mut lab = Lab::builder(slot).guard_yaml(GUARD_NFT).start();
        let rules = nft_ruleset();
        std::fs::write(lab.dir().join("nft-ruleset-at-start.txt"), &rules).unwrap();
        assert!(
            rules.contains("table inet palisade") && rules.contains("table inet bystander"),
            "{rules}"
        );
        assert!(
            rules.contains(&net.pbx_ip().to_string()),
            "the PBX is on the allow-list:\n{rules}"
        );

        // The trusted PBX calls out through the carrier the whole time.
        let carrier = lab.carrier_primary("uas_answer").calls(20).spawn_uas();
        let pbx = lab
            .pbx_uac("uac_call")
            .calls(20)
            .rate(4)
            .limit(10)
            .pause_ms(300)
            .timeout(Duration::from_secs(40))
            .spawn();

        let outside = net.outside_ip().to_string();
        let dir = lab.dir().to_path_buf();
        // svmap binds where it is told; svwar and svcrack 0.3.3 ignore -b and
        // send from 127.0.0.1, untrusted here like any address but the trunks.
        let svmap_ip = net.ip(66);
        let local = Ipv4Addr::LOCALHOST;
        let in_ban_set = |ip: Ipv4Addr| {
            wait_until(Duration::from_secs(3), || {
                nft_set("palisade", "ban_v4").contains(&ip.to_string())
            })
        };
        let dropped_in_kernel = |ip: Ipv4Addr| {
            let before = nft_counter("palisade", "banned_dropped");
            let answer = raw::udp_options(
                ip,
                net.outside(),
                &format!("probe-{ip}-{before}"),
                Duration::from_millis(300),
            );
            assert!(answer.is_none(), "{ip} got an answer while banned");
            let after = nft_counter("palisade", "banned_dropped");
            assert!(
                after > before,
                "banned_dropped {before} -> {after}: {ip} was not dropped by the kernel"
            );
        };
        let snapshot = |name: &str| {
            let out = Command::new(&nft)
                .args(["list", "table", "inet", "palisade"])
                .output()
                .unwrap();
            std::fs::write(dir.join(name), &out.stdout).unwrap();
        };

        run_tool(
            &dir,
            "svmap",
            "svmap",
            &["-b", &svmap_ip.to_string(), "-P", "5062", &outside],
        );
        assert!(
            in_ban_set(svmap_ip),
            "svmap not banned in the kernel:\n{}",
            lab.log_tail(20)
        );
        snapshot("nft-after-svmap.txt");
        dropped_in_kernel(svmap_ip);

        run_tool(
            &dir,
            "svwar",
            "svwar",
            &[
                "-P",
                "5062",
                "-e",
                "100-199",
                "-m",
                "INVITE",
                "--maximumtime",
                "3",
                &outside,
            ],
        );
        assert!(
            in_ban_set(local),
            "svwar not banned in the kernel:\n{}",
            lab.log_tail(20)
        );
        snapshot("nft-after-svwar.txt");
        dropped_in_kernel(local);

        // An operator lifts the ban: gone from the kernel at once, and the
        // running Palisade forgets the source (so svcrack is detected afresh).
        let unban = Command::new(palisade_bin())
            .args(["bans", "unban", "127.0.0.1", "--by", "e2e", "--config"])
            .arg(lab.config_path())
            .current_dir(lab.dir())
            .output()
            .unwrap();
        assert!(
            unban.status.success(),
            "{}",
            String::from_utf8_lossy(&unban.stderr)
        );
        assert!(!nft_set("palisade", "ban_v4").contains(&"127.0.0.1".to_string()));
        assert!(
            wait_until(Duration::from_secs(5), || lab
                .log()
                .contains("unbanned by an operator source=127.0.0.1")),
            "{}",
            lab.log_tail(20)
        );

        // svcrack keeps trying for 10 s: check the kernel while it runs.
        let mut svcrack = spawn_tool(
            &dir,
            "svcrack",
            "svcrack",
            &["-P", "5062", "-u", "100", "-r", "1000-1099", &outside],
        );
        assert!(
            in_ban_set(local),
            "svcrack not banned in the kernel:\n{}",
            lab.log_tail(20)
        );
        snapshot("nft-after-svcrack.txt");
        dropped_in_kernel(local);
        let _ = svcrack.wait();

        // Each was detected on its first request: one ban decision per tool,
        // and far fewer than 100 requests ever reached Palisade.
        let log = lab.log();
        let bans = |ip: Ipv4Addr| {
            log_lines_with(
                &log,
                &format!("source={ip} reason=scanner-user-agent verdict=ban"),
            )
            .len()
        };
        assert_eq!(bans(svmap_ip), 1, "{}", lab.log_tail(30));
        assert_eq!(bans(local), 2, "{}", lab.log_tail(30));
        let processed = log.lines().filter(|l| l.contains("guard decision")).count();
        assert!(processed < 100, "{processed} decisions");
        let scanners = [svmap_ip, local];

        // Calls from the trusted trunk all succeeded meanwhile.
        pbx.wait().assert_success(20);
        carrier.wait().assert_success(20);

        // The ban list (database + kernel) shows source, reason and expiry.
        let list = Command::new(palisade_bin())
            .args(["bans", "list", "--all", "--config"])
            .arg(lab.config_path())
            .current_dir(lab.dir())
            .output()
            .unwrap();
        let list = String::from_utf8_lossy(&list.stdout).into_owned();
        std::fs::write(dir.join("bans-list.txt"), &list).unwrap();
        for ip in scanners {
            assert!(
                list.lines()
                    .any(|l| l.starts_with(&ip.to_string()) && l.contains("scanner-user-agent")),
                "{list}"
            );
        }

        // Bans expire in the kernel by themselves (ban_seconds: 6).
        assert!(
            wait_until(Duration::from_secs(12), || nft_set("palisade", "ban_v4")
                .is_empty()),
            "bans did not expire: {:?}",
            nft_set("palisade", "ban_v4")
        );
        lab.assert_alive();
        let status = lab.shutdown();
        assert!(status.success());
        let rules = nft_ruleset();
        assert!(
            !rules.contains("table inet palisade"),
            "Palisade left its table:\n{rules}"
        );
        assert!(
            rules.contains("table inet bystander"),
            "Palisade touched another table:\n{rules}"
        );
    });
}

#[test]
fn invite_flood_is_banned_while_the_pbx_places_200_calls() {
    const NAME: &str = "invite_flood_is_banned_while_the_pbx_places_200_calls";
    in_netns(Slot::GuardInviteFlood, NAME, || {
        let slot = Slot::GuardInviteFlood;
        let net = slot.net();
        // Bans outlast the test, so the ban set can be checked at the end.
        let yaml = GUARD_NFT.replace("ban_seconds: 6", "ban_seconds: 120");
        let lab = Lab::builder(slot).guard_yaml(&yaml).start();
        let carrier = lab
            .carrier_primary("uas_answer")
            .calls(200)
            .timeout(Duration::from_secs(60))
            .spawn_uas();
        let pbx = lab
            .pbx_uac("uac_call")
            .calls(200)
            .rate(40)
            .limit(60)
            .pause_ms(100)
            .timeout(Duration::from_secs(60))
            .spawn();
        let flooder: Ipv4Addr = net.untrusted_ip();
        let flood = lab
            .sipp("flood", "uac_call")
            .local(std::net::SocketAddr::new(flooder.into(), 5090))
            .remote(net.outside())
            .key("caller", "+999")
            .key("callee", "+4930123555")
            .key("expect_peer", net.outside_ip())
            .rate(3000)
            .calls(20_000)
            .timeout(Duration::from_secs(6))
            .arg("-rate_max")
            .arg("3000")
            .spawn();
        let started = now();
        pbx.wait().assert_success(200);
        carrier.wait().assert_success(200);
        let _ = flood.kill();
        let set = nft_set("palisade", "ban_v4");
        assert!(
            set.contains(&flooder.to_string()),
            "flooder not banned: {set:?}\n{}",
            lab.log_tail(30)
        );
        let meter = nft_counter("palisade", "meter_banned");
        let dropped = nft_counter("palisade", "banned_dropped");
        std::fs::write(
            lab.dir().join("flood-counters.txt"),
            format!(
                "meter_banned={meter} banned_dropped={dropped} elapsed={:?}\n{}",
                now() - started,
                nft_ruleset()
            ),
        )
        .unwrap();
        assert!(
            dropped + meter > 100,
            "the kernel dropped only {dropped}+{meter} packets"
        );
    });
}

#[test]
fn kernel_meter_bans_a_flood_without_userspace() {
    const NAME: &str = "kernel_meter_bans_a_flood_without_userspace";
    in_netns(Slot::GuardKernelMeter, NAME, || {
        let slot = Slot::GuardKernelMeter;
        let net = slot.net();
        // Userspace limits far above the flood: only the kernel can stop it.
        let yaml = GUARD_NFT.replace(
            "  ban_seconds: 6\n",
            "  ban_seconds: 6\n  default_limits: {requests_per_second: 1000000, requests_burst: 1000000, invites_per_second: 1000000, invites_burst: 1000000}\n",
        );
        let lab = Lab::builder(slot).guard_yaml(&yaml).start();
        let flooder = net.untrusted_ip();
        let flood = lab
            .sipp("flood", "uac_call")
            .local(std::net::SocketAddr::new(flooder.into(), 5090))
            .remote(net.outside())
            .key("caller", "+999")
            .key("callee", "+4930123555")
            .key("expect_peer", net.outside_ip())
            .rate(2000)
            .calls(8000)
            .timeout(Duration::from_secs(4))
            .spawn();
        assert!(
            wait_until(Duration::from_secs(6), || nft_set("palisade", "ban_v4")
                .contains(&flooder.to_string())),
            "the meter did not ban the flooder\n{}",
            nft_ruleset()
        );
        let _ = flood.kill();
        let meter = nft_counter("palisade", "meter_banned");
        let dropped = nft_counter("palisade", "banned_dropped");
        std::fs::write(
            lab.dir().join("meter-counters.txt"),
            format!(
                "meter_banned={meter} banned_dropped={dropped}\n{}",
                nft_ruleset()
            ),
        )
        .unwrap();
        assert!(meter >= 1, "meter_banned={meter}");
        let log = lab.log();
        assert!(
            !log.contains(&format!("source={flooder} reason=")),
            "userspace decided about the flooder; this test is about the kernel alone"
        );
        // The trusted PBX still gets through.
        let carrier = lab.carrier_primary("uas_answer").spawn_uas();
        lab.pbx_uac("uac_call")
            .pause_ms(100)
            .run()
            .assert_success(1);
        carrier.wait().assert_success(1);
    });
}

/// What an answer tells a prober: the status line and header names, with
/// the values of the headers that do not echo the request, and a
/// challenge's nonce blanked (it is fresh every time by design).
fn answer_shape(resp: &str) -> Vec<String> {
    resp.lines()
        .filter(|l| !l.is_empty())
        .map(|l| {
            let name = l.split(':').next().unwrap_or("");
            match name {
                "Via" | "From" | "To" | "Call-ID" | "CSeq" => name.to_string(),
                "WWW-Authenticate" => l
                    .split(", ")
                    .map(|p| {
                        if p.starts_with("nonce=") {
                            "nonce=*"
                        } else {
                            p
                        }
                    })
                    .collect::<Vec<_>>()
                    .join(", "),
                _ => l.to_string(),
            }
        })
        .collect()
}

#[test]
fn unknown_users_and_any_password_get_the_same_answer() {
    let yaml = GUARD_NFT.replace("nftables: on", "nftables: off");
    let lab = Lab::builder(Slot::GuardSameAnswer)
        .guard_yaml(&yaml)
        .start();
    let net = lab.net();
    let register = |user: &str, auth: &str, n: u32| {
        let text = format!(
            "REGISTER sip:{o} SIP/2.0\r\nVia: SIP/2.0/UDP {u}:5099;branch=z9hG4bK-same{n}\r\nMax-Forwards: 70\r\n\
             From: <sip:{user}@{o}>;tag=f{n}\r\nTo: <sip:{user}@{o}>\r\nCall-ID: same-{n}\r\nCSeq: 1 REGISTER\r\n\
             Contact: <sip:{user}@{u}:5099>\r\n{auth}Content-Length: 0\r\n\r\n",
            o = net.outside_ip(),
            u = net.untrusted_ip()
        );
        let resp = raw::udp_request(
            net.untrusted_ip(),
            net.outside(),
            text.as_bytes(),
            Duration::from_secs(2),
        )
        .unwrap_or_else(|| panic!("no answer for {user}"));
        answer_shape(&String::from_utf8_lossy(&resp))
    };
    let existing = register("100", "", 1);
    let unknown = register("987654", "", 2);
    let wrong_password = register(
        "100",
        "Authorization: Digest username=\"100\", realm=\"x\", nonce=\"n\", uri=\"sip:x\", response=\"00000000000000000000000000000000\"\r\n",
        3,
    );
    assert!(existing[0].starts_with("SIP/2.0 405"), "{existing:?}");
    assert_eq!(existing, unknown);
    assert_eq!(existing, wrong_password);
}

/// With the registrar on, a brute force (wrong passwords, unknown users)
/// gets one indistinguishable 401 per try, every failure reaches the guard
/// (`GuardHook::auth_failed`), and the source is banned after
/// `auth_failures` of them while the registered world keeps working.
#[test]
fn registrar_brute_force_gets_one_answer_then_a_ban() {
    let slot = Slot::GuardRegistrarBruteForce;
    let cfg = LabConfig {
        guard_yaml: "\
guard:
  mode: enforce
  nftables: off
  ban_seconds: 60
  # Rate limits out of the way: only the auth-failure rule may ban here.
  default_limits: {requests_per_second: 100, requests_burst: 200, registers_per_second: 100, registers_burst: 200}
  scanners:
    auth_failures: 4
    auth_failures_window_seconds: 60
fraud:
  rules: []
alerts:
  database_path: alerts.db
"
        .to_string(),
        ..LabConfig::default()
    };
    // MD5("100:palisade.e2e:right") — the password the attacker never finds.
    let text = format!(
        "{}\nregistrar:\n  trunk: pbx\n  realm: palisade.e2e\n  users:\n    - user: \"100\"\n      ha1_md5: {}\n  algorithms: [md5]\n",
        cfg.render(slot),
        "86a38c0d4761b7687b3fed36ceb20da9"
    );
    let mut lab = Lab::builder(slot).config(cfg).config_text(text).start();
    let net = lab.net();
    let attacker = net.untrusted_ip();
    let send = |user: &str, auth: &str, n: u32| -> Option<String> {
        let text = format!(
            "REGISTER sip:{i} SIP/2.0\r\nVia: SIP/2.0/UDP {a}:5099;branch=z9hG4bK-brute{n}\r\nMax-Forwards: 70\r\n\
             From: <sip:{user}@{i}>;tag=f{n}\r\nTo: <sip:{user}@{i}>\r\nCall-ID: brute-{n}\r\nCSeq: {n} REGISTER\r\n\
             Contact: <sip:{user}@{a}:5099>\r\nUser-Agent: Zoiper\r\n{auth}Content-Length: 0\r\n\r\n",
            i = net.inside().ip(),
            a = attacker
        );
        raw::udp_request(
            attacker,
            net.inside(),
            text.as_bytes(),
            Duration::from_secs(2),
        )
        .map(|r| String::from_utf8_lossy(&r).into_owned())
    };
    let shape = |resp: &str| answer_shape(resp);
    let nonce_of = |resp: &str| -> String {
        let at = resp.find("nonce=\"").expect("a nonce") + 7;
        resp[at..].split('"').next().unwrap().to_string()
    };
    let creds = |user: &str, nonce: &str| {
        format!(
            "Authorization: Digest username=\"{user}\", realm=\"palisade.e2e\", nonce=\"{nonce}\", \
             uri=\"sip:{}\", response=\"0123456789abcdef0123456789abcdef\", algorithm=MD5, \
             qop=auth, nc=00000001, cnonce=\"b7c1\"\r\n",
            net.inside().ip()
        )
    };

    let first = send("100", "", 1).expect("a challenge");
    assert!(first.starts_with("SIP/2.0 401"), "{first}");
    let unknown = send("999", "", 2).expect("a challenge");
    assert_eq!(
        shape(&first),
        shape(&unknown),
        "unknown user looks like a known one"
    );
    // Wrong passwords with a fresh nonce each: the same 401 as a first try,
    // for the real user and a made-up one alike.
    let wrong = send("100", &creds("100", &nonce_of(&first)), 3).expect("a challenge");
    assert_eq!(shape(&first), shape(&wrong));
    let wrong_unknown = send("999", &creds("999", &nonce_of(&unknown)), 4).expect("a challenge");
    assert_eq!(shape(&first), shape(&wrong_unknown));
    // Two more failures reach auth_failures: 4 → banned, dropped in-process.
    let mut n = 5;
    let mut nonce = nonce_of(&wrong);
    let mut answered = 2;
    while n < 12 {
        match send("100", &creds("100", &nonce), n) {
            Some(resp) if resp.starts_with("SIP/2.0 401") => {
                nonce = nonce_of(&resp);
                answered += 1;
            }
            Some(other) => panic!("unexpected answer: {other}"),
            None => break,
        }
        n += 1;
    }
    assert_eq!(
        answered,
        4,
        "banned at the 4th failure:\n{}",
        lab.log_tail(30)
    );
    assert!(
        wait_until(Duration::from_secs(3), || lab.log().contains(&format!(
            "source={attacker} reason=auth-failures verdict=ban"
        ))),
        "{}",
        lab.log_tail(30)
    );
    // Banned means silence, even for a well-formed first try.
    assert_eq!(send("100", "", 20), None);
    // The trusted PBX still calls out meanwhile.
    let carrier = lab.carrier_primary("uas_answer").calls(2).spawn_uas();
    lab.pbx_uac("uac_call").calls(2).run().assert_success(2);
    carrier.wait().assert_success(2);
    lab.assert_alive();
}

#[test]
fn without_nft_permission_the_guard_blocks_in_process_and_says_so() {
    const NAME: &str = "without_nft_permission_the_guard_blocks_in_process_and_says_so";
    in_netns(Slot::GuardFallback, NAME, || {
        let slot = Slot::GuardFallback;
        let net = slot.net();
        // Palisade as `nobody`: nft is there but not permitted.
        let tmp =
            std::env::temp_dir().join(format!("palisade-e2e-fallback-{}", std::process::id()));
        std::fs::create_dir_all(&tmp).unwrap();
        let setpriv = require_tool("setpriv");
        let wrapper = tmp.join("palisade-as-nobody");
        std::fs::write(
            &wrapper,
            format!(
                "#!/bin/sh\nexec {} --reuid=65534 --regid=65534 --clear-groups {} \"$@\"\n",
                setpriv.display(),
                palisade_bin().display()
            ),
        )
        .unwrap();
        Command::new("chmod")
            .arg("755")
            .arg(&wrapper)
            .status()
            .unwrap();
        Command::new("chmod").arg("777").arg(&tmp).status().unwrap();
        let yaml = GUARD_NFT.replace("nftables: on", "nftables: auto").replace(
            "database_path: alerts.db",
            &format!("database_path: {}/alerts.db", tmp.display()),
        );
        let lab = Lab::builder(slot)
            .binary(&wrapper)
            .guard_yaml(&yaml)
            .start();
        let log = lab.log();
        assert!(
            log.contains("FALLING BACK to in-process blocking"),
            "{}",
            lab.log_tail(20)
        );
        assert!(
            !nft_ruleset().contains("table inet palisade"),
            "{}",
            nft_ruleset()
        );
        // A scanner is still stopped: banned in-process, never answered again.
        let scanner = |n: u32| {
            raw::udp_request(
                net.untrusted_ip(),
                net.outside(),
                format!(
                    "OPTIONS sip:{o} SIP/2.0\r\nVia: SIP/2.0/UDP {u}:5099;branch=z9hG4bK-fb{n}\r\nMax-Forwards: 70\r\nFrom: <sip:100@{u}>;tag=a{n}\r\nTo: <sip:100@{o}>\r\nCall-ID: fb-{n}\r\nCSeq: 1 OPTIONS\r\nUser-Agent: sipcli/v1.8\r\nContent-Length: 0\r\n\r\n",
                    o = net.outside_ip(),
                    u = net.untrusted_ip()
                )
                .as_bytes(),
                Duration::from_millis(500),
            )
        };
        assert!(scanner(1).is_none());
        assert!(scanner(2).is_none());
        assert!(
            lab.log().contains("reason=scanner-user-agent verdict=ban"),
            "{}",
            lab.log_tail(20)
        );
        // The trusted PBX is unaffected.
        let carrier = lab.carrier_primary("uas_answer").spawn_uas();
        lab.pbx_uac("uac_call")
            .pause_ms(100)
            .run()
            .assert_success(1);
        carrier.wait().assert_success(1);
        let dir = lab.dir().to_path_buf();
        assert!(lab.shutdown().success());
        let log = std::fs::read_to_string(dir.join("palisade.log")).unwrap();
        assert!(
            log.contains("palisade_guard_fallback_mode=1"),
            "no fallback gauge in the stats"
        );
        let _ = std::fs::remove_dir_all(&tmp);
    });
}

#[test]
fn sighup_applies_a_new_deny_list_to_the_kernel() {
    const NAME: &str = "sighup_applies_a_new_deny_list_to_the_kernel";
    in_netns(Slot::GuardReload, NAME, || {
        let slot = Slot::GuardReload;
        let net = slot.net();
        let lab = Lab::builder(slot).guard_yaml(GUARD_NFT).start();
        let denied = net.ip(77);
        let options = |n: u32| {
            raw::udp_options(
                denied,
                net.outside(),
                &format!("reload-{n}"),
                Duration::from_millis(400),
            )
        };
        assert!(
            options(1).is_some(),
            "answered before the deny-list names it"
        );
        let text = std::fs::read_to_string(lab.config_path()).unwrap();
        let text = text.replace(
            "  ban_seconds: 6\n",
            &format!("  ban_seconds: 6\n  deny: [{denied}/32]\n"),
        );
        std::fs::write(lab.config_path(), text).unwrap();
        let pid = lab.pid().unwrap();
        Command::new("kill")
            .args(["-HUP", &pid.to_string()])
            .status()
            .unwrap();
        assert!(
            wait_until(Duration::from_secs(5), || nft_set("palisade", "deny_v4")
                .contains(&denied.to_string())),
            "deny_v4 after reload: {:?}\n{}",
            nft_set("palisade", "deny_v4"),
            lab.log_tail(20)
        );
        let before = nft_counter("palisade", "denied");
        assert!(options(2).is_none(), "a denied source was answered");
        assert!(nft_counter("palisade", "denied") > before);
        // The trusted PBX is unaffected.
        assert!(lab.options_ping(Duration::from_secs(1)).is_some());
    });
}

// ------------------------------------------------------------------ fraud

/// Runs the PBX calling `numbers` (one call each, in order) through a lab
/// with every fraud rule; returns the lab (stopped) directory's alert rules
/// (`rule severity action` per alert) and the PBX outcome's file dir.
fn fraud_run(slot: Slot, numbers: &[&str], carrier_scenario: &str) -> Vec<String> {
    fraud_run_with(slot, numbers, carrier_scenario, 1, FRAUD)
}

/// `numbers` called at `rate` per second, each answered call held 1.5 s (so
/// at one call per second at most two run at once: below `concurrent`).
fn fraud_run_with(
    slot: Slot,
    numbers: &[&str],
    carrier_scenario: &str,
    rate: u32,
    yaml: &str,
) -> Vec<String> {
    let lab = Lab::builder(slot).guard_yaml(yaml).start();
    place_calls(&lab, numbers, carrier_scenario, rate);
    alerts_after(lab)
}

fn place_calls(lab: &Lab, numbers: &[&str], carrier_scenario: &str, rate: u32) {
    let csv = lab.dir().join("numbers.csv");
    let mut text = String::from("SEQUENTIAL\n");
    for n in numbers {
        text.push_str(n);
        text.push_str(";\n");
    }
    std::fs::write(&csv, text).unwrap();
    let carrier = lab
        .carrier_primary(carrier_scenario)
        .calls(numbers.len() as u32)
        .timeout(Duration::from_secs(60))
        .spawn_uas();
    let pbx = lab
        .pbx_uac("uac_fraud")
        .calls(numbers.len() as u32)
        .rate(rate)
        .limit(20)
        .pause_ms(1500)
        .arg("-inf")
        .arg(csv.display().to_string())
        .timeout(Duration::from_secs(60))
        .run();
    assert_eq!(pbx.exit_code, Some(0), "{}", pbx.files.diagnostics());
    let _ = carrier.kill();
}

/// Stops the lab (the store flushes) and lists its alerts.
fn alerts_after(lab: Lab) -> Vec<String> {
    let dir = lab.dir().to_path_buf();
    let status = lab.shutdown();
    assert!(status.success());
    let out = Command::new(palisade_bin())
        .args(["alerts", "list", "--json", "--db"])
        .arg(dir.join("alerts.db"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    std::fs::write(dir.join("alerts.json"), &text).unwrap();
    let table = Command::new(palisade_bin())
        .args(["alerts", "list", "--db"])
        .arg(dir.join("alerts.db"))
        .output()
        .unwrap();
    std::fs::write(dir.join("alerts.txt"), &table.stdout).unwrap();
    text.lines()
        .map(|l| {
            let field = |k: &str| {
                l.split(&format!("\"{k}\":\""))
                    .nth(1)
                    .and_then(|r| r.split('"').next())
                    .unwrap_or("")
                    .to_string()
            };
            format!("{} {}", field("rule"), field("severity"))
        })
        .collect()
}

#[test]
fn fraud_office_traffic_raises_no_alert() {
    let alerts = fraud_run(
        Slot::FraudOffice,
        &[
            "+4930123407",
            "+4989555123",
            "+4971100100",
            "112",
            "+4940987654",
            "+4930123499",
            "+4922133344",
            "+4969111222",
        ],
        "uas_answer",
    );
    assert!(alerts.is_empty(), "{alerts:?}");
}

#[test]
fn fraud_calls_per_minute() {
    let numbers: Vec<String> = (0..15).map(|i| format!("+49301234{:02}", i * 7)).collect();
    let refs: Vec<&str> = numbers.iter().map(String::as_str).collect();
    assert_eq!(
        fraud_run(Slot::FraudCallsPerMinute, &refs, "uas_answer"),
        ["cpm critical"]
    );
}

#[test]
fn fraud_high_risk_destinations() {
    assert_eq!(
        fraud_run(
            Slot::FraudHighRisk,
            &["+88212345678", "+25261234567"],
            "uas_answer"
        ),
        ["irsf critical"]
    );
}

#[test]
fn fraud_international_after_hours() {
    assert_eq!(
        fraud_run(
            Slot::FraudAfterHours,
            &[
                "+12125550101",
                "+12125550133",
                "+12125550177",
                "+12125550199"
            ],
            "uas_answer"
        ),
        ["intl-night warning"]
    );
}

#[test]
fn fraud_number_walking() {
    assert_eq!(
        fraud_run(
            Slot::FraudNumberWalking,
            &[
                "+4971100100",
                "+4971100101",
                "+4971100102",
                "+4971100103",
                "+4971100104",
                "+4971100105"
            ],
            "uas_answer"
        ),
        ["walking warning"]
    );
}

#[test]
fn fraud_wangiri_burst_of_unanswered_calls() {
    assert_eq!(
        fraud_run(
            Slot::FraudWangiri,
            &[
                "+4930111007",
                "+4930222014",
                "+4930333021",
                "+4930444028",
                "+4930555035",
                "+4930666042"
            ],
            "uas_busy"
        ),
        ["wangiri warning"]
    );
}

#[test]
fn fraud_repeated_calls_to_one_number() {
    assert_eq!(
        fraud_run(
            Slot::FraudRepeated,
            &[
                "+4930555123",
                "+4930555123",
                "+4930555123",
                "+4930555123",
                "+4930555123"
            ],
            "uas_answer"
        ),
        ["repeated warning"]
    );
}

#[test]
fn fraud_concurrent_calls() {
    assert_eq!(
        fraud_run_with(
            Slot::FraudConcurrent,
            &[
                "+4930111007",
                "+4930222014",
                "+4930333021",
                "+4930444028",
                "+4930555035"
            ],
            "uas_answer",
            20,
            FRAUD
        ),
        ["concurrent warning"]
    );
}

#[test]
fn fraud_alerts_survive_a_restart_and_keep_merging() {
    let tmp = std::env::temp_dir().join(format!("palisade-e2e-restart-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    let db = tmp.join("alerts.db");
    let yaml = FRAUD.replace(
        "database_path: alerts.db",
        &format!("database_path: {}", db.display()),
    );
    let lab = Lab::builder(Slot::FraudRestart).guard_yaml(&yaml).start();
    place_calls(&lab, &["+4930555123"; 4], "uas_answer", 1);
    assert!(lab.shutdown().success());
    let show = || {
        let out = Command::new(palisade_bin())
            .args(["alerts", "list", "--json", "--db"])
            .arg(&db)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let before = show();
    assert_eq!(before.lines().count(), 1, "{before}");
    assert!(
        before.contains("\"id\":1,") && before.contains("\"count\":1,"),
        "{before}"
    );
    // A new process on the same database: the same rule and subject merge
    // into the stored alert instead of opening another.
    let lab = Lab::builder(Slot::FraudRestart).guard_yaml(&yaml).start();
    place_calls(&lab, &["+4930555123"; 4], "uas_answer", 1);
    assert!(lab.shutdown().success());
    let after = show();
    assert_eq!(after.lines().count(), 1, "{after}");
    assert!(
        after.contains("\"id\":1,") && after.contains("\"count\":2,"),
        "{after}"
    );
    let _ = std::fs::remove_dir_all(&tmp);
}

#[test]
fn fraud_duration_cap_tears_the_call_down_mid_way() {
    let lab = Lab::builder(Slot::FraudDurationCap)
        .guard_yaml(FRAUD)
        .start();
    let carrier = lab.carrier_primary("uas_answer").spawn_uas();
    let started = now();
    // The PBX would talk for as long as it takes: only Palisade's BYE ends it.
    let pbx = lab
        .pbx_uac("uac_expect_bye")
        .key("callee", "+4930111222")
        .timeout(Duration::from_secs(30))
        .run();
    let elapsed = now() - started;
    pbx.assert_success(1);
    carrier.wait().assert_success(1);
    assert!(
        elapsed >= Duration::from_millis(4500) && elapsed < Duration::from_secs(12),
        "torn down after {elapsed:?}"
    );
    let log = lab.log();
    assert!(
        log.contains("rule=duration-cap") && log.contains("call torn down"),
        "{}",
        lab.log_tail(30)
    );
    assert!(log.contains("reason=guard"), "{}", lab.log_tail(30));
    assert_eq!(alerts_after(lab), ["duration-cap critical"]);
}

#[test]
fn dry_run_logs_but_blocks_nothing() {
    let yaml = FRAUD.replace("mode: enforce", "mode: dry-run");
    let lab = Lab::builder(Slot::GuardDryRun).guard_yaml(&yaml).start();
    let net = lab.net();
    // A scanner is logged as a would-be ban, and still answered.
    let ua_probe = raw::udp_request(
        net.untrusted_ip(),
        net.outside(),
        format!(
            "OPTIONS sip:{o} SIP/2.0\r\nVia: SIP/2.0/UDP {u}:5099;branch=z9hG4bK-dry1\r\nMax-Forwards: 70\r\nFrom: <sip:100@{u}>;tag=a1\r\nTo: <sip:100@{o}>\r\nCall-ID: dry-1\r\nCSeq: 1 OPTIONS\r\nUser-Agent: friendly-scanner\r\nContent-Length: 0\r\n\r\n",
            o = net.outside_ip(),
            u = net.untrusted_ip()
        )
        .as_bytes(),
        Duration::from_secs(2),
    );
    assert!(
        ua_probe.is_some_and(|r| r.starts_with(b"SIP/2.0 200")),
        "dry-run blocked the scanner"
    );
    // Fraud: the duration cap would tear down, but the call runs to its end.
    let carrier = lab.carrier_primary("uas_answer").spawn_uas();
    let pbx = lab
        .pbx_uac("uac_call")
        .pause_ms(6000)
        .timeout(Duration::from_secs(30))
        .run();
    pbx.assert_success(1);
    carrier.wait().assert_success(1);
    let log = lab.log();
    assert!(
        log.contains("reason=scanner-user-agent verdict=ban") && log.contains("mode=\"dry-run\""),
        "{}",
        lab.log_tail(30)
    );
    assert!(!log.contains("call torn down"), "{}", lab.log_tail(30));
    let alerts = alerts_after(lab);
    assert_eq!(alerts, ["duration-cap critical"]);
}
