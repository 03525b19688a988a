#![allow(clippy::disallowed_methods)] // tests: one real origin for the virtual clock

use super::*;
use bytes::Bytes;
use palisade_sip::ParseLimits;

fn register(via: &str, contact: &str) -> Message {
    let raw = format!(
        "REGISTER sip:example SIP/2.0\r\nVia: SIP/2.0/UDP {via};branch=z9hG4bK1;rport\r\n\
         From: <sip:a@example>;tag=1\r\nTo: <sip:a@example>\r\nCall-ID: c\r\nCSeq: 1 REGISTER\r\n\
         Contact: <{contact}>\r\nContent-Length: 0\r\n\r\n"
    );
    Message::parse(
        Bytes::from(raw),
        &ParseLimits {
            max_message_bytes: 65535,
            max_headers: 64,
        },
    )
    .unwrap()
}

#[test]
fn private_ranges() {
    for ip in [
        "10.1.2.3",
        "172.16.0.1",
        "192.168.1.1",
        "100.64.0.1",
        "100.127.255.1",
        "169.254.1.1",
        "fd00::1",
        "fe80::1",
    ] {
        assert!(is_private(ip.parse().unwrap()), "{ip}");
    }
    for ip in [
        "8.8.8.8",
        "100.128.0.1",
        "127.0.0.1",
        "2001:db8::1",
        "203.0.113.5",
    ] {
        assert!(!is_private(ip.parse().unwrap()), "{ip}");
    }
}

#[test]
fn detects_mismatched_and_private_addresses() {
    let src: SocketAddr = "203.0.113.7:40001".parse().unwrap();
    let m = register("192.168.1.50:5060", "sip:a@192.168.1.50:5060");
    let f = detect(&m, src, Transport::Udp);
    assert!(f.via_mismatch && f.contact_mismatch && f.private_contact && f.nated());
    // Same host, another port (a port-translating NAT).
    let m = register("203.0.113.7:5060", "sip:a@203.0.113.7:5060");
    let f = detect(&m, src, Transport::Udp);
    assert!(f.via_mismatch && f.contact_mismatch && !f.private_contact);
    // Over TCP only the host counts.
    assert!(!detect(&m, src, Transport::Tcp).nated());
    // Not NATed: everything matches (default port 5060 included).
    let direct: SocketAddr = "203.0.113.7:5060".parse().unwrap();
    let m = register("203.0.113.7", "sip:a@203.0.113.7");
    assert!(!detect(&m, direct, Transport::Udp).nated());
}

#[test]
fn an_invite_with_a_private_sdp_address_is_nated() {
    let sdp = "v=0\r\no=- 1 1 IN IP4 192.168.77.10\r\ns=-\r\nc=IN IP4 192.168.77.10\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n";
    let raw = |via: &str, contact: &str| {
        format!(
            "INVITE sip:1@example SIP/2.0\r\nVia: SIP/2.0/UDP {via};branch=z9hG4bK1;rport\r\n\
             From: <sip:a@example>;tag=1\r\nTo: <sip:1@example>\r\nCall-ID: c\r\nCSeq: 1 INVITE\r\n\
             Contact: <{contact}>\r\nContent-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{sdp}",
            sdp.len()
        )
    };
    let parse = |s: String| {
        Message::parse(
            Bytes::from(s),
            &ParseLimits {
                max_message_bytes: 65535,
                max_headers: 64,
            },
        )
        .unwrap()
    };
    let src: SocketAddr = "198.51.100.2:5070".parse().unwrap();
    // A SIP-aware NAT fixed Via and Contact, but not the SDP.
    let m = parse(raw("198.51.100.2:5070", "sip:p@198.51.100.2:5070"));
    let f = detect(&m, src, Transport::Udp);
    assert!(!f.via_mismatch && !f.contact_mismatch && !f.private_contact);
    assert!(f.private_sdp && f.nated());
    // From a private source (same LAN): private SDP is no NAT sign.
    let lan: SocketAddr = "192.168.77.10:5070".parse().unwrap();
    let m = parse(raw("192.168.77.10:5070", "sip:p@192.168.77.10:5070"));
    assert!(!detect(&m, lan, Transport::Udp).nated());
}

#[test]
fn sdp_connection_address() {
    let sdp = b"v=0\r\no=- 1 1 IN IP4 192.168.1.50\r\ns=-\r\nc=IN IP4 192.168.1.50\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n";
    assert_eq!(sdp_connection(sdp), Some("192.168.1.50".parse().unwrap()));
    assert_eq!(
        sdp_connection(b"c=IN IP4 224.2.1.1/127\r\n"),
        Some("224.2.1.1".parse().unwrap())
    );
    assert_eq!(sdp_connection(b"v=0\r\n"), None);
}

#[test]
fn keepalive_schedule_pings_counts_misses_and_recovers() {
    let t0 = Instant::now();
    let mut k = KeepaliveSchedule::new(2);
    assert!(k.set("a", KeepaliveMethod::Options, Duration::from_secs(10), t0));
    assert!(k.set("b", KeepaliveMethod::Crlf, Duration::from_secs(4), t0));
    assert!(
        !k.set("c", KeepaliveMethod::Crlf, Duration::from_secs(4), t0),
        "bounded"
    );
    assert_eq!(k.poll_timeout(), Some(t0 + Duration::from_secs(4)));
    let (send, missed) = k.due(t0 + Duration::from_secs(4));
    assert_eq!(send, vec![("b", KeepaliveMethod::Crlf)]);
    assert!(missed.is_empty());
    let (send, _) = k.due(t0 + Duration::from_secs(10));
    assert!(send.contains(&("a", KeepaliveMethod::Options)));
    // No answer before the next one is due: one miss.
    let (_, missed) = k.due(t0 + Duration::from_secs(20));
    assert_eq!(missed, vec![("a", 1)]);
    assert_eq!(k.on_result(&"a", false), Some(Health::Missed(2)));
    assert_eq!(k.on_result(&"a", true), Some(Health::Up));
    // CRLF pings never count misses.
    for s in 1..10 {
        let (_, missed) = k.due(t0 + Duration::from_secs(20 + 4 * s));
        assert!(missed.iter().all(|(key, _)| *key != "b"));
    }
    k.remove(&"a");
    k.retain(|key| *key != "b");
    assert!(k.is_empty() && k.poll_timeout().is_none());
}
