//! The one small deterministic hash behind every seed-driven decision of the sandbox.
//!
//! FNV-1a (64 bit) over length-prefixed fields, finished with the splitmix64 mixer. Unlike
//! `std`'s hashers it is specified here, so the same seed gives the same faults, payments and
//! reference numbers on every platform and Rust version.

/// Incremental FNV-1a hasher; every field is length-prefixed so `("ab","c")` ≠ `("a","bc")`.
#[derive(Debug, Clone)]
pub(crate) struct DetHasher(u64);

impl DetHasher {
    /// Starts a hash from the sandbox seed.
    pub(crate) fn new(seed: u64) -> Self {
        let mut hasher = Self(0xcbf2_9ce4_8422_2325);
        hasher.u64(seed);
        hasher
    }

    fn raw(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            self.0 ^= u64::from(byte);
            self.0 = self.0.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }

    /// Adds a byte string.
    pub(crate) fn bytes(&mut self, bytes: &[u8]) -> &mut Self {
        self.raw(&(bytes.len() as u64).to_le_bytes());
        self.raw(bytes);
        self
    }

    /// Adds a number.
    pub(crate) fn u64(&mut self, value: u64) -> &mut Self {
        self.raw(&value.to_le_bytes());
        self
    }

    /// The mixed 64-bit result.
    pub(crate) fn finish(&self) -> u64 {
        splitmix64(self.0)
    }
}

/// The splitmix64 finaliser (also used to draw a sequence of values from one hash).
pub(crate) fn splitmix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Maps a hash to a uniform value in `[0, 1)`.
pub(crate) fn unit(hash: u64) -> f64 {
    (hash >> 11) as f64 / (1u64 << 53) as f64
}

/// A deterministic sequence of uniform draws derived from one hash.
#[derive(Debug, Clone)]
pub(crate) struct Draws(u64);

impl Draws {
    /// Starts the sequence.
    pub(crate) fn new(hash: u64) -> Self {
        Self(hash)
    }

    /// Next value in `[0, 1)`.
    pub(crate) fn next_unit(&mut self) -> f64 {
        self.0 = splitmix64(self.0);
        unit(self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_are_length_prefixed_and_stable() {
        let a = DetHasher::new(1).bytes(b"ab").bytes(b"c").finish();
        let b = DetHasher::new(1).bytes(b"a").bytes(b"bc").finish();
        assert_ne!(a, b);
        assert_eq!(a, DetHasher::new(1).bytes(b"ab").bytes(b"c").finish());
        assert_ne!(a, DetHasher::new(2).bytes(b"ab").bytes(b"c").finish());
        let u = unit(u64::MAX);
        assert!((0.0..1.0).contains(&u));
    }
}
