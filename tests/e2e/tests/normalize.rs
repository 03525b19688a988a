//! Normalization end to end: the carrier trunk has an outbound profile
//! (E.164 -> national, `X-MS-SBC` added, User-Agent set) and an inbound
//! profile (the carrier's national numbers -> E.164, so the route to the PBX,
//! `+4930123*`, matches). The SIPp callees check the numbers and headers they
//! receive (scenarios `uas_expect_numbers` and `uas_expect_carrier_profile`);
//! these tests check the rest from the message logs.

use palisade_e2e::msglog::{Direction, SipMessage};
use palisade_e2e::{Lab, LabConfig, Sipp, Slot, numbers};

const CARRIER_TRUNK: &str = "    normalization: {inbound: [carrier-in], outbound: [carrier-out]}\n";

const PROFILES: &str = "
normalization:
  profiles:
    - name: carrier-out
      rules:
        - name: e164-to-national
          actions:
            - number: {targets: [ruri, to, from], national: {country_code: \"49\"}}
            - number: {targets: [ruri, to], user_phone: false}
        - name: identity
          actions:
            - add_header: {name: X-MS-SBC, value: \"Palisade/SBC/e2e\"}
            - set_user_agent: \"Palisade-e2e-carrier\"
    - name: carrier-in
      rules:
        - name: national-to-e164
          actions:
            - number: {targets: [ruri, to, from], e164: {country_code: \"49\"}}
";

/// The carrier's view of the numbers in the lab: national forms.
const EXTERNAL_NATIONAL: &str = "071100100";
const PBX_CALLER_NATIONAL: &str = "089555000";
const DID_NATIONAL: &str = "030123555";

fn normalized_lab(slot: Slot) -> Lab {
    let config = LabConfig {
        carrier_trunk_extra: CARRIER_TRUNK.to_owned(),
        extra_sections: PROFILES.to_owned(),
        ..LabConfig::default()
    };
    Lab::builder(slot).config(config).start()
}

fn first_received<'a>(log: &'a [SipMessage], method: &str) -> &'a SipMessage {
    log.iter()
        .find(|m| m.direction == Direction::Received && m.is_request(method))
        .unwrap_or_else(|| panic!("no {method} received"))
}

fn header(m: &SipMessage, name: &str) -> Vec<String> {
    m.header_values(name)
}

#[test]
fn outbound_profile_rewrites_numbers_and_headers_toward_the_carrier() {
    let lab = normalized_lab(Slot::NormalizeOutbound);
    let carrier = lab
        .carrier_primary("uas_expect_carrier_profile")
        .key("expect_ruri_user", EXTERNAL_NATIONAL)
        .key("expect_from_user", PBX_CALLER_NATIONAL)
        .key("expect_x_ms_sbc", "Palisade/SBC/e2e")
        .key("expect_user_agent", "Palisade-e2e-carrier")
        .spawn_uas();
    // The PBX dials E.164 from its E.164 number.
    let pbx = lab.pbx_uac("uac_call").pause_ms(200).run();
    pbx.assert_success(1);
    let carrier = carrier.wait();
    carrier.assert_success(1);

    let log = carrier.messages();
    let invite = first_received(&log, "INVITE");
    assert_eq!(
        invite.start_line(),
        format!(
            "INVITE sip:{EXTERNAL_NATIONAL}@{}:5080 SIP/2.0",
            lab.net().carrier_primary_ip()
        ),
        "user=phone removed, number national"
    );
    assert_eq!(header(invite, "X-MS-SBC"), ["Palisade/SBC/e2e"]);
    assert_eq!(header(invite, "User-Agent"), ["Palisade-e2e-carrier"]);
    // In-dialog requests carry the header too, and the dialog's identities.
    let bye = first_received(&log, "BYE");
    assert_eq!(header(bye, "X-MS-SBC"), ["Palisade/SBC/e2e"]);
    assert!(
        header(bye, "From")[0].contains(&format!("sip:{PBX_CALLER_NATIONAL}@")),
        "{}",
        bye.text()
    );
    // The PBX keeps seeing its own E.164 world: its 200 comes back to it untouched by the carrier profile.
    let pbx_log = pbx.messages();
    let ok = pbx_log
        .iter()
        .find(|m| m.direction == Direction::Received && m.status() == Some(200))
        .expect("a 200 at the PBX");
    assert!(header(ok, "X-MS-SBC").is_empty(), "{}", ok.text());
    assert!(
        header(ok, "To")[0].contains(numbers::EXTERNAL),
        "{}",
        ok.text()
    );
    // The normalization shows in Palisade's debug log.
    let plog = lab.log();
    assert!(plog.contains("normalization stages installed"), "{plog}");
    assert!(
        plog.contains("normalization rule fired") && plog.contains("rule=e164-to-national"),
        "{plog}"
    );
}

#[test]
fn inbound_profile_makes_national_numbers_e164_so_routing_finds_the_pbx() {
    let lab = normalized_lab(Slot::NormalizeInbound);
    let pbx = lab
        .pbx_uas("uas_expect_numbers")
        .key("expect_ruri_user", numbers::DID)
        .key("expect_from_user", numbers::EXTERNAL)
        .spawn_uas();
    // The carrier dials the DID in national form, from a national number.
    let carrier = lab
        .carrier_uac("uac_call")
        .key("callee", DID_NATIONAL)
        .key("caller", EXTERNAL_NATIONAL)
        .pause_ms(200)
        .run();
    carrier.assert_success(1);
    let pbx = pbx.wait();
    pbx.assert_success(1);
    let invite = first_received(&pbx.messages(), "INVITE").clone();
    assert!(
        invite
            .start_line()
            .starts_with(&format!("INVITE sip:{}@", numbers::DID)),
        "{}",
        invite.start_line()
    );
    // Toward the PBX nothing of the carrier profile is added.
    assert!(header(&invite, "X-MS-SBC").is_empty());
}

#[test]
fn without_the_inbound_profile_the_national_number_has_no_route() {
    // Same call, no normalization: +4930123* does not match 030123555.
    let lab = Lab::start(Slot::NormalizeInboundWithoutProfile);
    let carrier = lab
        .carrier_uac("uac_expect_404")
        .key("callee", DID_NATIONAL)
        .key("caller", EXTERNAL_NATIONAL)
        .run();
    carrier.assert_success(1);
}

#[test]
fn the_normalization_scenarios_check_what_they_claim() {
    let slot = Slot::NormalizeDirectChecks;
    let dir = slot.fresh_dir();
    let net = slot.net();
    let uas = |label: &str, scenario: &str| {
        Sipp::new(&dir, label, scenario)
            .local(net.carrier_primary())
            .key("expect_peer", net.pbx_ip())
    };
    let uac = |label: &str| {
        Sipp::new(&dir, label, "uac_call")
            .local(net.pbx())
            .remote(net.carrier_primary())
            .key("expect_peer", net.carrier_primary_ip())
            .key("caller", PBX_CALLER_NATIONAL)
            .key("callee", EXTERNAL_NATIONAL)
            .pause_ms(100)
    };
    // Right numbers: the call succeeds.
    let callee = uas("uas-right", "uas_expect_numbers")
        .key("expect_ruri_user", EXTERNAL_NATIONAL)
        .key("expect_from_user", PBX_CALLER_NATIONAL)
        .spawn_uas();
    uac("uac-right").run().assert_success(1);
    callee.wait().assert_success(1);
    // A wrong number: the callee fails the call.
    let callee = uas("uas-wrong", "uas_expect_numbers")
        .key("expect_ruri_user", numbers::EXTERNAL)
        .key("expect_from_user", PBX_CALLER_NATIONAL)
        .calls(1)
        .timeout(std::time::Duration::from_secs(8))
        .spawn_uas();
    let _ = uac("uac-wrong")
        .timeout(std::time::Duration::from_secs(8))
        .run();
    callee.wait().assert_exit(1);
    // No X-MS-SBC (SIPp's own INVITE): the carrier-profile callee fails the call.
    let callee = uas("uas-noheader", "uas_expect_carrier_profile")
        .key("expect_ruri_user", EXTERNAL_NATIONAL)
        .key("expect_from_user", PBX_CALLER_NATIONAL)
        .key("expect_x_ms_sbc", "Palisade/SBC/e2e")
        .key("expect_user_agent", "palisade-e2e")
        .timeout(std::time::Duration::from_secs(8))
        .spawn_uas();
    let _ = uac("uac-noheader")
        .timeout(std::time::Duration::from_secs(8))
        .run();
    callee.wait().assert_exit(1);
}
