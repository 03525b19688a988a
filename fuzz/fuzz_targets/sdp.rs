//! SDP: the parser never panics and what it accepts writes back to the same
//! model; offers and answers through the media manager always produce SDP
//! that parses, and ending the call frees every port.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    palisade_media::fuzz::sdp(data);
});
