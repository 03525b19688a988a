//! [`Message`]: a parsed SIP request or response that keeps its original
//! bytes. Parsing indexes the start line and every header line, checks what a
//! B2BUA relies on (the mandatory headers, CSeq, Content-Length, the top Via,
//! From/To tags), and leaves all other values to be decoded on demand.

use bytes::Bytes;
use smallvec::SmallVec;

use crate::Span;
use crate::error::{DecodeError, ErrorKind, ParseError};
use crate::headers::{CSeq, NameAddr, Via, parse_delta};
use crate::method::Method;
use crate::name::HeaderName;
use crate::params::split_list;
use crate::scan::{HeaderLines, LineError, find_head_end, parse_content_length};
use crate::uri::Uri;

/// Caps applied while parsing; everything a peer sends is bounded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParseLimits {
    /// Largest message accepted, head and body (default 16 KiB, the UDP cap).
    pub max_message_bytes: usize,
    /// Most header lines accepted (default 256).
    pub max_headers: usize,
}

impl Default for ParseLimits {
    fn default() -> Self {
        ParseLimits {
            max_message_bytes: 16 * 1024,
            max_headers: 256,
        }
    }
}

/// One header line of a parsed message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// The classified name.
    pub name: HeaderName,
    name_span: Span,
    value: Span,
    line: Span,
}

/// A header line as seen through [`Message::headers`].
#[derive(Debug, Clone, Copy)]
pub struct HeaderRef<'a> {
    /// Position among the message's header lines (stable; used by [`crate::Editor`]).
    pub index: usize,
    /// The classified name.
    pub name: HeaderName,
    /// The name as written.
    pub raw_name: &'a [u8],
    /// The value, trimmed, as written (may contain folding).
    pub value: &'a [u8],
    /// The whole line with its terminator, byte-exact.
    pub line: &'a [u8],
}

impl<'a> HeaderRef<'a> {
    /// The value as UTF-8 text.
    pub fn value_str(&self) -> Result<&'a str, DecodeError> {
        std::str::from_utf8(self.value)
            .map_err(|e| DecodeError::new("header value is not UTF-8", e.valid_up_to()))
    }

    /// Whether the name equals `name` ignoring case (for headers without a
    /// [`HeaderName`] variant, e.g. `X-Acme-Id`).
    pub fn is_named(&self, name: &str) -> bool {
        self.raw_name.eq_ignore_ascii_case(name.as_bytes())
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum StartLine {
    Request { method: Method, uri: Span },
    Response { status: u16, reason: Span },
}

/// A parsed SIP message. Cloning is cheap (the bytes are reference-counted).
#[derive(Debug, Clone)]
pub struct Message {
    raw: Bytes,
    start: StartLine,
    start_line: Span,
    headers: SmallVec<[Header; 16]>,
    head_end: u32,
    body: Span,
    call_id: Span,
    cseq: CSeq,
    from_tag: Option<Span>,
    to_tag: Option<Span>,
    branch: Option<Span>,
}

/// The span of `sub` inside `raw`. `sub` must be a subslice of `raw`.
fn span_in(raw: &[u8], sub: &[u8]) -> Span {
    let start = (sub.as_ptr() as usize).wrapping_sub(raw.as_ptr() as usize);
    Span::new(start, start + sub.len())
}

fn value_str(raw: &[u8], value: Span, name: HeaderName) -> Result<&str, ParseError> {
    std::str::from_utf8(value.of(raw)).map_err(|e| {
        ParseError::new(
            ErrorKind::BadHeaderValue(name),
            value.start() + e.valid_up_to(),
        )
    })
}

fn decode_err(name: HeaderName, value: Span, e: DecodeError) -> ParseError {
    ParseError::new(ErrorKind::BadHeaderValue(name), value.start() + e.at)
}

impl Message {
    /// Parses a datagram or a framed stream message.
    ///
    /// On UDP, bytes after the declared Content-Length are ignored and a
    /// missing Content-Length means "the rest of the datagram"
    /// (RFC 3261 section 18.3).
    pub fn parse(raw: Bytes, limits: &ParseLimits) -> Result<Message, ParseError> {
        if raw.len() > limits.max_message_bytes {
            return Err(ParseError::new(
                ErrorKind::TooLarge {
                    limit: limits.max_message_bytes,
                },
                limits.max_message_bytes,
            ));
        }
        let buf: &[u8] = &raw;
        // Leading CRLFs before the start line are ignored (RFC 3261 section 7.5).
        let first = buf
            .iter()
            .position(|&b| b != b'\r' && b != b'\n')
            .ok_or(ParseError::new(ErrorKind::Empty, 0))?;
        let head_end = first
            + find_head_end(&buf[first..])
                .ok_or(ParseError::new(ErrorKind::HeadUnterminated, buf.len()))?;
        let line_end = first
            + memchr::memchr(b'\n', &buf[first..])
                .ok_or(ParseError::new(ErrorKind::HeadUnterminated, buf.len()))?;
        let start_text = &buf[first..line_end];
        let start_text = start_text.strip_suffix(b"\r").unwrap_or(start_text);
        if let Some(i) = memchr::memchr(0, start_text) {
            return Err(ParseError::new(ErrorKind::Nul, first + i));
        }
        let start = parse_start_line(start_text, first)?;

        // Header lines run from after the start line to before the blank line.
        let headers_start = line_end + 1;
        let blank_len =
            if buf[..head_end].ends_with(b"\r\n") && head_end >= 2 && buf[head_end - 2] == b'\r' {
                2
            } else {
                1
            };
        let headers_end = (head_end - blank_len).max(headers_start);
        let mut headers: SmallVec<[Header; 16]> = SmallVec::new();
        for line in HeaderLines::new(buf, headers_start, headers_end) {
            let h = line.map_err(|e| match e {
                LineError::Nul(at) => ParseError::new(ErrorKind::Nul, at),
                LineError::NoColon(at)
                | LineError::BadName(at)
                | LineError::StrayContinuation(at) => ParseError::new(ErrorKind::BadHeaderLine, at),
            })?;
            if headers.len() == limits.max_headers {
                return Err(ParseError::new(
                    ErrorKind::TooManyHeaders {
                        limit: limits.max_headers,
                    },
                    h.line.start(),
                ));
            }
            headers.push(Header {
                name: HeaderName::from_bytes(h.name.of(buf)),
                name_span: h.name,
                value: h.value,
                line: h.line,
            });
        }

        // Exactly-once headers.
        let once = |name: HeaderName| -> Result<Span, ParseError> {
            let mut it = headers.iter().filter(|h| h.name == name);
            let h = it.next().ok_or(ParseError::new(
                ErrorKind::MissingHeader(name),
                headers_start,
            ))?;
            if let Some(dup) = it.next() {
                return Err(ParseError::new(
                    ErrorKind::DuplicateHeader(name),
                    dup.line.start(),
                ));
            }
            Ok(h.value)
        };
        let call_id = once(HeaderName::CallId)?;
        let cseq_span = once(HeaderName::CSeq)?;
        let from_span = once(HeaderName::From)?;
        let to_span = once(HeaderName::To)?;
        let via_span = headers
            .iter()
            .find(|h| h.name == HeaderName::Via)
            .map(|h| h.value)
            .ok_or(ParseError::new(
                ErrorKind::MissingHeader(HeaderName::Via),
                headers_start,
            ))?;

        // Call-ID: word ["@" word], no whitespace.
        let cid = call_id.of(buf);
        if cid.is_empty() || cid.iter().any(|&b| b <= b' ' || b >= 0x7f) {
            return Err(ParseError::new(
                ErrorKind::BadHeaderValue(HeaderName::CallId),
                call_id.start(),
            ));
        }

        let cseq_text = value_str(buf, cseq_span, HeaderName::CSeq)?;
        let cseq = CSeq::parse(cseq_text)
            .map_err(|e| ParseError::new(ErrorKind::BadCSeq, cseq_span.start() + e.at))?;
        if let StartLine::Request { method, .. } = &start
            && *method != cseq.method
        {
            return Err(ParseError::new(
                ErrorKind::CSeqMethodMismatch,
                cseq_span.start(),
            ));
        }

        let tag_of = |span: Span, name: HeaderName| -> Result<Option<Span>, ParseError> {
            let text = value_str(buf, span, name)?;
            let na = NameAddr::parse(text).map_err(|e| decode_err(name, span, e))?;
            Ok(na.tag().map(|t| span_in(buf, t.as_bytes())))
        };
        let from_tag = tag_of(from_span, HeaderName::From)?;
        let to_tag = tag_of(to_span, HeaderName::To)?;

        let via_text = value_str(buf, via_span, HeaderName::Via)?;
        let top_via_text = split_list(via_text).next().ok_or(ParseError::new(
            ErrorKind::BadHeaderValue(HeaderName::Via),
            via_span.start(),
        ))?;
        let via = Via::parse(top_via_text).map_err(|e| {
            ParseError::new(
                ErrorKind::BadHeaderValue(HeaderName::Via),
                span_in(buf, top_via_text.as_bytes()).start() + e.at,
            )
        })?;
        let branch = via.branch().map(|b| span_in(buf, b.as_bytes()));

        if let Some(mf) = headers.iter().find(|h| h.name == HeaderName::MaxForwards) {
            let ok = std::str::from_utf8(mf.value.of(buf))
                .ok()
                .and_then(parse_delta)
                .is_some_and(|v| v <= 255);
            if !ok {
                return Err(ParseError::new(
                    ErrorKind::BadHeaderValue(HeaderName::MaxForwards),
                    mf.value.start(),
                ));
            }
        }

        // Content-Length: numeric, consistent, and not beyond the body.
        let mut content_length: Option<usize> = None;
        for h in headers
            .iter()
            .filter(|h| h.name == HeaderName::ContentLength)
        {
            let n = parse_content_length(h.value.of(buf)).ok_or(ParseError::new(
                ErrorKind::BadContentLength,
                h.value.start(),
            ))?;
            if content_length.is_some_and(|prev| prev != n) {
                return Err(ParseError::new(
                    ErrorKind::BadContentLength,
                    h.value.start(),
                ));
            }
            content_length = Some(n);
        }
        let available = buf.len() - head_end;
        let body = match content_length {
            Some(n) if n > available => {
                return Err(ParseError::new(
                    ErrorKind::BodyTruncated {
                        declared: n,
                        available,
                    },
                    buf.len(),
                ));
            }
            Some(n) => Span::new(head_end, head_end + n),
            None => Span::new(head_end, buf.len()),
        };

        let head_end = u32::try_from(head_end).unwrap_or(u32::MAX);
        Ok(Message {
            start,
            start_line: Span::new(first, first + start_text.len()),
            headers,
            head_end,
            body,
            call_id,
            cseq,
            from_tag,
            to_tag,
            branch,
            raw,
        })
    }

    /// The bytes as received.
    pub fn raw(&self) -> &Bytes {
        &self.raw
    }

    /// The start line, without its terminator.
    pub fn start_line(&self) -> &[u8] {
        self.start_line.of(&self.raw)
    }

    /// Whether this is a request.
    pub fn is_request(&self) -> bool {
        matches!(self.start, StartLine::Request { .. })
    }

    /// The request method (`None` for responses).
    pub fn method(&self) -> Option<&Method> {
        match &self.start {
            StartLine::Request { method, .. } => Some(method),
            StartLine::Response { .. } => None,
        }
    }

    /// The Request-URI as written (`None` for responses).
    pub fn request_uri_str(&self) -> Option<&str> {
        match &self.start {
            // Validated as ASCII at parse time.
            StartLine::Request { uri, .. } => std::str::from_utf8(uri.of(&self.raw)).ok(),
            StartLine::Response { .. } => None,
        }
    }

    /// The Request-URI, decoded (`None` for responses; validated at parse time).
    pub fn request_uri(&self) -> Option<Uri<'_>> {
        self.request_uri_str().and_then(|s| Uri::parse(s).ok())
    }

    /// The status code (`None` for requests).
    pub fn status(&self) -> Option<u16> {
        match self.start {
            StartLine::Response { status, .. } => Some(status),
            StartLine::Request { .. } => None,
        }
    }

    /// The reason phrase as received; may be any bytes, even non-UTF-8.
    pub fn reason(&self) -> &[u8] {
        match self.start {
            StartLine::Response { reason, .. } => reason.of(&self.raw),
            StartLine::Request { .. } => &[],
        }
    }

    /// The Call-ID.
    pub fn call_id(&self) -> &str {
        // Validated as visible ASCII at parse time.
        std::str::from_utf8(self.call_id.of(&self.raw)).unwrap_or("")
    }

    /// The CSeq.
    pub fn cseq(&self) -> &CSeq {
        &self.cseq
    }

    /// The From tag.
    pub fn from_tag(&self) -> Option<&str> {
        self.span_str(self.from_tag)
    }

    /// The To tag (absent on out-of-dialog requests).
    pub fn to_tag(&self) -> Option<&str> {
        self.span_str(self.to_tag)
    }

    /// The `branch` of the top Via.
    pub fn branch(&self) -> Option<&str> {
        self.span_str(self.branch)
    }

    fn span_str(&self, s: Option<Span>) -> Option<&str> {
        s.and_then(|s| std::str::from_utf8(s.of(&self.raw)).ok())
    }

    /// The From header, decoded.
    pub fn from(&self) -> Result<NameAddr<'_>, ParseError> {
        self.name_addr(HeaderName::From)
    }

    /// The To header, decoded.
    pub fn to(&self) -> Result<NameAddr<'_>, ParseError> {
        self.name_addr(HeaderName::To)
    }

    fn name_addr(&self, name: HeaderName) -> Result<NameAddr<'_>, ParseError> {
        let h = self
            .headers
            .iter()
            .find(|h| h.name == name)
            .ok_or(ParseError::new(ErrorKind::MissingHeader(name), 0))?;
        let text = value_str(&self.raw, h.value, name)?;
        NameAddr::parse(text).map_err(|e| decode_err(name, h.value, e))
    }

    /// The top Via, decoded.
    pub fn top_via(&self) -> Result<Via<'_>, ParseError> {
        self.vias().next().unwrap_or(Err(ParseError::new(
            ErrorKind::MissingHeader(HeaderName::Via),
            0,
        )))
    }

    /// All Via values in order, across lines and comma lists.
    pub fn vias(&self) -> impl Iterator<Item = Result<Via<'_>, ParseError>> {
        self.list(HeaderName::Via, Via::parse)
    }

    /// Contact values in order (`*` yields an error; see [`Self::contact_is_star`]).
    pub fn contacts(&self) -> impl Iterator<Item = Result<NameAddr<'_>, ParseError>> {
        self.list(HeaderName::Contact, NameAddr::parse)
    }

    /// Whether the Contact is the REGISTER wildcard `*`.
    pub fn contact_is_star(&self) -> bool {
        self.header(HeaderName::Contact) == Some(b"*".as_slice())
    }

    /// Record-Route values in order.
    pub fn record_routes(&self) -> impl Iterator<Item = Result<NameAddr<'_>, ParseError>> {
        self.list(HeaderName::RecordRoute, NameAddr::parse)
    }

    /// Route values in order.
    pub fn routes(&self) -> impl Iterator<Item = Result<NameAddr<'_>, ParseError>> {
        self.list(HeaderName::Route, NameAddr::parse)
    }

    /// Decodes every comma-separated value of every `name` header with `f`.
    pub fn list<'a, T: 'a>(
        &'a self,
        name: HeaderName,
        f: fn(&'a str) -> Result<T, DecodeError>,
    ) -> impl Iterator<Item = Result<T, ParseError>> + 'a {
        let raw: &'a [u8] = &self.raw;
        self.headers
            .iter()
            .filter(move |h| h.name == name)
            .flat_map(move |h| {
                let (ok, err) = match value_str(raw, h.value, name) {
                    Ok(text) => (Some(split_list(text)), None),
                    Err(e) => (None, Some(Err(e))),
                };
                ok.into_iter()
                    .flatten()
                    .map(move |item| {
                        f(item).map_err(|e| {
                            ParseError::new(
                                ErrorKind::BadHeaderValue(name),
                                span_in(raw, item.as_bytes()).start() + e.at,
                            )
                        })
                    })
                    .chain(err)
            })
    }

    /// Header lines in order.
    pub fn headers(&self) -> impl Iterator<Item = HeaderRef<'_>> {
        self.headers.iter().enumerate().map(|(index, h)| HeaderRef {
            index,
            name: h.name,
            raw_name: h.name_span.of(&self.raw),
            value: h.value.of(&self.raw),
            line: h.line.of(&self.raw),
        })
    }

    /// Number of header lines.
    pub fn header_count(&self) -> usize {
        self.headers.len()
    }

    /// The value of the first `name` header line, as written.
    pub fn header(&self, name: HeaderName) -> Option<&[u8]> {
        self.headers
            .iter()
            .find(|h| h.name == name)
            .map(|h| h.value.of(&self.raw))
    }

    /// The first `name` header value as text, if present and UTF-8.
    pub fn header_str(&self, name: HeaderName) -> Option<&str> {
        self.header(name).and_then(|v| std::str::from_utf8(v).ok())
    }

    /// The value of the first header spelled `name` (any case); for headers
    /// without a [`HeaderName`] variant.
    pub fn header_named(&self, name: &str) -> Option<&[u8]> {
        self.headers().find(|h| h.is_named(name)).map(|h| h.value)
    }

    /// Whether any `name` header line is present.
    pub fn has_header(&self, name: HeaderName) -> bool {
        self.headers.iter().any(|h| h.name == name)
    }

    /// Tokens of a list header such as Allow, Supported, Require.
    pub fn tokens(&self, name: HeaderName) -> impl Iterator<Item = &str> {
        self.headers
            .iter()
            .filter(move |h| h.name == name)
            .filter_map(|h| std::str::from_utf8(h.value.of(&self.raw)).ok())
            .flat_map(split_list)
    }

    /// Max-Forwards (validated at parse time), if present.
    pub fn max_forwards(&self) -> Option<u8> {
        self.header_str(HeaderName::MaxForwards)
            .and_then(parse_delta)
            .and_then(|v| u8::try_from(v).ok())
    }

    /// Expires, if present and numeric.
    pub fn expires(&self) -> Option<u32> {
        self.header_str(HeaderName::Expires).and_then(parse_delta)
    }

    /// Retry-After seconds, if present and numeric.
    pub fn retry_after(&self) -> Option<u32> {
        self.header_str(HeaderName::RetryAfter)
            .and_then(parse_delta)
    }

    /// Content-Type, as written.
    pub fn content_type(&self) -> Option<&str> {
        self.header_str(HeaderName::ContentType)
    }

    /// The body (empty if none).
    pub fn body(&self) -> &[u8] {
        self.body.of(&self.raw)
    }

    /// Whether the body is SDP (`application/sdp`, parameters ignored).
    pub fn has_sdp(&self) -> bool {
        !self.body.is_empty()
            && self.content_type().is_some_and(|ct| {
                ct.split(';')
                    .next()
                    .is_some_and(|t| t.trim().eq_ignore_ascii_case("application/sdp"))
            })
    }

    /// Offset where the body starts (just past the blank line).
    pub fn head_len(&self) -> usize {
        self.head_end as usize
    }

    pub(crate) fn header_spans(&self) -> &[Header] {
        &self.headers
    }
}

impl Header {
    pub(crate) fn line_span(&self) -> Span {
        self.line
    }
    pub(crate) fn name_span(&self) -> Span {
        self.name_span
    }
}

fn is_sip_version(v: &[u8]) -> bool {
    v.eq_ignore_ascii_case(b"SIP/2.0")
}

fn parse_start_line(line: &[u8], first: usize) -> Result<StartLine, ParseError> {
    let bad = |k: ErrorKind, at: usize| ParseError::new(k, first + at);
    if line.len() >= 4 && line[..4].eq_ignore_ascii_case(b"SIP/") {
        // Status-Line = SIP-Version SP Status-Code SP Reason-Phrase
        let sp = memchr::memchr(b' ', line).ok_or(bad(ErrorKind::BadStartLine, 0))?;
        if !is_sip_version(&line[..sp]) {
            return Err(bad(ErrorKind::BadVersion, 0));
        }
        let code = line
            .get(sp + 1..sp + 4)
            .ok_or(bad(ErrorKind::BadStatusCode, sp + 1))?;
        if !code.iter().all(u8::is_ascii_digit) {
            return Err(bad(ErrorKind::BadStatusCode, sp + 1));
        }
        let status = code.iter().fold(0u16, |a, &d| a * 10 + u16::from(d - b'0'));
        if !(100..=699).contains(&status) {
            return Err(bad(ErrorKind::BadStatusCode, sp + 1));
        }
        let reason_start = match line.get(sp + 4) {
            None => sp + 4,
            Some(b' ') => sp + 5,
            Some(_) => return Err(bad(ErrorKind::BadStatusCode, sp + 1)),
        };
        return Ok(StartLine::Response {
            status,
            reason: Span::new(first + reason_start, first + line.len()),
        });
    }
    // Request-Line = Method SP Request-URI SP SIP-Version, single spaces.
    let sp1 = memchr::memchr(b' ', line).ok_or(bad(ErrorKind::BadStartLine, 0))?;
    let sp2 = memchr::memrchr(b' ', line).ok_or(bad(ErrorKind::BadStartLine, 0))?;
    if sp2 <= sp1 + 1 || line[sp1 + 1] == b' ' || line[sp2 - 1] == b' ' {
        return Err(bad(ErrorKind::BadStartLine, sp1));
    }
    let method = Method::from_bytes(&line[..sp1]).ok_or(bad(ErrorKind::BadMethod, 0))?;
    let uri = &line[sp1 + 1..sp2];
    let version = &line[sp2 + 1..];
    if !version.starts_with(b"SIP/") && !version.starts_with(b"sip/") {
        return Err(bad(ErrorKind::BadStartLine, sp2 + 1));
    }
    if !is_sip_version(version) {
        return Err(bad(ErrorKind::BadVersion, sp2 + 1));
    }
    let uri_text = std::str::from_utf8(uri).map_err(|_| bad(ErrorKind::BadRequestUri, sp1 + 1))?;
    Uri::parse(uri_text).map_err(|e| bad(ErrorKind::BadRequestUri, sp1 + 1 + e.at))?;
    Ok(StartLine::Request {
        method,
        uri: Span::new(first + sp1 + 1, first + sp2),
    })
}
