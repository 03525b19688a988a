//! Why the process stops with a failure, and the exit code for each.

use palisade_config::ConfigError;
use palisade_transport::TransportError;

use crate::listeners::TooManyListeners;

/// Success (`run`: stopped by a signal after draining).
pub const EXIT_OK: u8 = 0;
/// Something inside the process failed.
pub const EXIT_INTERNAL: u8 = 1;
/// The configuration is invalid (clap also uses 2 for command-line errors).
pub const EXIT_CONFIG: u8 = 2;
/// A listener could not be bound.
pub const EXIT_BIND: u8 = 3;
/// `normalize`: the message could not be read or does not parse.
pub const EXIT_MESSAGE: u8 = 4;
/// `normalize --from-trunk`: the engine did not send the message to the trunk.
pub const EXIT_NOT_DELIVERED: u8 = 5;

/// A fatal error of the binary.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    // --- Operator: the configuration or the host does not fit. ---
    /// The configuration file could not be read or is invalid. Its Display is
    /// one `FILE:LINE:COL: field: message` line per problem.
    #[error("{0}")]
    Config(#[from] ConfigError),
    /// More listeners than ids.
    #[error(transparent)]
    TooManyListeners(#[from] TooManyListeners),
    /// `normalize` names a trunk the configuration lacks.
    #[error("{0}")]
    UnknownTrunk(palisade_normalize::DryRunError),

    // --- Input: the message given to `normalize`. ---
    /// The message file could not be read.
    #[error("cannot read the message from {what}: {source}")]
    MessageRead {
        /// The file, or standard input.
        what: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The message does not parse.
    #[error("{0}")]
    MessageParse(palisade_normalize::DryRunError),
    /// `normalize --from-trunk`: the engine refused or routed the message
    /// elsewhere (the report on standard output says what it did).
    #[error("{0}")]
    NotDelivered(String),

    /// The listeners could not be started (the message names the address).
    #[error("cannot start listeners: {0}")]
    Listen(#[from] TransportError),
    /// The admin endpoint could not be bound (the message names the address).
    #[error("{0}")]
    Admin(#[from] palisade_admin::AdminError),
    /// Trunks have `host:` members but no DNS resolver could be set up.
    #[error("{0}")]
    Dns(#[from] palisade_dns::DnsError),
    /// `guard.nftables: on` and nftables is not usable here.
    #[error("guard.nftables is `on` but nftables is not usable: {0}")]
    Nftables(String),
    /// The alert database could not be opened or changed (CLI).
    #[error("{0}")]
    Alerts(#[from] palisade_alerts::StoreError),
    /// A command-line value is wrong (CLI).
    #[error("{0}")]
    Usage(String),
    /// The registrar's binding store could not be opened.
    #[error("cannot open the registrar store: {0}")]
    Store(#[from] palisade_store::StoreError),

    // --- Internal: the process could not set itself up or a task failed. ---
    /// The tokio runtime could not be built.
    #[error("cannot start the async runtime: {0}")]
    Runtime(#[source] std::io::Error),
    /// A signal handler could not be installed.
    #[error("cannot install the {signal} handler: {source}")]
    Signal {
        /// Which signal.
        signal: &'static str,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// The operating system gave no entropy to seed the engine.
    #[error("cannot read entropy from the operating system: {0}")]
    Entropy(rand::rngs::SysError),
    /// The logger could not be installed.
    #[error("cannot set up logging: {0}")]
    Logging(String),
    /// `media.kernel_forwarding: on` and the media table could not be set up.
    #[error("media.kernel_forwarding is `on` but kernel forwarding is not usable: {0}")]
    KernelForwarding(String),
    /// The media relay threads could not be started.
    #[error("cannot start the media relay: {0}")]
    Relay(#[source] std::io::Error),
    /// The engine task panicked or was cancelled.
    #[error("the call engine stopped unexpectedly: {0}")]
    EngineTask(#[source] tokio::task::JoinError),
}

impl AppError {
    /// The process exit code for this error.
    pub fn exit_code(&self) -> u8 {
        match self {
            AppError::Config(_)
            | AppError::TooManyListeners(_)
            | AppError::UnknownTrunk(_)
            | AppError::Dns(_)
            | AppError::Store(_)
            | AppError::Usage(_)
            // The operator's mistakes: no such alert, a move the lifecycle refuses.
            | AppError::Alerts(
                palisade_alerts::StoreError::NotFound(_)
                | palisade_alerts::StoreError::Transition { .. },
            ) => EXIT_CONFIG,
            AppError::MessageRead { .. } | AppError::MessageParse(_) => EXIT_MESSAGE,
            AppError::NotDelivered(_) => EXIT_NOT_DELIVERED,
            AppError::Nftables(_) | AppError::KernelForwarding(_) | AppError::Alerts(_) => EXIT_INTERNAL,
            AppError::Listen(TransportError::Bind { .. }) | AppError::Admin(_) => EXIT_BIND,
            AppError::Listen(_)
            | AppError::Runtime(_)
            | AppError::Signal { .. }
            | AppError::Entropy(_)
            | AppError::Logging(_)
            | AppError::Relay(_)
            | AppError::EngineTask(_) => EXIT_INTERNAL,
        }
    }
}
