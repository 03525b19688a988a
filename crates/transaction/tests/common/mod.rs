//! Shared helpers for the integration tests: a virtual clock and an engine
//! loop that fires every deadline at its own instant.
#![allow(dead_code)] // each test binary uses a different subset

use std::time::{Duration, Instant};

use bytes::Bytes;
use palisade_transaction::{Event, Machine};

/// The origin of the virtual clock. Tests read the real clock once, here,
/// and then only add durations to it.
#[allow(clippy::disallowed_methods)] // origin of a virtual clock, see above
pub fn origin() -> Instant {
    Instant::now()
}

pub fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

pub fn s(n: u64) -> Duration {
    Duration::from_secs(n)
}

/// What a machine put out, with times as offsets from the origin.
#[derive(Debug, Default)]
pub struct Log {
    pub tx: Vec<(Duration, Bytes)>,
    pub events: Vec<(Duration, Event)>,
}

impl Log {
    /// Offsets of the transmissions.
    pub fn tx_times(&self) -> Vec<Duration> {
        self.tx.iter().map(|(t, _)| *t).collect()
    }

    /// Offsets of the transmissions of `msg`.
    pub fn tx_times_of(&self, msg: &[u8]) -> Vec<Duration> {
        self.tx
            .iter()
            .filter(|(_, b)| b.as_ref() == msg)
            .map(|(t, _)| *t)
            .collect()
    }

    pub fn tx_bytes(&self) -> Vec<Bytes> {
        self.tx.iter().map(|(_, b)| b.clone()).collect()
    }

    pub fn event_list(&self) -> Vec<Event> {
        self.events.iter().map(|(_, e)| *e).collect()
    }

    pub fn extend(&mut self, other: Log) {
        self.tx.extend(other.tx);
        self.events.extend(other.events);
    }
}

/// Drains what `m` has queued, stamping it with `at`.
pub fn drain<M: Machine>(m: &mut M, t0: Instant, at: Instant) -> Log {
    let mut log = Log::default();
    while let Some(b) = m.poll_transmit() {
        log.tx.push((at - t0, b));
    }
    while let Some(e) = m.poll_event() {
        log.events.push((at - t0, e));
    }
    log
}

/// Runs `m` like an engine from `now` up to and including `until`: each
/// deadline fires at its own instant, and output is drained after each.
pub fn run_until<M: Machine>(m: &mut M, t0: Instant, now: Instant, until: Instant) -> Log {
    let mut log = drain(m, t0, now);
    for _ in 0..100_000 {
        let Some(d) = m.poll_timeout() else { break };
        if d > until {
            break;
        }
        let at = d.max(now);
        m.handle_timeout(at);
        if let Some(next) = m.poll_timeout() {
            assert!(next > at, "deadline did not move past the fired timer");
        }
        log.extend(drain(m, t0, at));
    }
    log
}

/// Durations from fractional seconds, for readable schedules.
pub fn secs(list: &[f64]) -> Vec<Duration> {
    list.iter().map(|x| Duration::from_secs_f64(*x)).collect()
}
