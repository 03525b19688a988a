//! The media table: kernel forwarding of plain RTP streams.
//!
//! A stream the relay hands over is forwarded by conntrack NAT. Its two
//! directions are keyed by the latched 4-tuple (peer source, Palisade's RTP
//! port): a packet from a latched peer to Palisade's port is tracked, gets
//! the direction's `ct mark` (one per Palisade port), is DNATed to the other
//! peer and SNATed to Palisade's port on the other leg; the other
//! direction's packets match the connection's reply tuple. Everything else
//! to the media ports (RTCP, also when multiplexed; foreign sources; streams
//! not handed over) is `notrack`ed and reaches the relay's sockets as
//! before, as do the relay's own packets. The `fwd` sets count each
//! direction's packets and bytes per element.
//!
//! The table is rendered as nft text and installed with `nft -f` once at
//! start (one transaction, replacing a stale copy); the per-stream elements
//! are then added and removed over netlink ([`crate::netlink`]), and a
//! removed stream's connection is deleted from conntrack so nothing of it
//! outlives the call (a port reused later must not inherit its NAT).

use std::collections::HashMap;
use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};

use crate::netlink::{Netlink, SetOp, Value, ValueKind};
use crate::{NftError, Ports};

/// What the media table is made of.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaTableSpec {
    /// Table name (family `inet`).
    pub name: String,
    /// Palisade's media addresses and their port ranges (RTP and RTCP).
    pub local: Vec<(IpAddr, Ports)>,
    /// Streams the kernel may forward at once (each uses two elements of a
    /// `fwd` set and of each map).
    pub max_streams: u32,
    /// DSCP of what the kernel forwards (`media.dscp_rtp`, as the relay
    /// marks its own packets).
    pub dscp: u8,
}

/// The high bits of every `ct mark` Palisade sets on a media connection.
pub const MARK_TAG: u32 = 0x5000_0000;
/// Which bits of a `ct mark` are [`MARK_TAG`].
pub const MARK_MASK: u32 = 0xf000_0000;

/// The `nft -f` text that (re)creates the media table atomically.
pub fn render_media_table(spec: &MediaTableSpec) -> String {
    let t = &spec.name;
    let size = spec.max_streams.max(1).saturating_mul(2);
    let mut s = String::new();
    let _ = writeln!(
        s,
        "add table inet {t}\ndelete table inet {t}\ntable inet {t} {{"
    );
    for (v4, fam, ipk, sfx) in [
        (true, "ipv4_addr", "ip", "4"),
        (false, "ipv6_addr", "ip6", "6"),
    ] {
        let list: Vec<String> = spec
            .local
            .iter()
            .filter(|(a, _)| a.is_ipv4() == v4)
            .map(|(a, p)| format!("{a} . {}-{}", p.first, p.last))
            .collect();
        let _ = write!(
            s,
            "\tset local{sfx} {{ type {fam} . inet_service; flags interval; "
        );
        if !list.is_empty() {
            let _ = write!(s, "elements = {{ {} }} ", list.join(", "));
        }
        let _ = writeln!(s, "}}");
        let _ = writeln!(
            s,
            "\tmap mark{sfx} {{ type {fam} . inet_service : mark; size {size}; }}"
        );
        for m in ["dnat", "snat"] {
            let _ = writeln!(
                s,
                "\tmap {m}{sfx} {{ type mark : {fam} . inet_service; size {size}; }}"
            );
        }
        let _ = writeln!(
            s,
            "\tset fwd{sfx} {{ type {fam} . inet_service . {fam} . inet_service; size {size}; counter; }}"
        );
        // Per packet to a media port: what is not RTP (shorter than an RTP
        // header, not version 2: keepalives, STUN), RTCP (also multiplexed,
        // RFC 5761 packet types 200-204) and whatever is not a handed-over
        // direction go to the relay untracked, as without kernel forwarding;
        // a handed-over direction's RTP is tracked (and counted by its `fwd`
        // element) so the NAT chains see it.
        let _ = writeln!(
            s,
            "\tchain media{sfx} {{\n\t\tudp length < 20 notrack return\n\t\t@th,64,2 != 2 notrack return\n\t\t@th,72,8 200-204 notrack return\n\t\t{ipk} saddr . udp sport . {ipk} daddr . udp dport @fwd{sfx} return\n\t\tnotrack\n\t}}"
        );
    }
    let jumps = "\t\tmeta l4proto udp ip daddr . udp dport @local4 jump media4\n\
                 \t\tmeta l4proto udp ip6 daddr . udp dport @local6 jump media6\n";
    let _ = writeln!(
        s,
        "\tchain raw_pre {{\n\t\ttype filter hook prerouting priority raw; policy accept;\n{jumps}\t}}"
    );
    // Locally generated: peers on this host, and the relay's own packets
    // (never tracked, so they cannot collide with a forwarded connection).
    let _ = writeln!(
        s,
        "\tchain raw_out {{\n\t\ttype filter hook output priority raw; policy accept;\n{jumps}\
         \t\tmeta l4proto udp ip saddr . udp sport @local4 notrack\n\
         \t\tmeta l4proto udp ip6 saddr . udp sport @local6 notrack\n\t}}"
    );
    let dnat = "\t\tmeta l4proto udp ct mark set ip daddr . udp dport map @mark4\n\
                \t\tmeta l4proto udp ct mark set ip6 daddr . udp dport map @mark6\n\
                \t\tmeta l4proto udp dnat ip to ct mark map @dnat4\n\
                \t\tmeta l4proto udp dnat ip6 to ct mark map @dnat6\n";
    let snat = "\t\tmeta l4proto udp snat ip to ct mark map @snat4\n\
                \t\tmeta l4proto udp snat ip6 to ct mark map @snat6\n";
    for (chain, hook, prio, body) in [
        ("nat_pre", "prerouting", "dstnat", dnat),
        ("nat_out", "output", "-100", dnat),
        ("nat_post", "postrouting", "srcnat", snat),
        ("nat_in", "input", "100", snat),
    ] {
        let _ = writeln!(
            s,
            "\tchain {chain} {{\n\t\ttype nat hook {hook} priority {prio}; policy accept;\n{body}\t}}"
        );
    }
    // What the kernel forwards leaves the host marked like the relay's own
    // packets (a peer on this host gets it unmarked: local delivery skips
    // postrouting).
    let tag = format!("ct mark and 0x{:08x} == 0x{MARK_TAG:08x}", MARK_MASK);
    let dscp = spec.dscp & 0x3f;
    let _ = writeln!(
        s,
        "\tchain mark_post {{\n\t\ttype filter hook postrouting priority mangle; policy accept;\n\
         \t\t{tag} ip dscp set {dscp}\n\t\t{tag} ip6 dscp set {dscp}\n\t}}"
    );
    let _ = writeln!(s, "}}");
    s
}

/// One direction handed to the kernel: packets from `peer` to `local` go
/// out from `out_local` to `out_peer`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Direction {
    /// The latched source.
    pub peer: SocketAddr,
    /// Palisade's port it sends to.
    pub local: SocketAddr,
    /// Palisade's port on the other leg.
    pub out_local: SocketAddr,
    /// The other leg's peer.
    pub out_peer: SocketAddr,
}

/// A direction's kernel counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DirectionCounters {
    /// The latched source.
    pub peer: SocketAddr,
    /// Palisade's port.
    pub local: SocketAddr,
    /// Packets forwarded.
    pub packets: u64,
    /// Bytes forwarded (IP datagrams).
    pub bytes: u64,
}

/// Adds and removes forwarded streams in the media table over netlink.
#[derive(Debug)]
pub struct MediaOffload {
    table: String,
    netlink: Netlink,
    /// Media addresses, numbered for the marks.
    addresses: HashMap<IpAddr, u32>,
}

impl MediaOffload {
    /// Opens the netlink socket for table `inet <table>` (installed
    /// beforehand with [`crate::Nft::install_media`]).
    pub fn open(table: &str) -> Result<MediaOffload, NftError> {
        Ok(MediaOffload {
            table: table.to_owned(),
            netlink: Netlink::open()?,
            addresses: HashMap::new(),
        })
    }

    /// The direction's `ct mark`: the tag, the local address's number and
    /// the local port.
    fn mark(&mut self, local: SocketAddr) -> u32 {
        let next = self.addresses.len() as u32;
        let n = *self.addresses.entry(local.ip()).or_insert(next);
        MARK_TAG | ((n & 0x0fff) << 16) | u32::from(local.port())
    }

    /// Applies the additions and removals as one transaction, then deletes
    /// the conntrack entries of the removed directions. Directions must
    /// not mix address families (the relay never asks for that).
    pub fn apply(&mut self, add: &[Direction], remove: &[Direction]) -> Result<(), NftError> {
        let mut ops_v: [Vec<(Value, Option<Value>)>; 8] = Default::default();
        let mut del_v: [Vec<Value>; 8] = Default::default();
        // Index: family (0 v4, 4 v6) + set (0 mark, 1 dnat, 2 snat, 3 fwd).
        for (list, adding) in [(add, true), (remove, false)] {
            for d in list {
                let fam = if d.local.is_ipv4() { 0 } else { 4 };
                let mark = self.mark(d.local);
                let keys = [
                    port_value(d.local),
                    Value::Mark(mark),
                    Value::Mark(mark),
                    tuple_value(d.peer, d.local),
                ];
                if adding {
                    let data = [
                        Some(Value::Mark(mark)),
                        Some(port_value(d.out_peer)),
                        Some(port_value(d.out_local)),
                        None,
                    ];
                    for (i, (k, v)) in keys.into_iter().zip(data).enumerate() {
                        ops_v[fam + i].push((k, v));
                    }
                } else {
                    for (i, k) in keys.into_iter().enumerate() {
                        del_v[fam + i].push(k);
                    }
                }
            }
        }
        const SETS: [&str; 8] = [
            "mark4", "dnat4", "snat4", "fwd4", "mark6", "dnat6", "snat6", "fwd6",
        ];
        let mut ops: Vec<SetOp<'_>> = Vec::new();
        // Removals first: a stream re-added with new peers replaces itself.
        for (i, keys) in del_v.iter().enumerate() {
            if !keys.is_empty() {
                ops.push(SetOp::Delete { set: SETS[i], keys });
            }
        }
        for (i, elements) in ops_v.iter().enumerate() {
            if !elements.is_empty() {
                ops.push(SetOp::Add {
                    set: SETS[i],
                    elements,
                });
            }
        }
        if !ops.is_empty() {
            self.netlink.apply(&self.table, &ops)?;
        }
        // Every removed direction's connection goes, even if one deletion
        // fails (the first error is returned).
        let mut first_error = None;
        for d in remove {
            // Either direction's tuple finds the connection.
            if let Err(e) = self.netlink.delete_conntrack(d.peer, d.local) {
                first_error.get_or_insert(e);
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// The counters of every direction in the table.
    pub fn counters(&mut self, out: &mut Vec<DirectionCounters>) -> Result<(), NftError> {
        for (set, kind) in [("fwd4", ValueKind::V4Tuple), ("fwd6", ValueKind::V6Tuple)] {
            for (v, packets, bytes) in self.netlink.counters(&self.table, set, kind)? {
                let (peer, local) = match v {
                    Value::V4Tuple(pa, pp, la, lp) => (
                        SocketAddr::new(pa.into(), pp),
                        SocketAddr::new(la.into(), lp),
                    ),
                    Value::V6Tuple(pa, pp, la, lp) => (
                        SocketAddr::new(pa.into(), pp),
                        SocketAddr::new(la.into(), lp),
                    ),
                    _ => continue,
                };
                out.push(DirectionCounters {
                    peer,
                    local,
                    packets,
                    bytes,
                });
            }
        }
        Ok(())
    }
}

fn port_value(a: SocketAddr) -> Value {
    match a {
        SocketAddr::V4(a) => Value::V4Port(*a.ip(), a.port()),
        SocketAddr::V6(a) => Value::V6Port(*a.ip(), a.port()),
    }
}

fn tuple_value(peer: SocketAddr, local: SocketAddr) -> Value {
    match (peer, local) {
        (SocketAddr::V4(p), SocketAddr::V4(l)) => {
            Value::V4Tuple(*p.ip(), p.port(), *l.ip(), l.port())
        }
        (SocketAddr::V6(p), SocketAddr::V6(l)) => {
            Value::V6Tuple(*p.ip(), p.port(), *l.ip(), l.port())
        }
        // Mixed families never reach here (the relay keeps those streams);
        // map the v4 side into v6 so the key is merely one that never matches.
        (p, l) => {
            let v6 = |a: SocketAddr| match a.ip() {
                IpAddr::V4(x) => x.to_ipv6_mapped(),
                IpAddr::V6(x) => x,
            };
            Value::V6Tuple(v6(p), p.port(), v6(l), l.port())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn media_table_has_both_families_and_every_hook() {
        let t = render_media_table(&MediaTableSpec {
            name: "palisade_media".into(),
            local: vec![
                (
                    "127.0.0.1".parse().unwrap(),
                    Ports {
                        first: 20000,
                        last: 29999,
                    },
                ),
                (
                    "::1".parse().unwrap(),
                    Ports {
                        first: 40000,
                        last: 40999,
                    },
                ),
            ],
            max_streams: 1000,
            dscp: 46,
        });
        assert!(t.starts_with("add table inet palisade_media\ndelete table inet palisade_media\n"));
        assert!(t.contains("set local4 { type ipv4_addr . inet_service; flags interval; elements = { 127.0.0.1 . 20000-29999 } }"));
        assert!(t.contains("elements = { ::1 . 40000-40999 }"));
        assert!(t.contains("set fwd4 { type ipv4_addr . inet_service . ipv4_addr . inet_service; size 2000; counter; }"));
        for hook in [
            "prerouting priority raw",
            "output priority raw",
            "prerouting priority dstnat",
            "output priority -100",
            "postrouting priority srcnat",
            "input priority 100",
        ] {
            assert!(t.contains(hook), "{hook}");
        }
        assert!(t.contains("@th,72,8 200-204 notrack return"));
        assert!(t.contains("udp length < 20 notrack return\n\t\t@th,64,2 != 2 notrack return"));
        assert!(t.contains("ct mark and 0xf0000000 == 0x50000000 ip dscp set 46"));
    }
}
