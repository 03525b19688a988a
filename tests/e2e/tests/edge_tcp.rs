//! A phone that registers over TCP keeps that connection, and Palisade uses
//! it (RFC 5626 style flow reuse): NAT keepalives (CRLF) and the carrier's
//! call arrive on the very connection the phone opened, although the
//! Contact names a port nobody listens on. The phone is a raw TCP socket
//! in this test (SIPp cannot register and then take a call with a new
//! Call-ID on the same connection); the carrier is SIPp.
#![allow(clippy::unwrap_used)]

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use palisade_digest::{Challenge, client_credentials};
use palisade_e2e::net::now;
use palisade_e2e::{Lab, LabConfig, Slot, numbers, raw};

const REALM: &str = "palisade.e2e";
/// MD5("+4930123555:palisade.e2e:phone-secret").
const PHONE_HA1_MD5: &str = "4de9752ac16abc1a67bd004ddd921544";
const PHONE_PASSWORD: &str = "phone-secret";
/// The Contact port: nothing listens there; only the flow reaches the phone.
const CONTACT_PORT: u16 = 5999;
/// The address the phone believes it has (its Via and Contact), as behind a
/// NAT: the slot's .77, where nothing listens either.
const PHONE_PRIVATE_HOST: u8 = 77;

/// Reads SIP messages off a TCP stream; counts bare CRLF keepalives.
struct Phone {
    stream: TcpStream,
    buf: Vec<u8>,
    keepalives: usize,
}

impl Phone {
    fn send(&mut self, text: &str) {
        self.stream.write_all(text.as_bytes()).unwrap();
    }

    /// The next SIP message within `limit` (keepalive CRLFs are counted and skipped).
    fn next(&mut self, limit: Duration) -> Option<String> {
        let end = now() + limit;
        loop {
            while self.buf.starts_with(b"\r\n") {
                if self.buf.starts_with(b"\r\n\r\n") {
                    self.keepalives += 1;
                    self.buf.drain(..4);
                } else {
                    self.buf.drain(..2);
                }
            }
            let msgs = raw::split_stream(&self.buf);
            if let Some(first) = msgs.first()
                && let Some(head_end) = first.windows(4).position(|w| w == b"\r\n\r\n")
            {
                let head = String::from_utf8_lossy(&first[..head_end]).to_lowercase();
                let body = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .and_then(|v| v.trim().parse::<usize>().ok())
                    .unwrap_or(0);
                if first.len() >= head_end + 4 + body {
                    let n = first.len();
                    let msg = String::from_utf8_lossy(first).into_owned();
                    self.buf.drain(..n);
                    return Some(msg);
                }
            }
            let now = now();
            if now >= end {
                return None;
            }
            self.stream
                .set_read_timeout(Some((end - now).max(Duration::from_millis(10))))
                .unwrap();
            let mut chunk = [0u8; 8192];
            match self.stream.read(&mut chunk) {
                Ok(0) => panic!("Palisade closed the phone's connection"),
                Ok(k) => self.buf.extend_from_slice(&chunk[..k]),
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                Err(e) => panic!("read: {e}"),
            }
        }
    }

    fn expect(&mut self, what: &str) -> String {
        let msg = self
            .next(Duration::from_secs(10))
            .unwrap_or_else(|| panic!("no {what} on the phone's connection"));
        assert!(msg.starts_with(what), "wanted {what}, got:\n{msg}");
        msg
    }
}

fn header<'a>(msg: &'a str, name: &str) -> Option<&'a str> {
    msg.split("\r\n\r\n").next()?.lines().find_map(|l| {
        let (n, v) = l.split_once(':')?;
        n.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

fn headers<'a>(msg: &'a str, name: &str) -> Vec<&'a str> {
    msg.split("\r\n\r\n")
        .next()
        .unwrap_or("")
        .lines()
        .filter(|l| {
            l.split_once(':')
                .is_some_and(|(n, _)| n.trim().eq_ignore_ascii_case(name))
        })
        .collect()
}

/// A response to `req` echoing its Via, From, To (with `to_tag`), Call-ID and CSeq.
fn response(req: &str, status: &str, to_tag: &str, extra: &str, body: &str) -> String {
    let mut out = format!("SIP/2.0 {status}\r\n");
    for v in headers(req, "Via") {
        out.push_str(v);
        out.push_str("\r\n");
    }
    let to = header(req, "To").unwrap();
    let to = if to.contains(";tag=") || to_tag.is_empty() {
        to.to_string()
    } else {
        format!("{to};tag={to_tag}")
    };
    out.push_str(&format!(
        "From: {}\r\nTo: {to}\r\nCall-ID: {}\r\nCSeq: {}\r\n{extra}Content-Length: {}\r\n\r\n{body}",
        header(req, "From").unwrap(),
        header(req, "Call-ID").unwrap(),
        header(req, "CSeq").unwrap(),
        body.len()
    ));
    out
}

#[test]
fn phone_on_tcp_gets_keepalives_and_calls_on_its_own_connection() {
    let slot = Slot::EdgeTcpFlow;
    let net = slot.net();
    let routed = LabConfig::default().render(slot);
    let route = "    number_prefixes: [\"+4930123\"]\n    to_trunk: pbx\n";
    assert!(routed.contains(route));
    let text = format!(
        "{}\nregistrar:\n  trunk: pbx\n  realm: {REALM}\n  users:\n    - user: \"{}\"\n      ha1_md5: {PHONE_HA1_MD5}\n  algorithms: [md5]\nnat:\n  keepalive: {{method: crlf, interval_seconds: 1}}\n",
        routed.replacen(route, &format!("{route}    to_registered: true\n"), 1),
        numbers::DID
    );
    let lab = Lab::builder(slot).config_text(text).start();

    let stream = raw::tcp_connect(net.pbx_ip(), net.inside());
    let local = stream.local_addr().unwrap();
    let mut phone = Phone {
        stream,
        buf: Vec::new(),
        keepalives: 0,
    };
    let uri = format!("sip:{}", net.inside_ip());
    let private = {
        let o = net.pbx_ip().octets();
        std::net::Ipv4Addr::new(o[0], o[1], o[2], PHONE_PRIVATE_HOST)
    };
    let register = |cseq: u32, auth: &str| {
        format!(
            "REGISTER {uri} SIP/2.0\r\nVia: SIP/2.0/TCP {private}:{port};branch=z9hG4bK-tcp{cseq}\r\nMax-Forwards: 70\r\n\
             From: <sip:{did}@{realm}>;tag=ph1\r\nTo: <sip:{did}@{realm}>\r\nCall-ID: tcp-reg-1\r\nCSeq: {cseq} REGISTER\r\n\
             Contact: <sip:{did}@{ip}:{CONTACT_PORT};transport=tcp>\r\nExpires: 600\r\n{auth}Content-Length: 0\r\n\r\n",
            did = numbers::DID,
            realm = REALM,
            ip = private,
            port = local.port()
        )
    };
    phone.send(&register(1, ""));
    let challenge = phone.expect("SIP/2.0 401");
    let ch = Challenge::parse(header(&challenge, "WWW-Authenticate").unwrap()).unwrap();
    let creds = client_credentials(
        &ch,
        numbers::DID,
        PHONE_PASSWORD,
        "REGISTER",
        &uri,
        "c0ffee",
        1,
    );
    phone.send(&register(
        2,
        &format!("Authorization: {}\r\n", creds.to_header()),
    ));
    let ok = phone.expect("SIP/2.0 200");
    assert!(
        header(&ok, "Contact").is_some_and(|c| c.contains(&CONTACT_PORT.to_string())),
        "{ok}"
    );

    // NAT keepalives (the Contact port differs from the source): CRLF on this connection.
    let deadline = now() + Duration::from_secs(5);
    while phone.keepalives < 2 && now() < deadline {
        assert!(
            phone.next(Duration::from_millis(500)).is_none(),
            "nothing but keepalives expected yet"
        );
    }
    assert!(
        phone.keepalives >= 2,
        "no CRLF keepalives on the flow:\n{}",
        lab.log_tail(20)
    );

    // The carrier calls the DID; the INVITE comes down the phone's connection.
    let carrier = lab.carrier_uac("uac_call").pause_ms(300).spawn();
    let invite = phone.expect("INVITE ");
    let want = format!("INVITE sip:{}@{private}:{CONTACT_PORT}", numbers::DID);
    assert!(invite.starts_with(&want), "{invite}");
    assert!(
        header(&invite, "Via").is_some_and(|v| v.starts_with("SIP/2.0/TCP ")),
        "{invite}"
    );
    let carrier_ip = net.carrier_primary_ip().to_string();
    assert!(
        !invite.contains(&carrier_ip),
        "carrier address leaked:\n{invite}"
    );
    let sdp = format!(
        "v=0\r\no=phone 1 1 IN IP4 {ip}\r\ns=-\r\nc=IN IP4 {ip}\r\nt=0 0\r\nm=audio 41000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n",
        ip = net.pbx_ip()
    );
    let contact = format!(
        "Contact: <sip:{}@{private}:{CONTACT_PORT};transport=tcp>\r\n",
        numbers::DID
    );
    phone.send(&response(&invite, "180 Ringing", "ph-call", &contact, ""));
    phone.send(&response(
        &invite,
        "200 OK",
        "ph-call",
        &format!("{contact}Content-Type: application/sdp\r\n"),
        &sdp,
    ));
    phone.expect("ACK ");
    let bye = phone.expect("BYE ");
    phone.send(&response(&bye, "200 OK", "", "", ""));
    carrier.wait().assert_success(1);

    // One connection did it all: Palisade accepted the phone's and opened
    // none (its final counters, logged at shutdown).
    let log_path = lab.dir().join("palisade.log");
    assert!(lab.shutdown().success());
    let log = std::fs::read_to_string(&log_path).unwrap();
    let counters = log
        .lines()
        .rev()
        .find(|l| l.contains("tcp_accepted="))
        .unwrap_or_else(|| panic!("no final counters in the log:\n{log}"));
    assert!(counters.contains("tcp_accepted=1 "), "{counters}");
    assert!(counters.contains("tcp_connected=0 "), "{counters}");
}
