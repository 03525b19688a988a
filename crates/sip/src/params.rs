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
    s.trim_matches(|c: char| c.is_ascii() && is_lws(c as u8))
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
        let mut in_angle = false;
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
                c if c == self.sep && !in_angle => {
                    self.pos = i + 1;
                    return Some(trim_lws(&self.s[start..i]));
                }
                _ => i += 1,
            }
        }
        self.done = true;
        Some(trim_lws(&self.s[start..]))
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
            .map(|p| match p.split_once('=') {
                Some((n, v)) => (trim_lws(n), Some(trim_lws(v))),
                None => (p, None),
            })
    }

    /// The parameter named `name`: `None` if absent, `Some(None)` if present
    /// without a value.
    pub fn get(&self, name: &str) -> Option<Option<&'a str>> {
        self.iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
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

    #[test]
    fn unquoting() {
        assert_eq!(unquote("\"a\\\"b\""), "a\"b");
        assert_eq!(unquote("plain"), "plain");
    }
}
