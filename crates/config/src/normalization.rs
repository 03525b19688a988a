//! `normalization:` and the trunks' `trusted` / `normalization` keys: the
//! schema, the typed rule program it validates into, and every rule about it.
//!
//! Profiles are defined once and referenced by name from trunks. Everything a
//! rule needs at run time is resolved here: header names (compact forms
//! folded), methods, status patterns, regexes (compiled, size-capped), trunk
//! and profile references. Executing the rules is `palisade-normalize`'s job.

use std::collections::HashMap;
use std::fmt;

use palisade_sip::{HeaderName, Method};
use regex::{Regex, RegexBuilder};

use crate::model::TrunkId;
use crate::raw::S;

/// Caps: a normalization program stays small enough to run per message.
const MAX_PROFILES: usize = 256;
const MAX_RULES: usize = 256;
const MAX_ACTIONS: usize = 64;
const MAX_REGEX_CHARS: usize = 1024;
const REGEX_SIZE_LIMIT_BYTES: usize = 1 << 20;
const MAX_VALUE_CHARS: usize = 1024;

/// The YAML as written.
pub(crate) mod raw {
    use serde::Deserialize;

    use crate::raw::S;

    #[derive(Debug, Default, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub(crate) struct RawNormalization {
        pub privacy: Option<RawPrivacy>,
        pub profiles: Option<S<Vec<S<RawProfile>>>>,
    }

    #[derive(Debug, Default, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub(crate) struct RawPrivacy {
        pub honour_privacy_id: Option<S<bool>>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub(crate) struct RawProfile {
        pub name: S<String>,
        pub rules: S<Vec<S<RawRule>>>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub(crate) struct RawRule {
        pub name: S<String>,
        #[serde(rename = "match")]
        pub when: Option<RawMatch>,
        pub actions: S<Vec<S<RawAction>>>,
    }

    #[derive(Debug, Default, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub(crate) struct RawMatch {
        pub direction: Option<S<String>>,
        pub methods: Option<Vec<S<String>>>,
        pub status: Option<Vec<S<RawStatus>>>,
        pub header_present: Option<S<String>>,
        pub header_absent: Option<S<String>>,
        pub header_regex: Option<RawHeaderRegex>,
        pub number_regex: Option<S<String>>,
        pub ruri_regex: Option<S<String>>,
        pub source_trunk: Option<S<String>>,
    }

    /// `486` or `"4xx"`.
    #[derive(Debug)]
    pub(crate) enum RawStatus {
        Code(u64),
        Text(String),
    }

    impl<'de> Deserialize<'de> for RawStatus {
        fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            struct V;
            impl serde::de::Visitor<'_> for V {
                type Value = RawStatus;
                fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                    f.write_str("a status code (486) or class (\"4xx\")")
                }
                fn visit_u64<E>(self, v: u64) -> Result<RawStatus, E> {
                    Ok(RawStatus::Code(v))
                }
                fn visit_i64<E>(self, v: i64) -> Result<RawStatus, E> {
                    Ok(RawStatus::Code(u64::try_from(v).unwrap_or(0)))
                }
                fn visit_str<E>(self, v: &str) -> Result<RawStatus, E> {
                    Ok(RawStatus::Text(v.to_owned()))
                }
            }
            d.deserialize_any(V)
        }
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub(crate) struct RawHeaderRegex {
        pub name: S<String>,
        pub regex: S<String>,
    }

    /// One action: exactly one key is set (checked in validation).
    #[derive(Debug, Default, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub(crate) struct RawAction {
        pub add_header: Option<RawHeaderValue>,
        pub set_header: Option<RawHeaderValue>,
        pub replace_header: Option<RawHeaderValue>,
        pub remove_header: Option<S<String>>,
        pub rewrite_header: Option<RawRewriteHeader>,
        pub set_param: Option<RawSetParam>,
        pub remove_param: Option<RawParamRef>,
        pub rewrite_param: Option<RawRewriteParam>,
        pub keep_headers: Option<S<Vec<S<String>>>>,
        pub set_user_agent: Option<S<String>>,
        pub number: Option<S<RawNumber>>,
        pub map_status: Option<S<Vec<S<RawStatusMap>>>>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub(crate) struct RawHeaderValue {
        pub name: S<String>,
        pub value: S<String>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub(crate) struct RawRewriteHeader {
        pub name: S<String>,
        pub regex: S<String>,
        pub replace: S<String>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub(crate) struct RawSetParam {
        pub header: S<String>,
        pub name: S<String>,
        pub value: Option<S<String>>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub(crate) struct RawParamRef {
        pub header: S<String>,
        pub name: S<String>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub(crate) struct RawRewriteParam {
        pub header: S<String>,
        pub name: S<String>,
        pub regex: S<String>,
        pub replace: S<String>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub(crate) struct RawNumber {
        pub targets: S<Vec<S<String>>>,
        pub e164: Option<S<RawPlan>>,
        pub national: Option<S<RawPlan>>,
        pub strip_prefix: Option<S<String>>,
        pub add_prefix: Option<S<String>>,
        pub regex: Option<S<String>>,
        pub replace: Option<S<String>>,
        pub user_phone: Option<S<bool>>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub(crate) struct RawPlan {
        pub country_code: S<String>,
        pub national_prefix: Option<S<String>>,
        pub international_prefix: Option<S<String>>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub(crate) struct RawStatusMap {
        pub from: S<u64>,
        pub to: Option<S<u64>>,
        pub reason: Option<S<String>>,
    }

    #[derive(Debug, Default, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub(crate) struct RawTrunkNormalization {
        pub inbound: Option<Vec<S<String>>>,
        pub outbound: Option<Vec<S<String>>>,
    }
}

// ------------------------------------------------------------------ model

/// Index of a profile in [`Normalization::profiles`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ProfileId(pub u16);

impl ProfileId {
    /// The position in [`Normalization::profiles`].
    pub const fn index(self) -> usize {
        self.0 as usize
    }
}

/// `normalization:` — rule profiles and the privacy policy.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct Normalization {
    /// Every profile, in file order; `profiles[id.index()]` is profile `id`.
    pub profiles: Vec<Profile>,
    /// `normalization.privacy`.
    pub privacy: Privacy,
}

impl Normalization {
    /// The profile `id`.
    pub fn profile(&self, id: ProfileId) -> Option<&Profile> {
        self.profiles.get(id.index())
    }
}

/// `normalization.privacy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Privacy {
    /// A request with `Privacy: id` (RFC 3325) gets an anonymous From, and
    /// loses P-Asserted-Identity / P-Preferred-Identity, toward trunks with
    /// `trusted: false`. Default true.
    pub honour_privacy_id: bool,
}

impl Default for Privacy {
    fn default() -> Self {
        Privacy {
            honour_privacy_id: true,
        }
    }
}

/// A named, ordered list of rules, referenced by trunks.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Profile {
    /// Its id (index).
    pub id: ProfileId,
    /// Unique name (`[A-Za-z0-9._-]`, 1..=64).
    pub name: String,
    /// Tried in order; every matching rule runs, seeing what the rules
    /// before it changed.
    pub rules: Vec<Rule>,
}

/// One rule: when everything in `when` holds, `actions` run in order.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Rule {
    /// Unique within its profile (`[A-Za-z0-9._-]`, 1..=64).
    pub name: String,
    /// The conditions, all ANDed; empty matches every message.
    pub when: RuleMatch,
    /// At least one.
    pub actions: Vec<Action>,
}

/// Which way a message goes, for `match.direction`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RuleDirection {
    /// Received from the trunk.
    In,
    /// Sent to the trunk.
    Out,
}

/// A response status pattern: `486` or `"4xx"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StatusMatch {
    /// Exactly this code.
    Code(u16),
    /// Any code of this class (1..=6).
    Class(u8),
}

impl StatusMatch {
    /// Whether `status` matches.
    pub fn matches(self, status: u16) -> bool {
        match self {
            StatusMatch::Code(c) => c == status,
            StatusMatch::Class(k) => status / 100 == u16::from(k),
        }
    }
}

/// A header name from the config: its spelling for new lines, and its
/// classification (compact forms match their long form).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeaderSpec {
    /// The name to write (the canonical spelling for known headers).
    pub name: String,
    /// The classified name; `Other` for extension headers.
    pub known: HeaderName,
}

impl HeaderSpec {
    /// Whether a header line named `raw` (as written) is this header.
    pub fn matches(&self, raw: &[u8]) -> bool {
        match self.known {
            HeaderName::Other => raw.eq_ignore_ascii_case(self.name.as_bytes()),
            k => HeaderName::from_bytes(raw) == k,
        }
    }

    /// Whether a line with classified name `name` and raw name `raw` is this header.
    pub fn matches_line(&self, name: HeaderName, raw: &[u8]) -> bool {
        match self.known {
            HeaderName::Other => {
                name == HeaderName::Other && raw.eq_ignore_ascii_case(self.name.as_bytes())
            }
            k => name == k,
        }
    }
}

impl fmt::Display for HeaderSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)
    }
}

/// `match.header_regex`.
#[derive(Debug, Clone)]
pub struct HeaderRegex {
    /// The header.
    pub header: HeaderSpec,
    /// Searched in each value of the header (unanchored).
    pub regex: Regex,
}

/// `match:` — every condition given must hold.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct RuleMatch {
    /// Only messages going this way.
    pub direction: Option<RuleDirection>,
    /// Requests with one of these methods; with `status` also set, responses
    /// to such requests (their CSeq method).
    pub methods: Vec<Method>,
    /// Responses with one of these statuses.
    pub status: Vec<StatusMatch>,
    /// The header is present.
    pub header_present: Option<HeaderSpec>,
    /// The header is absent.
    pub header_absent: Option<HeaderSpec>,
    /// Some value of the header matches.
    pub header_regex: Option<HeaderRegex>,
    /// The dialled number (Request-URI user or tel number of a request, To
    /// number of a response) matches.
    pub number_regex: Option<Regex>,
    /// The Request-URI as the rule sees it (after earlier rules) matches;
    /// never matches a response.
    pub ruri_regex: Option<Regex>,
    /// The message belongs to a call from this trunk: the trunk itself for
    /// inbound messages, the other leg's trunk for outbound ones.
    pub source_trunk: Option<TrunkId>,
}

/// Where a number action applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NumberTarget {
    /// The Request-URI (requests only).
    Ruri,
    /// The To URI.
    To,
    /// The From URI.
    From,
    /// Every P-Asserted-Identity URI.
    Pai,
    /// Every Diversion URI.
    Diversion,
}

impl NumberTarget {
    /// The config spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            NumberTarget::Ruri => "ruri",
            NumberTarget::To => "to",
            NumberTarget::From => "from",
            NumberTarget::Pai => "pai",
            NumberTarget::Diversion => "diversion",
        }
    }
}

/// A numbering plan for national <-> E.164 conversion.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NumberPlan {
    /// Country calling code, digits only (`49`).
    pub country_code: String,
    /// Trunk prefix of national numbers (`0`); may be empty.
    pub national_prefix: String,
    /// International call prefix (`00`).
    pub international_prefix: String,
}

/// How a number action rewrites the number.
#[derive(Debug, Clone)]
pub enum NumberRewrite {
    /// National (`089...`) and international-prefix (`0049...`) forms to
    /// E.164 (`+4989...`); E.164 stays; anything else is left alone.
    ToE164(NumberPlan),
    /// E.164 of the plan's country to national (`+4989...` -> `089...`),
    /// other E.164 to the international-prefix form (`+1...` -> `001...`).
    ToNational(NumberPlan),
    /// Removes this prefix when the number starts with it.
    StripPrefix(String),
    /// Prepends this prefix.
    AddPrefix(String),
    /// Replaces the first match (capture groups as `$1`, `${name}`).
    Regex {
        /// The pattern.
        regex: Regex,
        /// The replacement.
        replace: String,
    },
}

/// `number:` — rewrite the numbers in `targets`.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct NumberAction {
    /// Where, in order, without duplicates.
    pub targets: Vec<NumberTarget>,
    /// The rewrite, if any.
    pub rewrite: Option<NumberRewrite>,
    /// Set (`true`) or remove (`false`) the SIP URI parameter `user=phone`.
    pub user_phone: Option<bool>,
}

/// One entry of `map_status`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusMap {
    /// The status to change.
    pub from: u16,
    /// The new status (same class group as `from`).
    pub to: u16,
    /// The reason phrase; `None` = the standard phrase of `to` when the code
    /// changes, the received phrase otherwise.
    pub reason: Option<String>,
}

/// What a rule does. Exhaustive on purpose: the executor must handle each.
#[derive(Debug, Clone)]
pub enum Action {
    /// Appends a header line.
    AddHeader {
        /// The header.
        header: HeaderSpec,
        /// Its value.
        value: String,
    },
    /// One line with this value, in place of the first existing line (the
    /// others are removed), or appended.
    SetHeader {
        /// The header.
        header: HeaderSpec,
        /// Its value.
        value: String,
    },
    /// Replaces the value of every existing line; nothing when absent.
    ReplaceHeader {
        /// The header.
        header: HeaderSpec,
        /// Its value.
        value: String,
    },
    /// Removes every line of the header.
    RemoveHeader {
        /// The header.
        header: HeaderSpec,
    },
    /// Regex replace (every match) in each line's value.
    RewriteHeader {
        /// The header.
        header: HeaderSpec,
        /// The pattern.
        regex: Regex,
        /// The replacement (`$1`, `${name}`).
        replace: String,
    },
    /// Sets (or adds) a header parameter on each value of the header.
    SetParam {
        /// The header.
        header: HeaderSpec,
        /// Parameter name.
        param: String,
        /// Value; `None` for a flag parameter.
        value: Option<String>,
    },
    /// Removes a header parameter from each value of the header.
    RemoveParam {
        /// The header.
        header: HeaderSpec,
        /// Parameter name.
        param: String,
    },
    /// Regex replace in the value of a header parameter.
    RewriteParam {
        /// The header.
        header: HeaderSpec,
        /// Parameter name.
        param: String,
        /// The pattern.
        regex: Regex,
        /// The replacement.
        replace: String,
    },
    /// Allow-list: removes every header not listed and not structural.
    KeepHeaders {
        /// The headers kept besides the structural ones.
        keep: Vec<HeaderSpec>,
    },
    /// Sets User-Agent on requests and Server on responses.
    SetUserAgent {
        /// The value.
        value: String,
    },
    /// Number rewriting.
    Number(NumberAction),
    /// Response code (and reason phrase) map.
    MapStatus(Vec<StatusMap>),
}

impl Action {
    /// The config key of this action.
    pub fn key(&self) -> &'static str {
        match self {
            Action::AddHeader { .. } => "add_header",
            Action::SetHeader { .. } => "set_header",
            Action::ReplaceHeader { .. } => "replace_header",
            Action::RemoveHeader { .. } => "remove_header",
            Action::RewriteHeader { .. } => "rewrite_header",
            Action::SetParam { .. } => "set_param",
            Action::RemoveParam { .. } => "remove_param",
            Action::RewriteParam { .. } => "rewrite_param",
            Action::KeepHeaders { .. } => "keep_headers",
            Action::SetUserAgent { .. } => "set_user_agent",
            Action::Number(_) => "number",
            Action::MapStatus(_) => "map_status",
        }
    }
}

/// A trunk's `normalization:` — profiles run on its messages, in order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct TrunkNormalization {
    /// Run on every message received from the trunk, before routing.
    pub inbound: Vec<ProfileId>,
    /// Run on every message Palisade sends to the trunk.
    pub outbound: Vec<ProfileId>,
}

/// Headers no rule may remove (`remove_header`, `keep_headers`): the
/// transaction and dialog layers and the body depend on them. Any
/// `Content-*` header is structural too.
pub const STRUCTURAL: &[HeaderName] = &[
    HeaderName::Via,
    HeaderName::From,
    HeaderName::To,
    HeaderName::CallId,
    HeaderName::CSeq,
    HeaderName::Contact,
    HeaderName::MaxForwards,
    HeaderName::Route,
    HeaderName::RecordRoute,
];

/// Whether a header line (classified `name`, written `raw`) is structural.
pub fn is_structural(name: HeaderName, raw: &[u8]) -> bool {
    STRUCTURAL.contains(&name)
        || raw.len() >= 8 && raw[..8].eq_ignore_ascii_case(b"content-")
        || matches!(
            name,
            HeaderName::ContentType
                | HeaderName::ContentLength
                | HeaderName::ContentEncoding
                | HeaderName::ContentDisposition
                | HeaderName::ContentLanguage
        )
}

/// Headers no header action may add, set, replace or rewrite: identifiers
/// of transactions and dialogs, routing, and what the codec writes itself.
/// (From and To are edited through `number`, `set_param`, `remove_param`,
/// `rewrite_param` and `rewrite_header`, which keep their tags.)
const NOT_EDITABLE: &[HeaderName] = &[
    HeaderName::Via,
    HeaderName::CallId,
    HeaderName::CSeq,
    HeaderName::ContentLength,
    HeaderName::ContentType,
    HeaderName::MaxForwards,
    HeaderName::Route,
    HeaderName::RecordRoute,
];

/// Headers `add_header`, `set_header` and `replace_header` may not touch on
/// top of [`NOT_EDITABLE`]: writing them whole would drop tags or duplicate
/// a single-valued header.
const NOT_SETTABLE: &[HeaderName] = &[HeaderName::From, HeaderName::To, HeaderName::Contact];

const STRUCTURAL_TEXT: &str =
    "Via, From, To, Call-ID, CSeq, Contact, Max-Forwards, Route, Record-Route, Content-*";

// ------------------------------------------------------------- validation

use crate::error::Problem;
use serde_saphyr::Location;

/// Collects problems (shared shape with `validate.rs`).
pub(crate) struct Cx<'a> {
    pub problems: &'a mut Vec<Problem>,
}

impl Cx<'_> {
    fn err(&mut self, at: Location, path: impl Into<String>, message: impl Into<String>) {
        self.problems.push(Problem::at(at, path, message));
    }
}

fn name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')
}

fn check_name(cx: &mut Cx, v: &S<String>, path: &str) {
    let n = v.value.chars().count();
    if n == 0 || n > 64 {
        cx.err(
            v.referenced,
            path,
            format!("must be 1..=64 characters long (got {n})"),
        );
    } else if let Some(bad) = v.value.chars().find(|&c| !name_char(c)) {
        cx.err(
            v.referenced,
            path,
            format!("`{}` contains {bad:?}; allowed are [A-Za-z0-9._-]", v.value),
        );
    }
}

fn token_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-.!%*_+`'~".contains(&b)
}

/// A header name from the config.
fn header(cx: &mut Cx, v: &S<String>, path: &str) -> Option<HeaderSpec> {
    let name = v.value.trim();
    if name.is_empty() || !name.bytes().all(token_char) {
        cx.err(
            v.referenced,
            path,
            format!("`{name}` is not a header name (an RFC 3261 token)"),
        );
        return None;
    }
    let known = HeaderName::from_bytes(name.as_bytes());
    if name.len() == 1 && known == HeaderName::Other {
        cx.err(
            v.referenced,
            path,
            format!("unknown header `{name}`: no header has this compact form"),
        );
        return None;
    }
    let name = match known {
        HeaderName::Other => name.to_owned(),
        k => k.as_str().to_owned(),
    };
    Some(HeaderSpec { name, known })
}

/// A header an action edits: not one of the headers the engine owns.
fn editable_header(
    cx: &mut Cx,
    v: &S<String>,
    path: &str,
    action: &str,
    whole: bool,
) -> Option<HeaderSpec> {
    let h = header(cx, v, path)?;
    if NOT_EDITABLE.contains(&h.known) || (whole && NOT_SETTABLE.contains(&h.known)) {
        let why = if whole && NOT_SETTABLE.contains(&h.known) {
            "writing it whole would drop its tag or duplicate it; use number, set_param, remove_param, rewrite_param or rewrite_header"
        } else {
            "the transaction and dialog layers own it"
        };
        cx.err(
            v.referenced,
            path,
            format!("{action} cannot change {}: {why}", h.name),
        );
        return None;
    }
    Some(h)
}

fn removable_header(cx: &mut Cx, v: &S<String>, path: &str) -> Option<HeaderSpec> {
    let h = header(cx, v, path)?;
    if is_structural(h.known, h.name.as_bytes()) {
        cx.err(
            v.referenced,
            path,
            format!(
                "{} is structural and can never be removed (structural: {STRUCTURAL_TEXT})",
                h.name
            ),
        );
        return None;
    }
    Some(h)
}

fn regex(cx: &mut Cx, v: &S<String>, path: &str) -> Option<Regex> {
    let n = v.value.chars().count();
    if n == 0 || n > MAX_REGEX_CHARS {
        cx.err(
            v.referenced,
            path,
            format!("must be 1..={MAX_REGEX_CHARS} characters long (got {n})"),
        );
        return None;
    }
    match RegexBuilder::new(&v.value)
        .size_limit(REGEX_SIZE_LIMIT_BYTES)
        .build()
    {
        Ok(r) => Some(r),
        Err(e) => {
            cx.err(
                v.referenced,
                path,
                format!("invalid regex: {}", crate::validate::regex_error_line(&e)),
            );
            None
        }
    }
}

/// Checks that every `$N` / `${N}` / `${name}` in `replace` names a group of `re`.
fn replacement(cx: &mut Cx, re: Option<&Regex>, v: &S<String>, path: &str) -> String {
    let text = &v.value;
    value_text(cx, v, path);
    let Some(re) = re else {
        return text.clone();
    };
    let b = text.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] != b'$' {
            i += 1;
            continue;
        }
        if b.get(i + 1) == Some(&b'$') {
            i += 2;
            continue;
        }
        let (name, next) = if b.get(i + 1) == Some(&b'{') {
            match text[i + 2..].find('}') {
                Some(e) => (&text[i + 2..i + 2 + e], i + 3 + e),
                None => {
                    cx.err(v.referenced, path, "unterminated `${` in the replacement");
                    return text.clone();
                }
            }
        } else {
            let e = text[i + 1..]
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .map_or(text.len(), |e| i + 1 + e);
            (&text[i + 1..e], e)
        };
        let known = match name.parse::<usize>() {
            Ok(n) => n < re.captures_len(),
            Err(_) => !name.is_empty() && re.capture_names().flatten().any(|c| c == name),
        };
        if !known {
            cx.err(
                v.referenced,
                path,
                format!(
                    "`${name}` names no capture group of the regex (it has {}); write `$$` for a literal `$`",
                    re.captures_len().saturating_sub(1)
                ),
            );
        }
        i = next.max(i + 1);
    }
    text.clone()
}

/// A value written into a message: printable, no line breaks.
fn value_text(cx: &mut Cx, v: &S<String>, path: &str) -> String {
    let n = v.value.chars().count();
    if n > MAX_VALUE_CHARS {
        cx.err(
            v.referenced,
            path,
            format!("must be at most {MAX_VALUE_CHARS} characters long (got {n})"),
        );
    } else if v.value.chars().any(|c| c.is_control() && c != '\t') {
        cx.err(
            v.referenced,
            path,
            "must not contain control characters (CR, LF, NUL...): it is written into a SIP header",
        );
    }
    v.value.clone()
}

fn param_name(cx: &mut Cx, v: &S<String>, path: &str) -> String {
    let name = v.value.trim();
    if name.is_empty() || !name.bytes().all(token_char) {
        cx.err(
            v.referenced,
            path,
            format!("`{name}` is not a parameter name (an RFC 3261 token)"),
        );
    } else if name.eq_ignore_ascii_case("tag") {
        cx.err(
            v.referenced,
            path,
            "the `tag` parameter identifies the dialog and cannot be changed",
        );
    }
    name.to_owned()
}

fn param_value(cx: &mut Cx, v: &S<String>, path: &str) -> String {
    let ok = v.value.bytes().all(|b| {
        token_char(b) || matches!(b, b'[' | b']' | b':' | b'@' | b'/' | b'"' | b' ' | b'=')
    });
    if v.value.is_empty() || !ok {
        cx.err(
            v.referenced,
            path,
            format!(
                "`{}` is not a parameter value (token characters, or a quoted string)",
                v.value
            ),
        );
    }
    v.value.clone()
}

fn prefix(cx: &mut Cx, v: &S<String>, path: &str) -> String {
    let n = v.value.chars().count();
    if n == 0 || n > 32 {
        cx.err(
            v.referenced,
            path,
            format!("must be 1..=32 characters long (got {n})"),
        );
    } else if let Some(bad) = v
        .value
        .chars()
        .find(|c| !matches!(c, '0'..='9' | '+' | '*' | '#'))
    {
        cx.err(
            v.referenced,
            path,
            format!("`{}` contains {bad:?}; allowed are [0-9+*#]", v.value),
        );
    }
    v.value.clone()
}

fn digits(
    cx: &mut Cx,
    v: &S<String>,
    path: &str,
    range: std::ops::RangeInclusive<usize>,
) -> String {
    let ok = range.contains(&v.value.len()) && v.value.bytes().all(|b| b.is_ascii_digit());
    if !ok {
        cx.err(
            v.referenced,
            path,
            format!(
                "`{}` must be {}..={} digits",
                v.value,
                range.start(),
                range.end()
            ),
        );
    }
    v.value.clone()
}

fn plan(cx: &mut Cx, v: &S<raw::RawPlan>, path: &str) -> NumberPlan {
    let p = &v.value;
    let country_code = digits(cx, &p.country_code, &format!("{path}.country_code"), 1..=3);
    if country_code.starts_with('0') {
        cx.err(
            p.country_code.referenced,
            format!("{path}.country_code"),
            "a country code never starts with 0",
        );
    }
    let national_prefix = p.national_prefix.as_ref().map_or_else(
        || "0".to_owned(),
        |n| digits(cx, n, &format!("{path}.national_prefix"), 0..=4),
    );
    let international_prefix = p.international_prefix.as_ref().map_or_else(
        || "00".to_owned(),
        |n| digits(cx, n, &format!("{path}.international_prefix"), 1..=4),
    );
    if !national_prefix.is_empty() && international_prefix.starts_with(&national_prefix) {
        // Fine (0 and 00): the longer international prefix is tried first.
    }
    NumberPlan {
        country_code,
        national_prefix,
        international_prefix,
    }
}

fn status_code(cx: &mut Cx, v: &S<u64>, path: &str) -> Option<u16> {
    match u16::try_from(v.value) {
        Ok(c) if (101..=699).contains(&c) && !(200..300).contains(&c) => Some(c),
        _ => {
            cx.err(
                v.referenced,
                path,
                format!(
                    "{} cannot be mapped: use 101..=199 or 300..=699 (100 is hop-by-hop, 2xx decide the dialog)",
                    v.value
                ),
            );
            None
        }
    }
}

fn group(c: u16) -> u8 {
    if c < 200 { 1 } else { 3 }
}

fn number(cx: &mut Cx, v: &S<raw::RawNumber>, path: &str) -> Option<NumberAction> {
    let n = &v.value;
    let mut targets = Vec::new();
    if n.targets.value.is_empty() {
        cx.err(
            n.targets.referenced,
            format!("{path}.targets"),
            "at least one target is required (ruri, to, from, pai, diversion)",
        );
    }
    for (i, t) in n.targets.value.iter().enumerate() {
        let tp = format!("{path}.targets[{i}]");
        let target = match t.value.as_str() {
            "ruri" => NumberTarget::Ruri,
            "to" => NumberTarget::To,
            "from" => NumberTarget::From,
            "pai" => NumberTarget::Pai,
            "diversion" => NumberTarget::Diversion,
            other => {
                cx.err(
                    t.referenced,
                    tp,
                    format!("unknown target `{other}`; use ruri, to, from, pai or diversion"),
                );
                continue;
            }
        };
        if targets.contains(&target) {
            cx.err(t.referenced, tp, format!("{} is listed twice", t.value));
            continue;
        }
        targets.push(target);
    }
    let mut rewrites: Vec<(&'static str, Location, NumberRewrite)> = Vec::new();
    if let Some(p) = &n.e164 {
        let plan = plan(cx, p, &format!("{path}.e164"));
        rewrites.push(("e164", p.referenced, NumberRewrite::ToE164(plan)));
    }
    if let Some(p) = &n.national {
        let plan = plan(cx, p, &format!("{path}.national"));
        rewrites.push(("national", p.referenced, NumberRewrite::ToNational(plan)));
    }
    if let Some(s) = &n.strip_prefix {
        let s2 = prefix(cx, s, &format!("{path}.strip_prefix"));
        rewrites.push(("strip_prefix", s.referenced, NumberRewrite::StripPrefix(s2)));
    }
    if let Some(s) = &n.add_prefix {
        let s2 = prefix(cx, s, &format!("{path}.add_prefix"));
        rewrites.push(("add_prefix", s.referenced, NumberRewrite::AddPrefix(s2)));
    }
    match (&n.regex, &n.replace) {
        (Some(r), Some(rep)) => {
            let re = regex(cx, r, &format!("{path}.regex"));
            let replace = replacement(cx, re.as_ref(), rep, &format!("{path}.replace"));
            if let Some(regex) = re {
                rewrites.push((
                    "regex",
                    r.referenced,
                    NumberRewrite::Regex { regex, replace },
                ));
            }
        }
        (Some(r), None) => cx.err(
            r.referenced,
            format!("{path}.replace"),
            "regex needs a replace (capture groups as $1)",
        ),
        (None, Some(rep)) => cx.err(
            rep.referenced,
            format!("{path}.regex"),
            "replace needs a regex",
        ),
        (None, None) => {}
    }
    if rewrites.len() > 1 {
        let keys: Vec<&str> = rewrites.iter().map(|r| r.0).collect();
        cx.err(
            rewrites[1].1,
            format!("{path}.{}", rewrites[1].0),
            format!(
                "one rewrite per number action (got {}); use one action each, in order",
                keys.join(", ")
            ),
        );
    }
    let user_phone = n.user_phone.as_ref().map(|u| u.value);
    if rewrites.is_empty() && user_phone.is_none() {
        cx.err(
            v.referenced,
            path,
            "says nothing to do: give e164, national, strip_prefix, add_prefix, regex+replace or user_phone",
        );
    }
    Some(NumberAction {
        targets,
        rewrite: rewrites.into_iter().next().map(|r| r.2),
        user_phone,
    })
}

fn action(
    cx: &mut Cx,
    a: &S<raw::RawAction>,
    path: &str,
    trunks: &HashMap<&str, TrunkId>,
) -> Option<Action> {
    let _ = trunks;
    let r = &a.value;
    let set: Vec<&str> = [
        ("add_header", r.add_header.is_some()),
        ("set_header", r.set_header.is_some()),
        ("replace_header", r.replace_header.is_some()),
        ("remove_header", r.remove_header.is_some()),
        ("rewrite_header", r.rewrite_header.is_some()),
        ("set_param", r.set_param.is_some()),
        ("remove_param", r.remove_param.is_some()),
        ("rewrite_param", r.rewrite_param.is_some()),
        ("keep_headers", r.keep_headers.is_some()),
        ("set_user_agent", r.set_user_agent.is_some()),
        ("number", r.number.is_some()),
        ("map_status", r.map_status.is_some()),
    ]
    .into_iter()
    .filter(|(_, on)| *on)
    .map(|(k, _)| k)
    .collect();
    if set.len() != 1 {
        let msg = if set.is_empty() {
            "an action needs one key: add_header, set_header, replace_header, remove_header, rewrite_header, set_param, remove_param, rewrite_param, keep_headers, set_user_agent, number or map_status".to_owned()
        } else {
            format!(
                "one key per action (got {}); write each as its own list item",
                set.join(", ")
            )
        };
        cx.err(a.referenced, path, msg);
        return None;
    }
    let p = |k: &str| format!("{path}.{k}");
    if let Some(h) = &r.add_header {
        let header = editable_header(cx, &h.name, &p("add_header.name"), "add_header", true);
        let value = value_text(cx, &h.value, &p("add_header.value"));
        return header.map(|header| Action::AddHeader { header, value });
    }
    if let Some(h) = &r.set_header {
        let header = editable_header(cx, &h.name, &p("set_header.name"), "set_header", true);
        let value = value_text(cx, &h.value, &p("set_header.value"));
        return header.map(|header| Action::SetHeader { header, value });
    }
    if let Some(h) = &r.replace_header {
        let header = editable_header(
            cx,
            &h.name,
            &p("replace_header.name"),
            "replace_header",
            true,
        );
        let value = value_text(cx, &h.value, &p("replace_header.value"));
        return header.map(|header| Action::ReplaceHeader { header, value });
    }
    if let Some(h) = &r.remove_header {
        return removable_header(cx, h, &p("remove_header"))
            .map(|header| Action::RemoveHeader { header });
    }
    if let Some(h) = &r.rewrite_header {
        let header = editable_header(
            cx,
            &h.name,
            &p("rewrite_header.name"),
            "rewrite_header",
            false,
        );
        let re = regex(cx, &h.regex, &p("rewrite_header.regex"));
        let replace = replacement(cx, re.as_ref(), &h.replace, &p("rewrite_header.replace"));
        return match (header, re) {
            (Some(header), Some(regex)) => Some(Action::RewriteHeader {
                header,
                regex,
                replace,
            }),
            _ => None,
        };
    }
    if let Some(h) = &r.set_param {
        let header = editable_header(cx, &h.header, &p("set_param.header"), "set_param", false);
        let param = param_name(cx, &h.name, &p("set_param.name"));
        let value = h
            .value
            .as_ref()
            .map(|v| param_value(cx, v, &p("set_param.value")));
        return header.map(|header| Action::SetParam {
            header,
            param,
            value,
        });
    }
    if let Some(h) = &r.remove_param {
        let header = editable_header(
            cx,
            &h.header,
            &p("remove_param.header"),
            "remove_param",
            false,
        );
        let param = param_name(cx, &h.name, &p("remove_param.name"));
        return header.map(|header| Action::RemoveParam { header, param });
    }
    if let Some(h) = &r.rewrite_param {
        let header = editable_header(
            cx,
            &h.header,
            &p("rewrite_param.header"),
            "rewrite_param",
            false,
        );
        let param = param_name(cx, &h.name, &p("rewrite_param.name"));
        let re = regex(cx, &h.regex, &p("rewrite_param.regex"));
        let replace = replacement(cx, re.as_ref(), &h.replace, &p("rewrite_param.replace"));
        return match (header, re) {
            (Some(header), Some(regex)) => Some(Action::RewriteParam {
                header,
                param,
                regex,
                replace,
            }),
            _ => None,
        };
    }
    if let Some(list) = &r.keep_headers {
        let mut keep = Vec::new();
        for (i, h) in list.value.iter().enumerate() {
            if let Some(spec) = header(cx, h, &format!("{path}.keep_headers[{i}]")) {
                keep.push(spec);
            }
        }
        return Some(Action::KeepHeaders { keep });
    }
    if let Some(v) = &r.set_user_agent {
        let value = value_text(cx, v, &p("set_user_agent"));
        if value.trim().is_empty() {
            cx.err(v.referenced, p("set_user_agent"), "must not be empty");
        }
        return Some(Action::SetUserAgent { value });
    }
    if let Some(n) = &r.number {
        return number(cx, n, &p("number")).map(Action::Number);
    }
    if let Some(list) = &r.map_status {
        let mut out: Vec<StatusMap> = Vec::new();
        if list.value.is_empty() {
            cx.err(list.referenced, p("map_status"), "at least one entry");
        }
        for (i, m) in list.value.iter().enumerate() {
            let mp = format!("{path}.map_status[{i}]");
            let from = status_code(cx, &m.value.from, &format!("{mp}.from"));
            let to = match &m.value.to {
                Some(t) => status_code(cx, t, &format!("{mp}.to")),
                None => from,
            };
            let reason = m
                .value
                .reason
                .as_ref()
                .map(|r| value_text(cx, r, &format!("{mp}.reason")));
            if let (Some(f), Some(t)) = (from, to) {
                if group(f) != group(t) {
                    let at = m.value.to.as_ref().map_or(m.referenced, |v| v.referenced);
                    cx.err(
                        at,
                        format!("{mp}.to"),
                        format!(
                            "{f} -> {t} changes the kind of response: provisional maps to provisional (101..=199), failure to failure (300..=699)"
                        ),
                    );
                    continue;
                }
                if out.iter().any(|o| o.from == f) {
                    cx.err(
                        m.value.from.referenced,
                        format!("{mp}.from"),
                        format!("{f} is mapped twice"),
                    );
                    continue;
                }
                out.push(StatusMap {
                    from: f,
                    to: t,
                    reason,
                });
            }
        }
        return Some(Action::MapStatus(out));
    }
    None
}

fn rule_match(
    cx: &mut Cx,
    m: &raw::RawMatch,
    path: &str,
    trunks: &HashMap<&str, TrunkId>,
) -> RuleMatch {
    let p = |k: &str| format!("{path}.{k}");
    let direction = m.direction.as_ref().and_then(|d| match d.value.as_str() {
        "in" => Some(RuleDirection::In),
        "out" => Some(RuleDirection::Out),
        other => {
            cx.err(
                d.referenced,
                p("direction"),
                format!("`{other}` is not a direction; use in or out"),
            );
            None
        }
    });
    let mut methods = Vec::new();
    for (i, v) in m.methods.iter().flatten().enumerate() {
        match Method::from_bytes(v.value.as_bytes()) {
            Some(Method::Extension(_)) if v.value.bytes().any(|b| b.is_ascii_lowercase()) => {
                cx.err(
                    v.referenced,
                    format!("{path}.methods[{i}]"),
                    format!(
                        "`{}`: methods are case-sensitive and upper case (INVITE, BYE...)",
                        v.value
                    ),
                );
            }
            Some(method) => methods.push(method),
            None => cx.err(
                v.referenced,
                format!("{path}.methods[{i}]"),
                format!("`{}` is not a method name", v.value),
            ),
        }
    }
    let mut status = Vec::new();
    for (i, v) in m.status.iter().flatten().enumerate() {
        let sp = format!("{path}.status[{i}]");
        match &v.value {
            raw::RawStatus::Code(c) if (100..=699).contains(c) => {
                status.push(StatusMatch::Code(u16::try_from(*c).unwrap_or(0)));
            }
            raw::RawStatus::Text(t)
                if t.len() == 3
                    && t[1..].eq_ignore_ascii_case("xx")
                    && matches!(t.as_bytes()[0], b'1'..=b'6') =>
            {
                status.push(StatusMatch::Class(t.as_bytes()[0] - b'0'));
            }
            raw::RawStatus::Text(t) if t.parse::<u16>().is_ok_and(|c| (100..=699).contains(&c)) => {
                status.push(StatusMatch::Code(t.parse().unwrap_or(0)));
            }
            other => {
                let shown = match other {
                    raw::RawStatus::Code(c) => c.to_string(),
                    raw::RawStatus::Text(t) => format!("`{t}`"),
                };
                cx.err(
                    v.referenced,
                    sp,
                    format!("{shown} is not a status: use 100..=699 or a class like \"4xx\""),
                );
            }
        }
    }
    let header_present = m
        .header_present
        .as_ref()
        .and_then(|h| header(cx, h, &p("header_present")));
    let header_absent = m
        .header_absent
        .as_ref()
        .and_then(|h| header(cx, h, &p("header_absent")));
    let header_regex = m.header_regex.as_ref().and_then(|hr| {
        let h = header(cx, &hr.name, &p("header_regex.name"));
        let r = regex(cx, &hr.regex, &p("header_regex.regex"));
        Some(HeaderRegex {
            header: h?,
            regex: r?,
        })
    });
    let number_regex = m
        .number_regex
        .as_ref()
        .and_then(|r| regex(cx, r, &p("number_regex")));
    let ruri_regex = m
        .ruri_regex
        .as_ref()
        .and_then(|r| regex(cx, r, &p("ruri_regex")));
    let source_trunk = m.source_trunk.as_ref().and_then(|t| {
        let id = trunks.get(t.value.as_str()).copied();
        if id.is_none() {
            cx.err(
                t.referenced,
                p("source_trunk"),
                format!("no trunk named `{}`", t.value),
            );
        }
        id
    });
    RuleMatch {
        direction,
        methods,
        status,
        header_present,
        header_absent,
        header_regex,
        number_regex,
        ruri_regex,
        source_trunk,
    }
}

/// Validates `normalization:`; trunk names resolve through `trunks`.
pub(crate) fn normalization(
    problems: &mut Vec<Problem>,
    raw: Option<&raw::RawNormalization>,
    trunks: &HashMap<&str, TrunkId>,
) -> Normalization {
    let mut cx = Cx { problems };
    let Some(raw) = raw else {
        return Normalization::default();
    };
    let privacy = Privacy {
        honour_privacy_id: raw
            .privacy
            .as_ref()
            .and_then(|p| p.honour_privacy_id.as_ref())
            .is_none_or(|v| v.value),
    };
    let mut profiles = Vec::new();
    let mut seen: HashMap<&str, usize> = HashMap::new();
    if let Some(list) = &raw.profiles {
        if list.value.len() > MAX_PROFILES {
            cx.err(
                list.referenced,
                "normalization.profiles",
                format!(
                    "{} profiles; at most {MAX_PROFILES} are allowed",
                    list.value.len()
                ),
            );
        }
        for (i, prof) in list.value.iter().enumerate() {
            let pp = format!("normalization.profiles[{i}]");
            let prof = &prof.value;
            check_name(&mut cx, &prof.name, &format!("{pp}.name"));
            if let Some(first) = seen.insert(prof.name.value.as_str(), i) {
                cx.err(
                    prof.name.referenced,
                    format!("{pp}.name"),
                    format!(
                        "duplicate profile name `{}` (also normalization.profiles[{first}])",
                        prof.name.value
                    ),
                );
            }
            let n = prof.rules.value.len();
            if n == 0 || n > MAX_RULES {
                cx.err(
                    prof.rules.referenced,
                    format!("{pp}.rules"),
                    format!("a profile has 1..={MAX_RULES} rules (got {n})"),
                );
            }
            let mut rules = Vec::new();
            let mut rule_names: HashMap<&str, usize> = HashMap::new();
            for (j, rule) in prof.rules.value.iter().enumerate() {
                let rp = format!("{pp}.rules[{j}]");
                let rule = &rule.value;
                check_name(&mut cx, &rule.name, &format!("{rp}.name"));
                if let Some(first) = rule_names.insert(rule.name.value.as_str(), j) {
                    cx.err(
                        rule.name.referenced,
                        format!("{rp}.name"),
                        format!(
                            "duplicate rule name `{}` in profile `{}` (also rules[{first}])",
                            rule.name.value, prof.name.value
                        ),
                    );
                }
                let when = rule
                    .when
                    .as_ref()
                    .map(|m| rule_match(&mut cx, m, &format!("{rp}.match"), trunks))
                    .unwrap_or_default();
                let na = rule.actions.value.len();
                if na == 0 || na > MAX_ACTIONS {
                    cx.err(
                        rule.actions.referenced,
                        format!("{rp}.actions"),
                        format!("a rule has 1..={MAX_ACTIONS} actions (got {na})"),
                    );
                }
                let mut actions = Vec::new();
                for (k, a) in rule.actions.value.iter().enumerate() {
                    if let Some(a) = action(&mut cx, a, &format!("{rp}.actions[{k}]"), trunks) {
                        actions.push(a);
                    }
                }
                rules.push(Rule {
                    name: rule.name.value.clone(),
                    when,
                    actions,
                });
            }
            profiles.push(Profile {
                id: ProfileId(u16::try_from(i).unwrap_or(u16::MAX)),
                name: prof.name.value.clone(),
                rules,
            });
        }
    }
    Normalization { profiles, privacy }
}

/// Resolves a trunk's `normalization:` profile references.
pub(crate) fn trunk_normalization(
    problems: &mut Vec<Problem>,
    raw: Option<&raw::RawTrunkNormalization>,
    path: &str,
    profiles: &[Profile],
) -> TrunkNormalization {
    let mut cx = Cx { problems };
    let Some(raw) = raw else {
        return TrunkNormalization::default();
    };
    let mut resolve = |list: Option<&Vec<S<String>>>, key: &str| -> Vec<ProfileId> {
        let mut out = Vec::new();
        for (i, v) in list.into_iter().flatten().enumerate() {
            let p = format!("{path}.normalization.{key}[{i}]");
            match profiles.iter().find(|pr| pr.name == v.value) {
                Some(pr) if out.contains(&pr.id) => {
                    cx.err(
                        v.referenced,
                        p,
                        format!("profile `{}` is listed twice", v.value),
                    );
                }
                Some(pr) => out.push(pr.id),
                None => {
                    let names: Vec<&str> = profiles.iter().map(|p| p.name.as_str()).collect();
                    let known = if names.is_empty() {
                        "no profiles are defined under normalization.profiles".to_owned()
                    } else {
                        format!("profiles: {}", names.join(", "))
                    };
                    cx.err(
                        v.referenced,
                        p,
                        format!("unknown profile `{}` ({known})", v.value),
                    );
                }
            }
        }
        out
    };
    TrunkNormalization {
        inbound: resolve(raw.inbound.as_ref(), "inbound"),
        outbound: resolve(raw.outbound.as_ref(), "outbound"),
    }
}
