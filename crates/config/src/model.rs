//! The validated configuration the engine runs on.
//!
//! Everything here has passed every rule: names are resolved to ids, addresses
//! and CIDRs are parsed, times are [`Duration`]s and regexes are compiled. A
//! [`Config`] can only be made by [`crate::load`] / [`crate::load_str`], so an
//! id taken from a `Config` is always valid for that `Config`. Ids are indices:
//! a [`TrunkId`] from one `Config` means nothing in a reloaded one (zones cannot
//! change on reload, so a [`ZoneId`] stays valid).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use ipnet::IpNet;
use palisade_sip::Transport;
use regex::Regex;

/// Index of a zone in [`Config::zones`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ZoneId(pub u16);

/// Index of a trunk in [`Config::trunks`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TrunkId(pub u16);

impl ZoneId {
    /// The position in [`Config::zones`].
    pub const fn index(self) -> usize {
        self.0 as usize
    }
}

impl TrunkId {
    /// The position in [`Config::trunks`].
    pub const fn index(self) -> usize {
        self.0 as usize
    }
}

/// `node:` — who this instance is.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Node {
    /// Instance name for logs and metrics (`[A-Za-z0-9._-]`, 1..=64). Default `palisade`.
    pub name: String,
    /// The only Server / User-Agent value Palisade ever sends; the peer's is never
    /// copied. Default `Palisade`.
    pub user_agent: String,
}

/// `sip:` — protocol timers, size limits and socket tuning.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Sip {
    /// RFC 3261 T1, RTT estimate. `t1_ms`, default 500 ms, 50..=5000.
    pub t1: Duration,
    /// RFC 3261 T2, max non-INVITE retransmit interval. `t2_ms`, default 4000 ms, >= T1.
    pub t2: Duration,
    /// RFC 3261 T4, max time a message stays in the network. `t4_ms`, default 5000 ms.
    pub t4: Duration,
    /// Largest UDP datagram accepted. Default 16384, 1024..=65507.
    pub max_udp_message_bytes: usize,
    /// Largest message accepted on a TCP stream. Default 65536, 1024..=1048576.
    pub max_tcp_message_bytes: usize,
    /// Outgoing UDP requests larger than this go over TCP when the member allows
    /// it (RFC 3261 section 18.1.1). Default 1300.
    pub udp_mtu_bytes: usize,
    /// Max-Forwards on requests we originate. Default 70, 1..=255.
    pub max_forwards: u8,
    /// No response at all from a trunk member to an INVITE within this: try the
    /// next member. `member_timeout_ms`, default 4000 ms. Trunks may override it
    /// ([`Trunk::member_timeout`] holds the effective value).
    pub member_timeout: Duration,
    /// Ringing with no answer this long: CANCEL out, 408 back.
    /// `no_answer_timeout_seconds`, default 180 s.
    pub no_answer_timeout: Duration,
    /// Global cap on concurrent calls; over it new INVITEs get 503. Default 100000.
    pub max_calls: u32,
    /// `SO_RCVBUF` for UDP sockets. Default 8388608.
    pub udp_receive_buffer_bytes: usize,
    /// `SO_SNDBUF` for UDP sockets. Default 4194304.
    pub udp_send_buffer_bytes: usize,
    /// `SO_RCVBUF` of each TCP listening socket, set before `listen()` so
    /// accepted connections inherit it; 0 keeps Linux's autotuning. Default 1048576.
    pub tcp_receive_buffer_bytes: usize,
    /// Close a TCP connection idle this long. `tcp_idle_timeout_seconds`, default 600 s.
    pub tcp_idle_timeout: Duration,
    /// Cap on open TCP connections (inbound and outbound). Default 4096.
    pub tcp_max_connections: u32,
    /// Give up connecting to a TCP peer after this. `tcp_connect_timeout_ms`, default 2000 ms.
    pub tcp_connect_timeout: Duration,
}

/// A zone's media relay address and port range (used by the media relay).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MediaRange {
    /// Address media is bound to and advertised as. Default: the zone's `sip_address`.
    pub address: IpAddr,
    /// First port (even). Default 20000.
    pub port_min: u16,
    /// Last port (inclusive, > `port_min`). Default 29999.
    pub port_max: u16,
}

/// A network Palisade faces: one SIP address, its listeners and its media range.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Zone {
    /// This zone's id (its index).
    pub id: ZoneId,
    /// Unique name (`[a-z0-9_-]`, 1..=32).
    pub name: String,
    /// Bound, and written in Via/Contact/From toward this zone. Never unspecified
    /// or multicast.
    pub sip_address: IpAddr,
    /// Enabled transports, in the order written, without duplicates, never empty.
    /// Only UDP and TCP for now. Default `[udp, tcp]`.
    pub transports: Vec<Transport>,
    /// UDP listening port. Default 5060.
    pub udp_port: u16,
    /// TCP listening port. Default 5060.
    pub tcp_port: u16,
    /// Media relay range.
    pub media: MediaRange,
    /// DSCP for SIP packets sent from this zone (0..=63). Default 24 (CS3).
    pub dscp_sip: u8,
    /// Call admission limits of the zone (all calls and registrations through it).
    pub cac: crate::edge::Cac,
}

impl Zone {
    /// Whether `transport` is enabled on this zone.
    pub fn has_transport(&self, transport: Transport) -> bool {
        self.transports.contains(&transport)
    }

    /// The socket to listen on for `transport`, if enabled.
    pub fn listen_addr(&self, transport: Transport) -> Option<SocketAddr> {
        if !self.has_transport(transport) {
            return None;
        }
        match transport {
            Transport::Udp => Some(SocketAddr::new(self.sip_address, self.udp_port)),
            Transport::Tcp => Some(SocketAddr::new(self.sip_address, self.tcp_port)),
            Transport::Tls => None,
        }
    }

    /// Every `(transport, socket)` to listen on, in `transports` order.
    pub fn listen_addrs(&self) -> impl Iterator<Item = (Transport, SocketAddr)> + '_ {
        self.transports
            .iter()
            .filter_map(|&t| self.listen_addr(t).map(|a| (t, a)))
    }
}

/// One server of a trunk given by IP address (`address:`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Member {
    /// IP address.
    pub address: IpAddr,
    /// Port. Default 5060.
    pub port: u16,
    /// Transport, enabled on the trunk's zone. Default UDP.
    pub transport: Transport,
}

impl Member {
    /// `address:port`.
    pub fn socket_addr(&self) -> SocketAddr {
        SocketAddr::new(self.address, self.port)
    }
}

/// One server of a trunk given by DNS name (`host:`), resolved at run time
/// with RFC 3263 (NAPTR, SRV, A/AAAA) by the binary's resolver task.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct DnsMember {
    /// The name, lower-case, without a trailing dot.
    pub host: String,
    /// Explicit port: only A/AAAA are looked up (RFC 3263 section 4.2).
    pub port: Option<u16>,
    /// Explicit transport: SRV for that transport, no NAPTR (RFC 3263 section 4.1).
    pub transport: Option<Transport>,
}

impl DnsMember {
    /// `host`, or `host:port` when the port is explicit: the host part of the
    /// Request-URI and To sent to this member (RFC 3263 resolves it; the
    /// carrier sees its own domain, as from a proxy).
    pub fn uri_host(&self) -> String {
        match self.port {
            Some(p) => format!("{}:{p}", self.host),
            None => self.host.clone(),
        }
    }
}

/// A trunk member as written, in configuration order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Destination {
    /// `address:` an IP, used as is.
    Ip(Member),
    /// `host:` a DNS name, resolved at run time.
    Dns(DnsMember),
}

/// How a trunk's members are checked (`trunks[].health`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Probe {
    /// No probing: every member is always considered up.
    Off,
    /// SIP OPTIONS from the zone's address to every member target.
    Options,
}

/// `trunks[].health`: active health probing of every member target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Health {
    /// `probe`; `off` when the section is absent, `options` when it is there.
    pub probe: Probe,
    /// Time between two probes of one target. `interval_seconds`, default 30 s.
    pub interval: Duration,
    /// A probe without a response within this failed. `timeout_ms`, default
    /// 2000 ms, at most the interval.
    pub timeout: Duration,
    /// Consecutive failed probes that mark an up target down. Default 3.
    pub down_after: u32,
    /// Consecutive answered probes that mark a down target up again. Default 2.
    pub up_after: u32,
}

/// `dns:`: how `host:` members are resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Dns {
    /// Name servers to ask; empty = the system's (`/etc/resolv.conf`).
    pub servers: Vec<SocketAddr>,
    /// One query gives up after this. `timeout_ms`, default 2000 ms.
    pub timeout: Duration,
    /// Records are re-resolved no more often than this, whatever their TTL.
    /// `min_ttl_seconds`, default 5 s.
    pub min_ttl: Duration,
    /// Records are re-resolved at least this often. `max_ttl_seconds`, default 3600 s.
    pub max_ttl: Duration,
    /// How long a name that does not exist (or has no usable records) is
    /// remembered when the answer carries no SOA TTL. `negative_ttl_seconds`, default 30 s.
    pub negative_ttl: Duration,
}

/// A SIP peer (carrier, PBX, ...) reached through one zone.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Trunk {
    /// This trunk's id (its index).
    pub id: TrunkId,
    /// Unique name (`[A-Za-z0-9._-]`, 1..=64).
    pub name: String,
    /// Zone the trunk is reached through.
    pub zone: ZoneId,
    /// The members given by IP (`address:`), in order. Members given by DNS
    /// name are only in [`Trunk::destinations`].
    pub members: Vec<Member>,
    /// Every member as written, in order (1..=16): the first is the primary,
    /// the others take calls in order when the one before fails.
    pub destinations: Vec<Destination>,
    /// Health probing of the members.
    pub health: Health,
    /// Extra networks (normalised, host bits zero) whose traffic counts as this
    /// trunk's; members' addresses always count too.
    pub source_addresses: Vec<IpNet>,
    /// Effective member timeout: the trunk's `member_timeout_ms` or `sip.member_timeout_ms`.
    pub member_timeout: Duration,
    /// Non-structural header names allowed to cross into messages sent to this
    /// trunk, lower-cased, without duplicates.
    pub pass_headers: Vec<String>,
    /// Credentials Palisade presents to this trunk.
    pub auth: Option<crate::edge::TrunkAuth>,
    /// Outbound registration to the primary member (needs `auth`).
    pub registration: Option<crate::edge::Registration>,
    /// INVITEs from this trunk must carry digest credentials of a registrar user.
    pub challenge_inbound: bool,
    /// The registrar users whose credentials INVITEs from this trunk may
    /// carry (`challenge_inbound_users`). Empty on the registrar's own
    /// trunk means every registrar user; other trunks with
    /// `challenge_inbound` must name theirs.
    pub challenge_inbound_users: Vec<String>,
    /// Keepalives to every member.
    pub keepalive: Option<crate::edge::Keepalive>,
    /// Call admission limits.
    pub cac: crate::edge::Cac,
    /// Inside the trust domain (RFC 3325): may receive P-Asserted-Identity
    /// and a caller's identity when the caller asked for `Privacy: id`.
    /// `trusted`, default true.
    pub trusted: bool,
    /// Normalization profiles run on this trunk's messages.
    pub normalization: crate::normalization::TrunkNormalization,
    /// Media policy on this trunk's legs.
    pub media: TrunkMedia,
}

/// SRTP (SDES, RFC 4568) toward a trunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum SrtpPolicy {
    /// Plain RTP only: offers carry no `a=crypto`; an SRTP-only offer
    /// (`RTP/SAVP`) from the trunk is refused with 488. Default.
    #[default]
    Off,
    /// SRTP when the peer does it: offers are `RTP/AVP` with `a=crypto`
    /// (best effort); offers from the trunk are answered in kind.
    Optional,
    /// SRTP only: offers are `RTP/SAVP` with `a=crypto`; an offer or answer
    /// from the trunk without a usable `a=crypto` is refused with 488.
    Required,
}

/// RTP/RTCP multiplexing (RFC 5761) toward a trunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum RtcpMuxPolicy {
    /// Offer `a=rtcp-mux` when the other leg's offer had it; accept it when
    /// offered. Default.
    #[default]
    Auto,
    /// Always offer `a=rtcp-mux`; accept it when offered.
    On,
    /// Never offer nor accept it (RTCP on the RTP port + 1).
    Off,
}

/// How the relay learns where a trunk's media really comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Latching {
    /// Symmetric RTP: send to where the peer's packets come from (NAT). Default.
    #[default]
    Learn,
    /// Accept media only from the address the SDP names; drop and count the rest.
    Strict,
}

/// A trunk's `media:` policy.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct TrunkMedia {
    /// SRTP toward the trunk. Default off.
    pub srtp: SrtpPolicy,
    /// rtcp-mux toward the trunk. Default auto.
    pub rtcp_mux: RtcpMuxPolicy,
    /// Codec allow-list, in preference order, as SDP encoding names
    /// (`PCMA`, `opus`...), matched case-insensitively; empty = keep every
    /// codec in the order offered. `telephone-event` is always kept.
    pub codecs: Vec<String>,
    /// Latching mode. Default learn.
    pub latching: Latching,
}

/// `media:` — anchoring and the relay.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Media {
    /// Anchor media through Palisade (rewrite SDP, relay RTP). Default true;
    /// false lets RTP flow between the peers (only the SDP origin is rewritten).
    pub anchor: bool,
    /// Relay threads; 0 = one per CPU core. Default 0.
    pub relay_threads: usize,
    /// No RTP in either direction this long ends the call (`media-timeout`).
    /// `timeout_seconds`, default 60 s.
    pub timeout: Duration,
    /// The same while the call is on hold. `hold_timeout_seconds`, default 3600 s.
    pub hold_timeout: Duration,
    /// DSCP of RTP and RTCP packets (0..=63). Default 46 (EF).
    pub dscp_rtp: u8,
    /// Kernel forwarding of plain RTP streams (nftables conntrack NAT):
    /// `off` (default) relays every packet in Palisade; `auto` hands plain
    /// streams to the kernel when nftables and conntrack NAT are usable
    /// (said at start otherwise); `on` refuses to start without them.
    pub kernel_forwarding: crate::guard::NftMode,
    /// How long a stream is relayed in Palisade before the kernel takes it
    /// (its first quality sample is measured here).
    /// `kernel_forwarding_after_ms`, default 1000 ms.
    pub kernel_forwarding_after: Duration,
}

impl Trunk {
    /// Whether any member is a DNS name (the trunk needs the resolver).
    pub fn has_dns_members(&self) -> bool {
        self.destinations
            .iter()
            .any(|d| matches!(d, Destination::Dns(_)))
    }

    /// Whether a header named `name` (any case) may cross into messages sent
    /// to this trunk. Compact forms are not expanded here.
    pub fn passes_header(&self, name: &str) -> bool {
        self.pass_headers
            .iter()
            .any(|h| h.eq_ignore_ascii_case(name))
    }
}

/// A routing rule: calls from `from_trunk` (any when `None`) whose dialled
/// number matches go to `to_trunk`.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Route {
    /// Unique name (`[A-Za-z0-9._-]`, 1..=64).
    pub name: String,
    /// Only calls arriving from this trunk; `None` = any trunk.
    pub from_trunk: Option<TrunkId>,
    /// The number must start with one of these (when not empty).
    pub number_prefixes: Vec<String>,
    /// The number must match this (unanchored search: anchor with `^`/`$`).
    pub number_regex: Option<Regex>,
    /// Where matching calls go.
    pub to_trunk: TrunkId,
    /// Deliver to the registrar binding of the dialled user (the trunk is
    /// the registrar's) instead of the trunk's members.
    pub to_registered: bool,
}

impl Route {
    /// Whether a call from `from` to `number` takes this route: the trunk
    /// matches, and the number starts with one of the prefixes (if any) and
    /// matches the regex (if any). A route with neither matches every number.
    pub fn matches(&self, from: TrunkId, number: &str) -> bool {
        if self.from_trunk.is_some_and(|t| t != from) {
            return false;
        }
        if !self.number_prefixes.is_empty()
            && !self
                .number_prefixes
                .iter()
                .any(|p| number.starts_with(p.as_str()))
        {
            return false;
        }
        self.number_regex
            .as_ref()
            .is_none_or(|re| re.is_match(number))
    }
}

/// `shutdown:` — what SIGTERM does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Shutdown {
    /// Stop taking calls, wait this long for active calls, then BYE the rest.
    /// `grace_seconds`, default 30 s, 0..=3600.
    pub grace: Duration,
}

/// `admin:` — the HTTP endpoint for Prometheus (`/metrics`), health checks
/// (`/health`) and status (`/api/v1/status`). Read-only, no authentication.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct Admin {
    /// `listen: IP:PORT`; absent = no admin endpoint. A loopback address
    /// unless `allow_non_loopback: true` (default false).
    pub listen: Option<SocketAddr>,
}

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines (default).
    Text,
    /// One JSON object per line.
    Json,
}

/// `logging:`.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Logging {
    /// Default `text`.
    pub format: LogFormat,
    /// A `tracing_subscriber::EnvFilter` directive, checked at load. Default `info`.
    pub level: String,
    /// How long the call engine may hold log lines to write many with one
    /// write(2): default 100 ms, 0..=1000; 0 writes at the end of each
    /// engine turn. `warn` and `error` lines are never held.
    pub batch: std::time::Duration,
}

/// Per-zone index from source address to trunk.
#[derive(Debug, Clone, Default)]
pub(crate) struct SourceIndex {
    /// Exact host addresses (members, /32 and /128 entries): the most specific.
    pub hosts: HashMap<IpAddr, TrunkId>,
    /// Wider networks, longest prefix first.
    pub nets: Vec<(IpNet, TrunkId)>,
}

/// A validated configuration. Made only by [`crate::load`] and [`crate::load_str`].
#[derive(Debug, Clone)]
pub struct Config {
    pub(crate) node: Node,
    pub(crate) sip: Sip,
    pub(crate) zones: Vec<Zone>,
    pub(crate) trunks: Vec<Trunk>,
    pub(crate) routes: Vec<Route>,
    pub(crate) media: Media,
    pub(crate) shutdown: Shutdown,
    pub(crate) admin: Admin,
    pub(crate) logging: Logging,
    pub(crate) dns: Dns,
    pub(crate) guard: crate::guard::Guard,
    pub(crate) fraud: crate::guard::Fraud,
    pub(crate) alerts: crate::guard::Alerts,
    pub(crate) registrar: Option<crate::edge::Registrar>,
    pub(crate) nat: crate::edge::Nat,
    pub(crate) call_admission: crate::edge::CallAdmission,
    /// One per zone.
    pub(crate) sources: Vec<SourceIndex>,
    /// Per trunk: indices of routes with that `from_trunk`, ascending.
    pub(crate) routes_from: Vec<Vec<u32>>,
    /// Indices of routes without `from_trunk`, ascending.
    pub(crate) routes_from_any: Vec<u32>,
    pub(crate) normalization: crate::normalization::Normalization,
}

impl Config {
    /// `node:` settings.
    pub fn node(&self) -> &Node {
        &self.node
    }

    /// `sip:` settings.
    pub fn sip(&self) -> &Sip {
        &self.sip
    }

    /// All zones; `zones()[id.index()]` is zone `id`.
    pub fn zones(&self) -> &[Zone] {
        &self.zones
    }

    /// All trunks; `trunks()[id.index()]` is trunk `id`.
    pub fn trunks(&self) -> &[Trunk] {
        &self.trunks
    }

    /// All routes, in evaluation order.
    pub fn routes(&self) -> &[Route] {
        &self.routes
    }

    /// `media:` settings.
    pub fn media(&self) -> &Media {
        &self.media
    }

    /// `shutdown:` settings.
    pub fn shutdown(&self) -> &Shutdown {
        &self.shutdown
    }

    /// `admin:` settings.
    pub fn admin(&self) -> &Admin {
        &self.admin
    }

    /// `logging:` settings.
    pub fn logging(&self) -> &Logging {
        &self.logging
    }

    /// `normalization:` profiles and privacy policy.
    pub fn normalization(&self) -> &crate::normalization::Normalization {
        &self.normalization
    }

    /// `dns:` settings.
    pub fn dns(&self) -> &Dns {
        &self.dns
    }

    /// `guard:` settings (DoS limits, scanners, trust lists, nftables).
    pub fn guard(&self) -> &crate::guard::Guard {
        &self.guard
    }

    /// `fraud:` rules.
    pub fn fraud(&self) -> &crate::guard::Fraud {
        &self.fraud
    }

    /// `alerts:` settings.
    pub fn alerts(&self) -> &crate::guard::Alerts {
        &self.alerts
    }

    /// `registrar:` settings, if Palisade is a registrar.
    pub fn registrar(&self) -> Option<&crate::edge::Registrar> {
        self.registrar.as_ref()
    }

    /// `nat:` settings.
    pub fn nat(&self) -> &crate::edge::Nat {
        &self.nat
    }

    /// `call_admission:` settings.
    pub fn call_admission(&self) -> &crate::edge::CallAdmission {
        &self.call_admission
    }

    /// The zone `id`; `None` only for an id from another `Config` with more zones.
    pub fn zone(&self, id: ZoneId) -> Option<&Zone> {
        self.zones.get(id.index())
    }

    /// The trunk `id`; `None` only for an id from another `Config` with more trunks.
    pub fn trunk(&self, id: TrunkId) -> Option<&Trunk> {
        self.trunks.get(id.index())
    }

    /// The zone named `name` (exact, case-sensitive).
    pub fn zone_by_name(&self, name: &str) -> Option<&Zone> {
        self.zones.iter().find(|z| z.name == name)
    }

    /// The trunk named `name` (exact, case-sensitive).
    pub fn trunk_by_name(&self, name: &str) -> Option<&Trunk> {
        self.trunks.iter().find(|t| t.name == name)
    }

    /// The trunk of zone `zone` that traffic from `ip` belongs to: the entry
    /// (member address or `source_addresses` network) with the longest prefix
    /// containing `ip` wins. IPv4-mapped IPv6 addresses (`::ffff:a.b.c.d`, as
    /// dual-stack sockets report them) are matched as IPv4.
    pub fn trunk_for_source(&self, zone: ZoneId, ip: IpAddr) -> Option<TrunkId> {
        let index = self.sources.get(zone.index())?;
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        if let Some(&t) = index.hosts.get(&ip) {
            return Some(t);
        }
        index
            .nets
            .iter()
            .find(|(net, _)| net.contains(&ip))
            .map(|&(_, t)| t)
    }

    /// The first route, in file order, that a call from trunk `from` to
    /// `number` (the Request-URI user part, or the tel number) takes.
    pub fn route_for(&self, from: TrunkId, number: &str) -> Option<&Route> {
        let specific: &[u32] = self
            .routes_from
            .get(from.index())
            .map_or(&[], Vec::as_slice);
        let any = self.routes_from_any.as_slice();
        // Merge the two ascending index lists so file order is kept.
        let (mut i, mut j) = (0, 0);
        loop {
            let next = match (specific.get(i), any.get(j)) {
                (Some(&a), Some(&b)) if a < b => {
                    i += 1;
                    a
                }
                (_, Some(&b)) => {
                    j += 1;
                    b
                }
                (Some(&a), None) => {
                    i += 1;
                    a
                }
                (None, None) => return None,
            };
            let route = self.routes.get(next as usize)?;
            if route.matches(from, number) {
                return Some(route);
            }
        }
    }
}
