//! Typed header values, decoded on demand from the original text. Every type
//! borrows from the message; nothing is copied.

use crate::error::DecodeError;
use crate::method::Method;
use crate::params::{FindByte, Params, is_lws, quoted_end, trim_lws};
use crate::uri::{Host, Uri};

/// One Via header value (RFC 3261 section 20.42).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Via<'a> {
    /// Transport token as written (`UDP`, `TCP`, `TLS`, `WS`...).
    pub transport: &'a str,
    /// The sent-by host.
    pub host: Host<'a>,
    /// The sent-by host as written.
    pub host_raw: &'a str,
    /// The sent-by port, if given.
    pub port: Option<u16>,
    /// Via parameters (`branch`, `received`, `rport`, `maddr`, `ttl`...).
    pub params: Params<'a>,
    /// The `branch` parameter's value, looked up once by [`Via::parse`].
    branch: Option<&'a str>,
}

impl<'a> Via<'a> {
    /// Parses `SIP/2.0/UDP host:port;params`, whitespace tolerated around `/`.
    pub fn parse(s: &'a str) -> Result<Via<'a>, DecodeError> {
        let (name, after_name) = s
            .split_once_b(b'/')
            .ok_or(DecodeError::new("Via lacks protocol", 0))?;
        let (version, rest) = after_name
            .split_once_b(b'/')
            .ok_or(DecodeError::new("Via lacks protocol", 0))?;
        let (name, version, rest) = (trim_lws(name), trim_lws(version), trim_lws(rest));
        if !name.eq_ignore_ascii_case("SIP") || version != "2.0" {
            return Err(DecodeError::new("Via protocol is not SIP/2.0", 0));
        }
        let split = rest
            .bytes()
            .position(is_lws)
            .ok_or(DecodeError::new("Via lacks sent-by", s.len()))?;
        let transport = &rest[..split];
        if transport.is_empty() || !transport.bytes().all(crate::scan::is_token_char) {
            return Err(DecodeError::new("invalid Via transport", 0));
        }
        let after = trim_lws(&rest[split..]);
        let base = s.len() - after.len();
        // sent-by = host [ SWS ":" SWS port ]
        let host_end = if after.starts_with('[') {
            after
                .find_b(b']')
                .map(|i| i + 1)
                .ok_or(DecodeError::new("unterminated IPv6 reference", base))?
        } else {
            after
                .find(|c: char| c == ':' || c == ';' || (c.is_ascii() && is_lws(c as u8)))
                .unwrap_or(after.len())
        };
        let host_raw = &after[..host_end];
        let host = Host::parse(host_raw).map_err(|e| DecodeError::new(e.what, base + e.at))?;
        let mut tail = trim_lws(&after[host_end..]);
        let mut port = None;
        if let Some(p) = tail.strip_prefix(':') {
            let p = trim_lws(p);
            let end = p.find(|c: char| !c.is_ascii_digit()).unwrap_or(p.len());
            port = Some(
                p[..end]
                    .parse::<u16>()
                    .ok()
                    .filter(|_| end > 0 && end <= 5)
                    .ok_or(DecodeError::new("invalid Via port", base + host_end))?,
            );
            tail = trim_lws(&p[end..]);
        }
        let params = match tail.strip_prefix(';') {
            Some(p) => p,
            None if tail.is_empty() => "",
            None => {
                return Err(DecodeError::new(
                    "junk after Via sent-by",
                    s.len() - tail.len(),
                ));
            }
        };
        let params = Params::new(params);
        let branch = params.get("branch").flatten();
        if branch.is_some_and(str::is_empty) {
            return Err(DecodeError::new("empty Via branch", 0));
        }
        Ok(Via {
            transport,
            host,
            host_raw,
            port,
            params,
            branch,
        })
    }

    /// The `branch` parameter.
    pub fn branch(&self) -> Option<&'a str> {
        self.branch
    }

    /// The `received` parameter.
    pub fn received(&self) -> Option<&'a str> {
        self.params.get("received").flatten()
    }

    /// `None`: no rport; `Some(None)`: rport requested (RFC 3581);
    /// `Some(Some(p))`: rport filled in.
    pub fn rport(&self) -> Option<Option<u16>> {
        self.params
            .get("rport")
            .map(|v| v.and_then(|p| p.parse().ok()))
    }
}

/// A name-addr or addr-spec with header parameters: From, To, Contact,
/// Route, Record-Route, P-Asserted-Identity, Refer-To... (RFC 3261 section 20).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NameAddr<'a> {
    /// The display name as written (quoted string keeps its quotes).
    pub display: Option<&'a str>,
    /// The URI text.
    pub uri_str: &'a str,
    /// The URI, decoded.
    pub uri: Uri<'a>,
    /// Header parameters after the address (`tag`, `expires`, `q`...).
    pub params: Params<'a>,
    /// Whether the address was in angle brackets.
    pub bracketed: bool,
}

impl<'a> NameAddr<'a> {
    /// Parses `"Name" <uri>;params`, `Name <uri>;params` or `uri;params`.
    pub fn parse(s: &'a str) -> Result<NameAddr<'a>, DecodeError> {
        let s = trim_lws(s);
        let b = s.as_bytes();
        let (display, open) = if b.first() == Some(&b'"') {
            let end =
                quoted_end(b).ok_or(DecodeError::new("unterminated quoted display name", 0))?;
            let rest = &s[end..];
            let lt = rest
                .find_b(b'<')
                .ok_or(DecodeError::new("display name without <uri>", end))?;
            if !trim_lws(&rest[..lt]).is_empty() {
                return Err(DecodeError::new("junk between display name and <uri>", end));
            }
            (Some(&s[..end]), Some(end + lt))
        } else {
            match s.find_b(b'<') {
                Some(lt) => {
                    let name = trim_lws(&s[..lt]);
                    // Unquoted display names are tokens and spaces only.
                    if let Some(i) = name
                        .bytes()
                        .position(|c| !(crate::scan::is_token_char(c) || is_lws(c) || c >= 0x80))
                    {
                        return Err(DecodeError::new("invalid character in display name", i));
                    }
                    (if name.is_empty() { None } else { Some(name) }, Some(lt))
                }
                None => (None, None),
            }
        };
        if let Some(lt) = open {
            let gt = s[lt..]
                .find_b(b'>')
                .map(|i| lt + i)
                .ok_or(DecodeError::new("unterminated <uri>", lt))?;
            let uri_str = &s[lt + 1..gt];
            let uri = Uri::parse(uri_str).map_err(|e| DecodeError::new(e.what, lt + 1 + e.at))?;
            let after = trim_lws(&s[gt + 1..]);
            let params = match after.strip_prefix(';') {
                Some(p) => p,
                None if after.is_empty() => "",
                None => return Err(DecodeError::new("junk after <uri>", gt + 1)),
            };
            return Ok(NameAddr {
                display,
                uri_str,
                uri,
                params: Params::new(params),
                bracketed: true,
            });
        }
        // addr-spec: every ';' parameter belongs to the header (RFC 3261 20.10).
        let (uri_str, params) = match s.split_once_b(b';') {
            Some((u, p)) => (trim_lws(u), p),
            None => (s, ""),
        };
        let uri = Uri::parse(uri_str)?;
        Ok(NameAddr {
            display: None,
            uri_str,
            uri,
            params: Params::new(params),
            bracketed: false,
        })
    }

    /// The `tag` parameter (From/To).
    pub fn tag(&self) -> Option<&'a str> {
        self.params.get("tag").flatten()
    }
}

/// A CSeq value: sequence number and method.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CSeq {
    /// Sequence number, below 2^31 (RFC 3261 section 8.1.1.5).
    pub seq: u32,
    /// The method.
    pub method: Method,
}

impl CSeq {
    /// Parses `1*DIGIT LWS Method`.
    pub fn parse(s: &str) -> Result<CSeq, DecodeError> {
        let s = trim_lws(s);
        let split = s
            .bytes()
            .position(is_lws)
            .ok_or(DecodeError::new("CSeq lacks a method", s.len()))?;
        let num = &s[..split];
        if num.is_empty() || num.len() > 10 || !num.bytes().all(|b| b.is_ascii_digit()) {
            return Err(DecodeError::new("CSeq number is not 1*DIGIT", 0));
        }
        let seq: u32 = num
            .parse()
            .ok()
            .filter(|n| *n < 1 << 31)
            .ok_or(DecodeError::new("CSeq number out of range", 0))?;
        let m = trim_lws(&s[split..]);
        let method = Method::from_bytes(m.as_bytes())
            .ok_or(DecodeError::new("invalid CSeq method", split))?;
        Ok(CSeq { seq, method })
    }
}

/// Parses a header holding a non-negative integer (Max-Forwards, Expires,
/// Min-Expires, Retry-After's delta): 1*DIGIT, saturating to `u32::MAX`.
/// Trailing parameters or comments after whitespace or `;` are ignored.
pub fn parse_delta(s: &str) -> Option<u32> {
    let s = trim_lws(s);
    let end = s.find([' ', '\t', ';', '(', '\r', '\n']).unwrap_or(s.len());
    let d = &s[..end];
    if d.is_empty() || !d.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(
        d.parse::<u64>()
            .map_or(u32::MAX, |v| u32::try_from(v).unwrap_or(u32::MAX)),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn via_variants() {
        let v = Via::parse("SIP/2.0/UDP 10.0.0.1:5070;branch=z9hG4bK1;rport").unwrap();
        assert_eq!(v.transport, "UDP");
        assert_eq!(v.host, Host::V4("10.0.0.1".parse().unwrap()));
        assert_eq!(v.port, Some(5070));
        assert_eq!(v.branch(), Some("z9hG4bK1"));
        assert_eq!(v.rport(), Some(None));
        let v = Via::parse(
            "SIP / 2.0 / TCP [2001:db8::1]:5060 ; branch=z9hG4bKx;received=1.2.3.4;rport=9",
        )
        .unwrap();
        assert_eq!(v.transport, "TCP");
        assert_eq!(v.host_raw, "[2001:db8::1]");
        assert_eq!(v.rport(), Some(Some(9)));
        assert_eq!(v.received(), Some("1.2.3.4"));
        let v = Via::parse("SIP/2.0/UDP\r\n host.example.com;branch=z9hG4bK2").unwrap();
        assert_eq!(v.host, Host::Domain("host.example.com"));
        for bad in [
            "SIP/3.0/UDP h",
            "SIP/2.0/UDP",
            "SIP/2.0/ h",
            "SIP/2.0/UDP h:x",
            "SIP/2.0/UDP h;branch=",
        ] {
            assert!(Via::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn name_addr_variants() {
        let n = NameAddr::parse("\"Bob \\\"B\\\" <x>\" <sip:bob@h>;tag=abc").unwrap();
        assert_eq!(n.display, Some("\"Bob \\\"B\\\" <x>\""));
        assert_eq!(n.uri_str, "sip:bob@h");
        assert_eq!(n.tag(), Some("abc"));
        let n = NameAddr::parse("Anonymous <sip:a@h;transport=tcp>").unwrap();
        assert_eq!(n.display, Some("Anonymous"));
        assert!(n.params.is_empty());
        let n = NameAddr::parse("sip:c@h;tag=1;expires=60").unwrap();
        assert_eq!(n.uri_str, "sip:c@h");
        assert_eq!(n.tag(), Some("1"));
        assert!(!n.bracketed);
        let n = NameAddr::parse("<tel:+4930123>").unwrap();
        assert_eq!(n.uri.number(), Some("+4930123"));
        for bad in [
            "\"unterminated <sip:a@h>",
            "<sip:a@h",
            "<sip:a@h> junk",
            "a\"b <sip:h>",
            "<>",
        ] {
            assert!(NameAddr::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn cseq_and_delta() {
        assert_eq!(
            CSeq::parse("  42 INVITE").unwrap(),
            CSeq {
                seq: 42,
                method: Method::Invite
            }
        );
        assert!(CSeq::parse("INVITE").is_err());
        assert!(CSeq::parse("-1 INVITE").is_err());
        assert!(CSeq::parse("4294967296 INVITE").is_err());
        assert!(CSeq::parse("2147483648 INVITE").is_err());
        assert_eq!(parse_delta("120 (busy);duration=5"), Some(120));
        assert_eq!(parse_delta("99999999999"), Some(u32::MAX));
        assert_eq!(parse_delta("x"), None);
    }
}
