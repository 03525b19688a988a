//! Media anchoring wiring: the relay threads, their report channel, and the
//! media manager the engine calls.
//!
//! The relay reports on a bounded std channel (its threads never block on
//! it, see `palisade_relay::Report`); the engine task drains it on every
//! turn and at least every `engine_loop::REPORT_POLL`, so a report costs no
//! thread wakeup.

use std::io;
use std::sync::mpsc::{Receiver, sync_channel};

use palisade_config::Config;
use palisade_media::SharedMedia;
use palisade_relay::{Relay, RelayConfig, RelayControl, Report};

/// Bound of the channel the relay threads report on.
pub const REPORT_CAPACITY: usize = 16_384;
/// Commands queued per relay thread before the manager sees `Busy` (503).
pub const RELAY_COMMAND_QUEUE: usize = 4096;

/// What the engine task needs besides the reports: the manager (also
/// installed as the engine's media hook) and the relay's counters.
#[derive(Debug)]
pub struct EngineMedia {
    /// The manager.
    pub media: SharedMedia,
    /// The relay's control handle (for its counters).
    pub relay: RelayControl,
}

/// The running relay.
#[derive(Debug)]
pub struct MediaRuntime {
    relay: Relay,
}

impl MediaRuntime {
    /// Stops the relay (closing every session it still has). Blocks while
    /// the threads are joined: call it off the async workers.
    pub fn stop(self) {
        self.relay.stop();
    }
}

/// The relay settings from `config.media()`.
pub fn relay_config(config: &Config) -> RelayConfig {
    let m = config.media();
    let mut cfg = RelayConfig::default();
    if m.relay_threads > 0 {
        cfg.threads = m.relay_threads;
    }
    cfg.timeout = m.timeout;
    cfg.hold_timeout = m.hold_timeout;
    cfg.dscp = m.dscp_rtp;
    cfg.command_queue = RELAY_COMMAND_QUEUE;
    cfg
}

/// Starts the relay threads and builds the manager (keys and session ids
/// from `seed`).
pub fn start(
    config: &Config,
    seed: [u8; 32],
) -> io::Result<(MediaRuntime, EngineMedia, Receiver<Report>)> {
    let (report_tx, report_rx) = sync_channel(REPORT_CAPACITY);
    let (relay, control) = Relay::start(relay_config(config), report_tx)?;
    let media = SharedMedia::new(config, Box::new(control.clone()), seed);
    Ok((
        MediaRuntime { relay },
        EngineMedia {
            media,
            relay: control,
        },
        report_rx,
    ))
}

/// A stream direction's quality at call end, from its estimated MOS
/// (ITU-T G.107 user-satisfaction bands, as MOS).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MosBand {
    /// MOS >= 4.0: users satisfied.
    Good,
    /// 3.6 <= MOS < 4.0: some users dissatisfied.
    Fair,
    /// 3.1 <= MOS < 3.6: many users dissatisfied.
    Poor,
    /// MOS < 3.1: nearly all users dissatisfied.
    Bad,
    /// No RTP was received in this direction (no estimate).
    None,
}

impl MosBand {
    /// Every band, in label order.
    pub const ALL: [MosBand; 5] = [
        MosBand::Good,
        MosBand::Fair,
        MosBand::Poor,
        MosBand::Bad,
        MosBand::None,
    ];

    /// The band of `d`.
    pub fn of(d: &palisade_relay::DirectionStats) -> Self {
        match d.mos {
            _ if d.packets == 0 => MosBand::None,
            None => MosBand::None,
            Some(m) if m >= 4.0 => MosBand::Good,
            Some(m) if m >= 3.6 => MosBand::Fair,
            Some(m) if m >= 3.1 => MosBand::Poor,
            Some(_) => MosBand::Bad,
        }
    }

    /// The metric label value.
    pub fn as_str(self) -> &'static str {
        match self {
            MosBand::Good => "good",
            MosBand::Fair => "fair",
            MosBand::Poor => "poor",
            MosBand::Bad => "bad",
            MosBand::None => "none",
        }
    }
}

/// Media quality of ended streams, for `/metrics`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QualityTally {
    /// Stream directions by [`MosBand`] (index of `MosBand::ALL`).
    pub directions: [u64; 5],
    /// RTP packets received on ended streams.
    pub packets: u64,
    /// RTP packets lost on ended streams (from sequence numbers).
    pub lost: u64,
}

impl QualityTally {
    /// Counts the final statistics of a session's streams.
    pub fn record(&mut self, streams: &[palisade_relay::StreamStats]) {
        for d in streams.iter().flat_map(|s| [&s.from_a, &s.from_b]) {
            // `MosBand::ALL` lists the bands in declaration order.
            if let Some(n) = self.directions.get_mut(MosBand::of(d) as usize) {
                *n += 1;
            }
            self.packets = self.packets.saturating_add(d.packets);
            self.lost = self.lost.saturating_add(d.lost);
        }
    }

    /// `(label, count)` per band.
    pub fn by_band(&self) -> [(&'static str, u64); 5] {
        MosBand::ALL.map(|b| (b.as_str(), self.directions[b as usize]))
    }
}

#[cfg(test)]
mod tests {
    use palisade_relay::{DirectionStats, StreamStats};

    use super::*;

    fn dir(packets: u64, lost: u64, mos: Option<f32>) -> DirectionStats {
        DirectionStats {
            packets,
            lost,
            mos,
            ..Default::default()
        }
    }

    #[test]
    fn bands_follow_the_mos_thresholds() {
        for (i, b) in MosBand::ALL.iter().enumerate() {
            assert_eq!(*b as usize, i, "ALL is in declaration order");
        }
        assert_eq!(MosBand::of(&dir(10, 0, Some(4.4))), MosBand::Good);
        assert_eq!(MosBand::of(&dir(10, 0, Some(4.0))), MosBand::Good);
        assert_eq!(MosBand::of(&dir(10, 0, Some(3.99))), MosBand::Fair);
        assert_eq!(MosBand::of(&dir(10, 0, Some(3.6))), MosBand::Fair);
        assert_eq!(MosBand::of(&dir(10, 0, Some(3.2))), MosBand::Poor);
        assert_eq!(MosBand::of(&dir(10, 0, Some(2.0))), MosBand::Bad);
        assert_eq!(MosBand::of(&dir(10, 0, None)), MosBand::None);
        // A stale estimate without packets is no estimate.
        assert_eq!(MosBand::of(&dir(0, 0, Some(4.4))), MosBand::None);
    }

    #[test]
    fn tally_counts_both_directions_of_every_stream() {
        let mut t = QualityTally::default();
        t.record(&[
            StreamStats {
                stream: 0,
                from_a: dir(100, 2, Some(4.3)),
                from_b: dir(50, 30, Some(2.5)),
            },
            StreamStats {
                stream: 1,
                from_a: dir(0, 0, None),
                from_b: dir(10, 0, Some(3.7)),
            },
        ]);
        assert_eq!(
            t.by_band(),
            [
                ("good", 1),
                ("fair", 1),
                ("poor", 0),
                ("bad", 1),
                ("none", 1)
            ]
        );
        assert_eq!((t.packets, t.lost), (160, 32));
    }
}
