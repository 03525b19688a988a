//! `palisade normalize`: runs a trunk's stage on one message, exactly as the
//! engine would, and reports what happened.

use std::fmt::Write as _;
use std::sync::Arc;

use bytes::Bytes;
use palisade_b2bua::{Direction, StageContext};
use palisade_config::Config;
use palisade_config::normalization::RuleDirection;
use palisade_sip::{Editor, Message, ParseError, ParseLimits};

use crate::program::{Fired, Program};
use crate::stage::NormalizeStage;

/// Header lines the engine accepts (its parse limit).
const MAX_HEADERS: usize = 256;

/// Why a dry run could not run.
#[derive(Debug, thiserror::Error)]
pub enum DryRunError {
    // --- Operator: the command line names something the config lacks. ---
    /// No trunk of that name.
    #[error("no trunk named `{name}` (trunks: {known})")]
    UnknownTrunk {
        /// The name given.
        name: String,
        /// The configured trunks.
        known: String,
    },
    /// `--from-trunk` names a trunk with no address a message could come
    /// from (only DNS members and no `source_addresses`).
    #[error(
        "trunk `{trunk}` has no IP member and no source_addresses: nothing to receive the message from"
    )]
    NoSourceAddress {
        /// The trunk.
        trunk: String,
    },
    // --- Input: the message is not SIP. ---
    /// The message does not parse.
    #[error("the message does not parse: {error} (line {line}, column {column})")]
    Parse {
        /// The parser's error, with its byte offset.
        error: ParseError,
        /// 1-based line of the offset.
        line: usize,
        /// 1-based column of the offset.
        column: usize,
    },
    /// A response was given where the engine run needs a request.
    #[error("the message is a response: the engine run takes a request received from the trunk")]
    NotARequest,
}

/// What a dry run did.
#[derive(Debug, Clone)]
pub struct DryRun {
    /// The trunk.
    pub trunk: String,
    /// The direction.
    pub direction: RuleDirection,
    /// The stages that ran, in order (empty: the trunk has nothing to run).
    pub stages: Vec<&'static str>,
    /// The message as read (CRLF line ends).
    pub input: Bytes,
    /// The message as Palisade would send it (out) or process it (in).
    pub output: Bytes,
    /// The rules that fired, in order, with what they changed.
    pub fired: Vec<Fired>,
    /// What was adjusted in the input before parsing (line ends, Content-Length).
    pub notes: Vec<String>,
}

/// Line ends to CRLF, a missing blank line added, and Content-Length made to
/// fit the body as given (line-end conversion changes its length).
pub fn prepare_input(raw: &[u8]) -> (Bytes, Vec<String>) {
    let mut notes = Vec::new();
    let mut out = Vec::with_capacity(raw.len() + 64);
    let mut lf_only = false;
    let mut i = 0;
    while i < raw.len() {
        let b = raw[i];
        if b == b'\r' && raw.get(i + 1) == Some(&b'\n') {
            out.extend_from_slice(b"\r\n");
            i += 2;
            continue;
        }
        if b == b'\n' {
            lf_only = true;
            out.extend_from_slice(b"\r\n");
        } else {
            out.push(b);
        }
        i += 1;
    }
    if lf_only {
        notes.push("line ends converted to CRLF".to_owned());
    }
    // Leading blank lines are allowed by the parser; find the head end.
    let first = out
        .iter()
        .position(|&b| b != b'\r' && b != b'\n')
        .unwrap_or(out.len());
    let head_end = find(&out[first..], b"\r\n\r\n").map(|p| first + p + 4);
    let head_end = match head_end {
        Some(h) => h,
        None => {
            if !out.ends_with(b"\r\n") {
                out.extend_from_slice(b"\r\n");
            }
            out.extend_from_slice(b"\r\n");
            notes.push("blank line after the headers added".to_owned());
            out.len()
        }
    };
    let body_len = out.len() - head_end;
    // Fix Content-Length (or `l`) when it does not match the body given.
    let head = String::from_utf8_lossy(&out[..head_end]).into_owned();
    let mut fixed = String::with_capacity(head.len());
    let mut changed = false;
    for line in head.split_inclusive("\r\n") {
        let name = line.split(':').next().unwrap_or("").trim();
        if (name.eq_ignore_ascii_case("content-length") || name.eq_ignore_ascii_case("l"))
            && let Some((n, v)) = line.split_once(':')
        {
            let declared = v.trim();
            if declared.parse::<usize>().ok() != Some(body_len)
                && declared.bytes().all(|b| b.is_ascii_digit())
                && !declared.is_empty()
            {
                notes.push(format!(
                    "Content-Length {declared} corrected to {body_len} (the body as given)"
                ));
                let _ = write!(fixed, "{n}: {body_len}\r\n");
                changed = true;
                continue;
            }
        }
        fixed.push_str(line);
    }
    if changed && std::str::from_utf8(&out[..head_end]).is_ok() {
        let mut v = fixed.into_bytes();
        v.extend_from_slice(&out[head_end..]);
        out = v;
    }
    (Bytes::from(out), notes)
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// 1-based line and column of byte `offset` in `text`.
pub(crate) fn line_col(text: &[u8], offset: usize) -> (usize, usize) {
    let upto = &text[..offset.min(text.len())];
    let line = upto.iter().filter(|&&b| b == b'\n').count() + 1;
    let col = upto.iter().rev().take_while(|&&b| b != b'\n').count() + 1;
    (line, col)
}

/// Runs what the engine runs for `trunk` going `direction` on `raw`.
/// `source_trunk` stands for the other leg's trunk of an outbound message
/// (what `match.source_trunk` sees).
pub fn dry_run(
    cfg: Arc<Config>,
    trunk: &str,
    direction: RuleDirection,
    source_trunk: Option<&str>,
    raw: &[u8],
) -> Result<DryRun, DryRunError> {
    let unknown = |name: &str| DryRunError::UnknownTrunk {
        name: name.to_owned(),
        known: cfg
            .trunks()
            .iter()
            .map(|t| t.name.as_str())
            .collect::<Vec<_>>()
            .join(", "),
    };
    let t = cfg.trunk_by_name(trunk).ok_or_else(|| unknown(trunk))?;
    let other = match source_trunk {
        Some(s) => Some(cfg.trunk_by_name(s).ok_or_else(|| unknown(s))?.id),
        None => None,
    };
    let (input, notes) = prepare_input(raw);
    let limits = ParseLimits {
        max_message_bytes: cfg
            .sip()
            .max_tcp_message_bytes
            .max(cfg.sip().max_udp_message_bytes),
        max_headers: MAX_HEADERS,
    };
    let msg = Message::parse(input.clone(), &limits).map_err(|error| {
        let (line, column) = line_col(&input, error.offset);
        DryRunError::Parse {
            error,
            line,
            column,
        }
    })?;
    let program = Program::new(Arc::clone(&cfg));
    let stage = NormalizeStage::new(&program, t.id, direction);
    let ctx = StageContext {
        trunk: t.id,
        trunk_name: &t.name,
        direction: match direction {
            RuleDirection::In => Direction::Inbound,
            RuleDirection::Out => Direction::Outbound,
        },
        source: None,
        other_trunk: match direction {
            RuleDirection::In => None,
            RuleDirection::Out => other,
        },
    };
    let mut edit = Editor::new(&msg);
    let mut stages = Vec::new();
    let mut fired = Vec::new();
    if let Some(s) = &stage {
        stages.push(palisade_b2bua::Stage::name(s));
        fired = s.run(&ctx, &mut edit, true);
    }
    // The engine sends the stage's edits as they are (outbound) or parses
    // them again (inbound); an untouched message goes out as received.
    let output = if edit.is_modified() {
        edit.finish()
    } else {
        input.clone()
    };
    Ok(DryRun {
        trunk: t.name.clone(),
        direction,
        stages,
        input,
        output,
        fired,
        notes,
    })
}

impl DryRun {
    /// The fired rules, one block per rule: `PROFILE/RULE` then one
    /// indented line per change (the golden tests' `fired.txt`).
    pub fn fired_text(&self) -> String {
        render_fired(&self.fired)
    }

    /// A unified diff of the input and the output (3 lines of context),
    /// empty when they are equal.
    pub fn diff(&self) -> String {
        unified_diff(
            &String::from_utf8_lossy(&self.input),
            &String::from_utf8_lossy(&self.output),
        )
    }

    /// The human-readable report: the message, then the fired rules, then the diff.
    pub fn text_report(&self) -> String {
        let mut out = String::from_utf8_lossy(&self.output).into_owned();
        if !out.ends_with('\n') {
            out.push('\n');
        }
        let dir = match self.direction {
            RuleDirection::In => "in",
            RuleDirection::Out => "out",
        };
        let _ = writeln!(
            out,
            "===== rules fired (trunk {}, direction {dir}, stages: {}) =====",
            self.trunk,
            if self.stages.is_empty() {
                "none: the trunk has no profiles for this direction".to_owned()
            } else {
                self.stages.join(", ")
            }
        );
        for n in &self.notes {
            let _ = writeln!(out, "note: {n}");
        }
        if self.fired.is_empty() {
            out.push_str("(no rule fired)\n");
        } else {
            out.push_str(&self.fired_text());
        }
        out.push_str("===== diff =====\n");
        let d = self.diff();
        if d.is_empty() {
            out.push_str("(no change)\n");
        } else {
            out.push_str(&d);
        }
        out
    }

    /// The machine-readable report.
    pub fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "trunk": self.trunk,
            "direction": match self.direction { RuleDirection::In => "in", RuleDirection::Out => "out" },
            "stages": self.stages,
            "notes": self.notes,
            "fired": self.fired.iter().map(|f| serde_json::json!({
                "profile": f.profile,
                "rule": f.rule,
                "changes": f.changes,
                "skipped": f.skipped,
            })).collect::<Vec<_>>(),
            "message": String::from_utf8_lossy(&self.output),
            "changed": self.input != self.output,
            "diff": self.diff(),
        })
    }
}

/// `PROFILE/RULE` lines, each change indented below.
pub fn render_fired(fired: &[Fired]) -> String {
    let mut out = String::new();
    for f in fired {
        let _ = writeln!(out, "{}/{}", f.profile, f.rule);
        if f.changes.is_empty() {
            out.push_str("  (matched; nothing to change)\n");
        }
        for c in &f.changes {
            let _ = writeln!(out, "  {c}");
        }
    }
    out
}

/// A unified diff of two texts by lines (CR stripped), 3 lines of context.
pub fn unified_diff(a: &str, b: &str) -> String {
    let a: Vec<&str> = a.lines().map(|l| l.trim_end_matches('\r')).collect();
    let b: Vec<&str> = b.lines().map(|l| l.trim_end_matches('\r')).collect();
    if a == b {
        return String::new();
    }
    // LCS table; messages are small (at most a few hundred lines).
    let (n, m) = (a.len(), b.len());
    let mut t = vec![vec![0u32; m + 1]; n + 1];
    for i in (0..n).rev() {
        for j in (0..m).rev() {
            t[i][j] = if a[i] == b[j] {
                t[i + 1][j + 1] + 1
            } else {
                t[i + 1][j].max(t[i][j + 1])
            };
        }
    }
    // Edit script: (' ' | '-' | '+', a index, b index).
    let mut ops: Vec<(char, usize, usize)> = Vec::new();
    let (mut i, mut j) = (0, 0);
    while i < n || j < m {
        if i < n && j < m && a[i] == b[j] {
            ops.push((' ', i, j));
            i += 1;
            j += 1;
        } else if j < m && (i == n || t[i][j + 1] > t[i + 1][j]) {
            ops.push(('+', i, j));
            j += 1;
        } else {
            ops.push(('-', i, j));
            i += 1;
        }
    }
    const CONTEXT: usize = 3;
    let mut out = String::from("--- before\n+++ after\n");
    let changed: Vec<usize> = ops
        .iter()
        .enumerate()
        .filter(|(_, o)| o.0 != ' ')
        .map(|(k, _)| k)
        .collect();
    let mut k = 0;
    while k < changed.len() {
        let start = changed[k].saturating_sub(CONTEXT);
        let mut end = changed[k];
        while k < changed.len() && changed[k] <= end + 2 * CONTEXT {
            end = changed[k];
            k += 1;
        }
        let end = (end + CONTEXT + 1).min(ops.len());
        let hunk = &ops[start..end];
        let a_start = hunk.first().map_or(0, |o| o.1);
        let b_start = hunk.first().map_or(0, |o| o.2);
        let a_len = hunk.iter().filter(|o| o.0 != '+').count();
        let b_len = hunk.iter().filter(|o| o.0 != '-').count();
        let _ = writeln!(
            out,
            "@@ -{},{a_len} +{},{b_len} @@",
            a_start + usize::from(a_len > 0),
            b_start + usize::from(b_len > 0)
        );
        for &(c, ai, bj) in hunk {
            let line = if c == '+' { b[bj] } else { a[ai] };
            let _ = writeln!(out, "{c}{line}");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn input_is_made_crlf_and_content_length_fits() {
        let (b, notes) = prepare_input(b"OPTIONS sip:a@b SIP/2.0\nContent-Length: 9\n\nabc\n");
        assert_eq!(
            &b[..],
            b"OPTIONS sip:a@b SIP/2.0\r\nContent-Length: 5\r\n\r\nabc\r\n"
        );
        assert_eq!(notes.len(), 2, "{notes:?}");
        let (b, notes) = prepare_input(b"OPTIONS sip:a@b SIP/2.0\r\nX: 1\r\n");
        assert_eq!(&b[..], b"OPTIONS sip:a@b SIP/2.0\r\nX: 1\r\n\r\n");
        assert_eq!(notes, ["blank line after the headers added"]);
    }

    #[test]
    fn diff_shows_changed_lines_with_context() {
        let d = unified_diff("a\nb\nc\nd\n", "a\nB\nc\nd\ne\n");
        assert_eq!(
            d,
            "--- before\n+++ after\n@@ -1,4 +1,5 @@\n a\n-b\n+B\n c\n d\n+e\n"
        );
        assert_eq!(unified_diff("x\n", "x\n"), "");
    }
}
