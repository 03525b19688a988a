//! The guard (DoS rules, scanners, CAC, fraud engine) on arbitrary
//! operations: no panic, bounded tables, no leaked calls.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;
use std::time::Instant;

static ORIGIN: OnceLock<Instant> = OnceLock::new();

fuzz_target!(|data: &[u8]| {
    #[allow(clippy::disallowed_methods)] // the virtual clock needs one real origin
    let origin = *ORIGIN.get_or_init(Instant::now);
    palisade_guard::fuzz::drive(origin, data);
});
