//! What the admin endpoint reports: a [`Source`] that asks the engine task
//! for its counters over the bounded control channel and names them
//! `palisade_<area>_<name>_<unit>` (counters get `_total` from the encoder).
//! Label values are the `&'static str` names of the counting crates' enums,
//! so every family has a fixed, small label set.

use std::time::{Duration, Instant};

use palisade_admin::{Sample, SampleFuture, Source, Status};
use palisade_guard::Reason;
use palisade_transport::{TransportStats, Transports};
use tokio::sync::{mpsc, oneshot};

use crate::engine_loop::{Control, LoopReport};

/// Answers the admin endpoint from the engine task's reports.
pub struct EngineSource {
    /// Weak, so the endpoint never keeps the control channel open: the
    /// engine drains when every supervisor-side sender is gone.
    control: mpsc::WeakSender<Control>,
    transports: Transports,
    started: Instant,
    node: String,
}

impl EngineSource {
    pub fn new(control: mpsc::Sender<Control>, transports: Transports, node: String) -> Self {
        EngineSource {
            control: control.downgrade(),
            transports,
            started: crate::now(),
            node,
        }
    }
}

impl Source for EngineSource {
    fn sample(&self) -> SampleFuture<'_> {
        Box::pin(async move {
            let (tx, rx) = oneshot::channel();
            // Never wait for room: the supervisor's drain and reload requests
            // share this channel, and a full one means the engine is behind.
            let control = self.control.upgrade()?;
            control.try_send(Control::Stats(tx)).ok()?;
            drop(control);
            let report = rx.await.ok()?;
            let uptime = crate::now().saturating_duration_since(self.started);
            Some(sample(
                &self.node,
                uptime,
                &report,
                &self.transports.stats(),
            ))
        })
    }
}

/// The sample for one report.
pub fn sample(node: &str, uptime: Duration, r: &LoopReport, t: &TransportStats) -> Sample {
    let mut s = Sample::default();
    let guard_blocking = match &r.guard {
        None => "off",
        Some(g) if g.nftables => "nftables",
        Some(_) => "in-process",
    };
    s.status = Status {
        node: node.to_owned(),
        version: env!("CARGO_PKG_VERSION"),
        uptime_seconds: uptime.as_secs(),
        calls_active: r.engine.active_calls,
        draining: r.draining,
        guard_blocking,
        media_anchored: r.media.is_some(),
    };
    s.gauge_by(
        "palisade_build_info",
        "Always 1; the version label says which Palisade runs.",
        "version",
        &[(env!("CARGO_PKG_VERSION"), 1)],
    );
    s.gauge(
        "palisade_process_uptime_seconds",
        "Seconds since Palisade started serving.",
        uptime.as_secs(),
    );
    s.gauge(
        "palisade_process_draining",
        "1 while new calls are refused because the process is stopping.",
        u64::from(r.draining),
    );
    calls(&mut s, r);
    sip(&mut s, r);
    transport(&mut s, t);
    edge(&mut s, r);
    if let (Some(m), Some(rl)) = (&r.media, &r.relay) {
        media(&mut s, m, rl);
        quality(&mut s, &r.quality);
    }
    if let Some(g) = &r.guard {
        guard(&mut s, g);
    }
    s
}

fn calls(s: &mut Sample, r: &LoopReport) {
    let e = &r.engine;
    s.gauge(
        "palisade_calls_active",
        "Calls in progress.",
        e.active_calls,
    );
    s.gauge(
        "palisade_calls_tracked",
        "Calls held in memory, including ended calls finishing their last transactions.",
        e.tracked_calls,
    );
    s.counter("palisade_calls_started", "Calls accepted.", e.calls_started);
    s.counter(
        "palisade_calls_answered",
        "Calls answered.",
        e.calls_answered,
    );
    s.counter("palisade_calls_ended", "Calls ended.", e.calls_ended);
    s.counter_by(
        "palisade_calls_rejected",
        "INVITEs refused before a call existed, by why.",
        "reason",
        &[
            ("engine", e.calls_rejected),
            ("trunk_down", r.edge.trunk_down_rejected),
            ("not_registered", r.edge.not_registered_rejected),
            ("media", e.media_refused),
        ],
    );
    s.counter(
        "palisade_calls_nated",
        "Calls whose caller was detected behind a NAT.",
        r.edge.nated_calls,
    );
}

fn sip(s: &mut Sample, r: &LoopReport) {
    let (e, c) = (&r.engine, &r.counters);
    s.counter(
        "palisade_sip_messages_received",
        "SIP messages handed to the engine.",
        e.messages_received,
    );
    s.counter(
        "palisade_sip_retransmissions_received",
        "Retransmissions absorbed by transactions.",
        e.retransmissions_received,
    );
    s.counter_by(
        "palisade_sip_malformed",
        "Malformed messages: answered (400, 505, 513) or dropped (unanswerable).",
        "action",
        &[
            ("answered", e.malformed_answered),
            ("dropped", e.malformed_dropped),
        ],
    );
    s.counter_by(
        "palisade_sip_stray",
        "Messages matching no transaction or dialog.",
        "kind",
        &[
            ("response", e.stray_responses),
            ("ack", e.stray_acks),
            ("answer_killed", e.stray_answers_killed),
        ],
    );
    s.counter(
        "palisade_sip_stateless_responses",
        "Requests answered without a transaction (OPTIONS, rejects, 481).",
        e.stateless_responses,
    );
    s.counter(
        "palisade_sip_requests_rejected",
        "Requests refused before a call existed.",
        c.rejected,
    );
    s.counter(
        "palisade_sip_requests_sent",
        "Requests Palisade originated.",
        e.requests_sent,
    );
    s.counter(
        "palisade_sip_udp_to_tcp_switches",
        "Requests sent over TCP because they were too large for UDP (RFC 3261 18.1.1).",
        e.udp_to_tcp_switches,
    );
    s.gauge_by(
        "palisade_sip_transactions",
        "Transactions alive.",
        "role",
        &[
            ("server", e.server_transactions),
            ("client", e.client_transactions),
        ],
    );
    s.counter(
        "palisade_sip_transaction_guard_timeouts",
        "Server transactions answered 408 because the engine did not answer in time.",
        e.guard_timeouts,
    );
    s.counter(
        "palisade_sip_send_errors",
        "Sends the transports refused.",
        c.send_errors,
    );
    s.counter_by(
        "palisade_engine_internal_errors",
        "Internal errors; a bug if non-zero.",
        "kind",
        &[
            ("engine", e.internal_errors),
            ("unknown_listener", c.unknown_listener),
            ("unroutable", c.unroutable),
            ("transmit_queue_full", e.transmits_dropped),
            ("event_queue_full", e.events_dropped),
        ],
    );
    s.counter(
        "palisade_trunk_probes_sent",
        "OPTIONS health probes sent to trunk targets.",
        e.probes_sent,
    );
    s.gauge(
        "palisade_trunk_targets_down",
        "Trunk targets marked down by probes.",
        e.targets_down,
    );
    s.counter(
        "palisade_trunk_targets_truncated",
        "Targets dropped from DNS answers longer than the per-trunk cap.",
        e.targets_truncated,
    );
}

fn transport(s: &mut Sample, t: &TransportStats) {
    s.counter_by(
        "palisade_sip_udp_datagrams",
        "UDP datagrams read and sent.",
        "direction",
        &[("received", t.udp_received), ("sent", t.udp_sent)],
    );
    s.counter_by(
        "palisade_sip_udp_dropped_datagrams",
        "UDP datagrams dropped: inbound queue full, or over max_message_bytes.",
        "reason",
        &[
            ("inbound_full", t.udp_dropped_inbound_full),
            ("oversize", t.oversize),
        ],
    );
    s.counter_by(
        "palisade_sip_udp_errors",
        "UDP socket errors.",
        "op",
        &[("send", t.udp_send_errors), ("recv", t.udp_recv_errors)],
    );
    s.counter_by(
        "palisade_sip_tcp_connections",
        "TCP connection events.",
        "event",
        &[
            ("accepted", t.tcp_accepted),
            ("connected", t.tcp_connected),
            ("connect_failed", t.tcp_connect_failures),
            ("closed", t.tcp_closed),
            ("rejected_max_connections", t.tcp_rejected_max_connections),
        ],
    );
    s.gauge(
        "palisade_sip_tcp_connections_open",
        "TCP connections open or connecting.",
        t.tcp_open_connections,
    );
    s.counter_by(
        "palisade_sip_tcp_messages",
        "SIP messages over TCP.",
        "direction",
        &[
            ("received", t.tcp_messages_received),
            ("sent", t.tcp_messages_sent),
        ],
    );
    s.counter_by(
        "palisade_sip_tcp_framing_errors",
        "TCP connections closed because their stream could not be framed.",
        "reason",
        &[
            ("too_large", t.tcp_framing_too_large),
            (
                "missing_content_length",
                t.tcp_framing_missing_content_length,
            ),
            ("bad_content_length", t.tcp_framing_bad_content_length),
        ],
    );
    s.counter(
        "palisade_sip_tcp_send_queue_full",
        "Messages refused because a connection's queue was full.",
        t.tcp_send_queue_full,
    );
    s.counter(
        "palisade_sip_keepalives_received",
        "CRLF keepalives received (TCP pings and pongs, empty UDP datagrams).",
        t.keepalives,
    );
}

fn edge(s: &mut Sample, r: &LoopReport) {
    let d = &r.edge;
    s.counter_by(
        "palisade_registrar_registers",
        "REGISTERs answered, by result.",
        "result",
        &[
            ("accepted", d.registers_accepted),
            ("refused", d.registers_refused),
        ],
    );
    s.gauge(
        "palisade_registrar_bindings",
        "Registrar bindings held.",
        d.bindings,
    );
    s.counter(
        "palisade_registrar_bindings_restored",
        "Bindings restored from the store at start.",
        d.bindings_restored,
    );
    s.counter(
        "palisade_auth_challenges_sent",
        "401/407 challenges sent.",
        d.challenges_sent,
    );
    s.counter(
        "palisade_auth_failures",
        "Credentials that failed.",
        d.auth_failures,
    );
    s.counter(
        "palisade_auth_outbound_retries",
        "INVITEs re-sent with credentials after a carrier's 401/407.",
        d.outbound_auth_retries,
    );
    s.counter(
        "palisade_trunk_registers_sent",
        "Outbound REGISTERs sent to carriers.",
        d.registers_sent,
    );
    s.counter_by(
        "palisade_cac_rejected",
        "Requests refused by call admission control, by limit.",
        "limit",
        &[
            ("concurrent", d.cac_rejected_concurrent),
            ("cps", d.cac_rejected_cps),
            ("registrations", d.cac_rejected_registrations),
        ],
    );
    s.counter(
        "palisade_cac_emergency_exempted",
        "Emergency calls admitted past a limit.",
        d.cac_emergency_exempted,
    );
    s.counter_by(
        "palisade_nat_keepalives_sent",
        "Keepalives sent to NATed peers and trunks.",
        "kind",
        &[
            ("options", d.keepalive_options_sent),
            ("crlf", d.keepalive_crlf_sent),
        ],
    );
    s.counter(
        "palisade_nat_keepalive_misses",
        "Keepalives that got no answer.",
        d.keepalive_misses,
    );
}

fn media(s: &mut Sample, m: &palisade_media::MediaStats, r: &palisade_relay::RelayStats) {
    s.counter_by(
        "palisade_media_sdp",
        "SDP rewritten, by kind.",
        "kind",
        &[
            ("offer", m.offers),
            ("answer", m.answers),
            ("offer_repeated", m.offers_repeated),
        ],
    );
    s.counter_by(
        "palisade_media_refused",
        "SDP refused, by why.",
        "reason",
        &[
            ("bad_sdp", m.refused_bad_sdp),
            ("codec", m.refused_codec),
            ("srtp", m.refused_srtp),
            ("no_ports", m.refused_no_ports),
            ("relay_busy", m.relay_busy),
            ("other", m.refused_other),
        ],
    );
    s.counter("palisade_media_timeouts", "Media timeouts.", m.timeouts);
    s.counter(
        "palisade_media_bind_failures",
        "Media ports that could not be bound.",
        m.bind_failures,
    );
    s.gauge("palisade_media_calls", "Calls with media state.", m.calls);
    s.gauge(
        "palisade_media_ports_in_use",
        "Port pairs allocated.",
        m.ports_in_use,
    );
    s.gauge(
        "palisade_media_ports_quarantined",
        "Port pairs of ended calls waiting for the relay.",
        m.ports_quarantined,
    );
    s.counter(
        "palisade_relay_packets",
        "RTP and RTCP datagrams relayed.",
        r.packets_relayed,
    );
    s.counter(
        "palisade_relay_bytes",
        "Bytes of relayed datagrams.",
        r.bytes_relayed,
    );
    s.counter_by(
        "palisade_relay_dropped_packets",
        "Media datagrams dropped, by why.",
        "reason",
        &[
            ("foreign_source", r.dropped_foreign_source),
            ("no_remote", r.dropped_no_remote),
            ("malformed", r.dropped_malformed),
            ("srtp", r.srtp_failures),
            ("send", r.dropped_send),
            ("no_session", r.dropped_no_session),
        ],
    );
    s.gauge(
        "palisade_relay_sessions_open",
        "Relay sessions open.",
        r.sessions_open,
    );
    s.gauge(
        "palisade_relay_ports_bound",
        "Media sockets bound for open sessions.",
        r.ports_bound,
    );
    s.gauge(
        "palisade_relay_ports_spare",
        "Media sockets of ended calls kept bound for their ports' next calls.",
        r.ports_spare,
    );
    s.counter(
        "palisade_relay_reports_dropped",
        "Relay reports dropped (channel full).",
        r.reports_dropped,
    );
    s.counter(
        "palisade_relay_commands_ignored",
        "Relay commands for unknown sessions or streams.",
        r.commands_ignored,
    );
    s.gauge(
        "palisade_relay_kernel_streams",
        "Streams the kernel forwards now (media.kernel_forwarding).",
        r.streams_offloaded,
    );
    s.counter(
        "palisade_relay_kernel_packets",
        "RTP packets the kernel forwarded for offloaded streams.",
        r.packets_offloaded,
    );
    s.counter(
        "palisade_relay_kernel_transactions",
        "Kernel transactions of offload changes.",
        r.offload_batches,
    );
    s.counter(
        "palisade_relay_kernel_failures",
        "Offload changes or counter reads the kernel refused.",
        r.offload_failures,
    );
}

fn quality(s: &mut Sample, q: &crate::media::QualityTally) {
    s.counter_by(
        "palisade_media_stream_directions",
        "Ended stream directions by estimated MOS: good >= 4.0, fair >= 3.6, poor >= 3.1, bad, none (no RTP).",
        "quality",
        &q.by_band(),
    );
    s.counter(
        "palisade_media_received_packets",
        "RTP packets received on ended streams.",
        q.packets,
    );
    s.counter(
        "palisade_media_lost_packets",
        "RTP packets lost on ended streams (from sequence numbers).",
        q.lost,
    );
}

fn guard(s: &mut Sample, io: &crate::guard_io::GuardIoStats) {
    let g = &io.guard;
    s.gauge(
        "palisade_guard_fallback_mode",
        "1 when nftables is not used and bans are enforced in-process only.",
        u64::from(!io.nftables),
    );
    s.counter("palisade_guard_requests", "Requests seen.", g.requests);
    s.counter("palisade_guard_dropped", "Requests dropped.", g.dropped);
    s.counter(
        "palisade_guard_rejected",
        "Requests or calls refused with a status.",
        g.rejected,
    );
    let decisions: Vec<(&'static str, u64)> = Reason::ALL
        .iter()
        .map(|r| (r.as_str(), g.decisions_for(*r)))
        .collect();
    s.counter_by(
        "palisade_guard_decisions",
        "Drop, reject and ban decisions, by reason.",
        "reason",
        &decisions,
    );
    s.counter(
        "palisade_guard_dry_run_decisions",
        "Decisions dry-run kept from happening.",
        g.dry_run_decisions,
    );
    s.counter("palisade_guard_bans_issued", "Bans issued.", g.bans_issued);
    s.gauge(
        "palisade_guard_bans_active",
        "Bans in the in-process table.",
        g.bans_active,
    );
    s.counter(
        "palisade_guard_bans_evicted",
        "Bans evicted from the full table.",
        g.bans_evicted,
    );
    s.gauge(
        "palisade_guard_sources_tracked",
        "Sources tracked.",
        g.sources_tracked,
    );
    s.counter(
        "palisade_guard_sources_evicted",
        "Sources evicted from the full table.",
        g.sources_evicted,
    );
    s.gauge(
        "palisade_guard_fraud_states",
        "Fraud rule states tracked.",
        g.fraud_states,
    );
    s.counter(
        "palisade_guard_calls_torn_down",
        "Calls ended mid-way by fraud rules.",
        g.calls_torn_down,
    );
    s.counter(
        "palisade_guard_alerts_raised",
        "Fraud and attack alerts raised.",
        g.alerts_raised,
    );
    s.counter(
        "palisade_guard_emergency_calls",
        "Emergency calls let through without fraud or CAC checks.",
        g.emergency_calls,
    );
    s.counter(
        "palisade_guard_actions_dropped",
        "Guard actions dropped (queue full).",
        g.actions_dropped,
    );
    s.counter(
        "palisade_guard_nft_bans_applied",
        "Ban elements added to the nftables sets.",
        io.nft.bans_applied,
    );
    s.counter(
        "palisade_guard_nft_batches",
        "nft transactions run for bans.",
        io.nft.batches,
    );
    s.counter(
        "palisade_guard_nft_errors",
        "nft runs that failed.",
        io.nft.errors,
    );
    s.counter(
        "palisade_guard_nft_set_full",
        "Bans enforced in-process only because their nftables set was full.",
        io.nft.set_full,
    );
    s.counter_by(
        "palisade_guard_queue_full",
        "Requests dropped because a guard thread's channel was full.",
        "queue",
        &[("nft", io.nft_queue_full), ("store", io.store_queue_full)],
    );
    s.counter(
        "palisade_guard_store_errors",
        "Alert store writes that failed.",
        io.store_errors,
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn full_report() -> LoopReport {
        LoopReport {
            media: Some(Default::default()),
            relay: Some(Default::default()),
            guard: Some(Default::default()),
            ..Default::default()
        }
    }

    #[test]
    fn names_are_unique_prefixed_and_render() {
        let s = sample(
            "n",
            Duration::from_secs(5),
            &full_report(),
            &Default::default(),
        );
        let mut names = std::collections::BTreeSet::new();
        for f in &s.families {
            assert!(f.name.starts_with("palisade_"), "{}", f.name);
            assert!(!f.name.ends_with("_total"), "{}", f.name);
            assert!(names.insert(f.name), "duplicate {}", f.name);
            assert!(!f.points.is_empty(), "{}", f.name);
        }
        let text = palisade_admin::render(s.clone()).unwrap();
        assert!(text.contains("palisade_guard_fallback_mode 1\n"), "{text}");
        assert!(text.contains("palisade_guard_decisions_total{reason=\"fraud\"} 0\n"));
        assert!(text.contains("palisade_process_uptime_seconds 5\n"));
        assert_eq!(s.status.guard_blocking, "in-process");
        assert!(s.status.media_anchored);
    }

    #[test]
    fn without_guard_or_media_their_families_are_absent() {
        let s = sample(
            "n",
            Duration::ZERO,
            &LoopReport::default(),
            &Default::default(),
        );
        assert!(
            s.families
                .iter()
                .all(|f| !f.name.starts_with("palisade_guard_")
                    && !f.name.starts_with("palisade_relay_")
                    && !f.name.starts_with("palisade_media_"))
        );
        assert_eq!(s.status.guard_blocking, "off");
        assert_eq!(s.value("palisade_calls_active", None), Some(0));
    }
}
