//! Load errors: every problem carries the line, column and field path it is about.

use std::fmt;

use serde::Deserialize;
use serde_saphyr::{Location, MessageFormatter, Spanned};

/// One thing wrong with a configuration file, located in it.
///
/// `line` and `column` are 1-based character positions of the offending YAML
/// node (the value for a bad value, the key for an unknown key). A problem
/// about the file as a whole (for example an empty file) points at 1:1.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// 1-based line.
    pub line: u64,
    /// 1-based column (characters, not bytes).
    pub column: u64,
    /// Path of the field, such as `trunks[1].members[0].port`; empty when the
    /// problem is about the document itself (a YAML syntax error at top level).
    pub path: String,
    /// What is wrong, in one line.
    pub message: String,
}

impl Problem {
    pub(crate) fn at(
        location: Location,
        path: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        // The parser reports 0:0 only when it has no position at all.
        Problem {
            line: location.line().max(1),
            column: location.column().max(1),
            path: sanitize(path.into()),
            message: sanitize(message.into()),
        }
    }
}

/// Problems end up on terminals and in logs: keep each on one line and free of
/// control characters whatever the file contained.
fn sanitize(s: String) -> String {
    if s.chars().any(char::is_control) {
        s.chars()
            .map(|c| {
                if c.is_control() {
                    c.escape_debug().to_string()
                } else {
                    c.to_string()
                }
            })
            .collect()
    } else {
        s
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: ", self.line, self.column)?;
        if !self.path.is_empty() {
            write!(f, "{}: ", self.path)?;
        }
        f.write_str(&self.message)
    }
}

/// Why a configuration could not be loaded.
///
/// Every variant is the operator's to fix (this crate reads no network input
/// and has no internal failure modes beyond these). Display renders one line
/// per problem as `FILE:LINE:COLUMN: FIELD_PATH: message`, or `FILE: message`
/// when the file could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read (missing, unreadable, not UTF-8).
    #[error("{file}: {source}")]
    Read {
        /// The path as given.
        file: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The text is not YAML, or does not fit the schema (unknown key, missing
    /// key, wrong type, number out of the type's range). Parsing stops at the
    /// first such problem.
    #[error("{file}:{problem}")]
    Parse {
        /// Source name given to [`crate::load_str`] (the path for [`crate::load`]).
        file: String,
        /// The problem.
        problem: Problem,
    },
    /// The document fits the schema but breaks one or more rules (ranges,
    /// references, uniqueness, overlaps). All problems found are reported, in
    /// file order.
    #[error("{}", render_all(file, problems))]
    Invalid {
        /// Source name given to [`crate::load_str`] (the path for [`crate::load`]).
        file: String,
        /// At least one problem, ordered by position in the file.
        problems: Vec<Problem>,
    },
}

fn render_all(file: &str, problems: &[Problem]) -> String {
    let mut out = String::new();
    for (i, p) in problems.iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        out.push_str(file);
        out.push(':');
        out.push_str(&p.to_string());
    }
    out
}

impl ConfigError {
    /// All located problems (empty for [`ConfigError::Read`]).
    pub fn problems(&self) -> &[Problem] {
        match self {
            ConfigError::Read { .. } => &[],
            ConfigError::Parse { problem, .. } => std::slice::from_ref(problem),
            ConfigError::Invalid { problems, .. } => problems,
        }
    }

    /// The file (or source name) the error is about.
    pub fn file(&self) -> &str {
        match self {
            ConfigError::Read { file, .. }
            | ConfigError::Parse { file, .. }
            | ConfigError::Invalid { file, .. } => file,
        }
    }

    /// Line of the first problem.
    pub fn line(&self) -> Option<u64> {
        self.problems().first().map(|p| p.line)
    }

    /// Column of the first problem.
    pub fn column(&self) -> Option<u64> {
        self.problems().first().map(|p| p.column)
    }

    /// Field path of the first problem (may be empty for syntax errors).
    pub fn field_path(&self) -> Option<&str> {
        self.problems().first().map(|p| p.path.as_str())
    }

    /// Message of the first problem (the I/O error text for `Read`).
    pub fn message(&self) -> String {
        match self {
            ConfigError::Read { source, .. } => source.to_string(),
            ConfigError::Parse { problem, .. } => problem.message.clone(),
            ConfigError::Invalid { problems, .. } => problems
                .first()
                .map(|p| p.message.clone())
                .unwrap_or_default(),
        }
    }
}

/// Turns a YAML/serde error into a located [`Problem`].
///
/// `path` is the path serde_path_to_error tracked; `Spanned` wrappers add a
/// `value` segment and unknown positions a `?` segment, both dropped here.
pub(crate) fn problem_from_yaml(
    err: &serde_saphyr::Error,
    path: Option<&serde_path_to_error::Path>,
    text: &str,
) -> Problem {
    use serde_saphyr::Error as E;
    let inner = innermost(err);
    let location = err
        .location()
        .or_else(|| inner.location())
        .unwrap_or(Location::UNKNOWN);
    let mut location = location;
    let mut path = path.map(clean_path).unwrap_or_default();
    let message = match inner {
        E::InvalidScalar { ty, location } => {
            let scalar = scalar_text(text, *location);
            format!("invalid value: {}, expected {ty}", describe_scalar(scalar))
        }
        E::SerdeMissingField { field, .. } => {
            // The parser reports the last key it read; the start of the
            // mapping the field is missing from is where a reader looks.
            if let Some(start) = path_location(text, &path) {
                location = start;
            }
            push_segment(&mut path, field);
            format!("missing field `{field}`")
        }
        E::DuplicateMappingKey { key, .. } => match key {
            Some(k) => {
                if path.is_empty() || !path.ends_with(k.as_str()) {
                    push_segment(&mut path, k);
                }
                format!("duplicate key `{k}`")
            }
            None => "duplicate key".to_owned(),
        },
        E::MultipleDocuments { .. } => {
            "more than one YAML document; a configuration file holds exactly one".to_owned()
        }
        E::Eof { .. } => {
            if text
                .lines()
                .all(|l| l.trim().is_empty() || l.trim_start().starts_with('#'))
            {
                location = Location::UNKNOWN;
            }
            "unexpected end of input (an empty file is not a configuration: zones, trunks and routes are required)".to_owned()
        }
        other => serde_saphyr::DefaultMessageFormatter
            .format_message(other)
            .into_owned(),
    };
    Problem::at(location, path, message)
}

/// Any YAML node, with the location of every node below it.
enum LocNode {
    Map(Vec<(String, Spanned<LocNode>)>),
    Seq(Vec<Spanned<LocNode>>),
    Scalar,
}

impl<'de> Deserialize<'de> for LocNode {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = LocNode;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("any YAML node")
            }
            fn visit_bool<E>(self, _: bool) -> Result<LocNode, E> {
                Ok(LocNode::Scalar)
            }
            fn visit_i64<E>(self, _: i64) -> Result<LocNode, E> {
                Ok(LocNode::Scalar)
            }
            fn visit_u64<E>(self, _: u64) -> Result<LocNode, E> {
                Ok(LocNode::Scalar)
            }
            fn visit_i128<E>(self, _: i128) -> Result<LocNode, E> {
                Ok(LocNode::Scalar)
            }
            fn visit_u128<E>(self, _: u128) -> Result<LocNode, E> {
                Ok(LocNode::Scalar)
            }
            fn visit_f64<E>(self, _: f64) -> Result<LocNode, E> {
                Ok(LocNode::Scalar)
            }
            fn visit_str<E>(self, _: &str) -> Result<LocNode, E> {
                Ok(LocNode::Scalar)
            }
            fn visit_unit<E>(self) -> Result<LocNode, E> {
                Ok(LocNode::Scalar)
            }
            fn visit_none<E>(self) -> Result<LocNode, E> {
                Ok(LocNode::Scalar)
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut a: A,
            ) -> Result<LocNode, A::Error> {
                let mut out = Vec::new();
                while let Some(n) = a.next_element()? {
                    out.push(n);
                }
                Ok(LocNode::Seq(out))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut a: A,
            ) -> Result<LocNode, A::Error> {
                let mut out = Vec::new();
                while let Some((k, v)) = a.next_entry::<String, Spanned<LocNode>>()? {
                    out.push((k, v));
                }
                Ok(LocNode::Map(out))
            }
        }
        d.deserialize_any(V)
    }
}

/// Where the node at `path` (as [`clean_path`] writes it) starts, found by
/// parsing `text` again as untyped YAML. `None` if that fails.
fn path_location(text: &str, path: &str) -> Option<Location> {
    let root: Spanned<LocNode> = serde_saphyr::from_str(text).ok()?;
    let mut cur = &root;
    for step in path.split('.').filter(|s| !s.is_empty()) {
        let (key, indices) = step.split_at(step.find('[').unwrap_or(step.len()));
        if !key.is_empty() {
            let LocNode::Map(entries) = &cur.value else {
                return None;
            };
            cur = &entries.iter().find(|(k, _)| k == key)?.1;
        }
        for idx in indices.split(['[', ']']).filter(|s| !s.is_empty()) {
            let LocNode::Seq(items) = &cur.value else {
                return None;
            };
            cur = items.get(idx.parse::<usize>().ok()?)?;
        }
    }
    Some(cur.referenced)
}

/// Whether `err` is serde's "missing field".
pub(crate) fn is_missing_field(err: &serde_saphyr::Error) -> bool {
    matches!(
        innermost(err),
        serde_saphyr::Error::SerdeMissingField { .. }
    )
}

/// Unwraps snippet and alias wrappers down to the error that says what is wrong.
fn innermost(err: &serde_saphyr::Error) -> &serde_saphyr::Error {
    let mut e = err.without_snippet();
    while let serde_saphyr::Error::AliasError { error, .. } = e {
        e = error.without_snippet();
    }
    e
}

fn push_segment(path: &mut String, segment: &str) {
    if !path.is_empty() {
        path.push('.');
    }
    path.push_str(segment);
}

pub(crate) fn clean_path(path: &serde_path_to_error::Path) -> String {
    use serde_path_to_error::Segment;
    let mut out = String::new();
    for seg in path.iter() {
        match seg {
            Segment::Seq { index } => {
                out.push('[');
                out.push_str(&index.to_string());
                out.push(']');
            }
            Segment::Map { key } if key == "value" => {}
            Segment::Map { key } => push_segment(&mut out, key),
            Segment::Enum { variant } => push_segment(&mut out, variant),
            Segment::Unknown => {}
        }
    }
    out
}

/// The source text of the scalar at `location` (empty when the span is unknown).
fn scalar_text(text: &str, location: Location) -> &str {
    let span = location.span();
    let (Some(start), Some(len)) = (span.byte_offset(), span.byte_len()) else {
        return "";
    };
    let (Ok(start), Ok(len)) = (usize::try_from(start), usize::try_from(len)) else {
        return "";
    };
    text.get(start..start.saturating_add(len)).unwrap_or("")
}

/// Describes a scalar the way serde's `Unexpected` does: `integer 70000`,
/// `floating point 1.5`, `string "abc"`.
fn describe_scalar(s: &str) -> String {
    let digits = s.strip_prefix(['-', '+']).unwrap_or(s);
    let plain_integer = !digits.is_empty()
        && digits.bytes().all(|b| b.is_ascii_digit())
        && (digits.len() == 1 || !digits.starts_with('0'));
    if plain_integer {
        format!("integer {}", s.strip_prefix('+').unwrap_or(s))
    } else if s.parse::<f64>().is_ok() && s.bytes().any(|b| b == b'.' || b == b'e' || b == b'E') {
        format!("floating point {s}")
    } else {
        format!("{s:?}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn describes_scalars_like_serde() {
        assert_eq!(describe_scalar("70000"), "integer 70000");
        assert_eq!(describe_scalar("-1"), "integer -1");
        assert_eq!(describe_scalar("+5"), "integer 5");
        assert_eq!(describe_scalar("1.5"), "floating point 1.5");
        assert_eq!(describe_scalar("07"), "\"07\"");
        assert_eq!(describe_scalar("abc"), "\"abc\"");
    }

    #[test]
    fn display_is_file_line_column_path_message() {
        let e = ConfigError::Invalid {
            file: "x.yaml".into(),
            problems: vec![
                Problem {
                    line: 3,
                    column: 7,
                    path: "a.b".into(),
                    message: "bad".into(),
                },
                Problem {
                    line: 9,
                    column: 1,
                    path: String::new(),
                    message: "worse".into(),
                },
            ],
        };
        assert_eq!(e.to_string(), "x.yaml:3:7: a.b: bad\nx.yaml:9:1: worse");
        assert_eq!(e.line(), Some(3));
        assert_eq!(e.column(), Some(7));
        assert_eq!(e.field_path(), Some("a.b"));
        let r = ConfigError::Read {
            file: "y.yaml".into(),
            source: std::io::Error::new(std::io::ErrorKind::NotFound, "gone"),
        };
        assert_eq!(r.to_string(), "y.yaml: gone");
        assert_eq!(r.line(), None);
    }
}
