//! A fast hasher for the SFU's per-packet tables (session ids, socket
//! addresses). The standard SipHash resists collision attacks, which these
//! tables do not need: session ids are ours, and a source address enters
//! `by_addr` only after a session accepted a datagram from it (a STUN check
//! with its credentials). Every forwarded packet looks up a few sessions,
//! so the cost of each hash counts.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

/// Multiply-rotate hashing, 8 bytes at a time (as rustc's FxHasher).
#[derive(Debug, Default, Clone, Copy)]
pub struct FastHasher(u64);

const K: u64 = 0x517c_c1b7_2722_0a95;

impl FastHasher {
    fn add(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(K);
    }
}

impl Hasher for FastHasher {
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.add(u64::from_le_bytes(word));
        }
    }

    fn write_u8(&mut self, n: u8) {
        self.add(n as u64);
    }

    fn write_u16(&mut self, n: u16) {
        self.add(n as u64);
    }

    fn write_u32(&mut self, n: u32) {
        self.add(n as u64);
    }

    fn write_u64(&mut self, n: u64) {
        self.add(n);
    }

    fn write_usize(&mut self, n: usize) {
        self.add(n as u64);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

/// A `HashMap` with [`FastHasher`].
pub type FastMap<K, V> = HashMap<K, V, BuildHasherDefault<FastHasher>>;

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::SocketAddr;

    #[test]
    fn distinct_keys_spread_and_equal_keys_agree() {
        let mut m: FastMap<SocketAddr, u32> = FastMap::default();
        for port in 1..=1000u16 {
            let a: SocketAddr = format!("10.0.0.1:{port}").parse().unwrap();
            m.insert(a, port as u32);
        }
        assert_eq!(m.len(), 1000);
        let a: SocketAddr = "10.0.0.1:77".parse().unwrap();
        assert_eq!(m.get(&a), Some(&77));
        let hash = |k: u64| {
            let mut h = FastHasher::default();
            h.write_u64(k);
            h.finish()
        };
        let hashes: std::collections::HashSet<u64> = (0..10_000).map(hash).collect();
        assert_eq!(hashes.len(), 10_000);
    }
}
