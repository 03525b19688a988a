//! The YAML as written: serde structs that mirror the file one to one.
//!
//! Nothing here is validated beyond what the types enforce; `validate.rs`
//! turns a [`RawConfig`] into a [`crate::Config`]. Values that a later rule may
//! reject are `Spanned` so the error can point at them. Optional keys are
//! `Option` so "absent" (take the default) stays distinguishable from "set".

use serde::Deserialize;
use serde_saphyr::Spanned;

pub(crate) type S<T> = Spanned<T>;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawConfig {
    pub node: Option<RawNode>,
    pub sip: Option<RawSip>,
    pub zones: S<Vec<S<RawZone>>>,
    pub trunks: S<Vec<S<RawTrunk>>>,
    pub routes: S<Vec<S<RawRoute>>>,
    pub media: Option<RawMediaSection>,
    pub shutdown: Option<RawShutdown>,
    pub logging: Option<RawLogging>,
    pub normalization: Option<crate::normalization::raw::RawNormalization>,
    pub dns: Option<S<RawDns>>,
    pub guard: Option<crate::guard::RawGuard>,
    pub fraud: Option<crate::guard::RawFraud>,
    pub alerts: Option<crate::guard::RawAlerts>,
    pub registrar: Option<S<RawRegistrar>>,
    pub nat: Option<RawNat>,
    pub call_admission: Option<RawCallAdmission>,
    pub admin: Option<S<RawAdmin>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawNode {
    pub name: Option<S<String>>,
    pub user_agent: Option<S<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawSip {
    pub t1_ms: Option<S<u64>>,
    pub t2_ms: Option<S<u64>>,
    pub t4_ms: Option<S<u64>>,
    pub max_udp_message_bytes: Option<S<u64>>,
    pub max_tcp_message_bytes: Option<S<u64>>,
    pub udp_mtu_bytes: Option<S<u64>>,
    pub max_forwards: Option<S<u64>>,
    pub member_timeout_ms: Option<S<u64>>,
    pub no_answer_timeout_seconds: Option<S<u64>>,
    pub max_calls: Option<S<u64>>,
    pub udp_receive_buffer_bytes: Option<S<u64>>,
    pub udp_send_buffer_bytes: Option<S<u64>>,
    pub tcp_receive_buffer_bytes: Option<S<u64>>,
    pub tcp_idle_timeout_seconds: Option<S<u64>>,
    pub tcp_max_connections: Option<S<u64>>,
    pub tcp_connect_timeout_ms: Option<S<u64>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawZone {
    pub name: S<String>,
    pub sip_address: S<String>,
    pub transports: Option<S<Vec<S<String>>>>,
    pub udp_port: Option<S<u16>>,
    pub tcp_port: Option<S<u16>>,
    pub media: Option<S<RawMedia>>,
    pub dscp_sip: Option<S<u64>>,
    pub cac: Option<RawCac>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawMedia {
    pub address: Option<S<String>>,
    pub port_min: Option<S<u16>>,
    pub port_max: Option<S<u16>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawTrunk {
    pub name: S<String>,
    pub zone: S<String>,
    pub members: S<Vec<S<RawMember>>>,
    pub source_addresses: Option<Vec<S<String>>>,
    pub member_timeout_ms: Option<S<u64>>,
    pub pass_headers: Option<Vec<S<String>>>,
    pub auth: Option<S<RawTrunkAuth>>,
    pub registration: Option<S<RawRegistration>>,
    pub challenge_inbound: Option<S<bool>>,
    pub challenge_inbound_users: Option<Vec<S<String>>>,
    pub keepalive: Option<RawKeepalive>,
    pub cac: Option<RawCac>,
    pub health: Option<S<RawHealth>>,
    pub trusted: Option<S<bool>>,
    pub normalization: Option<crate::normalization::raw::RawTrunkNormalization>,
    pub media: Option<RawTrunkMedia>,
}

/// The top-level `media:` section (the relay and anchoring).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawMediaSection {
    pub anchor: Option<S<bool>>,
    pub relay_threads: Option<S<u64>>,
    pub timeout_seconds: Option<S<u64>>,
    pub hold_timeout_seconds: Option<S<u64>>,
    pub dscp_rtp: Option<S<u64>>,
    pub kernel_forwarding: Option<S<String>>,
    pub kernel_forwarding_after_ms: Option<S<u64>>,
}

/// A trunk's `media:` policy.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawTrunkMedia {
    pub srtp: Option<S<RawSrtp>>,
    pub rtcp_mux: Option<S<RawRtcpMux>>,
    pub codecs: Option<Vec<S<String>>>,
    pub latching: Option<S<RawLatching>>,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum RawSrtp {
    Off,
    Optional,
    Required,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum RawRtcpMux {
    Auto,
    On,
    Off,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum RawLatching {
    Learn,
    Strict,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawMember {
    /// An IP; exactly one of `address` and `host` is given.
    pub address: Option<S<String>>,
    /// A DNS name resolved with RFC 3263.
    pub host: Option<S<String>>,
    pub port: Option<S<u16>>,
    pub transport: Option<S<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawHealth {
    pub probe: Option<S<RawProbe>>,
    pub interval_seconds: Option<S<u64>>,
    pub timeout_ms: Option<S<u64>>,
    pub down_after: Option<S<u64>>,
    pub up_after: Option<S<u64>>,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum RawProbe {
    Options,
    Off,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawDns {
    pub servers: Option<S<Vec<S<String>>>>,
    pub timeout_ms: Option<S<u64>>,
    pub min_ttl_seconds: Option<S<u64>>,
    pub max_ttl_seconds: Option<S<u64>>,
    pub negative_ttl_seconds: Option<S<u64>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRoute {
    pub name: S<String>,
    pub from_trunk: Option<S<String>>,
    pub number_prefixes: Option<S<Vec<S<String>>>>,
    pub number_regex: Option<S<String>>,
    pub to_trunk: S<String>,
    pub to_registered: Option<S<bool>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawAdmin {
    pub listen: Option<S<String>>,
    pub allow_non_loopback: Option<S<bool>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawShutdown {
    pub grace_seconds: Option<S<u64>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawLogging {
    pub format: Option<S<RawLogFormat>>,
    pub level: Option<S<String>>,
    pub batch_ms: Option<S<u64>>,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum RawLogFormat {
    Text,
    Json,
}

// ---------------------------------------------------------------- edge

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawTrunkAuth {
    pub username: S<String>,
    pub password: Option<S<String>>,
    pub password_env: Option<S<String>>,
    pub realm: Option<S<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRegistration {
    pub enabled: Option<S<bool>>,
    pub expires_seconds: Option<S<u64>>,
    pub retry_seconds: Option<S<u64>>,
    pub max_retry_seconds: Option<S<u64>>,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum RawKeepaliveMethod {
    Options,
    Crlf,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawKeepalive {
    pub method: Option<S<RawKeepaliveMethod>>,
    pub interval_seconds: Option<S<u64>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawCac {
    pub max_concurrent_calls: Option<S<u64>>,
    pub max_calls_per_second: Option<S<u64>>,
    pub max_registrations: Option<S<u64>>,
    pub reject_status: Option<S<u64>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRegistrar {
    pub trunk: S<String>,
    pub realm: S<String>,
    pub users: S<Vec<S<RawRegistrarUser>>>,
    pub algorithms: Option<S<Vec<S<String>>>>,
    pub min_expires_seconds: Option<S<u64>>,
    pub max_expires_seconds: Option<S<u64>>,
    pub default_expires_seconds: Option<S<u64>>,
    pub max_bindings_total: Option<S<u64>>,
    pub nonce_lifetime_seconds: Option<S<u64>>,
    pub database_path: Option<S<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRegistrarUser {
    pub user: S<String>,
    pub ha1_md5: S<String>,
    pub ha1_sha256: Option<S<String>>,
    pub max_bindings: Option<S<u64>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawNat {
    pub detect: Option<S<bool>>,
    pub keepalive: Option<RawKeepalive>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawCallAdmission {
    pub emergency_numbers: Option<Vec<S<String>>>,
    pub retry_after_seconds: Option<S<u64>>,
}
