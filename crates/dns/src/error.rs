//! Errors of the resolver task.

/// What can go wrong setting up resolution. Lookup failures are not errors:
/// they are outcomes, retried on a schedule (see [`crate::schedule`]).
#[derive(Debug, thiserror::Error)]
pub enum DnsError {
    // -- configuration / environment (the operator's to fix) --
    /// The system resolver configuration could not be read.
    #[error("cannot read the system DNS configuration (/etc/resolv.conf): {0}; set dns.servers")]
    SystemConfig(String),
    // -- internal --
    /// The resolver could not be built.
    #[error("cannot build the DNS resolver: {0}")]
    Build(String),
}
