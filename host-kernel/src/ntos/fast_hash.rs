//! The hasher of the host kernel's bookkeeping maps (IRPs, MDLs, queued DPCs, armed timers,
//! handles, sockets). Their keys are addresses and counters the kernel itself hands out or
//! the driver passes back, never attacker-chosen text, so the denial-of-service resistance of std's
//! `SipHash` buys nothing here, and it cost about a third of every echo round trip's
//! instructions. This is a folded multiply (the 128-bit product of the word and a constant,
//! high half xor low half): a few instructions per word, and both ends of the product depend
//! on every key bit, so 16-byte-aligned addresses (low bits zero) still spread over the
//! buckets, which take their index from the hash's low bits.

use core::hash::{BuildHasherDefault, Hasher};
use std::collections::{HashMap, HashSet};

/// A `HashMap` with [`FastHasher`].
pub(crate) type FastMap<K, V> = HashMap<K, V, BuildHasherDefault<FastHasher>>;

/// A `HashSet` with [`FastHasher`].
pub(crate) type FastSet<K> = HashSet<K, BuildHasherDefault<FastHasher>>;

/// An odd constant with well-mixed bits (the fractional part of the golden ratio).
const MULTIPLIER: u64 = 0x9E37_79B9_7F4A_7C15;

/// A non-cryptographic hasher for integer and address keys (see the module docs).
#[derive(Clone, Copy, Default)]
pub(crate) struct FastHasher {
    state: u64,
}

impl FastHasher {
    /// Mixes one word into the state.
    #[inline]
    fn mix(&mut self, word: u64) {
        let product = u128::from(self.state ^ word) * u128::from(MULTIPLIER);
        // Truncations on purpose: the low and the high half of the product.
        #[expect(clippy::cast_possible_truncation, reason = "halves of the product")]
        let (low, high) = (product as u64, (product >> 64) as u64);
        self.state = low ^ high;
    }
}

impl Hasher for FastHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for chunk in &mut chunks {
            let mut word = [0; 8];
            word.copy_from_slice(chunk);
            self.mix(u64::from_le_bytes(word));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut word = [0; 8];
            word[..rest.len()].copy_from_slice(rest);
            // The length keeps "ab" and "ab\0" apart.
            self.mix(u64::from_le_bytes(word) ^ ((rest.len() as u64) << 59));
        }
    }

    #[inline]
    fn write_u8(&mut self, value: u8) {
        self.mix(u64::from(value));
    }

    #[inline]
    fn write_u16(&mut self, value: u16) {
        self.mix(u64::from(value));
    }

    #[inline]
    fn write_u32(&mut self, value: u32) {
        self.mix(u64::from(value));
    }

    #[inline]
    fn write_u64(&mut self, value: u64) {
        self.mix(value);
    }

    #[inline]
    fn write_usize(&mut self, value: usize) {
        self.mix(value as u64);
    }

    #[inline]
    fn finish(&self) -> u64 {
        self.state
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::hash::BuildHasher;

    fn hash_of(value: usize) -> u64 {
        BuildHasherDefault::<FastHasher>::default().hash_one(value)
    }

    /// Aligned addresses must not all land in the same few buckets: the low bits of their
    /// hashes (a bucket index) must differ.
    #[test]
    fn aligned_addresses_spread_over_low_bits() {
        let buckets: HashSet<u64> = (0..256usize)
            .map(|i| hash_of(0x7f00_1234_0000 + i * 16) & 0xff)
            .collect();
        assert!(
            buckets.len() > 128,
            "only {} of 256 buckets used",
            buckets.len()
        );
    }

    #[test]
    fn byte_strings_of_different_lengths_differ() {
        let mut short = FastHasher::default();
        short.write(b"ab");
        let mut long = FastHasher::default();
        long.write(b"ab\0");
        assert_ne!(short.finish(), long.finish());
    }

    #[test]
    fn maps_find_what_they_hold() {
        let mut map: FastMap<usize, usize> = FastMap::default();
        for i in 0..1000 {
            map.insert(i * 16, i);
        }
        assert!((0..1000).all(|i| map.get(&(i * 16)) == Some(&i)));
        assert_eq!(map.get(&8), None);
    }
}
