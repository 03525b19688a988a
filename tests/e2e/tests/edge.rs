//! Edge behaviour (issue 4) end to end, with real SIPp peers:
//! outbound registration against a SIPp registrar that challenges with 401
//! (and one that refuses the password: back-off, trunk down), a phone that
//! registers with digest and then gets the carrier's call on the flow it
//! registered from (its Contact names another port, as behind a NAT), the
//! binding surviving a restart (SQLite store), a carrier that challenges
//! INVITEs, and call admission control under SIPp load with an emergency
//! call still getting through.

use std::net::SocketAddr;
use std::time::Duration;

use palisade_e2e::msglog::{Direction, SipMessage};
use palisade_e2e::net::wait_until;
use palisade_e2e::{Lab, LabConfig, Slot, numbers, paths};

const REALM: &str = "palisade.e2e";
/// MD5("+4930123555:palisade.e2e:phone-secret").
const PHONE_HA1_MD5: &str = "4de9752ac16abc1a67bd004ddd921544";
/// SHA-256 of the same.
const PHONE_HA1_SHA256: &str = "448b5a755bcbc15dfaa28d5c134cb3e2cb5158f8b4c6bbafb6632ced98252c4d";
const PHONE_PASSWORD: &str = "phone-secret";
/// The port the phone writes in its Contact; it really sends from 5070,
/// as a NAT would map it.
const CONTACT_PORT: u16 = 5999;

/// The slot's lab config with `carrier_extra` added to the carrier trunk,
/// `pbx_extra` to the PBX trunk and `tail` appended at top level.
fn yaml(slot: Slot, carrier_extra: &str, pbx_extra: &str, tail: &str) -> String {
    let base = LabConfig::default().render(slot);
    let pbx_end = "  - name: carrier\n";
    assert!(base.contains(pbx_end) && base.contains("\n\nroutes:\n"));
    let text = base
        .replacen(pbx_end, &format!("{pbx_extra}{pbx_end}"), 1)
        .replacen("\n\nroutes:\n", &format!("\n{carrier_extra}\nroutes:\n"), 1);
    format!("{text}\n{tail}")
}

fn registrar_yaml(slot: Slot, extra: &str) -> String {
    let routed = yaml(
        slot,
        "",
        "",
        &format!(
            "registrar:\n  trunk: pbx\n  realm: {REALM}\n  users:\n    - user: \"{}\"\n      ha1_md5: {PHONE_HA1_MD5}\n      ha1_sha256: {PHONE_HA1_SHA256}\n{extra}nat:\n  keepalive: {{method: crlf, interval_seconds: 300}}\n",
            numbers::DID
        ),
    );
    // Calls to the DID go to the registered phone.
    let route = "    number_prefixes: [\"+4930123\"]\n    to_trunk: pbx\n";
    assert!(routed.contains(route));
    routed.replacen(route, &format!("{route}    to_registered: true\n"), 1)
}

fn requests<'a>(log: &'a [SipMessage], method: &str) -> Vec<&'a SipMessage> {
    log.iter()
        .filter(|m| m.direction == Direction::Received && m.is_request(method))
        .collect()
}

fn responses_sent(log: &[SipMessage], status: u16) -> usize {
    log.iter()
        .filter(|m| m.direction == Direction::Sent && m.status() == Some(status))
        .count()
}

fn wait_for_log(lab: &Lab, needle: &str, limit: Duration) {
    let ok = wait_until(limit, || lab.log().contains(needle));
    assert!(
        ok,
        "palisade never logged {needle:?}\n--- log tail ---\n{}",
        lab.log_tail(40)
    );
}

/// The phone (SIPp on the PBX address) registers `DID` with digest.
fn register_phone(lab: &Lab) {
    let net = lab.net();
    let phone = lab
        .sipp("phone-register", "uac_register")
        .local(net.pbx())
        .remote(net.inside())
        .key("user", numbers::DID)
        .key("domain", REALM)
        .key("contact_host", net.pbx_ip())
        .key("contact_port", CONTACT_PORT)
        .arg("-au")
        .arg(numbers::DID)
        .arg("-ap")
        .arg(PHONE_PASSWORD)
        // The digest uri is the Request-URI (SIPp: `sip:` + this; default ip:port).
        .arg("-auth_uri")
        .arg(REALM)
        .run();
    phone.assert_success(1);
    let log = phone.messages();
    let regs: Vec<_> = log
        .iter()
        .filter(|m| m.direction == Direction::Sent && m.is_request("REGISTER"))
        .collect();
    assert_eq!(
        regs.len(),
        2,
        "one challenge, then the authenticated REGISTER"
    );
    let auth = regs[1].header("Authorization").expect("credentials");
    assert!(auth.contains(&format!("realm=\"{REALM}\"")), "{auth}");
}

/// The carrier calls the DID; the phone (SIPp on the PBX address, port 5070)
/// answers. Returns the INVITE the phone got.
fn call_the_phone(lab: &Lab) -> SipMessage {
    let net = lab.net();
    let phone = lab.pbx_uas("uas_answer").spawn_uas();
    let carrier = lab.carrier_uac("uac_call").pause_ms(200).run();
    carrier.assert_success(1);
    let phone = phone.wait();
    phone.assert_success(1);
    let log = phone.messages();
    let invite = requests(&log, "INVITE")[0].clone();
    // Routed to the registered contact, over the flow the phone registered from.
    let want = format!(
        "INVITE sip:{}@{}:{CONTACT_PORT}",
        numbers::DID,
        net.pbx_ip()
    );
    assert!(
        invite.start_line().starts_with(&want),
        "{}",
        invite.start_line()
    );
    invite
}

#[test]
fn outbound_registration_with_401_then_calls_flow() {
    let slot = Slot::EdgeOutboundRegister;
    let carrier = "    auth: {username: palisade1, password: trunkpw, realm: carrier.test}\n    registration: {expires_seconds: 3600, retry_seconds: 1, max_retry_seconds: 4}\n";
    let lab = Lab::builder(slot)
        .config_text(yaml(slot, carrier, "", ""))
        .start();
    let registrar = lab
        .carrier_primary("uas_registrar")
        .key("username", "palisade1")
        .key("password", "trunkpw")
        .key("expires", "3600")
        .spawn_uas()
        .wait();
    registrar.assert_success(1);
    let log = registrar.messages();
    let regs = requests(&log, "REGISTER");
    let with_auth: Vec<_> = regs
        .iter()
        .filter(|m| m.header("Authorization").is_some())
        .collect();
    assert_eq!(with_auth.len(), 1, "{regs:#?}");
    let auth = with_auth[0].header("Authorization").unwrap_or_default();
    for part in [
        "username=\"palisade1\"",
        "realm=\"carrier.test\"",
        "qop=auth",
        "nc=00000001",
        "opaque=\"e2e\"",
    ] {
        assert!(auth.contains(part), "{part} missing in {auth}");
    }
    assert!(!auth.contains("trunkpw"), "the password never travels");
    assert_eq!(responses_sent(&log, 200), 1);
    wait_for_log(&lab, "event=trunk-registered", Duration::from_secs(5));
    assert!(
        !lab.log().contains("trunkpw"),
        "the password is never logged"
    );
    // Registered: calls to the carrier go through.
    let uas = lab.carrier_primary("uas_answer").spawn_uas();
    lab.pbx_uac("uac_call")
        .pause_ms(200)
        .run()
        .assert_success(1);
    uas.wait().assert_success(1);
}

#[test]
fn short_granted_expiry_is_refreshed_before_it_runs_out() {
    let slot = Slot::EdgeRegisterRefresh;
    // Palisade asks for an hour; the registrar grants 4 s, which rules.
    let carrier = "    auth: {username: palisade1, password: trunkpw, realm: carrier.test}\n    registration: {expires_seconds: 3600, retry_seconds: 1, max_retry_seconds: 4}\n";
    let lab = Lab::builder(slot)
        .config_text(yaml(slot, carrier, "", ""))
        .start();
    // The scenario fails unless the refresh arrives within 4 s of the 200
    // and its credentials verify.
    let registrar = lab
        .carrier_primary("uas_registrar_refresh")
        .key("username", "palisade1")
        .key("password", "trunkpw")
        .key("expires", "4")
        .spawn_uas()
        .wait();
    registrar.assert_success(1);
    let log = registrar.messages();
    let regs = requests(&log, "REGISTER");
    assert_eq!(regs.len(), 3, "first, authenticated, refresh: {regs:#?}");
    assert!(regs[0].header("Authorization").is_none());
    let (auth, refresh) = (
        regs[1].header("Authorization").unwrap_or_default(),
        regs[2].header("Authorization").unwrap_or_default(),
    );
    assert!(auth.contains("nc=00000001"), "{auth}");
    // The refresh reuses the nonce with the next count (no new challenge round).
    assert!(refresh.contains("nc=00000002"), "{refresh}");
    let nonce = |a: &str| {
        a.split("nonce=\"")
            .nth(1)
            .and_then(|r| r.split('"').next())
            .map(str::to_owned)
    };
    assert_eq!(nonce(&auth), nonce(&refresh));
    assert_eq!(regs[1].call_id(), regs[2].call_id(), "one Call-ID");
    // Refreshed half-way through the 4 s granted.
    let (t1, t2) = (
        regs[1].time_of_day.unwrap_or_default(),
        regs[2].time_of_day.unwrap_or_default(),
    );
    assert!(
        (1.5..3.9).contains(&(t2 - t1)),
        "refresh {:.2} s after the first authenticated REGISTER",
        t2 - t1
    );
    assert_eq!(responses_sent(&log, 200), 2);
    wait_for_log(&lab, "event=trunk-registered", Duration::from_secs(2));
    assert!(
        !lab.log().contains("event=trunk-unregistered"),
        "the registration never lapsed:\n{}",
        lab.log_tail(30)
    );
}

#[test]
fn wrong_password_backs_off_and_marks_the_trunk_down() {
    let slot = Slot::EdgeRegisterWrongPassword;
    let carrier = "    auth: {username: palisade1, password: not-the-password}\n    registration: {expires_seconds: 3600, retry_seconds: 1, max_retry_seconds: 4}\n";
    let lab = Lab::builder(slot)
        .config_text(yaml(slot, carrier, "", ""))
        .start();
    let registrar = lab
        .carrier_primary("uas_registrar")
        .key("username", "palisade1")
        .key("password", "trunkpw")
        .key("expires", "3600")
        .calls(100)
        // Palisade keeps one Call-ID for its registration (RFC 3261 10.2.4):
        // SIPp must not absorb the next round as a dead call's retransmission.
        .arg("-deadcall_wait")
        .arg("50")
        .spawn_uas();
    // While unregistered the trunk is down: the PBX's call is refused with 503.
    std::thread::sleep(Duration::from_millis(500));
    lab.pbx_uac("uac_expect_503").run().assert_success(1);
    std::thread::sleep(Duration::from_secs(8));
    let registrar = registrar.kill();
    let log = registrar.messages();
    let rounds = requests(&log, "REGISTER")
        .iter()
        .filter(|m| m.header("Authorization").is_none())
        .count();
    let refused = responses_sent(&log, 403);
    // Retries after 1, 2, 4, 4 s: 4 or 5 rounds in ~9 s (10+ without back-off).
    assert!(
        (3..=5).contains(&rounds),
        "{rounds} registration rounds in ~9 s"
    );
    assert!(
        refused + 1 >= rounds,
        "{refused} refusals for {rounds} rounds"
    );
    assert!(
        lab.log().contains("reason=trunk-down"),
        "{}",
        lab.log_tail(30)
    );
    assert!(
        !lab.log().contains("not-the-password"),
        "the password is never logged"
    );
}

#[test]
fn phone_registers_with_digest_and_receives_the_carriers_call() {
    let slot = Slot::EdgePhoneRegisterCall;
    let lab = Lab::builder(slot)
        .config_text(registrar_yaml(slot, ""))
        .start();
    register_phone(&lab);
    wait_for_log(&lab, "event=registered", Duration::from_secs(5));
    assert!(
        lab.log().contains("nated=true"),
        "the Contact port differs from the source: NAT"
    );
    let invite = call_the_phone(&lab);
    // Palisade's address only, never the carrier's (SDP c= excepted until
    // media is anchored by the media issue).
    let carrier_ip = lab.net().carrier_primary_ip().to_string();
    assert!(
        invite
            .header_lines()
            .iter()
            .all(|l| !l.contains(&carrier_ip)),
        "{}",
        invite.text()
    );
}

#[test]
fn binding_survives_a_restart() {
    let slot = Slot::EdgeRegistrarRestart;
    let db = paths::out_root().join("EdgeRegistrarRestart-bindings.sqlite");
    for ext in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{ext}", db.display()));
    }
    std::fs::create_dir_all(paths::out_root()).unwrap_or_else(|e| panic!("out dir: {e}"));
    let text = registrar_yaml(slot, &format!("  database_path: {}\n", db.display()));
    let lab = Lab::builder(slot).config_text(text.clone()).start();
    register_phone(&lab);
    wait_for_log(&lab, "event=registered", Duration::from_secs(5));
    // The writer thread commits off the call path; give it a moment, then stop.
    std::thread::sleep(Duration::from_millis(500));
    assert!(lab.shutdown().success());
    let lab = Lab::builder(slot).config_text(text).start();
    wait_for_log(&lab, "restored=1", Duration::from_secs(5));
    call_the_phone(&lab);
}

#[test]
fn carrier_invite_challenge_is_answered_with_credentials() {
    let slot = Slot::EdgeInviteChallenge;
    let carrier = "    auth: {username: palisade1, password: trunkpw}\n";
    let lab = Lab::builder(slot)
        .config_text(yaml(slot, carrier, "", ""))
        .start();
    let uas = lab
        .carrier_primary("uas_auth_invite")
        .key("username", "palisade1")
        .key("password", "trunkpw")
        .spawn_uas();
    lab.pbx_uac("uac_call")
        .pause_ms(200)
        .run()
        .assert_success(1);
    let uas = uas.wait();
    uas.assert_success(1);
    let log = uas.messages();
    let invites = requests(&log, "INVITE");
    assert_eq!(invites.len(), 2);
    assert_eq!(invites[0].call_id(), invites[1].call_id());
    assert!(
        invites[1]
            .header("Authorization")
            .is_some_and(|a| a.contains("username=\"palisade1\""))
    );
}

#[test]
fn call_admission_limit_under_load_with_emergency_exemption() {
    let slot = Slot::EdgeCacLoad;
    let carrier = "    cac: {max_concurrent_calls: 5}\n";
    let lab = Lab::builder(slot)
        .config_text(yaml(slot, carrier, "", ""))
        .start();
    let net = lab.net();
    let uas = lab.carrier_primary("uas_answer").calls(1000).spawn_uas();
    // 30 calls at 10/s, each held 3 s: at most 5 fit.
    let load = lab
        .pbx_uac("uac_call")
        .calls(30)
        .rate(10)
        .limit(30)
        .pause_ms(3000)
        .timeout(Duration::from_secs(40))
        .spawn();
    std::thread::sleep(Duration::from_millis(1500));
    // The trunk is full now; an emergency call still gets through.
    let emergency = lab
        .sipp("pbx-112", "uac_call")
        .local(SocketAddr::new(net.pbx_ip().into(), 5071))
        .remote(net.inside())
        .key("expect_peer", net.inside_ip())
        .key("caller", numbers::PBX_CALLER)
        .key("callee", "112")
        .media(net.pbx_ip(), 16010)
        .pause_ms(200)
        .run();
    emergency.assert_success(1);
    let load = load.wait();
    let stats = load.stats.unwrap_or_default();
    let log = load.messages();
    let refusals: Vec<_> = log
        .iter()
        .filter(|m| m.direction == Direction::Received && m.status() == Some(503))
        .collect();
    assert!(
        refusals.iter().all(|m| m.header("Retry-After").is_some()),
        "every 503 carries Retry-After"
    );
    assert_eq!(stats.successful + stats.failed, 30, "{stats:?}");
    assert!((5..=7).contains(&stats.successful), "{stats:?}");
    assert_eq!(
        refusals.len() as u64,
        stats.failed,
        "every failed call is a 503"
    );
    let carrier = uas.kill();
    let answered = requests(&carrier.messages(), "INVITE").len() as u64;
    assert_eq!(
        answered,
        stats.successful + 1,
        "admitted calls plus the emergency call"
    );
    let counted = lab.log().matches("reason=cac-concurrent").count() as u64;
    assert_eq!(
        counted, stats.failed,
        "each refusal is counted with its reason"
    );
}

#[test]
fn calls_per_second_limit_under_sipp_load() {
    let slot = Slot::EdgeCacCps;
    let carrier = "    cac: {max_calls_per_second: 2, reject_status: 503}\n";
    let lab = Lab::builder(slot)
        .config_text(yaml(
            slot,
            carrier,
            "",
            "call_admission: {retry_after_seconds: 5}\n",
        ))
        .start();
    let uas = lab.carrier_primary("uas_answer").calls(1000).spawn_uas();
    // 20 calls at 10/s (2 s of load), each held 200 ms: concurrency is no
    // limit here, the rate is. A bucket of 2 refilled at 2/s admits about 6.
    let load = lab
        .pbx_uac("uac_call")
        .calls(20)
        .rate(10)
        .limit(20)
        .pause_ms(200)
        .timeout(Duration::from_secs(30))
        .run();
    let stats = load.stats.unwrap_or_default();
    let log = load.messages();
    let refusals: Vec<_> = log
        .iter()
        .filter(|m| m.direction == Direction::Received && m.status() == Some(503))
        .collect();
    assert_eq!(stats.successful + stats.failed, 20, "{stats:?}");
    assert!((3..=9).contains(&stats.successful), "{stats:?}");
    assert_eq!(
        refusals.len() as u64,
        stats.failed,
        "every failed call is a 503"
    );
    assert!(
        refusals
            .iter()
            .all(|m| m.header("Retry-After").as_deref() == Some("5")),
        "every 503 carries the configured Retry-After"
    );
    let carrier = uas.kill();
    let answered = requests(&carrier.messages(), "INVITE").len() as u64;
    assert_eq!(
        answered, stats.successful,
        "only admitted calls reach the carrier"
    );
    let counted = lab.log().matches("reason=cac-cps").count() as u64;
    assert_eq!(
        counted, stats.failed,
        "each refusal is logged with its reason"
    );
}

#[test]
fn options_keepalives_mark_silent_members_down() {
    let slot = Slot::EdgeKeepalive;
    let carrier = "    keepalive: {method: options, interval_seconds: 1}\n";
    let lab = Lab::builder(slot)
        .config_text(yaml(slot, carrier, "", ""))
        .start();
    let net = lab.net();
    // The primary answers every OPTIONS; nothing listens on the secondary.
    let primary = lab.carrier_primary("uas_options").calls(1000).spawn_uas();
    let secondary_down = format!(
        "event=member-down trunk=carrier member={}",
        net.carrier_secondary()
    );
    wait_for_log(&lab, &secondary_down, Duration::from_secs(6));
    std::thread::sleep(Duration::from_secs(2));
    let primary_down = format!(
        "event=member-down trunk=carrier member={}",
        net.carrier_primary()
    );
    assert!(!lab.log().contains(&primary_down), "{}", lab.log_tail(30));
    let primary = primary.kill();
    let pings = requests(&primary.messages(), "OPTIONS").len();
    assert!(pings >= 2, "{pings} OPTIONS answered");
    // The primary stops answering: both down, the trunk is down, calls get 503.
    wait_for_log(&lab, &primary_down, Duration::from_secs(6));
    lab.pbx_uac("uac_expect_503").run().assert_success(1);
    assert!(lab.log().contains("reason=trunk-down"));
}
