//! Carrier failover: the secondary member takes the call when the primary
//! answers 503 (with Retry-After) or does not answer within member_timeout_ms.

use palisade_e2e::msglog::Direction;
use palisade_e2e::{Lab, LabConfig, Slot};

#[test]
fn primary_503_with_retry_after_fails_over_to_secondary() {
    let lab = Lab::start(Slot::Failover503);
    let primary = lab.carrier_primary("uas_503_retry_after").spawn_uas();
    let secondary = lab.carrier_secondary("uas_answer").spawn_uas();
    let pbx = lab.pbx_uac("uac_call").pause_ms(200).run();
    pbx.assert_success(1);
    // The primary got the INVITE, answered 503 and got its ACK.
    primary.wait().assert_success(1);
    secondary.wait().assert_success(1);
    let statuses: Vec<u16> = pbx.received().iter().filter_map(|m| m.status()).collect();
    assert!(
        !statuses.contains(&503),
        "the 503 leaked to the PBX: {statuses:?}"
    );
}

#[test]
fn silent_primary_fails_over_after_member_timeout() {
    let cfg = LabConfig::default();
    let timeout_ms = cfg.member_timeout_ms;
    let lab = Lab::builder(Slot::FailoverSilent).config(cfg).start();
    let primary = lab.carrier_primary("uas_silent").spawn_uas();
    let secondary = lab.carrier_secondary("uas_answer").spawn_uas();
    let pbx = lab.pbx_uac("uac_call").pause_ms(200).run();
    pbx.assert_success(1);
    let secondary = secondary.wait();
    secondary.assert_success(1);
    let primary = primary.kill();
    let log = primary.messages();
    let first_invite = log
        .iter()
        .find(|m| m.is_request("INVITE"))
        .expect("the primary never got an INVITE");
    assert!(
        log.iter().all(|m| m.direction == Direction::Received),
        "the silent primary sent something"
    );
    // Failover waited for the member timeout, not less.
    let sec_log = secondary.messages();
    let sec_invite = sec_log
        .iter()
        .find(|m| m.is_request("INVITE"))
        .expect("the secondary never got an INVITE");
    let (Some(t1), Some(t2)) = (first_invite.time_of_day, sec_invite.time_of_day) else {
        panic!("SIPp log without timestamps");
    };
    let gap_ms = (t2 - t1) * 1000.0;
    assert!(
        gap_ms >= timeout_ms as f64 * 0.9,
        "failed over after {gap_ms:.0} ms, member_timeout_ms is {timeout_ms}"
    );
}
