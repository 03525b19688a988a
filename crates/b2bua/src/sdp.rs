//! The one SDP change topology hiding needs before media anchoring exists:
//! the `o=` line names the originator's host, so it is rewritten with
//! Palisade's own address and an anonymous username. Session id and version
//! pass through (they are numbers the originator increments per offer).
//! Everything else is untouched; the media crate will own SDP later.

use std::net::IpAddr;

use bytes::{BufMut, Bytes, BytesMut};

/// Rewrites every `o=` line of `sdp` to `o=- <sess-id> <sess-version> IN IP4|IP6 <addr>`.
/// Returns the input unchanged if it has no well-formed `o=` line.
pub fn rewrite_origin(sdp: &[u8], addr: IpAddr) -> Bytes {
    let mut out = BytesMut::with_capacity(sdp.len() + 16);
    let mut rest = sdp;
    while !rest.is_empty() {
        let (line, term, next) = match memchr_nl(rest) {
            Some(i) => {
                let l = &rest[..i];
                let (l, t): (&[u8], &[u8]) = match l.strip_suffix(b"\r") {
                    Some(s) => (s, b"\r\n"),
                    None => (l, b"\n"),
                };
                (l, t, &rest[i + 1..])
            }
            None => (rest, &b""[..], &b""[..]),
        };
        match rewrite_o_line(line, addr) {
            Some(new) => out.put_slice(new.as_bytes()),
            None => out.put_slice(line),
        }
        out.put_slice(term);
        rest = next;
    }
    out.freeze()
}

fn memchr_nl(b: &[u8]) -> Option<usize> {
    b.iter().position(|&c| c == b'\n')
}

fn rewrite_o_line(line: &[u8], addr: IpAddr) -> Option<String> {
    let text = std::str::from_utf8(line.strip_prefix(b"o=")?).ok()?;
    let f: Vec<&str> = text.split(' ').collect();
    if f.len() != 6 {
        return None;
    }
    let (atype, a) = match addr {
        IpAddr::V4(a) => ("IP4", a.to_string()),
        IpAddr::V6(a) => ("IP6", a.to_string()),
    };
    Some(format!("o=- {} {} IN {atype} {a}", f[1], f[2]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rewrites_only_origin() {
        let sdp = b"v=0\r\no=pbx 123 456 IN IP4 10.0.0.10\r\ns=call\r\nc=IN IP4 10.0.0.10\r\n";
        let out = rewrite_origin(sdp, "127.0.0.2".parse().unwrap());
        assert_eq!(
            &out[..],
            b"v=0\r\no=- 123 456 IN IP4 127.0.0.2\r\ns=call\r\nc=IN IP4 10.0.0.10\r\n"
        );
        let v6 = rewrite_origin(b"o=a 1 2 IN IP4 h\n", "::1".parse().unwrap());
        assert_eq!(&v6[..], b"o=- 1 2 IN IP6 ::1\n");
        assert_eq!(
            &rewrite_origin(b"o=broken\r\n", "::1".parse().unwrap())[..],
            b"o=broken\r\n"
        );
    }
}
