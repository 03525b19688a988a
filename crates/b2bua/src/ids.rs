//! Identifiers Palisade generates: Call-IDs, tags and Via branches.
//!
//! They must be unguessable (an attacker who can predict a dialog's Call-ID
//! and tags can inject BYEs), so they come from a seeded CSPRNG (ChaCha via
//! `StdRng`); the binary seeds it from the OS, tests seed it with constants.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const ALPHABET: &[u8; 32] = b"abcdefghijkmnpqrstuvwxyz23456789";

/// Generator for every identifier the engine writes.
#[derive(Debug)]
pub struct IdGen {
    rng: StdRng,
}

impl IdGen {
    /// A generator from a 32-byte seed.
    pub fn new(seed: [u8; 32]) -> Self {
        IdGen {
            rng: StdRng::from_seed(seed),
        }
    }

    /// `n` characters of base32 (5 bits each) from the CSPRNG.
    fn token(&mut self, n: usize) -> String {
        let mut out = String::with_capacity(n);
        let mut bits = 0u64;
        let mut left = 0;
        for _ in 0..n {
            if left < 5 {
                bits = self.rng.next_u64();
                left = 64;
            }
            out.push(char::from(ALPHABET[(bits & 31) as usize]));
            bits >>= 5;
            left -= 5;
        }
        out
    }

    /// A tag: 80 bits.
    pub fn tag(&mut self) -> String {
        self.token(16)
    }

    /// A Call-ID: 130 bits, no host part (a host would name us).
    pub fn call_id(&mut self) -> String {
        self.token(26)
    }

    /// A Via branch with the RFC 3261 magic cookie: 80 bits.
    pub fn branch(&mut self) -> String {
        let mut b = String::from("z9hG4bK");
        b.push_str(&self.token(16));
        b
    }

    /// 64 random bits (keys, client nonces).
    pub(crate) fn random_u64(&mut self) -> u64 {
        self.rng.next_u64()
    }

    /// Fills `buf` with random bytes (secret keys).
    pub(crate) fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            let r = self.rng.next_u64().to_le_bytes();
            chunk.copy_from_slice(&r[..chunk.len()]);
        }
    }

    /// A random 31-bit initial CSeq.
    pub fn cseq(&mut self) -> u32 {
        // Leave room to count up without crossing 2^31.
        (self.rng.next_u32() & 0x3fff_ffff) | 1
    }
}
