//! Media anchoring wiring: the relay threads, the bridge that carries their
//! reports into the engine task, and the media manager the engine calls.
//!
//! The relay reports on a bounded std channel (its threads never block on
//! it); one small thread moves reports into a bounded tokio channel the
//! engine task selects on. That thread is the only place that may wait, and
//! it waits for the engine task, never the other way round.

use std::io;
use std::sync::mpsc::{Receiver, sync_channel};
use std::thread::JoinHandle;

use palisade_config::Config;
use palisade_media::SharedMedia;
use palisade_relay::{Relay, RelayConfig, RelayControl, Report};
use tokio::sync::mpsc;
use tracing::debug;

/// Bound of the channel the relay threads report on.
pub const REPORT_CAPACITY: usize = 16_384;
/// Bound of the channel from the bridge thread to the engine task.
pub const BRIDGE_CAPACITY: usize = 4096;
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

/// The running relay and its report bridge.
#[derive(Debug)]
pub struct MediaRuntime {
    relay: Relay,
    bridge: JoinHandle<()>,
}

impl MediaRuntime {
    /// Stops the relay (closing every session it still has) and the bridge.
    /// Blocks while the threads are joined: call it off the async workers.
    pub fn stop(self) {
        self.relay.stop();
        let _ = self.bridge.join();
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

/// Starts the relay threads and the report bridge, and builds the manager
/// (keys and session ids from `seed`).
pub fn start(
    config: &Config,
    seed: [u8; 32],
) -> io::Result<(MediaRuntime, EngineMedia, mpsc::Receiver<Report>)> {
    let (report_tx, report_rx) = sync_channel(REPORT_CAPACITY);
    let (relay, control) = Relay::start(relay_config(config), report_tx)?;
    let (bridge_tx, bridge_rx) = mpsc::channel(BRIDGE_CAPACITY);
    let bridge = match std::thread::Builder::new()
        .name("relay-reports".into())
        .spawn(move || bridge(report_rx, bridge_tx))
    {
        Ok(h) => h,
        Err(e) => {
            relay.stop();
            return Err(e);
        }
    };
    let media = SharedMedia::new(config, Box::new(control.clone()), seed);
    Ok((
        MediaRuntime { relay, bridge },
        EngineMedia {
            media,
            relay: control,
        },
        bridge_rx,
    ))
}

/// Moves reports until the relay threads are gone or the engine task is.
fn bridge(from: Receiver<Report>, to: mpsc::Sender<Report>) {
    while let Ok(r) = from.recv() {
        if to.blocking_send(r).is_err() {
            debug!("engine task gone: relay reports are no longer read");
            break;
        }
    }
}
