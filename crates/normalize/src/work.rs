//! The message as the rules see it while they run: the original header lines
//! (borrowed until a rule changes them), lines rules added, and overrides
//! of the start line. Rules run in order on this copy, so each rule sees
//! what the rules before it did. When they are done, [`Work::record`]
//! turns the result into [`Editor`] operations over the original message.

use std::borrow::Cow;

use palisade_sip::{Editor, HeaderName, Message};

/// One header line.
#[derive(Debug, Clone)]
pub(crate) struct Line<'m> {
    /// Index of the original line, `None` for a line a rule added.
    pub orig: Option<usize>,
    /// The classified name.
    pub name: HeaderName,
    /// The name as written (original) or as configured (added).
    pub raw_name: Cow<'m, str>,
    /// The current value.
    pub value: Cow<'m, [u8]>,
    /// A rule changed the value of this original line.
    pub changed: bool,
}

impl Line<'_> {
    /// The value as text, when it is UTF-8.
    pub fn text(&self) -> Option<&str> {
        std::str::from_utf8(&self.value).ok()
    }
}

/// The working copy.
#[derive(Debug, Clone)]
pub(crate) struct Work<'m> {
    pub msg: &'m Message,
    pub lines: Vec<Line<'m>>,
    /// New Request-URI.
    pub ruri: Option<String>,
    /// New status and reason.
    pub status: Option<(u16, String)>,
}

impl<'m> Work<'m> {
    pub fn new(msg: &'m Message) -> Self {
        let lines = msg
            .headers()
            .map(|h| Line {
                orig: Some(h.index),
                name: h.name,
                raw_name: String::from_utf8_lossy(h.raw_name),
                value: Cow::Borrowed(h.value),
                changed: false,
            })
            .collect();
        Work {
            msg,
            lines,
            ruri: None,
            status: None,
        }
    }

    /// Whether this is a request.
    pub fn is_request(&self) -> bool {
        self.msg.is_request()
    }

    /// The current Request-URI.
    pub fn request_uri(&self) -> Option<&str> {
        self.ruri.as_deref().or_else(|| self.msg.request_uri_str())
    }

    /// The current status.
    pub fn status(&self) -> Option<u16> {
        self.status
            .as_ref()
            .map(|s| s.0)
            .or_else(|| self.msg.status())
    }

    /// The current reason phrase (lossy).
    pub fn reason(&self) -> Cow<'_, str> {
        match &self.status {
            Some((_, r)) => Cow::Borrowed(r.as_str()),
            None => String::from_utf8_lossy(self.msg.reason()),
        }
    }

    /// The first line of a known header, as text.
    pub fn first(&self, name: HeaderName) -> Option<&str> {
        self.lines
            .iter()
            .find(|l| l.name == name)
            .and_then(Line::text)
    }

    /// Whether this is a request inside a dialog (its To has a tag).
    pub fn in_dialog(&self) -> bool {
        self.msg.to_tag().is_some()
    }

    /// Adds a new line after the others, but before the body-describing
    /// headers (Content-Type, Content-Length) that conventionally end a head.
    pub fn push(&mut self, name: HeaderName, raw_name: &str, value: String) {
        let at = self
            .lines
            .iter()
            .position(|l| matches!(l.name, HeaderName::ContentType | HeaderName::ContentLength))
            .unwrap_or(self.lines.len());
        self.lines.insert(
            at,
            Line {
                orig: None,
                name,
                raw_name: Cow::Owned(raw_name.to_owned()),
                value: Cow::Owned(value.into_bytes()),
                changed: false,
            },
        );
    }

    /// Sets the value of line `i`.
    pub fn set_value(&mut self, i: usize, value: String) {
        if let Some(l) = self.lines.get_mut(i) {
            l.value = Cow::Owned(value.into_bytes());
            l.changed = true;
        }
    }

    /// Records the result on `edit` (which must be editing `self.msg`).
    pub fn record(&self, edit: &mut Editor<'_>) {
        if let Some(uri) = &self.ruri {
            edit.set_request_uri(uri);
        }
        if let Some((code, reason)) = &self.status {
            edit.set_status(*code, reason);
        }
        let n = self.msg.header_count();
        let mut present = vec![false; n];
        for l in &self.lines {
            if let Some(i) = l.orig
                && let Some(p) = present.get_mut(i)
            {
                *p = true;
            }
        }
        for (i, p) in present.iter().enumerate() {
            if !p {
                edit.remove(i);
            }
        }
        for (k, l) in self.lines.iter().enumerate() {
            match l.orig {
                Some(i) if l.changed => {
                    edit.replace_value(i, &l.value);
                }
                Some(_) => {}
                None => match self.lines[k + 1..].iter().find_map(|x| x.orig) {
                    Some(next) => {
                        edit.insert_before(next, &l.raw_name, &l.value);
                    }
                    None => {
                        edit.append(&l.raw_name, &l.value);
                    }
                },
            }
        }
    }

    /// Whether anything differs from the original.
    pub fn is_modified(&self) -> bool {
        self.ruri.is_some()
            || self.status.is_some()
            || self.lines.len() != self.msg.header_count()
            || self.lines.iter().any(|l| l.changed || l.orig.is_none())
    }
}

/// Splits `s` at top-level `sep` (outside quotes and `<...>`), pieces untrimmed.
pub(crate) fn split_top(s: &str, sep: u8) -> Vec<&str> {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let (mut start, mut i, mut angle) = (0, 0, false);
    while i < b.len() {
        match b[i] {
            b'"' if !angle => {
                i += 1;
                while i < b.len() && b[i] != b'"' {
                    if b[i] == b'\\' {
                        i += 1;
                    }
                    i += 1;
                }
                i += 1;
                continue;
            }
            b'<' => angle = true,
            b'>' => angle = false,
            c if c == sep && !angle => {
                out.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
        i += 1;
    }
    out.push(s.get(start..).unwrap_or(""));
    out
}
