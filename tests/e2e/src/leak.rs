//! Topology-hiding checks over what each peer received.
//!
//! A B2BUA must not let one side learn anything about the other: nothing the
//! carrier receives may name the PBX or Palisade's inside address, nothing the
//! PBX receives may name a carrier or the outside address, in any header or SDP
//! line (media is anchored, so SDP `c=`, `o=` and `a=rtcp` lines name
//! Palisade only); no dialog identifier (Call-ID, From/To tag, Via
//! branch) seen on one leg may appear on the other (DESIGN-NOTES section 1);
//! and nothing a peer put in a header Palisade must not copy (Server,
//! User-Agent, Warning, Record-Route, Route, any `X-` or `P-` header) may
//! reach the other side: [`marker_values`] collects those values (and the
//! long words in them) from what each peer sent, and the scan forbids them
//! on the other side. The `*_marked` scenarios fill every such header with
//! a `mark-...` token, so the scan has something to look for.

use std::collections::BTreeSet;
use std::fmt;
use std::net::Ipv4Addr;

use crate::msglog::{Direction, SipMessage};
use crate::slots::Net;

/// One leak: which peer saw what, where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leak {
    /// The peer that received it.
    pub seen_by: String,
    /// What leaked (an address or an identifier).
    pub what: String,
    /// The start line of the message it was in.
    pub message: String,
    /// The offending line.
    pub line: String,
}

impl fmt::Display for Leak {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} received {:?} in `{}` (line: {:?})",
            self.seen_by, self.what, self.message, self.line
        )
    }
}

/// Shorter identifiers are skipped: they could match by chance.
const MIN_IDENTIFIER_LEN: usize = 6;

/// Every Call-ID, From/To tag and Via branch in `log` (sent and received).
pub fn dialog_identifiers(log: &[SipMessage]) -> BTreeSet<String> {
    let mut ids = BTreeSet::new();
    for m in log {
        ids.extend(m.call_id());
        ids.extend(m.tag("From"));
        ids.extend(m.tag("To"));
        ids.extend(m.via_branches());
    }
    ids.retain(|id| id.len() >= MIN_IDENTIFIER_LEN);
    ids
}

/// Headers whose values must never cross from one leg to the other (with
/// no `pass_headers`), besides `X-*` and `P-*`.
const MARKER_HEADERS: &[&str] = &["Server", "User-Agent", "Warning", "Record-Route", "Route"];

/// Words of a marker value this long (with a letter in them) are forbidden
/// on their own too, so a partial copy is caught.
const MIN_MARKER_WORD_LEN: usize = 10;

fn is_marker_header(name: &str) -> bool {
    let n = name.trim();
    MARKER_HEADERS.iter().any(|h| n.eq_ignore_ascii_case(h))
        || n.len() > 2 && (n[..2].eq_ignore_ascii_case("x-") || n[..2].eq_ignore_ascii_case("p-"))
}

/// What `log`'s peer itself sent in marker headers (Server, User-Agent,
/// Warning, Record-Route, Route, `X-*`, `P-*`): each whole value, and each
/// word of it of at least ten characters that has a letter (`mark-uac-xheader`,
/// not `127.0.0.1` or `lr`). Addresses are the address scan's business.
pub fn marker_values(log: &[SipMessage]) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for m in log.iter().filter(|m| m.direction == Direction::Sent) {
        for line in m.header_lines() {
            let Some((name, value)) = line.split_once(':') else {
                continue;
            };
            if !is_marker_header(name) {
                continue;
            }
            let value = value.trim();
            if value.len() >= MIN_IDENTIFIER_LEN {
                out.insert(value.to_string());
            }
            for w in value.split(|c: char| !(c.is_ascii_alphanumeric() || "-_.".contains(c))) {
                if w.len() >= MIN_MARKER_WORD_LEN && w.bytes().any(|b| b.is_ascii_alphabetic()) {
                    out.insert(w.to_string());
                }
            }
        }
    }
    out
}

/// Scans every message `viewer_log` records as received for `markers`
/// (header values the other side sent, see [`marker_values`]).
pub fn scan_markers(
    viewer: &str,
    viewer_log: &[SipMessage],
    markers: &BTreeSet<String>,
) -> Vec<Leak> {
    let mut leaks = Vec::new();
    for m in viewer_log
        .iter()
        .filter(|m| m.direction == Direction::Received)
    {
        let text = m.text();
        for line in text.split('\n').map(|l| l.trim_end_matches('\r')) {
            for v in markers {
                if line.contains(v.as_str()) {
                    leaks.push(Leak {
                        seen_by: viewer.to_string(),
                        what: format!("header value {v}"),
                        message: m.start_line(),
                        line: line.to_string(),
                    });
                }
            }
        }
    }
    leaks
}

/// Scans every message `viewer_log` records as received for `forbidden`
/// addresses and for `foreign_ids` (identifiers of the other leg).
pub fn scan(
    viewer: &str,
    viewer_log: &[SipMessage],
    forbidden: &[Ipv4Addr],
    foreign_ids: &BTreeSet<String>,
) -> Vec<Leak> {
    let mut leaks = Vec::new();
    for m in viewer_log
        .iter()
        .filter(|m| m.direction == Direction::Received)
    {
        let text = m.text();
        let start = m.start_line();
        for line in text.split('\n').map(|l| l.trim_end_matches('\r')) {
            for ip in forbidden {
                if contains_address(line, &ip.to_string()) {
                    leaks.push(Leak {
                        seen_by: viewer.to_string(),
                        what: ip.to_string(),
                        message: start.clone(),
                        line: line.to_string(),
                    });
                }
            }
            for id in foreign_ids {
                if line.contains(id.as_str()) {
                    leaks.push(Leak {
                        seen_by: viewer.to_string(),
                        what: format!("identifier {id}"),
                        message: start.clone(),
                        line: line.to_string(),
                    });
                }
            }
        }
    }
    leaks
}

/// `ip` in `line` as a whole address: `127.0.0.1` does not match inside `127.0.0.10`.
pub fn contains_address(line: &str, ip: &str) -> bool {
    let bytes = line.as_bytes();
    line.match_indices(ip).any(|(i, _)| {
        let before = i.checked_sub(1).map(|j| bytes[j]);
        let after = bytes.get(i + ip.len()).copied();
        !before.is_some_and(|b| b.is_ascii_digit() || b == b'.')
            && !after.is_some_and(|b| {
                b.is_ascii_digit() || (b == b'.' && next_is_digit(bytes, i + ip.len()))
            })
    })
}

fn next_is_digit(bytes: &[u8], dot: usize) -> bool {
    bytes.get(dot + 1).is_some_and(u8::is_ascii_digit)
}

/// Checks both directions of a call through Palisade, given the PBX's and the
/// carrier's complete message logs (several carrier logs when calls failed
/// over): addresses, dialog identifiers and marker header values. Panics
/// listing every leak.
pub fn assert_topology_hidden(net: Net, pbx_log: &[SipMessage], carrier_logs: &[&[SipMessage]]) {
    assert!(
        pbx_log.iter().any(|m| m.direction == Direction::Received),
        "leak scan: the PBX received nothing, so there is nothing to scan"
    );
    let carrier_all: Vec<SipMessage> = carrier_logs
        .iter()
        .flat_map(|l| l.iter().cloned())
        .collect();
    assert!(
        carrier_all
            .iter()
            .any(|m| m.direction == Direction::Received),
        "leak scan: no carrier received anything, so there is nothing to scan"
    );
    let pbx_ids = dialog_identifiers(pbx_log);
    let carrier_ids = dialog_identifiers(&carrier_all);
    assert!(
        !pbx_ids.is_empty() && !carrier_ids.is_empty(),
        "leak scan: no identifiers found"
    );
    let mut leaks = scan("carrier", &carrier_all, &net.inside_addresses(), &pbx_ids);
    leaks.extend(scan("PBX", pbx_log, &net.outside_addresses(), &carrier_ids));
    leaks.extend(scan_markers(
        "carrier",
        &carrier_all,
        &marker_values(pbx_log),
    ));
    leaks.extend(scan_markers("PBX", pbx_log, &marker_values(&carrier_all)));
    if !leaks.is_empty() {
        let list: Vec<String> = leaks.iter().map(|l| format!("  - {l}")).collect();
        panic!("topology leaks ({}):\n{}", leaks.len(), list.join("\n"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn received(raw: &str) -> SipMessage {
        SipMessage {
            direction: Direction::Received,
            transport: "UDP".into(),
            raw: raw.as_bytes().to_vec(),
            time_of_day: None,
        }
    }

    #[test]
    fn address_match_respects_boundaries() {
        assert!(contains_address(
            "Via: SIP/2.0/UDP 127.0.0.1:5060",
            "127.0.0.1"
        ));
        assert!(contains_address("c=IN IP4 127.0.0.1", "127.0.0.1"));
        assert!(contains_address("x@127.0.0.1.", "127.0.0.1"));
        assert!(!contains_address(
            "Via: SIP/2.0/UDP 127.0.0.10:5060",
            "127.0.0.1"
        ));
        assert!(!contains_address(
            "Via: SIP/2.0/UDP 127.0.0.100",
            "127.0.0.1"
        ));
        assert!(!contains_address(
            "Via: SIP/2.0/UDP 1127.0.0.1",
            "127.0.0.1"
        ));
    }

    #[test]
    fn finds_addresses_in_headers_and_sdp_and_identifiers() {
        let msg = received(
            "INVITE sip:x@127.1.1.20 SIP/2.0\r\nVia: SIP/2.0/UDP 127.1.1.2;branch=z9hG4bKabc\r\n\
             X-Leak: callid-from-pbx\r\n\r\nv=0\r\no=a 1 1 IN IP4 127.1.1.2\r\nc=IN IP4 127.1.1.10\r\n\
             a=rtcp:4001 IN IP4 127.1.1.10\r\n",
        );
        let ids: BTreeSet<String> = ["callid-from-pbx".to_string()].into();
        let forbidden = ["127.1.1.10".parse().unwrap()];
        let leaks = scan("carrier", &[msg], &forbidden, &ids);
        assert_eq!(leaks.len(), 3, "{leaks:?}");
        assert_eq!(leaks[0].what, "identifier callid-from-pbx");
        assert_eq!(leaks[1].line, "c=IN IP4 127.1.1.10");
        assert!(leaks[2].line.starts_with("a=rtcp:"));
    }

    #[test]
    fn marker_values_come_from_what_a_peer_sent() {
        let mut sent = received(
            "INVITE sip:x@h SIP/2.0\r\nUser-Agent: mark-uac-useragent\r\nx-mark: mark-uac-xheader\r\n\
             Warning: 399 agent-name \"mark-uac-warntext\"\r\nRecord-Route: <sip:mark-uac-recroute@127.1.1.10;lr>\r\n\
             Subject: not-a-marker-header\r\nContent-Type: application/sdp\r\n\r\n",
        );
        sent.direction = Direction::Sent;
        let got = received("INVITE sip:x@h SIP/2.0\r\nX-Mark: mark-uac-xheader\r\n\r\n");
        let m = marker_values(&[sent, got.clone()]);
        for v in [
            "mark-uac-useragent",
            "mark-uac-xheader",
            "mark-uac-warntext",
            "mark-uac-recroute",
            "399 agent-name \"mark-uac-warntext\"",
        ] {
            assert!(m.contains(v), "{v} missing from {m:?}");
        }
        assert!(
            !m.iter()
                .any(|v| v.contains("not-a-marker") || v.contains("sdp")),
            "{m:?}"
        );
        assert!(
            !m.contains("127.1.1.10"),
            "addresses are the address scan's"
        );
        // Only what the peer sent counts; a received copy is the leak.
        assert_eq!(marker_values(std::slice::from_ref(&got)), BTreeSet::new());
        let leaks = scan_markers("carrier", &[got], &m);
        assert_eq!(leaks.len(), 1, "{leaks:?}");
        assert_eq!(leaks[0].what, "header value mark-uac-xheader");
    }

    #[test]
    fn sent_messages_are_not_scanned() {
        let mut msg = received("BYE sip:127.1.1.10 SIP/2.0\r\n\r\n");
        msg.direction = Direction::Sent;
        let forbidden = ["127.1.1.10".parse().unwrap()];
        assert!(scan("x", &[msg], &forbidden, &BTreeSet::new()).is_empty());
    }
}
