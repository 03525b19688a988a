//! Palisade's normalization: per-trunk rules that adapt messages to what
//! each peer expects, and the dry-runs behind `palisade normalize` (one
//! trunk's stage on a message, or a message through the whole engine:
//! [`through_engine`]).
//!
//! Owns: running the rule program the configuration describes (profiles of
//! ordered rules: match conditions, then header, parameter, number, status and
//! allow-list actions), the privacy policy (`Privacy: id` toward untrusted
//! trunks), per-rule counters, and the engine [`Stage`](palisade_b2bua::Stage)s
//! that apply them on a trunk's inbound and outbound messages. Each rule sees
//! what the rules before it changed; the result is recorded as codec
//! [`Editor`](palisade_sip::Editor) edits, so untouched header lines leave
//! byte-exact. A result that would not parse, or that would change Call-ID,
//! CSeq, a tag or the Via branch, is never sent: the offending rule is undone
//! and reported.
//!
//! Does not own: the schema, its validation and error locations (the config
//! crate's `normalization` module compiles regexes and resolves names at
//! load, so nothing here can fail or compile at run time), which headers
//! cross between legs (`pass_headers`, the engine), or the engine itself.
//!
//! Hand-written because no maintained crate applies SIP manipulation rules;
//! the one dependency beyond the workspace's own crates is `regex`, and
//! `serde_json` for the dry-run's `--json` report. The unified diff of the
//! dry-run is a small LCS over message lines (messages are at most a few
//! hundred lines), not worth a dependency.

mod dryrun;
#[doc(hidden)]
pub mod fuzz;
mod number;
mod program;
mod stage;
mod through;
mod work;

pub use dryrun::{DryRun, DryRunError, dry_run, prepare_input, render_fired, unified_diff};
pub use program::{
    ANONYMOUS_FROM, Fired, PRIVACY_PROFILE, PRIVACY_RULE, Program, RuleCount, RunContext,
};
pub use stage::{NormalizeStage, install, rule_direction, stages_for};
pub use through::{EngineRun, FiredOn, through_engine};
