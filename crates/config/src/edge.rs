//! Edge settings (issue 4): digest credentials, outbound registration,
//! the registrar, keepalives, NAT handling and call admission control.
//! Validated in `validate/edge.rs`.

use std::path::PathBuf;
use std::time::Duration;

use crate::model::TrunkId;

/// A secret (password) from the configuration or the environment. Its
/// `Debug` never prints it; read it with [`Secret::expose`] where a digest
/// is computed, and nowhere else.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret.
    pub fn new(s: impl Into<String>) -> Self {
        Secret(s.into())
    }
    /// The secret itself.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// `trunks[].auth`: credentials Palisade presents to this trunk (outbound
/// REGISTER and INVITEs it challenges).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct TrunkAuth {
    /// Digest username.
    pub username: String,
    /// `password`, or the value of the environment variable `password_env`
    /// read at load time.
    pub password: Secret,
    /// Only answer challenges for this realm (`None`: any realm).
    pub realm: Option<String>,
}

/// `trunks[].registration`: keep Palisade registered to this trunk's
/// primary member. While unregistered the trunk is down (calls to it get
/// 503 with Retry-After).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Registration {
    /// Expires asked for. `expires_seconds`, default 3600.
    pub expires_seconds: u32,
    /// First retry after a failure (doubles per failure). `retry_seconds`, default 30.
    pub retry_seconds: u32,
    /// Longest retry delay. `max_retry_seconds`, default 600.
    pub max_retry_seconds: u32,
}

/// How keepalives are sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeepaliveMethod {
    /// OPTIONS (a transaction: no answer marks the peer down).
    Options,
    /// CRLF ping (`\r\n\r\n`): keeps NAT and TCP flows open, expects nothing.
    Crlf,
}

/// A keepalive setting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Keepalive {
    /// `method`, default `options`.
    pub method: KeepaliveMethod,
    /// `interval_seconds`, default 30.
    pub interval: Duration,
}

/// Call admission limits of a trunk or a zone; 0 means no limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct Cac {
    /// Concurrent calls (either direction).
    pub max_concurrent_calls: u32,
    /// New calls per second (token bucket, burst = the rate).
    pub max_calls_per_second: u32,
    /// Registered bindings (registrar trunk or zone).
    pub max_registrations: u32,
    /// Status for calls over a limit: 503 (with Retry-After), 486 or 480. Default 503.
    pub reject_status: u16,
}

impl Cac {
    /// Whether no limit is set.
    pub fn is_unlimited(&self) -> bool {
        self.max_concurrent_calls == 0
            && self.max_calls_per_second == 0
            && self.max_registrations == 0
    }
}

/// Digest algorithms the registrar challenges with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DigestAlgorithm {
    /// MD5.
    Md5,
    /// SHA-256.
    Sha256,
}

/// A user who may register to Palisade.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RegistrarUser {
    /// The user name (To user part and digest username).
    pub user: String,
    /// `MD5(user:realm:password)`, lowercase hex.
    pub ha1_md5: String,
    /// `SHA-256(user:realm:password)`, lowercase hex, if given.
    pub ha1_sha256: Option<String>,
    /// Bindings this user may hold. Default 4.
    pub max_bindings: u32,
}

/// `registrar:`: PBXs and phones registering to Palisade.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Registrar {
    /// The trunk registered users belong to: REGISTER is accepted on its
    /// zone, calls from a registered flow count as from it, and routes with
    /// `to_registered` to it deliver to the dialled user's binding.
    pub trunk: TrunkId,
    /// Digest realm.
    pub realm: String,
    /// The users, unique names.
    pub users: Vec<RegistrarUser>,
    /// Challenge algorithms, in order. Default `[md5, sha-256]`.
    pub algorithms: Vec<DigestAlgorithm>,
    /// Shortest non-zero expiry accepted (423 below). Default 60.
    pub min_expires_seconds: u32,
    /// Longest expiry granted. Default 3600.
    pub max_expires_seconds: u32,
    /// Expiry when the REGISTER gives none. Default 3600.
    pub default_expires_seconds: u32,
    /// Bindings held in total (memory bound). Default 100000.
    pub max_bindings_total: u32,
    /// A nonce older than this is stale. Default 300.
    pub nonce_lifetime_seconds: u32,
    /// SQLite file keeping bindings across restarts; `None`: memory only.
    pub database_path: Option<PathBuf>,
}

impl Registrar {
    /// The user named `name`.
    pub fn user(&self, name: &str) -> Option<&RegistrarUser> {
        self.users.iter().find(|u| u.user == name)
    }
}

/// `nat:`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Nat {
    /// Compare Via/Contact (and SDP `c=`) with the packet source to flag
    /// NATed registrations (they get keepalives) and call legs (their media
    /// always learns). Default true.
    pub detect: bool,
    /// Keepalives toward NATed registrations. Default options every 30 s.
    pub keepalive: Keepalive,
}

/// `call_admission:`.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct CallAdmission {
    /// Dialled numbers exempt from every admission limit.
    /// Default `["112", "911", "999", "110"]`.
    pub emergency_numbers: Vec<String>,
    /// Retry-After on 503s for calls over a limit. Default 30.
    pub retry_after_seconds: u32,
}

impl CallAdmission {
    /// Whether `number` is an emergency number (exact match).
    pub fn is_emergency(&self, number: &str) -> bool {
        self.emergency_numbers.iter().any(|n| n == number)
    }
}
