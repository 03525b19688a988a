//! Compound RTCP walking (SR/RR report blocks): never panics; a packet
//! judged valid is consumed exactly.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    palisade_relay::fuzz::rtcp(data);
});
