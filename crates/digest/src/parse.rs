//! The header grammar (RFC 3261 section 25.1, `challenge` and
//! `credentials`): `Digest` followed by comma-separated `name=value`
//! parameters, values being tokens or quoted strings with `\` escapes.

use crate::compute::{Algorithm, Qop};
use crate::error::DigestError;

/// Longest header value accepted.
pub const MAX_HEADER_BYTES: usize = 4096;
/// Most parameters accepted in one header.
pub const MAX_PARAMS: usize = 32;

/// A `WWW-Authenticate` / `Proxy-Authenticate` Digest challenge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Challenge {
    /// Protection space.
    pub realm: String,
    /// Server nonce.
    pub nonce: String,
    /// Echoed back unchanged.
    pub opaque: Option<String>,
    /// Hash algorithm (MD5 when absent).
    pub algorithm: Algorithm,
    /// The server offers `qop=auth` (RFC 2617); `false` means RFC 2069 mode.
    pub qop_auth: bool,
    /// The previous request had a valid digest with an expired nonce: retry
    /// with the new nonce without asking the user again.
    pub stale: bool,
}

/// An `Authorization` / `Proxy-Authorization` Digest credential.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    /// The user.
    pub username: String,
    /// Protection space.
    pub realm: String,
    /// The server nonce answered.
    pub nonce: String,
    /// The digest-uri (the Request-URI).
    pub uri: String,
    /// The request digest (lowercase hex).
    pub response: String,
    /// Hash algorithm (MD5 when absent).
    pub algorithm: Algorithm,
    /// Client nonce (with `qop`).
    pub cnonce: Option<String>,
    /// `qop=auth`, or none (RFC 2069 compatibility).
    pub qop: Option<Qop>,
    /// Nonce count (with `qop`).
    pub nc: Option<u32>,
    /// Echoed opaque.
    pub opaque: Option<String>,
}

/// One `name=value` with the value unquoted.
type Param = (String, String);

/// Splits `Digest p1=v1, p2="v2"` into its parameters.
fn params(s: &str) -> Result<Vec<Param>, DigestError> {
    if s.len() > MAX_HEADER_BYTES {
        return Err(DigestError::TooLarge);
    }
    let t = s.trim_start_matches([' ', '\t']);
    let off = s.len() - t.len();
    let scheme_end = t.find([' ', '\t']).unwrap_or(t.len());
    if !t[..scheme_end].eq_ignore_ascii_case("digest") {
        return Err(DigestError::NotDigest);
    }
    let b = s.as_bytes();
    let mut i = off + scheme_end;
    let mut out: Vec<Param> = Vec::new();
    let skip_ws = |i: &mut usize| {
        while *i < b.len() && matches!(b[*i], b' ' | b'\t' | b'\r' | b'\n') {
            *i += 1;
        }
    };
    loop {
        skip_ws(&mut i);
        if i >= b.len() {
            break;
        }
        let start = i;
        while i < b.len() && is_token(b[i]) {
            i += 1;
        }
        if i == start {
            return Err(DigestError::Syntax(i));
        }
        let name = s[start..i].to_ascii_lowercase();
        skip_ws(&mut i);
        if b.get(i) != Some(&b'=') {
            return Err(DigestError::Syntax(i));
        }
        i += 1;
        skip_ws(&mut i);
        let value = if b.get(i) == Some(&b'"') {
            i += 1;
            let mut v = String::new();
            loop {
                match b.get(i) {
                    None => return Err(DigestError::Syntax(i)),
                    Some(b'"') => {
                        i += 1;
                        break;
                    }
                    Some(b'\\') => {
                        let c = *b.get(i + 1).ok_or(DigestError::Syntax(i))?;
                        // Escaped or not, CR, LF and NUL never belong in a value.
                        if c > 0x7f || c == b'\r' || c == b'\n' || c == 0 {
                            return Err(DigestError::Syntax(i));
                        }
                        v.push(char::from(c));
                        i += 2;
                    }
                    Some(&c) if c == b'\r' || c == b'\n' || c == 0 => {
                        return Err(DigestError::Syntax(i));
                    }
                    Some(_) => {
                        // A whole UTF-8 character (quoted strings may hold UTF-8).
                        let ch = s[i..].chars().next().ok_or(DigestError::Syntax(i))?;
                        v.push(ch);
                        i += ch.len_utf8();
                    }
                }
            }
            v
        } else {
            let vs = i;
            while i < b.len() && is_token(b[i]) {
                i += 1;
            }
            if i == vs {
                return Err(DigestError::Syntax(i));
            }
            s[vs..i].to_owned()
        };
        if out.iter().any(|(n, _)| *n == name) {
            return Err(DigestError::Duplicate(name));
        }
        if out.len() >= MAX_PARAMS {
            return Err(DigestError::TooLarge);
        }
        out.push((name, value));
        skip_ws(&mut i);
        match b.get(i) {
            None => break,
            Some(b',') => i += 1,
            Some(_) => return Err(DigestError::Syntax(i)),
        }
    }
    Ok(out)
}

fn is_token(c: u8) -> bool {
    c.is_ascii_alphanumeric() || b"-.!%*_+`'~".contains(&c)
}

fn take(ps: &mut Vec<Param>, name: &str) -> Option<String> {
    let i = ps.iter().position(|(n, _)| n == name)?;
    Some(ps.swap_remove(i).1)
}

fn need(ps: &mut Vec<Param>, name: &'static str) -> Result<String, DigestError> {
    take(ps, name).ok_or(DigestError::Missing(name))
}

/// Writes `v` as a quoted string, escaping `"` and `\`.
fn quoted(out: &mut String, v: &str) {
    out.push('"');
    for c in v.chars() {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
}

impl Challenge {
    /// Parses a challenge header value.
    pub fn parse(s: &str) -> Result<Challenge, DigestError> {
        let mut ps = params(s)?;
        let realm = need(&mut ps, "realm")?;
        let nonce = need(&mut ps, "nonce")?;
        let algorithm = match take(&mut ps, "algorithm") {
            Some(a) => Algorithm::parse(&a)?,
            None => Algorithm::Md5,
        };
        let qop_auth = match take(&mut ps, "qop") {
            None => false,
            Some(list) => {
                let offered: Vec<&str> = list.split(',').map(str::trim).collect();
                if offered.iter().any(|q| q.eq_ignore_ascii_case("auth")) {
                    true
                } else {
                    return Err(DigestError::Qop(list));
                }
            }
        };
        let stale = take(&mut ps, "stale").is_some_and(|v| v.eq_ignore_ascii_case("true"));
        Ok(Challenge {
            realm,
            nonce,
            opaque: take(&mut ps, "opaque"),
            algorithm,
            qop_auth,
            stale,
        })
    }

    /// The header value.
    pub fn to_header(&self) -> String {
        let mut s = String::from("Digest realm=");
        quoted(&mut s, &self.realm);
        s.push_str(", nonce=");
        quoted(&mut s, &self.nonce);
        if let Some(o) = &self.opaque {
            s.push_str(", opaque=");
            quoted(&mut s, o);
        }
        s.push_str(", algorithm=");
        s.push_str(self.algorithm.as_str());
        if self.qop_auth {
            s.push_str(", qop=\"auth\"");
        }
        if self.stale {
            s.push_str(", stale=true");
        }
        s
    }
}

impl Credentials {
    /// Parses a credentials header value.
    pub fn parse(s: &str) -> Result<Credentials, DigestError> {
        let mut ps = params(s)?;
        let username = need(&mut ps, "username")?;
        let realm = need(&mut ps, "realm")?;
        let nonce = need(&mut ps, "nonce")?;
        let uri = need(&mut ps, "uri")?;
        let response = need(&mut ps, "response")?.to_ascii_lowercase();
        let algorithm = match take(&mut ps, "algorithm") {
            Some(a) => Algorithm::parse(&a)?,
            None => Algorithm::Md5,
        };
        let qop = match take(&mut ps, "qop") {
            None => None,
            Some(q) if q.eq_ignore_ascii_case("auth") => Some(Qop::Auth),
            Some(q) => return Err(DigestError::Qop(q)),
        };
        let cnonce = take(&mut ps, "cnonce");
        let nc = match take(&mut ps, "nc") {
            None => None,
            Some(v) if v.len() == 8 && v.bytes().all(|c| c.is_ascii_hexdigit()) => {
                Some(u32::from_str_radix(&v, 16).map_err(|_| DigestError::NonceCount)?)
            }
            Some(_) => return Err(DigestError::NonceCount),
        };
        if qop.is_some() && (nc.is_none() || cnonce.is_none()) {
            return Err(DigestError::NonceCount);
        }
        Ok(Credentials {
            username,
            realm,
            nonce,
            uri,
            response,
            algorithm,
            cnonce,
            qop,
            nc,
            opaque: take(&mut ps, "opaque"),
        })
    }

    /// The header value.
    pub fn to_header(&self) -> String {
        let mut s = String::from("Digest username=");
        quoted(&mut s, &self.username);
        s.push_str(", realm=");
        quoted(&mut s, &self.realm);
        s.push_str(", nonce=");
        quoted(&mut s, &self.nonce);
        s.push_str(", uri=");
        quoted(&mut s, &self.uri);
        s.push_str(", response=");
        quoted(&mut s, &self.response);
        s.push_str(", algorithm=");
        s.push_str(self.algorithm.as_str());
        if let Some(c) = &self.cnonce {
            s.push_str(", cnonce=");
            quoted(&mut s, c);
        }
        if let Some(Qop::Auth) = self.qop {
            s.push_str(", qop=auth");
        }
        if let Some(nc) = self.nc {
            s.push_str(&format!(", nc={nc:08x}"));
        }
        if let Some(o) = &self.opaque {
            s.push_str(", opaque=");
            quoted(&mut s, o);
        }
        s
    }
}
