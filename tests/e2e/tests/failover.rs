//! Carrier failover: the secondary member takes the call when the primary
//! answers 503 (with Retry-After) or does not answer within member_timeout_ms.

use std::collections::BTreeMap;
use std::time::Duration;

use palisade_e2e::msglog::Direction;
use palisade_e2e::{Lab, LabConfig, Slot, assert_topology_hidden};

/// `key=value` fields of a Palisade log line.
fn fields(line: &str) -> BTreeMap<String, String> {
    line.split_whitespace()
        .filter_map(|w| w.split_once('='))
        .map(|(k, v)| (k.to_string(), v.trim_matches('"').to_string()))
        .collect()
}

#[test]
fn primary_503_with_retry_after_fails_over_to_secondary() {
    let lab = Lab::start(Slot::Failover503);
    let primary = lab.carrier_primary("uas_503_retry_after").spawn_uas();
    let secondary = lab.carrier_secondary("uas_answer").spawn_uas();
    let pbx = lab.pbx_uac("uac_call").pause_ms(200).run();
    pbx.assert_success(1);
    // The primary got the INVITE, answered 503 and got its ACK.
    let primary = primary.wait();
    primary.assert_success(1);
    let secondary = secondary.wait();
    secondary.assert_success(1);
    let statuses: Vec<u16> = pbx.received().iter().filter_map(|m| m.status()).collect();
    assert!(
        !statuses.contains(&503),
        "the 503 leaked to the PBX: {statuses:?}"
    );
    // Nothing of either member (nor the 503's Server/Warning/X- markers) reached the PBX.
    assert!(
        palisade_e2e::leak::marker_values(&primary.messages()).contains("mark-uas503-warntext")
    );
    assert_topology_hidden(
        lab.net(),
        &pbx.messages(),
        &[&primary.messages(), &secondary.messages()],
    );
    // One call, one reference: every event line of it carries the same
    // call=, and `started` names both legs' Call-IDs as the peers saw them.
    lab.wait_log(&["event=media-stats"], Duration::from_secs(5));
    let log = lab.log();
    let started = log
        .lines()
        .find(|l| l.contains("event=started"))
        .expect("no started line");
    let f = fields(started);
    let call = f.get("call").expect("started without call=").clone();
    let pbx_call_id = pbx.messages()[0].call_id().unwrap();
    assert_eq!(f.get("a_call_id"), Some(&pbx_call_id), "{started}");
    let b_call_id = f.get("b_call_id").expect("started without b_call_id=");
    for carrier in [&primary, &secondary] {
        assert_eq!(
            carrier.messages()[0].call_id().as_ref(),
            Some(b_call_id),
            "leg B's Call-ID on {}",
            carrier.label
        );
    }
    let events: Vec<String> = log
        .lines()
        .filter(|l| l.contains(" event="))
        .filter(|l| fields(l).get("call") == Some(&call))
        .map(|l| fields(l)["event"].clone())
        .collect();
    assert_eq!(
        events,
        [
            "started",
            "attempt",
            "failover",
            "attempt",
            "progress",
            "answered",
            "ended",
            "media-stats"
        ],
        "the call's event lines"
    );
    let stray: Vec<&str> = log
        .lines()
        .filter(|l| l.contains(" event=") && l.contains(" call=") && !l.contains(&call))
        .collect();
    assert!(stray.is_empty(), "event lines of another call: {stray:?}");
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
    assert_topology_hidden(
        lab.net(),
        &pbx.messages(),
        &[&primary.messages(), &secondary.messages()],
    );
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
