//! Call and leg state. A call is two legs; each leg is one SIP dialog with
//! its own identifiers, so nothing identifying one side is needed to build
//! messages for the other.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use palisade_config::{Config, TrunkId, Zone};
use palisade_sip::{HeaderName, MessageWriter, Method, Transport};
use palisade_transaction::Uas2xxRetransmitter;

use crate::TxnId;

/// Where a message goes or came from: the zone's listener for a transport,
/// and the peer's address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Flow {
    /// The zone (and so the local address) the message uses.
    pub zone: palisade_config::ZoneId,
    /// UDP or TCP.
    pub transport: Transport,
    /// The peer's address and port.
    pub remote: SocketAddr,
}

/// Which leg of a call: A is where the initial INVITE arrived, B is the leg
/// Palisade opened toward the destination trunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Side {
    /// The caller's leg.
    A,
    /// The callee's leg.
    B,
}

impl Side {
    /// The other leg.
    pub fn other(self) -> Side {
        match self {
            Side::A => Side::B,
            Side::B => Side::A,
        }
    }
}

/// Palisade's own reference for a call, shared by both legs in logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CallRef(pub u64);

impl std::fmt::Display for CallRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

/// Writes `host` for a URI or Via: IPv6 in brackets.
pub(crate) fn host_str(ip: IpAddr) -> String {
    let mut out = String::with_capacity(41);
    palisade_sip::push_ip(&mut out, ip, true);
    out
}

/// Our listening port on `zone` for `transport`.
pub(crate) fn zone_port(zone: &Zone, transport: Transport) -> u16 {
    match transport {
        Transport::Udp => zone.udp_port,
        Transport::Tcp | Transport::Tls => zone.tcp_port,
    }
}

/// One dialog: Palisade's view of a call leg.
#[derive(Debug)]
pub(crate) struct Leg {
    pub trunk: TrunkId,
    /// Where requests to this peer go (the address the dialog was set up
    /// with: the caller's source address on A, the chosen member on B).
    pub flow: Flow,
    pub call_id: String,
    pub local_tag: String,
    pub remote_tag: Option<String>,
    /// From value (with our tag) for requests Palisade sends on this leg.
    pub local_hdr: String,
    /// To value without tag for requests Palisade sends on this leg.
    pub remote_base: String,
    /// The peer's Contact URI: Request-URI of in-dialog requests.
    pub remote_target: String,
    /// Route values for in-dialog requests (from Record-Route).
    pub route_set: Vec<String>,
    /// CSeq of the next request Palisade sends on this leg.
    pub next_cseq: u32,
    /// Highest CSeq the peer used in a request (ordering check).
    pub remote_cseq: u32,
    /// Our Contact value on this leg.
    pub contact: String,
    /// The peer is behind a NAT (its INVITE's Via, Contact or SDP `c=`
    /// disagreed with its source, or its registration was NATed): media
    /// toward it must latch.
    pub nated: bool,
}

impl Leg {
    /// To value for requests on this leg: the base plus the peer's tag.
    pub fn remote_hdr(&self) -> String {
        match &self.remote_tag {
            Some(t) => format!("{};tag={t}", self.remote_base),
            None => self.remote_base.clone(),
        }
    }

    /// Starts an in-dialog request on this leg; returns the writer and the
    /// CSeq used. `cseq` reuses a number (ACK uses the INVITE's).
    pub fn request(
        &mut self,
        method: &Method,
        zone: &Zone,
        branch: &str,
        cseq: Option<u32>,
        user_agent: &str,
        max_forwards: u8,
    ) -> (MessageWriter, u32) {
        let seq = match cseq {
            Some(s) => s,
            None => {
                let s = self.next_cseq;
                self.next_cseq = self.next_cseq.wrapping_add(1) & 0x7fff_ffff;
                s
            }
        };
        let mut w = MessageWriter::request(method, &self.remote_target);
        w.header_fmt(
            HeaderName::Via,
            format_args!(
                "SIP/2.0/{} {}:{};branch={branch};rport",
                self.flow.transport.via_token(),
                host_str(zone.sip_address),
                zone_port(zone, self.flow.transport)
            ),
        );
        w.header_fmt(HeaderName::MaxForwards, format_args!("{max_forwards}"));
        w.header(HeaderName::From, &self.local_hdr);
        w.header(HeaderName::To, &self.remote_hdr());
        w.header(HeaderName::CallId, &self.call_id);
        w.header_fmt(HeaderName::CSeq, format_args!("{seq} {method}"));
        for r in &self.route_set {
            w.header(HeaderName::Route, r);
        }
        if *method != Method::Ack && *method != Method::Cancel {
            w.header(HeaderName::UserAgent, user_agent);
        }
        (w, seq)
    }
}

/// Where the call is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CallState {
    /// INVITE sent on B, no final response relayed to A yet.
    Early,
    /// 2xx relayed to A, waiting for A's ACK.
    Answered,
    /// Both legs confirmed.
    Confirmed,
    /// Ended from the caller's point of view; waiting for B-side
    /// transactions (CANCEL, BYE, late answers) to finish.
    Ending,
}

/// One try of the initial INVITE toward one trunk member.
#[derive(Debug)]
pub(crate) struct Attempt {
    pub txn: TxnId,
    pub member: usize,
    /// Any response (even 100) arrived: the member is alive.
    pub responded: bool,
    /// A provisional arrived, so a CANCEL may be sent (RFC 3261 9.1).
    pub provisional: bool,
    /// Palisade gave up on this attempt (timeout, cancel); a late 2xx is
    /// answered with ACK and BYE.
    pub abandoned: bool,
    pub cancel_sent: bool,
    /// A final response or timeout ended this attempt.
    pub done: bool,
}

/// An INVITE being relayed from one leg to the other (the initial one, or
/// a re-INVITE), up to the ACK.
#[derive(Debug)]
pub(crate) struct InviteRelay {
    /// Leg the INVITE came from.
    pub origin: Side,
    /// Server transaction of the INVITE on the origin leg.
    pub server: TxnId,
    /// Client transaction of the INVITE on the other leg (re-INVITE only;
    /// the initial INVITE uses the attempts).
    pub client: Option<TxnId>,
    /// The INVITE carried the offer, so the target leg's ACK has no body
    /// and is sent as soon as the 2xx arrives; otherwise (late offer) the
    /// ACK carries the answer from the origin's ACK.
    pub offer_in_invite: bool,
    /// CSeq of the INVITE on the target leg (the ACK reuses it).
    pub target_cseq: u32,
    /// The 2xx was relayed to the origin.
    pub answered: bool,
    /// Retransmits the relayed 2xx until the origin ACKs (RFC 3261 13.3.1.4).
    pub retrans: Option<Uas2xxRetransmitter>,
}

/// A call: two legs and what connects them.
#[derive(Debug)]
pub(crate) struct Call {
    /// Config snapshot the call was set up with (reloads do not disturb it).
    pub cfg: Arc<Config>,
    pub state: CallState,
    pub a: Leg,
    pub b: Leg,
    pub out_trunk: TrunkId,
    /// The targets this call walks, fixed at its start (see `crate::health`).
    pub targets: Vec<crate::health::Target>,
    pub attempts: Vec<Attempt>,
    /// The initial INVITE's relay, then re-INVITEs one at a time.
    pub invite: Option<InviteRelay>,
    /// The last ACK sent on the target leg of an answered INVITE, re-sent on
    /// every 2xx retransmission.
    pub last_ack: Option<(Side, Bytes)>,
    /// The final status relayed to A (or to be relayed when B-side work ends).
    pub final_status: Option<u16>,
    pub started_at: Instant,
    pub answered_at: Option<Instant>,
    /// A 2xx for the initial INVITE was sent to leg A (leg A has a dialog).
    pub a_answered: bool,
    /// Client transactions of this call still waiting for a final answer.
    pub outstanding: u32,
    pub end_reason: Option<crate::EndReason>,
    /// Counted as answered in stats (for CDR-style accounting).
    pub cancelled: bool,
}

impl Call {
    pub fn leg(&self, side: Side) -> &Leg {
        match side {
            Side::A => &self.a,
            Side::B => &self.b,
        }
    }

    pub fn leg_mut(&mut self, side: Side) -> &mut Leg {
        match side {
            Side::A => &mut self.a,
            Side::B => &mut self.b,
        }
    }
}
