//! The per-leg message pipeline seam.
//!
//! The engine builds every outgoing message from its own state (topology
//! hiding by construction), then hands it to the trunk's stages, in order,
//! before it is sent. Stages see the message as the peer will receive it
//! and edit it through the codec's [`Editor`]; normalization rules, NAT
//! fix-ups and header policy plug in here. A trunk with no stages pays
//! nothing: the message is not re-parsed.

use palisade_config::TrunkId;
use palisade_sip::{Editor, Message};

/// Which way a message is going relative to Palisade.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// Received from the peer.
    Inbound,
    /// About to be sent to the peer.
    Outbound,
}

/// What a stage knows about the message it edits.
#[derive(Debug, Clone, Copy)]
pub struct StageContext<'a> {
    /// The trunk on this leg.
    pub trunk: TrunkId,
    /// The trunk's name, for logs and rule matching.
    pub trunk_name: &'a str,
    /// Direction of the message.
    pub direction: Direction,
    /// For messages Palisade relays, the message received on the other leg
    /// (a stage may copy from it what policy allows). Set for the initial
    /// INVITE of a call (the caller's INVITE).
    pub source: Option<&'a Message>,
    /// For outbound messages of a call, the trunk of the other leg (where
    /// the call came from or goes to); `None` for inbound messages and
    /// messages outside a call.
    pub other_trunk: Option<TrunkId>,
}

/// One step of a leg's pipeline.
pub trait Stage: Send + Sync + std::fmt::Debug {
    /// A short name for logs and the dry-run tool.
    fn name(&self) -> &'static str;
    /// Records edits on `edit` (whose message is the one to process).
    fn apply(&self, ctx: &StageContext<'_>, edit: &mut Editor<'_>);
}
