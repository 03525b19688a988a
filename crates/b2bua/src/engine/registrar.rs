//! The registrar in the engine: REGISTER from PBXs and phones (digest
//! authenticated, NAT detected, admission-limited), bindings for routing
//! calls to registered users over the flow they registered from, and the
//! binding changes the binary persists.

use std::sync::Arc;
use std::time::Instant;

use palisade_registrar::{
    Binding, BindingFlow, Change, ContactRequest, ExpiryPolicy, RegisterError, RegisterRequest,
};
use palisade_sip::{HeaderName, Message};
use palisade_transaction::ServerKey;

use super::Engine;
use super::auth::{AuthResult, UserRule};
use super::edge::{EdgeEvent, KaTarget, ka_method};
use crate::Flow;

pub(super) fn binding_flow(f: Flow) -> BindingFlow {
    BindingFlow {
        zone: f.zone.0,
        transport: f.transport,
        remote: f.remote,
    }
}

pub(super) fn flow_of(b: &Binding) -> Flow {
    Flow {
        zone: palisade_config::ZoneId(b.flow.zone),
        transport: b.flow.transport,
        remote: b.flow.remote,
    }
}

impl Engine {
    /// A REGISTER outside any dialog. Challenges and refusals before
    /// authentication are stateless (a flood keeps nothing); an
    /// authenticated REGISTER gets a server transaction, so its
    /// retransmissions get the same answer instead of a replay check.
    pub(super) fn on_register(&mut self, now: Instant, flow: Flow, msg: Message, key: ServerKey) {
        let cfg = Arc::clone(&self.cfg);
        let Some(reg) = cfg.registrar() else {
            self.respond_stateless(flow, &msg, 405, |w| {
                w.header(HeaderName::Allow, super::ALLOW);
            });
            return;
        };
        if !self.edge.synced {
            self.sync_edge(now);
        }
        let Some(trunk) = cfg.trunk(reg.trunk) else {
            return;
        };
        if trunk.zone != flow.zone {
            self.edge.stats.registers_refused += 1;
            self.respond_stateless(flow, &msg, 403, |_| {});
            return;
        }
        let user = msg
            .to()
            .ok()
            .and_then(|t| t.uri.number().map(str::to_owned))
            .filter(|u| !u.is_empty());
        let Some(user) = user else {
            self.edge.stats.registers_refused += 1;
            self.respond_stateless(flow, &msg, 400, |_| {});
            return;
        };
        match self.check_credentials(
            now,
            &msg,
            HeaderName::Authorization,
            UserRule::Exactly(&user),
        ) {
            AuthResult::Ok(_) => {}
            AuthResult::Missing => return self.send_challenge(now, flow, &msg, false),
            AuthResult::Stale => return self.send_challenge(now, flow, &msg, true),
            AuthResult::Failed(claimed) => {
                self.auth_failed(now, flow, &claimed);
                return self.send_challenge(now, flow, &msg, false);
            }
        }
        let Some(user_cfg) = reg.user(&user) else {
            return self.send_challenge(now, flow, &msg, false);
        };
        let id = self.new_server_txn(now, flow, msg.clone(), key, None);
        let nated =
            cfg.nat().detect && palisade_nat::detect(&msg, flow.remote, flow.transport).nated();
        let contacts: Vec<ContactRequest> = msg
            .contacts()
            .filter_map(Result::ok)
            .map(|c| ContactRequest {
                uri: c.uri_str.to_owned(),
                expires: c
                    .params
                    .get("expires")
                    .flatten()
                    .and_then(|v| v.trim().parse().ok()),
            })
            .collect();
        let req = RegisterRequest {
            user: user.clone(),
            contacts,
            wildcard: msg.contact_is_star(),
            expires_header: msg.expires(),
            call_id: msg.call_id().to_owned(),
            cseq: msg.cseq().seq,
            flow: binding_flow(flow),
            nated,
        };
        // Admission: registrations of the registrar trunk and of its zone.
        let adds = req
            .contacts
            .iter()
            .filter(|c| c.expires.or(req.expires_header) != Some(0))
            .filter(|c| {
                !self
                    .edge
                    .bindings
                    .lookup(&user, now)
                    .any(|b| b.contact.eq_ignore_ascii_case(&c.uri))
            })
            .count();
        if adds > 0 {
            // Live bindings only: one past its expiry holds no registration
            // even before the edge timer sweeps it.
            let total = self.edge.bindings.live(now);
            let zone_cac = cfg.zone(flow.zone).map(|z| z.cac);
            // The registrar trunk's limit, then its zone's.
            for cac in [Some(trunk.cac), zone_cac].into_iter().flatten() {
                if cac.max_registrations > 0 && total + adds > cac.max_registrations as usize {
                    self.edge.stats.cac_rejected_registrations += 1;
                    let retry = cfg.call_admission().retry_after_seconds;
                    let status = cac.reject_status;
                    self.respond(now, id, status, |w| {
                        if status == 503 {
                            w.header_fmt(HeaderName::RetryAfter, format_args!("{retry}"));
                        }
                    });
                    self.emit(crate::Event::Rejected {
                        flow,
                        method: palisade_sip::Method::Register,
                        status,
                        reason: "cac-registrations",
                    });
                    return;
                }
            }
        }
        let policy = ExpiryPolicy {
            min_expires_secs: reg.min_expires_seconds,
            max_expires_secs: reg.max_expires_seconds,
            default_expires_secs: reg.default_expires_seconds,
            max_bindings: user_cfg.max_bindings as usize,
        };
        match self.edge.bindings.apply(now, &req, &policy) {
            Ok(changes) => {
                for ch in changes {
                    self.binding_change(now, ch);
                }
                self.edge.stats.registers_accepted += 1;
                let list: Vec<String> = self
                    .edge
                    .bindings
                    .lookup(&user, now)
                    .map(|b| {
                        let left = b.expires_at.saturating_duration_since(now).as_secs();
                        format!("<{}>;expires={left}", b.contact)
                    })
                    .collect();
                self.respond(now, id, 200, |w| {
                    for c in &list {
                        w.header(HeaderName::Contact, c);
                    }
                });
                self.arm_edge_timer(now);
            }
            Err(e) => {
                self.edge.stats.registers_refused += 1;
                self.respond(now, id, e.status(), |w| {
                    if let RegisterError::IntervalTooBrief(min) = e {
                        w.header_fmt(HeaderName::MinExpires, format_args!("{min}"));
                    }
                });
            }
        }
    }

    /// Applies the side effects of a binding change: keepalives for NATed
    /// flows, and an event for the store.
    pub(super) fn binding_change(&mut self, now: Instant, ch: Change) {
        match &ch {
            Change::Saved(b) => {
                let flow = flow_of(b);
                if b.nated {
                    let k = self.cfg.nat().keepalive;
                    if self
                        .edge
                        .keepalive
                        .set(flow, ka_method(k.method), k.interval, now)
                    {
                        self.edge
                            .ka_targets
                            .entry(flow)
                            .or_insert(KaTarget::Binding);
                    }
                }
                self.edge.emit(EdgeEvent::BindingSaved(b.clone()));
            }
            Change::Removed { user, contact } => {
                self.edge.emit(EdgeEvent::BindingRemoved {
                    user: user.clone(),
                    contact: contact.clone(),
                });
            }
        }
        // Flows no live binding uses any more stop being pinged.
        let bindings = &self.edge.bindings;
        let schedule = &mut self.edge.keepalive;
        self.edge.ka_targets.retain(|flow, t| {
            let keep = match t {
                KaTarget::Binding => bindings.iter().any(|b| flow_of(b) == *flow && b.nated),
                KaTarget::Member { .. } => true,
            };
            if !keep {
                schedule.remove(flow);
            }
            keep
        });
    }

    /// The binding a call to registered user `number` goes to: its flow and
    /// contact URI.
    pub(super) fn registered_target(&self, now: Instant, number: &str) -> Option<(Flow, String)> {
        self.edge
            .bindings
            .target(number, now)
            .map(|b| (flow_of(b), b.contact.clone()))
    }

    /// The registrar trunk, when `flow` is the flow of a live binding
    /// (a registered phone behind NAT calling out).
    pub(super) fn registered_source_trunk(
        &self,
        now: Instant,
        flow: Flow,
    ) -> Option<palisade_config::TrunkId> {
        let reg = self.cfg.registrar()?;
        let b = self.edge.bindings.user_for_remote(flow.remote, now)?;
        (flow_of(b) == flow).then_some(reg.trunk)
    }

    /// Puts back bindings loaded from the store at start-up; returns how
    /// many were accepted (expired ones and ones over the caps are not).
    pub fn restore_bindings(&mut self, now: Instant, bindings: Vec<Binding>) -> usize {
        let cfg = Arc::clone(&self.cfg);
        let Some(reg) = cfg.registrar() else {
            return 0;
        };
        let mut n = 0;
        for b in bindings {
            let max = reg.user(&b.user).map_or(0, |u| u.max_bindings as usize);
            if max == 0 {
                continue;
            }
            let copy = b.clone();
            if self.edge.bindings.restore(b, now, max) {
                n += 1;
                if copy.nated {
                    let k = cfg.nat().keepalive;
                    let flow = flow_of(&copy);
                    if self
                        .edge
                        .keepalive
                        .set(flow, ka_method(k.method), k.interval, now)
                    {
                        self.edge.ka_targets.insert(flow, KaTarget::Binding);
                    }
                }
            }
        }
        self.edge.stats.bindings_restored += n as u64;
        self.arm_edge_timer(now);
        n
    }

    /// Live bindings of `user` (contact URI, flow), for tests and tools.
    pub fn bindings_of(&self, now: Instant, user: &str) -> Vec<(String, Flow)> {
        self.edge
            .bindings
            .lookup(user, now)
            .map(|b| (b.contact.clone(), flow_of(b)))
            .collect()
    }
}
