//! HA1, HA2 and the request digest (RFC 7616 section 3.4.1).

use md5::Md5;
use sha2::{Digest, Sha256};

use crate::error::DigestError;
use crate::parse::{Challenge, Credentials};

/// A digest hash algorithm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Algorithm {
    /// MD5 (RFC 2617; still what most SIP peers use).
    Md5,
    /// SHA-256 (RFC 7616, RFC 8760).
    Sha256,
}

impl Algorithm {
    /// Parses the `algorithm` parameter (case-insensitive). `-sess` variants
    /// are refused.
    pub fn parse(s: &str) -> Result<Algorithm, DigestError> {
        if s.eq_ignore_ascii_case("md5") {
            Ok(Algorithm::Md5)
        } else if s.eq_ignore_ascii_case("sha-256") {
            Ok(Algorithm::Sha256)
        } else {
            Err(DigestError::Algorithm(s.chars().take(32).collect()))
        }
    }

    /// The parameter value.
    pub fn as_str(self) -> &'static str {
        match self {
            Algorithm::Md5 => "MD5",
            Algorithm::Sha256 => "SHA-256",
        }
    }

    /// Hex length of this algorithm's digests.
    pub fn hex_len(self) -> usize {
        match self {
            Algorithm::Md5 => 32,
            Algorithm::Sha256 => 64,
        }
    }

    /// Lowercase hex of the hash of the parts joined by `:`.
    pub fn hash(self, parts: &[&str]) -> String {
        fn run<D: Digest>(parts: &[&str]) -> String {
            let mut d = D::new();
            for (i, p) in parts.iter().enumerate() {
                if i > 0 {
                    d.update(b":");
                }
                d.update(p.as_bytes());
            }
            hex(&d.finalize())
        }
        match self {
            Algorithm::Md5 => run::<Md5>(parts),
            Algorithm::Sha256 => run::<Sha256>(parts),
        }
    }
}

/// Quality of protection. Only `auth` (integrity of the body, `auth-int`,
/// is not supported: no SIP peer we meet uses it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Qop {
    /// `qop=auth`.
    Auth,
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(char::from(HEX[usize::from(b >> 4)]));
        s.push(char::from(HEX[usize::from(b & 15)]));
    }
    s
}

/// `H(username:realm:password)`: what a server stores instead of the password.
pub fn ha1(alg: Algorithm, username: &str, realm: &str, password: &str) -> String {
    alg.hash(&[username, realm, password])
}

/// The request digest from HA1 (RFC 7616 section 3.4.1; RFC 2069 form when
/// `qop` is `None`). `nc` and `cnonce` are used only with `qop`.
#[allow(clippy::too_many_arguments)]
pub fn request_digest(
    alg: Algorithm,
    ha1: &str,
    nonce: &str,
    nc: u32,
    cnonce: &str,
    qop: Option<Qop>,
    method: &str,
    uri: &str,
) -> String {
    let ha2 = alg.hash(&[method, uri]);
    match qop {
        Some(Qop::Auth) => alg.hash(&[ha1, nonce, &format!("{nc:08x}"), cnonce, "auth", &ha2]),
        None => alg.hash(&[ha1, nonce, &ha2]),
    }
}

/// Constant-time equality for digests (length is not secret).
pub fn ct_eq(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Whether `creds` prove knowledge of the password behind `ha1` for a
/// request with `method`: the digest alone, in whatever form the client
/// chose. A server uses [`verify_request`], which also holds the client to
/// the challenge and the request; the caller checks the nonce and realm.
pub fn verify(creds: &Credentials, ha1: &str, method: &str) -> bool {
    let expected = request_digest(
        creds.algorithm,
        ha1,
        &creds.nonce,
        creds.nc.unwrap_or(0),
        creds.cnonce.as_deref().unwrap_or(""),
        creds.qop,
        method,
        &creds.uri,
    );
    ct_eq(&expected, &creds.response)
}

/// What a server knows when it checks credentials: the request's method
/// and Request-URI, and whether its challenge offered `qop=auth`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerExpect<'a> {
    /// The request method (`REGISTER`, `INVITE`).
    pub method: &'a str,
    /// The Request-URI as received: the digest `uri` must be this string.
    pub request_uri: &'a str,
    /// The challenge offered `qop=auth`: the RFC 2069 form (no `qop`, so no
    /// nonce count and no replay protection) is then refused.
    pub qop_offered: bool,
}

/// Why [`verify_request`] refused credentials.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// No `qop=auth` although the challenge offered it (a downgrade to the
    /// RFC 2069 form, whose answers can be replayed).
    QopMissing,
    /// The digest `uri` is not the Request-URI (an answer captured from
    /// another request).
    UriMismatch,
    /// The digest does not match (wrong password or altered fields).
    Digest,
}

/// Server-side verification (RFC 7616 section 3.4.1 and 3.5, RFC 3261
/// section 22.4): `qop=auth` when it was offered, the digest `uri` equal
/// to the Request-URI, then the digest itself against `ha1`. Nonce
/// validity and nonce-count growth stay with the caller, who keeps state.
pub fn verify_request(
    creds: &Credentials,
    ha1: &str,
    expect: &ServerExpect<'_>,
) -> Result<(), Refusal> {
    // The digest is computed first in every case, so refusals take as long
    // as successes.
    let digest_ok = verify(creds, ha1, expect.method);
    if expect.qop_offered && creds.qop.is_none() {
        return Err(Refusal::QopMissing);
    }
    if creds.uri != expect.request_uri {
        return Err(Refusal::UriMismatch);
    }
    if !digest_ok {
        return Err(Refusal::Digest);
    }
    Ok(())
}

/// The credentials a client sends in answer to `challenge`: `qop=auth` when
/// offered (with `nc` and `cnonce`), the RFC 2069 form otherwise.
pub fn client_credentials(
    challenge: &Challenge,
    username: &str,
    password: &str,
    method: &str,
    uri: &str,
    cnonce: &str,
    nc: u32,
) -> Credentials {
    let alg = challenge.algorithm;
    let h1 = ha1(alg, username, &challenge.realm, password);
    let qop = challenge.qop_auth.then_some(Qop::Auth);
    let response = request_digest(alg, &h1, &challenge.nonce, nc, cnonce, qop, method, uri);
    Credentials {
        username: username.to_owned(),
        realm: challenge.realm.clone(),
        nonce: challenge.nonce.clone(),
        uri: uri.to_owned(),
        response,
        algorithm: alg,
        cnonce: qop.map(|_| cnonce.to_owned()),
        qop,
        nc: qop.map(|_| nc),
        opaque: challenge.opaque.clone(),
    }
}
