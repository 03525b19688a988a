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
