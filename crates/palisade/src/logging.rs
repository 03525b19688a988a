//! The process logger: `tracing-subscriber` on stderr, text or JSON.
//!
//! `logging.level` is an `EnvFilter` directive; `RUST_LOG`, when set, wins
//! over it (and then SIGHUP leaves the level alone). The filter sits behind a
//! reload handle so a SIGHUP can change the level; the format is fixed at
//! start (changing it needs a restart, as `Config::reload_check` says).

use std::io::IsTerminal;

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
                    .with_writer(std::io::stderr)
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
                    .with_writer(std::io::stderr),
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
