//! Digest challenge and credential parsing (`WWW-Authenticate`,
//! `Authorization` and their proxy forms): never panics, and whatever
//! parses writes back to a header that parses to the same value.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    palisade_digest::fuzz::fuzz_parse(data);
});
