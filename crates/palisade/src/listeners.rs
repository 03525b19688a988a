//! Which listener serves which zone and transport, both ways.
//!
//! The transports know listeners by [`ListenerId`]; the engine knows flows by
//! [`ZoneId`] and [`Transport`]. Ids are assigned sequentially from 0, zone by
//! zone in file order and, within a zone, in the order of `zone.transports`.
//! Zones cannot change on reload, so the map is built once at start.

use std::collections::HashMap;
use std::net::SocketAddr;

use palisade_config::{Config, Transport, ZoneId};
use palisade_transport::{ListenerId, ListenerSpec, TcpSettings};

/// Messages queued per TCP connection before sends are refused.
const TCP_PER_CONNECTION_QUEUE: usize = 256;

/// One listener as the binary sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry {
    /// The zone it serves.
    pub zone: ZoneId,
    /// Its transport.
    pub transport: Transport,
    /// The address it binds.
    pub bind: SocketAddr,
}

/// The bijection between listener ids and (zone, transport).
#[derive(Debug, Clone, Default)]
pub struct ListenerMap {
    /// Indexed by `ListenerId.0`.
    by_id: Vec<Entry>,
    by_flow: HashMap<(ZoneId, Transport), ListenerId>,
}

/// More listeners than a [`ListenerId`] can number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{0} listeners configured; at most 65536 are supported")]
pub struct TooManyListeners(pub usize);

impl ListenerMap {
    /// One listener per zone and enabled transport of `cfg`.
    pub fn new(cfg: &Config) -> Result<Self, TooManyListeners> {
        let mut map = ListenerMap::default();
        for zone in cfg.zones() {
            for (transport, bind) in zone.listen_addrs() {
                let n = map.by_id.len();
                let id = ListenerId(u16::try_from(n).map_err(|_| TooManyListeners(n + 1))?);
                map.by_id.push(Entry {
                    zone: zone.id,
                    transport,
                    bind,
                });
                map.by_flow.insert((zone.id, transport), id);
            }
        }
        Ok(map)
    }

    /// Number of listeners.
    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    /// The listener `id`.
    pub fn entry(&self, id: ListenerId) -> Option<&Entry> {
        self.by_id.get(usize::from(id.0))
    }

    /// The listener serving `zone` over `transport`.
    pub fn listener_for(&self, zone: ZoneId, transport: Transport) -> Option<ListenerId> {
        self.by_flow.get(&(zone, transport)).copied()
    }

    /// `(id, entry)` for every listener, in id order.
    pub fn iter(&self) -> impl Iterator<Item = (ListenerId, &Entry)> {
        // `new` guarantees every index fits in u16.
        self.by_id
            .iter()
            .enumerate()
            .map(|(i, e)| (ListenerId(i as u16), e))
    }

    /// The transport specs: buffers and message limits from `sip:`, DSCP from
    /// the zone.
    pub fn specs(&self, cfg: &Config) -> Vec<ListenerSpec> {
        let sip = cfg.sip();
        self.iter()
            .map(|(id, e)| {
                let mut spec = ListenerSpec::new(id, e.transport, e.bind);
                spec.max_message_bytes = match e.transport {
                    Transport::Udp => sip.max_udp_message_bytes,
                    _ => sip.max_tcp_message_bytes,
                };
                spec.recv_buffer_bytes = match e.transport {
                    Transport::Udp => sip.udp_receive_buffer_bytes,
                    _ => sip.tcp_receive_buffer_bytes,
                };
                spec.send_buffer_bytes = sip.udp_send_buffer_bytes;
                spec.dscp = cfg.zone(e.zone).map_or(0, |z| z.dscp_sip);
                spec
            })
            .collect()
    }
}

/// TCP settings from `sip.tcp_*`.
pub fn tcp_settings(cfg: &Config) -> TcpSettings {
    let sip = cfg.sip();
    TcpSettings {
        idle_timeout: sip.tcp_idle_timeout,
        max_connections: usize::try_from(sip.tcp_max_connections).unwrap_or(usize::MAX),
        connect_timeout: sip.tcp_connect_timeout,
        per_connection_queue: TCP_PER_CONNECTION_QUEUE,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const CFG: &str = "
zones:
  - name: inside
    sip_address: 127.0.0.1
    udp_port: 5060
    tcp_port: 5061
    dscp_sip: 46
  - name: outside
    sip_address: 127.0.0.2
    transports: [tcp, udp]
    udp_port: 5070
    tcp_port: 5071
  - name: lab
    sip_address: 127.0.0.3
    transports: [udp]
sip:
  max_udp_message_bytes: 4096
  max_tcp_message_bytes: 100000
  udp_receive_buffer_bytes: 1048576
  udp_send_buffer_bytes: 524288
  tcp_receive_buffer_bytes: 262144
  tcp_idle_timeout_seconds: 30
  tcp_max_connections: 77
  tcp_connect_timeout_ms: 1500
trunks:
  - name: pbx
    zone: inside
    members: [{address: 127.0.0.10}]
routes:
  - name: all
    to_trunk: pbx
";

    fn cfg() -> Config {
        palisade_config::load_str(CFG, "test.yaml").unwrap()
    }

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn ids_are_sequential_in_zone_then_transport_order() {
        let cfg = cfg();
        let map = ListenerMap::new(&cfg).unwrap();
        let got: Vec<_> = map.iter().map(|(id, e)| (id.0, *e)).collect();
        let (inside, outside, lab) = (ZoneId(0), ZoneId(1), ZoneId(2));
        let e = |zone, transport, bind: &str| Entry {
            zone,
            transport,
            bind: addr(bind),
        };
        assert_eq!(
            got,
            vec![
                (0, e(inside, Transport::Udp, "127.0.0.1:5060")),
                (1, e(inside, Transport::Tcp, "127.0.0.1:5061")),
                (2, e(outside, Transport::Tcp, "127.0.0.2:5071")),
                (3, e(outside, Transport::Udp, "127.0.0.2:5070")),
                (4, e(lab, Transport::Udp, "127.0.0.3:5060")),
            ]
        );
        assert_eq!(map.len(), 5);
    }

    #[test]
    fn map_works_both_ways() {
        let cfg = cfg();
        let map = ListenerMap::new(&cfg).unwrap();
        for (id, e) in map.iter() {
            assert_eq!(map.listener_for(e.zone, e.transport), Some(id));
            assert_eq!(map.entry(id), Some(e));
        }
        assert_eq!(
            map.listener_for(ZoneId(1), Transport::Udp),
            Some(ListenerId(3))
        );
        // Not enabled, not served, unknown zone.
        assert_eq!(map.listener_for(ZoneId(2), Transport::Tcp), None);
        assert_eq!(map.listener_for(ZoneId(0), Transport::Tls), None);
        assert_eq!(map.listener_for(ZoneId(9), Transport::Udp), None);
        assert_eq!(map.entry(ListenerId(5)), None);
    }

    #[test]
    fn specs_carry_limits_buffers_and_dscp() {
        let cfg = cfg();
        let map = ListenerMap::new(&cfg).unwrap();
        let specs = map.specs(&cfg);
        assert_eq!(specs.len(), 5);
        let udp = &specs[0];
        assert_eq!(udp.id, ListenerId(0));
        assert_eq!(udp.transport, Transport::Udp);
        assert_eq!(udp.bind, addr("127.0.0.1:5060"));
        assert_eq!(udp.max_message_bytes, 4096);
        assert_eq!(udp.recv_buffer_bytes, 1_048_576);
        assert_eq!(udp.send_buffer_bytes, 524_288);
        assert_eq!(udp.dscp, 46);
        let tcp = &specs[1];
        assert_eq!(tcp.transport, Transport::Tcp);
        assert_eq!(tcp.max_message_bytes, 100_000);
        assert_eq!(tcp.recv_buffer_bytes, 262_144);
        assert_eq!(tcp.dscp, 46);
        // The default DSCP (CS3) on a zone that does not set it.
        assert_eq!(specs[2].dscp, 24);
    }

    #[test]
    fn tcp_settings_come_from_sip() {
        let t = tcp_settings(&cfg());
        assert_eq!(t.idle_timeout, Duration::from_secs(30));
        assert_eq!(t.max_connections, 77);
        assert_eq!(t.connect_timeout, Duration::from_millis(1500));
        assert_eq!(t.per_connection_queue, 256);
    }
}
