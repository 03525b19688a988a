//! The command line (clap derive). One subcommand per job, so later ones
//! (`palisade normalize ...`) slot in as new [`Command`] variants.

use std::net::IpAddr;
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
    /// Fraud alerts in the alert database: list, show, acknowledge, resolve,
    /// mark false positive. Works while Palisade runs.
    Alerts(AlertsArgs),
    /// Bans: list them (database and kernel) or lift one.
    Bans(BansArgs),
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
    /// For --direction out: the message is one received from this trunk
    /// (e.g. a PBX's INVITE as captured) and runs through the real call
    /// engine; what Palisade sends to --trunk is printed (rebuilt Via,
    /// Contact, Call-ID, topology hiding, both trunks' profiles).
    #[arg(long, value_name = "NAME", conflicts_with = "source_trunk")]
    pub from_trunk: Option<String>,
    /// Print one JSON object (message, fired rules, diff) instead of text.
    #[arg(long)]
    pub json: bool,
}

/// Which alert database: the one a configuration names, or a file.
#[derive(Debug, Args, PartialEq, Eq)]
pub struct DbArgs {
    /// The configuration whose `alerts.database_path` (and nftables table) to use.
    #[arg(short, long, value_name = "FILE", global = true)]
    pub config: Option<PathBuf>,
    /// The SQLite file itself (instead of --config).
    #[arg(long, value_name = "FILE", global = true, conflicts_with = "config")]
    pub db: Option<PathBuf>,
}

/// `palisade alerts`.
#[derive(Debug, Args, PartialEq, Eq)]
pub struct AlertsArgs {
    /// Where the database is.
    #[command(flatten)]
    pub db: DbArgs,
    /// What to do.
    #[command(subcommand)]
    pub command: AlertsCommand,
}

/// `palisade alerts <command>`.
#[derive(Debug, Subcommand, PartialEq, Eq)]
pub enum AlertsCommand {
    /// List alerts, newest first.
    List {
        /// Only alerts in this status: open, acknowledged, resolved, false-positive.
        #[arg(long)]
        status: Option<String>,
        /// At most this many.
        #[arg(long, default_value_t = 100)]
        limit: usize,
        /// One JSON object per line instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// One alert with its evidence, as JSON.
    Show {
        /// Alert id.
        id: i64,
    },
    /// open -> acknowledged.
    Ack(StatusArgs),
    /// open|acknowledged -> resolved.
    Resolve(StatusArgs),
    /// open|acknowledged -> false-positive.
    FalsePositive(StatusArgs),
}

/// Who changes an alert's status, and why.
#[derive(Debug, Args, PartialEq, Eq)]
pub struct StatusArgs {
    /// Alert id.
    pub id: i64,
    /// Who (recorded with the status).
    #[arg(long)]
    pub by: String,
    /// A note (recorded with the status).
    #[arg(long, default_value = "")]
    pub note: String,
}

/// `palisade bans`.
#[derive(Debug, Args, PartialEq, Eq)]
pub struct BansArgs {
    /// Where the database is.
    #[command(flatten)]
    pub db: DbArgs,
    /// What to do.
    #[command(subcommand)]
    pub command: BansCommand,
}

/// `palisade bans <command>`.
#[derive(Debug, Subcommand, PartialEq, Eq)]
pub enum BansCommand {
    /// Bans in force: source, reason, expiry, and whether the kernel holds them.
    List {
        /// Expired and lifted bans too.
        #[arg(long)]
        all: bool,
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
    },
    /// Lift the ban of a source: removed from nftables now, and the running
    /// Palisade forgets it within a second.
    Unban {
        /// The source address.
        ip: IpAddr,
        /// Who (recorded).
        #[arg(long)]
        by: String,
    },
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
                from_trunk: None,
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
        let from = [
            "normalize",
            "-c",
            "c.yaml",
            "--trunk",
            "carrier",
            "--direction",
            "out",
            "--from-trunk",
            "pbx",
        ];
        match parse(&from).unwrap().command {
            Command::Normalize(a) => assert_eq!(a.from_trunk.as_deref(), Some("pbx")),
            other => panic!("{other:?}"),
        }
        let both = [&from[..], &["--source-trunk", "pbx"]].concat();
        assert_eq!(
            parse(&both).unwrap_err().kind(),
            ErrorKind::ArgumentConflict
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
