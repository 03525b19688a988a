//! SIP message parser: parse, decode every typed value, edit, re-parse;
//! unparseable requests are salvaged into a 400 that must itself parse.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    palisade_sip::fuzz::message(data);
});
