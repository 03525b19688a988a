//! Lexical helpers shared by the typed decoders: `;name=value` parameter
//! lists, comma-separated header lists, quoted strings and whitespace.
//!
//! Header values may be folded; CR and LF inside a value span are folding and
//! count as whitespace here.

/// Linear whitespace inside a header value (folding included).
pub(crate) fn is_lws(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\r' | b'\n')
}

/// Trims linear whitespace on both ends.
pub(crate) fn trim_lws(s: &str) -> &str {
    let b = s.as_bytes();
    let mut start = 0;
    let mut end = b.len();
    while start < end && is_lws(b[start]) {
        start += 1;
    }
    while end > start && is_lws(b[end - 1]) {
        end -= 1;
    }
    // LWS bytes are ASCII, so both ends are character boundaries.
    s.get(start..end).unwrap_or_default()
}

/// Byte searches for ASCII delimiters in header text, through `memchr`
/// (`str::find(char)` costs several times more on the short strings of a
/// SIP header). An ASCII byte's index is always a character boundary.
pub(crate) trait FindByte {
    /// Index of the first `b`.
    fn find_b(&self, b: u8) -> Option<usize>;
    /// Index of the last `b`.
    fn rfind_b(&self, b: u8) -> Option<usize>;
    /// Splits at the first `b`, which neither half keeps.
    fn split_once_b(&self, b: u8) -> Option<(&str, &str)>;
    /// Whether `b` occurs.
    fn contains_b(&self, b: u8) -> bool {
        self.find_b(b).is_some()
    }
}

impl FindByte for str {
    fn find_b(&self, b: u8) -> Option<usize> {
        debug_assert!(b.is_ascii());
        memchr::memchr(b, self.as_bytes())
    }

    fn rfind_b(&self, b: u8) -> Option<usize> {
        debug_assert!(b.is_ascii());
        memchr::memrchr(b, self.as_bytes())
    }

    fn split_once_b(&self, b: u8) -> Option<(&str, &str)> {
        let i = self.find_b(b)?;
        Some((self.get(..i)?, self.get(i + 1..)?))
    }
}

/// Index just past the quoted string starting at `s[0] == '"'`, honouring
/// backslash escapes; `None` if it is not closed.
pub(crate) fn quoted_end(s: &[u8]) -> Option<usize> {
    let mut i = 1;
    while i < s.len() {
        match s[i] {
            b'\\' => i += 2,
            b'"' => return Some(i + 1),
            _ => i += 1,
        }
    }
    None
}

/// Splits `s` at top-level occurrences of `sep`, ignoring separators inside
/// quoted strings and `<...>`. Pieces are trimmed; empty pieces are kept so
/// callers can reject them.
pub(crate) fn split_top_level(s: &str, sep: u8) -> SplitTopLevel<'_> {
    SplitTopLevel {
        s,
        pos: 0,
        done: false,
        sep,
    }
}

/// Iterator returned by [`split_top_level`].
#[derive(Debug, Clone)]
pub(crate) struct SplitTopLevel<'a> {
    s: &'a str,
    pos: usize,
    done: bool,
    sep: u8,
}

impl<'a> Iterator for SplitTopLevel<'a> {
    type Item = &'a str;

    fn next(&mut self) -> Option<&'a str> {
        if self.done {
            return None;
        }
        let b = self.s.as_bytes();
        let start = self.pos;
        let mut i = start;
        // Outside `<...>` only a quote, `<` or the separator matter; inside,
        // only the closing `>`: jump between them with memchr.
        while i < b.len() {
            let Some(k) = memchr::memchr3(b'"', b'<', self.sep, &b[i..]) else {
                break;
            };
            i += k;
            match b[i] {
                b'"' => match quoted_end(&b[i..]) {
                    Some(n) => i += n,
                    None => i = b.len(),
                },
                b'<' => match memchr::memchr(b'>', &b[i + 1..]) {
                    Some(n) => i += n + 2,
                    None => i = b.len(),
                },
                _ => {
                    self.pos = i + 1;
                    return Some(trim_lws(self.s.get(start..i).unwrap_or_default()));
                }
            }
        }
        self.done = true;
        Some(trim_lws(self.s.get(start..).unwrap_or_default()))
    }
}

/// The values of a comma-separated list header; empty elements are skipped
/// (RFC 3261 tolerates `a,,b` in practice).
pub fn split_list(s: &str) -> impl Iterator<Item = &str> {
    split_top_level(s, b',').filter(|p| !p.is_empty())
}

/// A `;`-separated parameter list, kept as the original text (without the
/// leading `;`). Names compare case-insensitively; values are returned raw
/// (quoted strings keep their quotes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Params<'a> {
    raw: &'a str,
}

impl<'a> Params<'a> {
    /// Wraps parameter text such as `tag=1;lr` (no leading `;`).
    pub fn new(raw: &'a str) -> Self {
        Params { raw }
    }

    /// The original text.
    pub fn as_str(&self) -> &'a str {
        self.raw
    }

    /// Whether there are no parameters.
    pub fn is_empty(&self) -> bool {
        self.raw.is_empty()
    }

    /// Iterates `(name, value)` pairs; `value` is `None` for flags like `lr`.
    pub fn iter(&self) -> impl Iterator<Item = (&'a str, Option<&'a str>)> + 'a {
        let raw = self.raw;
        split_top_level(raw, b';')
            .filter(|p| !p.is_empty())
            .map(|p| match p.split_once_b(b'=') {
                Some((n, v)) => (trim_lws(n), Some(trim_lws(v))),
                None => (p, None),
            })
    }

    /// The parameter named `name`: `None` if absent, `Some(None)` if present
    /// without a value.
    pub fn get(&self, name: &str) -> Option<Option<&'a str>> {
        // Same answer as `iter().find(..)`, without splitting the parameters
        // that cannot match: a piece matches when it starts with `name` and
        // what follows is nothing (a flag) or LWS and `=` (a value).
        let want = name.as_bytes();
        for piece in split_top_level(self.raw, b';') {
            let p = piece.as_bytes();
            if p.is_empty() || p.len() < want.len() || !p[..want.len()].eq_ignore_ascii_case(want) {
                continue;
            }
            let rest = piece.get(want.len()..).unwrap_or_default();
            if rest.is_empty() {
                return Some(None);
            }
            if let Some(value) = trim_lws(rest).strip_prefix('=') {
                return Some(Some(trim_lws(value)));
            }
        }
        None
    }

    /// Whether the parameter is present (with or without a value).
    pub fn has(&self, name: &str) -> bool {
        self.get(name).is_some()
    }
}

/// Removes surrounding quotes and backslash escapes from a quoted string.
/// Returns the input unchanged if it is not quoted.
pub fn unquote(s: &str) -> std::borrow::Cow<'_, str> {
    let b = s.as_bytes();
    if b.len() < 2 || b[0] != b'"' || b[b.len() - 1] != b'"' {
        return s.into();
    }
    let inner = &s[1..s.len() - 1];
    if !inner.contains('\\') {
        return inner.into();
    }
    let mut out = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            if let Some(n) = chars.next() {
                out.push(n);
            }
        } else {
            out.push(c);
        }
    }
    out.into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn params_lookup() {
        let p = Params::new("tag=abc;LR; transport = tcp ;x=\"a;b\"");
        assert_eq!(p.get("tag"), Some(Some("abc")));
        assert_eq!(p.get("lr"), Some(None));
        assert_eq!(p.get("Transport"), Some(Some("tcp")));
        assert_eq!(p.get("x"), Some(Some("\"a;b\"")));
        assert_eq!(p.get("nope"), None);
    }

    #[test]
    fn list_split_respects_quotes_and_angles() {
        let v: Vec<_> = split_list("\"a, b\" <sip:x@y;p=1,2>, <sip:z>,,sip:w").collect();
        assert_eq!(v, ["\"a, b\" <sip:x@y;p=1,2>", "<sip:z>", "sip:w"]);
    }

    /// The straightforward byte-at-a-time splitter the memchr version replaced.
    fn split_reference(s: &str, sep: u8) -> Vec<&str> {
        let b = s.as_bytes();
        let mut out = Vec::new();
        let (mut start, mut i, mut in_angle) = (0, 0, false);
        while i < b.len() {
            match b[i] {
                b'"' if !in_angle => match quoted_end(&b[i..]) {
                    Some(n) => i += n,
                    None => i = b.len(),
                },
                b'<' => {
                    in_angle = true;
                    i += 1;
                }
                b'>' => {
                    in_angle = false;
                    i += 1;
                }
                c if c == sep && !in_angle => {
                    out.push(s[start..i].trim_matches(|c: char| c.is_ascii() && is_lws(c as u8)));
                    i += 1;
                    start = i;
                }
                _ => i += 1,
            }
        }
        out.push(s[start..].trim_matches(|c: char| c.is_ascii() && is_lws(c as u8)));
        out
    }

    proptest::proptest! {
        #[test]
        fn split_and_get_agree_with_the_reference(
            raw in "[a-c;,=<>\"\\ \t\r\né]{0,40}",
            name in "[a-c]{0,3}",
        ) {
            for sep in [b';', b','] {
                let fast: Vec<&str> = split_top_level(&raw, sep).collect();
                proptest::prop_assert_eq!(fast, split_reference(&raw, sep));
            }
            let p = Params::new(&raw);
            let reference = p.iter().find(|(n, _)| n.eq_ignore_ascii_case(&name)).map(|(_, v)| v);
            proptest::prop_assert_eq!(p.get(&name), reference);
            proptest::prop_assert_eq!(
                trim_lws(&raw),
                raw.trim_matches(|c: char| c.is_ascii() && is_lws(c as u8))
            );
        }
    }

    #[test]
    fn unquoting() {
        assert_eq!(unquote("\"a\\\"b\""), "a\"b");
        assert_eq!(unquote("plain"), "plain");
    }
}
