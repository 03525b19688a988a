//! Byte-level scanning shared by the parser and the stream framer.
//!
//! Lines end in CRLF; a bare LF is tolerated (liberal in what we accept) and
//! the original bytes are kept either way. A header line followed by lines
//! that start with SP or HT is folded (RFC 3261 section 7.3.1): the value span
//! covers the continuation lines and typed decoders treat CR and LF as
//! whitespace, so folded values decode without copying.

use crate::Span;

/// Offset just past the empty line that ends the message head, if present.
pub(crate) fn find_head_end(buf: &[u8]) -> Option<usize> {
    let mut from = 0;
    while let Some(rel) = memchr::memchr(b'\n', &buf[from..]) {
        let lf = from + rel;
        match buf.get(lf + 1) {
            Some(b'\n') => return Some(lf + 2),
            Some(b'\r') if buf.get(lf + 2) == Some(&b'\n') => return Some(lf + 3),
            None => return None,
            _ => from = lf + 1,
        }
    }
    None
}

/// One header line of a message head, as byte spans into the buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RawHeader {
    /// The header name, without surrounding whitespace.
    pub name: Span,
    /// The value, leading and trailing whitespace trimmed; may span folded lines.
    pub value: Span,
    /// The whole line(s), including the final line terminator.
    pub line: Span,
}

/// Why a header line could not be split into name and value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LineError {
    /// No colon on the line; offset of the line start.
    NoColon(usize),
    /// The name is empty or holds characters outside `token`; offset of the line start.
    BadName(usize),
    /// A NUL byte; its offset.
    Nul(usize),
    /// A continuation line with no header before it; its offset.
    StrayContinuation(usize),
}

/// Iterates the header lines of `head[start..end]`, where `end` is the
/// offset of the blank line (the terminator of the last header line included).
pub(crate) struct HeaderLines<'a> {
    buf: &'a [u8],
    pos: usize,
    end: usize,
    /// Whether a NUL may be in `buf[start..end]` (one scan up front spares
    /// one per line in the usual case of none).
    may_hold_nul: bool,
}

impl<'a> HeaderLines<'a> {
    pub(crate) fn new(buf: &'a [u8], start: usize, end: usize) -> Self {
        let may_hold_nul = buf
            .get(start..end)
            .is_some_and(|region| memchr::memchr(0, region).is_some());
        Self {
            buf,
            pos: start,
            end,
            may_hold_nul,
        }
    }

    /// End of the line starting at `from` (offset just past its LF, or `end`).
    fn line_end(&self, from: usize) -> usize {
        match memchr::memchr(b'\n', &self.buf[from..self.end]) {
            Some(rel) => from + rel + 1,
            None => self.end,
        }
    }
}

fn is_wsp(b: u8) -> bool {
    b == b' ' || b == b'\t'
}

/// `token` characters of RFC 3261 section 25.1.
pub(crate) fn is_token_char(b: u8) -> bool {
    b.is_ascii_alphanumeric()
        || matches!(
            b,
            b'-' | b'.' | b'!' | b'%' | b'*' | b'_' | b'+' | b'`' | b'\'' | b'~'
        )
}

fn trim_span(buf: &[u8], mut s: usize, mut e: usize) -> (usize, usize) {
    while s < e && matches!(buf[s], b' ' | b'\t' | b'\r' | b'\n') {
        s += 1;
    }
    while e > s && matches!(buf[e - 1], b' ' | b'\t' | b'\r' | b'\n') {
        e -= 1;
    }
    (s, e)
}

impl Iterator for HeaderLines<'_> {
    type Item = Result<RawHeader, LineError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.pos >= self.end {
            return None;
        }
        let start = self.pos;
        if is_wsp(self.buf[start]) {
            self.pos = self.end;
            return Some(Err(LineError::StrayContinuation(start)));
        }
        // Extend over continuation lines.
        let mut line_end = self.line_end(start);
        while line_end < self.end && is_wsp(self.buf[line_end]) {
            line_end = self.line_end(line_end);
        }
        self.pos = line_end;
        let line = &self.buf[start..line_end];
        if self.may_hold_nul
            && let Some(rel) = memchr::memchr(0, line)
        {
            return Some(Err(LineError::Nul(start + rel)));
        }
        let Some(colon) = memchr::memchr(b':', line) else {
            return Some(Err(LineError::NoColon(start)));
        };
        let mut name_end = start + colon;
        while name_end > start && is_wsp(self.buf[name_end - 1]) {
            name_end -= 1;
        }
        if name_end == start || !self.buf[start..name_end].iter().all(|&b| is_token_char(b)) {
            return Some(Err(LineError::BadName(start)));
        }
        let (vs, ve) = trim_span(self.buf, start + colon + 1, line_end);
        Some(Ok(RawHeader {
            name: Span::new(start, name_end),
            value: Span::new(vs, ve),
            line: Span::new(start, line_end),
        }))
    }
}

/// Whether a raw header name is Content-Length (long or compact form).
pub(crate) fn is_content_length_name(name: &[u8]) -> bool {
    name.eq_ignore_ascii_case(b"content-length") || name.eq_ignore_ascii_case(b"l")
}

/// Parses a Content-Length value: 1*DIGIT, at most 9 digits (under 1 GB).
pub(crate) fn parse_content_length(value: &[u8]) -> Option<usize> {
    if value.is_empty() || value.len() > 9 || !value.iter().all(u8::is_ascii_digit) {
        return None;
    }
    value
        .iter()
        .try_fold(0usize, |acc, &d| Some(acc * 10 + usize::from(d - b'0')))
}

/// The Content-Length declared in a message head (`head` ends after the blank
/// line). `Ok(None)` when absent; `Err(offset)` when invalid or conflicting.
pub(crate) fn content_length_of_head(head: &[u8]) -> Result<Option<usize>, usize> {
    let first_line_end = match memchr::memchr(b'\n', head) {
        Some(i) => i + 1,
        None => return Ok(None),
    };
    // The blank line is one or two bytes; header lines end before it.
    let blank =
        if head.ends_with(b"\r\n") && head.len() >= 2 && head[..head.len() - 2].ends_with(b"\n") {
            2
        } else {
            1
        };
    let end = head.len().saturating_sub(blank).max(first_line_end);
    let mut found: Option<usize> = None;
    for line in HeaderLines::new(head, first_line_end, end) {
        // Malformed lines are the parser's business; framing only needs lengths.
        let Ok(h) = line else { continue };
        if !is_content_length_name(h.name.of(head)) {
            continue;
        }
        let n = parse_content_length(h.value.of(head)).ok_or(h.value.start())?;
        match found {
            Some(prev) if prev != n => return Err(h.value.start()),
            _ => found = Some(n),
        }
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn head_end_crlf_and_lf() {
        assert_eq!(find_head_end(b"A\r\nB: c\r\n\r\nbody"), Some(11));
        assert_eq!(find_head_end(b"A\nB: c\n\nbody"), Some(8));
        assert_eq!(find_head_end(b"A\r\nB: c\r\n"), None);
        assert_eq!(find_head_end(b"A\r\nB: c\r\n\r"), None);
    }

    #[test]
    fn folded_header_lines() {
        let buf = b"X\r\nSubject: a\r\n  b\r\nTo:\t<sip:x>\r\n\r\n";
        let end = find_head_end(buf).unwrap() - 2;
        let lines: Vec<_> = HeaderLines::new(buf, 3, end).map(Result::unwrap).collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0].name.of(buf), b"Subject");
        assert_eq!(lines[0].value.of(buf), b"a\r\n  b");
        assert_eq!(lines[0].line.of(buf), b"Subject: a\r\n  b\r\n");
        assert_eq!(lines[1].value.of(buf), b"<sip:x>");
    }

    #[test]
    fn line_errors() {
        let buf = b"X\r\nNoColonHere\r\n\r\n";
        let mut it = HeaderLines::new(buf, 3, buf.len() - 2);
        assert_eq!(it.next(), Some(Err(LineError::NoColon(3))));
        let buf = b"X\r\nBad Name: v\r\n\r\n";
        let mut it = HeaderLines::new(buf, 3, buf.len() - 2);
        assert_eq!(it.next(), Some(Err(LineError::BadName(3))));
        let buf = b"X\r\nA: v\0w\r\n\r\n";
        let mut it = HeaderLines::new(buf, 3, buf.len() - 2);
        assert_eq!(it.next(), Some(Err(LineError::Nul(7))));
    }
}
