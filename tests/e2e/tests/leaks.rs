//! Topology hiding: every byte each peer received is scanned for the other
//! side's addresses and dialog identifiers (Call-ID, tags, branches).

use palisade_e2e::{Lab, Slot, assert_topology_hidden};

#[test]
fn outbound_call_leaks_nothing() {
    let lab = Lab::start(Slot::LeakOutbound);
    let carrier = lab.carrier_primary("uas_answer").spawn_uas();
    let pbx = lab.pbx_uac("uac_call").pause_ms(200).run();
    pbx.assert_success(1);
    let carrier = carrier.wait();
    carrier.assert_success(1);
    // Headers and SDP alike: media is anchored, c= names Palisade only.
    assert_topology_hidden(lab.net(), &pbx.messages(), &[&carrier.messages()]);
}

#[test]
fn inbound_call_leaks_nothing() {
    let lab = Lab::start(Slot::LeakInbound);
    let pbx = lab.pbx_uas("uas_answer").spawn_uas();
    let carrier = lab.carrier_uac("uac_call").pause_ms(200).run();
    carrier.assert_success(1);
    let pbx = pbx.wait();
    pbx.assert_success(1);
    assert_topology_hidden(lab.net(), &pbx.messages(), &[&carrier.messages()]);
}
