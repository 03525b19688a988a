//! A bare HTTP/1.1 GET for the admin endpoint: std sockets, one request per
//! connection, a timeout on everything, so a hung endpoint fails the test.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// An answer: the status code, the header block (names lower-cased) and the body.
#[derive(Debug, Clone)]
pub struct Answer {
    /// The status code.
    pub status: u16,
    /// The header lines, lower-cased.
    pub head: String,
    /// The body.
    pub body: String,
}

/// `method path` to `addr`; `None` when nothing answers within 5 s.
pub fn request(addr: SocketAddr, method: &str, path: &str) -> Option<Answer> {
    let timeout = Duration::from_secs(5);
    let mut c = TcpStream::connect_timeout(&addr, timeout).ok()?;
    c.set_read_timeout(Some(timeout)).ok()?;
    c.set_write_timeout(Some(timeout)).ok()?;
    write!(
        c,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut raw = Vec::new();
    c.read_to_end(&mut raw).ok()?;
    let raw = String::from_utf8_lossy(&raw);
    let (head, body) = raw.split_once("\r\n\r\n")?;
    let status = head.get(9..12)?.parse().ok()?;
    Some(Answer {
        status,
        head: head.to_ascii_lowercase(),
        body: body.to_owned(),
    })
}

/// `GET path`.
pub fn get(addr: SocketAddr, path: &str) -> Option<Answer> {
    request(addr, "GET", path)
}

/// The value of the unlabelled sample `name` (or `name{labels}`) in
/// OpenMetrics text.
pub fn metric(text: &str, name: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}
