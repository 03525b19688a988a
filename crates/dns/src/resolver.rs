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
