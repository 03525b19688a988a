//! The resolver task: resolves every `host:` member of every trunk with
//! RFC 3263, re-resolves each on its own schedule, and sends a trunk's full
//! target list (members in configuration order, IP members as written, DNS
//! members expanded) whenever it changes. I/O: tokio and hickory-resolver.
//!
//! A trunk's first list is sent once each of its DNS members had one
//! resolution attempt, so the engine can stop answering 503 for it. A
//! member whose lookups fail keeps its last good targets; one that resolves
//! to nothing (NXDOMAIN, NODATA) contributes none until it resolves again.

use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;

use hickory_resolver::TokioResolver;
use hickory_resolver::config::{ConnectionConfig, NameServerConfig, ResolveHosts, ResolverConfig};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::net::{DnsError as HickoryDnsError, NetError};
use hickory_resolver::proto::rr::{RData, RecordType};
use palisade_config::{Config, Destination, Dns, DnsMember};
use palisade_sip::Transport;
use rand::SeedableRng;
use rand::rngs::StdRng;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

use crate::error::DnsError;
use crate::rfc3263::{self, Answer, Lookup, NaptrRecord, Outcome, Resolved, SrvRecord};
use crate::schedule::Refresh;

/// Bound of the reload channel into the task.
const RELOAD_CAPACITY: usize = 4;
/// Lookup attempts per query (hickory retries across the configured servers).
const ATTEMPTS: usize = 2;

/// One target of a trunk, ready for the engine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrunkTarget {
    /// Where to send.
    pub addr: SocketAddr,
    /// How.
    pub transport: Transport,
    /// Host part of the Request-URI and To (`ip:port`, or the member's name).
    pub uri_host: String,
    /// Index of the configured member it comes from.
    pub member: usize,
}

/// A trunk's complete target list, in failover order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrunkTargets {
    /// Trunk name.
    pub trunk: String,
    /// Targets in order.
    pub targets: Vec<TrunkTarget>,
}

/// Talks to a running resolver task.
#[derive(Debug, Clone)]
pub struct ResolverHandle {
    reload: mpsc::Sender<Arc<Config>>,
}

impl ResolverHandle {
    /// Hands the task a reloaded configuration (new trunks, members, `dns:`).
    /// Returns false if the task has stopped.
    pub async fn reload(&self, cfg: Arc<Config>) -> bool {
        self.reload.send(cfg).await.is_ok()
    }
}

/// hickory-resolver behind [`Lookup`].
#[derive(Debug, Clone)]
struct Hickory {
    resolver: TokioResolver,
}

fn fqdn(name: &str) -> String {
    if name.ends_with('.') {
        name.to_owned()
    } else {
        format!("{name}.")
    }
}

fn failed<T>(e: &NetError) -> Answer<T> {
    if let NetError::Dns(HickoryDnsError::NoRecordsFound(nr)) = e {
        return Answer::NoRecords(nr.negative_ttl);
    }
    Answer::Failed(e.to_string())
}

impl Hickory {
    fn build(cfg: &Dns) -> Result<Hickory, DnsError> {
        let provider = TokioRuntimeProvider::default();
        let mut builder = if cfg.servers.is_empty() {
            TokioResolver::builder(provider).map_err(|e| DnsError::SystemConfig(e.to_string()))?
        } else {
            let servers = cfg
                .servers
                .iter()
                .map(|s| {
                    let mut udp = ConnectionConfig::udp();
                    udp.port = s.port();
                    let mut tcp = ConnectionConfig::tcp();
                    tcp.port = s.port();
                    NameServerConfig::new(s.ip(), true, vec![udp, tcp])
                })
                .collect();
            TokioResolver::builder_with_config(ResolverConfig::from_name_servers(servers), provider)
        };
        let opts = builder.options_mut();
        opts.timeout = cfg.timeout;
        opts.attempts = ATTEMPTS;
        // Our schedule is the cache: every refresh must reach the server.
        opts.cache_size = 0;
        opts.use_hosts_file = if cfg.servers.is_empty() {
            ResolveHosts::Auto
        } else {
            ResolveHosts::Never
        };
        let resolver = builder
            .build()
            .map_err(|e| DnsError::Build(e.to_string()))?;
        Ok(Hickory { resolver })
    }

    async fn query<T>(
        resolver: TokioResolver,
        name: String,
        kind: RecordType,
        pick: impl Fn(&RData) -> Option<T>,
    ) -> Answer<T> {
        match resolver.lookup(fqdn(&name).as_str(), kind).await {
            Ok(lookup) => {
                let mut ttl: Option<u32> = None;
                let mut out = Vec::new();
                for r in lookup.answers() {
                    if let Some(v) = pick(&r.data) {
                        ttl = Some(ttl.map_or(r.ttl, |t| t.min(r.ttl)));
                        out.push(v);
                    }
                }
                match ttl {
                    Some(ttl) => Answer::Records(out, ttl),
                    None => Answer::NoRecords(None),
                }
            }
            Err(e) => failed(&e),
        }
    }
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn name_text(n: &hickory_resolver::proto::rr::Name) -> String {
    n.to_ascii().trim_end_matches('.').to_ascii_lowercase()
}

impl Lookup for Hickory {
    fn naptr(&self, name: &str) -> impl Future<Output = Answer<NaptrRecord>> + Send {
        Self::query(
            self.resolver.clone(),
            name.to_owned(),
            RecordType::NAPTR,
            |d| match d {
                RData::NAPTR(n) => Some(NaptrRecord {
                    order: n.order,
                    preference: n.preference,
                    flags: text(&n.flags),
                    services: text(&n.services),
                    replacement: name_text(&n.replacement),
                }),
                _ => None,
            },
        )
    }

    fn srv(&self, name: &str) -> impl Future<Output = Answer<SrvRecord>> + Send {
        Self::query(
            self.resolver.clone(),
            name.to_owned(),
            RecordType::SRV,
            |d| match d {
                RData::SRV(s) => Some(SrvRecord {
                    priority: s.priority,
                    weight: s.weight,
                    port: s.port,
                    target: if s.target.is_root() {
                        ".".to_owned()
                    } else {
                        name_text(&s.target)
                    },
                }),
                _ => None,
            },
        )
    }

    fn ip(&self, name: &str, v6: bool) -> impl Future<Output = Answer<IpAddr>> + Send {
        let kind = if v6 { RecordType::AAAA } else { RecordType::A };
        Self::query(self.resolver.clone(), name.to_owned(), kind, |d| match d {
            RData::A(a) => Some(IpAddr::V4(a.0)),
            RData::AAAA(a) => Some(IpAddr::V6(a.0)),
            _ => None,
        })
    }
}

/// What is resolved: a member as written, for a zone's transports and family.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Key {
    member: DnsMember,
    transports: Vec<Transport>,
    v6: bool,
}

#[derive(Debug, Default)]
struct Entry {
    refresh: Refresh,
    /// The last usable answer; `None` before any, or after failures only.
    targets: Option<Vec<Resolved>>,
    attempted: bool,
}

struct Task {
    cfg: Arc<Config>,
    lookup: Hickory,
    rng: StdRng,
    entries: HashMap<Key, Entry>,
    /// What was last sent per trunk.
    sent: HashMap<String, Vec<TrunkTarget>>,
    out: mpsc::Sender<TrunkTargets>,
    reload: mpsc::Receiver<Arc<Config>>,
}

impl std::fmt::Debug for Task {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Task")
            .field("entries", &self.entries.len())
            .finish_non_exhaustive()
    }
}

fn keys(cfg: &Config) -> Vec<Key> {
    let mut out = Vec::new();
    for t in cfg.trunks() {
        let Some(zone) = cfg.zone(t.zone) else {
            continue;
        };
        for d in &t.destinations {
            if let Destination::Dns(m) = d {
                out.push(Key {
                    member: m.clone(),
                    transports: zone
                        .transports
                        .iter()
                        .copied()
                        .filter(|t| matches!(t, Transport::Udp | Transport::Tcp))
                        .collect(),
                    v6: zone.sip_address.is_ipv6(),
                });
            }
        }
    }
    out
}

/// Starts the resolver task for `cfg` (it idles while no trunk has DNS
/// members). Trunk lists go to `out`; the handle takes reloads. The task
/// ends when `out` or the handle is dropped.
pub fn spawn(
    cfg: Arc<Config>,
    seed: [u8; 32],
    out: mpsc::Sender<TrunkTargets>,
) -> Result<(ResolverHandle, JoinHandle<()>), DnsError> {
    let lookup = Hickory::build(cfg.dns())?;
    let (reload_tx, reload_rx) = mpsc::channel(RELOAD_CAPACITY);
    let mut task = Task {
        cfg,
        lookup,
        rng: StdRng::from_seed(seed),
        entries: HashMap::new(),
        sent: HashMap::new(),
        out,
        reload: reload_rx,
    };
    task.sync_entries();
    let handle = tokio::spawn(task.run());
    Ok((ResolverHandle { reload: reload_tx }, handle))
}

#[allow(clippy::disallowed_methods)] // the resolver task is I/O: it reads the clock
fn now() -> Instant {
    Instant::now()
}

impl Task {
    /// Keeps the entries of members still configured, adds new ones.
    fn sync_entries(&mut self) {
        let wanted = keys(&self.cfg);
        self.entries.retain(|k, _| wanted.contains(k));
        for k in wanted {
            self.entries.entry(k).or_default();
        }
    }

    async fn run(mut self) {
        loop {
            self.resolve_due().await;
            if !self.send_changes().await {
                debug!("DNS resolver: the engine is gone; stopping");
                return;
            }
            let next = self.entries.values().filter_map(|e| e.refresh.next).min();
            let sleep = async {
                match next {
                    Some(t) => tokio::time::sleep_until(tokio::time::Instant::from_std(t)).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                () = sleep => {}
                cfg = self.reload.recv() => match cfg {
                    Some(cfg) => self.apply_reload(cfg),
                    None => return,
                },
            }
        }
    }

    fn apply_reload(&mut self, cfg: Arc<Config>) {
        if cfg.dns() != self.cfg.dns() {
            match Hickory::build(cfg.dns()) {
                Ok(l) => {
                    self.lookup = l;
                    // New servers or bounds: resolve everything again.
                    self.entries.clear();
                }
                Err(e) => warn!(error = %e, "DNS settings not applied; keeping the old resolver"),
            }
        }
        self.cfg = cfg;
        self.sync_entries();
        // The engine keeps lists only for trunks whose members did not change.
        self.sent.clear();
    }

    async fn resolve_due(&mut self) {
        let t = now();
        let due: Vec<Key> = self
            .entries
            .iter()
            .filter(|(_, e)| e.refresh.due(t))
            .map(|(k, _)| k.clone())
            .collect();
        for key in due {
            let outcome = rfc3263::resolve(
                &self.lookup,
                &key.member,
                &key.transports,
                key.v6,
                &mut self.rng,
            )
            .await;
            let done = now();
            let Some(entry) = self.entries.get_mut(&key) else {
                continue;
            };
            entry.refresh.record(done, &outcome, self.cfg.dns());
            entry.attempted = true;
            let host = key.member.uri_host();
            match outcome {
                Outcome::Found { targets, ttl } => {
                    debug!(host = %host, targets = targets.len(), ttl, "DNS resolved");
                    entry.targets = Some(targets);
                }
                Outcome::Negative { ttl } => {
                    warn!(host = %host, negative_ttl = ?ttl,
                        "DNS: no usable NAPTR/SRV/A records; the member has no targets");
                    entry.targets = Some(Vec::new());
                }
                Outcome::Failed(e) => {
                    warn!(host = %host, error = %e, stale = entry.targets.is_some(),
                        "DNS lookup failed; keeping the last targets and retrying");
                }
            }
        }
    }

    /// The list of `trunk` if every DNS member had an attempt.
    fn trunk_list(&self, trunk: &palisade_config::Trunk) -> Option<Vec<TrunkTarget>> {
        let zone = self.cfg.zone(trunk.zone)?;
        let mut out = Vec::new();
        for (i, d) in trunk.destinations.iter().enumerate() {
            match d {
                Destination::Ip(m) => out.push(TrunkTarget {
                    addr: m.socket_addr(),
                    transport: m.transport,
                    uri_host: match m.address {
                        IpAddr::V4(a) => format!("{a}:{}", m.port),
                        IpAddr::V6(a) => format!("[{a}]:{}", m.port),
                    },
                    member: i,
                }),
                Destination::Dns(dm) => {
                    let key = Key {
                        member: dm.clone(),
                        transports: zone
                            .transports
                            .iter()
                            .copied()
                            .filter(|t| matches!(t, Transport::Udp | Transport::Tcp))
                            .collect(),
                        v6: zone.sip_address.is_ipv6(),
                    };
                    let entry = self.entries.get(&key)?;
                    if !entry.attempted {
                        return None;
                    }
                    for r in entry.targets.iter().flatten() {
                        out.push(TrunkTarget {
                            addr: r.addr,
                            transport: r.transport,
                            uri_host: dm.uri_host(),
                            member: i,
                        });
                    }
                }
            }
        }
        Some(out)
    }

    /// Sends the lists that changed; false when the receiver is gone.
    async fn send_changes(&mut self) -> bool {
        let cfg = Arc::clone(&self.cfg);
        for trunk in cfg.trunks().iter().filter(|t| t.has_dns_members()) {
            let Some(list) = self.trunk_list(trunk) else {
                continue;
            };
            if self.sent.get(&trunk.name) == Some(&list) {
                continue;
            }
            let shown: Vec<String> = list
                .iter()
                .map(|t| format!("{}/{}", t.addr, t.transport))
                .collect();
            info!(trunk = %trunk.name, targets = %shown.join(","), "trunk targets from DNS");
            self.sent.insert(trunk.name.clone(), list.clone());
            let update = TrunkTargets {
                trunk: trunk.name.clone(),
                targets: list,
            };
            if self.out.send(update).await.is_err() {
                return false;
            }
        }
        true
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    //! The AAAA path end to end through hickory: a DNS server in the test
    //! (UDP on 127.0.0.1, an ephemeral port) answers from a table, and the
    //! resolver task resolves a `host:` member of an IPv6 zone.

    use super::*;
    use hickory_resolver::proto::op::{Message, MessageType, ResponseCode};
    use hickory_resolver::proto::rr::rdata::{A, AAAA};
    use hickory_resolver::proto::rr::{Name, Record};
    use std::net::{Ipv4Addr, Ipv6Addr};
    use std::sync::Mutex;
    use std::time::Duration;

    /// Answers A and AAAA for `names` (NXDOMAIN otherwise) and logs every
    /// question as `TYPE name`. Runs until the test's runtime ends.
    async fn dns_server(
        v4: Vec<(&'static str, Ipv4Addr)>,
        v6: Vec<(&'static str, Ipv6Addr)>,
    ) -> (SocketAddr, Arc<Mutex<Vec<String>>>) {
        let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = sock.local_addr().unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        let seen = Arc::clone(&log);
        tokio::spawn(async move {
            let mut buf = vec![0u8; 1500];
            loop {
                let Ok((n, from)) = sock.recv_from(&mut buf).await else {
                    return;
                };
                let Ok(q) = Message::from_vec(&buf[..n]) else {
                    continue;
                };
                let Some(query) = q.queries.first().cloned() else {
                    continue;
                };
                let name = query.name().to_ascii().trim_end_matches('.').to_owned();
                let kind = query.query_type();
                seen.lock().unwrap().push(format!("{kind} {name}"));
                let mut r = Message::response(q.metadata.id, q.metadata.op_code);
                r.metadata.message_type = MessageType::Response;
                r.metadata.recursion_desired = q.metadata.recursion_desired;
                r.metadata.recursion_available = true;
                r.metadata.authoritative = true;
                r.add_query(query.clone());
                let owner = Name::from_ascii(format!("{name}.")).unwrap();
                let known =
                    v4.iter().any(|(n, _)| *n == name) || v6.iter().any(|(n, _)| *n == name);
                match kind {
                    RecordType::A => {
                        for (_, ip) in v4.iter().filter(|(n, _)| *n == name) {
                            r.add_answer(Record::from_rdata(owner.clone(), 60, RData::A(A(*ip))));
                        }
                    }
                    RecordType::AAAA => {
                        for (_, ip) in v6.iter().filter(|(n, _)| *n == name) {
                            r.add_answer(Record::from_rdata(
                                owner.clone(),
                                45,
                                RData::AAAA(AAAA(*ip)),
                            ));
                        }
                    }
                    _ => {}
                }
                if !known {
                    r.metadata.response_code = ResponseCode::NXDomain;
                }
                let _ = sock.send_to(&r.to_vec().unwrap(), from).await;
            }
        });
        (addr, log)
    }

    fn dns_cfg(server: SocketAddr) -> Dns {
        let yaml = format!(
            "zones:\n  - name: z\n    sip_address: 127.0.0.2\ntrunks:\n  - name: t\n    zone: z\n    members: [{{address: 127.0.0.20}}]\nroutes:\n  - name: r\n    to_trunk: t\ndns: {{servers: [\"{server}\"], timeout_ms: 500}}\n"
        );
        palisade_config::load_str(&yaml, "t.yaml")
            .unwrap()
            .dns()
            .clone()
    }

    #[test]
    fn aaaa_lookups_through_hickory() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let (server, log) = dns_server(
                vec![("dual.test", Ipv4Addr::new(127, 0, 0, 30))],
                vec![
                    ("dual.test", Ipv6Addr::LOCALHOST),
                    ("v6only.test", "::2".parse().unwrap()),
                ],
            )
            .await;
            let h = Hickory::build(&dns_cfg(server)).unwrap();
            assert_eq!(
                h.ip("dual.test", true).await,
                Answer::Records(vec![IpAddr::V6(Ipv6Addr::LOCALHOST)], 45)
            );
            assert_eq!(
                h.ip("dual.test", false).await,
                Answer::Records(vec![IpAddr::V4(Ipv4Addr::new(127, 0, 0, 30))], 60)
            );
            // A name with AAAA only: no A records (NODATA), and the AAAA.
            assert!(matches!(
                h.ip("v6only.test", false).await,
                Answer::NoRecords(_)
            ));
            assert_eq!(
                h.ip("v6only.test", true).await,
                Answer::Records(vec!["::2".parse().unwrap()], 45)
            );
            assert!(matches!(
                h.ip("nope.test", true).await,
                Answer::NoRecords(_)
            ));
            let asked = log.lock().unwrap().clone();
            assert!(asked.contains(&"AAAA dual.test".to_owned()), "{asked:?}");
            assert!(asked.contains(&"A dual.test".to_owned()), "{asked:?}");
        });
    }

    #[test]
    fn an_ipv6_zone_resolves_its_members_with_aaaa() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let (server, log) = dns_server(
                vec![("carrier6.test", Ipv4Addr::new(127, 0, 0, 31))],
                vec![("carrier6.test", Ipv6Addr::LOCALHOST)],
            )
            .await;
            let yaml = format!(
                "zones:\n  - name: v6\n    sip_address: \"::1\"\ntrunks:\n  - name: carrier\n    zone: v6\n    members:\n      - host: carrier6.test\n        port: 5080\nroutes:\n  - name: r\n    to_trunk: carrier\ndns: {{servers: [\"{server}\"], timeout_ms: 500}}\n"
            );
            let cfg = Arc::new(palisade_config::load_str(&yaml, "t.yaml").unwrap());
            let (tx, mut rx) = mpsc::channel(4);
            let (_handle, task) = spawn(cfg, [1; 32], tx).unwrap();
            let list = tokio::time::timeout(Duration::from_secs(5), rx.recv())
                .await
                .unwrap()
                .unwrap();
            assert_eq!(list.trunk, "carrier");
            assert_eq!(
                list.targets,
                [TrunkTarget {
                    addr: "[::1]:5080".parse().unwrap(),
                    transport: Transport::Udp,
                    uri_host: "carrier6.test:5080".into(),
                    member: 0,
                }]
            );
            // Only AAAA was asked: the zone is IPv6, the port explicit.
            assert_eq!(log.lock().unwrap().clone(), ["AAAA carrier6.test"]);
            task.abort();
        });
    }
}
