//! The committed seed corpus of the `nft_reply` fuzz target runs through its
//! entry point on stable, so the target cannot rot and the seeds stay
//! meaningful.
#![allow(clippy::unwrap_used)]

use std::path::Path;

#[test]
fn nft_reply_seeds() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus/nft_reply");
    let mut seeds: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| {
            let p = e.unwrap().path();
            (
                p.file_name().unwrap().to_string_lossy().into_owned(),
                std::fs::read(&p).unwrap(),
            )
        })
        .collect();
    seeds.sort();
    assert!(seeds.len() >= 4, "seed corpus nft_reply is missing");
    for (name, bytes) in &seeds {
        let decoded = palisade_nft::netlink::fuzz_reply(bytes);
        if name == "dump_two_elements" {
            assert_eq!(
                decoded, 2,
                "both elements (EXPR and EXPRESSIONS forms) decode"
            );
        }
        // Every prefix too: a cut reply is an error, never a panic; and
        // every byte set to every value (lengths, types, nesting flags).
        for cut in 0..bytes.len() {
            palisade_nft::netlink::fuzz_reply(&bytes[..cut]);
        }
        let mut m = bytes.clone();
        for i in 0..m.len() {
            let keep = m[i];
            for v in 0..=255u8 {
                m[i] = v;
                palisade_nft::netlink::fuzz_reply(&m);
            }
            m[i] = keep;
        }
    }
}
