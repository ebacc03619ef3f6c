//! The address families as unsigned integers.
//!
//! Both the mutable map and the compiled trie work on addresses as big-endian integers
//! (`u32` for IPv4, `u128` for IPv6) so that one generic implementation serves both
//! families: masking, slicing out a stride of bits and ordering are plain integer operations.

use std::fmt::Debug;
use std::hash::Hash;

/// An address family seen as a fixed-width unsigned integer.
pub(crate) trait Bits: Copy + Ord + Eq + Hash + Debug + Send + Sync + 'static {
    /// Width of an address in bits (32 or 128).
    const WIDTH: u8;
    /// Bits resolved by the direct-pointing table at the root of the compiled trie.
    ///
    /// 18 for both families: 2^18 four-byte entries is 1 MiB, and with six-bit strides
    /// below it the nodes end on /24 for IPv4 and on /48 for IPv6, the two most common
    /// route lengths, so those routes sit in one slot instead of a run of slots.
    const DIRECT_BITS: u8 = 18;

    /// Clears every bit after the first `len` (the network address of a `/len`).
    fn mask(self, len: u8) -> Self;

    /// The `width` bits starting `offset` bits from the top, right-aligned; bits past the
    /// end of the address read as zero. Requires `offset < WIDTH` and `width <= 32`.
    fn extract(self, offset: u8, width: u8) -> u32;

    /// Number of 32-bit words an address takes in the compiled trie's arena.
    const WORDS: usize;

    /// Appends the address to `out` as `WORDS` words, most significant first.
    fn push_words(self, out: &mut Vec<u32>);

    /// Reads an address written by [`push_words`](Self::push_words) from the front of `words`.
    fn from_words(words: &[u32]) -> Self;
}

impl Bits for u32 {
    const WIDTH: u8 = 32;

    #[inline]
    fn mask(self, len: u8) -> Self {
        if len == 0 {
            0
        } else {
            self & (u32::MAX << (32 - u32::from(len.min(32))))
        }
    }

    #[inline(always)]
    fn extract(self, offset: u8, width: u8) -> u32 {
        // Shifting the wanted bits to the top and back down pads the missing tail with
        // zeros, which is what the last, partial stride of an address needs.
        (self << offset) >> (32 - width)
    }

    const WORDS: usize = 1;

    fn push_words(self, out: &mut Vec<u32>) {
        out.push(self);
    }

    #[inline]
    fn from_words(words: &[u32]) -> Self {
        words[0]
    }
}

impl Bits for u128 {
    const WIDTH: u8 = 128;

    #[inline]
    fn mask(self, len: u8) -> Self {
        if len == 0 {
            0
        } else {
            self & (u128::MAX << (128 - u32::from(len.min(128))))
        }
    }

    #[inline(always)]
    fn extract(self, offset: u8, width: u8) -> u32 {
        ((self << offset) >> (128 - width)) as u32
    }

    const WORDS: usize = 4;

    fn push_words(self, out: &mut Vec<u32>) {
        out.extend([
            (self >> 96) as u32,
            (self >> 64) as u32,
            (self >> 32) as u32,
            self as u32,
        ]);
    }

    #[inline]
    fn from_words(words: &[u32]) -> Self {
        words[..4]
            .iter()
            .fold(0, |acc, &w| (acc << 32) | u128::from(w))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mask_and_extract() {
        let a: u32 = 0xC633_6465; // 198.51.100.101
        assert_eq!(a.mask(24), 0xC633_6400);
        assert_eq!(a.mask(0), 0);
        assert_eq!(a.mask(32), a);
        assert_eq!(a.extract(0, 8), 0xC6);
        assert_eq!(a.extract(30, 6), 0b01_0000);
        let b: u128 = 0x2001_0db8 << 96 | 0x101;
        assert_eq!(b.mask(32), 0x2001_0db8 << 96);
        assert_eq!(b.extract(0, 16), 0x2001);
        assert_eq!(b.extract(126, 6), 0b01_0000);
        let mut words = Vec::new();
        b.push_words(&mut words);
        a.push_words(&mut words);
        assert_eq!(u128::from_words(&words), b);
        assert_eq!(u32::from_words(&words[4..]), a);
    }
}
