//! A bare RTP peer: sends PCMU packets from a chosen local address and
//! counts what comes back. For tests where the media source must differ from
//! what the SDP says (latching), which SIPp cannot do.

use std::net::{SocketAddr, UdpSocket};
use std::time::Duration;

use crate::net::now;

/// A UDP socket speaking minimal RTP.
#[derive(Debug)]
pub struct RtpPeer {
    socket: UdpSocket,
    seq: u16,
    ts: u32,
}

impl RtpPeer {
    /// Binds `local`.
    pub fn bind(local: SocketAddr) -> RtpPeer {
        let socket =
            UdpSocket::bind(local).unwrap_or_else(|e| panic!("bind RTP peer on {local}: {e}"));
        RtpPeer {
            socket,
            seq: 1,
            ts: 160,
        }
    }

    /// Sends `count` 20 ms PCMU packets (payload type 0) to `to`, paced at
    /// `gap` (a short gap keeps tests fast; the relay does not care).
    pub fn send(&mut self, to: SocketAddr, count: usize, gap: Duration) {
        for _ in 0..count {
            let mut pkt = Vec::with_capacity(172);
            pkt.extend_from_slice(&[0x80, 0x00]);
            pkt.extend_from_slice(&self.seq.to_be_bytes());
            pkt.extend_from_slice(&self.ts.to_be_bytes());
            pkt.extend_from_slice(&0x5a5a_0001u32.to_be_bytes());
            pkt.extend_from_slice(&[0xff; 160]);
            self.socket
                .send_to(&pkt, to)
                .unwrap_or_else(|e| panic!("send RTP to {to}: {e}"));
            self.seq = self.seq.wrapping_add(1);
            self.ts = self.ts.wrapping_add(160);
            std::thread::sleep(gap);
        }
    }

    /// Counts RTP packets received until `quiet` passes without one (at most `limit`).
    pub fn count_received(&self, quiet: Duration, limit: Duration) -> usize {
        let deadline = now() + limit;
        let _ = self.socket.set_read_timeout(Some(quiet));
        let mut buf = [0u8; 2048];
        let mut n = 0;
        while now() < deadline {
            match self.socket.recv_from(&mut buf) {
                Ok((len, _)) if len >= 12 && buf[0] >> 6 == 2 => n += 1,
                Ok(_) => {}
                Err(_) => break,
            }
        }
        n
    }
}
