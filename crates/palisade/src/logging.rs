//! The process logger: `tracing-subscriber` on stderr, text or JSON.
//!
//! `logging.level` is an `EnvFilter` directive; `RUST_LOG`, when set, wins
//! over it (and then SIGHUP leaves the level alone). The filter sits behind a
//! reload handle so a SIGHUP can change the level; the format is fixed at
//! start (changing it needs a restart, as `Config::reload_check` says).
//!
//! Lines go to stderr through [`BatchedStderr`]: one write(2) per line,
//! except inside a [`batch`] (the engine loop holds one for each turn), where
//! the turn's lines are collected and written with one write(2) when the
//! turn ends. A busy engine logs several lines per call; batching them saves
//! a syscall per line on the signalling thread without delaying any line
//! beyond the turn that produced it.

use std::cell::RefCell;
use std::io::{IsTerminal, Write};

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
    let (text, json) = match cfg.format {
        LogFormat::Text => (
            Some(
                fmt::layer()
                    .with_writer(BatchedStderr)
                    .with_ansi(std::io::stderr().is_terminal()),
            ),
            None,
        ),
        LogFormat::Json => (
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
        .with(text)
        .with(json)
        .try_init()
        .map_err(|e| AppError::Logging(e.to_string()))?;
    if from_env {
        tracing::info!(
            "{} is set: it overrides logging.level",
            EnvFilter::DEFAULT_ENV
        );
    }
    Ok(LogControl { handle, from_env })
}

impl LogControl {
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

/// A batch larger than this is written at once, mid-turn.
const BATCH_LIMIT_BYTES: usize = 64 * 1024;

thread_local! {
    /// This thread's open batch, if any.
    static BATCH: RefCell<Option<Vec<u8>>> = const { RefCell::new(None) };
}

/// Collects the lines this thread logs until the guard drops, then writes
/// them with one write(2). Nested batches join the outer one.
pub fn batch() -> BatchGuard {
    let outer = BATCH.with(|b| {
        let mut b = b.borrow_mut();
        if b.is_some() {
            true
        } else {
            *b = Some(Vec::with_capacity(4096));
            false
        }
    });
    BatchGuard { outer }
}

/// Ends a [`batch`] when dropped.
#[derive(Debug)]
pub struct BatchGuard {
    outer: bool,
}

impl Drop for BatchGuard {
    fn drop(&mut self) {
        if self.outer {
            return;
        }
        if let Some(buf) = BATCH.with(|b| b.borrow_mut().take()) {
            write_stderr(&buf);
        }
    }
}

fn write_stderr(buf: &[u8]) {
    if !buf.is_empty() {
        // Nowhere left to report a failed log write.
        let _ = std::io::stderr().lock().write_all(buf);
    }
}

/// The logger's writer: stderr, or this thread's open [`batch`].
#[derive(Debug, Clone, Copy)]
pub struct BatchedStderr;

/// One log line on its way out (the formatter writes a whole line at once).
#[derive(Debug)]
pub struct LineWriter;

impl Write for LineWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        // Some(full batch) to write now; None when the batch took the line.
        let direct = BATCH.with(|b| match b.borrow_mut().as_mut() {
            Some(buf) => {
                buf.extend_from_slice(data);
                (buf.len() >= BATCH_LIMIT_BYTES).then(|| Some(std::mem::take(buf)))
            }
            None => Some(None),
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
        LineWriter
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_collects_until_it_ends() {
        {
            let _g = batch();
            LineWriter.write_all(b"one\n").unwrap();
            {
                let _inner = batch();
                LineWriter.write_all(b"two\n").unwrap();
            }
            let held = BATCH.with(|b| b.borrow().clone());
            assert_eq!(
                held.as_deref(),
                Some(&b"one\ntwo\n"[..]),
                "the inner batch joins the outer"
            );
        }
        assert!(
            BATCH.with(|b| b.borrow().is_none()),
            "written when the outer batch ends"
        );
    }
}
