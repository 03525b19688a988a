//! `palisade normalize --from-trunk NAME --trunk NAME --direction out`: a
//! message received from one trunk, run through the real call engine, and
//! what Palisade sends to the other trunk.
//!
//! Nothing is implemented twice: a fresh [`Engine`] with the configuration,
//! the same normalization stages the binary installs (wrapped to record the
//! rules that fired), and, when the caller gives one, the same media hook.
//! The message is delivered as if it came from the source trunk's first
//! address; whatever the engine then transmits toward the target trunk is
//! the answer: rebuilt Via, Contact, Call-ID, tags and From, topology
//! hiding (`pass_headers`), the target's outbound profiles and privacy.
//! Carriers that want registration are treated as registered: the engine's
//! first REGISTER to each is answered 200 before the message goes in (and
//! the report says so).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use bytes::Bytes;
use palisade_b2bua::{Engine, Event, Flow, MediaHook, Stage, StageContext};
use palisade_config::normalization::RuleDirection;
use palisade_config::{Config, Trunk};
use palisade_sip::{Editor, HeaderName, Message, MessageWriter, Method, ParseLimits, Transport};

use crate::dryrun::{DryRunError, prepare_input, render_fired, unified_diff};
use crate::program::{Fired, Program};
use crate::stage::stages_for;

/// Header lines the engine accepts (its parse limit).
const MAX_HEADERS: usize = 256;
/// The engine's seed: fixed, so two runs on the same input print the same
/// identifiers (the identifiers are still Palisade's own, never the input's).
const SEED: [u8; 32] = [0x5a; 32];

/// A rule that fired, and where.
#[derive(Debug, Clone)]
pub struct FiredOn {
    /// The trunk whose profile it is.
    pub trunk: String,
    /// `In`: on the message received from it; `Out`: on a message sent to it.
    pub direction: RuleDirection,
    /// The rule.
    pub fired: Fired,
}

/// What one message did in the engine.
#[derive(Debug, Clone)]
pub struct EngineRun {
    /// The trunk the message came from.
    pub from_trunk: String,
    /// The trunk whose view is asked for.
    pub trunk: String,
    /// Where the message was delivered from (the source trunk's address).
    pub source: SocketAddr,
    /// The message as read (CRLF line ends).
    pub input: Bytes,
    /// The first request Palisade sent to the target trunk, if any.
    pub output: Option<Bytes>,
    /// Where it went (the member or target address).
    pub sent_to: Option<SocketAddr>,
    /// The trunk the engine sent it to when that is another trunk (the
    /// routes pick the trunk, not the command line).
    pub routed_elsewhere: Option<String>,
    /// What Palisade answered the source (100 Trying, or a refusal).
    pub answers: Vec<Bytes>,
    /// The refusal, when the engine refused the message: status and reason.
    pub rejected: Option<(u16, &'static str)>,
    /// The rules that fired, in order: the source trunk's inbound profiles,
    /// then the target trunk's outbound ones.
    pub fired: Vec<FiredOn>,
    /// What the run assumed or adjusted (input fixes, simulated registrations).
    pub notes: Vec<String>,
}

/// A normalization stage that also records what fired.
#[derive(Debug)]
struct Recording {
    inner: crate::stage::NormalizeStage,
    trunk: String,
    direction: RuleDirection,
    log: Arc<Mutex<Vec<FiredOn>>>,
}

impl Stage for Recording {
    fn name(&self) -> &'static str {
        "normalize"
    }

    fn apply(&self, ctx: &StageContext<'_>, edit: &mut Editor<'_>) {
        let fired = self.inner.run(ctx, edit, true);
        if let Ok(mut log) = self.log.lock() {
            log.extend(fired.into_iter().map(|f| FiredOn {
                trunk: self.trunk.clone(),
                direction: self.direction,
                fired: f,
            }));
        }
    }
}

/// Where the source trunk's messages come from: its first IP member, else
/// the first address of its first `source_addresses` network.
fn source_of(t: &Trunk) -> Option<(SocketAddr, Transport)> {
    if let Some(m) = t.members.first() {
        return Some((m.socket_addr(), m.transport));
    }
    let net = t.source_addresses.first()?;
    let ip = net.hosts().next().unwrap_or(net.addr());
    Some((SocketAddr::new(ip, 5060), Transport::Udp))
}

fn parse(b: &Bytes) -> Option<Message> {
    Message::parse(
        b.clone(),
        &ParseLimits {
            max_message_bytes: 1 << 20,
            max_headers: MAX_HEADERS,
        },
    )
    .ok()
}

/// Runs `raw`, as received from trunk `from_trunk`, through an engine for
/// `cfg` and reports what trunk `trunk` gets. `media` is the media hook to
/// use (the binary passes its SDP anchoring with a relay that discards its
/// commands); `None` keeps the engine's default (only `o=` rewritten).
pub fn through_engine(
    cfg: Arc<Config>,
    now: Instant,
    from_trunk: &str,
    trunk: &str,
    raw: &[u8],
    media: Option<Box<dyn MediaHook>>,
) -> Result<EngineRun, DryRunError> {
    let unknown = |name: &str| DryRunError::UnknownTrunk {
        name: name.to_owned(),
        known: cfg
            .trunks()
            .iter()
            .map(|t| t.name.as_str())
            .collect::<Vec<_>>()
            .join(", "),
    };
    let from = cfg
        .trunk_by_name(from_trunk)
        .ok_or_else(|| unknown(from_trunk))?;
    let to = cfg.trunk_by_name(trunk).ok_or_else(|| unknown(trunk))?;
    let (source, transport) = source_of(from).ok_or_else(|| DryRunError::NoSourceAddress {
        trunk: from.name.clone(),
    })?;
    let (input, mut notes) = prepare_input(raw);
    let limits = ParseLimits {
        max_message_bytes: cfg
            .sip()
            .max_tcp_message_bytes
            .max(cfg.sip().max_udp_message_bytes),
        max_headers: MAX_HEADERS,
    };
    let msg = Message::parse(input.clone(), &limits).map_err(|error| {
        let (line, column) = crate::dryrun::line_col(&input, error.offset);
        DryRunError::Parse {
            error,
            line,
            column,
        }
    })?;
    if msg.method().is_none() {
        return Err(DryRunError::NotARequest);
    }

    let mut engine = Engine::new(Arc::clone(&cfg), SEED);
    if let Some(m) = media {
        engine.set_media(m);
    }
    let program = Program::new(Arc::clone(&cfg));
    let log = Arc::new(Mutex::new(Vec::new()));
    for t in cfg.trunks() {
        let (inbound, outbound) = stages_for(&program, t.id);
        let wrap = |s: crate::stage::NormalizeStage, d| -> Vec<Box<dyn Stage>> {
            vec![Box::new(Recording {
                inner: s,
                trunk: t.name.clone(),
                direction: d,
                log: Arc::clone(&log),
            })]
        };
        if let Some(s) = inbound {
            engine.set_inbound_stages(t.id, wrap(s, RuleDirection::In));
        }
        if let Some(s) = outbound {
            engine.set_stages(t.id, wrap(s, RuleDirection::Out));
        }
    }

    // DNS members are not resolved in a dry run: such trunks get their IP
    // members as targets (the resolver would add the names' addresses).
    for t in cfg.trunks().iter().filter(|t| t.has_dns_members()) {
        let ip: Vec<palisade_b2bua::Target> = t
            .destinations
            .iter()
            .enumerate()
            .filter_map(|(i, d)| match d {
                palisade_config::Destination::Ip(m) => {
                    Some(palisade_b2bua::Target::from_member(m, i))
                }
                palisade_config::Destination::Dns(_) => None,
            })
            .collect();
        if t.id == to.id {
            notes.push(format!(
                "trunk {} has DNS members: not resolved in a dry run, its IP members only ({})",
                t.name,
                if ip.is_empty() {
                    "none: calls get 503"
                } else {
                    "in order"
                }
            ));
        }
        engine.set_trunk_targets(now, &t.name, ip);
    }
    // Registrations: every carrier that wants one accepts the first REGISTER.
    engine.sync_edge(now);
    engine.handle_timeout(now);
    let mut pending: Vec<(Flow, Message)> = Vec::new();
    while let Some(t) = engine.poll_transmit() {
        if let Some(m) = parse(&t.data) {
            pending.push((t.flow, m));
        }
    }
    for (flow, reg) in pending {
        if reg.method() != Some(&Method::Register) {
            continue;
        }
        let mut w = MessageWriter::response_to(&reg, 200, "OK", None, Some("dryrun"));
        if let Some(e) = reg.expires() {
            w.header_fmt(HeaderName::Expires, format_args!("{e}"));
        }
        let name = cfg
            .trunks()
            .iter()
            .find(|t| t.members.iter().any(|m| m.socket_addr() == flow.remote))
            .map_or_else(|| flow.remote.to_string(), |t| t.name.clone());
        notes.push(format!(
            "trunk {name} registers: its REGISTER was answered 200 (simulated) so it is up"
        ));
        engine.handle_message(
            now,
            flow.zone,
            flow.transport,
            flow.remote,
            w.finish_empty(),
        );
    }
    while engine.poll_transmit().is_some() {}
    while engine.poll_event().is_some() {}
    if let Ok(mut l) = log.lock() {
        l.clear();
    }

    engine.handle_message(now, from.zone, transport, source, input.clone());
    let targets = engine.target_status();
    let member_of = |addr: SocketAddr| -> Option<&Trunk> {
        cfg.trunks().iter().find(|t| {
            t.members.iter().any(|m| m.socket_addr() == addr)
                || targets
                    .iter()
                    .any(|s| s.trunk == t.name && s.target.addr == addr)
        })
    };
    let mut run = EngineRun {
        from_trunk: from.name.clone(),
        trunk: to.name.clone(),
        source,
        input,
        output: None,
        sent_to: None,
        routed_elsewhere: None,
        answers: Vec::new(),
        rejected: None,
        fired: Vec::new(),
        notes,
    };
    let mut sent = Vec::new();
    while let Some(t) = engine.poll_transmit() {
        sent.push(t);
    }
    for t in sent {
        if t.flow.remote == source && t.flow.zone == from.zone {
            run.answers.push(t.data);
            continue;
        }
        let Some(m) = parse(&t.data) else { continue };
        if m.method().is_none() || run.output.is_some() || run.routed_elsewhere.is_some() {
            continue;
        }
        match member_of(t.flow.remote) {
            Some(tr) if tr.id == to.id => {
                run.output = Some(t.data);
                run.sent_to = Some(t.flow.remote);
            }
            Some(tr) => run.routed_elsewhere = Some(tr.name.clone()),
            // A registered user's flow, or a DNS target.
            None if t.flow.zone == to.zone => {
                run.output = Some(t.data);
                run.sent_to = Some(t.flow.remote);
            }
            None => run.routed_elsewhere = Some(format!("{} (not a trunk member)", t.flow.remote)),
        }
    }
    while let Some(e) = engine.poll_event() {
        if let Event::Rejected { status, reason, .. } = e {
            run.rejected = Some((status, reason));
        }
    }
    if let Ok(l) = log.lock() {
        run.fired = l.clone();
    }
    Ok(run)
}

fn dir_name(d: RuleDirection) -> &'static str {
    match d {
        RuleDirection::In => "in",
        RuleDirection::Out => "out",
    }
}

impl EngineRun {
    /// Whether the target trunk got the message.
    pub fn delivered(&self) -> bool {
        self.output.is_some()
    }

    /// The fired rules as `TRUNK DIRECTION PROFILE/RULE` blocks.
    pub fn fired_text(&self) -> String {
        let mut out = String::new();
        for f in &self.fired {
            let block = render_fired(std::slice::from_ref(&f.fired));
            out.push_str(&format!("[{} {}] {block}", f.trunk, dir_name(f.direction)));
        }
        out
    }

    /// A unified diff of the message as received and as sent to the target.
    pub fn diff(&self) -> String {
        match &self.output {
            Some(o) => unified_diff(
                &String::from_utf8_lossy(&self.input),
                &String::from_utf8_lossy(o),
            ),
            None => String::new(),
        }
    }

    /// The human-readable report: the message the target trunk gets, the
    /// rules that fired, what the engine did, and the diff.
    pub fn text_report(&self) -> String {
        let mut out = String::new();
        match &self.output {
            Some(o) => {
                out.push_str(&String::from_utf8_lossy(o));
                if !out.ends_with('\n') {
                    out.push('\n');
                }
            }
            None => out.push_str(&format!(
                "(nothing was sent to trunk {}{})\n",
                self.trunk,
                match (&self.routed_elsewhere, self.rejected) {
                    (Some(t), _) => format!(": the routes send this message to {t}"),
                    (None, Some((s, r))) => format!(": Palisade answered {s} ({r})"),
                    (None, None) => String::new(),
                }
            )),
        }
        out.push_str(&format!(
            "===== rules fired (received from trunk {} at {}, sent to trunk {}{}) =====\n",
            self.from_trunk,
            self.source,
            self.trunk,
            self.sent_to.map(|a| format!(" at {a}")).unwrap_or_default()
        ));
        for n in &self.notes {
            out.push_str(&format!("note: {n}\n"));
        }
        if self.fired.is_empty() {
            out.push_str("(no rule fired)\n");
        } else {
            out.push_str(&self.fired_text());
        }
        out.push_str(&format!(
            "===== answered to trunk {} =====\n",
            self.from_trunk
        ));
        if self.answers.is_empty() {
            out.push_str("(nothing)\n");
        }
        for a in &self.answers {
            let text = String::from_utf8_lossy(a);
            out.push_str(text.lines().next().unwrap_or_default());
            out.push('\n');
        }
        out.push_str("===== diff (as received -> as sent) =====\n");
        let d = self.diff();
        if d.is_empty() {
            out.push_str("(nothing sent)\n");
        } else {
            out.push_str(&d);
        }
        out
    }

    /// The machine-readable report.
    pub fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "from_trunk": self.from_trunk,
            "trunk": self.trunk,
            "source": self.source.to_string(),
            "delivered": self.delivered(),
            "sent_to": self.sent_to.map(|a| a.to_string()),
            "routed_elsewhere": self.routed_elsewhere,
            "rejected": self.rejected.map(|(s, r)| serde_json::json!({"status": s, "reason": r})),
            "answers": self.answers.iter().map(|a| String::from_utf8_lossy(a).into_owned()).collect::<Vec<_>>(),
            "notes": self.notes,
            "fired": self.fired.iter().map(|f| serde_json::json!({
                "trunk": f.trunk,
                "direction": dir_name(f.direction),
                "profile": f.fired.profile,
                "rule": f.fired.rule,
                "changes": f.fired.changes,
                "skipped": f.fired.skipped,
            })).collect::<Vec<_>>(),
            "message": self.output.as_ref().map(|o| String::from_utf8_lossy(o).into_owned()),
            "diff": self.diff(),
        })
    }
}
