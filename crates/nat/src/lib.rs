//! NAT traversal, sans-IO: finding out that a peer sits behind a NAT, and
//! when to ping it so the NAT keeps its mapping open.
//!
//! Owns: [`detect`] (a request's top Via, Contact and SDP `c=` compared
//! with the packet's source address, private and shared address ranges,
//! RFC 3581 `rport`; the engine runs it on REGISTERs and initial INVITEs), [`sdp_connection`] (the SDP `c=` address a peer announced, so
//! the media layer can latch to the real source instead), and
//! [`KeepaliveSchedule`], the per-target clock of OPTIONS or CRLF pings
//! with miss counting.
//!
//! Does not own: sending anything or rewriting messages. The engine
//! answers with `received`/`rport` (RFC 3581) and routes every request to
//! the flow a peer registered or called from (RFC 5626 style flow reuse),
//! so a NATed peer's written addresses are never used for routing; the
//! media hook gets the signalling source for latching.
//!
//! Hand-written: a handful of address comparisons and a timer table; no
//! crate offers SIP NAT detection.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use palisade_sip::{Message, Transport};

/// Addresses that are never reachable from the public Internet: RFC 1918,
/// RFC 6598 shared (carrier-grade NAT), link-local, IPv6 unique-local and
/// link-local.
pub fn is_private(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            v4.is_private() || v4.is_link_local() || (o[0] == 100 && (o[1] & 0xc0) == 64)
        }
        IpAddr::V6(v6) => {
            let s = v6.segments()[0];
            (s & 0xfe00) == 0xfc00 || (s & 0xffc0) == 0xfe80
        }
    }
}

/// What [`detect`] found.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NatFinding {
    /// The top Via's host or port differs from the packet source.
    pub via_mismatch: bool,
    /// The (first) Contact's host or port differs from the packet source.
    pub contact_mismatch: bool,
    /// The Contact names a private address while the source is not private.
    pub private_contact: bool,
    /// The SDP body's `c=` names a private address while the source is not
    /// private (media would be sent nowhere without latching).
    pub private_sdp: bool,
}

impl NatFinding {
    /// Whether the peer is behind a NAT (any sign).
    pub fn nated(&self) -> bool {
        self.via_mismatch || self.contact_mismatch || self.private_contact || self.private_sdp
    }
}

fn default_port(t: Transport) -> u16 {
    match t {
        Transport::Tls => 5061,
        _ => 5060,
    }
}

fn host_port_differs(ip: Option<IpAddr>, port: u16, source: SocketAddr) -> bool {
    ip != Some(source.ip()) || port != source.port()
}

/// Compares what a request says about its sender (top Via, first Contact,
/// and the SDP `c=` of an SDP body) with where it came from.
pub fn detect(msg: &Message, source: SocketAddr, transport: Transport) -> NatFinding {
    let mut f = NatFinding::default();
    if let Ok(via) = msg.top_via() {
        let port = via.port.unwrap_or(default_port(transport));
        // Over TCP the source port is ephemeral: compare the host only.
        f.via_mismatch = if transport.is_reliable() {
            via.host.ip() != Some(source.ip())
        } else {
            host_port_differs(via.host.ip(), port, source)
        };
    }
    if let Some(Ok(c)) = msg.contacts().next()
        && let Some(sip) = c.uri.as_sip()
    {
        let ip = sip.host.ip();
        let port = sip.port.unwrap_or(default_port(transport));
        f.contact_mismatch = if transport.is_reliable() {
            ip != Some(source.ip())
        } else {
            host_port_differs(ip, port, source)
        };
        f.private_contact = ip.is_some_and(is_private) && !is_private(source.ip());
    }
    if msg.has_sdp() {
        f.private_sdp =
            sdp_connection(msg.body()).is_some_and(is_private) && !is_private(source.ip());
    }
    f
}

/// The session-level (or first media-level) `c=` address of an SDP body.
pub fn sdp_connection(sdp: &[u8]) -> Option<IpAddr> {
    let text = std::str::from_utf8(sdp).ok()?;
    text.lines()
        .filter_map(|l| l.trim_end().strip_prefix("c="))
        .find_map(|c| c.split_whitespace().nth(2)?.split('/').next()?.parse().ok())
}

/// How a keepalive is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeepaliveMethod {
    /// An OPTIONS request (a transaction: a missing answer is a miss).
    Options,
    /// A CRLF ping (`\r\n\r\n`, RFC 5626 section 3.5.1 for streams; a
    /// NAT-refreshing datagram for UDP). Nothing is expected back.
    Crlf,
}

#[derive(Debug, Clone)]
struct Entry {
    method: KeepaliveMethod,
    interval: Duration,
    next_at: Instant,
    /// An OPTIONS ping awaits its answer.
    outstanding: bool,
    misses: u32,
}

/// What [`KeepaliveSchedule::due`] returns: pings to send, and targets
/// that missed their last OPTIONS (with their consecutive misses).
pub type Due<K> = (Vec<(K, KeepaliveMethod)>, Vec<(K, u32)>);

/// The state of one keepalive target after an answer or a miss.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    /// Answered.
    Up,
    /// Missed this many pings in a row.
    Missed(u32),
}

/// When to ping each target. Targets are keyed by anything the engine
/// likes (a trunk member, a registered flow).
#[derive(Debug)]
pub struct KeepaliveSchedule<K> {
    entries: HashMap<K, Entry>,
    max_targets: usize,
}

impl<K: Hash + Eq + Clone> KeepaliveSchedule<K> {
    /// A schedule holding at most `max_targets` targets.
    pub fn new(max_targets: usize) -> Self {
        KeepaliveSchedule {
            entries: HashMap::new(),
            max_targets,
        }
    }

    /// Targets scheduled.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether nothing is scheduled.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Adds (or re-times) `key`: first ping one interval from `now`.
    /// Returns false when the schedule is full.
    pub fn set(
        &mut self,
        key: K,
        method: KeepaliveMethod,
        interval: Duration,
        now: Instant,
    ) -> bool {
        let interval = interval.max(Duration::from_secs(1));
        if let Some(e) = self.entries.get_mut(&key) {
            if e.interval != interval || e.method != method {
                e.interval = interval;
                e.method = method;
                e.next_at = now + interval;
            }
            return true;
        }
        if self.entries.len() >= self.max_targets {
            return false;
        }
        self.entries.insert(
            key,
            Entry {
                method,
                interval,
                next_at: now + interval,
                outstanding: false,
                misses: 0,
            },
        );
        true
    }

    /// Stops pinging `key`.
    pub fn remove(&mut self, key: &K) {
        self.entries.remove(key);
    }

    /// Keeps only the targets `keep` accepts.
    pub fn retain(&mut self, mut keep: impl FnMut(&K) -> bool) {
        self.entries.retain(|k, _| keep(k));
    }

    /// Whether `key` is scheduled.
    pub fn contains(&self, key: &K) -> bool {
        self.entries.contains_key(key)
    }

    /// The next ping time.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.entries.values().map(|e| e.next_at).min()
    }

    /// Targets due at `now`, with their method, rescheduled one interval on.
    /// An OPTIONS still unanswered when the next one is due counts as a
    /// miss (returned in the second list).
    pub fn due(&mut self, now: Instant) -> Due<K> {
        let mut send = Vec::new();
        let mut missed = Vec::new();
        for (k, e) in &mut self.entries {
            if e.next_at > now {
                continue;
            }
            if e.outstanding {
                e.misses += 1;
                missed.push((k.clone(), e.misses));
            }
            e.outstanding = e.method == KeepaliveMethod::Options;
            e.next_at = now + e.interval;
            send.push((k.clone(), e.method));
        }
        (send, missed)
    }

    /// The ping to `key` was answered (any response) or failed (timeout,
    /// transport error: `answered == false`).
    pub fn on_result(&mut self, key: &K, answered: bool) -> Option<Health> {
        let e = self.entries.get_mut(key)?;
        e.outstanding = false;
        if answered {
            e.misses = 0;
            Some(Health::Up)
        } else {
            e.misses += 1;
            Some(Health::Missed(e.misses))
        }
    }
}

#[cfg(test)]
mod tests;
