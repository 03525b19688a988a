//! Stateless server nonces: `hex(issued_secs) . hex(salt) .
//! hex(HMAC-SHA256(key, issued_secs | salt | realm))[..32]`. The random
//! salt makes every challenge's nonce unique, so nonce counts start afresh. The server keeps nothing per challenge; a
//! nonce is valid if its tag verifies, and stale once older than the
//! lifetime (the client then retries with the new nonce, RFC 7616 `stale`).

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::compute::{ct_eq, hex};

/// Issues and checks nonces with a secret key and an injected clock.
#[derive(Clone)]
pub struct NonceIssuer {
    key: [u8; 32],
    lifetime_secs: u64,
}

impl std::fmt::Debug for NonceIssuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NonceIssuer")
            .field("key", &"<redacted>")
            .field("lifetime_secs", &self.lifetime_secs)
            .finish()
    }
}

/// What a nonce turned out to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NonceCheck {
    /// Ours and fresh.
    Valid,
    /// Ours but expired: challenge again with `stale=true`.
    Stale,
    /// Not ours (forged, corrupted, another realm or another key).
    Invalid,
}

impl NonceIssuer {
    /// An issuer with `key` (random per process) whose nonces live `lifetime_secs`.
    pub fn new(key: [u8; 32], lifetime_secs: u64) -> Self {
        NonceIssuer { key, lifetime_secs }
    }

    fn tag(&self, issued: u64, salt: u64, realm: &str) -> String {
        // HMAC accepts keys of any length: new_from_slice cannot fail here.
        let Ok(mut mac) = <Hmac<Sha256> as Mac>::new_from_slice(&self.key) else {
            return String::new();
        };
        mac.update(&issued.to_be_bytes());
        mac.update(&salt.to_be_bytes());
        mac.update(realm.as_bytes());
        let out = mac.finalize().into_bytes();
        hex(&out[..16])
    }

    /// A nonce for `realm` issued at `now_secs` (any monotonic seconds
    /// count); `salt` is random per challenge.
    pub fn issue(&self, now_secs: u64, salt: u64, realm: &str) -> String {
        format!(
            "{now_secs:016x}{salt:016x}{}",
            self.tag(now_secs, salt, realm)
        )
    }

    /// Checks a nonce received for `realm` at `now_secs`.
    pub fn check(&self, nonce: &str, now_secs: u64, realm: &str) -> NonceCheck {
        if nonce.len() != 64 || !nonce.is_ascii() {
            return NonceCheck::Invalid;
        }
        let (Ok(issued), Ok(salt)) = (
            u64::from_str_radix(&nonce[..16], 16),
            u64::from_str_radix(&nonce[16..32], 16),
        ) else {
            return NonceCheck::Invalid;
        };
        if !ct_eq(&nonce[32..], &self.tag(issued, salt, realm)) || issued > now_secs {
            return NonceCheck::Invalid;
        }
        if now_secs - issued > self.lifetime_secs {
            NonceCheck::Stale
        } else {
            NonceCheck::Valid
        }
    }
}
