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
  3  a listener could not be bound";

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
