//! Scanner fingerprints: User-Agent substrings and what sipvicious leaves in
//! every request whatever its User-Agent.

/// Whether `user_agent` contains one of `needles` (lower-case), ignoring case.
pub fn scanner_user_agent<'a>(user_agent: &str, needles: &'a [String]) -> Option<&'a str> {
    if user_agent.is_empty() {
        return None;
    }
    let ua = user_agent.to_ascii_lowercase();
    needles
        .iter()
        .find(|n| !n.is_empty() && ua.contains(n.as_str()))
        .map(String::as_str)
}

/// sipvicious builds its From tag as hex of `<data> 0x01 <decimal random>`
/// (`createTag` in its helper module): an even number of hex digits whose
/// bytes hold exactly one 0x01 followed only by ASCII digits.
pub fn sipvicious_tag(tag: &str) -> bool {
    let b = tag.as_bytes();
    if b.len() < 4 || b.len() > 256 || !b.len().is_multiple_of(2) {
        return false;
    }
    let mut bytes = Vec::with_capacity(b.len() / 2);
    for pair in b.chunks_exact(2) {
        let (Some(h), Some(l)) = (hex(pair[0]), hex(pair[1])) else {
            return false;
        };
        bytes.push(h << 4 | l);
    }
    let mut parts = bytes.split(|&x| x == 1);
    let (Some(_data), Some(rnd), None) = (parts.next(), parts.next(), parts.next()) else {
        return false;
    };
    !rnd.is_empty() && rnd.iter().all(u8::is_ascii_digit)
}

fn hex(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// sipvicious' default Contact `sip:123@1.1.1.1` (and its From `sip:100@1.1.1.1`).
pub fn sipvicious_uri(uri: &str) -> bool {
    let u = uri.trim().trim_start_matches('<').trim_end_matches('>');
    u.eq_ignore_ascii_case("sip:123@1.1.1.1") || u.eq_ignore_ascii_case("sip:100@1.1.1.1")
}

/// sipvicious' default From display name.
pub fn sipvicious_display(display: &str) -> bool {
    display
        .trim()
        .trim_matches('"')
        .eq_ignore_ascii_case("sipvicious")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_agents_match_case_insensitively() {
        let list: Vec<String> = palisade_config::DEFAULT_SCANNER_USER_AGENTS
            .iter()
            .map(|s| (*s).to_owned())
            .collect();
        assert_eq!(
            scanner_user_agent("friendly-scanner", &list),
            Some("friendly-scanner")
        );
        assert_eq!(
            scanner_user_agent("VaxSIPUserAgent/3.1", &list),
            Some("vaxsipuseragent")
        );
        assert_eq!(scanner_user_agent("PPLSIP-1.0", &list), Some("pplsip"));
        assert_eq!(scanner_user_agent("sipcli/v1.8", &list), Some("sipcli"));
        assert_eq!(scanner_user_agent("Asterisk PBX 20.1", &list), None);
        assert_eq!(scanner_user_agent("", &list), None);
    }

    #[test]
    fn sipvicious_tags_are_recognised() {
        // createTag("100") with random 1234567890.
        let tag: String = b"100\x011234567890"
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert!(sipvicious_tag(&tag));
        assert!(sipvicious_tag(&tag.to_uppercase()));
        // Ordinary tags from SIPp, Asterisk, Palisade.
        assert!(!sipvicious_tag("1-2345@127.0.0.10"));
        assert!(!sipvicious_tag("as5f3c2a1b"));
        assert!(!sipvicious_tag("deadbeef"));
        assert!(!sipvicious_tag("0101"));
        // Nothing after the 0x01, or two of them.
        assert!(!sipvicious_tag("31303001"));
        assert!(!sipvicious_tag("3101310131"));
    }

    #[test]
    fn sipvicious_uris_and_display() {
        assert!(sipvicious_uri("sip:123@1.1.1.1"));
        assert!(sipvicious_uri("<sip:100@1.1.1.1>"));
        assert!(!sipvicious_uri("sip:123@10.1.1.1"));
        assert!(sipvicious_display("\"sipvicious\""));
        assert!(!sipvicious_display("Alice"));
    }
}
