//! Per-direction quality statistics (sans-IO: every function takes `now`).
//!
//! - Loss from sequence numbers: RFC 3550 A.1 (`update_seq`, without the
//!   probation period: the relay has already validated the source) and A.3
//!   (expected = extended highest − base + 1, lost = expected − received).
//! - Interarrival jitter: RFC 3550 A.8, `J += (|D| − J) / 16`, in timestamp
//!   units of the payload type's clock, reported in milliseconds.
//! - RTCP: fraction lost and jitter from the receiver's report blocks; the
//!   round-trip time between Palisade and the receiving peer from LSR/DLSR
//!   (RFC 3550 §6.4.1), measured against the time Palisade relayed that SR.
//! - MOS: a simplified ITU-T G.107 E-model, see [`mos`].

use std::time::{Duration, Instant};

use crate::api::DirectionStats;
use crate::rtp::{ReportBlock, RtpHeader, SenderInfo};

/// RFC 3550 A.1: a jump this far ahead is a restart, not loss.
const MAX_DROPOUT: u16 = 3000;
/// RFC 3550 A.1: packets this far behind are late or duplicates.
const MAX_MISORDER: u16 = 100;
const RTP_SEQ_MOD: u32 = 1 << 16;

/// RFC 3550 A.1 sequence state of one SSRC.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SeqState {
    initialized: bool,
    max_seq: u16,
    cycles: u32,
    base_seq: u32,
    bad_seq: u32,
    received: u64,
}

impl SeqState {
    /// Accounts for one packet with sequence number `seq`.
    pub fn update(&mut self, seq: u16) {
        if !self.initialized {
            self.init(seq);
            self.received = 1;
            return;
        }
        let udelta = seq.wrapping_sub(self.max_seq);
        if udelta < MAX_DROPOUT {
            // In order, with a permissible gap.
            if seq < self.max_seq {
                self.cycles = self.cycles.wrapping_add(RTP_SEQ_MOD);
            }
            self.max_seq = seq;
        } else if u32::from(udelta) <= RTP_SEQ_MOD - u32::from(MAX_MISORDER) {
            // A very large jump.
            if u32::from(seq) == self.bad_seq {
                // Two sequential packets: the other side restarted.
                let received = self.received;
                self.init(seq);
                self.received = received;
            } else {
                self.bad_seq = (u32::from(seq) + 1) & (RTP_SEQ_MOD - 1);
                return;
            }
        }
        // else: duplicate or reordered packet.
        self.received += 1;
    }

    fn init(&mut self, seq: u16) {
        self.initialized = true;
        self.base_seq = u32::from(seq);
        self.max_seq = seq;
        self.bad_seq = RTP_SEQ_MOD + 1;
        self.cycles = 0;
    }

    /// Extended highest sequence number received.
    pub fn extended_max(&self) -> u64 {
        u64::from(self.cycles) + u64::from(self.max_seq)
    }

    /// Packets expected (RFC 3550 A.3).
    pub fn expected(&self) -> u64 {
        if !self.initialized {
            return 0;
        }
        (self.extended_max() + 1).saturating_sub(u64::from(self.base_seq))
    }

    /// Packets received (duplicates included, as A.3 counts them).
    pub fn received(&self) -> u64 {
        self.received
    }

    /// Packets lost (A.3), never negative.
    pub fn lost(&self) -> u64 {
        self.expected().saturating_sub(self.received)
    }
}

/// RFC 3550 A.8 interarrival jitter, in timestamp units.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Jitter {
    last_transit: Option<i64>,
    jitter: f64,
}

impl Jitter {
    /// Accounts for a packet with RTP timestamp `ts` that arrived at
    /// `arrival` (same clock units, wrapping 32-bit).
    pub fn update(&mut self, arrival: u32, ts: u32) {
        // Wrapping difference read as signed: transit time modulo 2^32.
        let transit = i64::from(arrival.wrapping_sub(ts) as i32);
        if let Some(last) = self.last_transit {
            let d = (transit - last).abs() as f64;
            self.jitter += (d - self.jitter) / 16.0;
        }
        self.last_transit = Some(transit);
    }

    /// Forgets the last transit time (payload-type or SSRC change).
    pub fn restart(&mut self) {
        self.last_transit = None;
    }

    /// Current estimate in timestamp units.
    pub fn units(&self) -> f64 {
        self.jitter
    }
}

/// RTP clock rate of a payload type. Static types per RFC 3551 table 4
/// (G.722, PT 9, is 8000 Hz by that table's historical quirk). Dynamic
/// types (96-127) are assumed to be 8000 Hz, which holds for
/// telephone-event and narrowband codecs; the relay is not told the rtpmap.
pub fn clock_rate(pt: u8) -> u32 {
    match pt {
        10 | 11 => 44_100,
        14 | 25 | 26 | 28 | 31 | 32 | 33 | 34 => 90_000,
        6 => 16_000,
        16 => 11_025,
        17 => 22_050,
        _ => 8000,
    }
}

/// Codecs the E-model knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Codec {
    /// G.711 µ-law/A-law (PT 0, 8).
    G711,
    /// G.729 (PT 18).
    G729,
    /// G.722 (PT 9).
    G722,
}

impl Codec {
    /// The codec of a static payload type, if the E-model knows it.
    pub fn from_pt(pt: u8) -> Option<Codec> {
        match pt {
            0 | 8 => Some(Codec::G711),
            18 => Some(Codec::G729),
            9 => Some(Codec::G722),
            _ => None,
        }
    }

    /// Equipment impairment factor Ie and packet-loss robustness Bpl
    /// (ITU-T G.113 Appendix I; G.711 with packet-loss concealment).
    /// G.722 is rated on the narrowband scale like G.711 (its wideband Ie
    /// is not comparable), with the same robustness.
    fn ie_bpl(self) -> (f32, f32) {
        match self {
            Codec::G711 => (0.0, 25.1),
            Codec::G729 => (11.0, 19.0),
            Codec::G722 => (0.0, 25.1),
        }
    }

    /// Codec delay (frame + look-ahead), ms.
    fn delay_ms(self) -> f32 {
        match self {
            Codec::G711 | Codec::G722 => 0.125,
            Codec::G729 => 15.0,
        }
    }
}

/// Estimated MOS by a simplified ITU-T G.107 E-model:
///
/// - `R = 93.2 − Id − Ie_eff` (R0 − Is = 93.2 with default parameters, A = 0);
/// - `Id = 0.024·d + 0.11·(d − 177.3)·H(d − 177.3)`, `d` the one-way mouth-to-ear
///   delay in ms (callers pass RTT/2 + 2×jitter for the jitter buffer + 20 ms
///   packetization; the codec's own delay is added here);
/// - `Ie_eff = Ie + (95 − Ie) · Ppl / (Ppl + Bpl)` (random loss, BurstR = 1),
///   `Ppl` the loss in percent;
/// - `MOS = 1 + 0.035·R + 7·10⁻⁶·R·(R − 60)·(100 − R)` for 0 < R < 100,
///   1 below, 4.5 above.
///
/// MOS falls as loss or delay rise (property-tested).
pub fn mos(codec: Codec, loss_percent: f32, one_way_delay_ms: f32) -> f32 {
    let (ie, bpl) = codec.ie_bpl();
    let ppl = loss_percent.clamp(0.0, 100.0);
    let d = one_way_delay_ms.max(0.0) + codec.delay_ms();
    let id = 0.024 * d + if d > 177.3 { 0.11 * (d - 177.3) } else { 0.0 };
    let ie_eff = ie + (95.0 - ie) * ppl / (ppl + bpl);
    let r = 93.2 - id - ie_eff;
    if r <= 0.0 {
        1.0
    } else if r >= 100.0 {
        4.5
    } else {
        (1.0 + 0.035 * r + 7.0e-6 * r * (r - 60.0) * (100.0 - r)).clamp(1.0, 4.5)
    }
}

/// Payload-type numbers from 96 on are dynamic.
const DYNAMIC_PT: u8 = 96;
/// Recent SRs remembered for RTT.
const SR_RING: usize = 4;

/// Everything the relay measures about one direction of a stream (what one
/// peer sends), plus the RTCP the *other* peer sends about it.
#[derive(Debug, Clone)]
pub struct DirectionMeter {
    epoch: Instant,
    ssrc: Option<u32>,
    seq: SeqState,
    /// Lost packets of SSRCs seen before the current one.
    lost_before: u64,
    main_pt: Option<u8>,
    jitter: Jitter,
    packets: u64,
    bytes: u64,
    /// Of `packets`, those the kernel forwarded (offloaded stream).
    offloaded: u64,
    dropped: u64,
    rtcp_fraction_lost: Option<f32>,
    rtcp_jitter_ms: Option<f32>,
    rtt_ms: Option<f32>,
    /// (LSR, when relayed) of SRs this direction's peer sent.
    srs: [(u32, Option<Instant>); SR_RING],
    sr_next: usize,
}

impl DirectionMeter {
    /// A meter whose arrival clock starts at `epoch`.
    pub fn new(epoch: Instant) -> Self {
        DirectionMeter {
            epoch,
            ssrc: None,
            seq: SeqState::default(),
            lost_before: 0,
            main_pt: None,
            jitter: Jitter::default(),
            packets: 0,
            bytes: 0,
            offloaded: 0,
            dropped: 0,
            rtcp_fraction_lost: None,
            rtcp_jitter_ms: None,
            rtt_ms: None,
            srs: [(0, None); SR_RING],
            sr_next: 0,
        }
    }

    /// An RTP packet of this direction, relayed at `now` with
    /// `payload_len` payload bytes.
    pub fn on_rtp(&mut self, now: Instant, h: &RtpHeader, payload_len: usize) {
        self.packets += 1;
        self.bytes += payload_len as u64;
        if self.ssrc != Some(h.ssrc) {
            if self.ssrc.is_some() {
                self.lost_before += self.seq.lost();
            }
            self.ssrc = Some(h.ssrc);
            self.seq = SeqState::default();
            self.jitter.restart();
        }
        self.seq.update(h.sequence);
        // The stream's main payload type: the first static one, else the
        // first seen. DTMF events (dynamic, repeated timestamps) and comfort
        // noise of another type do not feed the jitter estimate.
        let pt = h.payload_type;
        match self.main_pt {
            Some(m) if m == pt => {}
            Some(m) if m >= DYNAMIC_PT && pt < DYNAMIC_PT => {
                self.main_pt = Some(pt);
                self.jitter.restart();
            }
            Some(_) => return,
            None => self.main_pt = Some(pt),
        }
        let clock = u128::from(clock_rate(pt));
        let arrival =
            (now.saturating_duration_since(self.epoch).as_nanos() * clock / 1_000_000_000) as u32;
        self.jitter.update(arrival, h.timestamp);
    }

    /// The kernel forwarded `packets` more RTP packets of this direction,
    /// carrying about `payload_bytes` of payload. They are counted like the
    /// others; sequence loss and jitter are not measured for them.
    pub fn on_offloaded(&mut self, packets: u64, payload_bytes: u64) {
        self.packets += packets;
        self.offloaded += packets;
        self.bytes += payload_bytes;
    }

    /// Packets of this direction go to the kernel from now on, or come back
    /// from it: the sequence-number and jitter trackers start over (their
    /// gap is not loss), keeping the loss counted so far.
    pub fn offload_gap(&mut self) {
        self.lost_before += self.seq.lost();
        self.seq = SeqState::default();
        self.jitter.restart();
    }

    /// A packet of this direction was dropped.
    pub fn on_drop(&mut self) {
        self.dropped += 1;
    }

    /// This direction's peer sent an SR that Palisade relayed at `now`.
    pub fn on_sender_report(&mut self, now: Instant, si: &SenderInfo) {
        self.srs[self.sr_next % SR_RING] = (si.lsr(), Some(now));
        self.sr_next = self.sr_next.wrapping_add(1);
    }

    /// The receiving peer reported on this direction at `now`.
    pub fn on_report_block(&mut self, now: Instant, rb: &ReportBlock) {
        self.rtcp_fraction_lost = Some(f32::from(rb.fraction_lost) / 256.0);
        let clock = self.main_pt.map_or(8000, clock_rate) as f32;
        self.rtcp_jitter_ms = Some(rb.jitter as f32 * 1000.0 / clock);
        if rb.lsr != 0
            && let Some((_, Some(sent))) = self
                .srs
                .iter()
                .find(|(lsr, t)| *lsr == rb.lsr && t.is_some())
        {
            let dlsr = Duration::from_secs_f64(f64::from(rb.dlsr) / 65_536.0);
            let rtt = now.saturating_duration_since(*sent).saturating_sub(dlsr);
            self.rtt_ms = Some(rtt.as_secs_f32() * 1000.0);
        }
    }

    /// Jitter in milliseconds.
    pub fn jitter_ms(&self) -> f32 {
        let clock = self.main_pt.map_or(8000, clock_rate) as f64;
        (self.jitter.units() * 1000.0 / clock) as f32
    }

    /// Packets lost so far.
    pub fn lost(&self) -> u64 {
        self.lost_before + self.seq.lost()
    }

    /// The statistics to report.
    pub fn snapshot(&self) -> DirectionStats {
        let lost = self.lost();
        let expected = self.packets + lost;
        let mut loss_pct = if expected == 0 {
            0.0
        } else {
            lost as f32 * 100.0 / expected as f32
        };
        if let Some(f) = self.rtcp_fraction_lost {
            loss_pct = loss_pct.max(f * 100.0);
        }
        let jitter_ms = self.jitter_ms();
        let delay = self.rtt_ms.unwrap_or(0.0) / 2.0 + 2.0 * jitter_ms + 20.0;
        let mos = if self.packets == 0 {
            None
        } else {
            self.main_pt
                .and_then(Codec::from_pt)
                .map(|c| mos(c, loss_pct, delay))
        };
        DirectionStats {
            packets: self.packets,
            bytes: self.bytes,
            offloaded: self.offloaded,
            lost,
            jitter_ms,
            rtcp_fraction_lost: self.rtcp_fraction_lost,
            rtcp_jitter_ms: self.rtcp_jitter_ms,
            rtt_ms: self.rtt_ms,
            mos,
            dropped: self.dropped,
        }
    }
}

#[cfg(test)]
// The tests need one real origin for their virtual times.
#[allow(clippy::disallowed_methods)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn seq_counts_loss_and_wrap() {
        let mut s = SeqState::default();
        for seq in [65_530u16, 65_531, 65_533, 65_535, 0, 1, 3] {
            s.update(seq);
        }
        // 65530..=3 is 10 packets, 7 received.
        assert_eq!(s.expected(), 10);
        assert_eq!(s.received(), 7);
        assert_eq!(s.lost(), 3);
        assert_eq!(s.extended_max(), 65_536 + 3);
    }

    #[test]
    fn seq_reorder_and_duplicates() {
        let mut s = SeqState::default();
        for seq in [10u16, 12, 11, 11, 13] {
            s.update(seq);
        }
        // Duplicates count as received (A.3): lost may not go below zero.
        assert_eq!(s.expected(), 4);
        assert_eq!(s.lost(), 0);
    }

    #[test]
    fn seq_restart_after_two_sequential_jumps() {
        let mut s = SeqState::default();
        s.update(100);
        s.update(101);
        s.update(40_000); // big jump: held back
        assert_eq!(s.received(), 2);
        s.update(40_001); // confirmed: restart at 40001
        assert_eq!(s.extended_max(), 40_001);
        assert_eq!(s.lost(), 0);
    }

    #[test]
    fn jitter_of_a_steady_stream_is_zero_and_of_a_late_packet_is_d_over_16() {
        let mut j = Jitter::default();
        for i in 0..10u32 {
            j.update(1000 + i * 160, i * 160);
        }
        assert_eq!(j.units(), 0.0);
        // One packet 80 units late: D = 80, J = 80/16 = 5 (RFC 3550 A.8).
        j.update(1000 + 10 * 160 + 80, 10 * 160);
        assert!((j.units() - 5.0).abs() < 1e-9);
        // Wrapping timestamps behave like the unwrapped case.
        let mut w = Jitter::default();
        w.update(100, u32::MAX - 59);
        w.update(260 + 80, 100);
        assert!((w.units() - 5.0).abs() < 1e-9);
    }

    #[test]
    fn mos_reference_points() {
        let clean = mos(Codec::G711, 0.0, 20.0);
        assert!(clean > 4.3 && clean <= 4.5, "{clean}");
        let g729 = mos(Codec::G729, 0.0, 20.0);
        assert!(g729 < clean && g729 > 3.8, "{g729}");
        let lossy = mos(Codec::G711, 5.0, 20.0);
        assert!(lossy < clean - 0.3 && lossy > 3.5, "{lossy}");
        assert_eq!(mos(Codec::G711, 100.0, 1000.0), 1.0);
    }

    #[test]
    fn meter_reports_loss_and_rtt() {
        let t0 = Instant::now();
        let mut m = DirectionMeter::new(t0);
        for seq in (0u16..100).filter(|s| s % 10 != 3) {
            let h = RtpHeader {
                marker: false,
                payload_type: 0,
                sequence: seq,
                timestamp: u32::from(seq) * 160,
                ssrc: 7,
                csrc_count: 0,
                extension: false,
                padding: false,
                header_len: 12,
            };
            m.on_rtp(t0 + Duration::from_millis(u64::from(seq) * 20), &h, 160);
        }
        let si = SenderInfo {
            ssrc: 7,
            ntp: 0x0000_1234_5678_0000,
            rtp_timestamp: 0,
            packets: 0,
            octets: 0,
        };
        m.on_sender_report(t0 + Duration::from_secs(3), &si);
        let rb = ReportBlock {
            ssrc: 7,
            fraction_lost: 26,
            cumulative_lost: 10,
            highest_seq: 99,
            jitter: 16,
            lsr: si.lsr(),
            dlsr: 65_536 / 2,
        };
        m.on_report_block(t0 + Duration::from_millis(3540), &rb);
        let s = m.snapshot();
        assert_eq!(s.packets, 90);
        assert_eq!(s.bytes, 90 * 160);
        assert_eq!(s.lost, 10);
        assert!(s.jitter_ms < 0.01);
        assert_eq!(s.rtcp_jitter_ms, Some(2.0));
        let rtt = s.rtt_ms.unwrap();
        assert!((rtt - 40.0).abs() < 0.5, "{rtt}");
        assert!(s.mos.unwrap() < 4.0);
    }

    proptest! {
        #[test]
        fn mos_falls_with_loss_and_delay(
            loss in 0.0f32..60.0, more in 0.1f32..40.0,
            delay in 0.0f32..500.0, later in 1.0f32..300.0,
        ) {
            for c in [Codec::G711, Codec::G729, Codec::G722] {
                let base = mos(c, loss, delay);
                prop_assert!((1.0..=4.5).contains(&base));
                prop_assert!(mos(c, loss + more, delay) <= base);
                prop_assert!(mos(c, loss, delay + later) <= base);
            }
        }

        #[test]
        fn seq_loss_matches_the_gaps(start in any::<u16>(), gaps in proptest::collection::vec(0u16..5, 1..300)) {
            let mut s = SeqState::default();
            let mut seq = start;
            let mut lost = 0u64;
            s.update(seq);
            for g in gaps {
                seq = seq.wrapping_add(g + 1);
                lost += u64::from(g);
                s.update(seq);
            }
            prop_assert_eq!(s.lost(), lost);
        }
    }
}
