//! The guard end to end: real scanners (sipvicious) and floods (SIPp) from
//! untrusted addresses, banned by nftables in a network namespace each test
//! creates, while the trusted PBX's calls go through; and the fraud rules,
//! one SIPp scenario per pattern, checked against the alert database.
#![allow(clippy::unwrap_used)]

use std::net::Ipv4Addr;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use palisade_e2e::http;
use palisade_e2e::net::{now, wait_until};
use palisade_e2e::netns::{SourceCounters, in_netns, nft_counter, nft_ruleset, nft_set};
use palisade_e2e::{
    Lab, LabConfig, SippOutcome, SippProcess, Slot, numbers, palisade_bin, raw, require_tool,
};

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
    - {name: irsf, kind: high_risk_destination, window_seconds: 3600, warning: {threshold: 1}, critical: {threshold: 2, action: reject}, reject_status: 603}
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

/// The PBX calling out through the carrier until told to stop (SIGUSR1),
/// logging as `label`.
fn pbx_caller(lab: &Lab, label: &str) -> SippProcess {
    let net = lab.net();
    lab.sipp(label, "uac_call")
        .local(net.pbx())
        .remote(net.inside())
        .key("caller", numbers::PBX_CALLER)
        .key("callee", numbers::EXTERNAL)
        .key("expect_peer", net.inside_ip())
        .calls(400)
        .rate(4)
        .limit(10)
        .pause_ms(300)
        .timeout(Duration::from_secs(60))
        .spawn()
}

/// Stops a [`pbx_caller`] that must have been calling all along: still
/// running now, and every call it placed succeeded. Returns its calls.
fn pbx_calls_all_succeeded(mut pbx: SippProcess, during: &str) -> u64 {
    assert!(
        pbx.running(),
        "the PBX stopped calling before {during} ended:\n{}",
        pbx.files().diagnostics()
    );
    let out = pbx.quit();
    let stats = out.stats.unwrap_or_default();
    assert!(
        out.exit_code == Some(0) && stats.failed == 0 && stats.successful >= 3,
        "PBX calls during {during}: exit {:?}, {stats:?}\n{}",
        out.exit_code,
        out.files.diagnostics()
    );
    stats.successful
}

/// REASON, EXPIRES, KERNEL and STATE of the `palisade bans list` row for
/// `ip` that expires last.
fn ban_row(list: &str, ip: &str) -> Option<(String, String, String, String)> {
    list.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.first() == Some(&ip) && f.len() >= 5).then(|| {
                (
                    f[1].to_string(),
                    f[2].to_string(),
                    f[3].to_string(),
                    f[4].to_string(),
                )
            })
        })
        .max_by(|a, b| a.1.cmp(&b.1))
}

/// `YYYY-MM-DDTHH:MM:SSZ` to Unix seconds (UTC).
fn iso_to_unix(s: &str) -> Option<i64> {
    let (date, time) = s.strip_suffix('Z')?.split_once('T')?;
    let d: Vec<i64> = date
        .split('-')
        .map(|x| x.parse().ok())
        .collect::<Option<_>>()?;
    let t: Vec<i64> = time
        .split(':')
        .map(|x| x.parse().ok())
        .collect::<Option<_>>()?;
    let (y, m, day) = (d[0], d[1], d[2]);
    // Days from civil (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(days * 86_400 + t[0] * 3600 + t[1] * 60 + t[2])
}

fn unix_now() -> i64 {
    #[allow(clippy::disallowed_methods)] // the test compares with wall-clock expiry times
    let t = std::time::SystemTime::now();
    t.duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
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

        // Bans outlast svmap's sweep (about 10 s), then expire during the test.
        let yaml = GUARD_NFT.replace("  ban_seconds: 6\n", "  ban_seconds: 15\n");
        let mut lab = Lab::builder(slot).guard_yaml(&yaml).start();
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

        let outside = net.outside_ip().to_string();
        let dir = lab.dir().to_path_buf();
        // svmap binds where it is told; svwar and svcrack 0.3.3 ignore -b and
        // send from 127.0.0.1, untrusted here like any address but the trunks.
        let svmap_ip = net.ip(66);
        let local = Ipv4Addr::LOCALHOST;
        // What each scanner sent to the SIP port, and what got past the
        // kernel to Palisade's socket.
        let counters =
            SourceCounters::install(&[("svmap", svmap_ip.into()), ("local", local.into())], 5060);
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
        let mut report = String::new();
        let mut measure = |tool: &str, label: &str, before: (u64, u64)| {
            let (sent, passed) = (
                counters.sent(label) - before.0,
                counters.passed(label) - before.1,
            );
            report.push_str(&format!("{tool}: sent={sent} reached_palisade={passed}\n"));
            (sent, passed)
        };
        let bans_list = || {
            let list = Command::new(palisade_bin())
                .args(["bans", "list", "--all", "--config"])
                .arg(lab.config_path())
                .current_dir(lab.dir())
                .output()
                .unwrap();
            String::from_utf8_lossy(&list.stdout).into_owned()
        };
        // The ban list (database + kernel) shows the source, the reason,
        // when the ban ends and the time the kernel has left on it.
        let listed = |ip: Ipv4Addr, file: &str| {
            let list = bans_list();
            std::fs::write(dir.join(file), &list).unwrap();
            assert_eq!(
                list.lines()
                    .next()
                    .map(|h| h.split_whitespace().take(6).collect::<Vec<_>>()),
                Some(vec![
                    "SOURCE", "REASON", "EXPIRES", "KERNEL", "STATE", "DETAIL"
                ]),
                "{list}"
            );
            let (reason, expires, kernel, state) =
                ban_row(&list, &ip.to_string()).unwrap_or_else(|| panic!("{ip}:\n{list}"));
            assert_eq!(reason, "scanner-user-agent", "{list}");
            assert_eq!(state, "active", "{list}");
            let left = iso_to_unix(&expires).unwrap_or_else(|| panic!("{expires}")) - unix_now();
            assert!(
                (0..=16).contains(&left),
                "EXPIRES {expires}: {left}s from now\n{list}"
            );
            let secs: u64 = kernel
                .strip_suffix('s')
                .and_then(|n| n.parse().ok())
                .unwrap_or_else(|| panic!("KERNEL column `{kernel}`:\n{list}"));
            assert!(secs <= 15 && (secs as i64 - left).abs() <= 2, "{list}");
        };
        // The carrier answers every call the PBX places during the three runs.
        let carrier = lab
            .carrier_primary("uas_answer")
            .calls(1200)
            .timeout(Duration::from_secs(120))
            .spawn_uas();
        let mut pbx_total = 0;

        // svmap sweeps 1024 addresses (Palisade's two among them) on 5060;
        // the kernel's ban applies to every address, so the sweep is cut off.
        let pbx = pbx_caller(&lab, "pbx-svmap");
        let svmap_range = format!("{}/22", net.ip(0));
        run_tool(
            &dir,
            "svmap",
            "svmap",
            &[
                "-b",
                &svmap_ip.to_string(),
                "-P",
                "5062",
                "-p",
                "5060",
                &svmap_range,
            ],
        );
        pbx_total += pbx_calls_all_succeeded(pbx, "svmap");
        let (sent, passed) = measure("svmap", "svmap", (0, 0));
        assert!(
            in_ban_set(svmap_ip),
            "svmap not banned in the kernel:\n{}",
            lab.log_tail(20)
        );
        assert!(sent >= 1000, "svmap sent only {sent} requests");
        assert!(
            (1..100).contains(&passed),
            "{passed} of svmap's {sent} requests got past the kernel"
        );
        snapshot("nft-after-svmap.txt");
        dropped_in_kernel(svmap_ip);
        listed(svmap_ip, "bans-list-svmap.txt");

        // svwar walks 1000 extensions with INVITEs.
        let before = (counters.sent("local"), counters.passed("local"));
        let pbx = pbx_caller(&lab, "pbx-svwar");
        run_tool(
            &dir,
            "svwar",
            "svwar",
            &[
                "-P",
                "5062",
                "-e",
                "1000-1999",
                "-m",
                "INVITE",
                "--maximumtime",
                "5",
                &outside,
            ],
        );
        pbx_total += pbx_calls_all_succeeded(pbx, "svwar");
        let (sent, passed) = measure("svwar", "local", before);
        assert!(
            in_ban_set(local),
            "svwar not banned in the kernel:\n{}",
            lab.log_tail(20)
        );
        assert!(
            (1..100).contains(&passed),
            "{passed} of svwar's {sent} requests got past the kernel"
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

        // svcrack tries 1000 passwords for user 100 (and keeps trying for
        // 10 s without answers).
        let before = (counters.sent("local"), counters.passed("local"));
        let pbx = pbx_caller(&lab, "pbx-svcrack");
        let mut svcrack = spawn_tool(
            &dir,
            "svcrack",
            "svcrack",
            &["-P", "5062", "-u", "100", "-r", "1000-1999", &outside],
        );
        assert!(
            in_ban_set(local),
            "svcrack not banned in the kernel:\n{}",
            lab.log_tail(20)
        );
        snapshot("nft-after-svcrack.txt");
        dropped_in_kernel(local);
        listed(local, "bans-list-svcrack.txt");
        let _ = svcrack.wait();
        pbx_total += pbx_calls_all_succeeded(pbx, "svcrack");
        let (sent, passed) = measure("svcrack", "local", before);
        // svwar and svcrack give up when their first request goes
        // unanswered, so they send few; what counts is that few got through.
        assert!(
            (1..100).contains(&passed),
            "{passed} of svcrack's {sent} requests got past the kernel"
        );
        std::fs::write(dir.join("scanner-counters.txt"), &report).unwrap();

        // Each was detected on its first request: one ban decision per run.
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
        let scanners = [svmap_ip, local];

        // Every call from the trusted trunk succeeded meanwhile.
        let carrier = carrier.quit();
        let cs = carrier.stats.unwrap_or_default();
        assert!(
            cs.successful == pbx_total && cs.failed == 0,
            "carrier {cs:?}, the PBX completed {pbx_total}\n{}",
            carrier.files.diagnostics()
        );

        // Bans expire in the kernel by themselves (ban_seconds: 15), and the
        // list says the kernel no longer holds them.
        assert!(
            wait_until(Duration::from_secs(20), || nft_set("palisade", "ban_v4")
                .is_empty()),
            "bans did not expire: {:?}",
            nft_set("palisade", "ban_v4")
        );
        let list = bans_list();
        std::fs::write(dir.join("bans-list-expired.txt"), &list).unwrap();
        for ip in scanners {
            assert_eq!(
                ban_row(&list, &ip.to_string()).map(|r| (r.2, r.3)),
                Some(("no".to_string(), "expired".to_string())),
                "{list}"
            );
        }
        // The ban the operator lifted stays in the history, marked.
        assert!(
            list.lines().any(|l| l.starts_with("127.0.0.1 ")
                && l.split_whitespace().nth(4) == Some("lifted")
                && l.contains("lifted by e2e at ")),
            "{list}"
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
        let flooder: Ipv4Addr = net.untrusted_ip();
        let counters = SourceCounters::install(&[("flood", flooder.into())], 5060);
        let carrier = lab
            .carrier_primary("uas_answer")
            .calls(200)
            .timeout(Duration::from_secs(60))
            .spawn_uas();
        let mut pbx = lab
            .pbx_uac("uac_call")
            .calls(200)
            .rate(40)
            .limit(60)
            .pause_ms(100)
            .timeout(Duration::from_secs(60))
            .spawn();
        let flood = lab
            .sipp("flood", "uac_call")
            .local(std::net::SocketAddr::new(flooder.into(), 5090))
            .remote(net.outside())
            .key("caller", "+999")
            .key("callee", "+4930123555")
            .key("expect_peer", net.outside_ip())
            .rate(3000)
            .calls(30_000)
            .timeout(Duration::from_secs(10))
            .arg("-rate_max")
            .arg("3000")
            .spawn();
        // The flood's rate, measured by the kernel over two seconds while
        // the PBX is still calling.
        std::thread::sleep(Duration::from_millis(1000));
        let (t1, c1) = (now(), counters.sent("flood"));
        std::thread::sleep(Duration::from_millis(2000));
        let (t2, c2) = (now(), counters.sent("flood"));
        let overlapped = pbx.running();
        let rate = (c2 - c1) as f64 / (t2 - t1).as_secs_f64();
        let pbx = pbx.wait();
        let _ = flood.kill();
        let meter = nft_counter("palisade", "meter_banned");
        let dropped = nft_counter("palisade", "banned_dropped");
        let (sent, passed) = (counters.sent("flood"), counters.passed("flood"));
        std::fs::write(
            lab.dir().join("flood-counters.txt"),
            format!(
                "rate={rate:.0}/s (kernel count {c1} -> {c2}) sent={sent} reached_palisade={passed} \
                 meter_banned={meter} banned_dropped={dropped} pbx_still_calling={overlapped}\n{}",
                nft_ruleset()
            ),
        )
        .unwrap();
        assert!(
            overlapped,
            "the PBX's 200 calls were over before the flood was measured"
        );
        assert!(rate >= 1000.0, "the flood ran at only {rate:.0} packets/s");
        // Zero legitimate failures.
        pbx.assert_success(200);
        carrier.wait().assert_success(200);
        let set = nft_set("palisade", "ban_v4");
        assert!(
            set.contains(&flooder.to_string()),
            "flooder not banned: {set:?}\n{}",
            lab.log_tail(30)
        );
        assert!(
            dropped + meter >= 5000,
            "the kernel dropped only {dropped}+{meter} packets"
        );
        assert!(
            passed < 1000 && passed * 10 < sent,
            "{passed} of the flood's {sent} packets reached Palisade"
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
        // The admin endpoint says so too: the gauge, the status, the ban.
        let m = http::get(lab.admin(), "/metrics").expect("no answer from /metrics");
        assert_eq!(
            http::metric(&m.body, "palisade_guard_fallback_mode"),
            Some(1),
            "{}",
            m.body
        );
        assert!(
            http::metric(
                &m.body,
                "palisade_guard_decisions_total{reason=\"scanner-user-agent\"}"
            )
            .is_some_and(|n| n >= 1),
            "{}",
            m.body
        );
        assert_eq!(
            http::metric(&m.body, "palisade_guard_nft_bans_applied_total"),
            Some(0)
        );
        let st = http::get(lab.admin(), "/api/v1/status").expect("no answer from status");
        let v: serde_json::Value = serde_json::from_str(&st.body).unwrap();
        assert_eq!(v["guard_blocking"], "in-process", "{v}");
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

/// The final status of each INVITE a UAC got, in the order the calls were
/// placed (retransmitted finals counted once).
fn invite_finals(out: &SippOutcome) -> Vec<u16> {
    let mut seen: Vec<String> = Vec::new();
    let mut finals = Vec::new();
    for m in out.received() {
        let Some(status) = m.status() else { continue };
        let invite = m.header("CSeq").is_some_and(|c| c.ends_with("INVITE"));
        let id = m.call_id().unwrap_or_default();
        if status >= 200 && invite && !seen.contains(&id) {
            seen.push(id);
            finals.push(status);
        }
    }
    finals
}

/// `numbers` in a SIPp injection file.
fn numbers_csv(dir: &Path, name: &str, numbers: &[&str]) -> std::path::PathBuf {
    let csv = dir.join(name);
    let mut text = String::from("SEQUENTIAL\n");
    for n in numbers {
        text.push_str(n);
        text.push_str(";\n");
    }
    std::fs::write(&csv, text).unwrap();
    csv
}

/// A fraud rule with action `ban`: the registered phone (calling from its
/// own address on the registrar's trunk) lands in the kernel's ban set; the
/// trusted PBX crossing the same rule is refused, never banned.
#[test]
fn fraud_ban_puts_a_registered_phone_in_the_kernel_ban_set() {
    const NAME: &str = "fraud_ban_puts_a_registered_phone_in_the_kernel_ban_set";
    in_netns(Slot::FraudBanPhone, NAME, || {
        let slot = Slot::FraudBanPhone;
        let net = slot.net();
        let cfg = LabConfig {
            guard_yaml: "\
guard:
  mode: enforce
  nftables: on
  ban_seconds: 60
fraud:
  rules:
    - {name: burst, kind: calls_per_minute, subject: source, warning: {threshold: 2}, critical: {threshold: 3, action: ban}}
alerts:
  database_path: alerts.db
"
            .to_string(),
            ..LabConfig::default()
        };
        // MD5("100:palisade.e2e:right").
        let text = format!(
            "{}\nregistrar:\n  trunk: pbx\n  realm: palisade.e2e\n  users:\n    - user: \"100\"\n      ha1_md5: 86a38c0d4761b7687b3fed36ceb20da9\n  algorithms: [md5]\n",
            cfg.render(slot)
        );
        let lab = Lab::builder(slot).config(cfg).config_text(text).start();
        let dir = lab.dir().to_path_buf();
        let phone_ip = net.ip(30);
        let phone = std::net::SocketAddr::new(phone_ip.into(), 5070);
        lab.sipp("phone-register", "uac_register")
            .local(phone)
            .remote(net.inside())
            .key("user", "100")
            .key("domain", "palisade.e2e")
            .key("contact_host", phone_ip)
            .key("contact_port", 5070)
            .arg("-au")
            .arg("100")
            .arg("-ap")
            .arg("right")
            // The digest uri is the Request-URI (SIPp: `sip:` + this; default ip:port).
            .arg("-auth_uri")
            .arg("palisade.e2e")
            .run()
            .assert_success(1);
        let carrier = lab
            .carrier_primary("uas_answer")
            .calls(4)
            .timeout(Duration::from_secs(40))
            .spawn_uas();
        let calls = |label: &str, from: std::net::SocketAddr, caller: &str| {
            let csv = numbers_csv(
                &dir,
                &format!("{label}-numbers.csv"),
                &["+4971100100", "+4971100200", "+4971100300"],
            );
            lab.sipp(label, "uac_fraud")
                .local(from)
                .remote(net.inside())
                .key("caller", caller)
                .key("expect_peer", net.inside_ip())
                .calls(3)
                .rate(1)
                .limit(1)
                .pause_ms(200)
                .arg("-inf")
                .arg(csv.display().to_string())
                .timeout(Duration::from_secs(30))
                .run()
        };
        // The phone: two calls, then the third crosses the critical level.
        let out = calls("phone", phone, "100");
        assert_eq!(out.exit_code, Some(0), "{}", out.files.diagnostics());
        assert_eq!(invite_finals(&out), [200, 200, 403], "{}", lab.log_tail(30));
        assert!(
            wait_until(Duration::from_secs(3), || nft_set("palisade", "ban_v4")
                .contains(&phone_ip.to_string())),
            "the phone is not in the kernel ban set: {:?}\n{}",
            nft_set("palisade", "ban_v4"),
            lab.log_tail(30)
        );
        let before = nft_counter("palisade", "banned_dropped");
        assert!(
            raw::udp_options(
                phone_ip,
                net.inside(),
                "phone-after-ban",
                Duration::from_millis(400)
            )
            .is_none(),
            "the banned phone was answered"
        );
        assert!(nft_counter("palisade", "banned_dropped") > before);

        // The trusted PBX crosses the same rule: refused, never banned.
        let out = calls("pbx", net.pbx(), "+4989555000");
        assert_eq!(out.exit_code, Some(0), "{}", out.files.diagnostics());
        assert_eq!(invite_finals(&out), [200, 200, 403], "{}", lab.log_tail(30));
        std::thread::sleep(Duration::from_millis(300));
        let set = nft_set("palisade", "ban_v4");
        assert_eq!(set, [phone_ip.to_string()], "only the phone is banned");
        assert!(lab.options_ping(Duration::from_secs(1)).is_some());
        let _ = carrier.kill();

        let list = Command::new(palisade_bin())
            .args(["bans", "list", "--config"])
            .arg(lab.config_path())
            .current_dir(&dir)
            .output()
            .unwrap();
        let list = String::from_utf8_lossy(&list.stdout).into_owned();
        std::fs::write(dir.join("bans-list.txt"), &list).unwrap();
        let row = ban_row(&list, &phone_ip.to_string()).unwrap_or_else(|| panic!("{list}"));
        assert_eq!(row.0, "fraud", "{list}");
        assert!(list.contains("fraud rule burst (critical)"), "{list}");
        let mut alerts = alerts_after(lab);
        alerts.sort();
        assert_eq!(alerts, ["burst critical", "burst critical"]);
        let json = std::fs::read_to_string(dir.join("alerts.json")).unwrap();
        let action_for = |ip: Ipv4Addr| {
            json.lines()
                .find(|l| {
                    l.contains(&format!(
                        "\"subject\":{{\"kind\":\"source\",\"value\":\"{ip}\"}}"
                    ))
                })
                .and_then(|l| l.split("\"action\":\"").nth(1))
                .and_then(|r| r.split('"').next())
                .map(str::to_owned)
        };
        assert_eq!(action_for(phone_ip).as_deref(), Some("ban"), "{json}");
        assert_eq!(
            action_for(net.pbx_ip()).as_deref(),
            Some("teardown"),
            "{json}"
        );
    });
}

/// An OPTIONS from `from` to `to` carrying `headers` (each line ending in
/// CRLF) after the usual ones.
fn options_text(
    from: std::net::SocketAddr,
    to: std::net::SocketAddr,
    n: u32,
    from_hdr: &str,
    extra: &str,
) -> String {
    format!(
        "OPTIONS sip:{to} SIP/2.0\r\nVia: SIP/2.0/UDP {from};branch=z9hG4bK-g{n}\r\nMax-Forwards: 70\r\n\
         From: {from_hdr}\r\nTo: <sip:100@{to}>\r\nCall-ID: guard-{n}@{ip}\r\nCSeq: 1 OPTIONS\r\n{extra}Content-Length: 0\r\n\r\n",
        ip = from.ip()
    )
}

/// A request only sipvicious would send, though its User-Agent says
/// otherwise, is recognised by its fingerprints: svmap itself (with the
/// User-Agent list emptied of its name), a From tag in sipvicious'
/// encoding, and its Contact `sip:123@1.1.1.1`. Each lands in the kernel.
#[test]
fn sipvicious_fingerprints_ban_without_the_scanner_user_agent() {
    const NAME: &str = "sipvicious_fingerprints_ban_without_the_scanner_user_agent";
    in_netns(Slot::GuardFingerprint, NAME, || {
        let slot = Slot::GuardFingerprint;
        let net = slot.net();
        let yaml = GUARD_NFT.replace(
            "  ban_seconds: 6\n",
            "  ban_seconds: 60\n  scanners:\n    user_agents: [no-such-scanner]\n",
        );
        let lab = Lab::builder(slot).guard_yaml(&yaml).start();
        let dir = lab.dir().to_path_buf();
        let banned = |ip: Ipv4Addr| {
            wait_until(Duration::from_secs(3), || {
                nft_set("palisade", "ban_v4").contains(&ip.to_string())
            })
        };
        // svmap, whose "friendly-scanner" is no longer on the list.
        let svmap_ip = net.ip(66);
        run_tool(
            &dir,
            "svmap",
            "svmap",
            &[
                "-b",
                &svmap_ip.to_string(),
                "-P",
                "5062",
                "-p",
                "5060",
                &net.outside_ip().to_string(),
            ],
        );
        assert!(banned(svmap_ip), "svmap not banned:\n{}", lab.log_tail(20));

        // From tag `hex("100" 0x01 "1234567890")`, From and Contact ordinary.
        let tag: String = b"100\x011234567890"
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let tag_ip = net.ip(67);
        let sock = raw::udp_socket(tag_ip);
        let from = sock.local_addr().unwrap();
        let text = options_text(
            from,
            net.outside(),
            1,
            &format!("<sip:100@{tag_ip}>;tag={tag}"),
            &format!("Contact: <sip:100@{from}>\r\nUser-Agent: Asterisk PBX 20.5.0\r\n"),
        );
        let answer = raw::udp_send_collect(
            &sock,
            net.outside(),
            text.as_bytes(),
            Duration::from_millis(500),
        );
        assert!(answer.is_empty(), "answered: {answer:?}");
        assert!(
            banned(tag_ip),
            "From-tag fingerprint not banned:\n{}",
            lab.log_tail(20)
        );

        // Contact sip:123@1.1.1.1, an ordinary tag.
        let contact_ip = net.ip(68);
        let sock = raw::udp_socket(contact_ip);
        let from = sock.local_addr().unwrap();
        let text = options_text(
            from,
            net.outside(),
            2,
            &format!("<sip:100@{contact_ip}>;tag=as5f3c2a1b"),
            "Contact: <sip:123@1.1.1.1>\r\nUser-Agent: Zoiper rv2.10\r\n",
        );
        let answer = raw::udp_send_collect(
            &sock,
            net.outside(),
            text.as_bytes(),
            Duration::from_millis(500),
        );
        assert!(answer.is_empty(), "answered: {answer:?}");
        assert!(
            banned(contact_ip),
            "Contact fingerprint not banned:\n{}",
            lab.log_tail(20)
        );

        let log = lab.log();
        for (ip, what) in [
            (tag_ip, "From tag in sipvicious encoding"),
            (contact_ip, "Contact sip:123@1.1.1.1"),
        ] {
            assert!(
                log.lines().any(|l| l.contains(&format!(
                    "source={ip} reason=scanner-fingerprint verdict=ban"
                )) && l.contains(what)),
                "{ip}: {what}\n{}",
                lab.log_tail(30)
            );
        }
        assert!(
            log.contains(&format!(
                "source={svmap_ip} reason=scanner-fingerprint verdict=ban"
            )),
            "{}",
            lab.log_tail(30)
        );
        assert!(
            !log.contains("reason=scanner-user-agent"),
            "{}",
            lab.log_tail(30)
        );
        // An ordinary request from an ordinary phone is answered.
        let sock = raw::udp_socket(net.ip(69));
        let from = sock.local_addr().unwrap();
        let text = options_text(
            from,
            net.outside(),
            3,
            &format!("<sip:100@{}>;tag=as5f3c2a1c", net.ip(69)),
            &format!("Contact: <sip:100@{from}>\r\nUser-Agent: Zoiper rv2.10\r\n"),
        );
        let answer = raw::udp_send_collect(
            &sock,
            net.outside(),
            text.as_bytes(),
            Duration::from_millis(800),
        );
        assert!(
            answer
                .first()
                .is_some_and(|a| a.starts_with(b"SIP/2.0 200")),
            "an ordinary OPTIONS was not answered"
        );
    });
}

/// One scanner OPTIONS from each of `ips` (sent back to back, answers not awaited).
fn scanners_from(ips: &[Ipv4Addr], to: std::net::SocketAddr) -> Vec<std::net::UdpSocket> {
    ips.iter()
        .enumerate()
        .map(|(i, ip)| {
            let sock = raw::udp_socket(*ip);
            let from = sock.local_addr().unwrap();
            let text = options_text(
                from,
                to,
                i as u32,
                &format!("<sip:100@{ip}>;tag=s{i}"),
                "User-Agent: sipcli/v1.8\r\n",
            );
            sock.send_to(text.as_bytes(), to).unwrap();
            sock
        })
        .collect()
}

/// A value of Palisade's final guard stats line.
fn final_stat(log: &str, key: &str) -> Option<u64> {
    let line = log
        .lines()
        .rev()
        .find(|l| l.contains("guard final stats"))?;
    line.split_whitespace()
        .find_map(|f| f.strip_prefix(&format!("{key}=")))
        .and_then(|v| v.parse().ok())
}

/// Ninety sources banned at once cost a handful of nft runs, not ninety.
/// Then sixty more arrive for a ban set (`max_bans: 128`) with 38 places
/// left: the batch the kernel refuses is retried with what fits, the rest
/// are counted and blocked in-process; no source gets an answer again.
#[test]
fn bans_are_batched_and_a_full_kernel_set_keeps_what_fits() {
    const NAME: &str = "bans_are_batched_and_a_full_kernel_set_keeps_what_fits";
    in_netns(Slot::GuardBanSetFull, NAME, || {
        let slot = Slot::GuardBanSetFull;
        let net = slot.net();
        let yaml = GUARD_NFT.replace(
            "  ban_seconds: 6\n",
            "  ban_seconds: 120\n  max_bans: 128\n",
        );
        let lab = Lab::builder(slot).guard_yaml(&yaml).start();
        let dir = lab.dir().to_path_buf();
        let set_len = || nft_set("palisade", "ban_v4").len();
        let first: Vec<Ipv4Addr> = (100..190).map(|h| net.ip(h)).collect();
        let _s1 = scanners_from(&first, net.outside());
        assert!(
            wait_until(Duration::from_secs(5), || set_len() == 90),
            "{} of 90 in the kernel\n{}",
            set_len(),
            lab.log_tail(20)
        );
        let second: Vec<Ipv4Addr> = (190..250).map(|h| net.ip(h)).collect();
        let _s2 = scanners_from(&second, net.outside());
        assert!(
            wait_until(Duration::from_secs(5), || set_len() == 128),
            "{} of 128 in the kernel\n{}",
            set_len(),
            lab.log_tail(20)
        );
        std::thread::sleep(Duration::from_millis(500));
        let set = nft_set("palisade", "ban_v4");
        std::fs::write(dir.join("nft-ban-set.txt"), set.join("\n")).unwrap();
        assert_eq!(set.len(), 128, "the set holds exactly its size");
        for ip in &first {
            assert!(set.contains(&ip.to_string()), "{ip} lost from the kernel");
        }
        assert!(
            lab.log().contains("ban set ban_v4 is full: "),
            "{}",
            lab.log_tail(20)
        );
        // Every one of the 150 stays unanswered (kernel, or in-process for
        // those the set could not take), even without a scanner User-Agent.
        let all: Vec<Ipv4Addr> = first.iter().chain(&second).copied().collect();
        let socks: Vec<_> = all
            .iter()
            .enumerate()
            .map(|(i, ip)| {
                let sock = raw::udp_socket(*ip);
                let from = sock.local_addr().unwrap();
                let text = options_text(
                    from,
                    net.outside(),
                    1000 + i as u32,
                    &format!("<sip:100@{ip}>;tag=c{i}"),
                    "",
                );
                sock.send_to(text.as_bytes(), net.outside()).unwrap();
                sock
            })
            .collect();
        std::thread::sleep(Duration::from_millis(800));
        for (ip, sock) in all.iter().zip(&socks) {
            let got = raw::udp_collect(sock, Duration::from_millis(5), 1);
            assert!(got.is_empty(), "{ip} was answered after its ban");
        }
        assert!(
            lab.options_ping(Duration::from_secs(1)).is_some(),
            "the PBX is still answered"
        );
        assert!(lab.shutdown().success());
        let log = std::fs::read_to_string(dir.join("palisade.log")).unwrap();
        let stat =
            |k: &str| final_stat(&log, k).unwrap_or_else(|| panic!("no {k} in the final stats"));
        let (applied, batches, full) = (
            stat("palisade_guard_nft_bans_applied_total"),
            stat("palisade_guard_nft_batches_total"),
            stat("palisade_guard_nft_set_full_total"),
        );
        std::fs::write(
            dir.join("nft-batches.txt"),
            format!("bans_applied={applied} batches={batches} set_full={full}\n"),
        )
        .unwrap();
        assert_eq!((applied, full), (128, 22), "batches={batches}");
        assert!(
            batches * 10 <= applied,
            "{batches} nft batches for {applied} bans"
        );
        assert_eq!(stat("palisade_guard_bans_issued_total"), 150);
        assert_eq!(stat("palisade_guard_bans_active"), 128);
        assert_eq!(stat("palisade_guard_bans_evicted_total"), 22);
    });
}

/// IPv6: a scanner on `::1` lands in `ban_v6` and its next packets are
/// dropped by the kernel. Media: a banned source's RTP to the media ports
/// (IPv4 and IPv6) is dropped by the kernel too, while the same probe from
/// a source nobody banned is not.
#[test]
fn ipv6_scanners_and_media_probes_from_banned_sources_are_dropped_in_the_kernel() {
    const NAME: &str =
        "ipv6_scanners_and_media_probes_from_banned_sources_are_dropped_in_the_kernel";
    in_netns(Slot::GuardIpv6Media, NAME, || {
        use std::net::{SocketAddr, UdpSocket};
        let slot = Slot::GuardIpv6Media;
        let net = slot.net();
        let cfg = LabConfig {
            guard_yaml: GUARD_NFT.replace("  ban_seconds: 6\n", "  ban_seconds: 60\n"),
            ..LabConfig::default()
        };
        // A third zone on ::1 (its own media range).
        let text = cfg.render(slot).replacen(
            "\ntrunks:\n",
            "  - name: v6\n    sip_address: \"::1\"\n    udp_port: 5060\n    tcp_port: 5060\n    media:\n      address: \"::1\"\n      port_min: 40000\n      port_max: 40999\n\ntrunks:\n",
            1,
        );
        let lab = Lab::builder(slot).config(cfg).config_text(text).start();
        let v6: SocketAddr = "[::1]:5060".parse().unwrap();
        let dropped = || nft_counter("palisade", "banned_dropped");
        let v6_request = |sock: &UdpSocket, n: u32, ua: &str| {
            let from = sock.local_addr().unwrap();
            let text = options_text(
                from,
                v6,
                n,
                &format!("<sip:100@[::1]>;tag=v{n}"),
                &format!("User-Agent: {ua}\r\n"),
            );
            raw::udp_send_collect(sock, v6, text.as_bytes(), Duration::from_millis(500))
        };
        let sock = UdpSocket::bind("[::1]:0").unwrap();
        let answer = v6_request(&sock, 1, "Zoiper rv2.10");
        assert!(
            answer
                .first()
                .is_some_and(|a| a.starts_with(b"SIP/2.0 200")),
            "Palisade does not answer on ::1:\n{}",
            lab.log_tail(20)
        );
        assert!(v6_request(&sock, 2, "friendly-scanner").is_empty());
        assert!(
            wait_until(Duration::from_secs(3), || nft_set("palisade", "ban_v6")
                .contains(&"::1".to_string())),
            "ban_v6: {:?}\n{}",
            nft_set("palisade", "ban_v6"),
            lab.log_tail(20)
        );
        let before = dropped();
        assert!(
            v6_request(&sock, 3, "Zoiper rv2.10").is_empty(),
            "a banned IPv6 source was answered"
        );
        assert!(
            dropped() > before,
            "the kernel did not drop the banned IPv6 source"
        );
        // Its RTP to the v6 zone's media range: dropped by the kernel.
        let before = dropped();
        sock.send_to(&[0x80, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1], "[::1]:40000")
            .unwrap();
        std::thread::sleep(Duration::from_millis(100));
        assert_eq!(dropped(), before + 1, "IPv6 RTP from a banned source");

        // IPv4: a media probe from a clean source is not Palisade's to drop...
        let rtp = [0x80u8, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1];
        let media = SocketAddr::new(net.outside_ip().into(), 30000);
        let scanner = net.untrusted_ip();
        let before = dropped();
        raw::udp_socket(scanner).send_to(&rtp, media).unwrap();
        std::thread::sleep(Duration::from_millis(100));
        assert_eq!(dropped(), before, "RTP from an unbanned source was dropped");
        // ...once the source is banned, its RTP is dropped in the kernel.
        assert!(
            raw::udp_request(
                scanner,
                net.outside(),
                options_text(
                    SocketAddr::new(scanner.into(), 5099),
                    net.outside(),
                    9,
                    &format!("<sip:100@{scanner}>;tag=m9"),
                    "User-Agent: sipcli/v1.8\r\n"
                )
                .as_bytes(),
                Duration::from_millis(300)
            )
            .is_none()
        );
        assert!(wait_until(Duration::from_secs(3), || nft_set(
            "palisade", "ban_v4"
        )
        .contains(&scanner.to_string())));
        let before = dropped();
        for port in [30000u16, 30500, 30998] {
            raw::udp_socket(scanner)
                .send_to(&rtp, SocketAddr::new(net.outside_ip().into(), port))
                .unwrap();
        }
        std::thread::sleep(Duration::from_millis(100));
        assert_eq!(dropped(), before + 3, "RTP from a banned IPv4 source");
        std::fs::write(lab.dir().join("nft-table.txt"), nft_ruleset()).unwrap();
    });
}

/// The kernel meter bans an untrusted source over its rate; the trusted PBX
/// sending far more is accepted by the allow-list first and never banned.
#[test]
fn the_allow_list_is_ahead_of_the_kernel_meter() {
    const NAME: &str = "the_allow_list_is_ahead_of_the_kernel_meter";
    in_netns(Slot::GuardAllowBeforeMeter, NAME, || {
        let slot = Slot::GuardAllowBeforeMeter;
        let net = slot.net();
        // A low meter; userspace limits out of the way.
        let yaml = GUARD_NFT
            .replace("packets_per_second: 400", "packets_per_second: 50")
            .replace("burst_packets: 800", "burst_packets: 50")
            .replace(
                "  ban_seconds: 6\n",
                "  ban_seconds: 6\n  default_limits: {requests_per_second: 1000000, requests_burst: 1000000}\n",
            );
        let lab = Lab::builder(slot).guard_yaml(&yaml).start();
        let pbx = net.pbx_ip();
        let stranger = net.untrusted_ip();
        let counters =
            SourceCounters::install(&[("pbx", pbx.into()), ("stranger", stranger.into())], 5060);
        let allowed_before = nft_counter("palisade", "allowed");
        // Both send 1000 OPTIONS in about a second: twenty times the meter.
        let blast = |ip: Ipv4Addr, to: std::net::SocketAddr| {
            let sock = raw::udp_socket(ip);
            let from = sock.local_addr().unwrap();
            for n in 0..1000u32 {
                let text = options_text(from, to, n, &format!("<sip:100@{ip}>;tag=b{n}"), "");
                sock.send_to(text.as_bytes(), to).unwrap();
                if n % 10 == 9 {
                    std::thread::sleep(Duration::from_millis(10));
                }
            }
        };
        std::thread::scope(|s| {
            s.spawn(|| blast(pbx, net.inside()));
            s.spawn(|| blast(stranger, net.outside()));
        });
        assert!(
            wait_until(Duration::from_secs(2), || nft_set("palisade", "ban_v4")
                .contains(&stranger.to_string())),
            "the meter did not ban the stranger\n{}",
            nft_ruleset()
        );
        let set = nft_set("palisade", "ban_v4");
        let report = format!(
            "pbx sent={} passed={} stranger sent={} passed={} allowed={} meter_banned={} ban_v4={set:?}\n",
            counters.sent("pbx"),
            counters.passed("pbx"),
            counters.sent("stranger"),
            counters.passed("stranger"),
            nft_counter("palisade", "allowed") - allowed_before,
            nft_counter("palisade", "meter_banned"),
        );
        std::fs::write(lab.dir().join("meter-counters.txt"), &report).unwrap();
        assert!(
            !set.contains(&pbx.to_string()),
            "the PBX was banned: {report}"
        );
        assert_eq!(counters.sent("pbx"), 1000, "{report}");
        assert_eq!(
            counters.passed("pbx"),
            1000,
            "every PBX packet got through: {report}"
        );
        assert!(
            nft_counter("palisade", "allowed") - allowed_before >= 1000,
            "{report}"
        );
        assert!(counters.passed("stranger") < 200, "{report}");
        // The PBX still calls out.
        let carrier = lab.carrier_primary("uas_answer").spawn_uas();
        lab.pbx_uac("uac_call")
            .pause_ms(100)
            .run()
            .assert_success(1);
        carrier.wait().assert_success(1);
    });
}

/// Dry-run with nftables on: Palisade's table is there (allow-list and
/// counters), but without the meter, the deny-list or any ban; scanners,
/// denied and flooding sources are all still answered.
#[test]
fn dry_run_with_nftables_installs_no_meter_and_bans_nothing() {
    const NAME: &str = "dry_run_with_nftables_installs_no_meter_and_bans_nothing";
    in_netns(Slot::GuardDryRunNft, NAME, || {
        let slot = Slot::GuardDryRunNft;
        let net = slot.net();
        let denied = net.ip(77);
        let yaml = GUARD_NFT.replace("mode: enforce", "mode: dry-run").replace(
            "  ban_seconds: 6\n",
            &format!("  ban_seconds: 6\n  deny: [{denied}/32]\n"),
        );
        let lab = Lab::builder(slot).guard_yaml(&yaml).start();
        let table = Command::new("nft")
            .args(["list", "table", "inet", "palisade"])
            .output()
            .unwrap();
        let table = String::from_utf8_lossy(&table.stdout).into_owned();
        std::fs::write(lab.dir().join("nft-table.txt"), &table).unwrap();
        assert!(
            table.contains("set allow_v4") && table.contains(&net.pbx_ip().to_string()),
            "{table}"
        );
        assert!(
            !table.contains("@meter_v4") && !table.contains("limit rate"),
            "a meter in dry-run:\n{table}"
        );
        assert!(nft_set("palisade", "deny_v4").is_empty(), "{table}");
        let answered = |ip: Ipv4Addr, n: u32, ua: &str| {
            raw::udp_request(
                ip,
                net.outside(),
                options_text(
                    std::net::SocketAddr::new(ip.into(), 5099),
                    net.outside(),
                    n,
                    &format!("<sip:100@{ip}>;tag=d{n}"),
                    &format!("User-Agent: {ua}\r\n"),
                )
                .as_bytes(),
                Duration::from_secs(1),
            )
            .is_some_and(|r| r.starts_with(b"SIP/2.0 200"))
        };
        assert!(answered(net.untrusted_ip(), 1, "friendly-scanner"));
        assert!(
            answered(net.untrusted_ip(), 2, "friendly-scanner"),
            "dry-run blocked a scanner"
        );
        assert!(
            answered(denied, 3, "Zoiper"),
            "dry-run dropped a denied source"
        );
        // A flood far over the (absent) meter's rate: nothing is banned.
        let flooder = net.ip(88);
        let sock = raw::udp_socket(flooder);
        let from = sock.local_addr().unwrap();
        for n in 0..600u32 {
            let text = options_text(
                from,
                net.outside(),
                100 + n,
                &format!("<sip:100@{flooder}>;tag=f{n}"),
                "",
            );
            sock.send_to(text.as_bytes(), net.outside()).unwrap();
        }
        std::thread::sleep(Duration::from_millis(1500));
        assert!(
            nft_set("palisade", "ban_v4").is_empty(),
            "{:?}",
            nft_set("palisade", "ban_v4")
        );
        assert_eq!(nft_counter("palisade", "meter_banned"), 0);
        assert_eq!(nft_counter("palisade", "banned_dropped"), 0);
        assert_eq!(nft_counter("palisade", "denied"), 0);
        assert!(
            answered(flooder, 999, "Zoiper"),
            "the flooder was blocked in dry-run"
        );
        assert!(
            lab.log().contains(&format!(
                "source={} reason=scanner-user-agent verdict=ban",
                net.untrusted_ip()
            )) && lab.log().contains("mode=\"dry-run\""),
            "{}",
            lab.log_tail(20)
        );
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
    fraud_run_finals(slot, numbers, carrier_scenario, rate, yaml).0
}

/// [`fraud_run_with`], and the final status each call got.
fn fraud_run_finals(
    slot: Slot,
    numbers: &[&str],
    carrier_scenario: &str,
    rate: u32,
    yaml: &str,
) -> (Vec<String>, Vec<u16>) {
    let lab = Lab::builder(slot).guard_yaml(yaml).start();
    let pbx = place_calls(&lab, numbers, carrier_scenario, rate);
    let finals = invite_finals(&pbx);
    assert_eq!(finals.len(), numbers.len(), "{}", pbx.files.diagnostics());
    (alerts_after(lab), finals)
}

fn place_calls(lab: &Lab, numbers: &[&str], carrier_scenario: &str, rate: u32) -> SippOutcome {
    place_calls_held(lab, numbers, carrier_scenario, rate, 1500)
}

/// The PBX calls `numbers` at `rate` per second, each answered call held
/// `hold_ms`; returns its outcome (exit 0 asserted).
fn place_calls_held(
    lab: &Lab,
    numbers: &[&str],
    carrier_scenario: &str,
    rate: u32,
    hold_ms: u64,
) -> SippOutcome {
    let csv = numbers_csv(lab.dir(), "numbers.csv", numbers);
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
        .pause_ms(hold_ms)
        .arg("-inf")
        .arg(csv.display().to_string())
        .timeout(Duration::from_secs(60))
        .run();
    assert_eq!(pbx.exit_code, Some(0), "{}", pbx.files.diagnostics());
    let _ = carrier.kill();
    pbx
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

/// A morning at a small office, under every rule: about thirty calls in
/// business hours (national and mobile, a few numbers called two or three
/// times, international calls to ordinary destinations, an emergency call),
/// then two calls nobody answers. Not one alert.
#[test]
fn fraud_office_traffic_raises_no_alert() {
    // Business hours all day, every day: the international calls are in
    // hours whenever the test runs. Thirty calls a minute is a busy office,
    // not fraud: the per-minute levels sit above that.
    let yaml = FRAUD
        .replace(
            "business_hours: {days: [], start: \"08:00\", end: \"18:00\"}",
            "business_hours: {days: [mon, tue, wed, thu, fri, sat, sun], start: \"00:00\", end: \"24:00\"}",
        )
        .replace(
            "{name: cpm, kind: calls_per_minute, warning: {threshold: 10}, critical: {threshold: 12, action: reject}}",
            "{name: cpm, kind: calls_per_minute, warning: {threshold: 45}, critical: {threshold: 60, action: reject}}",
        );
    assert!(yaml.contains("start: \"00:00\"") && yaml.contains("threshold: 45"));
    let answered = [
        "+4930123407",
        "+4989555123",
        "+4971100100",
        "+4940987654",
        "+4930123407",
        "+4915112345678",
        "+4922133344",
        "+4969111222",
        "+12125550147",
        "+4989555123",
        "+4935188812",
        "+442071234567",
        "+4930123407",
        "+4917655512345",
        "112",
        "+4962114455",
        "+33142685300",
        "+4971100100",
        "+4921198765",
        "+4951133377",
        "+41445551234",
        "+4940987654",
        "+4961318888",
        "+4915112345678",
        "+4930998877",
        "+4989100200",
        "+4371212345",
        "+4920155566",
    ];
    let lab = Lab::builder(Slot::FraudOffice).guard_yaml(&yaml).start();
    let pbx = place_calls(&lab, &answered, "uas_answer", 1);
    assert_eq!(invite_finals(&pbx), vec![200; answered.len()]);
    let pbx = place_calls(&lab, &["+4930555777", "+4971133344"], "uas_busy", 1);
    assert_eq!(invite_finals(&pbx), [486, 486]);
    let alerts = alerts_after(lab);
    assert!(alerts.is_empty(), "{alerts:?}");
}

#[test]
fn fraud_calls_per_minute() {
    let numbers: Vec<String> = (0..15).map(|i| format!("+49301234{:02}", i * 7)).collect();
    let refs: Vec<&str> = numbers.iter().map(String::as_str).collect();
    let (alerts, finals) =
        fraud_run_finals(Slot::FraudCallsPerMinute, &refs, "uas_answer", 1, FRAUD);
    assert_eq!(alerts, ["cpm critical"]);
    // Critical at the 12th call in a minute, action reject: from then on
    // every new call is refused with the rule's status (403 by default).
    let mut want = vec![200; 11];
    want.extend([403; 4]);
    assert_eq!(finals, want);
}

#[test]
fn fraud_high_risk_destinations() {
    let (alerts, finals) = fraud_run_finals(
        Slot::FraudHighRisk,
        &["+88212345678", "+25261234567"],
        "uas_answer",
        1,
        FRAUD,
    );
    assert_eq!(alerts, ["irsf critical"]);
    // The second call is critical; this rule refuses with 603.
    assert_eq!(finals, [200, 603]);
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
fn fraud_calls_per_day() {
    let yaml = FRAUD.replace(
        "{name: per-day, kind: calls_per_day, warning: {threshold: 1000}}",
        "{name: per-day, kind: calls_per_day, warning: {threshold: 6}, critical: {threshold: 8, action: reject}}",
    );
    assert!(yaml.contains("threshold: 6}, critical: {threshold: 8"));
    // Eight different, non-sequential domestic numbers: only the day's count.
    let numbers = [
        "+4930111007",
        "+4940222014",
        "+4989333021",
        "+4922144028",
        "+4969555035",
        "+4971166042",
        "+4935177049",
        "+4951188056",
    ];
    let (alerts, finals) =
        fraud_run_finals(Slot::FraudCallsPerDay, &numbers, "uas_answer", 1, &yaml);
    assert_eq!(alerts, ["per-day critical"]);
    assert_eq!(finals, [200, 200, 200, 200, 200, 200, 200, 403]);
}

/// Three calls at once, 21 s each: a minute of talk time when they end;
/// the next call is refused.
#[test]
fn fraud_minutes_per_day() {
    // Without the 5 s duration cap, which would end these calls early.
    let yaml = FRAUD
        .replace(
            "{name: minutes, kind: minutes_per_day, warning: {threshold: 600}}",
            "{name: minutes, kind: minutes_per_day, critical: {threshold: 1, action: reject}}",
        )
        .replace(
            "    - {name: duration-cap, kind: max_call_duration, warning: {threshold: 3}, critical: {threshold: 5, action: teardown}}\n",
            "",
        );
    assert!(
        yaml.contains("critical: {threshold: 1, action: reject}}")
            && !yaml.contains("duration-cap")
    );
    let lab = Lab::builder(Slot::FraudMinutesPerDay)
        .guard_yaml(&yaml)
        .start();
    let long = place_calls_held(
        &lab,
        &["+4930111007", "+4940222014", "+4989333021"],
        "uas_answer",
        20,
        21_000,
    );
    assert_eq!(invite_finals(&long), [200, 200, 200]);
    let next = place_calls(&lab, &["+4922144028"], "uas_answer", 1);
    assert_eq!(invite_finals(&next), [403]);
    assert_eq!(alerts_after(lab), ["minutes critical"]);
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
