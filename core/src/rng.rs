//! Where randomness comes from.
//!
//! Everything random in the engine (sample positions, Cascade shuffle seeds, hash seeds, key
//! IDs) is drawn through the [`RandomSource`] trait. Production code draws fresh seeds from
//! [`OsRandom`], the operating system's CSPRNG, unless an external source is configured.
//! [`SeededRandom`] is a deterministic ChaCha20 stream: it expands a *shared public seed* into
//! the same positions or shuffles on both sides of a protocol, and it makes simulations and
//! tests reproducible. It is never a source of fresh secret randomness.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha20Rng;

/// Failure of a randomness source.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RngError {
    /// The operating system's generator failed.
    #[error("OS random generator failed: {0}")]
    Os(String),
    /// An external source delivered no more data.
    #[error("random source '{source_name}' ran dry after {delivered} bytes")]
    Exhausted {
        /// Name of the source (path or device).
        source_name: String,
        /// Bytes delivered before it ran dry.
        delivered: u64,
    },
    /// An external source could not be read.
    #[error("random source '{source_name}' could not be read: {error}")]
    Io {
        /// Name of the source (path or device).
        source_name: String,
        /// The I/O error.
        error: std::io::Error,
    },
    /// An external source failed a continuous health test and is disabled.
    #[error("random source '{source_name}' failed its health test: {test}")]
    HealthTestFailed {
        /// Name of the source.
        source_name: String,
        /// Which test failed and how.
        test: String,
    },
}

/// A source of random bytes. Implementations must be unpredictable unless documented otherwise.
pub trait RandomSource: Send {
    /// Fills `buf` entirely with random bytes, or fails without partial success.
    fn fill(&mut self, buf: &mut [u8]) -> Result<(), RngError>;

    /// A human-readable name for reports and errors.
    fn name(&self) -> &str;

    /// A uniform `u64`.
    fn next_u64(&mut self) -> Result<u64, RngError> {
        let mut b = [0u8; 8];
        self.fill(&mut b)?;
        Ok(u64::from_le_bytes(b))
    }

    /// A uniform value in `0..bound` (`bound > 0`), without modulo bias (Lemire's method).
    fn next_below(&mut self, bound: u64) -> Result<u64, RngError> {
        debug_assert!(bound > 0);
        let bound = bound.max(1);
        loop {
            let m = u128::from(self.next_u64()?) * u128::from(bound);
            let low = m as u64;
            if low >= bound.wrapping_neg() % bound {
                return Ok((m >> 64) as u64);
            }
        }
    }

    /// A fresh 32-byte seed.
    fn seed32(&mut self) -> Result<[u8; 32], RngError> {
        let mut s = [0u8; 32];
        self.fill(&mut s)?;
        Ok(s)
    }
}

/// The operating system's CSPRNG (`getrandom`): the default source.
#[derive(Debug, Default, Clone, Copy)]
pub struct OsRandom;

impl RandomSource for OsRandom {
    fn fill(&mut self, buf: &mut [u8]) -> Result<(), RngError> {
        getrandom::fill(buf).map_err(|e| RngError::Os(e.to_string()))
    }

    fn name(&self) -> &str {
        "os"
    }
}

/// A deterministic ChaCha20 stream from a seed: for expanding a shared public seed identically
/// on both sides, and for reproducible simulations and tests. Not for fresh secrets.
pub struct SeededRandom {
    rng: ChaCha20Rng,
}

impl std::fmt::Debug for SeededRandom {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SeededRandom")
    }
}

impl SeededRandom {
    /// The stream expanding a 32-byte seed.
    pub fn from_seed(seed: [u8; 32]) -> Self {
        Self { rng: ChaCha20Rng::from_seed(seed) }
    }

    /// The stream for a small seed, as simulations and tests use.
    pub fn from_u64(seed: u64) -> Self {
        Self { rng: ChaCha20Rng::seed_from_u64(seed) }
    }

    /// A uniform `u64` (infallible, unlike the trait method).
    pub fn u64(&mut self) -> u64 {
        self.rng.next_u64()
    }

    /// Fills `buf` (infallible).
    pub fn bytes(&mut self, buf: &mut [u8]) {
        self.rng.fill_bytes(buf);
    }

    /// A uniform value in `0..bound` (infallible), `bound > 0`.
    pub fn below(&mut self, bound: u64) -> u64 {
        match RandomSource::next_below(self, bound) {
            Ok(v) => v,
            Err(_) => unreachable!("ChaCha20 cannot fail"),
        }
    }

    /// A uniform `f64` in `[0, 1)` with 53 random bits.
    pub fn unit_f64(&mut self) -> f64 {
        (self.rng.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }
}

impl RandomSource for SeededRandom {
    fn fill(&mut self, buf: &mut [u8]) -> Result<(), RngError> {
        self.rng.fill_bytes(buf);
        Ok(())
    }

    fn name(&self) -> &str {
        "seeded-chacha20"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeded_is_reproducible_and_os_differs() {
        let (mut a, mut b) = (SeededRandom::from_u64(5), SeededRandom::from_u64(5));
        assert_eq!(a.u64(), b.u64());
        let (x, y) = (OsRandom.seed32().unwrap(), OsRandom.seed32().unwrap());
        assert_ne!(x, y);
    }

    #[test]
    fn next_below_is_in_range_and_covers_it() {
        let mut r = SeededRandom::from_u64(1);
        let mut seen = [false; 7];
        for _ in 0..1000 {
            let v = r.below(7);
            assert!(v < 7);
            seen[v as usize] = true;
        }
        assert!(seen.iter().all(|&s| s));
    }
}
