//! Running the rule program on one message: matching, actions, privacy, and
//! the safety net that keeps every result parseable.

use std::borrow::Cow;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use palisade_config::normalization::{
    Action, HeaderSpec, NumberAction, NumberTarget, Profile, Rule, RuleDirection, RuleMatch,
    is_structural,
};
use palisade_config::{Config, TrunkId};
use palisade_sip::{Editor, HeaderName, Message, Method, ParseLimits, reason_phrase};

use crate::number::{rewrite_name_addr, rewrite_number, rewrite_uri, uri_number};
use crate::work::{Work, split_top};

/// Name under which the privacy policy reports, in place of a profile.
pub const PRIVACY_PROFILE: &str = "privacy";
/// Name under which the privacy policy reports, in place of a rule.
pub const PRIVACY_RULE: &str = "honour-privacy-id";
/// The From written toward untrusted trunks for `Privacy: id` (RFC 3323 section 4.1.1.3).
pub const ANONYMOUS_FROM: &str = "\"Anonymous\" <sip:anonymous@anonymous.invalid>";

/// What the stage knows about the message.
#[derive(Debug, Clone, Copy)]
pub struct RunContext<'a> {
    /// The trunk whose profiles run.
    pub trunk: TrunkId,
    /// Received from it, or sent to it.
    pub direction: RuleDirection,
    /// The other leg's trunk (outbound messages of a call).
    pub other_trunk: Option<TrunkId>,
    /// The message received on the other leg, if this one is made from it.
    pub source: Option<&'a Message>,
}

/// A rule that fired, and what it changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fired {
    /// The profile (or [`PRIVACY_PROFILE`]).
    pub profile: String,
    /// The rule (or [`PRIVACY_RULE`]).
    pub rule: String,
    /// One line per change, in order; empty when the rule matched but had
    /// nothing to change.
    pub changes: Vec<String>,
    /// The rule's changes were undone: they would have made the message
    /// unparseable or changed a dialog identifier. The reason is in `changes`.
    pub skipped: bool,
}

/// A rule's firing count, for metrics (`palisade_normalize_rule_fired_total`,
/// labels `profile` and `rule`: both come from the configuration, so the
/// label set is bounded).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleCount {
    /// Profile name.
    pub profile: String,
    /// Rule name.
    pub rule: String,
    /// Times it matched.
    pub fired: u64,
    /// Times its changes were undone (see [`Fired::skipped`]).
    pub skipped: u64,
}

#[derive(Debug, Default)]
struct Counter {
    fired: AtomicU64,
    skipped: AtomicU64,
}

/// The compiled normalization of one configuration: profiles, privacy
/// policy and counters. Shared (`Arc`) by every stage built from it.
#[derive(Debug)]
pub struct Program {
    cfg: Arc<Config>,
    /// `[profile][rule]`.
    counters: Vec<Vec<Counter>>,
    privacy: Counter,
    limits: ParseLimits,
}

/// The result of a run.
#[derive(Debug)]
pub(crate) struct Outcome<'m> {
    pub work: Work<'m>,
    pub fired: Vec<Fired>,
}

struct Rec {
    on: bool,
    changes: Vec<String>,
}

impl Rec {
    fn note(&mut self, f: impl FnOnce() -> String) {
        if self.on {
            self.changes.push(f());
        }
    }
}

fn lossy(b: &[u8]) -> Cow<'_, str> {
    String::from_utf8_lossy(b)
}

impl Program {
    /// Compiles the normalization of `cfg` (validated at load: nothing here
    /// can fail, and no regex is compiled at run time).
    pub fn new(cfg: Arc<Config>) -> Arc<Program> {
        let counters = cfg
            .normalization()
            .profiles
            .iter()
            .map(|p| p.rules.iter().map(|_| Counter::default()).collect())
            .collect();
        let limits = ParseLimits {
            max_message_bytes: usize::MAX,
            max_headers: usize::MAX,
        };
        Arc::new(Program {
            cfg,
            counters,
            privacy: Counter::default(),
            limits,
        })
    }

    /// The configuration this program was built from.
    pub fn config(&self) -> &Arc<Config> {
        &self.cfg
    }

    /// Whether messages of `trunk` going `direction` pass through
    /// normalization: the trunk has profiles for that direction, or (outbound)
    /// the privacy policy applies to it. Trunks without either pay nothing.
    pub fn runs(&self, trunk: TrunkId, direction: RuleDirection) -> bool {
        let Some(t) = self.cfg.trunk(trunk) else {
            return false;
        };
        match direction {
            RuleDirection::In => !t.normalization.inbound.is_empty(),
            RuleDirection::Out => {
                !t.normalization.outbound.is_empty()
                    || (!t.trusted && self.cfg.normalization().privacy.honour_privacy_id)
            }
        }
    }

    /// The profiles run on `trunk` going `direction`, in order.
    pub fn profiles(&self, trunk: TrunkId, direction: RuleDirection) -> Vec<&Profile> {
        let Some(t) = self.cfg.trunk(trunk) else {
            return Vec::new();
        };
        let ids = match direction {
            RuleDirection::In => &t.normalization.inbound,
            RuleDirection::Out => &t.normalization.outbound,
        };
        ids.iter()
            .filter_map(|id| self.cfg.normalization().profile(*id))
            .collect()
    }

    /// Per-rule counters, profile by profile, then the privacy policy.
    pub fn counts(&self) -> Vec<RuleCount> {
        let mut out = Vec::new();
        for (p, cs) in self.cfg.normalization().profiles.iter().zip(&self.counters) {
            for (r, c) in p.rules.iter().zip(cs) {
                out.push(RuleCount {
                    profile: p.name.clone(),
                    rule: r.name.clone(),
                    fired: c.fired.load(Ordering::Relaxed),
                    skipped: c.skipped.load(Ordering::Relaxed),
                });
            }
        }
        out.push(RuleCount {
            profile: PRIVACY_PROFILE.to_owned(),
            rule: PRIVACY_RULE.to_owned(),
            fired: self.privacy.fired.load(Ordering::Relaxed),
            skipped: self.privacy.skipped.load(Ordering::Relaxed),
        });
        out
    }

    fn counter(&self, p: &Profile, rule: usize) -> Option<&Counter> {
        self.counters.get(p.id.index())?.get(rule)
    }

    /// Runs the profiles (and the privacy policy) on `msg`. With `record`,
    /// `fired` says what each rule changed; without, only what was undone.
    pub(crate) fn run<'m>(
        &self,
        msg: &'m Message,
        ctx: &RunContext<'_>,
        record: bool,
    ) -> Outcome<'m> {
        let mut fired = Vec::new();
        let mut work = Work::new(msg);
        let profiles = self.profiles(ctx.trunk, ctx.direction);
        let privacy = ctx.direction == RuleDirection::Out
            && self.cfg.normalization().privacy.honour_privacy_id
            && self.cfg.trunk(ctx.trunk).is_some_and(|t| !t.trusted);
        for p in &profiles {
            for (i, rule) in p.rules.iter().enumerate() {
                self.run_rule(&mut work, p, i, rule, ctx, record, false, &mut fired);
            }
        }
        if privacy {
            self.run_privacy(&mut work, ctx, record, false, &mut fired);
        }
        if !work.is_modified() || self.check(&work).is_ok() {
            return Outcome { work, fired };
        }
        // Slow path: some rule broke the message. Run again, checking after
        // each rule and undoing the ones that break it.
        fired.clear();
        let mut work = Work::new(msg);
        for p in &profiles {
            for (i, rule) in p.rules.iter().enumerate() {
                self.run_rule(&mut work, p, i, rule, ctx, record, true, &mut fired);
            }
        }
        if privacy {
            self.run_privacy(&mut work, ctx, record, true, &mut fired);
        }
        Outcome { work, fired }
    }

    #[allow(clippy::too_many_arguments)]
    fn run_rule<'m>(
        &self,
        work: &mut Work<'m>,
        p: &Profile,
        i: usize,
        rule: &Rule,
        ctx: &RunContext<'_>,
        record: bool,
        checked: bool,
        fired: &mut Vec<Fired>,
    ) {
        if !matches(work, &rule.when, ctx) {
            return;
        }
        let counter = self.counter(p, i);
        if let Some(c) = counter {
            c.fired.fetch_add(1, Ordering::Relaxed);
        }
        let before = checked.then(|| work.clone());
        let mut rec = Rec {
            on: record,
            changes: Vec::new(),
        };
        for a in &rule.actions {
            apply(work, a, ctx, &mut rec);
        }
        let mut skipped = false;
        if let Some(before) = before
            && let Err(why) = self.check(work)
        {
            *work = before;
            skipped = true;
            if let Some(c) = counter {
                c.skipped.fetch_add(1, Ordering::Relaxed);
            }
            rec.changes = vec![format!("skipped: {why}")];
        }
        if record || skipped {
            fired.push(Fired {
                profile: p.name.clone(),
                rule: rule.name.clone(),
                changes: rec.changes,
                skipped,
            });
        }
    }

    fn run_privacy(
        &self,
        work: &mut Work<'_>,
        ctx: &RunContext<'_>,
        record: bool,
        checked: bool,
        fired: &mut Vec<Fired>,
    ) {
        if !privacy_requested(work, ctx.source) {
            return;
        }
        self.privacy.fired.fetch_add(1, Ordering::Relaxed);
        let before = checked.then(|| work.clone());
        let mut rec = Rec {
            on: record,
            changes: Vec::new(),
        };
        anonymize(work, &mut rec);
        let mut skipped = false;
        if let Some(before) = before
            && let Err(why) = self.check(work)
        {
            *work = before;
            skipped = true;
            self.privacy.skipped.fetch_add(1, Ordering::Relaxed);
            rec.changes = vec![format!("skipped: {why}")];
        }
        if record || skipped {
            fired.push(Fired {
                profile: PRIVACY_PROFILE.to_owned(),
                rule: PRIVACY_RULE.to_owned(),
                changes: rec.changes,
                skipped,
            });
        }
    }

    /// Serialises `work` and checks the result parses and keeps the
    /// transaction and dialog identifiers of the original.
    pub(crate) fn check(&self, work: &Work<'_>) -> Result<Bytes, String> {
        let mut e = Editor::new(work.msg);
        work.record(&mut e);
        let bytes = e.finish();
        let m = Message::parse(bytes.clone(), &self.limits)
            .map_err(|err| format!("the result would not parse ({err})"))?;
        let o = work.msg;
        let same = m.call_id() == o.call_id()
            && m.cseq() == o.cseq()
            && m.from_tag() == o.from_tag()
            && m.to_tag() == o.to_tag()
            && m.branch() == o.branch()
            && m.method() == o.method();
        if !same {
            return Err(
                "the result would change Call-ID, CSeq, a tag or the Via branch".to_owned(),
            );
        }
        Ok(bytes)
    }
}

/// Whether `Privacy` in the message or its source asks for `id`.
fn privacy_requested(work: &Work<'_>, source: Option<&Message>) -> bool {
    let has_id = |v: &str| {
        v.split([';', ','])
            .any(|t| t.trim().eq_ignore_ascii_case("id"))
    };
    work.lines
        .iter()
        .filter(|l| l.name == HeaderName::Privacy)
        .filter_map(|l| l.text())
        .any(has_id)
        || source.is_some_and(|s| {
            s.headers()
                .filter(|h| h.name == HeaderName::Privacy)
                .filter_map(|h| h.value_str().ok())
                .any(has_id)
        })
}

/// Whether an outbound request carries the identities of an existing
/// dialog or transaction (in-dialog requests take the identities their
/// dialog was set up with; CANCEL and ACK copy the INVITE's).
fn identity_fixed(work: &Work<'_>, ctx: &RunContext<'_>) -> bool {
    ctx.direction == RuleDirection::Out
        && work.is_request()
        && (work.in_dialog() || matches!(work.msg.method(), Some(Method::Cancel | Method::Ack)))
}

fn anonymize(work: &mut Work<'_>, rec: &mut Rec) {
    if work.is_request()
        && !identity_fixed_out(work)
        && let Some(i) = work.lines.iter().position(|l| l.name == HeaderName::From)
        && let Some(old) = work.lines[i].text()
        && let Ok(na) = palisade_sip::NameAddr::parse(old)
    {
        let params = na.params.as_str();
        let new = if params.is_empty() {
            ANONYMOUS_FROM.to_owned()
        } else {
            format!("{ANONYMOUS_FROM};{params}")
        };
        if new != old {
            let old = old.to_owned();
            rec.note(|| format!("From: {old} -> {new}"));
            work.set_value(i, new);
        }
    }
    remove_where(work, rec, |l| {
        matches!(
            l.name,
            HeaderName::PAssertedIdentity | HeaderName::PPreferredIdentity
        )
    });
}

fn identity_fixed_out(work: &Work<'_>) -> bool {
    work.in_dialog() || matches!(work.msg.method(), Some(Method::Cancel | Method::Ack))
}

fn remove_where(work: &mut Work<'_>, rec: &mut Rec, f: impl Fn(&crate::work::Line<'_>) -> bool) {
    let mut i = 0;
    while i < work.lines.len() {
        if f(&work.lines[i]) {
            let l = work.lines.remove(i);
            rec.note(|| format!("- {}: {}", l.raw_name, lossy(&l.value)));
        } else {
            i += 1;
        }
    }
}

/// The dialled number: Request-URI of a request, To URI of a response.
fn dialled(work: &Work<'_>) -> Option<String> {
    if work.is_request() {
        work.request_uri().and_then(uri_number).map(str::to_owned)
    } else {
        let to = work.first(HeaderName::To)?;
        let na = palisade_sip::NameAddr::parse(to).ok()?;
        na.uri.number().map(str::to_owned)
    }
}

fn matches(work: &Work<'_>, m: &RuleMatch, ctx: &RunContext<'_>) -> bool {
    if m.direction.is_some_and(|d| d != ctx.direction) {
        return false;
    }
    if !m.status.is_empty() {
        let Some(status) = work.status() else {
            return false;
        };
        if !m.status.iter().any(|s| s.matches(status)) {
            return false;
        }
        if !m.methods.is_empty() && !m.methods.contains(&work.msg.cseq().method) {
            return false;
        }
    } else if !m.methods.is_empty() {
        match work.msg.method() {
            Some(method) if m.methods.contains(method) => {}
            _ => return false,
        }
    }
    let has = |h: &HeaderSpec| {
        work.lines
            .iter()
            .any(|l| h.matches_line(l.name, l.raw_name.as_bytes()))
    };
    if m.header_present.as_ref().is_some_and(|h| !has(h)) {
        return false;
    }
    if m.header_absent.as_ref().is_some_and(has) {
        return false;
    }
    if let Some(hr) = &m.header_regex {
        let hit = work
            .lines
            .iter()
            .filter(|l| hr.header.matches_line(l.name, l.raw_name.as_bytes()))
            .filter_map(|l| l.text())
            .any(|v| hr.regex.is_match(v));
        if !hit {
            return false;
        }
    }
    if let Some(re) = &m.number_regex {
        match dialled(work) {
            Some(n) if re.is_match(&n) => {}
            _ => return false,
        }
    }
    if let Some(re) = &m.ruri_regex {
        match work.request_uri() {
            Some(u) if work.is_request() && re.is_match(u) => {}
            _ => return false,
        }
    }
    if let Some(t) = m.source_trunk {
        let src = match ctx.direction {
            RuleDirection::In => Some(ctx.trunk),
            RuleDirection::Out => ctx.other_trunk,
        };
        if src != Some(t) {
            return false;
        }
    }
    true
}

fn lines_of<'a>(work: &'a Work<'_>, h: &'a HeaderSpec) -> impl Iterator<Item = usize> + 'a {
    work.lines
        .iter()
        .enumerate()
        .filter(|(_, l)| h.matches_line(l.name, l.raw_name.as_bytes()))
        .map(|(i, _)| i)
}

fn apply(work: &mut Work<'_>, a: &Action, ctx: &RunContext<'_>, rec: &mut Rec) {
    match a {
        Action::AddHeader { header, value } => {
            rec.note(|| format!("+ {header}: {value}"));
            work.push(header.known, &header.name, value.clone());
        }
        Action::SetHeader { header, value } => set_header(work, header, value, rec),
        Action::ReplaceHeader { header, value } => {
            let idx: Vec<usize> = lines_of(work, header).collect();
            for i in idx {
                replace_line(work, i, value.clone(), rec);
            }
        }
        Action::RemoveHeader { header } => {
            remove_where(work, rec, |l| {
                header.matches_line(l.name, l.raw_name.as_bytes())
            });
        }
        Action::RewriteHeader {
            header,
            regex,
            replace,
        } => {
            let idx: Vec<usize> = lines_of(work, header).collect();
            for i in idx {
                let Some(old) = work.lines[i].text() else {
                    continue;
                };
                if !regex.is_match(old) {
                    continue;
                }
                let new = regex.replace_all(old, replace.as_str()).into_owned();
                replace_line(work, i, new, rec);
            }
        }
        Action::SetParam {
            header,
            param,
            value,
        } => edit_params(work, header, rec, |params| {
            let mut out: Vec<String> = Vec::with_capacity(params.len() + 1);
            let mut done = false;
            for p in params {
                if param_name(p).eq_ignore_ascii_case(param) {
                    if !done {
                        out.push(param_text(param, value.as_deref()));
                        done = true;
                    }
                } else {
                    out.push((*p).to_owned());
                }
            }
            if !done {
                out.push(param_text(param, value.as_deref()));
            }
            out
        }),
        Action::RemoveParam { header, param } => edit_params(work, header, rec, |params| {
            params
                .iter()
                .filter(|p| !param_name(p).eq_ignore_ascii_case(param))
                .map(|p| (*p).to_owned())
                .collect()
        }),
        Action::RewriteParam {
            header,
            param,
            regex,
            replace,
        } => edit_params(work, header, rec, |params| {
            params
                .iter()
                .map(|p| {
                    if !param_name(p).eq_ignore_ascii_case(param) {
                        return (*p).to_owned();
                    }
                    let v = p.split_once('=').map_or("", |(_, v)| v.trim());
                    if !regex.is_match(v) {
                        return (*p).to_owned();
                    }
                    let nv = regex.replace_all(v, replace.as_str());
                    if nv.is_empty() {
                        param.clone()
                    } else {
                        format!("{param}={nv}")
                    }
                })
                .collect()
        }),
        Action::KeepHeaders { keep } => {
            remove_where(work, rec, |l| {
                !is_structural(l.name, l.raw_name.as_bytes())
                    && !keep
                        .iter()
                        .any(|h| h.matches_line(l.name, l.raw_name.as_bytes()))
            });
        }
        Action::SetUserAgent { value } => {
            let known = if work.is_request() {
                HeaderName::UserAgent
            } else {
                HeaderName::Server
            };
            let spec = HeaderSpec {
                name: known.as_str().to_owned(),
                known,
            };
            set_header(work, &spec, value, rec);
        }
        Action::Number(n) => number(work, n, ctx, rec),
        Action::MapStatus(maps) => {
            let Some(status) = work.status() else {
                return;
            };
            if let Some(m) = maps.iter().find(|m| m.from == status) {
                let reason = match &m.reason {
                    Some(r) => r.clone(),
                    None if m.to != status => reason_phrase(m.to).to_owned(),
                    None => work.reason().into_owned(),
                };
                let old_reason = work.reason().into_owned();
                if m.to != status || reason != old_reason {
                    rec.note(|| format!("status: {status} {old_reason} -> {} {reason}", m.to));
                    work.status = Some((m.to, reason));
                }
            }
        }
    }
}

fn replace_line(work: &mut Work<'_>, i: usize, new: String, rec: &mut Rec) {
    let l = &work.lines[i];
    if *l.value == *new.as_bytes() {
        return;
    }
    let name = l.raw_name.clone().into_owned();
    let old = lossy(&l.value).into_owned();
    rec.note(|| format!("{name}: {old} -> {new}"));
    work.set_value(i, new);
}

fn set_header(work: &mut Work<'_>, header: &HeaderSpec, value: &str, rec: &mut Rec) {
    let idx: Vec<usize> = lines_of(work, header).collect();
    match idx.split_first() {
        None => {
            rec.note(|| format!("+ {header}: {value}"));
            work.push(header.known, &header.name, value.to_owned());
        }
        Some((&first, rest)) => {
            replace_line(work, first, value.to_owned(), rec);
            for &i in rest.iter().rev() {
                let l = work.lines.remove(i);
                rec.note(|| format!("- {}: {}", l.raw_name, lossy(&l.value)));
            }
        }
    }
}

fn param_name(p: &str) -> &str {
    p.split('=').next().unwrap_or("").trim()
}

fn param_text(name: &str, value: Option<&str>) -> String {
    match value {
        Some(v) => format!("{name}={v}"),
        None => name.to_owned(),
    }
}

/// Edits the header parameters of every value (list elements separately
/// for list headers) of `header` with `f`, which maps the parameters
/// (`name[=value]`, trimmed) to the new ones.
fn edit_params(
    work: &mut Work<'_>,
    header: &HeaderSpec,
    rec: &mut Rec,
    f: impl Fn(&[&str]) -> Vec<String>,
) {
    let list = header.known.is_list();
    let idx: Vec<usize> = lines_of(work, header).collect();
    for i in idx {
        let Some(old) = work.lines[i].text() else {
            continue;
        };
        let elems: Vec<&str> = if list {
            split_top(old, b',')
        } else {
            vec![old]
        };
        let mut out_elems = Vec::with_capacity(elems.len());
        let mut changed = false;
        for e in elems {
            let parts = split_top(e, b';');
            let base = parts[0].trim();
            let params: Vec<&str> = parts[1..]
                .iter()
                .map(|p| p.trim())
                .filter(|p| !p.is_empty())
                .collect();
            let new_params = f(&params);
            if new_params
                .iter()
                .map(String::as_str)
                .eq(params.iter().copied())
            {
                out_elems.push(e.trim().to_owned());
                continue;
            }
            changed = true;
            let mut s = base.to_owned();
            for p in &new_params {
                s.push(';');
                s.push_str(p);
            }
            out_elems.push(s);
        }
        if changed {
            replace_line(work, i, out_elems.join(", "), rec);
        }
    }
}

fn number(work: &mut Work<'_>, n: &NumberAction, ctx: &RunContext<'_>, rec: &mut Rec) {
    let f = |num: &str| n.rewrite.as_ref().and_then(|rw| rewrite_number(rw, num));
    let fixed = identity_fixed(work, ctx);
    for &t in &n.targets {
        match t {
            NumberTarget::Ruri => {
                if !work.is_request()
                    || work.in_dialog()
                    || matches!(work.msg.method(), Some(Method::Cancel | Method::Ack))
                {
                    continue;
                }
                let Some(old) = work.request_uri() else {
                    continue;
                };
                if let Some(new) = rewrite_uri(old, &f, n.user_phone) {
                    let old = old.to_owned();
                    rec.note(|| format!("ruri: {old} -> {new}"));
                    work.ruri = Some(new);
                }
            }
            NumberTarget::From | NumberTarget::To => {
                if fixed {
                    continue;
                }
                let name = if t == NumberTarget::From {
                    HeaderName::From
                } else {
                    HeaderName::To
                };
                let idx: Vec<usize> = work
                    .lines
                    .iter()
                    .enumerate()
                    .filter(|(_, l)| l.name == name)
                    .map(|(i, _)| i)
                    .collect();
                for i in idx {
                    rewrite_value(work, i, t, false, &f, n.user_phone, rec);
                }
            }
            NumberTarget::Pai | NumberTarget::Diversion => {
                let name = if t == NumberTarget::Pai {
                    HeaderName::PAssertedIdentity
                } else {
                    HeaderName::Diversion
                };
                let idx: Vec<usize> = work
                    .lines
                    .iter()
                    .enumerate()
                    .filter(|(_, l)| l.name == name)
                    .map(|(i, _)| i)
                    .collect();
                for i in idx {
                    rewrite_value(work, i, t, true, &f, n.user_phone, rec);
                }
            }
        }
    }
}

fn rewrite_value(
    work: &mut Work<'_>,
    i: usize,
    t: NumberTarget,
    list: bool,
    f: &dyn Fn(&str) -> Option<String>,
    user_phone: Option<bool>,
    rec: &mut Rec,
) {
    let Some(old) = work.lines[i].text() else {
        return;
    };
    let elems = if list {
        split_top(old, b',')
    } else {
        vec![old]
    };
    let mut changed = false;
    let mut out = Vec::with_capacity(elems.len());
    for e in &elems {
        match rewrite_name_addr(e.trim(), f, user_phone) {
            Some(new) => {
                changed = true;
                if rec.on {
                    let ou = palisade_sip::NameAddr::parse(e.trim())
                        .map(|n| n.uri_str.to_owned())
                        .unwrap_or_default();
                    let nu = palisade_sip::NameAddr::parse(&new)
                        .map(|n| n.uri_str.to_owned())
                        .unwrap_or_default();
                    rec.note(|| format!("{}: {ou} -> {nu}", t.as_str()));
                }
                out.push(new);
            }
            None => out.push(e.trim().to_owned()),
        }
    }
    if changed {
        work.set_value(i, out.join(", "));
    }
}
