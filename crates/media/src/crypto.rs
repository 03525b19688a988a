//! SDES keying (RFC 4568): reading and writing `a=crypto` lines.
//!
//! `a=crypto:<tag> <suite> inline:<base64 key||salt>[|<lifetime>][|<MKI>:<length>] [<session params>]`
//!
//! Palisade accepts AES_CM_128_HMAC_SHA1_80 and _32, with or without a
//! lifetime and an MKI; a line with session parameters (KDR,
//! UNENCRYPTED_SRTP...) or several keys is skipped, as RFC 4568 section 5.1
//! says an answerer must do with what it does not support. Keys Palisade
//! sends are 30 fresh bytes from the manager's CSPRNG, per leg and stream.

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD};
use palisade_relay::{SrtpKey, SrtpSuite};
use smallvec::SmallVec;

/// Master key plus salt, in bytes.
pub const KEY_SALT_BYTES: usize = 30;

/// One usable `a=crypto` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Crypto {
    /// The tag (1..=999999999), echoed by the answer.
    pub tag: u32,
    /// The key (suite, master key and salt, MKI).
    pub key: SrtpKey,
}

/// The suite's SDP name.
pub fn suite_name(s: SrtpSuite) -> &'static str {
    match s {
        SrtpSuite::AesCm128HmacSha1_80 => "AES_CM_128_HMAC_SHA1_80",
        SrtpSuite::AesCm128HmacSha1_32 => "AES_CM_128_HMAC_SHA1_32",
    }
}

fn suite_from(name: &str) -> Option<SrtpSuite> {
    match name {
        "AES_CM_128_HMAC_SHA1_80" => Some(SrtpSuite::AesCm128HmacSha1_80),
        "AES_CM_128_HMAC_SHA1_32" => Some(SrtpSuite::AesCm128HmacSha1_32),
        _ => None,
    }
}

impl Crypto {
    /// Parses the value of an `a=crypto` line (after `crypto:`); `None` when
    /// Palisade cannot use it.
    pub fn parse(value: &str) -> Option<Crypto> {
        let mut it = value.split_ascii_whitespace();
        let tag: u32 = it.next()?.parse().ok()?;
        if tag == 0 || tag > 999_999_999 {
            return None;
        }
        let suite = suite_from(it.next()?)?;
        let params = it.next()?;
        if it.next().is_some() {
            // Session parameters: none is supported.
            return None;
        }
        if params.contains(';') {
            // Several keys: Palisade keys one per direction.
            return None;
        }
        let inline = params.strip_prefix("inline:")?;
        let mut parts = inline.split('|');
        let b64 = parts.next()?;
        let raw = STANDARD
            .decode(b64)
            .or_else(|_| STANDARD_NO_PAD.decode(b64))
            .ok()?;
        if raw.len() != KEY_SALT_BYTES {
            return None;
        }
        let mut mki = None;
        for (i, p) in parts.enumerate() {
            if i > 1 {
                return None;
            }
            if let Some((value, len)) = p.split_once(':') {
                if mki.is_some() {
                    return None;
                }
                mki = Some(parse_mki(value, len)?);
            } else if !valid_lifetime(p) || i > 0 {
                return None;
            }
        }
        let mut master_key = [0u8; 16];
        let mut master_salt = [0u8; 14];
        master_key.copy_from_slice(raw.get(..16)?);
        master_salt.copy_from_slice(raw.get(16..)?);
        Some(Crypto {
            tag,
            key: SrtpKey {
                suite,
                master_key,
                master_salt,
                mki,
            },
        })
    }

    /// The value of an `a=crypto` line for this key (after `crypto:`).
    pub fn value(&self) -> String {
        let mut raw = [0u8; KEY_SALT_BYTES];
        raw[..16].copy_from_slice(&self.key.master_key);
        raw[16..].copy_from_slice(&self.key.master_salt);
        let mut s = format!(
            "{} {} inline:{}",
            self.tag,
            suite_name(self.key.suite),
            STANDARD.encode(raw)
        );
        if let Some(mki) = &self.key.mki {
            let v = mki.iter().fold(0u64, |acc, b| (acc << 8) | u64::from(*b));
            s.push_str(&format!("|{v}:{}", mki.len()));
        }
        s
    }
}

/// `2^31` or a decimal number of packets.
fn valid_lifetime(p: &str) -> bool {
    match p.strip_prefix("2^") {
        Some(exp) => exp.parse::<u8>().is_ok_and(|e| e <= 64),
        None => !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()),
    }
}

/// `<value>:<length in bytes>` into `length` big-endian bytes.
fn parse_mki(value: &str, len: &str) -> Option<SmallVec<[u8; 4]>> {
    let len: usize = len.parse().ok()?;
    if len == 0 || len > 8 {
        // RFC 4568 allows up to 128 bytes; values above 8 bytes do not occur.
        return None;
    }
    let v: u64 = value.parse().ok()?;
    if len < 8 && v >> (8 * len) != 0 {
        return None;
    }
    let bytes = v.to_be_bytes();
    Some(SmallVec::from_slice(&bytes[8 - len..]))
}

/// A fresh key of `suite` from 30 random bytes.
pub fn key_from_bytes(suite: SrtpSuite, raw: [u8; KEY_SALT_BYTES]) -> SrtpKey {
    let mut master_key = [0u8; 16];
    let mut master_salt = [0u8; 14];
    master_key.copy_from_slice(&raw[..16]);
    master_salt.copy_from_slice(&raw[16..]);
    SrtpKey {
        suite,
        master_key,
        master_salt,
        mki: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz";

    #[test]
    fn parses_suites_lifetimes_and_mki() {
        let c = Crypto::parse(&format!("1 AES_CM_128_HMAC_SHA1_80 inline:{KEY}|2^31|1:4")).unwrap();
        assert_eq!(c.tag, 1);
        assert_eq!(c.key.suite, SrtpSuite::AesCm128HmacSha1_80);
        assert_eq!(c.key.mki.as_deref(), Some(&[0, 0, 0, 1][..]));
        let c = Crypto::parse(&format!("2 AES_CM_128_HMAC_SHA1_32 inline:{KEY}")).unwrap();
        assert_eq!(c.key.suite, SrtpSuite::AesCm128HmacSha1_32);
        assert_eq!(c.key.mki, None);
        assert!(
            Crypto::parse(&format!("3 AES_CM_128_HMAC_SHA1_80 inline:{KEY}|1048576")).is_some()
        );
        assert!(Crypto::parse(&format!("3 AES_CM_128_HMAC_SHA1_80 inline:{KEY}|5:2")).is_some());
        // Teams-style: MKI without lifetime.
        assert!(Crypto::parse(&format!("3 AES_CM_128_HMAC_SHA1_80 inline:{KEY}|1:1")).is_some());
    }

    #[test]
    fn skips_what_it_cannot_use() {
        for bad in [
            format!("1 AES_256_CM_HMAC_SHA1_80 inline:{KEY}"),
            format!("1 AES_CM_128_HMAC_SHA1_80 inline:{KEY} KDR=1"),
            format!("1 AES_CM_128_HMAC_SHA1_80 inline:{KEY};inline:{KEY}"),
            "1 AES_CM_128_HMAC_SHA1_80 inline:c2hvcnQ=".to_owned(),
            format!("0 AES_CM_128_HMAC_SHA1_80 inline:{KEY}"),
            format!("1 AES_CM_128_HMAC_SHA1_80 inline:{KEY}|300:1"),
            format!("1 AES_CM_128_HMAC_SHA1_80 inline:{KEY}|2^31|1:4|x"),
            format!("1 AES_CM_128_HMAC_SHA1_80 key:{KEY}"),
            "x".to_owned(),
        ] {
            assert_eq!(Crypto::parse(&bad), None, "{bad}");
        }
    }

    #[test]
    fn round_trips() {
        let c = Crypto {
            tag: 7,
            key: key_from_bytes(SrtpSuite::AesCm128HmacSha1_32, [9; 30]),
        };
        assert_eq!(Crypto::parse(&c.value()), Some(c.clone()));
        let mut with_mki = c;
        with_mki.key.mki = Some(SmallVec::from_slice(&[0, 2]));
        assert!(with_mki.value().ends_with("|2:2"));
        assert_eq!(Crypto::parse(&with_mki.value()), Some(with_mki));
    }
}
