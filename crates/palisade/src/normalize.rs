//! `palisade normalize`: the dry-run of a trunk's normalization.

use std::io::Read;
use std::sync::Arc;

use palisade_config::normalization::RuleDirection;
use palisade_normalize::{DryRunError, dry_run};

use crate::cli::{DirectionArg, NormalizeArgs};
use crate::error::AppError;

/// Largest message file read (the TCP cap's maximum).
const MAX_MESSAGE_FILE_BYTES: u64 = 1024 * 1024;

/// Loads the config, reads the message, runs the trunk's stage, prints the report.
pub fn run(args: &NormalizeArgs) -> Result<(), AppError> {
    let cfg = Arc::new(palisade_config::load(&args.config)?);
    let (what, raw) = match &args.file {
        Some(path) => {
            let what = path.display().to_string();
            let mut buf = Vec::new();
            std::fs::File::open(path)
                .and_then(|f| f.take(MAX_MESSAGE_FILE_BYTES).read_to_end(&mut buf))
                .map_err(|source| AppError::MessageRead {
                    what: what.clone(),
                    source,
                })?;
            (what, buf)
        }
        None => {
            let mut buf = Vec::new();
            std::io::stdin()
                .take(MAX_MESSAGE_FILE_BYTES)
                .read_to_end(&mut buf)
                .map_err(|source| AppError::MessageRead {
                    what: "standard input".into(),
                    source,
                })?;
            ("standard input".to_owned(), buf)
        }
    };
    let direction = match args.direction {
        DirectionArg::In => RuleDirection::In,
        DirectionArg::Out => RuleDirection::Out,
    };
    let result = dry_run(
        cfg,
        &args.trunk,
        direction,
        args.source_trunk.as_deref(),
        &raw,
    );
    let report = match result {
        Ok(r) => r,
        Err(e @ DryRunError::UnknownTrunk { .. }) => return Err(AppError::UnknownTrunk(e)),
        Err(e @ DryRunError::Parse { .. }) => {
            let _ = what;
            return Err(AppError::MessageParse(e));
        }
    };
    if args.json {
        println!("{}", report.json());
    } else {
        print!("{}", report.text_report());
    }
    Ok(())
}
