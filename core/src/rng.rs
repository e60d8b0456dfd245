//! Where randomness comes from.
//!
//! Everything random in the engine (sample positions, Cascade shuffle seeds, hash seeds, key
//! IDs) is drawn through the [`RandomSource`] trait. Production code draws fresh seeds from
//! [`OsRandom`], the operating system's CSPRNG, unless an external source is configured.
//! [`SeededRandom`] is a deterministic ChaCha20 stream: it expands a *shared public seed* into
//! the same positions or shuffles on both sides of a protocol, and it makes simulations and
//! tests reproducible. It is never a source of fresh secret randomness.
//!
//! [`ExternalRandom`] reads an external (quantum) RNG stream from a device or file, the way a
//! Quantis feeds an HSM, and runs the SP 800-90B continuous health tests on every byte before
//! handing any out. [`SourceSpec`] names a configured source in a string (`os`,
//! `file:/dev/qrandom0`, `seeded:42`) for the CLI and server configuration.

use std::fmt;
use std::io::Read;
use std::path::PathBuf;
use std::str::FromStr;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha20Rng;
use serde::{Deserialize, Serialize};
use zeroize::{Zeroize, Zeroizing};

use crate::entropy::{HealthConfig, HealthTests, SampleKind};

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
    /// A source specification string could not be parsed.
    #[error(
        "invalid random source '{spec}': {reason}; expected 'os', 'file:<path>' or 'seeded:<u64>'"
    )]
    InvalidSpec {
        /// The string given.
        spec: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A deterministic source was configured without explicitly allowing insecure sources.
    #[error(
        "random source '{spec}' is deterministic and not a source of secrets; it is refused unless allow_insecure is set (tests and simulation only)"
    )]
    InsecureRefused {
        /// The specification.
        spec: String,
    },
    /// An external source's configuration is invalid.
    #[error("invalid external random source configuration: {reason}")]
    InvalidConfig {
        /// What is wrong.
        reason: String,
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
        Self {
            rng: ChaCha20Rng::from_seed(seed),
        }
    }

    /// The stream for a small seed, as simulations and tests use.
    pub fn from_u64(seed: u64) -> Self {
        Self {
            rng: ChaCha20Rng::seed_from_u64(seed),
        }
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

/// Optional conditioning of an external source's raw bytes after the health tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Conditioning {
    /// Raw bytes are handed out as read (for sources that already condition, such as a Quantis).
    None,
    /// Each block of `input` raw bytes becomes `output` bytes: BLAKE3 in derive-key mode
    /// (context `"qkd ExternalRandom conditioning v1"`) over a little-endian `u64` block counter
    /// and the block, read as an XOF. Ratio `input : output` (2:1 for 64 : 32). The
    /// configuration is refused unless `input * H >= 8 * output + 64` bits (`H` the claimed
    /// min-entropy per byte), the margin SP 800-90B §3.1.5 asks of a conditioning step whose
    /// output is to count as full entropy. BLAKE3 is not one of SP 800-90B's vetted conditioning
    /// functions: a validated module would use HMAC or Hash_df instead.
    Blake3 {
        /// Raw bytes per block.
        input: usize,
        /// Output bytes per block.
        output: usize,
    },
}

/// How an [`ExternalRandom`] reads and checks its stream.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ExternalConfig {
    /// The continuous health tests. The default claims 8 bits of min-entropy per byte with
    /// `alpha = 2^-40`, the strict end of SP 800-90B's range: at 2^-20 a healthy full-entropy
    /// stream trips the repetition count test (cutoff 4) about once per 16 MiB, and a tripped
    /// source stays disabled.
    pub health: HealthConfig,
    /// Bytes read and tested per step; a positive multiple of the APT window (in bytes).
    pub chunk_size: usize,
    /// Conditioning of the tested bytes.
    pub conditioning: Conditioning,
}

impl Default for ExternalConfig {
    fn default() -> Self {
        Self {
            health: HealthConfig::bytes(8.0).with_alpha(1.0 / (1u64 << 40) as f64),
            chunk_size: 64 * 1024,
            conditioning: Conditioning::None,
        }
    }
}

impl ExternalConfig {
    /// Checks every field (see the field docs).
    pub fn validate(&self) -> Result<(), RngError> {
        let invalid = |reason: String| RngError::InvalidConfig { reason };
        self.health.validate().map_err(|e| invalid(e.to_string()))?;
        let window_bytes = match self.health.kind {
            SampleKind::Byte => self.health.window,
            SampleKind::Bit => {
                if !self.health.window.is_multiple_of(8) {
                    return Err(invalid(format!(
                        "a bit-sample window of {} is not a whole number of bytes",
                        self.health.window
                    )));
                }
                self.health.window / 8
            }
        };
        if self.chunk_size == 0 || !self.chunk_size.is_multiple_of(window_bytes) {
            return Err(invalid(format!(
                "chunk size {} is not a positive multiple of the {window_bytes}-byte health-test window",
                self.chunk_size
            )));
        }
        if self.chunk_size > 1 << 30 {
            return Err(invalid(format!(
                "chunk size {} exceeds 1 GiB",
                self.chunk_size
            )));
        }
        if let Conditioning::Blake3 { input, output } = self.conditioning {
            if input == 0 || output == 0 || output > input || input > 1 << 20 {
                return Err(invalid(format!(
                    "BLAKE3 conditioning {input} -> {output} bytes: expected 1 <= output <= input <= 1 MiB"
                )));
            }
            let h_per_byte = self.health.min_entropy * 8.0 / f64::from(self.health.kind.bits());
            let entropy_in = input as f64 * h_per_byte;
            let needed = 8.0 * output as f64 + 64.0;
            if entropy_in < needed {
                return Err(invalid(format!(
                    "BLAKE3 conditioning {input} -> {output} bytes needs {needed} bits of input entropy, \
                     the claim gives {entropy_in}"
                )));
            }
        }
        Ok(())
    }
}

/// BLAKE3 derive-key context of [`Conditioning::Blake3`].
const CONDITIONING_CONTEXT: &str = "qkd ExternalRandom conditioning v1";

/// An external RNG stream (device or file) behind the SP 800-90B continuous health tests.
///
/// Bytes are read in chunks of [`ExternalConfig::chunk_size`] (a multiple of the APT window)
/// and released only after every sample of the chunk passed both tests, so no byte of a
/// failing window is ever handed out (the last, partial chunk at end of stream is released
/// after it passed). On a failure the source is disabled: every later call returns
/// [`RngError::HealthTestFailed`] and the bytes it held are zeroized. At the end of the stream
/// a request that cannot be filled completely returns [`RngError::Exhausted`] and consumes
/// nothing (a smaller request may still be served from what is left). Requests are filled
/// completely or not at all; buffers are zeroized when consumed and on drop.
pub struct ExternalRandom {
    name: String,
    reader: Box<dyn Read + Send>,
    config: ExternalConfig,
    health: HealthTests,
    raw: Zeroizing<Vec<u8>>,
    raw_len: usize,
    cond_in: Zeroizing<Vec<u8>>,
    cond_blocks: u64,
    ready: Zeroizing<Vec<u8>>,
    pos: usize,
    delivered: u64,
    eof: bool,
    failed: Option<String>,
}

impl fmt::Debug for ExternalRandom {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ExternalRandom")
            .field("name", &self.name)
            .field("buffered", &(self.ready.len() - self.pos))
            .field("delivered", &self.delivered)
            .field("eof", &self.eof)
            .field("failed", &self.failed)
            .finish_non_exhaustive()
    }
}

impl ExternalRandom {
    /// Opens a device or file; the source is named `file:<path>`.
    pub fn open(path: impl Into<PathBuf>, config: ExternalConfig) -> Result<Self, RngError> {
        let path = path.into();
        let name = format!("file:{}", path.display());
        config.validate()?;
        let file = std::fs::File::open(&path).map_err(|error| RngError::Io {
            source_name: name.clone(),
            error,
        })?;
        Self::from_reader(name, file, config)
    }

    /// Wraps any byte stream (a pipe, a socket, a test buffer).
    pub fn from_reader(
        name: impl Into<String>,
        reader: impl Read + Send + 'static,
        config: ExternalConfig,
    ) -> Result<Self, RngError> {
        config.validate()?;
        let health = HealthTests::new(config.health).map_err(|e| RngError::InvalidConfig {
            reason: e.to_string(),
        })?;
        Ok(Self {
            name: name.into(),
            reader: Box::new(reader),
            raw: Zeroizing::new(vec![0u8; config.chunk_size]),
            raw_len: 0,
            cond_in: Zeroizing::new(Vec::new()),
            cond_blocks: 0,
            ready: Zeroizing::new(Vec::new()),
            pos: 0,
            delivered: 0,
            eof: false,
            failed: None,
            health,
            config,
        })
    }

    /// Bytes handed out so far.
    pub fn delivered(&self) -> u64 {
        self.delivered
    }

    /// Raw samples that passed (or tripped) the health tests so far.
    pub fn samples_tested(&self) -> u64 {
        self.health.samples_seen()
    }

    /// The health-test failure that disabled the source, if any.
    pub fn failure(&self) -> Option<&str> {
        self.failed.as_deref()
    }

    /// The cutoffs in use: (repetition count, adaptive proportion).
    pub fn cutoffs(&self) -> (u32, u32) {
        (self.health.rct_cutoff(), self.health.apt_cutoff())
    }

    fn health_error(&self) -> RngError {
        RngError::HealthTestFailed {
            source_name: self.name.clone(),
            test: self.failed.clone().unwrap_or_default(),
        }
    }

    /// Reads one chunk (or the rest of the stream), tests it and releases it.
    fn refill(&mut self) -> Result<(), RngError> {
        let chunk = self.config.chunk_size;
        while self.raw_len < chunk && !self.eof {
            match self.reader.read(&mut self.raw[self.raw_len..chunk]) {
                Ok(0) => self.eof = true,
                Ok(k) => self.raw_len += k.min(chunk - self.raw_len),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(error) => {
                    // Keep what was read: the next call continues the same stream.
                    return Err(RngError::Io {
                        source_name: self.name.clone(),
                        error,
                    });
                }
            }
        }
        let len = self.raw_len;
        self.raw_len = 0;
        if let Err(failure) = self.health.feed(&self.raw[..len]) {
            self.failed = Some(failure.to_string());
            self.raw.zeroize();
            self.ready.zeroize();
            self.cond_in.zeroize();
            self.pos = 0;
            return Err(self.health_error());
        }
        // Drop what was consumed (already zeroized) before appending.
        if self.pos > 0 {
            self.ready.drain(..self.pos);
            self.pos = 0;
        }
        match self.config.conditioning {
            Conditioning::Blake3 { input, output } => {
                reserve_zeroizing(&mut self.cond_in, len);
                self.cond_in.extend_from_slice(&self.raw[..len]);
                let blocks = self.cond_in.len() / input;
                reserve_zeroizing(&mut self.ready, blocks * output);
                for b in 0..blocks {
                    let mut hasher = blake3::Hasher::new_derive_key(CONDITIONING_CONTEXT);
                    hasher.update(&self.cond_blocks.to_le_bytes());
                    hasher.update(&self.cond_in[b * input..(b + 1) * input]);
                    self.cond_blocks += 1;
                    let start = self.ready.len();
                    self.ready.resize(start + output, 0);
                    hasher.finalize_xof().fill(&mut self.ready[start..]);
                }
                self.cond_in[..blocks * input].zeroize();
                self.cond_in.drain(..blocks * input);
            }
            Conditioning::None => {
                reserve_zeroizing(&mut self.ready, len);
                self.ready.extend_from_slice(&self.raw[..len]);
            }
        }
        self.raw[..len].zeroize();
        Ok(())
    }
}

/// Grows `v` so that `additional` more bytes fit without a reallocation that would leave a
/// copy of its contents in freed memory: the old buffer is zeroized before it is freed.
fn reserve_zeroizing(v: &mut Zeroizing<Vec<u8>>, additional: usize) {
    if v.capacity() - v.len() < additional {
        let mut grown = Vec::with_capacity((v.len() + additional).max(2 * v.capacity()));
        grown.extend_from_slice(v);
        let old = std::mem::replace(&mut **v, grown);
        drop(Zeroizing::new(old));
    }
}

impl RandomSource for ExternalRandom {
    fn fill(&mut self, buf: &mut [u8]) -> Result<(), RngError> {
        if self.failed.is_some() {
            return Err(self.health_error());
        }
        while self.ready.len() - self.pos < buf.len() {
            if self.eof {
                return Err(RngError::Exhausted {
                    source_name: self.name.clone(),
                    delivered: self.delivered,
                });
            }
            self.refill()?;
        }
        let end = self.pos + buf.len();
        buf.copy_from_slice(&self.ready[self.pos..end]);
        self.ready[self.pos..end].zeroize();
        self.pos = end;
        self.delivered += buf.len() as u64;
        Ok(())
    }

    fn name(&self) -> &str {
        &self.name
    }
}

/// A configured randomness source, named by a string: `os` (the OS CSPRNG, the default),
/// `file:<path>` (an [`ExternalRandom`] on a device or file), or `seeded:<u64>` (a
/// [`SeededRandom`]; deterministic, refused unless [`SourceOptions::allow_insecure`] is set).
/// Serialized as that string.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
#[non_exhaustive]
pub enum SourceSpec {
    /// The operating system's CSPRNG.
    #[default]
    Os,
    /// An external stream read from this path.
    File(PathBuf),
    /// A deterministic ChaCha20 stream from this seed (tests and simulation only).
    Seeded(u64),
}

/// How [`SourceSpec::open`] builds a source.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct SourceOptions {
    /// Allow `seeded:` sources. Never set this in production.
    pub allow_insecure: bool,
    /// Configuration of `file:` sources.
    pub external: ExternalConfig,
}

impl SourceSpec {
    /// Whether the source is deterministic (not a source of secrets).
    pub fn is_insecure(&self) -> bool {
        matches!(self, Self::Seeded(_))
    }

    /// Opens the source.
    pub fn open(&self, options: &SourceOptions) -> Result<Box<dyn RandomSource>, RngError> {
        match self {
            Self::Os => Ok(Box::new(OsRandom)),
            Self::File(path) => Ok(Box::new(ExternalRandom::open(
                path.clone(),
                options.external,
            )?)),
            Self::Seeded(seed) => {
                if options.allow_insecure {
                    Ok(Box::new(SeededRandom::from_u64(*seed)))
                } else {
                    Err(RngError::InsecureRefused {
                        spec: self.to_string(),
                    })
                }
            }
        }
    }
}

impl fmt::Display for SourceSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Os => f.write_str("os"),
            Self::File(p) => write!(f, "file:{}", p.display()),
            Self::Seeded(s) => write!(f, "seeded:{s}"),
        }
    }
}

impl FromStr for SourceSpec {
    type Err = RngError;

    fn from_str(spec: &str) -> Result<Self, RngError> {
        let invalid = |reason: &str| RngError::InvalidSpec {
            spec: spec.to_owned(),
            reason: reason.to_owned(),
        };
        let (kind, arg) = match spec.split_once(':') {
            Some((k, a)) => (k, Some(a)),
            None => (spec, None),
        };
        match (kind.trim(), arg) {
            ("os", None) => Ok(Self::Os),
            ("os", Some(_)) => Err(invalid("'os' takes no argument")),
            ("file", Some(p)) if !p.is_empty() => Ok(Self::File(PathBuf::from(p))),
            ("file", _) => Err(invalid("'file:' needs a path")),
            ("seeded", Some(s)) => {
                let s = s.trim();
                let parsed = match s.strip_prefix("0x") {
                    Some(hex) => u64::from_str_radix(hex, 16),
                    None => s.parse(),
                };
                parsed
                    .map(Self::Seeded)
                    .map_err(|_| invalid("the seed is not a u64"))
            }
            ("seeded", None) => Err(invalid("'seeded:' needs a seed")),
            _ => Err(invalid("unknown kind of source")),
        }
    }
}

impl TryFrom<String> for SourceSpec {
    type Error = RngError;

    fn try_from(s: String) -> Result<Self, RngError> {
        s.parse()
    }
}

impl From<SourceSpec> for String {
    fn from(s: SourceSpec) -> String {
        s.to_string()
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

    fn write_file(bytes: &[u8]) -> tempfile::NamedTempFile {
        use std::io::Write;
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(bytes).unwrap();
        f.flush().unwrap();
        f
    }

    fn chacha(seed: u64, n: usize) -> Vec<u8> {
        let mut v = vec![0u8; n];
        SeededRandom::from_u64(seed).bytes(&mut v);
        v
    }

    fn small_chunks() -> ExternalConfig {
        ExternalConfig {
            chunk_size: 4096,
            ..ExternalConfig::default()
        }
    }

    #[test]
    fn good_file_is_consumed_then_runs_dry() {
        let data = chacha(1, 10_000);
        let f = write_file(&data);
        let mut src = ExternalRandom::open(f.path(), small_chunks()).unwrap();
        assert_eq!(
            src.cutoffs(),
            (
                6,
                HealthConfig::bytes(8.0)
                    .with_alpha(2f64.powi(-40))
                    .apt_cutoff()
                    .unwrap()
            )
        );
        let mut got = Vec::new();
        for n in [3000, 3000, 3000] {
            let mut b = vec![0u8; n];
            src.fill(&mut b).unwrap();
            got.extend_from_slice(&b);
        }
        // 1000 bytes left: a larger request fails and consumes nothing; a fitting one succeeds.
        let mut big = vec![0u8; 1001];
        match src.fill(&mut big) {
            Err(RngError::Exhausted {
                delivered: 9000,
                source_name,
            }) => {
                assert!(source_name.starts_with("file:"));
            }
            other => panic!("expected Exhausted, got {other:?}"),
        }
        assert!(big.iter().all(|&b| b == 0), "no partial fill");
        let mut b = vec![0u8; 1000];
        src.fill(&mut b).unwrap();
        got.extend_from_slice(&b);
        assert_eq!(got, data, "raw bytes come out unchanged and in order");
        assert_eq!(src.delivered(), 10_000);
        assert_eq!(src.samples_tested(), 10_000);
        assert!(matches!(
            src.next_u64(),
            Err(RngError::Exhausted {
                delivered: 10_000,
                ..
            })
        ));
        assert!(src.fill(&mut []).is_ok());
    }

    #[test]
    fn zero_file_trips_the_repetition_count_test() {
        let f = write_file(&vec![0u8; 100_000]);
        let mut src = ExternalRandom::open(f.path(), ExternalConfig::default()).unwrap();
        let mut b = [0x55u8; 16];
        match src.fill(&mut b) {
            Err(RngError::HealthTestFailed { test, .. }) => {
                assert!(test.contains("repetition count"), "{test}");
            }
            other => panic!("expected HealthTestFailed, got {other:?}"),
        }
        assert_eq!(b, [0x55; 16], "nothing written on failure");
        assert!(matches!(
            src.fill(&mut b),
            Err(RngError::HealthTestFailed { .. })
        ));
        assert!(src.failure().is_some() && src.delivered() == 0);
    }

    #[test]
    fn biased_file_trips_the_adaptive_proportion_test() {
        // One value in eight is 0x00, never twice in a row (so the RCT cannot trip).
        let mut r = SeededRandom::from_u64(2);
        let mut data = Vec::with_capacity(65_536);
        let mut prev = 1u8;
        while data.len() < 65_536 {
            let v = if r.below(8) == 0 {
                0
            } else {
                r.below(256) as u8
            };
            if v != prev {
                data.push(v);
                prev = v;
            }
        }
        let f = write_file(&data);
        let mut src = ExternalRandom::open(f.path(), ExternalConfig::default()).unwrap();
        let mut b = [0u8; 32];
        match src.fill(&mut b) {
            Err(RngError::HealthTestFailed { test, .. }) => {
                assert!(test.contains("adaptive proportion"), "{test}");
            }
            other => panic!("expected HealthTestFailed, got {other:?}"),
        }
        assert!(matches!(
            src.next_u64(),
            Err(RngError::HealthTestFailed { .. })
        ));
    }

    #[test]
    fn bytes_of_a_failing_window_are_never_handed_out() {
        // 1000 good bytes, then zeros: the window 512..1024 fails at byte 1005 (RCT cutoff 6).
        let mut data = chacha(3, 1000);
        data.extend_from_slice(&[0u8; 3000]);
        let f = write_file(&data);
        let cfg = ExternalConfig {
            chunk_size: 512,
            ..ExternalConfig::default()
        };
        let mut src = ExternalRandom::open(f.path(), cfg).unwrap();
        let mut first = vec![0u8; 512];
        src.fill(&mut first).unwrap();
        assert_eq!(first, data[..512]);
        // Byte 512 is good, but its window is not.
        let mut one = [0u8; 1];
        assert!(matches!(
            src.fill(&mut one),
            Err(RngError::HealthTestFailed { .. })
        ));
        assert_eq!(src.delivered(), 512);
    }

    #[test]
    fn io_errors_and_bad_configs_are_errors() {
        let missing = std::env::temp_dir().join("qkd-no-such-random-device");
        assert!(matches!(
            ExternalRandom::open(&missing, ExternalConfig::default()),
            Err(RngError::Io { .. })
        ));
        let f = write_file(&[1, 2, 3]);
        for cfg in [
            ExternalConfig {
                chunk_size: 1000,
                ..ExternalConfig::default()
            },
            ExternalConfig {
                chunk_size: 0,
                ..ExternalConfig::default()
            },
            ExternalConfig {
                health: HealthConfig::bytes(9.0),
                ..ExternalConfig::default()
            },
            ExternalConfig {
                conditioning: Conditioning::Blake3 {
                    input: 32,
                    output: 64,
                },
                ..ExternalConfig::default()
            },
            // 64 bytes at 4 bits/byte = 256 bits < 8 * 32 + 64.
            ExternalConfig {
                health: HealthConfig::bytes(4.0),
                conditioning: Conditioning::Blake3 {
                    input: 64,
                    output: 32,
                },
                ..ExternalConfig::default()
            },
        ] {
            assert!(
                matches!(
                    ExternalRandom::open(f.path(), cfg),
                    Err(RngError::InvalidConfig { .. })
                ),
                "{cfg:?}"
            );
        }

        struct Failing(usize);
        impl Read for Failing {
            fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
                if self.0 == 0 {
                    return Err(std::io::Error::other("device unplugged"));
                }
                let n = buf.len().min(self.0);
                let mut r = SeededRandom::from_u64(self.0 as u64);
                r.bytes(&mut buf[..n]);
                self.0 -= n;
                Ok(n)
            }
        }
        let mut src = ExternalRandom::from_reader("failing", Failing(100), small_chunks()).unwrap();
        let mut b = [0u8; 8];
        assert!(matches!(src.fill(&mut b), Err(RngError::Io { .. })));
        assert_eq!(b, [0; 8]);
    }

    #[test]
    fn blake3_conditioning_halves_the_stream_deterministically() {
        let data = chacha(4, 6400);
        let f = write_file(&data);
        let cfg = ExternalConfig {
            conditioning: Conditioning::Blake3 {
                input: 64,
                output: 32,
            },
            ..small_chunks()
        };
        let read_all = || {
            let mut src = ExternalRandom::open(f.path(), cfg).unwrap();
            let mut out = vec![0u8; 3200];
            src.fill(&mut out).unwrap();
            assert!(matches!(
                src.fill(&mut [0u8; 1]),
                Err(RngError::Exhausted {
                    delivered: 3200,
                    ..
                })
            ));
            out
        };
        let (a, b) = (read_all(), read_all());
        assert_eq!(a, b);
        assert_ne!(a[..32], data[..32]);
        // Block 0 by hand: derive-key(context) over counter 0 || raw[0..64].
        let mut h = blake3::Hasher::new_derive_key(CONDITIONING_CONTEXT);
        h.update(&0u64.to_le_bytes());
        h.update(&data[..64]);
        let mut want = [0u8; 32];
        h.finalize_xof().fill(&mut want);
        assert_eq!(a[..32], want);
        assert!(crate::entropy::assess(&a).passed());
    }

    #[test]
    fn source_specs_parse_print_and_open() {
        assert_eq!("os".parse::<SourceSpec>().unwrap(), SourceSpec::Os);
        assert_eq!(
            "file:/dev/qrandom0".parse::<SourceSpec>().unwrap(),
            SourceSpec::File(PathBuf::from("/dev/qrandom0"))
        );
        assert_eq!(
            "seeded:42".parse::<SourceSpec>().unwrap(),
            SourceSpec::Seeded(42)
        );
        assert_eq!(
            "seeded:0x2a".parse::<SourceSpec>().unwrap(),
            SourceSpec::Seeded(42)
        );
        for bad in [
            "",
            "os:x",
            "file:",
            "file",
            "seeded:",
            "seeded:abc",
            "seeded:-1",
            "quantis",
        ] {
            assert!(
                matches!(bad.parse::<SourceSpec>(), Err(RngError::InvalidSpec { .. })),
                "{bad:?}"
            );
        }
        for s in ["os", "file:/dev/qrandom0", "seeded:42"] {
            let spec: SourceSpec = s.parse().unwrap();
            assert_eq!(spec.to_string(), s);
            let json = serde_json::to_string(&spec).unwrap();
            assert_eq!(json, format!("\"{s}\""));
            assert_eq!(serde_json::from_str::<SourceSpec>(&json).unwrap(), spec);
        }
        assert!(serde_json::from_str::<SourceSpec>("\"nope\"").is_err());

        let seeded = SourceSpec::Seeded(42);
        assert!(seeded.is_insecure() && !SourceSpec::Os.is_insecure());
        assert!(matches!(
            seeded.open(&SourceOptions::default()),
            Err(RngError::InsecureRefused { .. })
        ));
        let opts = SourceOptions {
            allow_insecure: true,
            ..SourceOptions::default()
        };
        let mut s = seeded.open(&opts).unwrap();
        assert_eq!(s.next_u64().unwrap(), SeededRandom::from_u64(42).u64());
        assert_eq!(SourceSpec::Os.open(&opts).unwrap().name(), "os");

        let data = chacha(5, 4096);
        let f = write_file(&data);
        let spec: SourceSpec = format!("file:{}", f.path().display()).parse().unwrap();
        let mut src = spec.open(&SourceOptions::default()).unwrap();
        let mut b = [0u8; 16];
        src.fill(&mut b).unwrap();
        assert_eq!(b, data[..16]);
        assert_eq!(src.name(), spec.to_string());
    }
}
