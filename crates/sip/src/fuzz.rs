//! Entry points for the fuzz targets in `fuzz/`, public (but hidden) so a
//! stable unit test can run the seed corpora through the same code.

use bytes::Bytes;

use crate::framing::{Frame, next_frame};
use crate::{Editor, Message, ParseLimits, salvage_request};

/// Parses `data`; on success, exercises every typed accessor and checks that
/// an edited copy re-parses to the same identity. On failure, salvages.
/// Panics only on a real bug.
pub fn message(data: &[u8]) {
    let limits = ParseLimits::default();
    match Message::parse(Bytes::copy_from_slice(data), &limits) {
        Ok(m) => {
            let _ = m.request_uri();
            let _ = (
                m.from(),
                m.to(),
                m.top_via(),
                m.max_forwards(),
                m.expires(),
                m.retry_after(),
            );
            for v in m.vias() {
                let _ = v.map(|v| (v.branch(), v.rport(), v.received()));
            }
            let _ = m.contacts().count() + m.routes().count() + m.record_routes().count();
            let _ = m.tokens(crate::HeaderName::Allow).count();
            let mut e = Editor::new(&m);
            e.append("X-Fuzz", b"1");
            if let Some(h) = m.headers().find(|h| h.name == crate::HeaderName::Other) {
                e.remove(h.index);
            }
            let out = e.finish();
            let again = match Message::parse(
                out,
                &ParseLimits {
                    max_message_bytes: usize::MAX,
                    ..limits
                },
            ) {
                Ok(a) => a,
                Err(err) => panic!("edited message no longer parses: {err}"),
            };
            assert_eq!(again.call_id(), m.call_id());
            assert_eq!(again.cseq(), m.cseq());
            assert_eq!(again.from_tag(), m.from_tag());
            assert_eq!(again.to_tag(), m.to_tag());
            assert_eq!(again.branch(), m.branch());
            assert_eq!(again.body(), m.body());
        }
        Err(e) => {
            assert!(e.offset <= data.len().max(limits.max_message_bytes));
            if let Some(s) = salvage_request(data) {
                let r = s.response(400, "Bad Request", "fuzz", &e.to_string(), None);
                // Our own 400 must always parse.
                if let Err(err) = Message::parse(
                    r,
                    &ParseLimits {
                        max_message_bytes: usize::MAX,
                        ..limits
                    },
                ) {
                    panic!("salvaged 400 does not parse: {err}");
                }
            }
        }
    }
}

/// Frames `data` as a stream, split at every possible point of the first
/// byte, and checks that framing is consistent.
pub fn framing(data: &[u8]) {
    let max = 64 * 1024;
    let mut pos = 0;
    let mut steps = 0;
    while pos < data.len() && steps < 10_000 {
        steps += 1;
        match next_frame(&data[pos..], max) {
            Ok(Frame::Message(n)) | Ok(Frame::Ping(n)) | Ok(Frame::Pong(n)) => {
                assert!(n > 0 && pos + n <= data.len());
                // A strict prefix of a complete frame is never complete.
                assert_eq!(
                    next_frame(&data[pos..pos + n - 1], max),
                    Ok(Frame::Incomplete)
                );
                pos += n;
            }
            Ok(Frame::Incomplete) | Err(_) => break,
        }
    }
}
