//! RFC 3263 section 4 for a trunk member given by DNS name: which records
//! to ask for, in which order, and how the answers become an ordered list
//! of concrete targets. The lookups themselves are behind [`Lookup`], so
//! this module does no I/O and is tested with in-memory answers; the
//! binary's resolver task implements it with hickory-resolver.
//!
//! - Explicit port: A (or AAAA for an IPv6 zone) only; UDP unless a
//!   transport is given (4.1, 4.2).
//! - Explicit transport, no port: SRV `_sip._udp` or `_sip._tcp`; without
//!   SRV records, A/AAAA on port 5060.
//! - Neither: NAPTR; records with flag `S` and service `SIP+D2U` (UDP) or
//!   `SIP+D2T` (TCP) that the zone listens on, by order then preference,
//!   each followed by its SRV replacement. `SIPS+D2T` (TLS) is skipped:
//!   Palisade has no TLS yet. Without usable NAPTR records: SRV for UDP,
//!   then TCP (the zone's transports); without SRV: A/AAAA, UDP, 5060.
//! - SRV records are ordered by priority, and within a priority by the
//!   weighted random selection of RFC 2782 with an injected RNG. A target
//!   of `.` means "no service here" and is dropped.
//! - Every address of every SRV target is one target, in that order.

use std::future::Future;
use std::net::{IpAddr, SocketAddr};

use palisade_config::DnsMember;
use palisade_sip::Transport;
use rand::RngExt;

/// The SIP default port (RFC 3261 19.1.2).
pub const SIP_PORT: u16 = 5060;
/// Most SRV or address records used from one answer (a hostile zone must
/// not make a trunk walk thousands of targets).
pub const MAX_RECORDS: usize = 16;

/// One SRV record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SrvRecord {
    /// Lower is tried first.
    pub priority: u16,
    /// Relative share within a priority.
    pub weight: u16,
    /// Port of the service on `target`.
    pub port: u16,
    /// Host name of the target (no trailing dot), `.` for "no service".
    pub target: String,
}

/// One NAPTR record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NaptrRecord {
    /// Lower is processed first.
    pub order: u16,
    /// Lower is preferred among equal `order`.
    pub preference: u16,
    /// Flags, e.g. `S` (the replacement is an SRV name).
    pub flags: String,
    /// Service, e.g. `SIP+D2U`.
    pub services: String,
    /// The next name to look up.
    pub replacement: String,
}

/// The answer to one query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer<T> {
    /// Records, with the smallest TTL among them (seconds).
    Records(Vec<T>, u32),
    /// The name does not exist or has no records of that type (NXDOMAIN or
    /// NODATA), with the negative TTL from the SOA if there was one.
    NoRecords(Option<u32>),
    /// The lookup failed (timeout, SERVFAIL, refused, network).
    Failed(String),
}

/// The queries RFC 3263 needs.
pub trait Lookup {
    /// NAPTR records of `name`.
    fn naptr(&self, name: &str) -> impl Future<Output = Answer<NaptrRecord>> + Send;
    /// SRV records of `name`.
    fn srv(&self, name: &str) -> impl Future<Output = Answer<SrvRecord>> + Send;
    /// A records of `name` (AAAA when `v6`).
    fn ip(&self, name: &str, v6: bool) -> impl Future<Output = Answer<IpAddr>> + Send;
}

/// One concrete place to send requests for the member.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Resolved {
    /// Address and port.
    pub addr: SocketAddr,
    /// Transport.
    pub transport: Transport,
}

/// How a resolution ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Targets found; `ttl` is the smallest TTL of every record used.
    Found {
        /// Targets in order.
        targets: Vec<Resolved>,
        /// Seconds the answer may be cached.
        ttl: u32,
    },
    /// Every query said the names have no usable records; `ttl` from the SOA
    /// when the answers had one.
    Negative {
        /// Negative TTL in seconds, if the answer carried an SOA.
        ttl: Option<u32>,
    },
    /// A query failed: the previous targets (if any) stay in use.
    Failed(String),
}

/// Tracks the smallest TTL and the first failure of a resolution.
#[derive(Debug, Default)]
struct Acc {
    ttl: Option<u32>,
    negative_ttl: Option<u32>,
    failure: Option<String>,
}

impl Acc {
    fn take<T>(&mut self, a: Answer<T>) -> Vec<T> {
        match a {
            Answer::Records(r, ttl) => {
                self.ttl = Some(self.ttl.map_or(ttl, |t| t.min(ttl)));
                r
            }
            Answer::NoRecords(ttl) => {
                if let Some(t) = ttl {
                    self.negative_ttl = Some(self.negative_ttl.map_or(t, |n| n.min(t)));
                }
                Vec::new()
            }
            Answer::Failed(e) => {
                self.failure.get_or_insert(e);
                Vec::new()
            }
        }
    }

    fn finish(self, targets: Vec<Resolved>) -> Outcome {
        if !targets.is_empty() {
            return Outcome::Found {
                targets,
                ttl: self.ttl.unwrap_or(0),
            };
        }
        match self.failure {
            Some(e) => Outcome::Failed(e),
            None => Outcome::Negative {
                ttl: self.negative_ttl,
            },
        }
    }
}

fn srv_name(transport: Transport, host: &str) -> String {
    match transport {
        Transport::Udp => format!("_sip._udp.{host}"),
        Transport::Tcp => format!("_sip._tcp.{host}"),
        Transport::Tls => format!("_sips._tcp.{host}"),
    }
}

/// The transport a NAPTR service names, if Palisade can use it.
fn naptr_transport(services: &str) -> Option<Transport> {
    match services.to_ascii_uppercase().as_str() {
        "SIP+D2U" => Some(Transport::Udp),
        "SIP+D2T" => Some(Transport::Tcp),
        _ => None,
    }
}

/// The usable NAPTR records as (transport, SRV name), by order then
/// preference (RFC 3403 section 4.1), limited to `allowed` transports.
pub fn naptr_services(
    mut records: Vec<NaptrRecord>,
    allowed: &[Transport],
) -> Vec<(Transport, String)> {
    records.sort_by_key(|r| (r.order, r.preference));
    records
        .into_iter()
        .filter(|r| r.flags.eq_ignore_ascii_case("s"))
        .filter_map(|r| {
            let t = naptr_transport(&r.services)?;
            let name = r.replacement.trim_end_matches('.').to_ascii_lowercase();
            (allowed.contains(&t) && !name.is_empty()).then_some((t, name))
        })
        .collect()
}

/// RFC 2782 ordering: by priority ascending; within a priority, repeatedly
/// pick at random with probability proportional to weight (weight-0
/// records first in the running sum, so they are picked only rarely but
/// can be). Records for target `.` are dropped.
pub fn order_srv<R: RngExt + ?Sized>(records: Vec<SrvRecord>, rng: &mut R) -> Vec<SrvRecord> {
    let mut records: Vec<SrvRecord> = records
        .into_iter()
        .filter(|r| r.target != "." && !r.target.is_empty())
        .collect();
    records.sort_by_key(|r| (r.priority, r.weight != 0));
    let mut out = Vec::with_capacity(records.len());
    while let Some(first) = records.first() {
        let prio = first.priority;
        let end = records
            .iter()
            .position(|r| r.priority != prio)
            .unwrap_or(records.len());
        let mut group: Vec<SrvRecord> = records.drain(..end).collect();
        while !group.is_empty() {
            let total: u32 = group.iter().map(|r| u32::from(r.weight)).sum();
            let pick = rng.random_range(0..=total);
            let mut running = 0u32;
            let mut chosen = group.len() - 1;
            for (i, r) in group.iter().enumerate() {
                running += u32::from(r.weight);
                if running >= pick {
                    chosen = i;
                    break;
                }
            }
            out.push(group.remove(chosen));
        }
    }
    out
}

/// Resolves `member` for a zone listening on `allowed` transports, whose
/// address family is IPv6 when `v6`.
pub async fn resolve<L: Lookup + Sync, R: RngExt + ?Sized + Send>(
    lookup: &L,
    member: &DnsMember,
    allowed: &[Transport],
    v6: bool,
    rng: &mut R,
) -> Outcome {
    let mut acc = Acc::default();
    let host = member.host.as_str();
    let targets = match (member.port, member.transport) {
        (Some(port), t) => {
            let t = t.unwrap_or(Transport::Udp);
            addresses(lookup, &mut acc, host, port, t, v6).await
        }
        (None, Some(t)) => {
            let srv = acc.take(lookup.srv(&srv_name(t, host)).await);
            if srv.is_empty() && acc.failure.is_none() {
                addresses(lookup, &mut acc, host, SIP_PORT, t, v6).await
            } else {
                expand_srv(lookup, &mut acc, srv, t, v6, rng).await
            }
        }
        (None, None) => {
            let naptr = acc.take(lookup.naptr(host).await);
            let mut services = naptr_services(naptr, allowed);
            if services.is_empty() {
                // RFC 3263 4.1: no NAPTR, so SRV for each supported transport.
                services = [Transport::Udp, Transport::Tcp]
                    .into_iter()
                    .filter(|t| allowed.contains(t))
                    .map(|t| (t, srv_name(t, host)))
                    .collect();
            }
            let mut out = Vec::new();
            for (t, name) in services {
                let srv = acc.take(lookup.srv(&name).await);
                out.extend(expand_srv(lookup, &mut acc, srv, t, v6, rng).await);
            }
            if out.is_empty() && acc.failure.is_none() {
                let t = if allowed.contains(&Transport::Udp) {
                    Transport::Udp
                } else {
                    Transport::Tcp
                };
                out = addresses(lookup, &mut acc, host, SIP_PORT, t, v6).await;
            }
            out
        }
    };
    acc.finish(targets)
}

async fn expand_srv<L: Lookup + Sync, R: RngExt + ?Sized + Send>(
    lookup: &L,
    acc: &mut Acc,
    mut srv: Vec<SrvRecord>,
    t: Transport,
    v6: bool,
    rng: &mut R,
) -> Vec<Resolved> {
    srv.truncate(MAX_RECORDS);
    let mut out = Vec::new();
    for r in order_srv(srv, rng) {
        let target = r.target.trim_end_matches('.').to_ascii_lowercase();
        out.extend(addresses(lookup, acc, &target, r.port, t, v6).await);
    }
    out
}

async fn addresses<L: Lookup + Sync>(
    lookup: &L,
    acc: &mut Acc,
    host: &str,
    port: u16,
    transport: Transport,
    v6: bool,
) -> Vec<Resolved> {
    // An SRV target may be written as an address literal; take it as is.
    if let Ok(ip) = host.parse::<IpAddr>() {
        return if ip.is_ipv6() == v6 {
            vec![Resolved {
                addr: SocketAddr::new(ip, port),
                transport,
            }]
        } else {
            Vec::new()
        };
    }
    let mut ips = acc.take(lookup.ip(host, v6).await);
    ips.truncate(MAX_RECORDS);
    ips.into_iter()
        .filter(|ip| ip.is_ipv6() == v6 && !ip.is_unspecified() && !ip.is_multicast())
        .map(|ip| Resolved {
            addr: SocketAddr::new(ip, port),
            transport,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;
    use std::collections::HashMap;
    use std::future::ready;

    /// Answers from a table; anything missing is NXDOMAIN with no SOA.
    #[derive(Default)]
    struct Zone {
        naptr: HashMap<String, Answer<NaptrRecord>>,
        srv: HashMap<String, Answer<SrvRecord>>,
        a: HashMap<String, Answer<IpAddr>>,
        asked: std::sync::Mutex<Vec<String>>,
    }

    impl Zone {
        fn log(&self, q: String) {
            self.asked.lock().unwrap().push(q);
        }
        fn asked(&self) -> Vec<String> {
            self.asked.lock().unwrap().clone()
        }
    }

    impl Lookup for Zone {
        fn naptr(&self, name: &str) -> impl Future<Output = Answer<NaptrRecord>> + Send {
            self.log(format!("NAPTR {name}"));
            ready(
                self.naptr
                    .get(name)
                    .cloned()
                    .unwrap_or(Answer::NoRecords(None)),
            )
        }
        fn srv(&self, name: &str) -> impl Future<Output = Answer<SrvRecord>> + Send {
            self.log(format!("SRV {name}"));
            ready(
                self.srv
                    .get(name)
                    .cloned()
                    .unwrap_or(Answer::NoRecords(None)),
            )
        }
        fn ip(&self, name: &str, v6: bool) -> impl Future<Output = Answer<IpAddr>> + Send {
            self.log(format!("{} {name}", if v6 { "AAAA" } else { "A" }));
            ready(self.a.get(name).cloned().unwrap_or(Answer::NoRecords(None)))
        }
    }

    fn block_on<F: Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(f)
    }

    fn srv(priority: u16, weight: u16, port: u16, target: &str) -> SrvRecord {
        SrvRecord {
            priority,
            weight,
            port,
            target: target.into(),
        }
    }

    fn member(host: &str, port: Option<u16>, transport: Option<Transport>) -> DnsMember {
        let mut yaml = format!("      - host: {host}\n");
        if let Some(p) = port {
            yaml.push_str(&format!("        port: {p}\n"));
        }
        if let Some(t) = transport {
            yaml.push_str(&format!("        transport: {t}\n"));
        }
        let c = palisade_config::load_str(
            &format!("zones:\n  - name: z\n    sip_address: 127.0.0.2\ntrunks:\n  - name: t\n    zone: z\n    members:\n{yaml}routes:\n  - name: r\n    to_trunk: t\n"),
            "t.yaml",
        )
        .unwrap();
        match &c.trunks()[0].destinations[0] {
            palisade_config::Destination::Dns(d) => d.clone(),
            palisade_config::Destination::Ip(_) => unreachable!(),
        }
    }

    /// The e2e zone: NAPTR → `_sip._udp` SRV with two priorities → A.
    fn carrier() -> Zone {
        let mut z = Zone::default();
        z.naptr.insert(
            "carrier.test".into(),
            Answer::Records(
                vec![
                    NaptrRecord {
                        order: 10,
                        preference: 50,
                        flags: "s".into(),
                        services: "SIP+D2U".into(),
                        replacement: "_sip._udp.carrier.test.".into(),
                    },
                    NaptrRecord {
                        order: 5,
                        preference: 50,
                        flags: "S".into(),
                        services: "SIPS+D2T".into(),
                        replacement: "_sips._tcp.carrier.test.".into(),
                    },
                ],
                300,
            ),
        );
        z.srv.insert(
            "_sip._udp.carrier.test".into(),
            Answer::Records(
                vec![
                    srv(20, 0, 5080, "secondary.carrier.test."),
                    srv(10, 0, 5080, "primary.carrier.test."),
                ],
                60,
            ),
        );
        z.a.insert(
            "primary.carrier.test".into(),
            Answer::Records(vec!["127.0.0.20".parse().unwrap()], 30),
        );
        z.a.insert(
            "secondary.carrier.test".into(),
            Answer::Records(
                vec!["127.0.0.21".parse().unwrap(), "127.0.0.22".parse().unwrap()],
                120,
            ),
        );
        z
    }

    fn addrs(o: &Outcome) -> Vec<String> {
        match o {
            Outcome::Found { targets, .. } => targets
                .iter()
                .map(|t| format!("{}/{}", t.addr, t.transport))
                .collect(),
            other => panic!("not found: {other:?}"),
        }
    }

    const UDP_TCP: &[Transport] = &[Transport::Udp, Transport::Tcp];

    #[test]
    fn naptr_then_srv_by_priority_then_every_address() {
        let z = carrier();
        let mut rng = StdRng::seed_from_u64(1);
        let o = block_on(resolve(
            &z,
            &member("carrier.test", None, None),
            UDP_TCP,
            false,
            &mut rng,
        ));
        assert_eq!(
            addrs(&o),
            [
                "127.0.0.20:5080/udp",
                "127.0.0.21:5080/udp",
                "127.0.0.22:5080/udp"
            ]
        );
        // The smallest TTL of every record used.
        assert!(matches!(o, Outcome::Found { ttl: 30, .. }));
        // SIPS (TLS) was skipped without a query.
        assert_eq!(
            z.asked(),
            [
                "NAPTR carrier.test",
                "SRV _sip._udp.carrier.test",
                "A primary.carrier.test",
                "A secondary.carrier.test"
            ]
        );
    }

    #[test]
    fn without_naptr_srv_for_each_zone_transport_then_a() {
        let mut z = carrier();
        z.naptr.clear();
        z.srv.insert(
            "_sip._tcp.carrier.test".into(),
            Answer::Records(vec![srv(1, 0, 5090, "primary.carrier.test")], 60),
        );
        let mut rng = StdRng::seed_from_u64(1);
        let o = block_on(resolve(
            &z,
            &member("carrier.test", None, None),
            UDP_TCP,
            false,
            &mut rng,
        ));
        assert_eq!(
            addrs(&o),
            [
                "127.0.0.20:5080/udp",
                "127.0.0.21:5080/udp",
                "127.0.0.22:5080/udp",
                "127.0.0.20:5090/tcp"
            ]
        );
        // A UDP-only zone never asks for TCP.
        let z2 = carrier();
        let mut z2n = z2;
        z2n.naptr.clear();
        let o = block_on(resolve(
            &z2n,
            &member("carrier.test", None, None),
            &[Transport::Udp],
            false,
            &mut rng,
        ));
        assert_eq!(addrs(&o).len(), 3);
        assert!(!z2n.asked().iter().any(|q| q.contains("_tcp")));
        // Neither NAPTR nor SRV: the name's own address on 5060 over UDP.
        let mut z3 = Zone::default();
        z3.a.insert(
            "pbx.example".into(),
            Answer::Records(vec!["127.0.0.30".parse().unwrap()], 10),
        );
        let o = block_on(resolve(
            &z3,
            &member("pbx.example", None, None),
            UDP_TCP,
            false,
            &mut rng,
        ));
        assert_eq!(addrs(&o), ["127.0.0.30:5060/udp"]);
    }

    #[test]
    fn explicit_port_is_address_only_and_explicit_transport_is_that_srv() {
        let z = carrier();
        let mut rng = StdRng::seed_from_u64(1);
        let o = block_on(resolve(
            &z,
            &member("primary.carrier.test", Some(5070), None),
            UDP_TCP,
            false,
            &mut rng,
        ));
        assert_eq!(addrs(&o), ["127.0.0.20:5070/udp"]);
        assert_eq!(z.asked(), ["A primary.carrier.test"]);
        let o = block_on(resolve(
            &z,
            &member("carrier.test", None, Some(Transport::Udp)),
            UDP_TCP,
            false,
            &mut rng,
        ));
        assert_eq!(addrs(&o).len(), 3);
        assert!(!z.asked().iter().any(|q| q.starts_with("NAPTR")));
        // Explicit transport without SRV: the address on 5060.
        let o = block_on(resolve(
            &z,
            &member("primary.carrier.test", None, Some(Transport::Tcp)),
            UDP_TCP,
            false,
            &mut rng,
        ));
        assert_eq!(addrs(&o), ["127.0.0.20:5060/tcp"]);
        // IPv6 zone: AAAA.
        let mut z6 = Zone::default();
        z6.a.insert(
            "v6.example".into(),
            Answer::Records(vec!["::1".parse().unwrap()], 10),
        );
        let o = block_on(resolve(
            &z6,
            &member("v6.example", Some(5060), None),
            UDP_TCP,
            true,
            &mut rng,
        ));
        assert_eq!(addrs(&o), ["[::1]:5060/udp"]);
        assert_eq!(z6.asked(), ["AAAA v6.example"]);
    }

    #[test]
    fn negative_and_failed_answers() {
        let mut rng = StdRng::seed_from_u64(1);
        let mut z = Zone::default();
        z.naptr
            .insert("gone.example".into(), Answer::NoRecords(Some(600)));
        z.srv.insert(
            "_sip._udp.gone.example".into(),
            Answer::NoRecords(Some(120)),
        );
        let o = block_on(resolve(
            &z,
            &member("gone.example", None, None),
            UDP_TCP,
            false,
            &mut rng,
        ));
        assert_eq!(o, Outcome::Negative { ttl: Some(120) });
        let mut z = carrier();
        z.a.insert(
            "primary.carrier.test".into(),
            Answer::Failed("timed out".into()),
        );
        // Partial answers still give targets.
        let o = block_on(resolve(
            &z,
            &member("carrier.test", None, None),
            UDP_TCP,
            false,
            &mut rng,
        ));
        assert_eq!(addrs(&o).len(), 2);
        let mut z = Zone::default();
        z.naptr
            .insert("x.example".into(), Answer::Failed("SERVFAIL".into()));
        let o = block_on(resolve(
            &z,
            &member("x.example", None, None),
            UDP_TCP,
            false,
            &mut rng,
        ));
        assert_eq!(o, Outcome::Failed("SERVFAIL".into()));
    }

    #[test]
    fn srv_priorities_first_and_dot_targets_dropped() {
        let mut rng = StdRng::seed_from_u64(7);
        let out = order_srv(
            vec![
                srv(20, 5, 1, "c"),
                srv(10, 0, 1, "a"),
                srv(30, 0, 1, "."),
                srv(10, 0, 1, "b"),
                srv(20, 5, 1, "d"),
            ],
            &mut rng,
        );
        let names: Vec<&str> = out.iter().map(|r| r.target.as_str()).collect();
        assert_eq!(names.len(), 4);
        let mut head = names[..2].to_vec();
        head.sort_unstable();
        assert_eq!(head, ["a", "b"]);
        let mut tail = names[2..].to_vec();
        tail.sort_unstable();
        assert_eq!(tail, ["c", "d"]);
    }

    /// With a seeded RNG the selection is reproducible, and over many draws
    /// the first pick follows the weights (60/30/10 here).
    #[test]
    fn srv_weights_are_respected_with_a_seeded_rng() {
        let group = vec![srv(1, 60, 1, "a"), srv(1, 30, 1, "b"), srv(1, 10, 1, "c")];
        let mut r1 = StdRng::seed_from_u64(42);
        let mut r2 = StdRng::seed_from_u64(42);
        assert_eq!(
            order_srv(group.clone(), &mut r1),
            order_srv(group.clone(), &mut r2)
        );
        let mut rng = StdRng::seed_from_u64(3);
        let mut first: HashMap<String, u32> = HashMap::new();
        for _ in 0..10_000 {
            let o = order_srv(group.clone(), &mut rng);
            *first.entry(o[0].target.clone()).or_default() += 1;
        }
        let share = |n: &str| f64::from(first[n]) / 10_000.0;
        assert!((share("a") - 0.6).abs() < 0.03, "{first:?}");
        assert!((share("b") - 0.3).abs() < 0.03, "{first:?}");
        assert!((share("c") - 0.1).abs() < 0.03, "{first:?}");
        // Weight 0 among weighted records: picked, but rarely first.
        let mut zero_first = 0;
        for _ in 0..10_000 {
            let o = order_srv(vec![srv(1, 0, 1, "z"), srv(1, 100, 1, "w")], &mut rng);
            if o[0].target == "z" {
                zero_first += 1;
            }
        }
        assert!(zero_first < 200, "{zero_first}");
    }

    proptest! {
        /// Ordering keeps every usable record exactly once, priorities ascending.
        #[test]
        fn srv_order_is_a_permutation_by_priority(
            recs in proptest::collection::vec((0u16..4, 0u16..100, 0u8..20), 0..20),
            seed in any::<u64>(),
        ) {
            let input: Vec<SrvRecord> = recs
                .iter()
                .map(|&(p, w, n)| srv(p, w, 5060, &if n == 0 { ".".to_owned() } else { format!("t{n}") }))
                .collect();
            let out = order_srv(input.clone(), &mut StdRng::seed_from_u64(seed));
            let mut want: Vec<SrvRecord> = input.into_iter().filter(|r| r.target != ".").collect();
            let mut got = out.clone();
            want.sort_by(|a, b| (a.priority, a.weight, &a.target).cmp(&(b.priority, b.weight, &b.target)));
            got.sort_by(|a, b| (a.priority, a.weight, &a.target).cmp(&(b.priority, b.weight, &b.target)));
            prop_assert_eq!(want, got);
            prop_assert!(out.windows(2).all(|w| w[0].priority <= w[1].priority));
        }
    }
}
