//! Registration, both ways, as sans-IO state: the registrar's binding
//! table for users who register to Palisade ([`Bindings`], RFC 3261
//! section 10.3), and the client side that keeps Palisade registered to a
//! carrier ([`OutboundRegistration`], RFC 3261 section 10.2 with digest
//! authentication and back-off).
//!
//! Owns: the rules (expiry clamping and `423 Interval Too Brief`, wildcard
//! removal, Call-ID/CSeq ordering, per-user and global binding caps), the
//! expiry clock of every binding, and when to send, refresh or retry a
//! REGISTER and whether a carrier registration is currently up.
//!
//! Does not own: SIP messages, sockets, persistence or the clock. The call
//! engine (`palisade-b2bua`) parses REGISTERs into [`RegisterRequest`]s,
//! builds the messages [`Action`]s ask for, and persists [`Change`]s
//! through the store crate. Time is always an argument.
//!
//! Hand-written because it is Palisade policy, not a protocol library: no
//! crate offers a sans-IO registrar table.

mod bindings;
mod outbound;

pub use bindings::{
    Binding, BindingFlow, Bindings, Change, ContactRequest, ExpiryPolicy, RegisterError,
    RegisterRequest,
};
pub use outbound::{Action, OutboundRegistration, RegistrationTimers};
