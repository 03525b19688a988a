//! TCP/TLS stream framing: frames are consistent and prefixes incomplete.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    palisade_sip::fuzz::framing(data);
});
