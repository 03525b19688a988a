//! The crate's error type.

/// Why a header could not be used. Every variant is the peer's fault: the
/// crate has no configuration and no internal failure modes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DigestError {
    /// Longer than [`crate::MAX_HEADER_BYTES`] or more than [`crate::MAX_PARAMS`] parameters.
    #[error("header too large")]
    TooLarge,
    /// Not the `Digest` scheme.
    #[error("not a Digest header")]
    NotDigest,
    /// The parameter list does not follow the grammar.
    #[error("malformed parameter list at byte {0}")]
    Syntax(usize),
    /// A parameter appears twice.
    #[error("duplicate parameter `{0}`")]
    Duplicate(String),
    /// A required parameter is missing.
    #[error("missing parameter `{0}`")]
    Missing(&'static str),
    /// An algorithm Palisade does not implement (only MD5 and SHA-256).
    #[error("unsupported algorithm `{0}`")]
    Algorithm(String),
    /// A `qop` other than `auth` (auth-int is not supported).
    #[error("unsupported qop `{0}`")]
    Qop(String),
    /// `nc` is not 8 hex digits, or `qop` without `nc`/`cnonce`.
    #[error("bad nonce count")]
    NonceCount,
}
