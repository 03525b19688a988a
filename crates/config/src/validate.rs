//! Raw YAML structs to a validated [`Config`]: every rule, every default.
//!
//! Rules do not stop at the first failure: each problem is recorded with the
//! location of the value it is about and validation goes on with a stand-in
//! (the default), so one run reports everything it can.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::ops::RangeInclusive;
use std::time::Duration;

use ipnet::IpNet;
use palisade_sip::Transport;
use regex::RegexBuilder;
use serde_saphyr::Location;

use crate::error::Problem;
use crate::model::{
    Admin, Config, Destination, Dns, DnsMember, Health, Latching, LogFormat, Logging, Media,
    MediaRange, Member, Node, Probe, Route, RtcpMuxPolicy, Shutdown, Sip, SourceIndex, SrtpPolicy,
    Trunk, TrunkId, TrunkMedia, Zone, ZoneId,
};
use crate::raw::{
    RawConfig, RawDns, RawHealth, RawLatching, RawLogFormat, RawMediaSection, RawMember, RawProbe,
    RawRoute, RawRtcpMux, RawSip, RawSrtp, RawTrunk, RawZone, S,
};

mod edge;

// Documented defaults and bounds. configs/reference.yaml states the same values.
const DEFAULT_NODE_NAME: &str = "palisade";
const DEFAULT_USER_AGENT: &str = "Palisade";
const MAX_ZONES: usize = 16;
const MAX_TRUNKS: usize = 1024;
const MAX_MEMBERS: usize = 16;
const MAX_ROUTES: usize = 10_000;
const MAX_PREFIX_CHARS: usize = 32;
const MAX_REGEX_CHARS: usize = 1024;
/// Compiled-size cap per route regex: 10,000 routes must not exhaust memory.
const REGEX_SIZE_LIMIT_BYTES: usize = 1 << 20;
const DEFAULT_SIP_PORT: u16 = 5060;
const DEFAULT_MEDIA_PORT_MIN: u16 = 20000;
const DEFAULT_MEDIA_PORT_MAX: u16 = 29999;
const DEFAULT_DSCP_SIP: u64 = 24;

/// Headers Palisade always regenerates per leg; listing one in `pass_headers`
/// is an error. `(long form, compact form)`.
const STRUCTURAL_HEADERS: &[(&str, Option<&str>)] = &[
    ("Via", Some("v")),
    ("Route", None),
    ("Record-Route", None),
    ("Contact", Some("m")),
    ("Call-ID", Some("i")),
    ("From", Some("f")),
    ("To", Some("t")),
    ("CSeq", None),
    ("Content-Length", Some("l")),
    ("Max-Forwards", None),
];

/// A numeric setting: key, default, inclusive bounds.
pub(crate) struct Num {
    pub(crate) key: &'static str,
    pub(crate) default: u64,
    pub(crate) range: RangeInclusive<u64>,
}

const T1_MS: Num = Num {
    key: "t1_ms",
    default: 500,
    range: 50..=5000,
};
const T2_MS: Num = Num {
    key: "t2_ms",
    default: 4000,
    range: 50..=60_000,
};
const T4_MS: Num = Num {
    key: "t4_ms",
    default: 5000,
    range: 500..=60_000,
};
const MAX_UDP: Num = Num {
    key: "max_udp_message_bytes",
    default: 16384,
    range: 1024..=65507,
};
const MAX_TCP: Num = Num {
    key: "max_tcp_message_bytes",
    default: 65536,
    range: 1024..=1_048_576,
};
const UDP_MTU: Num = Num {
    key: "udp_mtu_bytes",
    default: 1300,
    range: 576..=65507,
};
const MAX_FORWARDS: Num = Num {
    key: "max_forwards",
    default: 70,
    range: 1..=255,
};
const MEMBER_TIMEOUT_MS: Num = Num {
    key: "member_timeout_ms",
    default: 4000,
    range: 100..=120_000,
};
const NO_ANSWER_S: Num = Num {
    key: "no_answer_timeout_seconds",
    default: 180,
    range: 1..=86_400,
};
const MAX_CALLS: Num = Num {
    key: "max_calls",
    default: 100_000,
    range: 1..=10_000_000,
};
const UDP_RCVBUF: Num = Num {
    key: "udp_receive_buffer_bytes",
    default: 8_388_608,
    range: 4096..=1_073_741_824,
};
const UDP_SNDBUF: Num = Num {
    key: "udp_send_buffer_bytes",
    default: 4_194_304,
    range: 4096..=1_073_741_824,
};
const TCP_RCVBUF: Num = Num {
    key: "tcp_receive_buffer_bytes",
    default: 1_048_576,
    range: 0..=1_073_741_824,
};
const TCP_IDLE_S: Num = Num {
    key: "tcp_idle_timeout_seconds",
    default: 600,
    range: 1..=86_400,
};
const TCP_MAX_CONN: Num = Num {
    key: "tcp_max_connections",
    default: 4096,
    range: 1..=1_000_000,
};
const TCP_CONNECT_MS: Num = Num {
    key: "tcp_connect_timeout_ms",
    default: 2000,
    range: 100..=60_000,
};
const DSCP_SIP: Num = Num {
    key: "dscp_sip",
    default: DEFAULT_DSCP_SIP,
    range: 0..=63,
};
const HEALTH_INTERVAL_S: Num = Num {
    key: "interval_seconds",
    default: 30,
    range: 1..=3600,
};
const HEALTH_TIMEOUT_MS: Num = Num {
    key: "timeout_ms",
    default: 2000,
    range: 100..=60_000,
};
const HEALTH_DOWN_AFTER: Num = Num {
    key: "down_after",
    default: 3,
    range: 1..=100,
};
const HEALTH_UP_AFTER: Num = Num {
    key: "up_after",
    default: 2,
    range: 1..=100,
};
const DNS_TIMEOUT_MS: Num = Num {
    key: "timeout_ms",
    default: 2000,
    range: 100..=30_000,
};
const DNS_MIN_TTL_S: Num = Num {
    key: "min_ttl_seconds",
    default: 5,
    range: 1..=3600,
};
const DNS_MAX_TTL_S: Num = Num {
    key: "max_ttl_seconds",
    default: 3600,
    range: 1..=86_400,
};
const DNS_NEGATIVE_TTL_S: Num = Num {
    key: "negative_ttl_seconds",
    default: 30,
    range: 1..=3600,
};
/// Most name servers in `dns.servers`.
const MAX_DNS_SERVERS: usize = 8;
const DNS_PORT: u16 = 53;
const LOG_BATCH_MS: Num = Num {
    key: "batch_ms",
    default: 100,
    range: 0..=1000,
};
const GRACE_S: Num = Num {
    key: "grace_seconds",
    default: 30,
    range: 0..=3600,
};
const RELAY_THREADS: Num = Num {
    key: "relay_threads",
    default: 0,
    range: 0..=256,
};
const KERNEL_FORWARDING_AFTER_MS: Num = Num {
    key: "kernel_forwarding_after_ms",
    default: 1000,
    range: 0..=600_000,
};
const MEDIA_TIMEOUT_S: Num = Num {
    key: "timeout_seconds",
    default: 60,
    range: 1..=86_400,
};
const HOLD_TIMEOUT_S: Num = Num {
    key: "hold_timeout_seconds",
    default: 3600,
    range: 1..=604_800,
};
const DSCP_RTP: Num = Num {
    key: "dscp_rtp",
    default: 46,
    range: 0..=63,
};
/// Codec names in a trunk's allow-list.
const MAX_CODECS: usize = 32;
const MAX_CODEC_CHARS: usize = 32;

/// Collects problems while validating.
pub(crate) struct Ctx {
    pub(crate) problems: Vec<Problem>,
}

impl Ctx {
    pub(crate) fn err(
        &mut self,
        at: Location,
        path: impl Into<String>,
        message: impl Into<String>,
    ) {
        self.problems.push(Problem::at(at, path, message));
    }

    /// An optional number in `num.range`; the default when absent or invalid.
    pub(crate) fn num(&mut self, value: Option<&S<u64>>, section: &str, num: &Num) -> u64 {
        let Some(v) = value else {
            return num.default;
        };
        if num.range.contains(&v.value) {
            v.value
        } else {
            self.err(
                v.referenced,
                join(section, num.key),
                format!(
                    "{} is out of range: must be {}..={}",
                    v.value,
                    num.range.start(),
                    num.range.end()
                ),
            );
            num.default
        }
    }
}

pub(crate) fn join(section: &str, key: &str) -> String {
    if section.is_empty() {
        key.to_owned()
    } else {
        format!("{section}.{key}")
    }
}

fn clamp_usize(v: u64) -> usize {
    usize::try_from(v).unwrap_or(usize::MAX)
}

pub(crate) fn clamp_u32(v: u64) -> u32 {
    u32::try_from(v).unwrap_or(u32::MAX)
}

fn clamp_u8(v: u64) -> u8 {
    u8::try_from(v).unwrap_or(u8::MAX)
}

fn id16(i: usize) -> u16 {
    u16::try_from(i).unwrap_or(u16::MAX)
}

/// Validates `raw`; on failure returns every problem found, in file order.
pub(crate) fn validate(raw: RawConfig) -> Result<Config, Vec<Problem>> {
    let mut cx = Ctx {
        problems: Vec::new(),
    };

    let node = node(&mut cx, raw.node.unwrap_or_default());
    let sip = sip(&mut cx, &raw.sip.unwrap_or_default());
    let (zones, zone_ok) = zones(&mut cx, &raw.zones);
    let trunks = trunks(&mut cx, &raw.trunks, &zones, &zone_ok, &sip);
    let routes = routes(&mut cx, &raw.routes, &trunks);
    let media = media_section(&mut cx, &raw.media.unwrap_or_default());
    let trunk_ids: HashMap<&str, TrunkId> = {
        let mut m = HashMap::new();
        for (t, _) in &trunks {
            m.entry(t.name.as_str()).or_insert(t.id);
        }
        m
    };
    let normalization = crate::normalization::normalization(
        &mut cx.problems,
        raw.normalization.as_ref(),
        &trunk_ids,
    );
    drop(trunk_ids);
    let mut trunks = trunks;
    for (i, (t, _)) in trunks.iter_mut().enumerate() {
        if let Some(rt) = raw.trunks.value.get(i) {
            t.normalization = crate::normalization::trunk_normalization(
                &mut cx.problems,
                rt.value.normalization.as_ref(),
                &format!("trunks[{i}]"),
                &normalization.profiles,
            );
        }
    }
    let shutdown = {
        let s = raw.shutdown.unwrap_or_default();
        Shutdown {
            grace: Duration::from_secs(cx.num(s.grace_seconds.as_ref(), "shutdown", &GRACE_S)),
        }
    };
    let admin = admin(&mut cx, raw.admin.as_ref());
    let logging = logging(&mut cx, raw.logging.unwrap_or_default());
    let dns = dns(&mut cx, raw.dns.as_ref());
    let plain_trunks: Vec<Trunk> = trunks.iter().map(|(t, _)| t.clone()).collect();
    let guard = crate::guard::guard(
        &mut cx,
        raw.guard.unwrap_or_default(),
        &zones,
        &plain_trunks,
    );
    let fraud = crate::guard::fraud(&mut cx, raw.fraud.unwrap_or_default(), &plain_trunks);
    let alerts = crate::guard::alerts(&mut cx, raw.alerts.unwrap_or_default());
    let registrar = edge::registrar(&mut cx, raw.registrar.as_ref(), &trunks);
    edge::cross(
        &mut cx,
        &raw.trunks.value,
        &raw.routes.value,
        registrar.as_ref(),
        &routes,
    );
    let nat = edge::nat(&mut cx, raw.nat);
    let call_admission = edge::call_admission(&mut cx, raw.call_admission);

    if !cx.problems.is_empty() {
        let mut problems = cx.problems;
        problems.sort_by_key(|p| (p.line, p.column));
        return Err(problems);
    }
    let trunks: Vec<Trunk> = trunks.into_iter().map(|(t, _)| t).collect();
    let sources = source_indexes(&zones, &trunks);
    let mut routes_from = vec![Vec::new(); trunks.len()];
    let mut routes_from_any = Vec::new();
    for (i, r) in routes.iter().enumerate() {
        let i = clamp_u32(i as u64);
        match r.from_trunk {
            Some(t) => {
                if let Some(list) = routes_from.get_mut(t.index()) {
                    list.push(i);
                }
            }
            None => routes_from_any.push(i),
        }
    }
    Ok(Config {
        node,
        sip,
        zones,
        trunks,
        routes,
        media,
        shutdown,
        admin,
        logging,
        dns,
        guard,
        fraud,
        alerts,
        registrar,
        nat,
        call_admission,
        sources,
        routes_from,
        routes_from_any,
        normalization,
    })
}

pub(crate) fn check_name(
    cx: &mut Ctx,
    name: &S<String>,
    path: &str,
    max_chars: usize,
    allowed: fn(char) -> bool,
    allowed_text: &str,
) {
    let n = name.value.chars().count();
    if n == 0 || n > max_chars {
        cx.err(
            name.referenced,
            path,
            format!("must be 1..={max_chars} characters long (got {n})"),
        );
    } else if let Some(bad) = name.value.chars().find(|&c| !allowed(c)) {
        cx.err(
            name.referenced,
            path,
            format!(
                "`{}` contains {bad:?}; allowed are {allowed_text}",
                name.value
            ),
        );
    }
}

pub(crate) fn node_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')
}

fn zone_name_char(c: char) -> bool {
    c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '_' | '-')
}

fn node(cx: &mut Ctx, raw: crate::raw::RawNode) -> Node {
    let name = match raw.name {
        Some(n) => {
            check_name(cx, &n, "node.name", 64, node_name_char, "[A-Za-z0-9._-]");
            n.value
        }
        None => DEFAULT_NODE_NAME.to_owned(),
    };
    let user_agent = match raw.user_agent {
        Some(ua) => {
            let v = &ua.value;
            let n = v.chars().count();
            if n == 0 || n > 128 {
                cx.err(
                    ua.referenced,
                    "node.user_agent",
                    format!("must be 1..=128 characters long (got {n})"),
                );
            } else if !v.bytes().all(|b| b == b' ' || b.is_ascii_graphic()) {
                cx.err(
                    ua.referenced,
                    "node.user_agent",
                    "must be printable ASCII (it is sent verbatim in Server and User-Agent headers)",
                );
            } else if v.starts_with(' ') || v.ends_with(' ') {
                cx.err(
                    ua.referenced,
                    "node.user_agent",
                    "must not start or end with a space",
                );
            }
            ua.value
        }
        None => DEFAULT_USER_AGENT.to_owned(),
    };
    Node { name, user_agent }
}

fn sip(cx: &mut Ctx, raw: &RawSip) -> Sip {
    let s = "sip";
    let t1 = cx.num(raw.t1_ms.as_ref(), s, &T1_MS);
    let mut t2 = cx.num(raw.t2_ms.as_ref(), s, &T2_MS);
    if t2 < t1 {
        match (&raw.t2_ms, &raw.t1_ms) {
            (Some(v), _) => cx.err(
                v.referenced,
                "sip.t2_ms",
                format!("{t2} is below t1_ms ({t1}); T2 must be >= T1"),
            ),
            (None, Some(v)) => cx.err(
                v.referenced,
                "sip.t1_ms",
                format!("{t1} is above the default t2_ms ({t2}); set t2_ms >= t1_ms as well"),
            ),
            (None, None) => {}
        }
        t2 = t1;
    }
    let t4 = cx.num(raw.t4_ms.as_ref(), s, &T4_MS);
    Sip {
        t1: Duration::from_millis(t1),
        t2: Duration::from_millis(t2),
        t4: Duration::from_millis(t4),
        max_udp_message_bytes: clamp_usize(cx.num(raw.max_udp_message_bytes.as_ref(), s, &MAX_UDP)),
        max_tcp_message_bytes: clamp_usize(cx.num(raw.max_tcp_message_bytes.as_ref(), s, &MAX_TCP)),
        udp_mtu_bytes: clamp_usize(cx.num(raw.udp_mtu_bytes.as_ref(), s, &UDP_MTU)),
        max_forwards: clamp_u8(cx.num(raw.max_forwards.as_ref(), s, &MAX_FORWARDS)),
        member_timeout: Duration::from_millis(cx.num(
            raw.member_timeout_ms.as_ref(),
            s,
            &MEMBER_TIMEOUT_MS,
        )),
        no_answer_timeout: Duration::from_secs(cx.num(
            raw.no_answer_timeout_seconds.as_ref(),
            s,
            &NO_ANSWER_S,
        )),
        max_calls: clamp_u32(cx.num(raw.max_calls.as_ref(), s, &MAX_CALLS)),
        udp_receive_buffer_bytes: clamp_usize(cx.num(
            raw.udp_receive_buffer_bytes.as_ref(),
            s,
            &UDP_RCVBUF,
        )),
        udp_send_buffer_bytes: clamp_usize(cx.num(
            raw.udp_send_buffer_bytes.as_ref(),
            s,
            &UDP_SNDBUF,
        )),
        tcp_receive_buffer_bytes: clamp_usize(cx.num(
            raw.tcp_receive_buffer_bytes.as_ref(),
            s,
            &TCP_RCVBUF,
        )),
        tcp_idle_timeout: Duration::from_secs(cx.num(
            raw.tcp_idle_timeout_seconds.as_ref(),
            s,
            &TCP_IDLE_S,
        )),
        tcp_max_connections: clamp_u32(cx.num(raw.tcp_max_connections.as_ref(), s, &TCP_MAX_CONN)),
        tcp_connect_timeout: Duration::from_millis(cx.num(
            raw.tcp_connect_timeout_ms.as_ref(),
            s,
            &TCP_CONNECT_MS,
        )),
    }
}

/// Checks a list's length; `what` names the items.
fn check_count<T>(cx: &mut Ctx, list: &S<Vec<T>>, path: &str, max: usize, what: &str) {
    let n = list.value.len();
    if n == 0 {
        cx.err(
            list.referenced,
            path,
            format!("at least one {what} is required"),
        );
    } else if n > max {
        cx.err(
            list.referenced,
            path,
            format!("{n} {what}s; at most {max} are allowed"),
        );
    }
}

/// Parses an IP address that Palisade binds to or sends to.
fn parse_ip(cx: &mut Ctx, v: &S<String>, path: &str) -> Option<IpAddr> {
    let text = v.value.trim();
    match text.parse::<IpAddr>() {
        Ok(ip) if ip.is_unspecified() => {
            cx.err(
                v.referenced,
                path,
                format!("{ip} is unspecified; give the concrete address"),
            );
            None
        }
        Ok(ip) if ip.is_multicast() || ip == IpAddr::V4(std::net::Ipv4Addr::BROADCAST) => {
            cx.err(
                v.referenced,
                path,
                format!("{ip} is a multicast or broadcast address"),
            );
            None
        }
        Ok(ip) => Some(ip),
        Err(_) => {
            let msg = if text.starts_with('[') {
                format!("`{text}`: write IPv6 addresses without brackets")
            } else if looks_like_dns_name(text) {
                "DNS names are not supported yet; use an IP".to_owned()
            } else {
                format!("`{text}` is not an IP address")
            };
            cx.err(v.referenced, path, msg);
            None
        }
    }
}

fn looks_like_dns_name(s: &str) -> bool {
    !s.is_empty()
        && s.bytes().any(|b| b.is_ascii_alphabetic())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
}

fn parse_transport(cx: &mut Ctx, v: &S<String>, path: &str) -> Option<Transport> {
    match v.value.parse::<Transport>() {
        Ok(Transport::Tls) => {
            cx.err(v.referenced, path, "tls is not supported yet");
            None
        }
        Ok(t) => Some(t),
        Err(_) => {
            cx.err(
                v.referenced,
                path,
                format!("unknown transport `{}`; expected udp or tcp", v.value),
            );
            None
        }
    }
}

fn check_port(cx: &mut Ctx, v: Option<&S<u16>>, path: &str, default: u16) -> u16 {
    match v {
        None => default,
        Some(p) if p.value == 0 => {
            cx.err(p.referenced, path, "port 0 is not allowed");
            default
        }
        Some(p) => p.value,
    }
}

/// Where each zone's values came from, for cross-zone errors.
struct ZoneSpans {
    /// False when the zone's addresses or media are invalid: cross-zone and
    /// member checks against stand-in values would only add noise.
    ok: bool,
    udp_port: Location,
    tcp_port: Location,
    media: Location,
}

/// The zones, and per zone whether its addresses are valid (see [`ZoneSpans::ok`]).
fn zones(cx: &mut Ctx, raw: &S<Vec<S<RawZone>>>) -> (Vec<Zone>, Vec<bool>) {
    check_count(cx, raw, "zones", MAX_ZONES, "zone");
    let mut out: Vec<Zone> = Vec::new();
    let mut spans: Vec<ZoneSpans> = Vec::new();
    let mut seen: HashMap<&str, usize> = HashMap::new();
    for (i, z) in raw.value.iter().enumerate() {
        let p = format!("zones[{i}]");
        let z_loc = z.referenced;
        let z = &z.value;
        check_name(
            cx,
            &z.name,
            &format!("{p}.name"),
            32,
            zone_name_char,
            "[a-z0-9_-]",
        );
        if let Some(first) = seen.insert(z.name.value.as_str(), i) {
            cx.err(
                z.name.referenced,
                format!("{p}.name"),
                format!(
                    "duplicate zone name `{}` (also zones[{first}])",
                    z.name.value
                ),
            );
        }
        let sip_address = parse_ip(cx, &z.sip_address, &format!("{p}.sip_address"));
        let transports = match &z.transports {
            None => vec![Transport::Udp, Transport::Tcp],
            Some(list) => {
                if list.value.is_empty() {
                    cx.err(
                        list.referenced,
                        format!("{p}.transports"),
                        "at least one transport is required",
                    );
                }
                let mut ts = Vec::new();
                for (j, t) in list.value.iter().enumerate() {
                    let tp = format!("{p}.transports[{j}]");
                    if let Some(t_val) = parse_transport(cx, t, &tp) {
                        if ts.contains(&t_val) {
                            cx.err(t.referenced, tp, format!("{t_val} is listed twice"));
                        } else {
                            ts.push(t_val);
                        }
                    }
                }
                ts
            }
        };
        let udp_port = check_port(
            cx,
            z.udp_port.as_ref(),
            &format!("{p}.udp_port"),
            DEFAULT_SIP_PORT,
        );
        let tcp_port = check_port(
            cx,
            z.tcp_port.as_ref(),
            &format!("{p}.tcp_port"),
            DEFAULT_SIP_PORT,
        );
        let (media, media_loc) = media(cx, z, &p, sip_address);
        let dscp_sip = clamp_u8(cx.num(z.dscp_sip.as_ref(), &p, &DSCP_SIP));
        spans.push(ZoneSpans {
            ok: sip_address.is_some() && media.is_some(),
            udp_port: z.udp_port.as_ref().map_or(z_loc, |v| v.referenced),
            tcp_port: z.tcp_port.as_ref().map_or(z_loc, |v| v.referenced),
            media: media_loc.unwrap_or(z_loc),
        });
        out.push(Zone {
            id: ZoneId(id16(i)),
            name: z.name.value.clone(),
            // A stand-in keeps the index stable; the problem is already recorded.
            sip_address: sip_address.unwrap_or(IpAddr::V4(std::net::Ipv4Addr::LOCALHOST)),
            transports,
            udp_port,
            tcp_port,
            media: media.unwrap_or(MediaRange {
                address: IpAddr::V4(std::net::Ipv4Addr::LOCALHOST),
                port_min: DEFAULT_MEDIA_PORT_MIN,
                port_max: DEFAULT_MEDIA_PORT_MAX,
            }),
            dscp_sip,
            cac: edge::cac(cx, z.cac.as_ref(), &p),
        });
    }
    cross_zone(cx, &out, &spans);
    let ok = spans.iter().map(|s| s.ok).collect();
    (out, ok)
}

/// The media section of zone `p`; `None` when invalid. Also returns where to
/// point cross-zone media errors.
fn media(
    cx: &mut Ctx,
    z: &RawZone,
    p: &str,
    sip_address: Option<IpAddr>,
) -> (Option<MediaRange>, Option<Location>) {
    let Some(m) = &z.media else {
        return (
            sip_address.map(|address| MediaRange {
                address,
                port_min: DEFAULT_MEDIA_PORT_MIN,
                port_max: DEFAULT_MEDIA_PORT_MAX,
            }),
            None,
        );
    };
    let m_loc = m.referenced;
    let m = &m.value;
    let address = match &m.address {
        Some(a) => parse_ip(cx, a, &format!("{p}.media.address")),
        None => sip_address,
    };
    let mut ok = address.is_some();
    let port_min = check_port(
        cx,
        m.port_min.as_ref(),
        &format!("{p}.media.port_min"),
        DEFAULT_MEDIA_PORT_MIN,
    );
    let port_max = check_port(
        cx,
        m.port_max.as_ref(),
        &format!("{p}.media.port_max"),
        DEFAULT_MEDIA_PORT_MAX,
    );
    let min_loc = m.port_min.as_ref().map_or(m_loc, |v| v.referenced);
    let max_loc = m.port_max.as_ref().map_or(m_loc, |v| v.referenced);
    if !port_min.is_multiple_of(2) {
        cx.err(
            min_loc,
            format!("{p}.media.port_min"),
            format!("{port_min} is odd; RTP ports start even (RTCP takes the odd one above)"),
        );
        ok = false;
    }
    if port_min >= port_max {
        let (loc, key) = if m.port_max.is_some() {
            (max_loc, "port_max")
        } else {
            (min_loc, "port_min")
        };
        cx.err(
            loc,
            format!("{p}.media.{key}"),
            format!("port_min ({port_min}) must be below port_max ({port_max})"),
        );
        ok = false;
    }
    let range = address.filter(|_| ok).map(|address| MediaRange {
        address,
        port_min,
        port_max,
    });
    (range, Some(m_loc))
}

fn cross_zone(cx: &mut Ctx, zones: &[Zone], spans: &[ZoneSpans]) {
    for (i, z) in zones.iter().enumerate() {
        let Some(zs) = spans.get(i) else { continue };
        if !zs.ok {
            continue;
        }
        for (j, other) in zones.iter().enumerate().take(i) {
            if !spans.get(j).is_some_and(|s| s.ok) {
                continue;
            }
            for t in [Transport::Udp, Transport::Tcp] {
                if let (Some(a), Some(b)) = (z.listen_addr(t), other.listen_addr(t))
                    && a == b
                {
                    let (loc, key) = match t {
                        Transport::Udp => (zs.udp_port, "udp_port"),
                        _ => (zs.tcp_port, "tcp_port"),
                    };
                    cx.err(
                        loc,
                        format!("zones[{i}].{key}"),
                        format!("{a}/{t} is already the listener of zone `{}`", other.name),
                    );
                }
            }
            let (m, o) = (z.media, other.media);
            if m.address == o.address && m.port_min <= o.port_max && o.port_min <= m.port_max {
                cx.err(
                    zs.media,
                    format!("zones[{i}].media"),
                    format!(
                        "ports {}-{} on {} overlap zone `{}` ({}-{})",
                        m.port_min, m.port_max, m.address, other.name, o.port_min, o.port_max
                    ),
                );
            }
        }
        // A SIP UDP listener inside any zone's media range on the same address.
        if let Some(sock) = z.listen_addr(Transport::Udp) {
            for (other, os) in zones.iter().zip(spans) {
                if !os.ok {
                    continue;
                }
                let m = other.media;
                if m.address == sock.ip() && (m.port_min..=m.port_max).contains(&sock.port()) {
                    cx.err(
                        zs.udp_port,
                        format!("zones[{i}].udp_port"),
                        format!(
                            "{sock}/udp is inside the media range {}-{} of zone `{}`",
                            m.port_min, m.port_max, other.name
                        ),
                    );
                }
            }
        }
    }
}

/// A trunk plus where its source entries came from (for overlap errors).
type TrunkWithSources = (Trunk, Vec<SourceEntry>);

#[derive(Debug, Clone)]
struct SourceEntry {
    net: IpNet,
    at: Location,
    path: String,
}

fn trunk_name_char(c: char) -> bool {
    node_name_char(c)
}

fn trunks(
    cx: &mut Ctx,
    raw: &S<Vec<S<RawTrunk>>>,
    zones: &[Zone],
    zone_ok: &[bool],
    sip: &Sip,
) -> Vec<TrunkWithSources> {
    check_count(cx, raw, "trunks", MAX_TRUNKS, "trunk");
    let zone_ids: HashMap<&str, ZoneId> = zones.iter().map(|z| (z.name.as_str(), z.id)).collect();
    let mut seen: HashMap<&str, usize> = HashMap::new();
    let mut out = Vec::new();
    for (i, t) in raw.value.iter().enumerate() {
        let p = format!("trunks[{i}]");
        let t = &t.value;
        check_name(
            cx,
            &t.name,
            &format!("{p}.name"),
            64,
            trunk_name_char,
            "[A-Za-z0-9._-]",
        );
        if let Some(first) = seen.insert(t.name.value.as_str(), i) {
            cx.err(
                t.name.referenced,
                format!("{p}.name"),
                format!(
                    "duplicate trunk name `{}` (also trunks[{first}])",
                    t.name.value
                ),
            );
        }
        let zone = zone_ids.get(t.zone.value.as_str()).copied();
        if zone.is_none() {
            let names: Vec<&str> = zones.iter().map(|z| z.name.as_str()).collect();
            cx.err(
                t.zone.referenced,
                format!("{p}.zone"),
                format!(
                    "no zone named `{}` (zones: {})",
                    t.zone.value,
                    names.join(", ")
                ),
            );
        }
        // Member checks against a zone whose own addresses are invalid would only add noise.
        let zone_ref = zone
            .filter(|id| zone_ok.get(id.index()).copied().unwrap_or(false))
            .and_then(|id| zones.get(id.index()));
        check_count(
            cx,
            &t.members,
            &format!("{p}.members"),
            MAX_MEMBERS,
            "member",
        );
        let mut members = Vec::new();
        let mut destinations: Vec<Destination> = Vec::new();
        let mut sources = Vec::new();
        let mut source_addresses = Vec::new();
        for (j, m) in t.members.value.iter().enumerate() {
            let mp = format!("{p}.members[{j}]");
            let Some(dest) = member(cx, &m.value, m.referenced, &mp, zone_ref) else {
                continue;
            };
            if destinations.contains(&dest) {
                let what = match &dest {
                    Destination::Ip(member) => {
                        format!("{} over {}", member.socket_addr(), member.transport)
                    }
                    Destination::Dns(d) => format!("host {}", d.uri_host()),
                };
                cx.err(m.referenced, mp, format!("{what} is listed twice"));
            }
            if let Destination::Ip(member) = &dest {
                members.push(*member);
                sources.push(SourceEntry {
                    net: IpNet::from(normalise(member.address)),
                    at: m
                        .value
                        .address
                        .as_ref()
                        .map_or(m.referenced, |a| a.referenced),
                    path: format!("{p}.members[{j}].address"),
                });
            }
            destinations.push(dest);
        }
        for (j, s) in t.source_addresses.iter().flatten().enumerate() {
            let sp = format!("{p}.source_addresses[{j}]");
            if let Some(net) = parse_net(cx, s, &sp) {
                source_addresses.push(net);
                sources.push(SourceEntry {
                    net,
                    at: s.referenced,
                    path: sp,
                });
            }
        }
        let member_timeout = match &t.member_timeout_ms {
            Some(_) => {
                Duration::from_millis(cx.num(t.member_timeout_ms.as_ref(), &p, &MEMBER_TIMEOUT_MS))
            }
            None => sip.member_timeout,
        };
        let pass_headers = pass_headers(cx, t, &p);
        let media = trunk_media(cx, t, &p);
        let health = health(cx, t.health.as_ref(), &p);
        let e = edge::trunk(cx, t, &p);
        out.push((
            Trunk {
                id: TrunkId(id16(i)),
                name: t.name.value.clone(),
                zone: zone.unwrap_or(ZoneId(u16::MAX)),
                members,
                destinations,
                health,
                source_addresses,
                member_timeout,
                pass_headers,
                media,
                trusted: t.trusted.as_ref().is_none_or(|v| v.value),
                normalization: crate::normalization::TrunkNormalization::default(),
                auth: e.auth,
                registration: e.registration,
                challenge_inbound: e.challenge_inbound,
                challenge_inbound_users: e.challenge_inbound_users,
                keepalive: e.keepalive,
                cac: e.cac,
            },
            sources,
        ));
    }
    check_source_overlaps(cx, &out, zones);
    out
}

fn member(
    cx: &mut Ctx,
    m: &RawMember,
    at: Location,
    p: &str,
    zone: Option<&Zone>,
) -> Option<Destination> {
    let port_given = m.port.is_some();
    let port = check_port(cx, m.port.as_ref(), &format!("{p}.port"), DEFAULT_SIP_PORT);
    let transport = match &m.transport {
        None => Some(None),
        Some(t) => parse_transport(cx, t, &format!("{p}.transport")).map(Some),
    };
    if let (Some(z), Some(Some(t))) = (zone, transport)
        && !z.has_transport(t)
    {
        let at = m.transport.as_ref().map_or(at, |v| v.referenced);
        cx.err(
            at,
            format!("{p}.transport"),
            format!(
                "{t} is not enabled on zone `{}` (its transports: {})",
                z.name,
                list(&z.transports)
            ),
        );
    }
    let transport = transport?;
    match (&m.address, &m.host) {
        (Some(a), None) => {
            let address = ip_member_address(cx, a, &format!("{p}.address"), zone)?;
            Some(Destination::Ip(Member {
                address,
                port,
                transport: transport.unwrap_or(Transport::Udp),
            }))
        }
        (None, Some(h)) => {
            let host = dns_name(cx, h, &format!("{p}.host"))?;
            Some(Destination::Dns(DnsMember {
                host,
                port: port_given.then_some(port),
                transport,
            }))
        }
        (Some(_), Some(h)) => {
            cx.err(
                h.referenced,
                format!("{p}.host"),
                "give either `address` (an IP) or `host` (a DNS name), not both",
            );
            None
        }
        (None, None) => {
            cx.err(
                at,
                p,
                "`address` (an IP) or `host` (a DNS name) is required",
            );
            None
        }
    }
}

/// A member's `address`: an IP of the zone's family.
fn ip_member_address(
    cx: &mut Ctx,
    a: &S<String>,
    path: &str,
    zone: Option<&Zone>,
) -> Option<IpAddr> {
    let text = a.value.trim();
    if text.parse::<IpAddr>().is_err() && looks_like_dns_name(text) {
        cx.err(
            a.referenced,
            path,
            format!("`{text}` is a DNS name: write it as `host: {text}` (resolved with RFC 3263)"),
        );
        return None;
    }
    let address = parse_ip(cx, a, path)?;
    if let Some(z) = zone
        && address.is_ipv4() != z.sip_address.is_ipv4()
    {
        cx.err(
            a.referenced,
            path,
            format!(
                "{address} cannot be reached from zone `{}` at {} (address families differ)",
                z.name, z.sip_address
            ),
        );
    }
    Some(address)
}

/// A DNS name (RFC 1035 preferred syntax, RFC 1123 letters-digits-hyphen
/// labels): lower-cased, without a trailing dot.
fn dns_name(cx: &mut Ctx, v: &S<String>, path: &str) -> Option<String> {
    let text = v.value.trim();
    if text.parse::<IpAddr>().is_ok() {
        cx.err(
            v.referenced,
            path,
            format!("`{text}` is an IP address: write it as `address: {text}`"),
        );
        return None;
    }
    let name = text.strip_suffix('.').unwrap_or(text).to_ascii_lowercase();
    let bad_label = name.split('.').find(|l| {
        l.is_empty()
            || l.len() > 63
            || l.starts_with('-')
            || l.ends_with('-')
            || !l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
    });
    let last_numeric = name
        .rsplit('.')
        .next()
        .is_some_and(|l| l.bytes().all(|b| b.is_ascii_digit()));
    if name.is_empty() || name.len() > 253 || bad_label.is_some() || last_numeric {
        cx.err(
            v.referenced,
            path,
            format!(
                "`{text}` is not a DNS name (dot-separated labels of 1..=63 letters, digits and \
                 inner hyphens, 253 characters at most, not ending in a number)"
            ),
        );
        return None;
    }
    Some(name)
}

fn health(cx: &mut Ctx, raw: Option<&S<RawHealth>>, trunk: &str) -> Health {
    let p = format!("{trunk}.health");
    let defaults = |probe| Health {
        probe,
        interval: Duration::from_secs(HEALTH_INTERVAL_S.default),
        timeout: Duration::from_millis(HEALTH_TIMEOUT_MS.default),
        down_after: clamp_u32(HEALTH_DOWN_AFTER.default),
        up_after: clamp_u32(HEALTH_UP_AFTER.default),
    };
    let Some(h) = raw else {
        return defaults(Probe::Off);
    };
    let h = &h.value;
    let probe = match h.probe.as_ref().map(|v| v.value) {
        None | Some(RawProbe::Options) => Probe::Options,
        Some(RawProbe::Off) => Probe::Off,
    };
    let interval_s = cx.num(h.interval_seconds.as_ref(), &p, &HEALTH_INTERVAL_S);
    let mut timeout_ms = cx.num(h.timeout_ms.as_ref(), &p, &HEALTH_TIMEOUT_MS);
    if timeout_ms > interval_s * 1000 {
        let at = h
            .timeout_ms
            .as_ref()
            .or(h.interval_seconds.as_ref())
            .map(|v| v.referenced);
        if let Some(at) = at {
            cx.err(
                at,
                format!("{p}.timeout_ms"),
                format!(
                    "{timeout_ms} ms is longer than interval_seconds ({interval_s} s); a probe must end before the next"
                ),
            );
        }
        timeout_ms = interval_s * 1000;
    }
    Health {
        probe,
        interval: Duration::from_secs(interval_s),
        timeout: Duration::from_millis(timeout_ms),
        down_after: clamp_u32(cx.num(h.down_after.as_ref(), &p, &HEALTH_DOWN_AFTER)),
        up_after: clamp_u32(cx.num(h.up_after.as_ref(), &p, &HEALTH_UP_AFTER)),
    }
}

fn dns(cx: &mut Ctx, raw: Option<&S<RawDns>>) -> Dns {
    let empty = RawDns::default();
    let d = raw.map_or(&empty, |d| &d.value);
    let mut servers = Vec::new();
    if let Some(list) = &d.servers {
        if list.value.len() > MAX_DNS_SERVERS {
            cx.err(
                list.referenced,
                "dns.servers",
                format!(
                    "{} servers; at most {MAX_DNS_SERVERS} are allowed",
                    list.value.len()
                ),
            );
        }
        for (j, v) in list.value.iter().enumerate() {
            let text = v.value.trim();
            let parsed = text.parse::<std::net::SocketAddr>().ok().or_else(|| {
                text.parse::<IpAddr>()
                    .ok()
                    .map(|ip| std::net::SocketAddr::new(ip, DNS_PORT))
            });
            match parsed {
                Some(sa) if sa.port() != 0 && !sa.ip().is_unspecified() => servers.push(sa),
                _ => cx.err(
                    v.referenced,
                    format!("dns.servers[{j}]"),
                    format!("`{text}` is not IP or IP:PORT (IPv6 with a port as [::1]:53)"),
                ),
            }
        }
    }
    let s = "dns";
    let min_ttl = cx.num(d.min_ttl_seconds.as_ref(), s, &DNS_MIN_TTL_S);
    let mut max_ttl = cx.num(d.max_ttl_seconds.as_ref(), s, &DNS_MAX_TTL_S);
    if max_ttl < min_ttl {
        if let Some(v) = d.max_ttl_seconds.as_ref().or(d.min_ttl_seconds.as_ref()) {
            cx.err(
                v.referenced,
                "dns.max_ttl_seconds",
                format!("{max_ttl} is below min_ttl_seconds ({min_ttl})"),
            );
        }
        max_ttl = min_ttl;
    }
    Dns {
        servers,
        timeout: Duration::from_millis(cx.num(d.timeout_ms.as_ref(), s, &DNS_TIMEOUT_MS)),
        min_ttl: Duration::from_secs(min_ttl),
        max_ttl: Duration::from_secs(max_ttl),
        negative_ttl: Duration::from_secs(cx.num(
            d.negative_ttl_seconds.as_ref(),
            s,
            &DNS_NEGATIVE_TTL_S,
        )),
    }
}

fn list(ts: &[Transport]) -> String {
    ts.iter()
        .map(|t| t.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// IPv4-mapped IPv6 addresses are IPv4 for source matching.
fn normalise(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

pub(crate) fn parse_net(cx: &mut Ctx, v: &S<String>, path: &str) -> Option<IpNet> {
    let text = v.value.trim();
    if let Ok(ip) = text.parse::<IpAddr>() {
        return Some(IpNet::from(normalise(ip)));
    }
    match text.parse::<IpNet>() {
        Ok(net) if net.trunc() != net => {
            cx.err(
                v.referenced,
                path,
                format!("`{text}` has host bits set; did you mean {}?", net.trunc()),
            );
            None
        }
        Ok(net) => Some(match net {
            IpNet::V6(v6) if v6.prefix_len() >= 96 => match v6.addr().to_ipv4_mapped() {
                Some(v4) => IpNet::new(IpAddr::V4(v4), v6.prefix_len() - 96).unwrap_or(net),
                None => net,
            },
            other => other,
        }),
        Err(_) => {
            let msg = if looks_like_dns_name(text) {
                "DNS names are not supported yet; use an IP or CIDR".to_owned()
            } else {
                format!("`{text}` is not an IP address or CIDR network (like 10.0.0.0/24)")
            };
            cx.err(v.referenced, path, msg);
            None
        }
    }
}

/// RFC 3261 `token` characters.
fn token_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-.!%*_+`'~".contains(&b)
}

/// The top-level `media:` section.
fn media_section(cx: &mut Ctx, raw: &RawMediaSection) -> Media {
    let s = "media";
    Media {
        anchor: raw.anchor.as_ref().is_none_or(|v| v.value),
        relay_threads: clamp_usize(cx.num(raw.relay_threads.as_ref(), s, &RELAY_THREADS)),
        timeout: Duration::from_secs(cx.num(raw.timeout_seconds.as_ref(), s, &MEDIA_TIMEOUT_S)),
        hold_timeout: Duration::from_secs(cx.num(
            raw.hold_timeout_seconds.as_ref(),
            s,
            &HOLD_TIMEOUT_S,
        )),
        dscp_rtp: clamp_u8(cx.num(raw.dscp_rtp.as_ref(), s, &DSCP_RTP)),
        kernel_forwarding: raw
            .kernel_forwarding
            .as_ref()
            .and_then(|v| {
                crate::guard::choice(
                    cx,
                    v,
                    "media.kernel_forwarding",
                    &[
                        ("off", crate::guard::NftMode::Off),
                        ("auto", crate::guard::NftMode::Auto),
                        ("on", crate::guard::NftMode::On),
                    ],
                )
            })
            .unwrap_or(crate::guard::NftMode::Off),
        kernel_forwarding_after: Duration::from_millis(cx.num(
            raw.kernel_forwarding_after_ms.as_ref(),
            s,
            &KERNEL_FORWARDING_AFTER_MS,
        )),
    }
}

/// SDP encoding-name characters (RFC 4566 `token`, as codec names use them).
fn codec_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '+')
}

/// A trunk's `media:` policy.
fn trunk_media(cx: &mut Ctx, t: &RawTrunk, p: &str) -> TrunkMedia {
    let Some(m) = &t.media else {
        return TrunkMedia::default();
    };
    let srtp = match m.srtp.as_ref().map(|v| v.value) {
        None | Some(RawSrtp::Off) => SrtpPolicy::Off,
        Some(RawSrtp::Optional) => SrtpPolicy::Optional,
        Some(RawSrtp::Required) => SrtpPolicy::Required,
    };
    let rtcp_mux = match m.rtcp_mux.as_ref().map(|v| v.value) {
        None | Some(RawRtcpMux::Auto) => RtcpMuxPolicy::Auto,
        Some(RawRtcpMux::On) => RtcpMuxPolicy::On,
        Some(RawRtcpMux::Off) => RtcpMuxPolicy::Off,
    };
    let latching = match m.latching.as_ref().map(|v| v.value) {
        None | Some(RawLatching::Learn) => Latching::Learn,
        Some(RawLatching::Strict) => Latching::Strict,
    };
    let mut codecs: Vec<String> = Vec::new();
    let list = m.codecs.as_deref().unwrap_or_default();
    if list.len() > MAX_CODECS
        && let Some(first) = list.get(MAX_CODECS)
    {
        cx.err(
            first.referenced,
            format!("{p}.media.codecs"),
            format!("{} codecs; at most {MAX_CODECS} are allowed", list.len()),
        );
    }
    for (j, c) in list.iter().enumerate().take(MAX_CODECS) {
        let cp = format!("{p}.media.codecs[{j}]");
        let name = c.value.trim();
        let n = name.chars().count();
        if n == 0 || n > MAX_CODEC_CHARS {
            cx.err(
                c.referenced,
                cp,
                format!("must be 1..={MAX_CODEC_CHARS} characters long (got {n})"),
            );
        } else if let Some(bad) = name.chars().find(|&ch| !codec_char(ch)) {
            cx.err(
                c.referenced,
                cp,
                format!(
                    "`{name}` contains {bad:?}; a codec is an SDP encoding name like PCMA, G722 or opus"
                ),
            );
        } else if codecs.iter().any(|k| k.eq_ignore_ascii_case(name)) {
            cx.err(c.referenced, cp, format!("{name} is listed twice"));
        } else {
            codecs.push(name.to_owned());
        }
    }
    TrunkMedia {
        srtp,
        rtcp_mux,
        codecs,
        latching,
    }
}

fn pass_headers(cx: &mut Ctx, t: &RawTrunk, p: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for (j, h) in t.pass_headers.iter().flatten().enumerate() {
        let hp = format!("{p}.pass_headers[{j}]");
        let name = h.value.trim();
        if name.is_empty() || !name.bytes().all(token_char) {
            cx.err(
                h.referenced,
                hp,
                format!("`{name}` is not a header name (an RFC 3261 token)"),
            );
            continue;
        }
        if let Some((long, _)) = STRUCTURAL_HEADERS.iter().find(|(long, short)| {
            long.eq_ignore_ascii_case(name) || short.is_some_and(|s| s.eq_ignore_ascii_case(name))
        }) {
            cx.err(
                h.referenced,
                hp,
                format!("{long} is structural: Palisade regenerates it on every leg, it cannot be passed"),
            );
            continue;
        }
        let lower = name.to_ascii_lowercase();
        if out.contains(&lower) {
            cx.err(h.referenced, hp, format!("{name} is listed twice"));
            continue;
        }
        out.push(lower);
    }
    out
}

/// Two trunks of one zone may not claim the same source address: members'
/// addresses and `source_addresses` networks must not overlap across trunks.
///
/// CIDR networks are either nested or disjoint, so sorting by (network start,
/// prefix length) and keeping a stack of the networks enclosing the current
/// one finds every overlap in O(n log n).
fn check_source_overlaps(cx: &mut Ctx, trunks: &[TrunkWithSources], zones: &[Zone]) {
    let mut by_zone: HashMap<ZoneId, Vec<(usize, &SourceEntry)>> = HashMap::new();
    for (i, (t, entries)) in trunks.iter().enumerate() {
        if t.zone.index() >= zones.len() {
            continue;
        }
        for e in entries {
            by_zone.entry(t.zone).or_default().push((i, e));
        }
    }
    let mut zone_ids: Vec<ZoneId> = by_zone.keys().copied().collect();
    zone_ids.sort();
    let mut reported: std::collections::HashSet<(usize, usize)> = std::collections::HashSet::new();
    for zid in zone_ids {
        let Some(mut entries) = by_zone.remove(&zid) else {
            continue;
        };
        entries.sort_by_key(|(_, e)| {
            (
                matches!(e.net, IpNet::V6(_)),
                ip_bits(e.net.network()),
                e.net.prefix_len(),
            )
        });
        let mut stack: Vec<(usize, &SourceEntry)> = Vec::new();
        for (ti, e) in entries {
            while stack
                .last()
                .is_some_and(|(_, top)| !top.net.contains(&e.net))
            {
                stack.pop();
            }
            if let Some(&(oi, other)) = stack.iter().rev().find(|(oi, _)| *oi != ti) {
                let key = (ti.min(oi), ti.max(oi));
                if reported.insert(key) {
                    let zone_name = zones.get(zid.index()).map_or("", |z| z.name.as_str());
                    let other_name = trunks.get(oi).map_or("", |(t, _)| t.name.as_str());
                    let this_name = trunks.get(ti).map_or("", |(t, _)| t.name.as_str());
                    // Point at whichever of the two comes later in the file.
                    let (later, earlier, later_trunk, earlier_trunk) =
                        if (e.at.line(), e.at.column()) >= (other.at.line(), other.at.column()) {
                            (e, other, this_name, other_name)
                        } else {
                            (other, e, other_name, this_name)
                        };
                    cx.err(
                        later.at,
                        later.path.clone(),
                        format!(
                            "{} overlaps {} ({}) of trunk `{earlier_trunk}`; a source address must identify one trunk of zone `{zone_name}` (this is trunk `{later_trunk}`)",
                            later.net, earlier.net, earlier.path
                        ),
                    );
                }
            }
            stack.push((ti, e));
        }
    }
}

fn ip_bits(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(v4) => u128::from(u32::from(v4)),
        IpAddr::V6(v6) => u128::from(v6),
    }
}

fn route_name_char(c: char) -> bool {
    node_name_char(c)
}

fn routes(cx: &mut Ctx, raw: &S<Vec<S<RawRoute>>>, trunks: &[TrunkWithSources]) -> Vec<Route> {
    check_count(cx, raw, "routes", MAX_ROUTES, "route");
    let trunk_ids: HashMap<&str, TrunkId> = {
        let mut m = HashMap::new();
        for (t, _) in trunks {
            m.entry(t.name.as_str()).or_insert(t.id);
        }
        m
    };
    let resolve = |cx: &mut Ctx, v: &S<String>, path: String| -> Option<TrunkId> {
        let id = trunk_ids.get(v.value.as_str()).copied();
        if id.is_none() {
            cx.err(v.referenced, path, format!("no trunk named `{}`", v.value));
        }
        id
    };
    let mut seen: HashMap<&str, usize> = HashMap::new();
    let mut out = Vec::new();
    for (i, r) in raw.value.iter().enumerate() {
        let p = format!("routes[{i}]");
        let r = &r.value;
        check_name(
            cx,
            &r.name,
            &format!("{p}.name"),
            64,
            route_name_char,
            "[A-Za-z0-9._-]",
        );
        if let Some(first) = seen.insert(r.name.value.as_str(), i) {
            cx.err(
                r.name.referenced,
                format!("{p}.name"),
                format!(
                    "duplicate route name `{}` (also routes[{first}])",
                    r.name.value
                ),
            );
        }
        let from_trunk = r
            .from_trunk
            .as_ref()
            .map(|v| resolve(cx, v, format!("{p}.from_trunk")));
        let to_trunk = resolve(cx, &r.to_trunk, format!("{p}.to_trunk"));
        let number_prefixes = prefixes(cx, r, &p);
        let number_regex = r.number_regex.as_ref().and_then(|re| {
            let rp = format!("{p}.number_regex");
            let n = re.value.chars().count();
            if n == 0 || n > MAX_REGEX_CHARS {
                cx.err(
                    re.referenced,
                    rp,
                    format!("must be 1..={MAX_REGEX_CHARS} characters long (got {n})"),
                );
                return None;
            }
            match RegexBuilder::new(&re.value)
                .size_limit(REGEX_SIZE_LIMIT_BYTES)
                .build()
            {
                Ok(compiled) => Some(compiled),
                Err(e) => {
                    cx.err(
                        re.referenced,
                        rp,
                        format!("invalid regex: {}", regex_error_line(&e)),
                    );
                    None
                }
            }
        });
        out.push(Route {
            name: r.name.value.clone(),
            from_trunk: from_trunk.flatten(),
            number_prefixes,
            number_regex,
            to_trunk: to_trunk.unwrap_or(TrunkId(u16::MAX)),
            to_registered: edge::to_registered(r),
        });
    }
    out
}

fn prefixes(cx: &mut Ctx, r: &RawRoute, p: &str) -> Vec<String> {
    let mut out = Vec::new();
    let Some(list) = &r.number_prefixes else {
        return out;
    };
    for (j, v) in list.value.iter().enumerate() {
        let pp = format!("{p}.number_prefixes[{j}]");
        let n = v.value.chars().count();
        if n == 0 || n > MAX_PREFIX_CHARS {
            cx.err(
                v.referenced,
                pp,
                format!("must be 1..={MAX_PREFIX_CHARS} characters long (got {n})"),
            );
        } else if let Some(bad) = v
            .value
            .chars()
            .find(|c| !matches!(c, '0'..='9' | '+' | '*' | '#'))
        {
            cx.err(
                v.referenced,
                pp,
                format!("`{}` contains {bad:?}; allowed are [0-9+*#]", v.value),
            );
        } else {
            out.push(v.value.clone());
        }
    }
    out
}

/// The regex crate's errors span several lines (pattern, caret, message);
/// keep the one that says what is wrong.
pub(crate) fn regex_error_line(e: &regex::Error) -> String {
    match e {
        regex::Error::CompiledTooBig(limit) => {
            format!("compiles to more than {limit} bytes; simplify it")
        }
        other => {
            let text = other.to_string();
            text.lines()
                .find_map(|l| l.trim().strip_prefix("error: "))
                .map_or_else(
                    || text.lines().last().unwrap_or("").trim().to_owned(),
                    str::to_owned,
                )
        }
    }
}

const LEVELS: [&str; 6] = ["trace", "debug", "info", "warn", "error", "off"];

fn admin(cx: &mut Ctx, raw: Option<&S<crate::raw::RawAdmin>>) -> Admin {
    let Some(a) = raw.map(|a| &a.value) else {
        return Admin::default();
    };
    let Some(l) = &a.listen else {
        return Admin::default();
    };
    let text = l.value.trim();
    let listen = match text.parse::<SocketAddr>() {
        Ok(sa) if sa.port() != 0 => sa,
        _ => {
            cx.err(
                l.referenced,
                "admin.listen",
                format!("`{text}` is not IP:PORT with a port above 0 (IPv6 as [::1]:9091)"),
            );
            return Admin::default();
        }
    };
    let open = a.allow_non_loopback.as_ref().is_some_and(|v| v.value);
    if !listen.ip().is_loopback() && !open {
        cx.err(
            l.referenced,
            "admin.listen",
            format!(
                "{listen} is not a loopback address: the admin endpoint has no authentication; \
                 set admin.allow_non_loopback: true to listen there (and firewall it)"
            ),
        );
    }
    Admin {
        listen: Some(listen),
    }
}

fn logging(cx: &mut Ctx, raw: crate::raw::RawLogging) -> Logging {
    let format = match raw.format.map(|f| f.value) {
        None | Some(RawLogFormat::Text) => LogFormat::Text,
        Some(RawLogFormat::Json) => LogFormat::Json,
    };
    let level = match raw.level {
        None => "info".to_owned(),
        Some(l) => {
            if let Err(msg) = check_level(&l.value) {
                cx.err(l.referenced, "logging.level", msg);
            }
            l.value
        }
    };
    let batch = Duration::from_millis(cx.num(raw.batch_ms.as_ref(), "logging", &LOG_BATCH_MS));
    Logging {
        format,
        level,
        batch,
    }
}

/// A light check that `level` is a tracing `EnvFilter` directive list, plus
/// one stricter rule: a bare word must be a level. (`EnvFilter` would take
/// `infoo` as a target name and silently log nothing.)
fn check_level(level: &str) -> Result<(), String> {
    if level.trim().is_empty() {
        return Err("must not be empty (for example `info` or `info,palisade_b2bua=debug`)".into());
    }
    for d in level.split(',').map(str::trim).filter(|d| !d.is_empty()) {
        if !d.contains('=') && !d.contains('[') && !LEVELS.iter().any(|l| l.eq_ignore_ascii_case(d))
        {
            return Err(format!(
                "`{d}` is not a level; use one of {} or target=level",
                LEVELS.join(", ")
            ));
        }
    }
    tracing_subscriber::EnvFilter::builder()
        .parse(level)
        .map(|_| ())
        .map_err(|e| format!("not a valid filter directive: {e}"))
}

/// Builds the per-zone source lookup: exact hosts in a map, wider networks
/// longest prefix first.
fn source_indexes(zones: &[Zone], trunks: &[Trunk]) -> Vec<SourceIndex> {
    let mut out = vec![SourceIndex::default(); zones.len()];
    for t in trunks {
        let Some(index) = out.get_mut(t.zone.index()) else {
            continue;
        };
        let nets = t
            .members
            .iter()
            .map(|m| IpNet::from(normalise(m.address)))
            .chain(t.source_addresses.iter().copied());
        for net in nets {
            if net.prefix_len() == net.max_prefix_len() {
                index.hosts.entry(net.addr()).or_insert(t.id);
            } else {
                index.nets.push((net, t.id));
            }
        }
    }
    for index in &mut out {
        index
            .nets
            .sort_by_key(|(net, _)| std::cmp::Reverse(net.prefix_len()));
    }
    out
}
