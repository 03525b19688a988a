//! The process logger: `tracing-subscriber` on stderr, text or JSON.
//!
//! `logging.level` is an `EnvFilter` directive; `RUST_LOG`, when set, wins
//! over it (and then SIGHUP leaves the level alone). The filter sits behind a
//! reload handle so a SIGHUP can change the level; the format is fixed at
//! start (changing it needs a restart, as `Config::reload_check` says).
//!
//! Lines go to stderr through [`BatchedStderr`]: one write(2) per line,
//! except on a thread that opened a [`hold`] (the engine loop holds one for
//! each turn), where lines are collected and written with one write(2). What
//! a hold collected stays in memory past its turn, for at most
//! `logging.batch_ms` (default 100 ms; 0: written when the turn ends) or
//! [`BATCH_LIMIT_BYTES`], whichever comes first: the loop wakes at
//! [`held_deadline`] to write it, and a line at `warn` or above is never
//! held. At 250 calls/s this turns about 750 writes per second into ten
//! (measured: 4-5% of the signalling thread's CPU was the log file's write
//! path). Lines are delayed by at most `batch_ms`; [`flush_held`] writes them
//! at once (the process calls it when the engine ends, and the panic hook
//! before it reports).

use std::cell::RefCell;
use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use palisade_config::{LogFormat, Logging};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Registry, fmt, reload};

use crate::error::AppError;

/// Changes the level of the installed logger.
#[derive(Debug)]
pub struct LogControl {
    handle: reload::Handle<EnvFilter, Registry>,
    /// The filter came from `RUST_LOG`: configuration levels are ignored.
    from_env: bool,
}

/// Installs the global logger for `cfg`.
pub fn init(cfg: &Logging) -> Result<LogControl, AppError> {
    let from_config = || {
        EnvFilter::try_new(&cfg.level)
            .map_err(|e| AppError::Logging(format!("logging.level {:?}: {e}", cfg.level)))
    };
    let (filter, from_env) = match std::env::var(EnvFilter::DEFAULT_ENV) {
        Ok(directive) if !directive.trim().is_empty() => match EnvFilter::try_new(&directive) {
            Ok(f) => (f, true),
            Err(e) => {
                // The logger is not up yet: stderr is the only place to say it.
                eprintln!(
                    "palisade: ignoring {}={directive:?} ({e}); using logging.level",
                    EnvFilter::DEFAULT_ENV
                );
                (from_config()?, false)
            }
        },
        _ => (from_config()?, false),
    };
    let (filter, handle) = reload::Layer::new(filter);
    let terminal = std::io::stderr().is_terminal();
    let (tty, text, json) = match cfg.format {
        // On a terminal, tracing-subscriber's own format with colours.
        LogFormat::Text if terminal => (
            Some(fmt::layer().with_writer(BatchedStderr).with_ansi(true)),
            None,
            None,
        ),
        // Elsewhere the same text, written by the leaner `LineFormat`.
        LogFormat::Text => (
            None,
            Some(
                fmt::layer()
                    .event_format(crate::log_line::LineFormat)
                    .with_writer(BatchedStderr),
            ),
            None,
        ),
        LogFormat::Json => (
            None,
            None,
            Some(
                fmt::layer()
                    .json()
                    .flatten_event(true)
                    .with_current_span(false)
                    .with_span_list(false)
                    .with_writer(BatchedStderr),
            ),
        ),
    };
    tracing_subscriber::registry()
        .with(filter)
        .with(tty)
        .with(text)
        .with(json)
        .try_init()
        .map_err(|e| AppError::Logging(e.to_string()))?;
    // Lines a `hold` kept go out before the panic's own report.
    let report_panic = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        flush_held();
        report_panic(info);
    }));
    if from_env {
        tracing::info!(
            "{} is set: it overrides logging.level",
            EnvFilter::DEFAULT_ENV
        );
    }
    set_batch(cfg.batch);
    Ok(LogControl { handle, from_env })
}

/// Applies `logging.batch_ms` (at start and on reload).
fn set_batch(batch: Duration) {
    let ms = u64::try_from(batch.as_millis()).unwrap_or(u64::MAX);
    HOLD_MS.store(ms, Ordering::Relaxed);
}

impl LogControl {
    /// Applies a reloaded `logging.batch_ms`.
    pub fn set_batch(&self, batch: Duration) {
        set_batch(batch);
    }

    /// Applies a reloaded `logging.level` (unless `RUST_LOG` is in charge).
    pub fn set_level(&self, level: &str) {
        if self.from_env {
            tracing::debug!(
                "{} is set: logging.level from the file is not applied",
                EnvFilter::DEFAULT_ENV
            );
            return;
        }
        let applied = EnvFilter::try_new(level)
            .map_err(|e| e.to_string())
            .and_then(|f| self.handle.reload(f).map_err(|e| e.to_string()));
        if let Err(e) = applied {
            tracing::warn!(level, error = %e, "could not apply logging.level");
        }
    }
}

/// Collected lines beyond this are written at once, mid-turn.
pub const BATCH_LIMIT_BYTES: usize = 64 * 1024;

/// The longest a line stays in memory after the [`hold`] that collected it,
/// in milliseconds (`logging.batch_ms`).
static HOLD_MS: AtomicU64 = AtomicU64::new(100);

fn hold_for() -> Duration {
    Duration::from_millis(HOLD_MS.load(Ordering::Relaxed))
}

/// This thread's collected lines.
#[derive(Debug, Default)]
struct Batch {
    /// Open [`hold`] guards (nested ones join the outer).
    depth: u32,
    /// Lines not yet written.
    buf: Vec<u8>,
    /// When the oldest held line was kept past its turn; `None`: nothing held.
    held_since: Option<Instant>,
}

impl Batch {
    /// Whether a line logged now joins `buf` (keeps lines in order).
    fn collecting(&self) -> bool {
        self.depth > 0 || !self.buf.is_empty()
    }

    fn take(&mut self) -> Vec<u8> {
        self.held_since = None;
        std::mem::take(&mut self.buf)
    }
}

thread_local! {
    static BATCH: RefCell<Batch> = RefCell::new(Batch::default());
}

/// Collects the lines this thread logs until the guard drops; they are
/// written then if the oldest of them is `logging.batch_ms` old, else kept
/// until [`held_deadline`]. Nested holds join the outer one.
pub fn hold() -> BatchGuard {
    BATCH.with(|b| b.borrow_mut().depth += 1);
    BatchGuard
}

/// Ends a [`hold`] when dropped.
#[derive(Debug)]
pub struct BatchGuard;

impl Drop for BatchGuard {
    fn drop(&mut self) {
        let due = BATCH.with(|b| {
            let mut b = b.borrow_mut();
            b.depth = b.depth.saturating_sub(1);
            if b.depth > 0 || b.buf.is_empty() {
                return None;
            }
            let now = crate::now();
            let since = *b.held_since.get_or_insert(now);
            (now.saturating_duration_since(since) >= hold_for()).then(|| b.take())
        });
        if let Some(buf) = due {
            write_stderr(&buf);
        }
    }
}

/// When the lines this thread holds must be written (`None`: none held).
pub fn held_deadline() -> Option<Instant> {
    BATCH.with(|b| b.borrow().held_since.map(|t| t + hold_for()))
}

/// Writes whatever this thread collected, now.
pub fn flush_held() {
    let buf = BATCH.with(|b| b.borrow_mut().take());
    write_stderr(&buf);
}

fn write_stderr(buf: &[u8]) {
    if !buf.is_empty() {
        // Nowhere left to report a failed log write.
        let _ = std::io::stderr().lock().write_all(buf);
    }
}

/// The logger's writer: stderr, or this thread's open [`hold`].
#[derive(Debug, Clone, Copy)]
pub struct BatchedStderr;

/// One log line on its way out (the formatter writes a whole line at once).
/// `urgent`: a `warn` or `error` line, written with what is held before it.
#[derive(Debug)]
pub struct LineWriter {
    urgent: bool,
}

impl Write for LineWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        // Some(lines) to write now; None when the hold took the line.
        let direct = BATCH.with(|b| {
            let mut b = b.borrow_mut();
            if !b.collecting() {
                return Some(None);
            }
            b.buf.extend_from_slice(data);
            (self.urgent || b.buf.len() >= BATCH_LIMIT_BYTES).then(|| Some(b.take()))
        });
        match direct {
            Some(Some(full)) => write_stderr(&full),
            Some(None) => write_stderr(data),
            None => {}
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> fmt::MakeWriter<'a> for BatchedStderr {
    type Writer = LineWriter;

    fn make_writer(&'a self) -> Self::Writer {
        LineWriter { urgent: false }
    }

    fn make_writer_for(&'a self, meta: &tracing::Metadata<'_>) -> Self::Writer {
        LineWriter {
            urgent: *meta.level() <= tracing::Level::WARN,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn collected() -> Vec<u8> {
        BATCH.with(|b| b.borrow().buf.clone())
    }

    fn line(text: &[u8]) {
        LineWriter { urgent: false }.write_all(text).unwrap();
    }

    #[test]
    fn a_nested_hold_joins_the_outer_one() {
        {
            let _g = hold();
            line(b"one\n");
            {
                let _inner = hold();
                line(b"two\n");
            }
            assert_eq!(collected(), b"one\ntwo\n", "the inner hold joins the outer");
            assert_eq!(held_deadline(), None, "not held before the outer one ends");
        }
        assert!(held_deadline().is_some());
        flush_held();
    }

    #[test]
    fn a_hold_keeps_lines_past_its_turn_until_the_deadline_or_an_urgent_line() {
        {
            let _g = hold();
            line(b"one\n");
        }
        assert_eq!(collected(), b"one\n", "held past the turn");
        let deadline = held_deadline().expect("a deadline while lines are held");
        assert!(deadline <= crate::now() + hold_for());
        line(b"two\n");
        assert_eq!(
            collected(),
            b"one\ntwo\n",
            "a line outside a batch keeps its order"
        );
        LineWriter { urgent: true }.write_all(b"warn\n").unwrap();
        assert!(collected().is_empty(), "an urgent line writes what is held");
        assert_eq!(held_deadline(), None);
        {
            let _g = hold();
            line(b"three\n");
        }
        flush_held();
        assert!(collected().is_empty() && held_deadline().is_none());
        // Outside any batch with nothing held: straight out.
        line(b"four\n");
        assert!(collected().is_empty());
    }
}
