//! Palisade's DNS: trunk members given by name (`host:`) resolved with
//! RFC 3263 into ordered lists of concrete targets, kept fresh by TTL.
//!
//! Owns: the RFC 3263 procedure (NAPTR, SRV with RFC 2782 weighted ordering
//! on an injected RNG, A/AAAA) in [`rfc3263`], sans-IO behind its
//! [`rfc3263::Lookup`] trait; the refresh schedule (TTL clamping, refresh
//! before expiry, negative caching, backoff after failures, serve-stale) in
//! [`schedule`], on an injected clock; and the resolver task
//! ([`resolver::spawn`]) that runs both on tokio with `hickory-resolver` and
//! sends each trunk's complete, ordered target list over a bounded channel
//! whenever it changes.
//!
//! Does not own: what a call does with the targets, nor their health (the
//! engine, `palisade_b2bua::health`), nor the channel into the engine (the
//! binary forwards lists with `Engine::set_trunk_targets`).
//!
//! The DNS wire protocol, transports and per-query retries are
//! `hickory-resolver`'s (maintained, MIT/Apache-2.0); its own cache is
//! turned off so that the TTL policy here is the only one. Only the SIP
//! specific parts are written here, because no crate implements RFC 3263.

mod error;
pub mod resolver;
pub mod rfc3263;
pub mod schedule;

pub use error::DnsError;
pub use resolver::{ResolverHandle, TrunkTarget, TrunkTargets, spawn};
pub use rfc3263::{Outcome, Resolved};
