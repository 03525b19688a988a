//! Outbound registration to carriers and keepalives, as client
//! transactions of the engine.

use std::sync::Arc;
use std::time::Instant;

use palisade_nat::{Health, KeepaliveMethod};
use palisade_registrar::{Action, OutboundRegistration, RegistrationTimers};
use palisade_sip::{HeaderName, Message, MessageWriter, Method, Transport};

use super::edge::{EdgeEvent, EdgePurpose, KaTarget, OutReg};
use super::{Engine, Purpose};
use crate::Flow;
use crate::call::{host_str, zone_port};

impl Engine {
    /// Creates the registration of trunk `t` (first REGISTER at `now`).
    pub(super) fn start_registration(&mut self, now: Instant, t: &palisade_config::Trunk) {
        let (Some(r), Some(auth), Some(m)) = (t.registration, t.auth.as_ref(), t.members.first())
        else {
            return;
        };
        let uri = format!(
            "sip:{}:{}{}",
            host_str(m.address),
            m.port,
            match m.transport {
                Transport::Udp => String::new(),
                tr => format!(";transport={}", tr.uri_param()),
            }
        );
        let timers = RegistrationTimers {
            expires_secs: r.expires_seconds,
            retry_secs: r.retry_seconds,
            max_retry_secs: r.max_retry_seconds,
        };
        let seed = self.ids.random_u64();
        let cseq = self.ids.cseq();
        let machine = OutboundRegistration::new(
            now,
            &auth.username,
            auth.password.expose(),
            &uri,
            timers,
            cseq,
            seed,
        );
        let id = self.edge.next_id();
        let reg = OutReg {
            trunk: t.name.clone(),
            machine,
            call_id: self.ids.call_id(),
            from_tag: self.ids.tag(),
            flow: Flow {
                zone: t.zone,
                transport: m.transport,
                remote: m.socket_addr(),
            },
            was_up: false,
        };
        self.edge.regs.insert(id, reg);
    }

    pub(super) fn registration_timers(&mut self, now: Instant) {
        let ids: Vec<u32> = self.edge.regs.keys().copied().collect();
        for id in ids {
            let action = self
                .edge
                .regs
                .get_mut(&id)
                .and_then(|r| r.machine.handle_timeout(now));
            if let Some(a) = action {
                self.send_register(now, id, a);
            }
            self.registration_state(now, id, 408);
        }
    }

    /// Emits an event when registration `id` went up or down.
    fn registration_state(&mut self, now: Instant, id: u32, status: u16) {
        let Some(r) = self.edge.regs.get_mut(&id) else {
            return;
        };
        let up = r.machine.is_registered(now);
        if up != r.was_up {
            r.was_up = up;
            let trunk = r.trunk.clone();
            self.edge
                .emit(EdgeEvent::Registration { trunk, up, status });
        }
    }

    fn send_register(&mut self, now: Instant, id: u32, action: Action) {
        let Action::Register {
            cseq,
            expires_secs,
            auth,
        } = action;
        let cfg = Arc::clone(&self.cfg);
        let Some(r) = self.edge.regs.get(&id) else {
            return;
        };
        let Some(trunk) = cfg.trunk_by_name(&r.trunk) else {
            return;
        };
        let (Some(zone), Some(creds)) = (cfg.zone(trunk.zone), trunk.auth.as_ref()) else {
            return;
        };
        let Some(m) = trunk.members.first() else {
            return;
        };
        let host = host_str(m.address);
        let uri = format!(
            "sip:{host}:{}{}",
            m.port,
            match m.transport {
                Transport::Udp => String::new(),
                tr => format!(";transport={}", tr.uri_param()),
            }
        );
        let aor = format!("<sip:{}@{host}>", creds.username);
        let branch = self.ids.branch();
        let mut w = MessageWriter::request(&Method::Register, &uri);
        w.header_fmt(
            HeaderName::Via,
            format_args!(
                "SIP/2.0/{} {}:{};branch={branch};rport",
                r.flow.transport.via_token(),
                host_str(zone.sip_address),
                zone_port(zone, r.flow.transport)
            ),
        );
        w.header_fmt(
            HeaderName::MaxForwards,
            format_args!("{}", cfg.sip().max_forwards),
        );
        w.header_fmt(HeaderName::From, format_args!("{aor};tag={}", r.from_tag));
        w.header(HeaderName::To, &aor);
        w.header(HeaderName::CallId, &r.call_id);
        w.header_fmt(HeaderName::CSeq, format_args!("{cseq} REGISTER"));
        w.header_fmt(
            HeaderName::Contact,
            format_args!(
                "<sip:{}@{}:{};transport={}>",
                creds.username,
                host_str(zone.sip_address),
                zone_port(zone, r.flow.transport),
                r.flow.transport.uri_param()
            ),
        );
        w.header_fmt(HeaderName::Expires, format_args!("{expires_secs}"));
        if let Some((proxy, c)) = auth {
            let name = if proxy {
                HeaderName::ProxyAuthorization
            } else {
                HeaderName::Authorization
            };
            w.header(name, &c.to_header());
        }
        w.header(HeaderName::UserAgent, &cfg.node().user_agent);
        let flow = r.flow;
        self.edge.stats.registers_sent += 1;
        self.send_request(
            now,
            flow,
            w.finish_empty(),
            None,
            Purpose::Edge(EdgePurpose::Register(id)),
        );
    }

    pub(super) fn on_register_final(
        &mut self,
        now: Instant,
        id: u32,
        status: u16,
        msg: Option<&Message>,
    ) {
        let cfg = Arc::clone(&self.cfg);
        let Some(r) = self.edge.regs.get_mut(&id) else {
            return;
        };
        let realm = cfg
            .trunk_by_name(&r.trunk)
            .and_then(|t| t.auth.as_ref())
            .and_then(|a| a.realm.clone());
        let challenge = msg.and_then(|m| {
            let (name, proxy) = if status == 407 {
                (HeaderName::ProxyAuthenticate, true)
            } else {
                (HeaderName::WwwAuthenticate, false)
            };
            super::auth::best_challenge(m, name, realm.as_deref()).map(|c| (proxy, c))
        });
        // The expiry granted to our Contact, else the Expires header.
        let granted = msg.and_then(|m| {
            m.contacts()
                .filter_map(Result::ok)
                .find_map(|c| c.params.get("expires").flatten()?.trim().parse().ok())
                .or_else(|| m.expires())
        });
        let action = r.machine.on_response(now, status, challenge, granted);
        if let Some(a) = action {
            self.send_register(now, id, a);
        }
        self.registration_state(now, id, status);
    }

    pub(super) fn keepalive_timers(&mut self, now: Instant) {
        let (send, missed) = self.edge.keepalive.due(now);
        for (flow, _) in missed {
            self.edge.stats.keepalive_misses += 1;
            self.keepalive_result(flow, false);
        }
        for (flow, method) in send {
            match method {
                KeepaliveMethod::Crlf => {
                    self.edge.stats.keepalive_crlf_sent += 1;
                    self.transmit(flow, bytes::Bytes::from_static(b"\r\n\r\n"));
                }
                KeepaliveMethod::Options => self.send_keepalive_options(now, flow),
            }
        }
    }

    fn send_keepalive_options(&mut self, now: Instant, flow: Flow) {
        let cfg = Arc::clone(&self.cfg);
        let Some(zone) = cfg.zone(flow.zone) else {
            return;
        };
        // To a registered flow the Request-URI is the contact it registered.
        let target = self
            .edge
            .bindings
            .iter()
            .find(|b| super::registrar::flow_of(b) == flow)
            .map(|b| b.contact.clone());
        let uri = target.unwrap_or_else(|| {
            format!(
                "sip:{}:{}{}",
                host_str(flow.remote.ip()),
                flow.remote.port(),
                match flow.transport {
                    Transport::Udp => String::new(),
                    t => format!(";transport={}", t.uri_param()),
                }
            )
        });
        let me = host_str(zone.sip_address);
        let mut w = MessageWriter::request(&Method::Options, &uri);
        w.header_fmt(
            HeaderName::Via,
            format_args!(
                "SIP/2.0/{} {me}:{};branch={};rport",
                flow.transport.via_token(),
                zone_port(zone, flow.transport),
                self.ids.branch()
            ),
        );
        w.header(HeaderName::MaxForwards, "70");
        w.header_fmt(
            HeaderName::From,
            format_args!("<sip:keepalive@{me}>;tag={}", self.ids.tag()),
        );
        w.header_fmt(HeaderName::To, format_args!("<{uri}>"));
        w.header(HeaderName::CallId, &self.ids.call_id());
        w.header(HeaderName::CSeq, "1 OPTIONS");
        w.header(HeaderName::UserAgent, &cfg.node().user_agent);
        let id = self.edge.next_id();
        self.edge.ka_pending.insert(id, flow);
        self.edge.stats.keepalive_options_sent += 1;
        if self
            .send_request(
                now,
                flow,
                w.finish_empty(),
                None,
                Purpose::Edge(EdgePurpose::Keepalive(id)),
            )
            .is_none()
        {
            self.edge.ka_pending.remove(&id);
        }
    }

    pub(super) fn on_keepalive_final(&mut self, _now: Instant, id: u32, answered: bool) {
        let Some(flow) = self.edge.ka_pending.remove(&id) else {
            return;
        };
        if !answered {
            self.edge.stats.keepalive_misses += 1;
        }
        self.keepalive_result(flow, answered);
    }

    fn keepalive_result(&mut self, flow: Flow, answered: bool) {
        let health = self.edge.keepalive.on_result(&flow, answered);
        let Some(KaTarget::Member { trunk }) = self.edge.ka_targets.get(&flow).cloned() else {
            return;
        };
        match health {
            Some(Health::Up) => self.set_member_up(&trunk, flow.remote, true),
            Some(Health::Missed(_)) => self.set_member_up(&trunk, flow.remote, false),
            None => {}
        }
    }
}
