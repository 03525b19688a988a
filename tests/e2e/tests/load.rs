//! 500 calls at 50 calls per second through Palisade, none may fail.

use std::time::Duration;

use palisade_e2e::{Lab, Slot};

#[test]
fn five_hundred_calls_at_50_cps() {
    let mut lab = Lab::start(Slot::Load500Calls);
    let carrier = lab
        .carrier_primary("uas_answer")
        .calls(500)
        .timeout(Duration::from_secs(90))
        .spawn_uas();
    let pbx = lab
        .pbx_uac("uac_call")
        .calls(500)
        .rate(50)
        .limit(200)
        .pause_ms(500)
        .timeout(Duration::from_secs(60))
        .run();
    pbx.assert_success(500);
    carrier.wait().assert_success(500);
    lab.assert_alive();
}
