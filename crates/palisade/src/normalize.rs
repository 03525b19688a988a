//! `palisade normalize`: the dry-run of a trunk's normalization.

use std::io::Read;
use std::sync::Arc;

use palisade_config::normalization::RuleDirection;
use palisade_normalize::{DryRunError, dry_run, through_engine};

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
    if let Some(from) = &args.from_trunk {
        if direction != RuleDirection::Out {
            return Err(AppError::Usage(
                "--from-trunk shows what is sent to --trunk: use --direction out".into(),
            ));
        }
        return through(cfg, from, args, &raw);
    }
    let result = dry_run(
        cfg,
        &args.trunk,
        direction,
        args.source_trunk.as_deref(),
        &raw,
    );
    let report = match result {
        Ok(r) => r,
        Err(e @ (DryRunError::UnknownTrunk { .. } | DryRunError::NoSourceAddress { .. })) => {
            return Err(AppError::UnknownTrunk(e));
        }
        Err(e @ (DryRunError::Parse { .. } | DryRunError::NotARequest)) => {
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

/// A relay that takes every command and does nothing: the dry run opens
/// no sockets, but SDP is rewritten by the same media manager as in `run`.
#[derive(Debug)]
struct NoRelay;

impl palisade_media::RelaySink for NoRelay {
    fn send(&mut self, _cmd: palisade_relay::Command) -> Result<(), palisade_relay::Busy> {
        Ok(())
    }
}

/// `--from-trunk`: the message through the engine.
fn through(
    cfg: Arc<palisade_config::Config>,
    from: &str,
    args: &NormalizeArgs,
    raw: &[u8],
) -> Result<(), AppError> {
    let media: Option<Box<dyn palisade_b2bua::MediaHook>> = cfg.media().anchor.then(|| {
        Box::new(palisade_media::SharedMedia::new(
            &cfg,
            Box::new(NoRelay),
            [0x33; 32],
        )) as Box<dyn palisade_b2bua::MediaHook>
    });
    // The one clock reading of the dry run (the engine is sans-IO).
    let now = crate::now();
    let report = match through_engine(cfg, now, from, &args.trunk, raw, media) {
        Ok(r) => r,
        Err(e @ (DryRunError::UnknownTrunk { .. } | DryRunError::NoSourceAddress { .. })) => {
            return Err(AppError::UnknownTrunk(e));
        }
        Err(e) => return Err(AppError::MessageParse(e)),
    };
    if args.json {
        println!("{}", report.json());
    } else {
        print!("{}", report.text_report());
    }
    if report.delivered() {
        Ok(())
    } else {
        Err(AppError::NotDelivered(format!(
            "the message did not reach trunk {}",
            report.trunk
        )))
    }
}
