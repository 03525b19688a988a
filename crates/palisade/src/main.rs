//! `palisade`: the session border controller's process.
//!
//! Owns the process lifecycle and the wiring between the library crates: the
//! command line (`run`, `check-config`), loading the configuration before
//! anything is bound, the tokio runtime, the logger (`tracing-subscriber`,
//! text or JSON, level from `logging.level` or `RUST_LOG`), the listeners
//! (one per zone and transport, [`listeners::ListenerMap`]), the media relay
//! threads and the media manager installed in the engine ([`media`]), the
//! single task that owns the sans-IO call engine and feeds it messages,
//! timers, relay reports and the clock ([`engine_loop`]), Unix signals (SIGTERM/SIGINT drain, SIGHUP
//! reload), the periodic stats line, the metric names the admin endpoint
//! serves ([`metrics`]), and exit codes.
//!
//! Does not own: SIP parsing, transactions, routing or any call logic
//! (`palisade-b2bua`), SDP and media policy (`palisade-media`), RTP
//! (`palisade-relay`), sockets and framing (`palisade-transport`), the
//! configuration schema and its rules (`palisade-config`), HTTP
//! (`palisade-admin`). This crate only
//! decides when those run and what gets logged.
//!
//! Exit codes: 0 success, 1 internal error, 2 invalid configuration (and, from
//! clap, an invalid command line), 3 a listener (or `admin.listen`) could not be bound, 4
//! (`normalize`) the message cannot be read or does not parse, 5
//! (`normalize --from-trunk`) the message did not reach the trunk.
//!
//! This binary is the one place that reads the clock: [`now`].

/// mimalloc instead of glibc malloc: about a tenth fewer instructions per
/// call on the signalling path, which allocates per message (glibc's free
/// lists, consolidation and heap trimming cost more; `bench/RESULTS.md`).
/// Built with `no_thp`: with transparent huge pages mimalloc's purge and
/// reuse of freed memory made the kernel zero a 2 MiB page dozens of times a
/// second (6% of the process's CPU in `clear_page_erms`).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod admin;
mod cli;
mod edge;
mod engine_loop;
mod error;
mod guard_io;
mod listeners;
mod log_line;
mod logging;
mod media;
mod metrics;
mod normalize;
mod run;

use std::path::Path;
use std::process::ExitCode;
use std::time::Instant;

use clap::Parser;

use crate::cli::{Cli, Command};
use crate::error::{AppError, EXIT_OK};

/// The current time, for the engine and the shutdown sequence.
///
/// The workspace bans `Instant::now` so protocol crates take time as an
/// argument; the binary is where the time comes from, and this is the only
/// call site.
#[allow(clippy::disallowed_methods)]
pub(crate) fn now() -> Instant {
    Instant::now()
}

/// Wall-clock time since the Unix epoch (zero if the clock is before it):
/// log timestamps, binding expiry, business hours, alert records. The only
/// `SystemTime::now` call site.
#[allow(clippy::disallowed_methods)]
pub(crate) fn unix_time() -> std::time::Duration {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
}

/// [`unix_time`] in milliseconds, for the guard's business hours and the
/// alert records.
pub(crate) fn unix_ms() -> i64 {
    i64::try_from(unix_time().as_millis()).unwrap_or(i64::MAX)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run(args) => run::run(&args.config),
        Command::CheckConfig(args) => check_config(&args.file),
        Command::Normalize(args) => normalize::run(&args),
        Command::Alerts(args) => admin::alerts(&args),
        Command::Bans(args) => admin::bans(&args),
    };
    match result {
        Ok(()) => ExitCode::from(EXIT_OK),
        Err(e) => {
            match &e {
                // Already `FILE:LINE:COL: field: message`, one per line.
                AppError::Config(_) => eprintln!("{e}"),
                _ => eprintln!("palisade: error: {e}"),
            }
            ExitCode::from(e.exit_code())
        }
    }
}

/// `palisade check-config FILE`.
fn check_config(path: &Path) -> Result<(), AppError> {
    let cfg = palisade_config::load(path)?;
    println!(
        "{}: ok ({} zones, {} trunks, {} routes)",
        path.display(),
        cfg.zones().len(),
        cfg.trunks().len(),
        cfg.routes().len()
    );
    Ok(())
}
