//! SRTP/SRTCP per endpoint (RFC 3711, SDES keys per RFC 4568), on the
//! pure-Rust `libsrtp` crate (RustCrypto AES-CM and HMAC-SHA1).
//!
//! Why that crate: it supports the Master Key Identifier (Microsoft Teams
//! sends MKI), works in place on the packet buffer the relay owns (no copy),
//! and offers replay protection; webrtc-rs `rtc-srtp` has no MKI and returns
//! a fresh buffer per packet. One [`SrtpIn`] decrypts what a peer sends, one
//! [`SrtpOut`] encrypts what Palisade sends to it; each keeps its own
//! per-SSRC state (rollover counters, replay windows), spawned from one
//! template on the first packet of an SSRC. SRTCP always uses the 80-bit tag
//! (RFC 4568 §6.2.1: the _32 suites shorten only the SRTP tag).

use libsrtp::{MasterKey, ProtectionProfile, RecvSession, SendSession, StreamConfig};

use crate::api::{SrtpKey, SrtpSuite};

fn config(key: &SrtpKey) -> StreamConfig {
    let rtp = match key.suite {
        SrtpSuite::AesCm128HmacSha1_80 => ProtectionProfile::Aes128CmHmacSha180,
        SrtpSuite::AesCm128HmacSha1_32 => ProtectionProfile::Aes128CmHmacSha132,
    };
    let mki = key.mki.as_ref().map(|m| m.to_vec());
    let mut cfg = StreamConfig::new(
        vec![MasterKey::new(&key.master_key, &key.master_salt, &mki)],
        &rtp,
        &ProtectionProfile::Aes128CmHmacSha180,
    );
    // Wide enough for the reordering a jittery carrier leg shows.
    cfg.set_replay_window_size(256);
    cfg
}

/// Why an SRTP operation failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SrtpFailure {
    /// Authentication failed, replayed index, unknown MKI or short packet:
    /// the packet is dropped and counted as an SRTP failure.
    Rejected,
}

/// Decrypts what one peer sends.
pub struct SrtpIn {
    session: RecvSession,
    key: SrtpKey,
}

impl std::fmt::Debug for SrtpIn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SrtpIn").field("key", &self.key).finish()
    }
}

/// Where a packet's buffer goes after a failed in-place operation: the crate
/// consumed it, so a fresh one with the same capacity replaces it (only on
/// the failure path).
fn replacement(capacity: usize) -> Vec<u8> {
    Vec::with_capacity(capacity)
}

impl SrtpIn {
    /// A context for `key`; `None` when the crate refuses the key material.
    pub fn new(key: &SrtpKey) -> Option<SrtpIn> {
        let mut session = RecvSession::new();
        session.add_stream(None, &config(key)).ok()?;
        Some(SrtpIn {
            session,
            key: key.clone(),
        })
    }

    /// The key this context was built from.
    pub fn key(&self) -> &SrtpKey {
        &self.key
    }

    /// Decrypts the SRTP packet in `buf` in place.
    pub fn rtp(&mut self, buf: &mut Vec<u8>) -> Result<(), SrtpFailure> {
        let cap = buf.capacity();
        let packet = std::mem::take(buf);
        match self.session.rtp_unprotect(packet) {
            Ok(plain) => {
                *buf = plain;
                Ok(())
            }
            Err(_) => {
                *buf = replacement(cap);
                Err(SrtpFailure::Rejected)
            }
        }
    }

    /// Decrypts the SRTCP packet in `buf` in place.
    pub fn rtcp(&mut self, buf: &mut Vec<u8>) -> Result<(), SrtpFailure> {
        let cap = buf.capacity();
        let packet = std::mem::take(buf);
        match self.session.rtcp_unprotect(packet) {
            Ok(plain) => {
                *buf = plain;
                Ok(())
            }
            Err(_) => {
                *buf = replacement(cap);
                Err(SrtpFailure::Rejected)
            }
        }
    }
}

/// Encrypts what Palisade sends to one peer.
pub struct SrtpOut {
    session: SendSession,
    mki: Option<Vec<u8>>,
    key: SrtpKey,
}

impl std::fmt::Debug for SrtpOut {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SrtpOut").field("key", &self.key).finish()
    }
}

impl SrtpOut {
    /// A context for `key`; `None` when the crate refuses the key material.
    pub fn new(key: &SrtpKey) -> Option<SrtpOut> {
        let mut cfg = config(key);
        // A relay forwards what it gets: a peer's duplicate is re-sent, not
        // refused (the keystream for that index is the same either way).
        cfg.allow_send_repeat(true);
        let mut session = SendSession::new();
        session.add_stream(None, &cfg).ok()?;
        Some(SrtpOut {
            session,
            mki: key.mki.as_ref().map(|m| m.to_vec()),
            key: key.clone(),
        })
    }

    /// The key this context was built from.
    pub fn key(&self) -> &SrtpKey {
        &self.key
    }

    /// Encrypts the RTP packet in `buf` in place (the tag, and the MKI when
    /// used, are appended).
    pub fn rtp(&mut self, buf: &mut Vec<u8>) -> Result<(), SrtpFailure> {
        let cap = buf.capacity();
        let packet = std::mem::take(buf);
        match self.session.rtp_protect_mki(packet, &self.mki) {
            Ok(c) => {
                *buf = c;
                Ok(())
            }
            Err(_) => {
                *buf = replacement(cap);
                Err(SrtpFailure::Rejected)
            }
        }
    }

    /// Encrypts the RTCP packet in `buf` in place.
    pub fn rtcp(&mut self, buf: &mut Vec<u8>) -> Result<(), SrtpFailure> {
        let cap = buf.capacity();
        let packet = std::mem::take(buf);
        match self.session.rtcp_protect_mki(packet, &self.mki) {
            Ok(c) => {
                *buf = c;
                Ok(())
            }
            Err(_) => {
                *buf = replacement(cap);
                Err(SrtpFailure::Rejected)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use smallvec::SmallVec;

    fn key(suite: SrtpSuite, mki: Option<&[u8]>) -> SrtpKey {
        SrtpKey {
            suite,
            master_key: [7; 16],
            master_salt: [9; 14],
            mki: mki.map(SmallVec::from_slice),
        }
    }

    fn rtp_packet(seq: u16) -> Vec<u8> {
        let mut p = Vec::with_capacity(2048);
        p.extend_from_slice(&[0x80, 0, 0, 0, 0, 0, 0, 160, 0, 0, 0, 42]);
        p[2..4].copy_from_slice(&seq.to_be_bytes());
        p.extend_from_slice(&[0xd5; 160]);
        p
    }

    #[test]
    fn round_trip_all_suites_with_and_without_mki() {
        for suite in [
            SrtpSuite::AesCm128HmacSha1_80,
            SrtpSuite::AesCm128HmacSha1_32,
        ] {
            for mki in [None, Some(&[0, 0, 0, 1][..])] {
                let k = key(suite, mki);
                let mut out = SrtpOut::new(&k).unwrap();
                let mut inn = SrtpIn::new(&k).unwrap();
                let tag = match suite {
                    SrtpSuite::AesCm128HmacSha1_80 => 10,
                    SrtpSuite::AesCm128HmacSha1_32 => 4,
                };
                for seq in 0..5u16 {
                    let plain = rtp_packet(seq);
                    let mut buf = plain.clone();
                    out.rtp(&mut buf).unwrap();
                    assert_eq!(buf.len(), plain.len() + tag + mki.map_or(0, |m| m.len()));
                    assert_ne!(buf[12..172], plain[12..]);
                    inn.rtp(&mut buf).unwrap();
                    assert_eq!(buf, plain);
                }
                // Replay is refused; tampering is refused.
                let mut buf = rtp_packet(9);
                out.rtp(&mut buf).unwrap();
                let mut copy = buf.clone();
                inn.rtp(&mut buf).unwrap();
                assert_eq!(inn.rtp(&mut copy), Err(SrtpFailure::Rejected));
                let mut bad = rtp_packet(10);
                out.rtp(&mut bad).unwrap();
                bad[20] ^= 1;
                assert_eq!(inn.rtp(&mut bad), Err(SrtpFailure::Rejected));
                assert!(bad.capacity() >= 2048);
            }
        }
    }

    #[test]
    fn srtcp_round_trip() {
        let k = key(SrtpSuite::AesCm128HmacSha1_32, Some(&[5]));
        let mut out = SrtpOut::new(&k).unwrap();
        let mut inn = SrtpIn::new(&k).unwrap();
        let plain = crate::rtp::tests_support::rr();
        let mut buf = plain.clone();
        out.rtcp(&mut buf).unwrap();
        // index (4) + MKI (1) + 80-bit tag (10)
        assert_eq!(buf.len(), plain.len() + 4 + 1 + 10);
        inn.rtcp(&mut buf).unwrap();
        assert_eq!(buf, plain);
    }
}
