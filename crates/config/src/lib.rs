//! Palisade's configuration: one YAML file, typed and validated at load.
//!
//! Owns: reading the file, the schema (documented field by field in
//! `configs/reference.yaml`), every default and every rule, and the lookups the
//! engine needs on the result ([`Config::trunk_for_source`],
//! [`Config::route_for`], [`Config::reload_check`]). Errors point at the file,
//! line, column and field path of the offending value.
//!
//! Does not own: watching the file or handling SIGHUP (the binary does, calling
//! [`load`] and [`Config::reload_check`]), applying settings to sockets or
//! loggers, or any SIP processing.
//!
//! Two layers ("parse, don't validate"): private serde structs mirror the YAML
//! (`raw`), with `serde_saphyr::Spanned` on values a rule may reject; `validate`
//! turns them into the public [`Config`], with names resolved to [`ZoneId`] and
//! [`TrunkId`], addresses parsed, times as `Duration`s and regexes compiled.
//! The YAML parser is `serde-saphyr` (panic-free, located errors);
//! `serde_path_to_error` supplies field paths for type errors; CIDRs are
//! `ipnet`; `logging.level` is checked with `tracing-subscriber`'s own parser.

mod edge;
mod error;
mod guard;
mod model;
pub mod normalization;
mod raw;
mod reload;
mod validate;

use std::io::Read;
use std::path::Path;

use serde::Deserialize;

pub use edge::{
    Cac, CallAdmission, DigestAlgorithm, Keepalive, KeepaliveMethod, Nat, Registrar, RegistrarUser,
    Registration, Secret, TrunkAuth,
};
pub use error::{ConfigError, Problem};
pub use guard::{
    Alerts, DEFAULT_EMERGENCY_NUMBERS, DEFAULT_HIGH_RISK_PREFIXES, DEFAULT_LIMITS,
    DEFAULT_SCANNER_USER_AGENTS, DailySpan, Fraud, FraudAction, FraudRule, Guard, GuardMode,
    KernelMeter, Level, NftMode, RateLimit, RuleKind, Scanners, SourceLimits, SubjectKind,
    TrustedPolicy, WEEKDAYS, When,
};
pub use ipnet::IpNet;
pub use model::{
    Admin, Config, Destination, Dns, DnsMember, Health, Latching, LogFormat, Logging, Media,
    MediaRange, Member, Node, Probe, Route, RtcpMuxPolicy, Shutdown, Sip, SrtpPolicy, Trunk,
    TrunkId, TrunkMedia, Zone, ZoneId,
};
pub use normalization::{Normalization, ProfileId, TrunkNormalization};
pub use palisade_sip::Transport;

/// Files larger than this are refused before parsing (a real configuration
/// with 10,000 routes is about 2 MB).
pub const MAX_FILE_BYTES: u64 = 16 * 1024 * 1024;

/// Reads and validates the configuration at `path`. Errors name the file as
/// `path` was given.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let file = path.display().to_string();
    let read_err = |source| ConfigError::Read {
        file: file.clone(),
        source,
    };
    let f = std::fs::File::open(path).map_err(read_err)?;
    let mut bytes = Vec::new();
    f.take(MAX_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(read_err)?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(read_err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("larger than {MAX_FILE_BYTES} bytes; not a configuration file"),
        )));
    }
    let text = String::from_utf8(bytes).map_err(|e| {
        read_err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!(
                "not UTF-8 (invalid byte at offset {})",
                e.utf8_error().valid_up_to()
            ),
        ))
    })?;
    load_str(&text, &file)
}

/// Validates configuration `text`; `source_name` is used as the file name in
/// errors.
pub fn load_str(text: &str, source_name: &str) -> Result<Config, ConfigError> {
    let raw = parse(text).map_err(|problem| ConfigError::Parse {
        file: source_name.to_owned(),
        problem,
    })?;
    validate::validate(raw).map_err(|problems| ConfigError::Invalid {
        file: source_name.to_owned(),
        problems,
    })
}

/// YAML text to the raw structs, tracking the field path for errors.
fn parse(text: &str) -> Result<raw::RawConfig, Problem> {
    let mut failed_at: Option<serde_path_to_error::Path> = None;
    let options = serde_saphyr::options! { with_snippet: false };
    let result = serde_saphyr::with_deserializer_from_str_with_options(text, options, |de| {
        let mut track = serde_path_to_error::Track::new();
        let res =
            raw::RawConfig::deserialize(serde_path_to_error::Deserializer::new(de, &mut track));
        if res.is_err() {
            failed_at = Some(track.path());
        }
        res
    });
    result.map_err(|e| {
        let typed = error::problem_from_yaml(&e, failed_at.as_ref(), text);
        // The typed pass reads events as it goes, so on broken YAML it can
        // stop at a symptom: a mapping cut short by bad indentation looks like
        // a missing field. Check the text is well-formed YAML, and report the
        // syntax error unless the typed error is a real one found before it.
        let options = serde_saphyr::options! { with_snippet: false };
        match serde_saphyr::from_str_with_options::<serde::de::IgnoredAny>(text, options) {
            Ok(_) => typed,
            Err(syntax) => {
                let syntax = error::problem_from_yaml(&syntax, None, text);
                let typed_first = (typed.line, typed.column) <= (syntax.line, syntax.column);
                if typed_first && !error::is_missing_field(&e) {
                    typed
                } else {
                    syntax
                }
            }
        }
    })
}

#[cfg(test)]
mod tests;
