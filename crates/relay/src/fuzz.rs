//! Entry points shared by the cargo-fuzz targets (`fuzz/fuzz_targets/rtp_header.rs`,
//! `rtcp.rs`) and the property tests that run them on stable.

use crate::rtp::{self, RtpHeader};

/// Parses `data` as RTP and checks the invariants: the header length fits
/// the packet, the fixed header round-trips, the PT rewrite touches only
/// the payload-type bits. Panics on a violated invariant, never on input.
pub fn rtp_header(data: &[u8]) {
    let _ = rtp::is_rtcp(data);
    let Some(h) = RtpHeader::parse(data) else {
        return;
    };
    assert!(h.header_len <= data.len());
    assert!(h.payload_len(data) <= data.len() - h.header_len);
    let mut copy = data.to_vec();
    assert!(h.write_fixed(&mut copy));
    assert_eq!(copy, data, "fixed header round-trip");
    rtp::set_payload_type(&mut copy, h.payload_type ^ 0x55);
    let h2 = RtpHeader::parse(&copy).expect("still RTP after a PT rewrite");
    assert_eq!(h2.payload_type, (h.payload_type ^ 0x55) & 0x7f);
    assert_eq!(h2.marker, h.marker);
    assert_eq!(copy[2..], data[2..]);
}

/// Walks `data` as a compound RTCP packet and reads every SR/RR field.
pub fn rtcp(data: &[u8]) {
    let valid = rtp::rtcp_valid(data);
    let mut it = rtp::rtcp_packets(data);
    let mut total = 0usize;
    for pkt in it.by_ref() {
        total += 4 + pkt.body.len();
        let _ = pkt.sender_info().map(|s| s.lsr());
        let _ = pkt.sender_ssrc();
        for rb in pkt.report_blocks() {
            assert!((-(1 << 23)..(1 << 23)).contains(&rb.cumulative_lost));
        }
    }
    assert!(total <= data.len());
    if valid {
        assert!(it.valid());
        assert_eq!(total, data.len());
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]
        #[test]
        fn rtp_header_never_panics(data in proptest::collection::vec(any::<u8>(), 0..200)) {
            super::rtp_header(&data);
        }

        #[test]
        fn rtp_header_on_rtp_like_input(mut data in proptest::collection::vec(any::<u8>(), 12..200)) {
            data[0] = 0x80 | (data[0] & 0x3f);
            super::rtp_header(&data);
        }

        #[test]
        fn rtcp_never_panics(data in proptest::collection::vec(any::<u8>(), 0..300)) {
            super::rtcp(&data);
        }

        #[test]
        fn rtcp_on_rtcp_like_input(blocks in 0u8..4, extra in proptest::collection::vec(any::<u8>(), 0..100)) {
            let mut p = vec![0x80 | blocks, 201, 0, 1 + 6 * blocks];
            p.extend(std::iter::repeat_n(0xab, 4 + 24 * usize::from(blocks)));
            p.extend_from_slice(&extra);
            super::rtcp(&p);
        }
    }
}
