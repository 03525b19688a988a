//! The registrar's binding table (RFC 3261 section 10.3).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use palisade_sip::Transport;

/// Where a binding's requests go: the flow the REGISTER arrived on (zone
/// index, transport, observed source address), which is what makes a phone
/// behind NAT reachable (RFC 5626 style flow reuse).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct BindingFlow {
    /// Zone index (the engine's `ZoneId`).
    pub zone: u16,
    /// UDP or TCP.
    pub transport: Transport,
    /// The REGISTER's packet source.
    pub remote: SocketAddr,
}

/// One registered contact of a user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Binding {
    /// The user (address-of-record user part).
    pub user: String,
    /// The Contact URI as registered (the Request-URI of calls to it).
    pub contact: String,
    /// Where requests to it are sent.
    pub flow: BindingFlow,
    /// When it expires.
    pub expires_at: Instant,
    /// Call-ID of the REGISTER that made or refreshed it.
    pub call_id: String,
    /// CSeq of that REGISTER.
    pub cseq: u32,
    /// The registering UA is behind NAT (addresses it wrote differ from the
    /// packet source): keepalives are sent to its flow.
    pub nated: bool,
}

/// One Contact of a REGISTER.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContactRequest {
    /// The Contact URI.
    pub uri: String,
    /// Its `expires` parameter.
    pub expires: Option<u32>,
}

/// A parsed REGISTER, as the table needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegisterRequest {
    /// The user (To URI user part).
    pub user: String,
    /// The Contacts (empty for a query).
    pub contacts: Vec<ContactRequest>,
    /// `Contact: *`.
    pub wildcard: bool,
    /// The Expires header.
    pub expires_header: Option<u32>,
    /// Call-ID.
    pub call_id: String,
    /// CSeq number.
    pub cseq: u32,
    /// The flow it arrived on.
    pub flow: BindingFlow,
    /// Detected NAT.
    pub nated: bool,
}

/// Expiry rules and caps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExpiryPolicy {
    /// Shorter non-zero requests get 423 with this Min-Expires.
    pub min_expires_secs: u32,
    /// Longer requests are shortened to this.
    pub max_expires_secs: u32,
    /// When neither the Contact nor the header says.
    pub default_expires_secs: u32,
    /// Bindings per user.
    pub max_bindings: usize,
}

/// Why a REGISTER was refused (the status the engine answers).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RegisterError {
    /// 400: `*` with other contacts or a non-zero expiry.
    #[error("invalid wildcard registration")]
    BadWildcard,
    /// 423 Interval Too Brief, with Min-Expires.
    #[error("interval too brief (minimum {0} s)")]
    IntervalTooBrief(u32),
    /// 500: Call-ID reused with a CSeq not above the stored one.
    #[error("out-of-order REGISTER")]
    OutOfOrder,
    /// 403: more bindings than the user may have.
    #[error("too many bindings for this user")]
    TooManyBindings,
    /// 503: the table is full.
    #[error("binding table full")]
    TableFull,
}

impl RegisterError {
    /// The SIP status for this refusal.
    pub fn status(self) -> u16 {
        match self {
            RegisterError::BadWildcard => 400,
            RegisterError::IntervalTooBrief(_) => 423,
            RegisterError::OutOfOrder => 500,
            RegisterError::TooManyBindings => 403,
            RegisterError::TableFull => 503,
        }
    }
}

/// A change to persist.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// Added or refreshed.
    Saved(Binding),
    /// Removed (unregistered, expired or replaced).
    Removed {
        /// The user.
        user: String,
        /// The contact URI.
        contact: String,
    },
}

/// Every binding, by user. Bounded: at most `max_total` bindings overall
/// and `ExpiryPolicy::max_bindings` per user.
#[derive(Debug)]
pub struct Bindings {
    by_user: HashMap<String, Vec<Binding>>,
    total: usize,
    max_total: usize,
}

impl Bindings {
    /// An empty table holding at most `max_total` bindings.
    pub fn new(max_total: usize) -> Self {
        Bindings {
            by_user: HashMap::new(),
            total: 0,
            max_total,
        }
    }

    /// Bindings in the table (expired ones not yet swept included).
    pub fn len(&self) -> usize {
        self.total
    }

    /// Bindings live at `now` (what admission limits count: a binding
    /// past its expiry but not swept yet holds no registration).
    pub fn live(&self, now: Instant) -> usize {
        self.iter().filter(|b| b.expires_at > now).count()
    }

    /// Whether the table is empty.
    pub fn is_empty(&self) -> bool {
        self.total == 0
    }

    /// Users with at least one binding.
    pub fn users(&self) -> usize {
        self.by_user.len()
    }

    /// Live bindings of `user`, most recently refreshed last.
    pub fn lookup(&self, user: &str, now: Instant) -> impl Iterator<Item = &Binding> {
        self.by_user
            .get(user)
            .into_iter()
            .flatten()
            .filter(move |b| b.expires_at > now)
    }

    /// The binding calls to `user` go to: the most recently refreshed live one.
    pub fn target(&self, user: &str, now: Instant) -> Option<&Binding> {
        self.lookup(user, now).max_by_key(|b| b.expires_at)
    }

    /// Whether a live binding's flow has `remote` as its address (requests
    /// from a registered UA come from there).
    pub fn user_for_remote(&self, remote: SocketAddr, now: Instant) -> Option<&Binding> {
        self.iter()
            .find(|b| b.flow.remote == remote && b.expires_at > now)
    }

    /// Every binding.
    pub fn iter(&self) -> impl Iterator<Item = &Binding> {
        self.by_user.values().flatten()
    }

    /// The earliest expiry, for the engine's timer.
    pub fn next_expiry(&self) -> Option<Instant> {
        self.iter().map(|b| b.expires_at).min()
    }

    /// Removes bindings expired at `now`.
    pub fn expire(&mut self, now: Instant) -> Vec<Change> {
        let mut out = Vec::new();
        self.by_user.retain(|user, list| {
            list.retain(|b| {
                let keep = b.expires_at > now;
                if !keep {
                    out.push(Change::Removed {
                        user: user.clone(),
                        contact: b.contact.clone(),
                    });
                }
                keep
            });
            !list.is_empty()
        });
        self.total -= out.len();
        out
    }

    /// Puts back a binding loaded from the store (ignored when expired, over
    /// the caps, or a duplicate).
    pub fn restore(&mut self, b: Binding, now: Instant, max_bindings: usize) -> bool {
        if b.expires_at <= now || self.total >= self.max_total {
            return false;
        }
        let list = self.by_user.entry(b.user.clone()).or_default();
        if list.len() >= max_bindings || list.iter().any(|x| same_uri(&x.contact, &b.contact)) {
            return false;
        }
        list.push(b);
        self.total += 1;
        true
    }

    /// Drops `user`'s bindings expired at `now`.
    fn purge_user(&mut self, user: &str, now: Instant) -> Vec<Change> {
        let mut out = Vec::new();
        if let Some(list) = self.by_user.get_mut(user) {
            list.retain(|b| {
                let keep = b.expires_at > now;
                if !keep {
                    out.push(Change::Removed {
                        user: b.user.clone(),
                        contact: b.contact.clone(),
                    });
                }
                keep
            });
            if list.is_empty() {
                self.by_user.remove(user);
            }
        }
        self.total -= out.len();
        out
    }

    /// Applies a REGISTER (RFC 3261 10.3 steps 6-8). On success returns
    /// the changes to persist; the user's live bindings are then [`Bindings::lookup`].
    /// Caps count live bindings only: the user's expired ones are dropped
    /// first (and reported as removed), and the whole table is swept when
    /// it would otherwise be full.
    pub fn apply(
        &mut self,
        now: Instant,
        req: &RegisterRequest,
        policy: &ExpiryPolicy,
    ) -> Result<Vec<Change>, RegisterError> {
        let header_expires = req.expires_header;
        if req.wildcard {
            if !req.contacts.is_empty() || header_expires != Some(0) {
                return Err(RegisterError::BadWildcard);
            }
            let Some(list) = self.by_user.get(&req.user) else {
                return Ok(Vec::new());
            };
            if list
                .iter()
                .any(|b| b.call_id == req.call_id && req.cseq <= b.cseq)
            {
                return Err(RegisterError::OutOfOrder);
            }
            let removed = self.by_user.remove(&req.user).unwrap_or_default();
            self.total -= removed.len();
            return Ok(removed
                .into_iter()
                .map(|b| Change::Removed {
                    user: b.user,
                    contact: b.contact,
                })
                .collect());
        }
        // Validate everything before changing anything; bindings past
        // their expiry count as gone.
        let mut plan: Vec<(&ContactRequest, u32)> = Vec::with_capacity(req.contacts.len());
        for c in &req.contacts {
            let asked = c
                .expires
                .or(header_expires)
                .unwrap_or(policy.default_expires_secs);
            if asked != 0 && asked < policy.min_expires_secs {
                return Err(RegisterError::IntervalTooBrief(policy.min_expires_secs));
            }
            plan.push((c, asked.min(policy.max_expires_secs)));
        }
        let existing = self.by_user.get(&req.user);
        let live_of = |b: &&Binding| b.expires_at > now;
        let mut adds = 0usize;
        let mut removes = 0usize;
        for (c, secs) in &plan {
            let found = existing.and_then(|l| {
                l.iter()
                    .filter(live_of)
                    .find(|b| same_uri(&b.contact, &c.uri))
            });
            match found {
                Some(b) if b.call_id == req.call_id && req.cseq <= b.cseq => {
                    return Err(RegisterError::OutOfOrder);
                }
                Some(_) if *secs == 0 => removes += 1,
                Some(_) => {}
                None if *secs > 0 => adds += 1,
                None => {}
            }
        }
        let current = existing.map_or(0, |l| l.iter().filter(live_of).count());
        if adds > 0 && current + adds - removes > policy.max_bindings {
            return Err(RegisterError::TooManyBindings);
        }
        // The whole table counts live bindings too; sweeping the expired
        // ones makes the room (reported as removals).
        let mut changes = Vec::new();
        if adds > 0 && self.total + adds - removes > self.max_total {
            if self.live(now) + adds - removes > self.max_total {
                return Err(RegisterError::TableFull);
            }
            changes.extend(self.expire(now));
        }
        changes.extend(self.purge_user(&req.user, now));
        let list = self.by_user.entry(req.user.clone()).or_default();
        for (c, secs) in plan {
            let pos = list.iter().position(|b| same_uri(&b.contact, &c.uri));
            if secs == 0 {
                if let Some(i) = pos {
                    let b = list.remove(i);
                    self.total -= 1;
                    changes.push(Change::Removed {
                        user: b.user,
                        contact: b.contact,
                    });
                }
                continue;
            }
            let b = Binding {
                user: req.user.clone(),
                contact: c.uri.clone(),
                flow: req.flow,
                expires_at: now + Duration::from_secs(u64::from(secs)),
                call_id: req.call_id.clone(),
                cseq: req.cseq,
                nated: req.nated,
            };
            match pos {
                Some(i) => {
                    if let Some(slot) = list.get_mut(i) {
                        *slot = b.clone();
                    }
                }
                None => {
                    list.push(b.clone());
                    self.total += 1;
                }
            }
            changes.push(Change::Saved(b));
        }
        if list.is_empty() {
            self.by_user.remove(&req.user);
        }
        Ok(changes)
    }
}

/// Contact URIs compare case-insensitively (a simplification of RFC 3261
/// 19.1.4 that is exact for the URIs UAs re-register with).
fn same_uri(a: &str, b: &str) -> bool {
    a.eq_ignore_ascii_case(b)
}

#[cfg(test)]
mod tests;
