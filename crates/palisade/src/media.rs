//! Media anchoring wiring: the relay threads, their report channel, and the
//! media manager the engine calls.
//!
//! The relay reports on a bounded std channel (its threads never block on
//! it, see `palisade_relay::Report`); the engine task drains it on every
//! turn and at least every `engine_loop::REPORT_POLL`, so a report costs no
//! thread wakeup.

use std::sync::mpsc::{Receiver, sync_channel};

use palisade_config::{Config, NftMode};
use palisade_media::SharedMedia;
use palisade_nft::media::{Direction, MediaOffload, MediaTableSpec};
use palisade_nft::{Nft, Ports};
use palisade_relay::{
    FlowCounters, OffloadConfig, OffloadFlow, OffloadOp, OffloadStream, Offloader, Relay,
    RelayConfig, RelayControl, Report,
};
use tracing::{info, warn};

use crate::error::AppError;

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
    /// The media table, when the kernel forwards plain RTP.
    kernel_table: Option<Nft>,
}

impl MediaRuntime {
    /// Stops the relay (closing every session it still has, and taking
    /// every stream back from the kernel), then deletes the media table.
    /// Blocks while the threads are joined: call it off the async workers.
    pub fn stop(self) {
        self.relay.stop();
        if let Some(nft) = self.kernel_table
            && let Err(e) = nft.remove()
        {
            warn!(error = %e, table = %nft.table(), "cannot delete the media nftables table");
        }
    }
}

/// The kernel side of [`palisade_relay::offload`]: the media nftables table,
/// changed over netlink.
#[derive(Debug)]
struct KernelOffload(MediaOffload);

/// A stream's two directions as the media table holds them.
fn directions(s: &OffloadStream) -> [Direction; 2] {
    [
        Direction {
            peer: s.a.peer,
            local: s.a.local,
            out_local: s.b.local,
            out_peer: s.b.peer,
        },
        Direction {
            peer: s.b.peer,
            local: s.b.local,
            out_local: s.a.local,
            out_peer: s.a.peer,
        },
    ]
}

impl Offloader for KernelOffload {
    fn apply(&mut self, ops: &[OffloadOp]) -> Result<(), String> {
        let (mut add, mut remove) = (Vec::new(), Vec::new());
        for op in ops {
            match op {
                OffloadOp::Add(s) => add.extend(directions(s)),
                OffloadOp::Remove(s) => remove.extend(directions(s)),
            }
        }
        self.0.apply(&add, &remove).map_err(|e| e.to_string())
    }

    fn counters(&mut self, out: &mut Vec<FlowCounters>) -> Result<(), String> {
        let mut v = Vec::new();
        self.0.counters(&mut v).map_err(|e| e.to_string())?;
        out.extend(v.into_iter().map(|c| FlowCounters {
            flow: OffloadFlow {
                peer: c.peer,
                local: c.local,
            },
            packets: c.packets,
            bytes: c.bytes,
        }));
        Ok(())
    }
}

/// The media table's name: the guard's table name with `_media`.
pub fn kernel_table_name(config: &Config) -> String {
    format!("{}_media", config.guard().nftables_table)
}

/// Whether the kernel routes between interfaces for this family (needed
/// to forward a stream whose peers are not on this host).
fn forwarding(path: &str) -> bool {
    std::fs::read_to_string(path).is_ok_and(|s| s.trim() == "1")
}

/// What the relay needs for kernel forwarding, and the table to delete
/// at the end.
type KernelSetup = (OffloadConfig, Box<dyn Offloader>, Nft);

/// Installs the media table and opens its netlink socket when
/// `media.kernel_forwarding` asks for it. `auto` falls back to relaying
/// every packet (said loudly); `on` refuses to start.
fn kernel_offload(config: &Config) -> Result<Option<KernelSetup>, AppError> {
    let m = config.media();
    if m.kernel_forwarding == NftMode::Off {
        return Ok(None);
    }
    let name = kernel_table_name(config);
    let mut local = Vec::new();
    let mut rtp_ports: u32 = 0;
    for z in config.zones() {
        local.push((
            z.media.address,
            Ports {
                first: z.media.port_min,
                last: z.media.port_max,
            },
        ));
        rtp_ports += (u32::from(z.media.port_max) - u32::from(z.media.port_min)) / 2 + 1;
    }
    let spec = MediaTableSpec {
        name: name.clone(),
        local,
        // Each stream holds two RTP ports, one per leg.
        max_streams: rtp_ports / 2 + 1,
        dscp: m.dscp_rtp,
    };
    let nft = Nft::new(&name);
    let opened = nft
        .install_media(&spec)
        .and_then(|()| MediaOffload::open(&name));
    match opened {
        Ok(offload) => {
            let cfg = OffloadConfig {
                after: m.kernel_forwarding_after,
                forward_v4: forwarding("/proc/sys/net/ipv4/ip_forward"),
                forward_v6: forwarding("/proc/sys/net/ipv6/conf/all/forwarding"),
                ..OffloadConfig::default()
            };
            info!(
                table = %format!("inet {name}"),
                after_ms = cfg.after.as_millis() as u64,
                routed_v4 = cfg.forward_v4,
                routed_v6 = cfg.forward_v6,
                "kernel forwarding of plain RTP on"
            );
            if !cfg.forward_v4 || !cfg.forward_v6 {
                warn!(
                    ipv4 = cfg.forward_v4,
                    ipv6 = cfg.forward_v6,
                    "kernel forwarding: routing is off for a family (net.ipv4.ip_forward, \
                     net.ipv6.conf.all.forwarding); its streams with peers on other hosts \
                     stay in Palisade"
                );
            }
            Ok(Some((cfg, Box::new(KernelOffload(offload)), nft)))
        }
        Err(e) if m.kernel_forwarding == NftMode::On => {
            Err(AppError::KernelForwarding(e.to_string()))
        }
        Err(e) => {
            let _ = nft.remove();
            warn!(
                error = %e,
                "kernel forwarding unavailable (media.kernel_forwarding: auto): every RTP packet \
                 is relayed in Palisade; run as root or with CAP_NET_ADMIN, with conntrack NAT"
            );
            Ok(None)
        }
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
) -> Result<(MediaRuntime, EngineMedia, Receiver<Report>), AppError> {
    let (report_tx, report_rx) = sync_channel(REPORT_CAPACITY);
    let (offload, kernel_table) = match kernel_offload(config)? {
        Some((cfg, offloader, nft)) => (Some((cfg, offloader)), Some(nft)),
        None => (None, None),
    };
    let started = Relay::start_with_offload(relay_config(config), report_tx, offload);
    let (relay, control) = match started {
        Ok(x) => x,
        Err(e) => {
            if let Some(nft) = kernel_table {
                let _ = nft.remove();
            }
            return Err(AppError::Relay(e));
        }
    };
    let media = SharedMedia::new(config, Box::new(control.clone()), seed);
    Ok((
        MediaRuntime {
            relay,
            kernel_table,
        },
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
