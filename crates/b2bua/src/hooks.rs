//! Seams where other crates plug into the call engine without the engine
//! knowing them: media anchoring ([`MediaHook`]) and the guard
//! ([`GuardHook`]). Both are called synchronously from the engine with the
//! engine's `now`; an implementation that talks to threads (the relay, the
//! nftables programmer) does so over bounded channels it owns, and must
//! never block.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use palisade_config::{Trunk, TrunkId, Zone};
use palisade_sip::Message;

use crate::{CallRef, EndReason, Flow, Side};

/// Whether an SDP body is an offer or the answer to one (RFC 3264).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SdpKind {
    /// An offer: INVITE or UPDATE with SDP, or the 2xx of an INVITE that had none.
    Offer,
    /// The answer to the pending offer: 18x/2xx to an offer, or the ACK
    /// carrying the answer to a 2xx offer.
    Answer,
}

/// Everything a media implementation knows about one SDP crossing.
#[derive(Debug, Clone, Copy)]
pub struct SdpContext<'a> {
    /// The call.
    pub call: CallRef,
    /// The leg the SDP came from; it is sent on the other leg.
    pub from: Side,
    /// Offer or answer.
    pub kind: SdpKind,
    /// Carried in a provisional response (early media).
    pub early: bool,
    /// Zone of the sending leg.
    pub from_zone: &'a Zone,
    /// Zone of the receiving leg.
    pub to_zone: &'a Zone,
    /// Trunk of the sending leg.
    pub from_trunk: &'a Trunk,
    /// Trunk of the receiving leg.
    pub to_trunk: &'a Trunk,
    /// Signalling address of the sender (a hint for latching behind NAT).
    pub from_peer: SocketAddr,
    /// The sender is behind a NAT (detected on its INVITE or registration):
    /// its SDP addresses are not where its media comes from.
    pub from_nated: bool,
    /// The receiver is behind a NAT.
    pub to_nated: bool,
}

/// Why media could not be set up; the engine answers the offer with
/// `status` (488 for unacceptable SDP, 503 when out of ports) or ends the
/// call when it was an answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MediaRefusal {
    /// SIP status for the sender of the offer.
    pub status: u16,
    /// Stable name for logs and metrics.
    pub reason: &'static str,
}

/// Media anchoring. Every SDP body that crosses from one leg to the other
/// passes through [`MediaHook::sdp`], which returns the body to send.
pub trait MediaHook: Send + std::fmt::Debug {
    /// Rewrites `sdp` (from leg `ctx.from`) for the other leg.
    fn sdp(
        &mut self,
        now: Instant,
        ctx: &SdpContext<'_>,
        sdp: &[u8],
    ) -> Result<Bytes, MediaRefusal>;
    /// The call ended: release its media resources.
    fn release(&mut self, now: Instant, call: CallRef);
}

/// The default before media anchoring: SDP passes through except the
/// `o=` line, which names the originator's host and is rewritten with the
/// receiving zone's address.
#[derive(Debug, Default, Clone, Copy)]
pub struct OriginOnly;

impl MediaHook for OriginOnly {
    fn sdp(
        &mut self,
        _now: Instant,
        ctx: &SdpContext<'_>,
        sdp: &[u8],
    ) -> Result<Bytes, MediaRefusal> {
        Ok(crate::sdp::rewrite_origin(sdp, ctx.to_zone.sip_address))
    }

    fn release(&mut self, _now: Instant, _call: CallRef) {}
}

/// What the guard decides about a request or a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Verdict {
    /// Carry on.
    Allow,
    /// Drop silently (banned or flooding source: no answer costs least).
    Drop,
    /// Refuse with this status (403, 503 with Retry-After, 603...).
    Reject(u16),
}

/// A call about to be routed, as the guard sees it.
#[derive(Debug, Clone, Copy)]
pub struct CallInfo<'a> {
    /// Palisade's reference for the call.
    pub call: CallRef,
    /// Where the INVITE came from.
    pub source: SocketAddr,
    /// The trunk it came from.
    pub from_trunk: &'a Trunk,
    /// The trunk it is routed to.
    pub to_trunk: &'a Trunk,
    /// The caller (From user part or number).
    pub caller: &'a str,
    /// The dialled number.
    pub number: &'a str,
}

/// How a call ended, as the guard sees it.
#[derive(Debug, Clone, Copy)]
pub struct CallEnd {
    /// Why.
    pub reason: EndReason,
    /// Final status for calls that never connected.
    pub status: Option<u16>,
    /// Whether it was answered.
    pub answered: bool,
    /// Talk time (zero if never answered).
    pub duration: Duration,
}

/// DoS protection and fraud detection. Every method has a permissive
/// default, so an implementation overrides only what it polices.
pub trait GuardHook: Send + std::fmt::Debug {
    /// Every parsed request, before anything else; `trunk` is the source's
    /// trunk in that zone, if any.
    fn request(
        &mut self,
        _now: Instant,
        _flow: &Flow,
        _trunk: Option<TrunkId>,
        _msg: &Message,
    ) -> Verdict {
        Verdict::Allow
    }

    /// A message from `flow` that did not parse.
    fn malformed(&mut self, _now: Instant, _flow: &Flow) {}

    /// A new call, routed, before Palisade sends anything on its B leg.
    fn call_start(&mut self, _now: Instant, _info: &CallInfo<'_>) -> Verdict {
        Verdict::Allow
    }

    /// The call was answered.
    fn call_answered(&mut self, _now: Instant, _call: CallRef) {}

    /// The call ended.
    fn call_ended(&mut self, _now: Instant, _call: CallRef, _end: &CallEnd) {}

    /// Digest credentials from `flow` failed (wrong password, unknown user,
    /// forged or foreign nonce) for the claimed `user`. The peer got the
    /// same 401/407 challenge as for a first attempt, so counting these
    /// per source is how brute force (svcrack) and enumeration show up.
    fn auth_failed(&mut self, _now: Instant, _flow: &Flow, _user: &str) {}
}

/// The default: no policing.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoGuard;

impl GuardHook for NoGuard {}
