//! Parse errors. Everything here is the peer's fault: a message that cannot be
//! parsed was malformed when it arrived. Each error names the byte offset where
//! parsing stopped, so a log line or a 400's Warning can point at it.

use crate::HeaderName;

/// A message that could not be parsed, and where.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{kind} at byte {offset}")]
pub struct ParseError {
    /// What was wrong.
    pub kind: ErrorKind,
    /// Byte offset into the message where the problem was found.
    pub offset: usize,
}

impl ParseError {
    pub(crate) fn new(kind: ErrorKind, offset: usize) -> Self {
        ParseError { kind, offset }
    }

    /// The status a request with this error deserves: 505 for an unsupported
    /// SIP version, 513 for an oversize message, 483 for Max-Forwards 0
    /// handled elsewhere; 400 otherwise.
    pub fn status_code(&self) -> u16 {
        match self.kind {
            ErrorKind::BadVersion => 505,
            ErrorKind::TooLarge { .. } => 513,
            _ => 400,
        }
    }
}

/// The kinds of malformation the parser rejects.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ErrorKind {
    /// Nothing but whitespace.
    #[error("empty message")]
    Empty,
    /// The message exceeds the configured size cap.
    #[error("message exceeds {limit} bytes")]
    TooLarge {
        /// The cap.
        limit: usize,
    },
    /// More header lines than the configured cap.
    #[error("more than {limit} header lines")]
    TooManyHeaders {
        /// The cap.
        limit: usize,
    },
    /// No empty line ends the message head.
    #[error("message head is not terminated by an empty line")]
    HeadUnterminated,
    /// The first line is neither a Request-Line nor a Status-Line.
    #[error("malformed start line")]
    BadStartLine,
    /// A SIP version other than SIP/2.0.
    #[error("unsupported SIP version")]
    BadVersion,
    /// The method is not a token.
    #[error("malformed method")]
    BadMethod,
    /// The Request-URI is empty, has whitespace, or has no scheme.
    #[error("malformed Request-URI")]
    BadRequestUri,
    /// The status code is not three digits in 100..=699.
    #[error("malformed status code")]
    BadStatusCode,
    /// A header line without a colon or with an invalid name.
    #[error("malformed header line")]
    BadHeaderLine,
    /// A NUL byte in the message head.
    #[error("NUL byte in message head")]
    Nul,
    /// A mandatory header is absent.
    #[error("missing {0:?} header")]
    MissingHeader(HeaderName),
    /// A header that must appear once appears more than once.
    #[error("{0:?} header appears more than once")]
    DuplicateHeader(HeaderName),
    /// Content-Length is not a number or values conflict.
    #[error("invalid Content-Length")]
    BadContentLength,
    /// Content-Length claims more bytes than the message carries.
    #[error("Content-Length {declared} exceeds the {available} body bytes received")]
    BodyTruncated {
        /// What Content-Length said.
        declared: usize,
        /// What arrived.
        available: usize,
    },
    /// CSeq is not `number method`, or the number is out of range.
    #[error("malformed CSeq")]
    BadCSeq,
    /// The CSeq method differs from the request method.
    #[error("CSeq method does not match the request method")]
    CSeqMethodMismatch,
    /// A header value that does not follow its grammar.
    #[error("malformed {0:?} header value")]
    BadHeaderValue(HeaderName),
}

/// A typed value that failed to decode: what and where, relative to the
/// start of the decoded text. Message accessors turn it into a [`ParseError`]
/// with an absolute offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{what} at offset {at}")]
pub struct DecodeError {
    /// What was expected.
    pub what: &'static str,
    /// Offset into the decoded text.
    pub at: usize,
}

impl DecodeError {
    pub(crate) const fn new(what: &'static str, at: usize) -> Self {
        DecodeError { what, at }
    }
}
