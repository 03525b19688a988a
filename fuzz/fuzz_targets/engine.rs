//! The B2BUA engine fed with arbitrary datagrams from the lab's peers and
//! clock steps: no panic, no internal error, every message sent parses.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;
use std::time::Instant;

static ORIGIN: OnceLock<Instant> = OnceLock::new();

fuzz_target!(|data: &[u8]| {
    #[allow(clippy::disallowed_methods)] // the virtual clock needs one real origin
    let origin = *ORIGIN.get_or_init(Instant::now);
    palisade_b2bua::fuzz::drive(origin, data);
});
