//! Reads SIPp's `-trace_msg` log (`-message_file`) back into messages.
//!
//! SIPp writes each message as a separator line of dashes and a timestamp, a
//! line `UDP message sent (N bytes):` or `TCP message received [N] bytes :`, an
//! empty line, then exactly N bytes of the message. The byte count lets us take
//! the message verbatim, body and all, even when it contains dashes or NULs.

use std::path::Path;

/// Which way a logged message went, seen from the SIPp peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// The peer sent it.
    Sent,
    /// The peer received it.
    Received,
}

/// One SIP message from a SIPp log.
#[derive(Debug, Clone, PartialEq)]
pub struct SipMessage {
    /// Sent or received by the peer that logged it.
    pub direction: Direction,
    /// `UDP`, `TCP`, ... as SIPp logged it.
    pub transport: String,
    /// The message bytes as they went over the wire.
    pub raw: Vec<u8>,
    /// When SIPp logged it, in seconds since midnight (SIPp's local clock).
    pub time_of_day: Option<f64>,
}

impl SipMessage {
    /// The message as text (lossy for non-UTF-8 bytes).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.raw).into_owned()
    }

    /// The start line.
    pub fn start_line(&self) -> String {
        let text = self.text();
        text.lines().next().unwrap_or("").trim_end().to_string()
    }

    /// The method of a request, `None` for a response.
    pub fn method(&self) -> Option<String> {
        let line = self.start_line();
        if line.starts_with("SIP/") {
            return None;
        }
        line.split(' ').next().map(str::to_string)
    }

    /// The status code of a response, `None` for a request.
    pub fn status(&self) -> Option<u16> {
        status_of(&self.raw)
    }

    /// Whether this is a request with this method.
    pub fn is_request(&self, method: &str) -> bool {
        self.method()
            .is_some_and(|m| m.eq_ignore_ascii_case(method))
    }

    /// The head's lines after the start line, without line ends.
    pub fn header_lines(&self) -> Vec<String> {
        let text = self.text();
        let head = text.split("\r\n\r\n").next().unwrap_or("");
        head.lines()
            .skip(1)
            .map(|l| l.trim_end().to_string())
            .collect()
    }

    /// Every value of the header `name` (case-insensitive; compact forms of the
    /// common headers understood), in order, comma lists not split.
    pub fn header_values(&self, name: &str) -> Vec<String> {
        let compact = compact_form(name);
        self.header_lines()
            .iter()
            .filter_map(|line| {
                let (n, v) = line.split_once(':')?;
                let n = n.trim();
                (n.eq_ignore_ascii_case(name) || compact.is_some_and(|c| n.eq_ignore_ascii_case(c)))
                    .then(|| v.trim().to_string())
            })
            .collect()
    }

    /// The first value of the header `name`.
    pub fn header(&self, name: &str) -> Option<String> {
        self.header_values(name).into_iter().next()
    }

    /// The body (after the first empty line).
    pub fn body(&self) -> &[u8] {
        match find(&self.raw, b"\r\n\r\n") {
            Some(i) => &self.raw[i + 4..],
            None => &[],
        }
    }

    /// The Call-ID.
    pub fn call_id(&self) -> Option<String> {
        self.header("Call-ID")
    }

    /// The `tag` parameter of the header `name` (From or To).
    pub fn tag(&self, name: &str) -> Option<String> {
        self.header(name).and_then(|v| param(&v, "tag"))
    }

    /// The `branch` parameter of every Via value.
    pub fn via_branches(&self) -> Vec<String> {
        self.header_values("Via")
            .iter()
            .flat_map(|v| v.split(',').map(str::to_string).collect::<Vec<_>>())
            .filter_map(|v| param(&v, "branch"))
            .collect()
    }
}

/// The status code when `raw` starts like a SIP response.
pub fn status_of(raw: &[u8]) -> Option<u16> {
    let rest = raw.strip_prefix(b"SIP/2.0 ")?;
    let code = std::str::from_utf8(rest.get(..3)?).ok()?;
    code.parse().ok()
}

fn compact_form(name: &str) -> Option<&'static str> {
    const FORMS: &[(&str, &str)] = &[
        ("Via", "v"),
        ("From", "f"),
        ("To", "t"),
        ("Call-ID", "i"),
        ("Contact", "m"),
        ("Content-Length", "l"),
        ("Content-Type", "c"),
        ("Subject", "s"),
        ("Supported", "k"),
    ];
    FORMS
        .iter()
        .find(|(long, _)| long.eq_ignore_ascii_case(name))
        .map(|(_, short)| *short)
}

/// The value of `;name=value` in a header value, outside `<...>`.
fn param(value: &str, name: &str) -> Option<String> {
    let after_uri = match value.rfind('>') {
        Some(i) => &value[i + 1..],
        None => value,
    };
    after_uri.split(';').skip(1).find_map(|p| {
        let (k, v) = p.split_once('=')?;
        k.trim()
            .eq_ignore_ascii_case(name)
            .then(|| v.trim().to_string())
    })
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Parses a SIPp message log. Lines outside a message that are not a
/// separator (SIPp sometimes logs socket warnings such as `Problem EAGAIN on
/// socket` there) are skipped.
pub fn parse(log: &[u8]) -> Vec<SipMessage> {
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < log.len() {
        let line_end = find(&log[pos..], b"\n").map_or(log.len(), |i| pos + i);
        let line = &log[pos..line_end];
        pos = (line_end + 1).min(log.len());
        if !line.starts_with(b"-----") {
            continue;
        }
        // A separator: the description line must follow.
        let desc_end = find(&log[pos..], b"\n").map_or(log.len(), |i| pos + i);
        let desc = String::from_utf8_lossy(&log[pos..desc_end]).into_owned();
        let Some((direction, len)) = describe(&desc) else {
            continue;
        };
        let time_of_day = time_of_day(&String::from_utf8_lossy(line));
        pos = (desc_end + 1).min(log.len());
        let transport = desc.split(' ').next().unwrap_or("").to_string();
        // An empty line, then exactly `len` bytes.
        if log.get(pos) == Some(&b'\n') {
            pos += 1;
        }
        let end = (pos + len).min(log.len());
        out.push(SipMessage {
            direction,
            transport,
            raw: log[pos..end].to_vec(),
            time_of_day,
        });
        pos = end;
    }
    out
}

/// `----- 2026-11-22 04:00:04.052069` to seconds since midnight.
fn time_of_day(sep: &str) -> Option<f64> {
    let t = sep.split_whitespace().last()?;
    let mut parts = t.split(':');
    let h: f64 = parts.next()?.parse().ok()?;
    let m: f64 = parts.next()?.parse().ok()?;
    let s: f64 = parts.next()?.parse().ok()?;
    Some(h * 3600.0 + m * 60.0 + s)
}

/// `UDP message sent (655 bytes):` or `UDP message received [265] bytes :`.
fn describe(desc: &str) -> Option<(Direction, usize)> {
    let digits = |s: &str| -> Option<usize> {
        let start = s.find(|c: char| c.is_ascii_digit())?;
        let rest = &s[start..];
        let end = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        rest[..end].parse().ok()
    };
    if let Some(i) = desc.find("message sent") {
        return Some((Direction::Sent, digits(&desc[i..])?));
    }
    if let Some(i) = desc.find("message received") {
        return Some((Direction::Received, digits(&desc[i..])?));
    }
    None
}

/// Reads and parses a SIPp message log file; a missing file is an empty log
/// (SIPp creates it only when it logs something).
pub fn read(path: &Path) -> Vec<SipMessage> {
    match std::fs::read(path) {
        Ok(bytes) => parse(&bytes),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => panic!("cannot read {}: {e}", path.display()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOG: &[u8] =
        b"----------------------------------------------- 2026-11-22 03:57:52.340003\n\
UDP message sent (44 bytes):\n\n\
OPTIONS sip:a SIP/2.0\r\nCall-ID: x\r\n\r\n-----\r\n\n\
----------------------------------------------- 2026-11-22 03:57:52.340051\n\
TCP message received [81] bytes :\n\n\
SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1, SIP/2.0/UDP g;branch=z9hG4bK2\r\n\r\n\n\n";

    #[test]
    fn splits_by_byte_count_even_with_dashes_in_the_body() {
        let msgs = parse(LOG);
        assert_eq!(msgs.len(), 2);
        assert_eq!(msgs[0].direction, Direction::Sent);
        assert_eq!(msgs[0].transport, "UDP");
        assert!(msgs[0].is_request("options"));
        assert_eq!(msgs[0].call_id().as_deref(), Some("x"));
        assert_eq!(msgs[0].body(), b"-----\r\n");
        let t = msgs[0].time_of_day.unwrap();
        assert!(
            (t - (3.0 * 3600.0 + 57.0 * 60.0 + 52.340003)).abs() < 1e-6,
            "{t}"
        );
        assert_eq!(msgs[1].direction, Direction::Received);
        assert_eq!(msgs[1].transport, "TCP");
        assert_eq!(msgs[1].status(), Some(200));
        assert_eq!(msgs[1].via_branches(), vec!["z9hG4bK1", "z9hG4bK2"]);
    }

    #[test]
    fn skips_socket_warnings_between_messages() {
        let mut log = b"Problem EAGAIN on socket  7 and poll_idx  is 1 \n".to_vec();
        log.extend_from_slice(LOG);
        log.extend_from_slice(b"Problem EAGAIN on socket  7 and poll_idx  is 1 \n");
        assert_eq!(parse(&log).len(), 2);
    }

    #[test]
    fn tags_come_from_outside_the_uri() {
        let m = SipMessage {
            direction: Direction::Received,
            transport: "UDP".into(),
            raw: b"BYE sip:x SIP/2.0\r\nf: <sip:a;tag=no>;tag=yes\r\nTo: \"B\" <sip:b>;tag=t2\r\n\r\n"
                .to_vec(),
            time_of_day: None,
        };
        assert_eq!(m.tag("From").as_deref(), Some("yes"));
        assert_eq!(m.tag("To").as_deref(), Some("t2"));
        assert_eq!(m.method().as_deref(), Some("BYE"));
    }
}
