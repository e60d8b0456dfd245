//! Toeplitz hashing: the two-universal family used for privacy amplification.
//!
//! **Convention (DESIGN §4).** For an input `x` of `n` bits and an output of `m` bits
//! (`0 < m < n`), the seed `s` has `n + m - 1` bits and the matrix is
//! `T[i][j] = s[i - j + n - 1]` (`0 <= i < m`, `0 <= j < n`); the output is `y = T x` over
//! GF(2), that is `y[i] = XOR_j s[i - j + n - 1] & x[j]`. Bits are numbered as in
//! [`BitBlock`]: bit `i` is bit `i % 64` of word `i / 64` (bit `i % 8` of byte `i / 8`). A seed
//! longer than `n + m - 1` bits is accepted and only its first `n + m - 1` bits are used.
//!
//! **As a polynomial product.** With `s(X) = sum s[a] X^a` and `x(X) = sum x[j] X^j`, the
//! coefficient of `X^(i + n - 1)` in `s(X) * x(X)` over GF(2) is
//! `sum_{a + j = i + n - 1} s[a] x[j] = sum_j s[i - j + n - 1] x[j] = y[i]` (every `j` in
//! `0..n` gives a seed index `a` in `i..=i + n - 1`, inside the seed). So `y` is the *middle
//! product*: coefficients `n - 1 ..= n + m - 2` of `s * x`. A cyclic convolution of any length
//! `N >= n + m - 1` computes it, because the terms that wrap around land on indices below
//! `n - 1`.
//!
//! **Methods** (all exact, all giving the same bits). [`ToeplitzMethod::Reference`] follows
//! the matrix definition row by row (`O(n m / 64)` word operations: for tests).
//! [`ToeplitzMethod::Clmul`] works on packed 64-bit words: the `m x n` matrix is tiled into
//! square Toeplitz blocks whose products are computed by transposed Karatsuba down to a
//! carry-less-multiplication base case (PCLMULQDQ, VPCLMULQDQ or portable; `O(n^1.58)`).
//! [`ToeplitzMethod::Fft`] computes the full product `s * x` by an additive FFT over
//! GF(2^64) with 32 bits per element (`O(n log n)`) and reads the middle bits.
//! [`ToeplitzMethod::Ntt`] is the earlier number-theoretic transform mod `7 * 2^26 + 1` with
//! one bit per 32-bit coefficient: the input is cut into blocks of `L = N / 2` bits, every
//! (output block, input block) pair is a Toeplitz product whose seed segment depends only on
//! the block-index difference, and the `T + (B + T - 1) + B` transforms of length `N` are
//! accumulated in the transform domain. [`ToeplitzMethod::Auto`] (the default) picks
//! Karatsuba for small and the FFT for large blocks. All of them run on both cores (rayon).

use std::time::Instant;

use serde::Serialize;
use zeroize::Zeroizing;

use rayon::prelude::*;

use super::clmul::{self, ClmulBackend};
use super::gf2fft;
use super::ntt::{self, NttBackend, Plan};
use crate::bits::BitBlock;
use crate::rng::SeededRandom;

/// Largest input accepted, `2^30` bits (about 1.07 * 10^9; the FFT's transforms then hold
/// `2^27` elements, 1 GiB each).
pub const MAX_INPUT_BITS: usize = 1 << 30;

/// Largest input of [`ToeplitzMethod::Ntt`], `2^28` bits: within its exactness bound (every
/// output bit is a sum of at most `n` products, which must stay below the prime).
pub const NTT_MAX_INPUT_BITS: usize = 1 << 28;

/// Input length from which [`ToeplitzMethod::Auto`] uses the additive FFT instead of
/// Karatsuba.
pub const AUTO_FFT_MIN_BITS: usize = 500_000;

/// Carry-less products of fewer matrix words squared (`n m / 64^2`) than this run on one
/// thread.
const CLMUL_PARALLEL_WORDS2: usize = 1 << 14;

/// Errors from Toeplitz hashing: always a caller's mistake about lengths.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ToeplitzError {
    /// The requested output is empty.
    #[error("output length is 0 bits; expected 0 < output bits < input bits")]
    EmptyOutput,
    /// The output must be strictly shorter than the input (it is a compression).
    #[error("output length {output_bits} bits is not shorter than the input ({input_bits} bits)")]
    OutputNotShorter {
        /// Requested output length.
        output_bits: usize,
        /// Input length.
        input_bits: usize,
    },
    /// The seed holds fewer than `n + m - 1` bits.
    #[error(
        "seed holds {seed_bits} bits but {needed} are needed (input {input_bits} + output {output_bits} - 1)"
    )]
    SeedTooShort {
        /// Bits in the seed.
        seed_bits: usize,
        /// Bits needed, `n + m - 1`.
        needed: usize,
        /// Input length `n`.
        input_bits: usize,
        /// Output length `m`.
        output_bits: usize,
    },
    /// The input is longer than [`MAX_INPUT_BITS`].
    #[error("input of {input_bits} bits exceeds the supported maximum of {max} bits")]
    InputTooLong {
        /// Input length.
        input_bits: usize,
        /// The maximum, [`MAX_INPUT_BITS`].
        max: usize,
    },
    /// The input is longer than the chosen method supports.
    #[error("input of {input_bits} bits exceeds the {max} bits method {method} supports")]
    InputTooLongForMethod {
        /// Input length.
        input_bits: usize,
        /// The method's maximum (e.g. [`NTT_MAX_INPUT_BITS`]).
        max: usize,
        /// The method's name.
        method: String,
    },
    /// A benchmark parameter is out of range.
    #[error("invalid benchmark parameter: {0}")]
    InvalidBenchmark(String),
}

/// How to compute the Toeplitz product; every method gives the same bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum ToeplitzMethod {
    /// The fastest exact method for the size at hand (see [`ToeplitzMethod::resolve`]): the
    /// default.
    #[default]
    Auto,
    /// Row by row from the matrix definition, `O(n m / 64)`: the reference for tests.
    Reference,
    /// Exact number-theoretic transform, `O(n log n)` with one bit per 32-bit coefficient, on
    /// the widest SIMD backend available.
    Ntt,
    /// The NTT restricted to one backend (for tests and benchmarks); falls back to the
    /// portable kernels when the CPU lacks the instructions.
    NttWith(NttBackend),
    /// Transposed Karatsuba on packed 64-bit words over carry-less multiplication,
    /// `O(n^1.58)` word operations, on the widest carry-less multiply available.
    Clmul,
    /// Karatsuba/carry-less multiplication restricted to one backend (for tests and
    /// benchmarks); falls back to the portable multiply when the CPU lacks the instructions.
    ClmulWith(ClmulBackend),
    /// Additive FFT over GF(2^64) (32 bits per element, Cantor basis), `O(n log n)` on the
    /// widest carry-less multiply available.
    Fft,
    /// The additive FFT restricted to one carry-less backend (for tests and benchmarks);
    /// falls back to the portable multiply when the CPU lacks the instructions.
    FftWith(ClmulBackend),
}

impl ToeplitzMethod {
    /// Short name, for reports and benchmarks (`Auto` reports the method it resolves to
    /// for a 10^6-bit block; use [`ToeplitzMethod::resolve`] for a given size).
    pub fn name(self) -> String {
        match self {
            ToeplitzMethod::Auto => "auto".into(),
            ToeplitzMethod::Reference => "reference".into(),
            ToeplitzMethod::Ntt => format!("ntt-{}", NttBackend::best().name()),
            ToeplitzMethod::NttWith(b) => format!("ntt-{}", b.name()),
            ToeplitzMethod::Clmul => format!("clmul-{}", ClmulBackend::best().name()),
            ToeplitzMethod::ClmulWith(b) => format!("clmul-{}", b.name()),
            ToeplitzMethod::Fft => format!("fft-{}", ClmulBackend::best().name()),
            ToeplitzMethod::FftWith(b) => format!("fft-{}", b.name()),
        }
    }

    /// Parses `auto`, `reference`, `ntt`, `ntt-portable`, `ntt-avx2`, `ntt-avx512`, `clmul`,
    /// `clmul-portable`, `clmul-pclmul`, `clmul-vpclmul`, `fft`, `fft-portable`, `fft-pclmul`
    /// or `fft-vpclmul`.
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "auto" => Some(ToeplitzMethod::Auto),
            "reference" => Some(ToeplitzMethod::Reference),
            "ntt" => Some(ToeplitzMethod::Ntt),
            "ntt-portable" => Some(ToeplitzMethod::NttWith(NttBackend::Portable)),
            "ntt-avx2" => Some(ToeplitzMethod::NttWith(NttBackend::Avx2)),
            "ntt-avx512" => Some(ToeplitzMethod::NttWith(NttBackend::Avx512)),
            "clmul" => Some(ToeplitzMethod::Clmul),
            "clmul-portable" => Some(ToeplitzMethod::ClmulWith(ClmulBackend::Portable)),
            "clmul-pclmul" => Some(ToeplitzMethod::ClmulWith(ClmulBackend::Pclmul)),
            "clmul-vpclmul" => Some(ToeplitzMethod::ClmulWith(ClmulBackend::Vpclmul)),
            "fft" => Some(ToeplitzMethod::Fft),
            "fft-portable" => Some(ToeplitzMethod::FftWith(ClmulBackend::Portable)),
            "fft-pclmul" => Some(ToeplitzMethod::FftWith(ClmulBackend::Pclmul)),
            "fft-vpclmul" => Some(ToeplitzMethod::FftWith(ClmulBackend::Vpclmul)),
            _ => None,
        }
    }

    /// The concrete method `Auto` stands for on an `input_bits`-bit input hashed to
    /// `output_bits` bits on this CPU (other methods resolve to themselves).
    ///
    /// `Auto` is [`ToeplitzMethod::Clmul`] below [`AUTO_FFT_MIN_BITS`] input bits and
    /// [`ToeplitzMethod::Fft`] from there on: the crossover measured on the 2-core AVX-512
    /// development machine (December 2026, `m = n/2`, 10^3 to 2^30 bits: the two tie between
    /// 4 * 10^5 and 5.2 * 10^5 bits, Karatsuba's `n^1.58` loses clearly from 7 * 10^5 on).
    /// The NTT is slower than both at every size measured there.
    pub fn resolve(self, input_bits: usize, output_bits: usize) -> Self {
        let _ = output_bits;
        match self {
            ToeplitzMethod::Auto if input_bits < AUTO_FFT_MIN_BITS => ToeplitzMethod::Clmul,
            ToeplitzMethod::Auto => ToeplitzMethod::Fft,
            other => other,
        }
    }
}

/// Seed length needed to hash `input_bits` down to `output_bits`: `n + m - 1`.
pub fn seed_bits_needed(input_bits: usize, output_bits: usize) -> usize {
    (input_bits + output_bits).saturating_sub(1)
}

fn validate(input: &BitBlock, seed: &BitBlock, m: usize) -> Result<(), ToeplitzError> {
    let n = input.len();
    if m == 0 {
        return Err(ToeplitzError::EmptyOutput);
    }
    if m >= n {
        return Err(ToeplitzError::OutputNotShorter {
            output_bits: m,
            input_bits: n,
        });
    }
    if n > MAX_INPUT_BITS {
        return Err(ToeplitzError::InputTooLong {
            input_bits: n,
            max: MAX_INPUT_BITS,
        });
    }
    let needed = seed_bits_needed(n, m);
    if seed.len() < needed {
        return Err(ToeplitzError::SeedTooShort {
            seed_bits: seed.len(),
            needed,
            input_bits: n,
            output_bits: m,
        });
    }
    Ok(())
}

/// Toeplitz hash of `input` to `output_bits` bits with `seed` (convention in the module
/// docs), by the default (fastest exact) method.
pub fn toeplitz_hash(
    input: &BitBlock,
    seed: &BitBlock,
    output_bits: usize,
) -> Result<BitBlock, ToeplitzError> {
    toeplitz_hash_with(ToeplitzMethod::default(), input, seed, output_bits)
}

/// Toeplitz hash by a chosen method; all methods return identical bits.
pub fn toeplitz_hash_with(
    method: ToeplitzMethod,
    input: &BitBlock,
    seed: &BitBlock,
    output_bits: usize,
) -> Result<BitBlock, ToeplitzError> {
    validate(input, seed, output_bits)?;
    let method = method.resolve(input.len(), output_bits);
    if let ToeplitzMethod::Ntt | ToeplitzMethod::NttWith(_) = method {
        ntt_fits(method, input)?;
    }
    Ok(match method {
        ToeplitzMethod::Reference => reference_unchecked(input, seed, output_bits),
        ToeplitzMethod::Ntt | ToeplitzMethod::Auto => {
            ntt_hash(NttBackend::best(), input, seed, output_bits)
        }
        ToeplitzMethod::NttWith(b) => ntt_hash(b, input, seed, output_bits),
        ToeplitzMethod::Clmul => clmul_hash(ClmulBackend::best(), input, seed, output_bits),
        ToeplitzMethod::ClmulWith(b) => clmul_hash(b, input, seed, output_bits),
        ToeplitzMethod::Fft => fft_hash(ClmulBackend::best(), input, seed, output_bits),
        ToeplitzMethod::FftWith(b) => fft_hash(b, input, seed, output_bits),
    })
}

/// Refuses inputs past the NTT's exactness bound, [`NTT_MAX_INPUT_BITS`].
fn ntt_fits(method: ToeplitzMethod, input: &BitBlock) -> Result<(), ToeplitzError> {
    if input.len() > NTT_MAX_INPUT_BITS {
        return Err(ToeplitzError::InputTooLongForMethod {
            input_bits: input.len(),
            max: NTT_MAX_INPUT_BITS,
            method: method.name(),
        });
    }
    Ok(())
}

/// The reference: `y[i] = parity(s[i .. i + n] AND reverse(x))`, which is row `i` of `T`
/// (`T[i][j] = s[i - j + n - 1]`, so reading row `i` from `j = n - 1` down to `0` walks the
/// seed from `i` up to `i + n - 1`). `O(n m / 64)` word operations.
pub fn toeplitz_reference(
    input: &BitBlock,
    seed: &BitBlock,
    output_bits: usize,
) -> Result<BitBlock, ToeplitzError> {
    validate(input, seed, output_bits)?;
    Ok(reference_unchecked(input, seed, output_bits))
}

fn reference_unchecked(input: &BitBlock, seed: &BitBlock, m: usize) -> BitBlock {
    let n = input.len();
    let mut rev = BitBlock::zeros(n);
    rev.with_words_mut(|w| {
        for j in 0..n {
            let bit = (input.words()[j / 64] >> (j % 64)) & 1;
            let k = n - 1 - j;
            w[k / 64] |= bit << (k % 64);
        }
    });
    let mut out = vec![0u64; m.div_ceil(64)];
    let mut window = Zeroizing::new(vec![0u64; n.div_ceil(64)]);
    let seed_words = seed.words();
    for i in 0..m {
        // window = seed bits i .. i + n (tail of the last word masked below by `rev`).
        let (first, shift) = (i / 64, i % 64);
        for (k, w) in window.iter_mut().enumerate() {
            let lo = seed_words.get(first + k).copied().unwrap_or(0) >> shift;
            let hi = if shift == 0 {
                0
            } else {
                seed_words.get(first + k + 1).copied().unwrap_or(0) << (64 - shift)
            };
            *w = lo | hi;
        }
        let ones: u32 = window
            .iter()
            .zip(rev.words())
            .map(|(a, b)| (a & b).count_ones())
            .sum();
        out[i / 64] |= u64::from(ones & 1) << (i % 64);
    }
    match BitBlock::from_words(out, m) {
        Ok(b) => b,
        Err(_) => unreachable!("exactly m.div_ceil(64) words"),
    }
}

/// The block shape the NTT method uses: transform length `2^log_len`, block length
/// `L = 2^(log_len - 1)`, `input_blocks` blocks of input and `output_blocks` of output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Tiling {
    log_len: u32,
    input_blocks: usize,
    output_blocks: usize,
}

impl Tiling {
    fn block(&self) -> usize {
        1 << (self.log_len - 1)
    }
}

/// Buffers above this many bytes are avoided when a smaller transform can do the job.
const MEMORY_BUDGET_BYTES: usize = 3 << 30;

/// Picks the transform length minimising the modelled work within the memory budget: each
/// of the `T + (B + T - 1) + B` transforms costs about `N (log2 N / 2 + 2)` element
/// operations (butterflies plus loading and extraction), each of the `B T` pointwise
/// products `N`.
fn choose_tiling(n: usize, m: usize) -> Tiling {
    let mut best: Option<(f64, Tiling)> = None;
    for log_len in ntt::MIN_LOG_LEN..=ntt::MAX_LOG_LEN {
        let len = 1usize << log_len;
        let block = len / 2;
        let t = n.div_ceil(block);
        let b = m.div_ceil(block);
        let memory = (t + b + 1) * len * 4;
        let transforms = (2 * t + 2 * b - 1) as f64;
        let cost = len as f64 * (transforms * (f64::from(log_len) / 2.0 + 2.0) + (t * b) as f64);
        let tiling = Tiling {
            log_len,
            input_blocks: t,
            output_blocks: b,
        };
        if memory > MEMORY_BUDGET_BYTES && best.is_some() {
            continue;
        }
        if best.is_none_or(|(c, _)| cost < c) {
            best = Some((cost, tiling));
        }
    }
    match best {
        Some((_, t)) => t,
        None => unreachable!("the loop visits at least one length"),
    }
}

/// The NTT method with a forced transform length `2^log_len` (clamped to the supported
/// range and raised until one block pair fits): for tuning the block-size choice in
/// benchmarks. Same bits as every other method.
#[doc(hidden)]
pub fn toeplitz_hash_ntt_log_len(
    backend: NttBackend,
    log_len: u32,
    input: &BitBlock,
    seed: &BitBlock,
    output_bits: usize,
) -> Result<BitBlock, ToeplitzError> {
    validate(input, seed, output_bits)?;
    ntt_fits(ToeplitzMethod::NttWith(backend), input)?;
    let log_len = log_len.clamp(ntt::MIN_LOG_LEN, ntt::MAX_LOG_LEN);
    let block = 1usize << (log_len - 1);
    let tiling = Tiling {
        log_len,
        input_blocks: input.len().div_ceil(block),
        output_blocks: output_bits.div_ceil(block),
    };
    Ok(ntt_hash_tiled(backend, input, seed, output_bits, tiling))
}

fn ntt_hash(backend: NttBackend, input: &BitBlock, seed: &BitBlock, m: usize) -> BitBlock {
    ntt_hash_tiled(backend, input, seed, m, choose_tiling(input.len(), m))
}

fn ntt_hash_tiled(
    backend: NttBackend,
    input: &BitBlock,
    seed: &BitBlock,
    m: usize,
    tiling: Tiling,
) -> BitBlock {
    let n = input.len();
    debug_assert!(n as u64 <= ntt::MAX_SUM);
    let plan = Plan::new(tiling.log_len, backend);
    let block = tiling.block();
    let (t_blocks, b_blocks) = (tiling.input_blocks, tiling.output_blocks);

    // Transforms of the input blocks x_t = x[tL .. (t+1)L].
    let mut xs = Vec::with_capacity(t_blocks);
    for t in 0..t_blocks {
        let mut buf = plan.alloc();
        plan.load_bits(
            &mut buf,
            input.words(),
            (t * block) as i64,
            block.min(n - t * block),
        );
        plan.forward(&mut buf);
        xs.push(buf);
    }
    let mut accs: Vec<_> = (0..b_blocks).map(|_| plan.alloc()).collect();
    let mut seg = plan.alloc();
    // Output block b and input block t form a Toeplitz product whose seed segment starts at
    // bL - tL + n - L and has 2L - 1 bits: it depends on d = b - t only.
    let needed = seed_bits_needed(n, m);
    let seed_words = seed.words();
    for d in -(t_blocks as i64 - 1)..=(b_blocks as i64 - 1) {
        let start = d * block as i64 + n as i64 - block as i64;
        // Bits past n + m - 1 only reach output rows >= m, bits before 0 only meet input
        // padding; both are loaded as zero.
        let end = (start + 2 * block as i64 - 1).min(needed as i64);
        if end <= start.max(0) {
            continue;
        }
        load_seed_segment(&plan, &mut seg, seed_words, start, end);
        plan.forward(&mut seg);
        for (b, acc) in accs.iter_mut().enumerate() {
            let t = b as i64 - d;
            if t < 0 || t >= t_blocks as i64 {
                continue;
            }
            plan.mul_acc(acc, &xs[t as usize], &seg);
        }
    }
    drop(xs);
    let mut out = BitBlock::zeros(0);
    for (b, acc) in accs.iter_mut().enumerate() {
        plan.inverse(acc);
        let parities = Zeroizing::new(plan.parities(acc));
        let rows = (m - b * block).min(block);
        let all = match BitBlock::from_words(parities.to_vec(), plan.len()) {
            Ok(bb) => bb,
            Err(_) => unreachable!("parities holds len bits"),
        };
        match all.slice(block - 1..block - 1 + rows) {
            Ok(piece) => out.extend_from(&piece),
            Err(_) => unreachable!("block - 1 + rows <= 2L - 1 < len"),
        }
    }
    out
}

/// Loads seed bits `start..end` (absolute positions; negative ones read as zero) at offsets
/// `0..end - start`, zero elsewhere.
fn load_seed_segment(plan: &Plan, buf: &mut [ntt::V], words: &[u64], start: i64, end: i64) {
    let len = (end - start) as usize;
    let mut seg: Vec<u64> = (0..len.div_ceil(64))
        .map(|k| ntt::read64(words, start + 64 * k as i64))
        .collect();
    if let Some(last) = seg.last_mut()
        && !len.is_multiple_of(64)
    {
        *last &= (1u64 << (len % 64)) - 1;
    }
    plan.load_bits(buf, &seg, 0, len);
}

/// The carry-less method with a forced square block of `block_words` words and Karatsuba
/// base case of `base_words` words (both clamped to sane ranges): for tuning in benchmarks.
/// Same bits as every other method.
#[doc(hidden)]
pub fn toeplitz_hash_clmul_tuned(
    backend: ClmulBackend,
    block_words: usize,
    base_words: usize,
    input: &BitBlock,
    seed: &BitBlock,
    output_bits: usize,
) -> Result<BitBlock, ToeplitzError> {
    validate(input, seed, output_bits)?;
    let k = block_words.clamp(1, input.len().div_ceil(64));
    let base = base_words.clamp(1, clmul::MAX_BASE_WORDS);
    // Karatsuba needs the block to halve down to at most MAX_BASE_WORDS words.
    let k = if k >> k.trailing_zeros() > clmul::MAX_BASE_WORDS {
        clmul::choose_block_words(input.len(), output_bits)
    } else {
        k
    };
    Ok(clmul_hash_blocks(
        backend,
        input,
        seed,
        output_bits,
        k,
        base,
    ))
}

/// The full binary product `s * x` of the `n + m - 1` seed bits and the input by the
/// additive FFT; `y` is bits `n - 1 ..= n + m - 2` of it.
fn fft_hash(backend: ClmulBackend, input: &BitBlock, seed: &BitBlock, m: usize) -> BitBlock {
    let n = input.len();
    let needed = seed_bits_needed(n, m);
    let mut words = gf2fft::product_bits(
        backend.or_portable(),
        (seed.words(), needed),
        (input.words(), n),
        n - 1,
        m,
    );
    match BitBlock::from_words(std::mem::take(&mut *words), m) {
        Ok(b) => b,
        Err(_) => unreachable!("m.div_ceil(64) words"),
    }
}

fn clmul_hash(backend: ClmulBackend, input: &BitBlock, seed: &BitBlock, m: usize) -> BitBlock {
    let k = clmul::choose_block_words(input.len(), m);
    clmul_hash_blocks(backend, input, seed, m, k, clmul::BASE_WORDS)
}

/// Tiles the `m x n` matrix into square Toeplitz blocks of `k` words (`L = 64k` bits):
/// output block `b` and input block `t` form a TMVP whose seed starts at seed bit
/// `(b - t) L + n - L`, so all block seeds are word ranges of one extended seed `E` with
/// `E[e] = s[e + n - T L]` (zero outside the seed's `n + m - 1` bits: those bits only meet
/// input padding or output rows past `m`).
fn clmul_hash_blocks(
    backend: ClmulBackend,
    input: &BitBlock,
    seed: &BitBlock,
    m: usize,
    k: usize,
    base: usize,
) -> BitBlock {
    let backend = backend.or_portable();
    let n = input.len();
    let l = 64 * k;
    let (t_blocks, b_blocks) = (n.div_ceil(l), m.div_ceil(l));
    let needed = seed_bits_needed(n, m);
    let e0 = n as i64 - (t_blocks * l) as i64;
    let cut = (needed as i64 - e0) as usize;
    let seed_words = seed.words();
    let ext: Vec<u64> = (0..(t_blocks + b_blocks) * k)
        .map(|w| {
            let pos = 64 * w;
            let v = ntt::read64(seed_words, e0 + pos as i64);
            if pos + 64 <= cut {
                v
            } else if pos >= cut {
                0
            } else {
                v & ((1u64 << (cut - pos)) - 1)
            }
        })
        .collect();
    let mut x = Zeroizing::new(vec![0u64; t_blocks * k]);
    x[..input.words().len()].copy_from_slice(input.words());
    let mut y = Zeroizing::new(vec![0u64; b_blocks * k]);
    let kern = crate::bits::kernels::best();
    let block_product = |b: usize, t: usize, acc: &mut [u64], scratch: &mut [u64]| {
        let s0 = (b + t_blocks - 1 - t) * k;
        clmul::tmvp_acc(
            backend,
            base,
            &ext[s0..s0 + 2 * k],
            &x[t * k..(t + 1) * k],
            acc,
            scratch,
        );
    };
    if t_blocks * b_blocks * k * k < CLMUL_PARALLEL_WORDS2 {
        // Small products: the rayon pool costs more than it saves.
        let mut scratch = Zeroizing::new(vec![0u64; 4 * k]);
        for (b, yb) in y.chunks_mut(k).enumerate() {
            (0..t_blocks).for_each(|t| block_product(b, t, yb, &mut scratch));
        }
    } else {
        y.par_chunks_mut(k).enumerate().for_each(|(b, yb)| {
            let acc = (0..t_blocks)
                .into_par_iter()
                .fold(
                    || {
                        (
                            Zeroizing::new(vec![0u64; k]),
                            Zeroizing::new(vec![0u64; 4 * k]),
                        )
                    },
                    |(mut acc, mut scratch), t| {
                        block_product(b, t, &mut acc, &mut scratch);
                        (acc, scratch)
                    },
                )
                .map(|(acc, _)| acc)
                .reduce(
                    || Zeroizing::new(vec![0u64; k]),
                    |mut a, b| {
                        kern.xor_into(&mut a, &b);
                        a
                    },
                );
            yb.copy_from_slice(&acc);
        });
    }
    match BitBlock::from_words(std::mem::take(&mut *y), m) {
        Ok(b) => b,
        Err(_) => unreachable!("b_blocks * k words hold at least m bits"),
    }
}

/// Result of a timed Toeplitz benchmark, as `qkd bench amplify` prints it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ToeplitzBench {
    /// Input length `n`.
    pub block_bits: usize,
    /// Output length `m`.
    pub output_bits: usize,
    /// Method used, as resolved for this size (e.g. `fft-vpclmul`).
    pub method: String,
    /// Threads of the rayon pool the hash ran on.
    pub threads: usize,
    /// Hashes timed (after the first).
    pub repeats: usize,
    /// Wall time of the first hash of the process, in seconds: it also pays for fresh
    /// memory and one-time tables.
    pub first_seconds: f64,
    /// Median wall time of the `repeats` hashes after the first (the steady state of a
    /// pipeline hashing block after block), in seconds; the first one's when `repeats` is 0.
    pub seconds: f64,
    /// Fastest of those hashes, in seconds.
    pub min_seconds: f64,
    /// Input bits hashed per second, from the median.
    pub bits_per_second: f64,
    /// Peak resident set size of the process so far (`VmHWM`), when the OS reports it.
    pub peak_rss_bytes: Option<u64>,
}

/// Hashes a random `block_bits`-bit input to `floor(ratio * block_bits)` bits with a random
/// seed (both from a fixed ChaCha20 stream) `1 + repeats` times and times each hash alone.
pub fn bench_toeplitz(
    block_bits: usize,
    ratio: f64,
    method: ToeplitzMethod,
    repeats: usize,
) -> Result<ToeplitzBench, ToeplitzError> {
    if !(ratio > 0.0 && ratio < 1.0) {
        return Err(ToeplitzError::InvalidBenchmark(format!(
            "ratio {ratio} must lie strictly between 0 and 1"
        )));
    }
    let m = (ratio * block_bits as f64).floor() as usize;
    let mut rng = SeededRandom::from_u64(0x7e0b_1172);
    let mut random_block = |len: usize| {
        let words = (0..len.div_ceil(64)).map(|_| rng.u64()).collect();
        match BitBlock::from_words(words, len) {
            Ok(b) => b,
            Err(_) => unreachable!("enough words"),
        }
    };
    let input = random_block(block_bits);
    let seed = random_block(seed_bits_needed(block_bits, m));
    let mut times = Vec::with_capacity(1 + repeats);
    for _ in 0..=repeats {
        let t0 = Instant::now();
        let out = toeplitz_hash_with(method, &input, &seed, m)?;
        times.push(t0.elapsed().as_secs_f64());
        std::hint::black_box(&out);
    }
    let first_seconds = times[0];
    let mut steady = if repeats == 0 {
        vec![first_seconds]
    } else {
        times[1..].to_vec()
    };
    steady.sort_by(f64::total_cmp);
    let seconds = steady[steady.len() / 2];
    Ok(ToeplitzBench {
        block_bits,
        output_bits: m,
        method: method.resolve(block_bits, m).name(),
        threads: rayon::current_num_threads(),
        repeats,
        first_seconds,
        seconds,
        min_seconds: steady[0],
        bits_per_second: block_bits as f64 / seconds.max(1e-12),
        peak_rss_bytes: peak_rss_bytes(),
    })
}

/// Peak resident set size of this process (`VmHWM` from `/proc/self/status`), if available.
pub fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

#[cfg(test)]
mod tests;
