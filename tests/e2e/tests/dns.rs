//! A carrier trunk given by DNS name. dnsmasq, started by each test on the
//! slot's `.53` address, serves `carrier.test`: a NAPTR record (SIP+D2U) to
//! `_sip._udp.carrier.test`, whose SRV records name `primary` (priority 10,
//! the slot's `.20:5080`) and `secondary` (priority 20, `.21:5080`), with a
//! TTL of 1 s. Palisade resolves it with RFC 3263 and re-resolves as the
//! TTL runs out; the carriers are SIPp members that also answer OPTIONS.

use std::time::Duration;

use palisade_e2e::dnsmasq::{DNS_PORT, Dnsmasq};
use palisade_e2e::net::wait_until;
use palisade_e2e::{Lab, LabConfig, Slot};

/// Member timeout of these labs (LabConfig's default).
const MEMBER_TIMEOUT_MS: u64 = 1500;

fn records(slot: Slot) -> Vec<String> {
    let net = slot.net();
    vec![
        "--naptr-record=carrier.test,10,50,S,SIP+D2U,,_sip._udp.carrier.test".to_owned(),
        "--srv-host=_sip._udp.carrier.test,primary.carrier.test,5080,10,50".to_owned(),
        "--srv-host=_sip._udp.carrier.test,secondary.carrier.test,5080,20,50".to_owned(),
        format!(
            "--host-record=primary.carrier.test,{}",
            net.carrier_primary_ip()
        ),
        format!(
            "--host-record=secondary.carrier.test,{}",
            net.carrier_secondary_ip()
        ),
    ]
}

/// The lab config with the carrier trunk as one `host: carrier.test`
/// member, `health` (YAML under the trunk, may be empty) and a `dns:`
/// section pointing at the test's dnsmasq.
fn config(slot: Slot, health: &str) -> String {
    let net = slot.net();
    let cfg = LabConfig {
        member_timeout_ms: MEMBER_TIMEOUT_MS,
        ..LabConfig::default()
    };
    let yaml = cfg.render(slot);
    let members = format!(
        "      - address: {}\n        port: 5080\n        transport: udp\n      - address: {}\n        port: 5080\n        transport: udp\n",
        net.carrier_primary_ip(),
        net.carrier_secondary_ip()
    );
    assert!(yaml.contains(&members), "LabConfig changed shape:\n{yaml}");
    let yaml = yaml.replace(&members, &format!("      - host: carrier.test\n{health}"));
    format!(
        "{yaml}\ndns:\n  servers: [\"{}:{DNS_PORT}\"]\n  timeout_ms: 500\n  min_ttl_seconds: 1\n",
        net.ip(53)
    )
}

fn start(slot: Slot, health: &str) -> (Dnsmasq, Lab) {
    // Lab::start wipes the slot's directory: dnsmasq logs beside it.
    let dir = palisade_e2e::paths::out_root().join(format!("{}-dns", slot.name()));
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
    let dns = Dnsmasq::start(
        &dir,
        std::net::SocketAddr::from((slot.net().ip(53), DNS_PORT)),
        "carrier.test",
        1,
        &records(slot),
    );
    let lab = Lab::builder(slot).config_text(config(slot, health)).start();
    (dns, lab)
}

/// Waits (bounded) until Palisade's log contains `needle` `count` times.
fn wait_log(lab: &Lab, needle: &str, count: usize, limit: Duration) {
    let ok = wait_until(limit, || lab.log().matches(needle).count() >= count);
    assert!(
        ok,
        "palisade never logged {needle:?} {count} times within {limit:?}\n{}",
        lab.log_tail(40)
    );
}

fn carrier(lab: &Lab, primary: bool, label: &str) -> palisade_e2e::SippProcess {
    let net = lab.net();
    let local = if primary {
        net.carrier_primary()
    } else {
        net.carrier_secondary()
    };
    lab.sipp(label, "uas_answer_pings")
        .local(local)
        .key("expect_peer", net.outside_ip())
        .key("expect_ruri_host", "carrier.test")
        // Probes are calls too for SIPp; it is killed at the end.
        .calls(100_000)
        .timeout(Duration::from_secs(120))
        .spawn_uas()
}

fn invites(p: &palisade_e2e::SippProcess) -> usize {
    p.messages()
        .iter()
        .filter(|m| m.direction == palisade_e2e::Direction::Received && m.is_request("INVITE"))
        .count()
}

fn failed_calls(o: &palisade_e2e::SippOutcome) -> u64 {
    o.stats.map_or(0, |s| s.failed)
}

#[test]
fn fqdn_trunk_reaches_the_srv_primary_then_fails_over_to_the_secondary() {
    let slot = Slot::DnsSrvFailover;
    let (dns, lab) = start(slot, "");
    let net = lab.net();
    let primary = carrier(&lab, true, "carrier1");
    let secondary = carrier(&lab, false, "carrier2");
    wait_log(&lab, "trunk targets from DNS", 1, Duration::from_secs(10));
    let targets_line = format!(
        "targets={}/udp,{}/udp",
        net.carrier_primary(),
        net.carrier_secondary()
    );
    assert!(
        lab.log().contains(&targets_line),
        "SRV order not primary, secondary:\n{}",
        lab.log_tail(20)
    );

    // 1. The call goes to the SRV primary, with the domain in the Request-URI.
    lab.pbx_uac("uac_call")
        .pause_ms(200)
        .run()
        .assert_success(1);
    assert_eq!(invites(&primary), 1);
    assert_eq!(invites(&secondary), 0);

    // 2. The primary stops: the next call waits member_timeout_ms for it,
    //    then takes the next SRV target.
    let primary = primary.kill();
    assert_eq!(failed_calls(&primary), 0, "{:?}", primary.stats);
    let before = lab.log().matches("event=failover").count();
    lab.pbx_uac("uac_call")
        .pause_ms(200)
        .run()
        .assert_success(1);
    assert_eq!(invites(&secondary), 1);
    let log = lab.log();
    assert_eq!(log.matches("event=failover").count(), before + 1);
    assert!(log.contains(&format!(
        "event=failover member={} status=-",
        net.carrier_primary()
    )));
    assert!(log.contains(&format!(
        "event=attempt member={} index=1",
        net.carrier_secondary()
    )));
    let secondary = secondary.kill();
    assert_eq!(failed_calls(&secondary), 0, "{:?}", secondary.stats);

    // 3. RFC 3263 went NAPTR -> SRV -> A, and the 1 s TTL made Palisade ask again.
    assert!(dns.queries("NAPTR", "carrier.test") >= 1, "{}", dns.log());
    assert!(
        dns.queries("SRV", "_sip._udp.carrier.test") >= 2,
        "no refresh:\n{}",
        dns.log()
    );
    assert!(dns.queries("A", "primary.carrier.test") >= 1);
    drop(lab);
}

#[test]
fn probes_mark_a_stopped_primary_down_and_up_again() {
    let slot = Slot::DnsHealthProbes;
    let health = "    health:\n      probe: options\n      interval_seconds: 1\n      timeout_ms: 500\n      down_after: 2\n      up_after: 2\n";
    let (_dns, lab) = start(slot, health);
    let net = lab.net();
    let primary = carrier(&lab, true, "carrier1");
    let secondary = carrier(&lab, false, "carrier2");
    wait_log(&lab, "trunk targets from DNS", 1, Duration::from_secs(10));
    // Probes reach both members and are answered.
    let probed = wait_until(Duration::from_secs(5), || {
        [&primary, &secondary]
            .iter()
            .all(|p| p.messages().iter().any(|m| m.is_request("OPTIONS")))
    });
    assert!(
        probed,
        "no OPTIONS probes reached the members\n{}",
        lab.log_tail(30)
    );

    lab.pbx_uac("uac_call")
        .pause_ms(200)
        .run()
        .assert_success(1);
    assert_eq!(invites(&primary), 1);

    // The primary stops answering: two silent probes mark it down.
    let primary = primary.kill();
    assert_eq!(failed_calls(&primary), 0, "{:?}", primary.stats);
    let down = format!(
        "trunk=carrier member={} transport=udp state=down probe=timeout",
        net.carrier_primary()
    );
    wait_log(&lab, &down, 1, Duration::from_secs(10));

    // The next call goes straight to the secondary: no failover, no wait.
    let before = lab.log().matches("event=failover").count();
    lab.pbx_uac("uac_call")
        .pause_ms(200)
        .run()
        .assert_success(1);
    assert_eq!(invites(&secondary), 1);
    let log = lab.log();
    assert_eq!(
        log.matches("event=failover").count(),
        before,
        "the down primary was tried:\n{}",
        lab.log_tail(30)
    );
    assert!(log.contains(&format!(
        "event=attempt member={} index=0",
        net.carrier_secondary()
    )));
    // Post-dial delay as Palisade measured it: far below a member timeout.
    let setup_ms: u64 = log
        .lines()
        .rev()
        .find_map(|l| l.split("event=answered setup_ms=").nth(1))
        .and_then(|v| v.trim().parse().ok())
        .expect("no answered event");
    assert!(setup_ms < MEMBER_TIMEOUT_MS / 2, "setup took {setup_ms} ms");

    // The primary comes back: two answered probes mark it up, calls use it again.
    let primary = carrier(&lab, true, "carrier1b");
    let up = format!(
        "trunk=carrier member={} transport=udp state=up probe=answered",
        net.carrier_primary()
    );
    wait_log(&lab, &up, 1, Duration::from_secs(10));
    lab.pbx_uac("uac_call")
        .pause_ms(200)
        .run()
        .assert_success(1);
    assert_eq!(invites(&primary), 1);
    assert_eq!(invites(&secondary), 1);
    for p in [primary.kill(), secondary.kill()] {
        assert_eq!(failed_calls(&p), 0, "{}: {:?}", p.label, p.stats);
    }
}
