//! Palisade's SIP message codec.
//!
//! Owns: turning bytes into SIP messages and back. Parsing is lossless and
//! zero-copy: a [`Message`] keeps the received bytes and an index of byte
//! spans (start line, one entry per header line, body); typed values (Via,
//! From/To, CSeq, Contact, URIs, ...) are decoded on demand from those spans.
//! Outgoing messages are written with [`MessageWriter`] (new messages, copying
//! any original header line byte-exact) or [`Editor`] (recorded edits applied
//! over the original when serialised), so headers nobody touched leave exactly
//! as they came. [`framing`] delimits messages on TCP/TLS streams.
//!
//! Does not own: transactions, dialogs, sockets or policy (which headers may
//! cross between legs). Those live in `palisade-transaction`, `palisade-b2bua`
//! and `palisade-transport`.
//!
//! Why hand-written: the codec is the core of a B2BUA's hot path and its
//! attack surface. The one published Rust SIP codec (`sip-codec`) is built on
//! bytes 0.4 / nom 4 and is not lossless; Kamailio's lazy, lump-based design is
//! the model here.

pub mod framing;
#[doc(hidden)]
pub mod fuzz;
mod scan;
mod transport;

pub use transport::{Transport, UnknownTransport};

/// A byte range into a message buffer. Messages are capped well below 4 GiB,
/// so offsets are `u32` to keep the header index small.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub struct Span {
    start: u32,
    end: u32,
}

impl Span {
    /// A span from `start` to `end` (exclusive). Offsets beyond `u32` saturate.
    pub fn new(start: usize, end: usize) -> Self {
        let c = |v: usize| u32::try_from(v).unwrap_or(u32::MAX);
        Span {
            start: c(start),
            end: c(end.max(start)),
        }
    }

    /// Offset of the first byte.
    pub fn start(self) -> usize {
        self.start as usize
    }

    /// Offset just past the last byte.
    pub fn end(self) -> usize {
        self.end as usize
    }

    /// Length in bytes.
    pub fn len(self) -> usize {
        (self.end - self.start) as usize
    }

    /// Whether the span is empty.
    pub fn is_empty(self) -> bool {
        self.start == self.end
    }

    /// The bytes this span covers in `buf`. Empty if out of range.
    pub fn of(self, buf: &[u8]) -> &[u8] {
        buf.get(self.start()..self.end()).unwrap_or(&[])
    }
}

mod error;
mod headers;
mod message;
mod method;
mod name;
mod params;
mod reason;
mod uri;
mod write;

pub use error::{DecodeError, ErrorKind, ParseError};
pub use headers::{CSeq, NameAddr, Via, parse_delta};
pub use message::{Header, HeaderRef, Message, ParseLimits};
pub use method::Method;
pub use name::HeaderName;
pub use params::{Params, split_list, unquote};
pub use reason::reason_phrase;
pub use uri::{Host, SipScheme, SipUri, TelUri, Uri};
pub use write::{Editor, MessageWriter, Salvaged, push_ip, salvage_request};
