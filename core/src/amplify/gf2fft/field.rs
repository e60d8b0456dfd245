//! The field GF(2^64) = GF(2)[z] / (z^64 + z^4 + z^3 + z + 1) of the additive FFT: the portable
//! product, the Cantor basis and the table of butterfly constants.

use std::sync::OnceLock;

use super::super::clmul::clmul64_portable;
use super::MAX_LOG;

/// `lo + hi z^64` reduced modulo `z^64 + z^4 + z^3 + z + 1`: `hi z^64 = hi (1 + z + z^3 + z^4)`,
/// whose bits past 63 (`ov`, at most 4 bits) wrap around once more without overflowing.
#[inline(always)]
pub(super) fn reduce(lo: u64, hi: u64) -> u64 {
    let ov = (hi >> 63) ^ (hi >> 61) ^ (hi >> 60);
    let t = hi ^ ov;
    lo ^ t ^ (t << 1) ^ (t << 3) ^ (t << 4)
}

/// Product in GF(2^64), portable.
pub(super) fn gf_mul_portable(a: u64, b: u64) -> u64 {
    let p = clmul64_portable(a, b);
    reduce(p as u64, (p >> 64) as u64)
}

/// A solution of `z^2 + z = c` in GF(2^64), if any (Gaussian elimination on the GF(2)-linear
/// map `z -> z^2 + z`).
fn solve_artin_schreier(c: u64) -> Option<u64> {
    let mut pivots: [Option<(u64, u64)>; 64] = [None; 64];
    for j in 0..64 {
        let e = 1u64 << j;
        let (mut v, mut comb) = (gf_mul_portable(e, e) ^ e, e);
        while v != 0 {
            let top = 63 - v.leading_zeros() as usize;
            match pivots[top] {
                Some((pv, pc)) => {
                    v ^= pv;
                    comb ^= pc;
                }
                None => {
                    pivots[top] = Some((v, comb));
                    break;
                }
            }
        }
    }
    let (mut c, mut z) = (c, 0u64);
    while c != 0 {
        let top = 63 - c.leading_zeros() as usize;
        let (pv, pc) = pivots[top]?;
        c ^= pv;
        z ^= pc;
    }
    Some(z)
}

/// The Cantor basis `v_0 = 1`, `v_i^2 + v_i = v_(i-1)` (it exists for `i < 64` in
/// GF(2^64)); the first `MAX_LOG + 1` elements.
pub(super) fn cantor_basis() -> &'static [u64] {
    static BASIS: OnceLock<Vec<u64>> = OnceLock::new();
    BASIS.get_or_init(|| {
        let mut v = vec![1u64];
        for _ in 0..MAX_LOG {
            match v.last().copied().and_then(solve_artin_schreier) {
                Some(next) => v.push(next),
                None => unreachable!("a Cantor basis exists in GF(2^64) (trace of v_i is 0)"),
            }
        }
        v
    })
}

/// Bits of `b` served by [`Twiddles`]' low table.
pub(super) const LOW_BITS: u32 = 12;

/// The butterfly constants `lambda(b) = omega_(2b) = sum_{bit t of b} v_(t+1)` of a transform
/// of `2^k` points (`b < 2^(k-1)`). `lambda` is GF(2)-linear in `b`, so two small tables, one
/// for the low [`LOW_BITS`] bits of `b` and one for the rest, give every value with one XOR
/// (a full table would be half as large as the transform).
pub(super) struct Twiddles {
    low: Vec<u64>,
    high: Vec<u64>,
}

impl Twiddles {
    /// The constants of a transform of `2^k` points, `k <= MAX_LOG`.
    pub(super) fn new(k: u32) -> Self {
        let bits = k.saturating_sub(1);
        let low_bits = bits.min(LOW_BITS);
        Twiddles {
            low: span(&cantor_basis()[1..], low_bits),
            high: span(&cantor_basis()[1 + LOW_BITS as usize..], bits - low_bits),
        }
    }

    /// `lambda(b)`.
    #[inline(always)]
    pub(super) fn at(&self, b: usize) -> u64 {
        self.low[b & ((1 << LOW_BITS) - 1)] ^ self.high[b >> LOW_BITS]
    }

    /// `lambda(i)` for `i < 2^min(k - 1, LOW_BITS)`: `lambda(b + i) = lambda(b) ^ low()[i]`
    /// when the low bits of `b` are zero.
    #[inline(always)]
    pub(super) fn low(&self) -> &[u64] {
        &self.low
    }
}

/// The `2^bits` sums of subsets of `basis[..bits]`, indexed by the subset's bit mask.
fn span(basis: &[u64], bits: u32) -> Vec<u64> {
    let mut out = vec![0u64; 1 << bits];
    for (t, &v) in basis.iter().take(bits as usize).enumerate() {
        let half = 1 << t;
        for i in 0..half {
            out[half + i] = out[i] ^ v;
        }
    }
    out
}
