//! Stream framing for SIP over TCP/TLS (RFC 3261 section 18.3, RFC 5626 section 3.5.1).
//!
//! A stream carries back-to-back messages, each delimited by its `Content-Length`
//! (mandatory on streams), interleaved with CRLF keepalives: a double CRLF is a
//! ping and a single CRLF is the pong that answers it. [`next_frame`] looks at
//! the front of a receive buffer and says how many bytes the next item takes; it
//! never copies. A framing error is fatal to the connection: a stream whose
//! message boundaries are lost cannot be resynchronised, so the caller closes it.

use crate::scan::{content_length_of_head, find_head_end};

/// What the front of a stream buffer holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Frame {
    /// A complete SIP message of this many bytes (head and body).
    Message(usize),
    /// A keepalive ping (`CRLF CRLF`), this many bytes; answer with a pong (`CRLF`).
    Ping(usize),
    /// A keepalive pong (a lone `CRLF`), this many bytes; nothing to answer.
    Pong(usize),
    /// Not enough bytes yet; read more and call again.
    Incomplete,
}

/// Why a stream cannot be framed. Every variant is the peer's fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FramingError {
    /// The message (or its unfinished head) exceeds the configured cap.
    #[error("message exceeds {limit} bytes")]
    TooLarge {
        /// The cap that was exceeded.
        limit: usize,
    },
    /// A message on a stream has no Content-Length (RFC 3261 section 18.3).
    #[error("message on a stream transport has no Content-Length")]
    MissingContentLength,
    /// Content-Length is not a number, or appears twice with different values.
    #[error("invalid Content-Length at byte {offset}")]
    BadContentLength {
        /// Byte offset of the offending header value.
        offset: usize,
    },
}

/// Frame the front of `buf`, refusing anything larger than `max_message_bytes`.
pub fn next_frame(buf: &[u8], max_message_bytes: usize) -> Result<Frame, FramingError> {
    if buf.starts_with(b"\r\n") {
        return Ok(match buf.get(2) {
            None => Frame::Incomplete,
            Some(b'\r') => match buf.get(3) {
                None => Frame::Incomplete,
                Some(b'\n') => Frame::Ping(4),
                // "\r\n\r" followed by something else: a pong, then garbage the
                // message parser will reject.
                Some(_) => Frame::Pong(2),
            },
            Some(_) => Frame::Pong(2),
        });
    }
    let Some(head_end) = find_head_end(buf) else {
        if buf.len() > max_message_bytes {
            return Err(FramingError::TooLarge {
                limit: max_message_bytes,
            });
        }
        return Ok(Frame::Incomplete);
    };
    let body_len = match content_length_of_head(&buf[..head_end]) {
        Ok(Some(n)) => n,
        Ok(None) => return Err(FramingError::MissingContentLength),
        Err(offset) => return Err(FramingError::BadContentLength { offset }),
    };
    let total = head_end
        .checked_add(body_len)
        .filter(|t| *t <= max_message_bytes)
        .ok_or(FramingError::TooLarge {
            limit: max_message_bytes,
        })?;
    if buf.len() < total {
        return Ok(Frame::Incomplete);
    }
    Ok(Frame::Message(total))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MSG: &[u8] = b"OPTIONS sip:a@b SIP/2.0\r\nContent-Length: 4\r\nVia: x\r\n\r\nbody";

    #[test]
    fn frames_one_message_and_keepalives() {
        assert_eq!(next_frame(MSG, 1000), Ok(Frame::Message(MSG.len())));
        assert_eq!(next_frame(b"\r\n\r\nINVITE", 1000), Ok(Frame::Ping(4)));
        assert_eq!(next_frame(b"\r\nINVITE", 1000), Ok(Frame::Pong(2)));
        assert_eq!(next_frame(b"\r\n", 1000), Ok(Frame::Incomplete));
        assert_eq!(next_frame(b"\r\n\r", 1000), Ok(Frame::Incomplete));
    }

    #[test]
    fn waits_for_body_and_head() {
        assert_eq!(
            next_frame(&MSG[..MSG.len() - 1], 1000),
            Ok(Frame::Incomplete)
        );
        assert_eq!(next_frame(&MSG[..20], 1000), Ok(Frame::Incomplete));
    }

    #[test]
    fn compact_and_case_insensitive_length() {
        let m = b"BYE sip:a@b SIP/2.0\r\nl:   2\r\n\r\nab";
        assert_eq!(next_frame(m, 1000), Ok(Frame::Message(m.len())));
        let m = b"BYE sip:a@b SIP/2.0\r\ncontent-LENGTH:2\r\n\r\nabEXTRA";
        assert_eq!(next_frame(m, 1000), Ok(Frame::Message(m.len() - 5)));
    }

    #[test]
    fn rejects_bad_streams() {
        let m = b"BYE sip:a@b SIP/2.0\r\nVia: x\r\n\r\n";
        assert_eq!(next_frame(m, 1000), Err(FramingError::MissingContentLength));
        let m = b"BYE sip:a@b SIP/2.0\r\nContent-Length: x1\r\n\r\n";
        assert!(matches!(
            next_frame(m, 1000),
            Err(FramingError::BadContentLength { .. })
        ));
        let m = b"BYE sip:a@b SIP/2.0\r\nl: 1\r\nContent-Length: 2\r\n\r\n";
        assert!(matches!(
            next_frame(m, 1000),
            Err(FramingError::BadContentLength { .. })
        ));
        assert_eq!(
            next_frame(MSG, 20),
            Err(FramingError::TooLarge { limit: 20 })
        );
        let huge = vec![b'a'; 50];
        assert_eq!(
            next_frame(&huge, 20),
            Err(FramingError::TooLarge { limit: 20 })
        );
        let m = b"BYE sip:a@b SIP/2.0\r\nl: 99999999999999999999999\r\n\r\n";
        assert!(next_frame(m, 1000).is_err());
    }
}
