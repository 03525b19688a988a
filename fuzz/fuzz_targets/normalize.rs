//! Any bytes, parsed as a SIP message, through a fixed set of normalization
//! profiles that uses every action (crates/normalize/src/fuzz_config.yaml),
//! on every trunk in both directions: no panic, and the result parses with
//! the original Call-ID, CSeq and tags.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    palisade_normalize::fuzz::normalize(data);
});
