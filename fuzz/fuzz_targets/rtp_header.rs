//! RTP header parsing: never panics; the fixed header round-trips; a
//! payload-type rewrite touches only the payload-type bits.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    palisade_relay::fuzz::rtp_header(data);
});
