//! The command line (clap derive). One subcommand per job, so later ones
//! (`palisade normalize ...`) slot in as new [`Command`] variants.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// Exit codes, documented in `--help`.
const AFTER_HELP: &str = "\
Exit codes:
  0  success (run: stopped by SIGTERM/SIGINT after draining)
  1  internal error (runtime, signals, entropy, engine failure)
  2  invalid configuration, or invalid command line
  3  a listener could not be bound
  4  normalize: the message cannot be read or does not parse";

/// Palisade session border controller.
#[derive(Debug, Parser)]
#[command(name = "palisade", version, about, after_help = AFTER_HELP)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand, PartialEq, Eq)]
pub enum Command {
    /// Run the SBC until SIGTERM or SIGINT (graceful drain). SIGHUP reloads
    /// the configuration file.
    Run(RunArgs),
    /// Load and validate a configuration file, print a summary, and exit.
    /// Never opens a socket.
    CheckConfig(CheckConfigArgs),
    /// Dry-run a trunk's normalization on one SIP message: prints the message
    /// as Palisade would send it (out) or process it (in), the rules that
    /// fired and what they changed, and a unified diff. Never opens a socket.
    Normalize(NormalizeArgs),
}

/// Which way the message goes, seen from Palisade.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum DirectionArg {
    /// Received from the trunk (inbound profiles; before routing).
    In,
    /// Sent to the trunk (outbound profiles and privacy): give the message
    /// as Palisade built it for the trunk, before normalization.
    Out,
}

/// `palisade normalize`.
#[derive(Debug, Args, PartialEq, Eq)]
pub struct NormalizeArgs {
    /// The YAML configuration file.
    #[arg(short, long, value_name = "FILE")]
    pub config: PathBuf,
    /// The trunk whose profiles run.
    #[arg(long, value_name = "NAME")]
    pub trunk: String,
    /// in: as received from the trunk; out: as sent to it.
    #[arg(long, value_enum)]
    pub direction: DirectionArg,
    /// The message (LF or CRLF line ends); standard input when absent.
    #[arg(short, long, value_name = "FILE")]
    pub file: Option<PathBuf>,
    /// For --direction out: the trunk the call comes from (what
    /// `match.source_trunk` sees).
    #[arg(long, value_name = "NAME")]
    pub source_trunk: Option<String>,
    /// Print one JSON object (message, fired rules, diff) instead of text.
    #[arg(long)]
    pub json: bool,
}

/// `palisade run`.
#[derive(Debug, Args, PartialEq, Eq)]
pub struct RunArgs {
    /// The YAML configuration file (see configs/reference.yaml).
    #[arg(short, long, value_name = "FILE")]
    pub config: PathBuf,
}

/// `palisade check-config`.
#[derive(Debug, Args, PartialEq, Eq)]
pub struct CheckConfigArgs {
    /// The YAML configuration file to check.
    #[arg(value_name = "FILE")]
    pub file: PathBuf,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;
    use clap::error::ErrorKind;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("palisade").chain(args.iter().copied()))
    }

    #[test]
    fn definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn run_takes_a_config_file() {
        let cli = parse(&["run", "--config", "configs/quickstart.yaml"]).unwrap();
        assert_eq!(
            cli.command,
            Command::Run(RunArgs {
                config: PathBuf::from("configs/quickstart.yaml")
            })
        );
        let cli = parse(&["run", "-c", "x.yaml"]).unwrap();
        assert_eq!(
            cli.command,
            Command::Run(RunArgs {
                config: PathBuf::from("x.yaml")
            })
        );
    }

    #[test]
    fn run_without_config_is_a_usage_error() {
        let err = parse(&["run"]).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::MissingRequiredArgument);
        assert_eq!(err.exit_code(), 2);
    }

    #[test]
    fn check_config_takes_a_positional_file() {
        let cli = parse(&["check-config", "a.yaml"]).unwrap();
        assert_eq!(
            cli.command,
            Command::CheckConfig(CheckConfigArgs {
                file: PathBuf::from("a.yaml")
            })
        );
        assert_eq!(
            parse(&["check-config"]).unwrap_err().kind(),
            ErrorKind::MissingRequiredArgument
        );
        assert_eq!(
            parse(&["check-config", "a.yaml", "b.yaml"])
                .unwrap_err()
                .kind(),
            ErrorKind::UnknownArgument
        );
    }

    #[test]
    fn normalize_takes_config_trunk_direction_and_an_optional_file() {
        let cli = parse(&[
            "normalize",
            "--config",
            "c.yaml",
            "--trunk",
            "carrier",
            "--direction",
            "out",
            "--file",
            "m.sip",
            "--json",
        ])
        .unwrap();
        assert_eq!(
            cli.command,
            Command::Normalize(NormalizeArgs {
                config: PathBuf::from("c.yaml"),
                trunk: "carrier".into(),
                direction: DirectionArg::Out,
                file: Some(PathBuf::from("m.sip")),
                source_trunk: None,
                json: true,
            })
        );
        assert_eq!(
            parse(&[
                "normalize",
                "--config",
                "c.yaml",
                "--trunk",
                "t",
                "--direction",
                "up"
            ])
            .unwrap_err()
            .kind(),
            ErrorKind::InvalidValue
        );
    }

    #[test]
    fn subcommand_is_required_and_checked() {
        assert_eq!(
            parse(&[]).unwrap_err().kind(),
            ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
        );
        assert_eq!(
            parse(&["serve"]).unwrap_err().kind(),
            ErrorKind::InvalidSubcommand
        );
    }

    #[test]
    fn version_flag_prints_the_crate_version() {
        let err = parse(&["--version"]).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::DisplayVersion);
        assert_eq!(err.exit_code(), 0);
        assert!(err.to_string().contains(env!("CARGO_PKG_VERSION")), "{err}");
    }
}
