//! The malformed-input corpus (`tests/e2e/corpus/malformed/`) and its MANIFEST.
//! See the MANIFEST header for the expectation syntax and placeholders.

use std::fmt;
use std::net::SocketAddr;

use crate::msglog::status_of;
use crate::paths;
use crate::raw::TcpOutcome;

/// One acceptable outcome of sending a case.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Palisade answered with this status code.
    Status(u16),
    /// Nothing came back.
    Drop,
    /// TCP: Palisade closed the connection (after at most an error response).
    Close,
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Outcome::Status(c) => write!(f, "{c}"),
            Outcome::Drop => f.write_str("drop"),
            Outcome::Close => f.write_str("close"),
        }
    }
}

/// One corpus file with its expectations.
#[derive(Debug, Clone)]
pub struct Case {
    /// File name.
    pub file: String,
    /// Raw bytes, placeholders still in.
    pub bytes: Vec<u8>,
    /// Acceptable outcomes over UDP.
    pub udp: Vec<Outcome>,
    /// Acceptable outcomes over TCP.
    pub tcp: Vec<Outcome>,
    /// What the case is about.
    pub note: String,
}

fn parse_outcomes(s: &str) -> Result<Vec<Outcome>, String> {
    s.split('|')
        .map(|o| match o {
            "drop" => Ok(Outcome::Drop),
            "close" => Ok(Outcome::Close),
            code => code
                .parse::<u16>()
                .ok()
                .filter(|c| (100..700).contains(c))
                .map(Outcome::Status)
                .ok_or_else(|| format!("bad expectation {o:?}")),
        })
        .collect()
}

/// One MANIFEST line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// File name.
    pub file: String,
    /// Acceptable outcomes over UDP.
    pub udp: Vec<Outcome>,
    /// Acceptable outcomes over TCP.
    pub tcp: Vec<Outcome>,
    /// The note column.
    pub note: String,
}

/// Parses MANIFEST text: `FILE UDP TCP NOTE...`, `#` comments.
pub fn parse_manifest(text: &str) -> Result<Vec<Entry>, String> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let mut cols = line.split_whitespace();
        let (Some(file), Some(udp), Some(tcp)) = (cols.next(), cols.next(), cols.next()) else {
            return Err(format!("MANIFEST line {}: need FILE UDP TCP NOTE", i + 1));
        };
        let udp = parse_outcomes(udp).map_err(|e| format!("MANIFEST line {}: {e}", i + 1))?;
        if udp.contains(&Outcome::Close) {
            return Err(format!("MANIFEST line {}: `close` is TCP only", i + 1));
        }
        let tcp = parse_outcomes(tcp).map_err(|e| format!("MANIFEST line {}: {e}", i + 1))?;
        out.push(Entry {
            file: file.to_string(),
            udp,
            tcp,
            note: cols.collect::<Vec<_>>().join(" "),
        });
    }
    Ok(out)
}

/// Loads every case; panics if the manifest and the directory disagree.
pub fn load() -> Vec<Case> {
    let dir = paths::malformed_corpus_dir();
    let text = std::fs::read_to_string(dir.join("MANIFEST"))
        .unwrap_or_else(|e| panic!("read {}/MANIFEST: {e}", dir.display()));
    let entries = parse_manifest(&text).unwrap_or_else(|e| panic!("{e}"));
    let mut on_disk: Vec<String> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("list {}: {e}", dir.display()))
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n != "MANIFEST")
        .collect();
    on_disk.sort();
    let mut listed: Vec<String> = entries.iter().map(|e| e.file.clone()).collect();
    listed.sort();
    assert_eq!(on_disk, listed, "corpus files and MANIFEST entries differ");
    entries
        .into_iter()
        .map(|e| Case {
            bytes: std::fs::read(dir.join(&e.file))
                .unwrap_or_else(|err| panic!("read {}: {err}", e.file)),
            file: e.file,
            udp: e.udp,
            tcp: e.tcp,
            note: e.note,
        })
        .collect()
}

/// The placeholders' values for one send.
#[derive(Debug, Clone)]
pub struct Fill<'a> {
    /// The sender's `ip:port`.
    pub local: SocketAddr,
    /// Palisade's `ip:port`.
    pub palisade: SocketAddr,
    /// `UDP` or `TCP`.
    pub transport: &'a str,
    /// A fresh Call-ID.
    pub call_id: &'a str,
}

/// Replaces the placeholders in `bytes`.
pub fn fill(bytes: &[u8], f: &Fill<'_>) -> Vec<u8> {
    let pairs: [(&[u8], String); 4] = [
        (b"@LOCAL@", f.local.to_string()),
        (b"@PALISADE@", f.palisade.to_string()),
        (b"@TRANSPORT@", f.transport.to_string()),
        (b"@CALL_ID@", f.call_id.to_string()),
    ];
    let mut out = bytes.to_vec();
    for (from, to) in pairs {
        out = replace(&out, from, to.as_bytes());
    }
    out
}

fn replace(hay: &[u8], from: &[u8], to: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(hay.len());
    let mut i = 0;
    while i < hay.len() {
        if hay[i..].starts_with(from) {
            out.extend_from_slice(to);
            i += from.len();
        } else {
            out.push(hay[i]);
            i += 1;
        }
    }
    out
}

/// Classifies what came back over UDP: the first response's status, or drop.
pub fn udp_outcome(responses: &[Vec<u8>]) -> Outcome {
    responses
        .iter()
        .find_map(|r| status_of(r))
        .map_or(Outcome::Drop, Outcome::Status)
}

/// Classifies a TCP exchange. A close wins over a response that preceded it,
/// but only an error response (>= 400) may precede a close.
pub fn tcp_outcome(out: &TcpOutcome) -> Result<Outcome, String> {
    let msgs = crate::raw::split_stream(&out.received);
    let status = msgs.iter().find_map(|m| status_of(m));
    if out.closed_by_peer {
        return match status {
            Some(c) if c < 400 => Err(format!("answered {c} and then closed the connection")),
            _ => Ok(Outcome::Close),
        };
    }
    Ok(status.map_or(Outcome::Drop, Outcome::Status))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifest_syntax() {
        let m = parse_manifest("# c\n\na.sip 400|505 close why not\n").unwrap();
        assert_eq!(m.len(), 1);
        assert_eq!(m[0].udp, vec![Outcome::Status(400), Outcome::Status(505)]);
        assert_eq!(m[0].tcp, vec![Outcome::Close]);
        assert_eq!(m[0].note, "why not");
        assert!(parse_manifest("a.sip close drop x\n").is_err());
        assert!(parse_manifest("a.sip 4000 drop x\n").is_err());
        assert!(parse_manifest("a.sip 400\n").is_err());
    }

    #[test]
    fn the_shipped_corpus_loads_and_every_file_is_listed() {
        let cases = load();
        assert!(cases.len() >= 15, "{} cases", cases.len());
        let oversize = cases
            .iter()
            .find(|c| c.file.starts_with("oversize"))
            .unwrap();
        assert!(oversize.bytes.len() > 16 * 1024);
        assert!(cases.iter().any(|c| c.bytes.contains(&0)), "a NUL case");
        assert!(
            cases.iter().any(|c| std::str::from_utf8(&c.bytes).is_err()),
            "a non-UTF-8 case"
        );
    }

    #[test]
    fn fill_keeps_bodies_and_content_length_consistent() {
        let f = Fill {
            local: "127.100.35.10:40000".parse().unwrap(),
            palisade: "127.100.35.1:5060".parse().unwrap(),
            transport: "UDP",
            call_id: "cid-1",
        };
        for case in load() {
            let filled = fill(&case.bytes, &f);
            assert!(!filled.windows(7).any(|w| w == b"@LOCAL@"), "{}", case.file);
            // Placeholders live in the head only, so the body is byte-identical.
            let body = |b: &[u8]| {
                b.windows(4)
                    .position(|w| w == b"\r\n\r\n")
                    .map(|i| b[i + 4..].to_vec())
            };
            assert_eq!(body(&case.bytes), body(&filled), "{}", case.file);
        }
    }

    #[test]
    fn tcp_outcomes() {
        let out = |r: &[u8], c| TcpOutcome {
            received: r.to_vec(),
            closed_by_peer: c,
        };
        assert_eq!(tcp_outcome(&out(b"", true)), Ok(Outcome::Close));
        assert_eq!(
            tcp_outcome(&out(b"SIP/2.0 400 Bad\r\nl: 0\r\n\r\n", true)),
            Ok(Outcome::Close)
        );
        assert!(tcp_outcome(&out(b"SIP/2.0 200 OK\r\nl: 0\r\n\r\n", true)).is_err());
        assert_eq!(
            tcp_outcome(&out(b"SIP/2.0 400 Bad\r\nl: 0\r\n\r\n", false)),
            Ok(Outcome::Status(400))
        );
        assert_eq!(tcp_outcome(&out(b"", false)), Ok(Outcome::Drop));
    }
}
