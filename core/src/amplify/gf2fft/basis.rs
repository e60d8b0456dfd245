//! Conversion between the monomial basis and the "novel" basis `X_j = prod_{bit i of j} s_i`
//! of the additive FFT (Lin, Chung, Han 2014), by recursive Taylor expansion in the subspace
//! polynomials `s_b = x^(2^b) + x` (`b` a power of two, Cantor basis). The conversion only
//! XORs coefficients, so it runs on any coefficient type: the 32-bit chunks of an input
//! before they are widened to field elements, or the field elements of a product.

use std::ops::BitXorAssign;
use std::sync::OnceLock;

use rayon::join;
use rayon::prelude::*;

mod skewed;

/// Recursion splits of at least this many coefficients run their halves on the rayon pool.
const PARALLEL: usize = 1 << 14;
/// Slice XORs of at least twice this many coefficients are split into chunks of this size
/// for the rayon pool.
const CHUNK: usize = 1 << 14;

/// [`taylor`] on at least this many single coefficients runs as one pass ([`skewed`]).
const SKEWED_MIN_LEN: usize = 1 << 17;
/// ... when it has at most this many row bits (`k - b`); more are first halved by the
/// recursion.
const SKEWED_MAX_ROW_BITS: u32 = 7;
/// Bytes of coefficients a cache-blocked pass works on at once (within the 1 MiB L2 of the
/// development machine, with room for the streams).
const SCRATCH_BYTES: usize = 1 << 19;

/// A coefficient: anything XOR acts on.
pub(super) trait Coeff: Copy + Default + Send + Sync + BitXorAssign {}

impl Coeff for u32 {}
impl Coeff for u64 {}

/// `dst ^= src` element-wise (over the shorter length).
fn xor_into<T: Coeff>(dst: &mut [T], src: &[T]) {
    dst.iter_mut().zip(src).for_each(|(x, y)| *x ^= *y);
}

/// [`xor_into`], in parallel chunks when long.
fn xor_slices<T: Coeff>(dst: &mut [T], src: &[T]) {
    if dst.len() >= 2 * CHUNK {
        dst.par_chunks_mut(CHUNK)
            .zip(src.par_chunks(CHUNK))
            .for_each(|(d, s)| xor_into(d, s));
    } else {
        xor_into(dst, src);
    }
}

/// Taylor expansion in `y = x^tau + x`, `tau = 2^b`, of a polynomial with `2^k` coefficients,
/// each a row of `row` field elements (`f.len() = row << k`): afterwards block `i` (of `tau`
/// coefficients) holds `g_i` with `f = sum_i g_i(x) y^i`, `deg g_i < tau`.
///
/// With `n = 2^k` and `m = n / (2 tau)` (a power of two), `y^m = x^(n/2) + x^m`; dividing by
/// it ("`f[e - n/2 + m] ^= f[e]`" from the top down) leaves the remainder in the lower half
/// and the quotient in the upper one, whose expansions are the low and high `y` powers. Every
/// coefficient moves by at least `n/4`, so each quarter is one slice XOR.
fn taylor<T: Coeff>(f: &mut [T], k: u32, b: u32, row: usize, inverse: bool) {
    taylor_with(f, k, b, row, inverse, SKEWED_MIN_LEN);
}

/// [`taylor`], switching to [`skewed::taylor`] from `skewed_min_len` coefficients.
fn taylor_with<T: Coeff>(
    f: &mut [T],
    k: u32,
    b: u32,
    row: usize,
    inverse: bool,
    skewed_min_len: usize,
) {
    if k <= b {
        return;
    }
    if row == 1 && k - b <= SKEWED_MAX_ROW_BITS && f.len() >= skewed_min_len {
        return skewed::taylor(f, k, b, inverse);
    }
    let n = 1usize << k;
    let (q, m) = (n / 4, n >> (b + 1));
    let dist = n / 2 - m;
    let step = |f: &mut [T], start: usize| {
        let (below, from) = f.split_at_mut(start * row);
        let t = (start - dist) * row;
        xor_slices(&mut below[t..t + q * row], &from[..q * row]);
    };
    if !inverse {
        step(f, 3 * q);
        step(f, 2 * q);
    }
    let (lo, hi) = f.split_at_mut((n / 2) * row);
    if lo.len() >= PARALLEL {
        join(
            || taylor_with(lo, k - 1, b, row, inverse, skewed_min_len),
            || taylor_with(hi, k - 1, b, row, inverse, skewed_min_len),
        );
    } else {
        taylor_with(lo, k - 1, b, row, inverse, skewed_min_len);
        taylor_with(hi, k - 1, b, row, inverse, skewed_min_len);
    }
    if inverse {
        step(f, 2 * q);
        step(f, 3 * q);
    }
}

/// Monomial basis to the novel basis `X_j` (`inverse`: back), in place, for a polynomial with
/// `2^k` coefficients that are rows of `row` elements.
///
/// With `b` the largest power of two below `k` and `y = s_b(x) = x^(2^b) + x`: expand
/// `f = sum_i g_i(x) y^i` ([`taylor`]), convert each `g_i` (`2^b` coefficients), then convert
/// the polynomials in `y` formed by each coefficient position across the `g_i` (rows of
/// `2^b` elements), because `X_(j + 2^b m)(x) = X_j(x) X_m(y)` (`s_(b+t) = s_t o s_b`).
fn novel<T: Coeff>(f: &mut [T], k: u32, row: usize, inverse: bool) {
    if k <= 1 {
        return; // X_0 = 1, X_1 = x: already the monomial basis.
    }
    if k <= SCALAR_LOG && row == 1 {
        // The same XORs, replayed from a recorded list (no recursion on tiny slices).
        for &(dst, src) in small_ops(k, inverse) {
            if let (Some(&v), true) = (f.get(usize::from(src)), usize::from(dst) < f.len()) {
                f[usize::from(dst)] ^= v;
            }
        }
        return;
    }
    if k <= SMALL_LOG && row > 1 {
        replay_rows(f, k, row, small_ops(k, inverse));
        return;
    }
    let b = 1u32 << (31 - (k - 1).leading_zeros());
    let block = row << b;
    let blocks = |f: &mut [T]| {
        if f.len() >= 2 * PARALLEL && f.len() > block {
            f.par_chunks_mut(block)
                .for_each(|g| novel(g, b, row, inverse));
        } else {
            f.chunks_mut(block).for_each(|g| novel(g, b, row, inverse));
        }
    };
    if inverse {
        novel(f, k - b, block, true);
        blocks(f);
        taylor(f, k, b, row, true);
    } else {
        taylor(f, k, b, row, false);
        blocks(f);
        novel(f, k - b, block, false);
    }
}

/// Replays the row XORs `ops` on `2^k` rows of `row` coefficients (`f.len() = row << k`)
/// (long ones column range by column range, so that each range's rows stay in cache for all
/// of them, on the rayon pool).
fn replay_rows<T: Coeff>(f: &mut [T], k: u32, row: usize, ops: &[(u8, u8)]) {
    if f.len() < 2 * PARALLEL {
        for &(dst, src) in ops {
            let (d, s) = (usize::from(dst) * row, usize::from(src) * row);
            if d < s {
                let (lo, hi) = f.split_at_mut(s);
                xor_into(&mut lo[d..d + row], &hi[..row]);
            } else {
                let (lo, hi) = f.split_at_mut(d);
                xor_into(&mut hi[..row], &lo[s..s + row]);
            }
        }
        return;
    }
    let columns = ((SCRATCH_BYTES / size_of::<T>()) >> k).max(8);
    super::column_ranges(f, row, columns)
        .par_iter_mut()
        .for_each(|rows| {
            for &(dst, src) in ops {
                let (d, s) = (usize::from(dst), usize::from(src));
                if d < s {
                    let (lo, hi) = rows.split_at_mut(s);
                    xor_into(lo[d], hi[0]);
                } else {
                    let (lo, hi) = rows.split_at_mut(d);
                    xor_into(hi[0], lo[s]);
                }
            }
        });
}

/// Conversions of at most `2^SMALL_LOG` rows replay a recorded XOR list of row XORs.
const SMALL_LOG: u32 = 8;
/// ... and of at most `2^SCALAR_LOG` single coefficients, of coefficient XORs.
const SCALAR_LOG: u32 = 4;

/// The coefficient XORs `(dst, src)` that [`novel`] performs on `2^k` coefficients
/// (`k <= SMALL_LOG`), in order, recorded once by running it symbolically.
fn small_ops(k: u32, inverse: bool) -> &'static [(u8, u8)] {
    static OPS: OnceLock<Vec<Vec<(u8, u8)>>> = OnceLock::new();
    let all = OPS.get_or_init(|| {
        let mut v = Vec::new();
        for k in 0..=SMALL_LOG {
            for inverse in [false, true] {
                let mut ops = Vec::new();
                record_novel(&mut ops, 0, k, 1, inverse);
                v.push(ops);
            }
        }
        v
    });
    let idx = (k.min(SMALL_LOG) as usize) * 2 + usize::from(inverse);
    all.get(idx).map_or(&[], Vec::as_slice)
}

/// [`novel`] on coefficients `off + (0..2^k) * row`, emitting element XORs instead of doing
/// them.
fn record_novel(ops: &mut Vec<(u8, u8)>, off: usize, k: u32, row: usize, inverse: bool) {
    if k <= 1 {
        return;
    }
    let b = 1u32 << (31 - (k - 1).leading_zeros());
    let block = row << b;
    let blocks = |ops: &mut Vec<(u8, u8)>| {
        for g in 0..1usize << (k - b) {
            record_novel(ops, off + g * block, b, row, inverse);
        }
    };
    if inverse {
        record_novel(ops, off, k - b, block, true);
        blocks(ops);
        record_taylor(ops, off, k, b, row, true);
    } else {
        record_taylor(ops, off, k, b, row, false);
        blocks(ops);
        record_novel(ops, off, k - b, block, false);
    }
}

/// [`taylor`], emitting element XORs.
fn record_taylor(ops: &mut Vec<(u8, u8)>, off: usize, k: u32, b: u32, row: usize, inverse: bool) {
    if k <= b {
        return;
    }
    let n = 1usize << k;
    let (q, m) = (n / 4, n >> (b + 1));
    let dist = n / 2 - m;
    let step = |ops: &mut Vec<(u8, u8)>, start: usize| {
        for i in 0..q * row {
            let src = off + start * row + i;
            let dst = off + (start - dist) * row + i;
            ops.push((dst as u8, src as u8));
        }
    };
    if !inverse {
        step(ops, 3 * q);
        step(ops, 2 * q);
    }
    record_taylor(ops, off, k - 1, b, row, inverse);
    record_taylor(ops, off + (n / 2) * row, k - 1, b, row, inverse);
    if inverse {
        step(ops, 2 * q);
        step(ops, 3 * q);
    }
}

/// Monomial basis to the novel basis `X_j`, in place (length a power of two).
pub(super) fn to_novel<T: Coeff>(f: &mut [T]) {
    novel(f, f.len().trailing_zeros(), 1, false);
}

/// Inverse of [`to_novel`].
pub(super) fn from_novel<T: Coeff>(f: &mut [T]) {
    novel(f, f.len().trailing_zeros(), 1, true);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::SeededRandom;

    #[test]
    fn the_one_pass_taylor_expansion_matches_the_recursive_one() {
        // Small and large row counts; at 2^20 coefficients of (k, b) = (20, 16) the pass has
        // 16 segments of two blocks each, so saved halos and short blocks are exercised.
        let mut rng = SeededRandom::from_u64(27);
        for (k, b) in [
            (4u32, 2u32),
            (6, 4),
            (9, 8),
            (12, 8),
            (15, 8),
            (20, 16),
            (23, 16),
        ] {
            let f: Vec<u64> = (0..1usize << k).map(|_| rng.u64()).collect();
            for inverse in [false, true] {
                let mut expect = f.clone();
                taylor_with(&mut expect, k, b, 1, inverse, usize::MAX);
                let mut got = f.clone();
                skewed::taylor(&mut got, k, b, inverse);
                assert!(got == expect, "k={k} b={b} inverse={inverse}");
                let mut narrow: Vec<u32> = f.iter().map(|&v| v as u32).collect();
                skewed::taylor(&mut narrow, k, b, inverse);
                assert!(narrow.iter().zip(&expect).all(|(a, e)| *a == *e as u32));
            }
        }
    }

    #[test]
    fn row_replay_by_columns_matches_whole_rows() {
        let mut rng = SeededRandom::from_u64(28);
        for k in [2u32, 7, 8] {
            let row = 3000;
            let f: Vec<u64> = (0..row << k).map(|_| rng.u64()).collect();
            for inverse in [false, true] {
                let ops = small_ops(k, inverse);
                let mut expect = f.clone();
                for &(d, s) in ops {
                    let (d, s) = (usize::from(d) * row, usize::from(s) * row);
                    for i in 0..row {
                        let v = expect[s + i];
                        expect[d + i] ^= v;
                    }
                }
                let mut got = f.clone();
                replay_rows(&mut got, k, row, ops);
                assert!(got == expect, "k={k} inverse={inverse}");
            }
        }
    }
}
