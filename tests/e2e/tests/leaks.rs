//! Topology hiding: every byte each peer received is scanned for the other
//! side's addresses, dialog identifiers (Call-ID, tags, branches) and the
//! values of headers Palisade must not copy (Server, User-Agent, Warning,
//! Record-Route, Route, X-, P-). Both sides run the `*_marked` scenarios,
//! which fill each of those headers with a `mark-...` token.

use palisade_e2e::leak::marker_values;
use palisade_e2e::{Lab, SipMessage, Slot, assert_topology_hidden};

/// The caller's and the callee's marker tokens really were sent, so the scan
/// had them to look for.
fn assert_marked(uac: &[SipMessage], uas: &[SipMessage]) {
    let (sent_uac, sent_uas) = (marker_values(uac), marker_values(uas));
    for token in [
        "mark-uac-useragent",
        "mark-uac-xheader",
        "mark-uac-pheader",
        "mark-uac-warntext",
        "mark-uac-recroute",
        "mark-uac-route",
        "mark-uac-byeheader",
    ] {
        assert!(sent_uac.contains(token), "caller never sent {token}");
    }
    for token in [
        "mark-uas-server",
        "mark-uas-xheader",
        "mark-uas-pheader",
        "mark-uas-warntext",
        "mark-uas-recroute",
        "mark-uas-byeheader",
    ] {
        assert!(sent_uas.contains(token), "callee never sent {token}");
    }
}

#[test]
fn outbound_call_leaks_nothing() {
    let lab = Lab::start(Slot::LeakOutbound);
    let carrier = lab.carrier_primary("uas_answer_marked").spawn_uas();
    let pbx = lab.pbx_uac("uac_call_marked").pause_ms(200).run();
    pbx.assert_success(1);
    let carrier = carrier.wait();
    carrier.assert_success(1);
    assert_marked(&pbx.messages(), &carrier.messages());
    // Headers and SDP alike: media is anchored, c= names Palisade only.
    assert_topology_hidden(lab.net(), &pbx.messages(), &[&carrier.messages()]);
}

#[test]
fn inbound_call_leaks_nothing() {
    let lab = Lab::start(Slot::LeakInbound);
    let pbx = lab.pbx_uas("uas_answer_marked").spawn_uas();
    let carrier = lab.carrier_uac("uac_call_marked").pause_ms(200).run();
    carrier.assert_success(1);
    let pbx = pbx.wait();
    pbx.assert_success(1);
    assert_marked(&carrier.messages(), &pbx.messages());
    assert_topology_hidden(lab.net(), &pbx.messages(), &[&carrier.messages()]);
}
