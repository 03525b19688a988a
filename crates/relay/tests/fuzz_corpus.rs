//! The committed fuzz seed corpora run through the fuzz entry points on
//! stable, so the targets cannot rot and the seeds stay meaningful.
#![allow(clippy::unwrap_used)]

use std::path::Path;

fn corpus(name: &str) -> Vec<Vec<u8>> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../fuzz/corpus")
        .join(name);
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| std::fs::read(e.unwrap().path()).unwrap())
        .collect();
    files.sort();
    assert!(files.len() >= 5, "seed corpus {name} is missing");
    files
}

#[test]
fn rtp_header_seeds() {
    let seeds = corpus("rtp_header");
    let parsed = seeds
        .iter()
        .filter(|s| palisade_relay::rtp::RtpHeader::parse(s).is_some())
        .count();
    assert!(parsed >= 4, "the seeds are mostly valid RTP");
    for s in &seeds {
        palisade_relay::fuzz::rtp_header(s);
    }
}

#[test]
fn rtcp_seeds() {
    let seeds = corpus("rtcp");
    assert!(
        seeds
            .iter()
            .filter(|s| palisade_relay::rtp::rtcp_valid(s))
            .count()
            >= 4
    );
    for s in &seeds {
        palisade_relay::fuzz::rtcp(s);
    }
}
