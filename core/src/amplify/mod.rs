//! Privacy amplification: how long the final key may be ([`finite_key`], with the tolerated
//! QBERs of [`QberLadder`]) and the hash that shortens the reconciled key to that length
//! ([`toeplitz`]).
//!
//! Both parties hash their (identical) reconciled key with the same public random seed; the
//! output length comes from a [`finite_key::SecretLengthModel`]. The Toeplitz convention is
//! fixed by DESIGN §4 so that two implementations produce the same bits.

mod clmul;
pub mod decoy;
pub mod finite_key;
mod gf2fft;
mod ntt;
mod qber_ladder;
pub mod toeplitz;

pub use clmul::ClmulBackend;
pub use decoy::{
    DecoyBasisBounds, DecoyBound, DecoyCounts, DecoyDevice, DecoyError, DecoyInput,
    DecoyStatistics, Lim2014, expected_statistics,
};
pub use finite_key::{
    Bb84Tlgr2012, FiniteKeyError, FiniteKeyInput, SecretLength, SecretLengthBound,
    SecretLengthModel, binary_entropy,
};
pub use ntt::NttBackend;
pub use qber_ladder::{DEFAULT_LOWEST_RUNG, DEFAULT_RUNG_RATIO, QberLadder};
pub use toeplitz::{
    AUTO_FFT_MIN_BITS, MAX_INPUT_BITS, NTT_MAX_INPUT_BITS, ToeplitzBench, ToeplitzError,
    ToeplitzMethod, bench_toeplitz, peak_rss_bytes, seed_bits_needed, toeplitz_hash,
    toeplitz_hash_clmul_tuned, toeplitz_hash_ntt_log_len, toeplitz_hash_with, toeplitz_reference,
};
