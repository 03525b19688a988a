//! A small, lossless SDP model (RFC 8866, formerly 4566).
//!
//! An SDP body is a session part (every line before the first `m=`) and one
//! section per `m=` line. Every line is kept, in order, as `type=value`, so
//! attributes Palisade does not know pass through untouched; the few fields
//! the media manager rewrites (`o=`, `c=`, `m=`) are parsed on demand.
//!
//! The parser is tolerant where real peers are sloppy (line order beyond
//! `v=` first, bare LF line ends, trailing blank lines, non-UTF-8 bytes in
//! free text) and strict where a mistake would misroute media: `v=0` must
//! come first, `o=` must be well formed, every `m=` line must parse, and
//! every enabled stream must have a connection address. Sizes are capped.

use std::fmt::Write as _;
use std::net::IpAddr;

use bytes::Bytes;

use crate::error::SdpError;

/// Largest SDP body accepted.
pub const MAX_SDP_BYTES: usize = 65_536;
/// Most lines in one body.
pub const MAX_LINES: usize = 2048;
/// Most `m=` lines in one body (the relay numbers streams with a `u8`).
pub const MAX_MEDIA: usize = 32;
/// Most formats on one `m=` line.
pub const MAX_FORMATS: usize = 64;

/// One `type=value` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    /// The type letter (`a`, `c`, `b`...).
    pub kind: u8,
    /// Everything after `=`.
    pub value: String,
}

impl Line {
    /// A line of type `kind`.
    pub fn new(kind: u8, value: impl Into<String>) -> Self {
        Line {
            kind,
            value: value.into(),
        }
    }

    /// For an `a=` line: the attribute name and value (`rtpmap`, `0 PCMU/8000`).
    pub fn attr(&self) -> Option<(&str, Option<&str>)> {
        if self.kind != b'a' {
            return None;
        }
        Some(match self.value.split_once(':') {
            Some((n, v)) => (n, Some(v)),
            None => (self.value.as_str(), None),
        })
    }

    /// Whether this is attribute `name` (case-sensitive, as RFC 8866 says).
    pub fn is_attr(&self, name: &str) -> bool {
        self.attr().is_some_and(|(n, _)| n == name)
    }
}

/// One media section: the `m=` line and the lines after it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Media {
    /// `audio`, `video`, `image`, `application`...
    pub kind: String,
    /// Transport port; 0 disables the stream.
    pub port: u16,
    /// The `/<number of ports>` suffix, if any.
    pub port_count: Option<u16>,
    /// `RTP/AVP`, `RTP/SAVP`, `UDP/TLS/RTP/SAVPF`, `udptl`...
    pub proto: String,
    /// Formats (payload type numbers for RTP), in preference order.
    pub fmts: Vec<String>,
    /// The lines after `m=`, in order.
    pub lines: Vec<Line>,
}

impl Media {
    /// Values of every `a=<name>:...` line, in order.
    pub fn attr_values<'a>(&'a self, name: &str) -> impl Iterator<Item = &'a str> + 'a {
        let name = name.to_owned();
        self.lines.iter().filter_map(move |l| match l.attr() {
            Some((n, v)) if n == name => Some(v.unwrap_or("")),
            _ => None,
        })
    }

    /// The first `a=<name>` value ("" for a flag attribute).
    pub fn attr(&self, name: &str) -> Option<&str> {
        self.attr_values(name).next()
    }

    /// Whether `a=<name>` is present.
    pub fn has_attr(&self, name: &str) -> bool {
        self.lines.iter().any(|l| l.is_attr(name))
    }

    /// The media-level `c=` line, parsed.
    pub fn connection(&self) -> Option<Connection> {
        self.lines
            .iter()
            .find(|l| l.kind == b'c')
            .and_then(|l| Connection::parse(&l.value))
    }

    /// Writes the `m=` line's value.
    pub fn m_value(&self) -> String {
        let mut s = format!("{} {}", self.kind, self.port);
        if let Some(n) = self.port_count {
            let _ = write!(s, "/{n}");
        }
        s.push(' ');
        s.push_str(&self.proto);
        for f in &self.fmts {
            s.push(' ');
            s.push_str(f);
        }
        s
    }

    fn parse_m(value: &str) -> Option<Media> {
        let mut it = value.split_ascii_whitespace();
        let kind = it.next()?.to_owned();
        let port_text = it.next()?;
        let (port, port_count) = match port_text.split_once('/') {
            Some((p, n)) => (p.parse().ok()?, Some(n.parse().ok()?)),
            None => (port_text.parse().ok()?, None),
        };
        let proto = it.next()?.to_owned();
        let fmts: Vec<String> = it.map(str::to_owned).collect();
        if fmts.is_empty() || fmts.len() > MAX_FORMATS || !is_token(&kind) || proto.is_empty() {
            return None;
        }
        Some(Media {
            kind,
            port,
            port_count,
            proto,
            fmts,
            lines: Vec::new(),
        })
    }
}

/// A `c=` line: `IN IP4 <addr>[/ttl[/n]]`. `addr` is `None` for a host
/// name (Palisade resolves no names; latching finds the peer instead).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Connection {
    /// The address, when it is an IP literal.
    pub addr: Option<IpAddr>,
}

impl Connection {
    /// Parses a `c=` value.
    pub fn parse(value: &str) -> Option<Connection> {
        let mut it = value.split_ascii_whitespace();
        if it.next()? != "IN" {
            return None;
        }
        let atype = it.next()?;
        let addr = it.next()?;
        let host = addr.split('/').next().unwrap_or(addr);
        let ip = host.parse::<IpAddr>().ok();
        match (atype, ip) {
            ("IP4", Some(IpAddr::V4(_)) | None) | ("IP6", Some(IpAddr::V6(_)) | None) => {
                Some(Connection { addr: ip })
            }
            _ => None,
        }
    }
}

/// The `o=` line: `<username> <sess-id> <sess-version> IN <atype> <address>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    /// Session id (digits).
    pub sess_id: String,
    /// Session version (digits).
    pub sess_version: String,
}

impl Origin {
    fn parse(value: &str) -> Option<Origin> {
        let f: Vec<&str> = value.split_ascii_whitespace().collect();
        let [_user, id, version, "IN", _atype, _addr] = f.as_slice() else {
            return None;
        };
        if id.is_empty() || version.is_empty() {
            return None;
        }
        Some(Origin {
            sess_id: (*id).to_owned(),
            sess_version: (*version).to_owned(),
        })
    }
}

/// A parsed SDP body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sdp {
    /// Session-level lines (`v=` first), in order.
    pub session: Vec<Line>,
    /// Media sections, in order.
    pub media: Vec<Media>,
}

fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`{|}~".contains(&b))
}

impl Sdp {
    /// Parses an SDP body.
    pub fn parse(body: &[u8]) -> Result<Sdp, SdpError> {
        if body.len() > MAX_SDP_BYTES {
            return Err(SdpError::TooLarge);
        }
        let mut session: Vec<Line> = Vec::new();
        let mut media: Vec<Media> = Vec::new();
        let mut count = 0usize;
        for (i, raw) in body.split(|&b| b == b'\n').enumerate() {
            let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
            if raw.iter().all(|b| *b == b' ' || *b == b'\t') {
                continue;
            }
            count += 1;
            if count > MAX_LINES {
                return Err(SdpError::TooManyLines);
            }
            let lineno = i + 1;
            let (&kind, rest) = raw.split_first().ok_or(SdpError::BadLine(lineno))?;
            if !kind.is_ascii_lowercase() || rest.first() != Some(&b'=') {
                return Err(SdpError::BadLine(lineno));
            }
            let text = String::from_utf8_lossy(&rest[1..]);
            if text.chars().any(|c| c.is_control() && c != '\t') {
                return Err(SdpError::BadLine(lineno));
            }
            let value = text.trim_end().to_owned();
            if count == 1 && (kind != b'v' || value != "0") {
                return Err(SdpError::NoVersion);
            }
            if kind == b'm' {
                if media.len() == MAX_MEDIA {
                    return Err(SdpError::TooManyMedia);
                }
                media.push(Media::parse_m(&value).ok_or(SdpError::BadMedia(lineno))?);
                continue;
            }
            let line = Line { kind, value };
            match media.last_mut() {
                Some(m) => m.lines.push(line),
                None => session.push(line),
            }
        }
        if session.is_empty() {
            return Err(SdpError::NoVersion);
        }
        let sdp = Sdp { session, media };
        let origins = sdp.session.iter().filter(|l| l.kind == b'o').count();
        if origins != 1 || sdp.origin().is_none() {
            return Err(SdpError::BadOrigin);
        }
        for (i, m) in sdp.media.iter().enumerate() {
            if m.port != 0 && sdp.connection(i).is_none() {
                return Err(SdpError::NoConnection(i));
            }
        }
        Ok(sdp)
    }

    /// The origin.
    pub fn origin(&self) -> Option<Origin> {
        self.session
            .iter()
            .find(|l| l.kind == b'o')
            .and_then(|l| Origin::parse(&l.value))
    }

    /// The session-level `c=` line, parsed.
    pub fn session_connection(&self) -> Option<Connection> {
        self.session
            .iter()
            .find(|l| l.kind == b'c')
            .and_then(|l| Connection::parse(&l.value))
    }

    /// The connection of stream `i`: its own `c=` or the session's.
    pub fn connection(&self, i: usize) -> Option<Connection> {
        self.media
            .get(i)
            .and_then(Media::connection)
            .or_else(|| self.session_connection())
    }

    /// The session-level `a=<name>` value.
    pub fn session_attr(&self, name: &str) -> Option<&str> {
        self.session.iter().find_map(|l| match l.attr() {
            Some((n, v)) if n == name => Some(v.unwrap_or("")),
            _ => None,
        })
    }

    /// The direction of stream `i` (media level, else session level, else sendrecv).
    pub fn direction(&self, i: usize) -> Direction {
        let from = |lines: &[Line]| lines.iter().find_map(Direction::from_line);
        self.media
            .get(i)
            .and_then(|m| from(&m.lines))
            .or_else(|| from(&self.session))
            .unwrap_or(Direction::SendRecv)
    }

    /// Writes the body with CRLF line ends.
    pub fn to_bytes(&self) -> Bytes {
        let mut out = String::with_capacity(512);
        let mut line = |kind: u8, value: &str| {
            out.push(char::from(kind));
            out.push('=');
            out.push_str(value);
            out.push_str("\r\n");
        };
        for l in &self.session {
            line(l.kind, &l.value);
        }
        for m in &self.media {
            line(b'm', &m.m_value());
            for l in &m.lines {
                line(l.kind, &l.value);
            }
        }
        Bytes::from(out)
    }
}

/// A stream's direction attribute (RFC 3264 section 5.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// `a=sendrecv` (the default).
    SendRecv,
    /// `a=sendonly`.
    SendOnly,
    /// `a=recvonly`.
    RecvOnly,
    /// `a=inactive`.
    Inactive,
}

impl Direction {
    /// The direction a line states, if it is a direction attribute.
    pub fn from_line(l: &Line) -> Option<Direction> {
        if l.kind != b'a' {
            return None;
        }
        match l.value.as_str() {
            "sendrecv" => Some(Direction::SendRecv),
            "sendonly" => Some(Direction::SendOnly),
            "recvonly" => Some(Direction::RecvOnly),
            "inactive" => Some(Direction::Inactive),
            _ => None,
        }
    }

    /// The attribute name.
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::SendRecv => "sendrecv",
            Direction::SendOnly => "sendonly",
            Direction::RecvOnly => "recvonly",
            Direction::Inactive => "inactive",
        }
    }

    /// The answer to an offer with this direction when the answerer has no
    /// preference of its own (RFC 3264 section 6.1: sendonly is answered
    /// recvonly, recvonly sendonly, inactive inactive).
    pub fn answer(self) -> Direction {
        match self {
            Direction::SendOnly => Direction::RecvOnly,
            Direction::RecvOnly => Direction::SendOnly,
            other => other,
        }
    }

    /// Anything but sendrecv: the call is (at least half) on hold.
    pub fn is_hold(self) -> bool {
        self != Direction::SendRecv
    }
}

/// An RTP codec as SDP names it: encoding name (lower case), clock rate and
/// channels. Two legs may number the same codec differently.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Codec {
    /// Encoding name, lower case (`pcmu`, `telephone-event`, `opus`).
    pub name: String,
    /// Clock rate in Hz.
    pub rate: u32,
    /// Channels (1 unless the rtpmap says otherwise).
    pub channels: u16,
}

impl Codec {
    /// Parses an `rtpmap` encoding part: `PCMU/8000`, `opus/48000/2`.
    pub fn parse(encoding: &str) -> Option<Codec> {
        let mut it = encoding.trim().split('/');
        let name = it.next()?.to_ascii_lowercase();
        let rate = it.next()?.parse().ok()?;
        let channels = match it.next() {
            Some(c) => c.parse().ok()?,
            None => 1,
        };
        if name.is_empty() {
            return None;
        }
        Some(Codec {
            name,
            rate,
            channels,
        })
    }

    /// The codec of a static payload type (RFC 3551 table 4), if any.
    pub fn from_static(pt: u8) -> Option<Codec> {
        let (name, rate) = match pt {
            0 => ("pcmu", 8000),
            3 => ("gsm", 8000),
            4 => ("g723", 8000),
            5 => ("dvi4", 8000),
            6 => ("dvi4", 16000),
            7 => ("lpc", 8000),
            8 => ("pcma", 8000),
            9 => ("g722", 8000),
            10 => ("l16", 44100),
            12 => ("qcelp", 8000),
            13 => ("cn", 8000),
            14 => ("mpa", 90000),
            15 => ("g728", 8000),
            16 => ("dvi4", 11025),
            17 => ("dvi4", 22050),
            18 => ("g729", 8000),
            25 => ("celb", 90000),
            26 => ("jpeg", 90000),
            28 => ("nv", 90000),
            31 => ("h261", 90000),
            32 => ("mpv", 90000),
            33 => ("mp2t", 90000),
            34 => ("h263", 90000),
            _ => return None,
        };
        let channels = if pt == 10 { 2 } else { 1 };
        Some(Codec {
            name: name.to_owned(),
            rate,
            channels,
        })
    }

    /// DTMF events (RFC 4733): kept whatever the codec allow-list says.
    pub fn is_telephone_event(&self) -> bool {
        self.name == "telephone-event"
    }

    /// `rtpmap` encoding part.
    pub fn encoding(&self, original: Option<&str>) -> String {
        // Keep the peer's spelling of the name when there is one.
        let name = original
            .and_then(|o| o.split('/').next())
            .filter(|n| n.eq_ignore_ascii_case(&self.name))
            .map_or_else(|| self.name.to_ascii_uppercase(), str::to_owned);
        if self.channels == 1 {
            format!("{name}/{}", self.rate)
        } else {
            format!("{name}/{}/{}", self.rate, self.channels)
        }
    }
}

/// The codec behind payload type `pt` in `m`: its `a=rtpmap`, else the
/// static table.
pub fn codec_of(m: &Media, pt: u8) -> Option<Codec> {
    rtpmap(m, pt)
        .and_then(Codec::parse)
        .or_else(|| Codec::from_static(pt))
}

/// The `a=rtpmap:<pt>` encoding part.
pub fn rtpmap(m: &Media, pt: u8) -> Option<&str> {
    m.attr_values("rtpmap").find_map(|v| {
        let (n, enc) = v.split_once(' ')?;
        (n.trim().parse::<u8>().ok()? == pt).then_some(enc.trim())
    })
}

/// The payload type an attribute value is about (`rtpmap`, `fmtp`,
/// `rtcp-fb`: `<pt> ...`), or `None` for `*` and other values.
pub fn attr_pt(value: &str) -> Option<u8> {
    let first = value.split_ascii_whitespace().next()?;
    first.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const OFFER: &[u8] = b"v=0\r\no=pbx 123 456 IN IP4 10.0.0.10\r\ns=call\r\nc=IN IP4 10.0.0.10\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0 8 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-15\r\na=x-unknown:keep me\r\na=sendonly\r\n";

    #[test]
    fn parses_and_writes_back_losslessly() {
        let sdp = Sdp::parse(OFFER).unwrap();
        assert_eq!(sdp.session.len(), 5);
        assert_eq!(sdp.media.len(), 1);
        let m = &sdp.media[0];
        assert_eq!(
            (m.kind.as_str(), m.port, m.proto.as_str()),
            ("audio", 4000, "RTP/AVP")
        );
        assert_eq!(m.fmts, ["0", "8", "101"]);
        assert_eq!(m.attr("x-unknown"), Some("keep me"));
        assert_eq!(sdp.direction(0), Direction::SendOnly);
        assert_eq!(
            sdp.connection(0).unwrap().addr,
            Some("10.0.0.10".parse().unwrap())
        );
        assert_eq!(&sdp.to_bytes()[..], OFFER);
        assert_eq!(codec_of(m, 8).unwrap().name, "pcma");
        assert!(codec_of(m, 101).unwrap().is_telephone_event());
        assert_eq!(codec_of(m, 99), None);
    }

    #[test]
    fn tolerates_lf_and_blank_lines_and_refuses_broken_input() {
        let lf =
            b"v=0\no=- 1 1 IN IP4 1.2.3.4\ns=-\nc=IN IP4 1.2.3.4\nt=0 0\nm=audio 5 RTP/AVP 0\n\n\n";
        assert_eq!(Sdp::parse(lf).unwrap().media[0].port, 5);
        assert_eq!(Sdp::parse(b""), Err(SdpError::NoVersion));
        assert_eq!(
            Sdp::parse(b"o=- 1 1 IN IP4 h\r\n"),
            Err(SdpError::NoVersion)
        );
        assert_eq!(Sdp::parse(b"v=0\r\no=broken\r\n"), Err(SdpError::BadOrigin));
        assert_eq!(
            Sdp::parse(b"v=0\r\no=- 1 1 IN IP4 h\r\nm=audio x RTP/AVP 0\r\n"),
            Err(SdpError::BadMedia(3))
        );
        assert_eq!(
            Sdp::parse(b"v=0\r\no=- 1 1 IN IP4 h\r\nm=audio 4 RTP/AVP 0\r\n"),
            Err(SdpError::NoConnection(0))
        );
        assert_eq!(
            Sdp::parse(b"v=0\r\no=- 1 1 IN IP4 h\r\nbogus\r\n"),
            Err(SdpError::BadLine(3))
        );
        // A disabled stream needs no address; a host name is no address.
        let s = Sdp::parse(
            b"v=0\r\no=- 1 1 IN IP4 h\r\nc=IN IP4 pbx.example\r\nm=audio 0 RTP/AVP 0\r\n",
        )
        .unwrap();
        assert_eq!(s.connection(0).unwrap().addr, None);
    }

    #[test]
    fn directions_answer_per_rfc3264() {
        assert_eq!(Direction::SendOnly.answer(), Direction::RecvOnly);
        assert_eq!(Direction::RecvOnly.answer(), Direction::SendOnly);
        assert_eq!(Direction::Inactive.answer(), Direction::Inactive);
        assert!(!Direction::SendRecv.is_hold());
    }

    #[test]
    fn codecs_keep_their_spelling() {
        let c = Codec::parse("opus/48000/2").unwrap();
        assert_eq!(c.encoding(Some("opus/48000/2")), "opus/48000/2");
        assert_eq!(Codec::from_static(0).unwrap().encoding(None), "PCMU/8000");
        assert_eq!(attr_pt("101 0-15"), Some(101));
        assert_eq!(attr_pt("* nack"), None);
    }
}
