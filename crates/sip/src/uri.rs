//! URIs: SIP and SIPS (RFC 3261 section 19.1, IPv6 references per RFC 5118),
//! TEL (RFC 3966), and any other absolute URI kept opaque.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::error::DecodeError;
use crate::params::{FindByte, Params};

/// The host part of a SIP URI or Via sent-by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Host<'a> {
    /// A domain name, as written.
    Domain(&'a str),
    /// An IPv4 address.
    V4(Ipv4Addr),
    /// An IPv6 reference (written in brackets).
    V6(Ipv6Addr),
}

impl Host<'_> {
    /// The IP address, if the host is one.
    pub fn ip(&self) -> Option<IpAddr> {
        match *self {
            Host::Domain(_) => None,
            Host::V4(a) => Some(IpAddr::V4(a)),
            Host::V6(a) => Some(IpAddr::V6(a)),
        }
    }

    /// Parses `host` (no port): `[v6]`, dotted IPv4, or a hostname.
    pub fn parse(s: &str) -> Result<Host<'_>, DecodeError> {
        if let Some(inner) = s.strip_prefix('[') {
            let inner = inner
                .strip_suffix(']')
                .ok_or(DecodeError::new("unterminated IPv6 reference", 0))?;
            return inner
                .parse::<Ipv6Addr>()
                .map(Host::V6)
                .map_err(|_| DecodeError::new("invalid IPv6 reference", 1));
        }
        if s.is_empty() {
            return Err(DecodeError::new("empty host", 0));
        }
        if let Some(a) = dotted_quad(s).or_else(|| s.parse::<Ipv4Addr>().ok()) {
            return Ok(Host::V4(a));
        }
        // hostname = *( domainlabel "." ) toplabel [ "." ]; '_' tolerated (seen in the field).
        if let Some(i) = s
            .bytes()
            .position(|b| !(b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'_'))
        {
            return Err(DecodeError::new("invalid character in host", i));
        }
        if s.starts_with('.') || s.starts_with('-') || s.contains("..") {
            return Err(DecodeError::new("invalid hostname", 0));
        }
        Ok(Host::Domain(s))
    }
}

/// The common IPv4 form (`a.b.c.d`, decimal octets without leading zeros)
/// in one pass; `None` for anything else, which then goes to std's parser.
/// Accepts nothing std rejects and yields the same address (property test
/// below), at a fraction of the cost: every URI and Via host is tried.
fn dotted_quad(s: &str) -> Option<Ipv4Addr> {
    let b = s.as_bytes();
    if b.len() < 7 || b.len() > 15 {
        return None;
    }
    let mut octets = [0u8; 4];
    let mut part = 0;
    let mut value: u16 = 0;
    let mut digits = 0;
    for (i, &c) in b.iter().enumerate() {
        match c {
            b'0'..=b'9' => {
                // A leading zero is only the octet "0" itself.
                if digits == 1 && value == 0 {
                    return None;
                }
                value = value * 10 + u16::from(c - b'0');
                digits += 1;
                if value > 255 {
                    return None;
                }
            }
            b'.' if digits > 0 && part < 3 && i + 1 < b.len() => {
                *octets.get_mut(part)? = u8::try_from(value).ok()?;
                part += 1;
                value = 0;
                digits = 0;
            }
            _ => return None,
        }
    }
    if part != 3 || digits == 0 {
        return None;
    }
    *octets.get_mut(3)? = u8::try_from(value).ok()?;
    Some(Ipv4Addr::from(octets))
}

impl fmt::Display for Host<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Host::Domain(d) => f.write_str(d),
            Host::V4(a) => write!(f, "{a}"),
            Host::V6(a) => write!(f, "[{a}]"),
        }
    }
}

/// Splits `host[:port]`, IPv6 references included.
pub(crate) fn parse_hostport(s: &str) -> Result<(Host<'_>, Option<u16>), DecodeError> {
    let (host, port) = if s.starts_with('[') {
        let close = s
            .find_b(b']')
            .ok_or(DecodeError::new("unterminated IPv6 reference", 0))?;
        let rest = &s[close + 1..];
        let port = match rest.strip_prefix(':') {
            Some(p) => Some(p),
            None if rest.is_empty() => None,
            None => return Err(DecodeError::new("junk after IPv6 reference", close + 1)),
        };
        (&s[..=close], port)
    } else {
        match s.split_once_b(b':') {
            Some((h, p)) => (h, Some(p)),
            None => (s, None),
        }
    };
    let port = match port {
        None => None,
        Some(p) => Some(parse_port(p).ok_or(DecodeError::new("invalid port", host.len() + 1))?),
    };
    Ok((Host::parse(host)?, port))
}

fn parse_port(p: &str) -> Option<u16> {
    if p.is_empty() || p.len() > 5 || !p.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    p.parse().ok()
}

/// `sip:` or `sips:`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SipScheme {
    /// `sip:`
    Sip,
    /// `sips:` (TLS end to end)
    Sips,
}

/// A SIP or SIPS URI.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SipUri<'a> {
    /// `sip` or `sips`.
    pub scheme: SipScheme,
    /// The user part, still percent-escaped as received (may hold `;` user parameters).
    pub user: Option<&'a str>,
    /// The password, if the userinfo had one (deprecated, but legal).
    pub password: Option<&'a str>,
    /// The host.
    pub host: Host<'a>,
    /// The host as written.
    pub host_raw: &'a str,
    /// The port, if given.
    pub port: Option<u16>,
    /// URI parameters (`transport`, `user`, `lr`, `maddr`, ...).
    pub params: Params<'a>,
    /// The `?headers` part, without the `?`.
    pub headers: Option<&'a str>,
}

/// A TEL URI (RFC 3966).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TelUri<'a> {
    /// The number as written, visual separators included.
    pub number: &'a str,
    /// Parameters such as `phone-context`.
    pub params: Params<'a>,
}

/// Any URI Palisade may meet in a SIP message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Uri<'a> {
    /// `sip:` or `sips:`.
    Sip(SipUri<'a>),
    /// `tel:`.
    Tel(TelUri<'a>),
    /// Another absolute URI (`urn:`, `mailto:`, `http:`...), kept opaque.
    Other {
        /// The scheme, without the colon.
        scheme: &'a str,
        /// Everything after the colon.
        rest: &'a str,
    },
}

impl<'a> Uri<'a> {
    /// Parses an absolute URI. Whitespace anywhere is an error.
    pub fn parse(s: &'a str) -> Result<Uri<'a>, DecodeError> {
        if let Some(i) = s.bytes().position(|b| b <= b' ' || b == 0x7f) {
            return Err(DecodeError::new(
                "whitespace or control character in URI",
                i,
            ));
        }
        let colon = s
            .find_b(b':')
            .ok_or(DecodeError::new("URI has no scheme", 0))?;
        let scheme = &s[..colon];
        let rest = &s[colon + 1..];
        let valid_scheme = scheme
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_alphabetic())
            && scheme
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.'));
        if !valid_scheme {
            return Err(DecodeError::new("invalid URI scheme", 0));
        }
        if scheme.eq_ignore_ascii_case("sip") {
            parse_sip(SipScheme::Sip, rest, colon + 1).map(Uri::Sip)
        } else if scheme.eq_ignore_ascii_case("sips") {
            parse_sip(SipScheme::Sips, rest, colon + 1).map(Uri::Sip)
        } else if scheme.eq_ignore_ascii_case("tel") {
            parse_tel(rest, colon + 1).map(Uri::Tel)
        } else if rest.is_empty() {
            Err(DecodeError::new("empty URI", colon + 1))
        } else {
            Ok(Uri::Other { scheme, rest })
        }
    }

    /// The dialled number this URI carries: the user part of a SIP URI
    /// (without user parameters) or the TEL number.
    pub fn number(&self) -> Option<&'a str> {
        match self {
            Uri::Sip(u) => u.user.map(|u| u.split(';').next().unwrap_or(u)),
            Uri::Tel(t) => Some(t.number),
            Uri::Other { .. } => None,
        }
    }

    /// The SIP URI, if this is one.
    pub fn as_sip(&self) -> Option<&SipUri<'a>> {
        match self {
            Uri::Sip(u) => Some(u),
            _ => None,
        }
    }
}

fn parse_sip(scheme: SipScheme, s: &str, base: usize) -> Result<SipUri<'_>, DecodeError> {
    let rebase = |e: DecodeError, off: usize| DecodeError::new(e.what, base + off + e.at);
    let (userinfo, hostpart, hp_off) = match s.find_b(b'@') {
        Some(at) => (Some(&s[..at]), &s[at + 1..], at + 1),
        None => (None, s, 0),
    };
    let (user, password) = match userinfo {
        None => (None, None),
        Some("") => return Err(DecodeError::new("empty user part", base)),
        Some(ui) => match ui.split_once_b(b':') {
            Some((u, p)) => (Some(u), Some(p)),
            None => (Some(ui), None),
        },
    };
    if let Some(u) = user
        && let Some(i) = u
            .bytes()
            .position(|b| matches!(b, b'<' | b'>' | b'"' | b'@'))
    {
        return Err(DecodeError::new("invalid character in user part", base + i));
    }
    let (before_headers, headers) = match hostpart.split_once_b(b'?') {
        Some((a, h)) => (a, Some(h)),
        None => (hostpart, None),
    };
    let (hostport, params) = match before_headers.split_once_b(b';') {
        Some((hp, p)) => (hp, p),
        None => (before_headers, ""),
    };
    if hostport.contains_b(b'@') {
        return Err(DecodeError::new("'@' in host part", base + hp_off));
    }
    let (host, port) = parse_hostport(hostport).map_err(|e| rebase(e, hp_off))?;
    Ok(SipUri {
        scheme,
        user,
        password,
        host,
        host_raw: match hostport.rfind_b(b':') {
            Some(i) if !hostport.ends_with(']') => &hostport[..i],
            _ => hostport,
        },
        port,
        params: Params::new(params),
        headers,
    })
}

fn parse_tel(s: &str, base: usize) -> Result<TelUri<'_>, DecodeError> {
    let (number, params) = match s.split_once_b(b';') {
        Some((n, p)) => (n, p),
        None => (s, ""),
    };
    let digits = number.strip_prefix('+').unwrap_or(number);
    let ok = !digits.is_empty()
        && digits
            .bytes()
            .all(|b| b.is_ascii_hexdigit() || matches!(b, b'*' | b'#' | b'-' | b'.' | b'(' | b')'));
    if !ok {
        return Err(DecodeError::new("invalid telephone number", base));
    }
    Ok(TelUri {
        number,
        params: Params::new(params),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        #[test]
        fn dotted_quad_never_disagrees_with_std(s in "[0-9.]{0,17}|[0-9]{1,3}\\.[0-9]{1,3}\\.[0-9]{1,3}\\.[0-9]{1,3}") {
            let std = s.parse::<Ipv4Addr>().ok();
            if let Some(fast) = dotted_quad(&s) {
                proptest::prop_assert_eq!(Some(fast), std);
            }
            // Every std-valid quad of plain decimals is taken by the fast path.
            if std.is_some() {
                proptest::prop_assert_eq!(dotted_quad(&s), std);
            }
        }
    }

    fn sip(s: &str) -> SipUri<'_> {
        match Uri::parse(s).unwrap() {
            Uri::Sip(u) => u,
            other => panic!("not sip: {other:?}"),
        }
    }

    #[test]
    fn sip_uri_parts() {
        let u = sip("sip:+4930123;isub=1@carrier.example.com:5080;user=phone;lr?Subject=hi");
        assert_eq!(u.user, Some("+4930123;isub=1"));
        assert_eq!(u.host, Host::Domain("carrier.example.com"));
        assert_eq!(u.port, Some(5080));
        assert_eq!(u.params.get("user"), Some(Some("phone")));
        assert!(u.params.has("lr"));
        assert_eq!(u.headers, Some("Subject=hi"));
        assert_eq!(
            Uri::parse("sip:+4930123;isub=1@h").unwrap().number(),
            Some("+4930123")
        );
    }

    #[test]
    fn ipv6_references() {
        let u = sip("sips:alice:secret@[2001:db8::10]:5061;transport=tls");
        assert_eq!(u.scheme, SipScheme::Sips);
        assert_eq!(u.password, Some("secret"));
        assert_eq!(u.host, Host::V6("2001:db8::10".parse().unwrap()));
        assert_eq!(u.host_raw, "[2001:db8::10]");
        assert_eq!(u.port, Some(5061));
        let u = sip("sip:[::1]");
        assert_eq!(u.port, None);
        assert!(Uri::parse("sip:[2001:db8::10:5060").is_err());
        assert!(Uri::parse("sip:2001:db8::10").is_err());
    }

    #[test]
    fn tel_and_other() {
        let Uri::Tel(t) = Uri::parse("tel:+1-201-555-0123;phone-context=x").unwrap() else {
            panic!()
        };
        assert_eq!(t.number, "+1-201-555-0123");
        assert!(matches!(
            Uri::parse("urn:service:sos"),
            Ok(Uri::Other { scheme: "urn", .. })
        ));
        assert!(Uri::parse("tel:xyz").is_err());
    }

    #[test]
    fn rejects_garbage() {
        for bad in [
            "",
            "sip:",
            "sip:@host",
            "sip:a b@c",
            "nocolon",
            "1sip:x",
            "sip:a@b@c",
            "sip:h:99999",
            "sip:h:",
        ] {
            assert!(Uri::parse(bad).is_err(), "{bad:?} should fail");
        }
    }
}
