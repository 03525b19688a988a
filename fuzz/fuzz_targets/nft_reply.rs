//! Kernel replies to the nftables netlink client (acks, errors, set
//! element dumps with counters): walking any bytes never panics, and every
//! decoded key has the kind asked for.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    palisade_nft::netlink::fuzz_reply(data);
});
