//! What a SIGHUP reload may change, and what needs a restart.

use std::fmt::Debug;

use crate::model::Config;

impl Config {
    /// Whether `new` can replace `self` on SIGHUP.
    ///
    /// Live: trunks (their `media` policy included: new calls use it),
    /// routes, timeouts (`sip.t1_ms`, `t2_ms`, `t4_ms`,
    /// `member_timeout_ms`, `no_answer_timeout_seconds`,
    /// `tcp_idle_timeout_seconds`, `tcp_connect_timeout_ms`,
    /// `shutdown.grace_seconds`), `logging.level`, and the guard's limits,
    /// lists and fraud rules.
    ///
    /// Everything else is bound into sockets, buffers or the logger at start
    /// and needs a restart: zones (names and order, addresses, transports,
    /// ports, media ranges, DSCP), the `media` section (the relay is started
    /// with it), the other `sip` limits and buffers, `node`, `logging.format`, `admin.listen`,
    /// `guard.nftables`, `guard.nftables_table` and `alerts.database_path`. On
    /// `Err`, one line per such change,
    /// `FIELD_PATH: OLD -> NEW`.
    ///
    /// Zones keep their ids across an accepted reload; trunk ids may change,
    /// so in-flight calls should keep the `Arc<Config>` they started with.
    pub fn reload_check(&self, new: &Config) -> Result<(), Vec<String>> {
        let mut out = Vec::new();
        let mut cmp = |path: &str, old: &dyn Debug, new: &dyn Debug| {
            let (old, new) = (format!("{old:?}"), format!("{new:?}"));
            if old != new {
                out.push(format!("{path}: {old} -> {new} (needs a restart)"));
            }
        };
        let (o, n) = (&self.node, &new.node);
        cmp("node.name", &o.name, &n.name);
        cmp("node.user_agent", &o.user_agent, &n.user_agent);

        let (o, n) = (&self.sip, &new.sip);
        cmp(
            "sip.max_udp_message_bytes",
            &o.max_udp_message_bytes,
            &n.max_udp_message_bytes,
        );
        cmp(
            "sip.max_tcp_message_bytes",
            &o.max_tcp_message_bytes,
            &n.max_tcp_message_bytes,
        );
        cmp("sip.udp_mtu_bytes", &o.udp_mtu_bytes, &n.udp_mtu_bytes);
        cmp("sip.max_forwards", &o.max_forwards, &n.max_forwards);
        cmp("sip.max_calls", &o.max_calls, &n.max_calls);
        cmp(
            "sip.udp_receive_buffer_bytes",
            &o.udp_receive_buffer_bytes,
            &n.udp_receive_buffer_bytes,
        );
        cmp(
            "sip.udp_send_buffer_bytes",
            &o.udp_send_buffer_bytes,
            &n.udp_send_buffer_bytes,
        );
        cmp(
            "sip.tcp_receive_buffer_bytes",
            &o.tcp_receive_buffer_bytes,
            &n.tcp_receive_buffer_bytes,
        );
        cmp(
            "sip.tcp_max_connections",
            &o.tcp_max_connections,
            &n.tcp_max_connections,
        );

        let names = |c: &Config| c.zones.iter().map(|z| z.name.clone()).collect::<Vec<_>>();
        let (old_names, new_names) = (names(self), names(new));
        if old_names != new_names {
            cmp("zones", &old_names, &new_names);
        } else {
            for (i, (o, n)) in self.zones.iter().zip(&new.zones).enumerate() {
                let p = |k: &str| format!("zones[{i}].{k}");
                cmp(&p("sip_address"), &o.sip_address, &n.sip_address);
                cmp(&p("transports"), &o.transports, &n.transports);
                cmp(&p("udp_port"), &o.udp_port, &n.udp_port);
                cmp(&p("tcp_port"), &o.tcp_port, &n.tcp_port);
                cmp(&p("media.address"), &o.media.address, &n.media.address);
                cmp(&p("media.port_min"), &o.media.port_min, &n.media.port_min);
                cmp(&p("media.port_max"), &o.media.port_max, &n.media.port_max);
                cmp(&p("dscp_sip"), &o.dscp_sip, &n.dscp_sip);
            }
        }
        let (o, n) = (&self.media, &new.media);
        cmp("media.anchor", &o.anchor, &n.anchor);
        cmp("media.relay_threads", &o.relay_threads, &n.relay_threads);
        cmp("media.timeout_seconds", &o.timeout, &n.timeout);
        cmp(
            "media.hold_timeout_seconds",
            &o.hold_timeout,
            &n.hold_timeout,
        );
        cmp("media.dscp_rtp", &o.dscp_rtp, &n.dscp_rtp);
        cmp(
            "media.kernel_forwarding",
            &o.kernel_forwarding,
            &n.kernel_forwarding,
        );
        cmp(
            "media.kernel_forwarding_after_ms",
            &o.kernel_forwarding_after,
            &n.kernel_forwarding_after,
        );
        cmp("logging.format", &self.logging.format, &new.logging.format);
        cmp("admin.listen", &self.admin.listen, &new.admin.listen);
        cmp("guard.nftables", &self.guard.nftables, &new.guard.nftables);
        cmp(
            "guard.nftables_table",
            &self.guard.nftables_table,
            &new.guard.nftables_table,
        );
        cmp(
            "alerts.database_path",
            &self.alerts.database_path,
            &new.alerts.database_path,
        );
        if out.is_empty() { Ok(()) } else { Err(out) }
    }
}
