//! Serialising messages: [`MessageWriter`] builds new messages (copying any
//! original header line byte-exact when asked), [`Editor`] applies recorded
//! edits over an original message, and [`salvage_request`] recovers enough of
//! an unparseable request to answer it with a 400.

use std::fmt::{self, Write as _};
use std::net::SocketAddr;

use bytes::{BufMut, Bytes, BytesMut};

use crate::headers::{CSeq, NameAddr, Via};
use crate::message::Message;
use crate::method::Method;
use crate::name::HeaderName;
use crate::params::split_list;
use crate::scan::{HeaderLines, find_head_end};

/// Writes `value` into `buf`, turning CR, LF and NUL into spaces so a value
/// that came from a peer can never inject a header line.
fn put_sanitized(buf: &mut BytesMut, value: &[u8]) {
    let mut rest = value;
    while let Some(i) = memchr::memchr3(b'\r', b'\n', 0, rest) {
        buf.put_slice(&rest[..i]);
        buf.put_u8(b' ');
        rest = &rest[i + 1..];
    }
    buf.put_slice(rest);
}

/// Whether `name` is a valid header name token.
fn is_token(name: &str) -> bool {
    !name.is_empty() && name.bytes().all(crate::scan::is_token_char)
}

/// Builds a new SIP message head by head line, then the body.
///
/// Content-Length is always written by [`MessageWriter::finish`]; callers
/// must not add it themselves.
#[derive(Debug)]
pub struct MessageWriter {
    buf: BytesMut,
}

impl MessageWriter {
    /// Starts a request: `METHOD uri SIP/2.0`.
    pub fn request(method: &Method, uri: &str) -> Self {
        let mut buf = BytesMut::with_capacity(1024);
        buf.put_slice(method.as_str().as_bytes());
        buf.put_u8(b' ');
        put_sanitized(&mut buf, uri.as_bytes());
        buf.put_slice(b" SIP/2.0\r\n");
        MessageWriter { buf }
    }

    /// Starts a response: `SIP/2.0 code reason`.
    pub fn response(status: u16, reason: &[u8]) -> Self {
        let mut buf = BytesMut::with_capacity(1024);
        let _ = write!(buf, "SIP/2.0 {status} ");
        put_sanitized(&mut buf, reason);
        buf.put_slice(b"\r\n");
        MessageWriter { buf }
    }

    /// Adds `Name: value` with the canonical spelling of `name`.
    pub fn header(&mut self, name: HeaderName, value: &str) -> &mut Self {
        self.header_named(name.as_str(), value.as_bytes())
    }

    /// Adds `Name: <formatted value>` without an intermediate allocation.
    pub fn header_fmt(&mut self, name: HeaderName, value: fmt::Arguments<'_>) -> &mut Self {
        self.buf.put_slice(name.as_str().as_bytes());
        self.buf.put_slice(b": ");
        let start = self.buf.len();
        let _ = self.buf.write_fmt(value);
        // Formatted values are ours, but may embed peer text: sanitise in place.
        for b in &mut self.buf[start..] {
            if matches!(*b, b'\r' | b'\n' | 0) {
                *b = b' ';
            }
        }
        self.buf.put_slice(b"\r\n");
        self
    }

    /// Adds a header with any token name (extension headers such as `X-MS-SBC`).
    /// An invalid name is skipped: a name that is not a token would corrupt
    /// the message.
    pub fn header_named(&mut self, name: &str, value: &[u8]) -> &mut Self {
        if !is_token(name) {
            return self;
        }
        self.buf.put_slice(name.as_bytes());
        self.buf.put_slice(b": ");
        put_sanitized(&mut self.buf, value);
        self.buf.put_slice(b"\r\n");
        self
    }

    /// Copies an original header line byte-exact (folding included); the
    /// terminator is normalised to CRLF.
    pub fn copy_line(&mut self, line: &[u8]) -> &mut Self {
        let line = line.strip_suffix(b"\n").unwrap_or(line);
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        self.buf.put_slice(line);
        self.buf.put_slice(b"\r\n");
        self
    }

    /// Bytes written so far (the head, without Content-Length).
    pub fn len(&self) -> usize {
        self.buf.len()
    }

    /// Whether nothing has been written (never true after construction).
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// Finishes with no body.
    pub fn finish_empty(self) -> Bytes {
        self.finish(None, &[])
    }

    /// Writes Content-Type (when given), Content-Length, the blank line and the body.
    pub fn finish(mut self, content_type: Option<&str>, body: &[u8]) -> Bytes {
        if let Some(ct) = content_type {
            self.header(HeaderName::ContentType, ct);
        }
        let _ = write!(self.buf, "Content-Length: {}\r\n\r\n", body.len());
        self.buf.put_slice(body);
        self.buf.freeze()
    }

    /// Starts a response to `req` per RFC 3261 section 8.2.6: copies every
    /// Via (the top one with RFC 3581 `received`/`rport` filled from
    /// `source`), From, To (adding `to_tag` when the request has none), Call-ID
    /// and CSeq.
    pub fn response_to(
        req: &Message,
        status: u16,
        reason: &str,
        source: Option<SocketAddr>,
        to_tag: Option<&str>,
    ) -> Self {
        let mut w = MessageWriter::response(status, reason.as_bytes());
        let mut first_via = true;
        for h in req.headers() {
            match h.name {
                HeaderName::Via if first_via => {
                    first_via = false;
                    w.write_vias_with_received(h.value, source);
                }
                HeaderName::Via | HeaderName::From | HeaderName::CallId | HeaderName::CSeq => {
                    w.copy_line(h.line);
                }
                HeaderName::To => match to_tag {
                    Some(tag) if req.to_tag().is_none() => {
                        w.copy_line_with_suffix(h.line, b";tag=", tag.as_bytes());
                    }
                    _ => {
                        w.copy_line(h.line);
                    }
                },
                _ => {}
            }
        }
        w
    }

    fn copy_line_with_suffix(&mut self, line: &[u8], a: &[u8], b: &[u8]) {
        let line = line.strip_suffix(b"\n").unwrap_or(line);
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        self.buf.put_slice(line);
        self.buf.put_slice(a);
        put_sanitized(&mut self.buf, b);
        self.buf.put_slice(b"\r\n");
    }

    /// Writes the values of the first Via header line: the top value with
    /// `received`/`rport` set (RFC 3581 section 4), the rest unchanged.
    fn write_vias_with_received(&mut self, value: &[u8], source: Option<SocketAddr>) {
        let Ok(text) = std::str::from_utf8(value) else {
            return;
        };
        for (i, v) in split_list(text).enumerate() {
            self.buf.put_slice(b"Via: ");
            put_sanitized(&mut self.buf, v.as_bytes());
            if i == 0
                && let (Some(src), Ok(via)) = (source, Via::parse(v))
            {
                let rport = via.rport();
                let host_differs = via.host.ip() != Some(src.ip());
                if via.received().is_none() && (host_differs || rport.is_some()) {
                    let _ = write!(self.buf, ";received={}", src.ip());
                }
                if rport == Some(None) {
                    // Replace the bare flag by appending the value form:
                    // a second `rport` is ambiguous, so rewrite the line.
                    self.rewrite_last_rport(src.port());
                }
            }
            self.buf.put_slice(b"\r\n");
        }
    }

    /// Turns a bare `;rport` in the line just written into `;rport=PORT`.
    fn rewrite_last_rport(&mut self, port: u16) {
        let line_start = self.buf[..]
            .windows(2)
            .rposition(|w| w == b"\r\n")
            .map_or(0, |i| i + 2);
        let line = &self.buf[line_start..];
        let mut pos = None;
        let mut i = 0;
        while let Some(rel) = memchr::memchr(b';', &line[i..]) {
            let at = i + rel;
            let rest = &line[at + 1..];
            let trimmed = rest
                .iter()
                .position(|b| *b != b' ' && *b != b'\t')
                .unwrap_or(rest.len());
            let name = &rest[trimmed..];
            if name.len() >= 5
                && name[..5].eq_ignore_ascii_case(b"rport")
                && name
                    .get(5)
                    .is_none_or(|c| matches!(c, b';' | b' ' | b'\t' | b','))
            {
                pos = Some(line_start + at + 1 + trimmed + 5);
            }
            i = at + 1;
        }
        if let Some(p) = pos {
            let tail = self.buf.split_off(p);
            let _ = write!(self.buf, "={port}");
            self.buf.unsplit(tail);
        }
    }
}

impl MessageWriter {
    /// The CANCEL for `invite` (RFC 3261 section 9.1): same Request-URI,
    /// top Via, From, To, Call-ID and CSeq number, and the same Route set.
    pub fn cancel_for(invite: &Message) -> Bytes {
        Self::hop_by_hop_for(invite, &Method::Cancel, None)
    }

    /// The ACK for a 300-699 final response (RFC 3261 section 17.1.1.3):
    /// like CANCEL, but To comes from the response (it carries the tag).
    pub fn ack_for_failure(invite: &Message, response: &Message) -> Bytes {
        let to = response
            .headers()
            .find(|h| h.name == HeaderName::To)
            .map(|h| h.line);
        Self::hop_by_hop_for(invite, &Method::Ack, to)
    }

    fn hop_by_hop_for(invite: &Message, method: &Method, to_line: Option<&[u8]>) -> Bytes {
        let mut w =
            MessageWriter::request(method, invite.request_uri_str().unwrap_or("sip:invalid"));
        let top_via = invite
            .headers()
            .find(|h| h.name == HeaderName::Via)
            .and_then(|h| std::str::from_utf8(h.value).ok())
            .and_then(|t| split_list(t).next());
        if let Some(via) = top_via {
            w.header(HeaderName::Via, via);
        }
        w.header(HeaderName::MaxForwards, "70");
        for h in invite.headers() {
            match h.name {
                HeaderName::From | HeaderName::CallId | HeaderName::Route => {
                    w.copy_line(h.line);
                }
                HeaderName::To => {
                    w.copy_line(to_line.unwrap_or(h.line));
                }
                _ => {}
            }
        }
        w.header_fmt(
            HeaderName::CSeq,
            format_args!("{} {}", invite.cseq().seq, method),
        );
        w.finish_empty()
    }
}

/// Edits recorded against a parsed message and applied when serialised.
/// Header lines nobody edited are copied byte-exact; a message with no edits
/// serialises to exactly the bytes received.
#[derive(Debug)]
pub struct Editor<'m> {
    msg: &'m Message,
    start_line: Option<Vec<u8>>,
    ops: Vec<(usize, Op)>,
    appended: Vec<(String, Vec<u8>)>,
    body: Option<(Option<String>, Bytes)>,
}

#[derive(Debug)]
enum Op {
    Remove,
    Replace(Vec<u8>),
    InsertBefore(String, Vec<u8>),
}

impl<'m> Editor<'m> {
    /// Starts editing `msg`.
    pub fn new(msg: &'m Message) -> Self {
        Editor {
            msg,
            start_line: None,
            ops: Vec::new(),
            appended: Vec::new(),
            body: None,
        }
    }

    /// The message being edited.
    pub fn message(&self) -> &'m Message {
        self.msg
    }

    /// Replaces the Request-URI (requests only; ignored for responses).
    pub fn set_request_uri(&mut self, uri: &str) -> &mut Self {
        if let Some(m) = self.msg.method() {
            let mut l = Vec::with_capacity(uri.len() + 20);
            l.extend_from_slice(m.as_str().as_bytes());
            l.push(b' ');
            l.extend(uri.bytes().map(|b| if b <= b' ' { b'_' } else { b }));
            l.extend_from_slice(b" SIP/2.0");
            self.start_line = Some(l);
        }
        self
    }

    /// Replaces the status line (responses only; ignored for requests).
    pub fn set_status(&mut self, status: u16, reason: &str) -> &mut Self {
        if self.msg.status().is_some() && (100..=699).contains(&status) {
            let mut b = BytesMut::new();
            let _ = write!(b, "SIP/2.0 {status} ");
            put_sanitized(&mut b, reason.as_bytes());
            self.start_line = Some(b.to_vec());
        }
        self
    }

    /// Removes header line `index`.
    pub fn remove(&mut self, index: usize) -> &mut Self {
        self.ops.push((index, Op::Remove));
        self
    }

    /// Removes every `name` header line.
    pub fn remove_all(&mut self, name: HeaderName) -> &mut Self {
        let idx: Vec<usize> = self
            .msg
            .headers()
            .filter(|h| h.name == name)
            .map(|h| h.index)
            .collect();
        for i in idx {
            self.remove(i);
        }
        self
    }

    /// Replaces the value of header line `index`, keeping its name as written.
    pub fn replace_value(&mut self, index: usize, value: &[u8]) -> &mut Self {
        self.ops.push((index, Op::Replace(value.to_vec())));
        self
    }

    /// Inserts a header line before line `index`.
    pub fn insert_before(&mut self, index: usize, name: &str, value: &[u8]) -> &mut Self {
        if is_token(name) {
            self.ops
                .push((index, Op::InsertBefore(name.to_owned(), value.to_vec())));
        }
        self
    }

    /// Appends a header line after the existing ones.
    pub fn append(&mut self, name: &str, value: &[u8]) -> &mut Self {
        if is_token(name) {
            self.appended.push((name.to_owned(), value.to_vec()));
        }
        self
    }

    /// Replaces the body; Content-Type is replaced when given and
    /// Content-Length always follows the body.
    pub fn set_body(&mut self, content_type: Option<&str>, body: Bytes) -> &mut Self {
        self.body = Some((content_type.map(str::to_owned), body));
        self
    }

    /// Whether any edit has been recorded.
    pub fn is_modified(&self) -> bool {
        self.start_line.is_some()
            || !self.ops.is_empty()
            || !self.appended.is_empty()
            || self.body.is_some()
    }

    /// Serialises the edited message.
    pub fn finish(&self) -> Bytes {
        let raw = self.msg.raw();
        let has_cl = self.msg.has_header(HeaderName::ContentLength);
        if !self.is_modified() && has_cl {
            return raw.clone();
        }
        let (new_ct, body): (Option<&str>, &[u8]) = match &self.body {
            Some((ct, b)) => (ct.as_deref(), b),
            None => (None, self.msg.body()),
        };
        let mut out = BytesMut::with_capacity(raw.len() + 256);
        match &self.start_line {
            Some(l) => out.put_slice(l),
            None => out.put_slice(self.msg.start_line()),
        }
        out.put_slice(b"\r\n");
        let mut wrote_cl = false;
        for (i, h) in self.msg.header_spans().iter().enumerate() {
            let mut removed = false;
            let mut replacement: Option<&[u8]> = None;
            for (_, op) in self.ops.iter().filter(|(j, _)| *j == i) {
                match op {
                    Op::InsertBefore(n, v) => put_header(&mut out, n.as_bytes(), v),
                    Op::Remove => removed = true,
                    Op::Replace(v) => replacement = Some(v),
                }
            }
            if removed {
                continue;
            }
            let name = h.name_span().of(raw);
            if h.name == HeaderName::ContentLength {
                if !wrote_cl {
                    put_header(&mut out, name, body.len().to_string().as_bytes());
                    wrote_cl = true;
                }
                continue;
            }
            if h.name == HeaderName::ContentType
                && let Some(ct) = new_ct
            {
                put_header(&mut out, name, ct.as_bytes());
                continue;
            }
            match replacement {
                Some(v) => put_header(&mut out, name, v),
                None => {
                    let line = h.line_span().of(raw);
                    let line = line.strip_suffix(b"\n").unwrap_or(line);
                    out.put_slice(line.strip_suffix(b"\r").unwrap_or(line));
                    out.put_slice(b"\r\n");
                }
            }
        }
        for (n, v) in &self.appended {
            put_header(&mut out, n.as_bytes(), v);
        }
        if let Some(ct) = new_ct
            && !self.msg.has_header(HeaderName::ContentType)
        {
            put_header(&mut out, b"Content-Type", ct.as_bytes());
        }
        if !wrote_cl {
            put_header(
                &mut out,
                b"Content-Length",
                body.len().to_string().as_bytes(),
            );
        }
        out.put_slice(b"\r\n");
        out.put_slice(body);
        out.freeze()
    }
}

fn put_header(out: &mut BytesMut, name: &[u8], value: &[u8]) {
    out.put_slice(name);
    out.put_slice(b": ");
    put_sanitized(out, value);
    out.put_slice(b"\r\n");
}

/// The parts of an unparseable request needed to answer it (RFC 3261
/// section 8.2.6): every Via line, From, To, Call-ID and CSeq, as received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Salvaged<'a> {
    /// Via header lines in order.
    pub via_lines: Vec<&'a [u8]>,
    /// The From line.
    pub from_line: &'a [u8],
    /// The To line.
    pub to_line: &'a [u8],
    /// The Call-ID line.
    pub call_id_line: &'a [u8],
    /// The CSeq line.
    pub cseq_line: &'a [u8],
}

/// Recovers what is needed to answer a request that failed to parse. Returns
/// `None` for responses, ACKs (never answered), and requests too broken to
/// answer (no head, missing one of the five headers, NUL bytes in them).
pub fn salvage_request(raw: &[u8]) -> Option<Salvaged<'_>> {
    let first = raw.iter().position(|&b| b != b'\r' && b != b'\n')?;
    let head_end = first + find_head_end(&raw[first..])?;
    let line_end = first + memchr::memchr(b'\n', &raw[first..])?;
    let start = &raw[first..line_end];
    if start.len() < 4 || start[..4].eq_ignore_ascii_case(b"SIP/") || start.starts_with(b"ACK ") {
        return None;
    }
    let mut s = Salvaged {
        via_lines: Vec::new(),
        from_line: &[],
        to_line: &[],
        call_id_line: &[],
        cseq_line: &[],
    };
    let end = head_end.saturating_sub(1).max(line_end + 1);
    for h in HeaderLines::new(raw, line_end + 1, end).flatten() {
        let line = h.line.of(raw);
        if memchr::memchr(0, line).is_some() || line.len() > 2048 {
            continue;
        }
        let slot = match HeaderName::from_bytes(h.name.of(raw)) {
            HeaderName::Via => {
                if s.via_lines.len() < 32 {
                    s.via_lines.push(line);
                }
                continue;
            }
            HeaderName::From => &mut s.from_line,
            HeaderName::To => &mut s.to_line,
            HeaderName::CallId => &mut s.call_id_line,
            HeaderName::CSeq => &mut s.cseq_line,
            _ => continue,
        };
        if slot.is_empty() {
            *slot = line;
        }
    }
    // Answer only if the headers the response copies are themselves sound;
    // otherwise the 400 would carry the same breakage back.
    let top_via = value(s.via_lines.first()?)?;
    Via::parse(split_list(top_via).next()?).ok()?;
    NameAddr::parse(value(s.from_line)?).ok()?;
    NameAddr::parse(value(s.to_line)?).ok()?;
    let cid = value(s.call_id_line)?;
    if cid.is_empty() || cid.bytes().any(|b| b <= b' ' || b >= 0x7f) {
        return None;
    }
    CSeq::parse(value(s.cseq_line)?).ok()?;
    Some(s)
}

impl Salvaged<'_> {
    /// Builds the error response (typically 400) with a `Warning: 399`
    /// naming the problem, sent by `agent` (our host). `source` fills the
    /// RFC 3581 parameters of the top Via when it parses.
    pub fn response(
        &self,
        status: u16,
        reason: &str,
        agent: &str,
        warning: &str,
        source: Option<SocketAddr>,
    ) -> Bytes {
        let mut w = MessageWriter::response(status, reason.as_bytes());
        for (i, line) in self.via_lines.iter().enumerate() {
            let value = line
                .iter()
                .position(|&b| b == b':')
                .map_or(&line[..0], |c| &line[c + 1..]);
            let value = trim_bytes(value);
            if i == 0 {
                w.write_vias_with_received(value, source);
            } else {
                w.copy_line(line);
            }
        }
        w.copy_line(self.from_line)
            .copy_line(self.to_line)
            .copy_line(self.call_id_line)
            .copy_line(self.cseq_line);
        let warning = warning.replace('"', "'");
        w.header_fmt(
            HeaderName::Warning,
            format_args!("399 {agent} \"{warning}\""),
        );
        w.finish_empty()
    }
}

/// The trimmed value of a raw header line, if UTF-8.
fn value(line: &[u8]) -> Option<&str> {
    let colon = memchr::memchr(b':', line)?;
    std::str::from_utf8(trim_bytes(&line[colon + 1..])).ok()
}

fn trim_bytes(b: &[u8]) -> &[u8] {
    let s = b
        .iter()
        .position(|c| !matches!(c, b' ' | b'\t' | b'\r' | b'\n'))
        .unwrap_or(b.len());
    let e = b
        .iter()
        .rposition(|c| !matches!(c, b' ' | b'\t' | b'\r' | b'\n'))
        .map_or(s, |i| i + 1);
    &b[s..e.max(s)]
}

/// Appends `ip` as it goes into a SIP or SDP host: dotted quad, or an IPv6
/// address in brackets when `bracket_v6`. Same text as `Display`, without
/// the formatting machinery for IPv4 (several times cheaper; addresses are
/// written into every message and SDP body Palisade builds).
pub fn push_ip(out: &mut String, ip: std::net::IpAddr, bracket_v6: bool) {
    use std::fmt::Write as _;
    match ip {
        std::net::IpAddr::V4(a) => {
            for (i, octet) in a.octets().into_iter().enumerate() {
                if i > 0 {
                    out.push('.');
                }
                push_u8(out, octet);
            }
        }
        // Writing to a String cannot fail.
        std::net::IpAddr::V6(a) if bracket_v6 => {
            let _ = write!(out, "[{a}]");
        }
        std::net::IpAddr::V6(a) => {
            let _ = write!(out, "{a}");
        }
    }
}

fn push_u8(out: &mut String, n: u8) {
    if n >= 100 {
        out.push(char::from(b'0' + n / 100));
    }
    if n >= 10 {
        out.push(char::from(b'0' + n / 10 % 10));
    }
    out.push(char::from(b'0' + n % 10));
}

#[cfg(test)]
mod push_ip_tests {
    use super::push_ip;
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

    #[test]
    fn same_text_as_display() {
        for a in [0u8, 1, 9, 10, 99, 100, 199, 255] {
            for b in [0u8, 7, 42, 250] {
                let ip = IpAddr::V4(Ipv4Addr::new(a, b, 255 - a, b / 2));
                let mut s = String::new();
                push_ip(&mut s, ip, true);
                assert_eq!(s, ip.to_string());
            }
        }
        let v6 = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1));
        let (mut bare, mut bracketed) = (String::new(), String::new());
        push_ip(&mut bare, v6, false);
        push_ip(&mut bracketed, v6, true);
        assert_eq!(bare, "2001:db8::1");
        assert_eq!(bracketed, "[2001:db8::1]");
    }
}
