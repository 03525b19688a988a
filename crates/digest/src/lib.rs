//! Digest access authentication for SIP (RFC 3261 section 22, RFC 2617,
//! RFC 7616; RFC 8760 for SHA-256 in SIP): the challenge and credential
//! headers, the response computation with `qop=auth` and nonce counts, and
//! stateless server nonces.
//!
//! Owns: parsing `WWW-Authenticate`/`Proxy-Authenticate` challenges and
//! `Authorization`/`Proxy-Authorization` credentials (bounded, strict,
//! never panicking), writing them, computing HA1/HA2/response for MD5 and
//! SHA-256, checking a response against a stored HA1 in constant time (on the
//! server side also holding the client to `qop=auth` when it was offered and
//! the digest `uri` to the Request-URI: [`verify_request`]), and
//! issuing and checking nonces that carry their own issue time under an
//! HMAC-SHA256 tag ([`NonceIssuer`]), so a server keeps no per-challenge
//! state and a nonce expires by itself.
//!
//! Does not own: users, passwords or policy (who must authenticate), nor
//! SIP messages: callers pass header values and get header values back.
//! The clock and the secret are injected (`now_secs`, the issuer's key).
//!
//! Why hand-written: the hashes and the HMAC come from the maintained
//! RustCrypto crates (`md-5`, `sha2`, `hmac`); what is left is a small
//! header grammar and three string concatenations. The published digest
//! crates are HTTP client helpers (no server-side verification with
//! stateless nonces, no `stale` handling, allocation-happy parsers without
//! input bounds), and SIP needs the parser to be as strict and bounded as
//! the rest of Palisade's codec.

mod compute;
mod error;
mod nonce;
mod parse;

pub use compute::{
    Algorithm, Qop, Refusal, ServerExpect, client_credentials, ct_eq, ha1, request_digest, verify,
    verify_request,
};
pub use error::DigestError;
pub use nonce::{NonceCheck, NonceIssuer};
pub use parse::{Challenge, Credentials, MAX_HEADER_BYTES, MAX_PARAMS};

#[doc(hidden)]
pub mod fuzz {
    //! Entry points for the cargo-fuzz targets and property tests.

    /// Parses `data` as credentials and as a challenge; whatever parses must
    /// write back to a value that parses to the same thing.
    pub fn fuzz_parse(data: &[u8]) {
        let Ok(text) = std::str::from_utf8(data) else {
            return;
        };
        if let Ok(c) = crate::Credentials::parse(text) {
            let again = crate::Credentials::parse(&c.to_header());
            assert_eq!(again.as_ref(), Ok(&c), "credentials round trip");
        }
        if let Ok(c) = crate::Challenge::parse(text) {
            let again = crate::Challenge::parse(&c.to_header());
            assert_eq!(again.as_ref(), Ok(&c), "challenge round trip");
        }
    }
}
