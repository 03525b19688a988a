//! RTP (RFC 3550 §5.1) and RTCP (RFC 3550 §6.4) header views over raw
//! packets: zero-copy, allocation-free, never panicking on any input.
//!
//! The relay only needs the fixed RTP header (payload type, sequence number,
//! timestamp, SSRC, where the payload starts) and, for statistics, the sender
//! and receiver reports of a compound RTCP packet. Everything else passes
//! through untouched.

/// The fixed RTP header, as parsed from a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RtpHeader {
    /// Marker bit.
    pub marker: bool,
    /// Payload type (7 bits).
    pub payload_type: u8,
    /// Sequence number.
    pub sequence: u16,
    /// RTP timestamp.
    pub timestamp: u32,
    /// Synchronisation source.
    pub ssrc: u32,
    /// Number of CSRC identifiers.
    pub csrc_count: u8,
    /// Whether a header extension is present.
    pub extension: bool,
    /// Whether the packet carries padding.
    pub padding: bool,
    /// Length of the whole header: fixed part, CSRCs and extension.
    pub header_len: usize,
}

/// Size of the fixed RTP header.
pub const RTP_FIXED_HEADER: usize = 12;

impl RtpHeader {
    /// Parses the RTP header at the start of `packet`. Returns `None` when it
    /// is not an RTP version 2 packet or is shorter than its header says.
    /// With `padding`, the payload length excludes nothing here: padding is
    /// counted by [`RtpHeader::payload_len`].
    pub fn parse(packet: &[u8]) -> Option<RtpHeader> {
        let fixed = packet.get(..RTP_FIXED_HEADER)?;
        let b0 = fixed[0];
        if b0 >> 6 != 2 {
            return None;
        }
        let csrc_count = b0 & 0x0f;
        let extension = b0 & 0x10 != 0;
        let padding = b0 & 0x20 != 0;
        let mut header_len = RTP_FIXED_HEADER + 4 * usize::from(csrc_count);
        if extension {
            let ext = packet.get(header_len..header_len + 4)?;
            let words = usize::from(u16::from_be_bytes([ext[2], ext[3]]));
            header_len += 4 + 4 * words;
        }
        if packet.len() < header_len {
            return None;
        }
        Some(RtpHeader {
            marker: fixed[1] & 0x80 != 0,
            payload_type: fixed[1] & 0x7f,
            sequence: u16::from_be_bytes([fixed[2], fixed[3]]),
            timestamp: u32::from_be_bytes([fixed[4], fixed[5], fixed[6], fixed[7]]),
            ssrc: u32::from_be_bytes([fixed[8], fixed[9], fixed[10], fixed[11]]),
            csrc_count,
            extension,
            padding,
            header_len,
        })
    }

    /// Payload bytes of `packet` (this header's packet): what follows the
    /// header, less trailing padding. Zero when the padding count is absurd.
    pub fn payload_len(&self, packet: &[u8]) -> usize {
        let body = packet.len().saturating_sub(self.header_len);
        if self.padding {
            let pad = packet.last().map_or(0, |&p| usize::from(p));
            body.saturating_sub(pad)
        } else {
            body
        }
    }

    /// Writes the 12-byte fixed header (version 2 and the flags of `self`)
    /// into `out`; returns false when `out` is too short.
    pub fn write_fixed(&self, out: &mut [u8]) -> bool {
        let Some(fixed) = out.get_mut(..RTP_FIXED_HEADER) else {
            return false;
        };
        fixed[0] = 0x80
            | if self.padding { 0x20 } else { 0 }
            | if self.extension { 0x10 } else { 0 }
            | (self.csrc_count & 0x0f);
        fixed[1] = if self.marker { 0x80 } else { 0 } | (self.payload_type & 0x7f);
        fixed[2..4].copy_from_slice(&self.sequence.to_be_bytes());
        fixed[4..8].copy_from_slice(&self.timestamp.to_be_bytes());
        fixed[8..12].copy_from_slice(&self.ssrc.to_be_bytes());
        true
    }
}

/// Rewrites the payload type of the RTP packet in place, keeping the marker.
pub fn set_payload_type(packet: &mut [u8], pt: u8) {
    if let Some(b) = packet.get_mut(1) {
        *b = (*b & 0x80) | (pt & 0x7f);
    }
}

/// RFC 5761 §4 demultiplexing: on an rtcp-mux port, a packet whose second
/// byte is 192..=223 (RTCP packet types 192-223, i.e. RTP payload types
/// 64-95 with the marker set, which RTP must not use) is RTCP.
pub fn is_rtcp(packet: &[u8]) -> bool {
    packet.len() >= 8 && packet[0] >> 6 == 2 && (192..=223).contains(&packet[1])
}

/// RTCP packet type: sender report.
pub const RTCP_SR: u8 = 200;
/// RTCP packet type: receiver report.
pub const RTCP_RR: u8 = 201;

/// One packet of a compound RTCP packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RtcpPacket<'a> {
    /// Packet type (200 SR, 201 RR, 202 SDES, 203 BYE, 204 APP, ...).
    pub packet_type: u8,
    /// The 5-bit count field (report blocks for SR/RR).
    pub count: u8,
    /// The packet after its 4-byte common header, padding included.
    pub body: &'a [u8],
}

/// The sender information of an SR (RFC 3550 §6.4.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SenderInfo {
    /// SSRC of the sender.
    pub ssrc: u32,
    /// NTP timestamp, 32.32 fixed point.
    pub ntp: u64,
    /// RTP timestamp.
    pub rtp_timestamp: u32,
    /// Sender's packet count.
    pub packets: u32,
    /// Sender's octet count.
    pub octets: u32,
}

impl SenderInfo {
    /// The middle 32 bits of the NTP timestamp: what a receiver echoes as LSR.
    pub fn lsr(&self) -> u32 {
        // Bits 16..48 of the 64-bit value; the truncation is the point.
        (self.ntp >> 16) as u32
    }
}

/// A reception report block (RFC 3550 §6.4.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReportBlock {
    /// The source this block reports on.
    pub ssrc: u32,
    /// Fraction lost since the last report, in 1/256.
    pub fraction_lost: u8,
    /// Cumulative packets lost (24-bit signed).
    pub cumulative_lost: i32,
    /// Extended highest sequence number received.
    pub highest_seq: u32,
    /// Interarrival jitter in timestamp units.
    pub jitter: u32,
    /// Last SR timestamp (middle 32 bits of its NTP time), 0 when none.
    pub lsr: u32,
    /// Delay since that SR, in 1/65536 s.
    pub dlsr: u32,
}

fn be32(b: &[u8], at: usize) -> Option<u32> {
    let s = b.get(at..at + 4)?;
    Some(u32::from_be_bytes([s[0], s[1], s[2], s[3]]))
}

impl<'a> RtcpPacket<'a> {
    /// Sender information when this is an SR.
    pub fn sender_info(&self) -> Option<SenderInfo> {
        if self.packet_type != RTCP_SR {
            return None;
        }
        let hi = be32(self.body, 4)?;
        let lo = be32(self.body, 8)?;
        Some(SenderInfo {
            ssrc: be32(self.body, 0)?,
            ntp: (u64::from(hi) << 32) | u64::from(lo),
            rtp_timestamp: be32(self.body, 12)?,
            packets: be32(self.body, 16)?,
            octets: be32(self.body, 20)?,
        })
    }

    /// The SSRC of the reporter (first word of SR, RR).
    pub fn sender_ssrc(&self) -> Option<u32> {
        be32(self.body, 0)
    }

    /// The report blocks of an SR or RR (none for other types); blocks that
    /// do not fit in the packet are not returned.
    pub fn report_blocks(&self) -> impl Iterator<Item = ReportBlock> + 'a {
        let start = match self.packet_type {
            RTCP_SR => 24,
            RTCP_RR => 4,
            _ => usize::MAX,
        };
        let body = self.body;
        let count = if start == usize::MAX {
            0
        } else {
            usize::from(self.count)
        };
        (0..count).map_while(move |i| {
            let at = start.checked_add(i * 24)?;
            let b = body.get(at..at + 24)?;
            let lost = u32::from_be_bytes([0, b[5], b[6], b[7]]);
            // Sign-extend the 24-bit field.
            let cumulative_lost = ((lost << 8) as i32) >> 8;
            Some(ReportBlock {
                ssrc: be32(b, 0)?,
                fraction_lost: b[4],
                cumulative_lost,
                highest_seq: be32(b, 8)?,
                jitter: be32(b, 12)?,
                lsr: be32(b, 16)?,
                dlsr: be32(b, 20)?,
            })
        })
    }
}

/// Iterates over the packets of a compound RTCP packet. Stops at the first
/// malformed packet (bad version, length past the end); [`RtcpIter::valid`]
/// then tells whether the whole buffer was consumed cleanly.
#[derive(Debug, Clone)]
pub struct RtcpIter<'a> {
    rest: &'a [u8],
    bad: bool,
}

/// Walks a compound RTCP packet.
pub fn rtcp_packets(buf: &[u8]) -> RtcpIter<'_> {
    RtcpIter {
        rest: buf,
        bad: false,
    }
}

impl RtcpIter<'_> {
    /// True when every byte so far belonged to a well-formed packet and the
    /// buffer is exhausted (call after iterating).
    pub fn valid(&self) -> bool {
        !self.bad && self.rest.is_empty()
    }
}

impl<'a> Iterator for RtcpIter<'a> {
    type Item = RtcpPacket<'a>;

    fn next(&mut self) -> Option<RtcpPacket<'a>> {
        if self.bad || self.rest.is_empty() {
            return None;
        }
        let Some(h) = self.rest.get(..4) else {
            self.bad = true;
            return None;
        };
        if h[0] >> 6 != 2 {
            self.bad = true;
            return None;
        }
        let len = (usize::from(u16::from_be_bytes([h[2], h[3]])) + 1) * 4;
        let Some(pkt) = self.rest.get(..len) else {
            self.bad = true;
            return None;
        };
        self.rest = &self.rest[len..];
        Some(RtcpPacket {
            packet_type: h[1],
            count: h[0] & 0x1f,
            body: &pkt[4..],
        })
    }
}

/// Checks that `buf` is a valid compound RTCP packet by the RFC 3550 A.2
/// rules that matter to a relay: version 2, lengths add up exactly, and the
/// first packet is an SR or RR (an RTCP-mux peer may also send a lone
/// feedback or BYE packet, which we accept: any type 192..=223 first).
pub fn rtcp_valid(buf: &[u8]) -> bool {
    let mut it = rtcp_packets(buf);
    match it.next() {
        Some(first) if (192..=223).contains(&first.packet_type) => {}
        _ => return false,
    }
    for _ in it.by_ref() {}
    it.valid()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rtp(pt: u8, seq: u16, ts: u32, ssrc: u32, payload: &[u8]) -> Vec<u8> {
        let mut p = vec![0u8; 12];
        RtpHeader {
            marker: false,
            payload_type: pt,
            sequence: seq,
            timestamp: ts,
            ssrc,
            csrc_count: 0,
            extension: false,
            padding: false,
            header_len: 12,
        }
        .write_fixed(&mut p);
        p.extend_from_slice(payload);
        p
    }

    #[test]
    fn parses_fixed_header() {
        let p = rtp(8, 0x1234, 0xdead_beef, 42, &[1, 2, 3]);
        let h = RtpHeader::parse(&p).unwrap();
        assert_eq!(h.payload_type, 8);
        assert_eq!(h.sequence, 0x1234);
        assert_eq!(h.timestamp, 0xdead_beef);
        assert_eq!(h.ssrc, 42);
        assert_eq!(h.header_len, 12);
        assert_eq!(h.payload_len(&p), 3);
    }

    #[test]
    fn csrc_extension_and_padding() {
        let mut p = rtp(0, 1, 2, 3, &[]);
        p[0] |= 0x10 | 0x20 | 2; // extension, padding, 2 CSRCs
        p.extend_from_slice(&[0; 8]); // CSRCs
        p.extend_from_slice(&[0xbe, 0xde, 0, 1, 9, 9, 9, 9]); // one-word extension
        p.extend_from_slice(&[7, 7, 7, 0, 0, 3]); // 3 payload + 3 padding
        let h = RtpHeader::parse(&p).unwrap();
        assert_eq!(h.header_len, 12 + 8 + 8);
        assert_eq!(h.payload_len(&p), 3);
        // Extension longer than the packet.
        p[12 + 8 + 3] = 200;
        assert!(RtpHeader::parse(&p).is_none());
    }

    #[test]
    fn rejects_short_and_wrong_version() {
        assert!(RtpHeader::parse(&[0x80; 11]).is_none());
        let mut p = rtp(0, 1, 2, 3, &[]);
        p[0] = 0x40;
        assert!(RtpHeader::parse(&p).is_none());
    }

    #[test]
    fn pt_rewrite_keeps_marker() {
        let mut p = rtp(101, 1, 2, 3, &[]);
        p[1] |= 0x80;
        set_payload_type(&mut p, 96);
        let h = RtpHeader::parse(&p).unwrap();
        assert!(h.marker);
        assert_eq!(h.payload_type, 96);
    }

    /// An SR with one report block followed by an SDES, as a phone sends.
    pub(crate) fn sr_compound() -> Vec<u8> {
        let mut p = vec![0x81, 200, 0, 12];
        p.extend_from_slice(&0x1111_1111u32.to_be_bytes()); // ssrc
        p.extend_from_slice(&0x8000_0001u32.to_be_bytes()); // ntp hi
        p.extend_from_slice(&0x2000_0000u32.to_be_bytes()); // ntp lo
        p.extend_from_slice(&160u32.to_be_bytes()); // rtp ts
        p.extend_from_slice(&10u32.to_be_bytes()); // packets
        p.extend_from_slice(&1600u32.to_be_bytes()); // octets
        p.extend_from_slice(&0x2222_2222u32.to_be_bytes()); // block ssrc
        p.extend_from_slice(&[64, 0xff, 0xff, 0xfe]); // 25 %, lost -2
        p.extend_from_slice(&70_000u32.to_be_bytes());
        p.extend_from_slice(&80u32.to_be_bytes()); // jitter
        p.extend_from_slice(&0x0001_2000u32.to_be_bytes()); // lsr
        p.extend_from_slice(&65_536u32.to_be_bytes()); // dlsr = 1 s
        p.extend_from_slice(&[0x81, 202, 0, 2, 0x11, 0x11, 0x11, 0x11, 1, 1, b'x', 0]);
        p
    }

    #[test]
    fn walks_compound_rtcp() {
        let p = sr_compound();
        assert!(rtcp_valid(&p));
        assert!(is_rtcp(&p));
        let pkts: Vec<_> = rtcp_packets(&p).collect();
        assert_eq!(pkts.len(), 2);
        let si = pkts[0].sender_info().unwrap();
        assert_eq!(si.ssrc, 0x1111_1111);
        assert_eq!(si.lsr(), 0x0001_2000);
        let blocks: Vec<_> = pkts[0].report_blocks().collect();
        assert_eq!(blocks.len(), 1);
        assert_eq!(blocks[0].fraction_lost, 64);
        assert_eq!(blocks[0].cumulative_lost, -2);
        assert_eq!(blocks[0].jitter, 80);
        assert_eq!(blocks[0].dlsr, 65_536);
        assert_eq!(pkts[1].packet_type, 202);
        // Truncated: not valid, no panic.
        assert!(!rtcp_valid(&p[..p.len() - 1]));
    }
}

#[cfg(test)]
pub(crate) mod tests_support {
    /// A receiver report with one block (SSRC 0x3333_3333 about 0x1111_1111).
    pub(crate) fn rr() -> Vec<u8> {
        let mut p = vec![0x81, 201, 0, 7];
        p.extend_from_slice(&0x3333_3333u32.to_be_bytes());
        p.extend_from_slice(&0x1111_1111u32.to_be_bytes());
        p.extend_from_slice(&[12, 0, 0, 5]);
        p.extend_from_slice(&1000u32.to_be_bytes());
        p.extend_from_slice(&40u32.to_be_bytes());
        p.extend_from_slice(&0u32.to_be_bytes());
        p.extend_from_slice(&0u32.to_be_bytes());
        p
    }
}
