//! Binary-polynomial multiplication by an additive FFT over GF(2^64), the engine behind
//! [`ToeplitzMethod::Fft`](super::ToeplitzMethod::Fft).
//!
//! **Encoding.** A binary polynomial is cut into 32-bit chunks; chunk `e` becomes the
//! GF(2^64) element whose bits are the chunk (field `GF(2)[z] / (z^64 + z^4 + z^3 + z + 1)`),
//! and the polynomial becomes `A(Y) = sum_e a_e Y^e` over GF(2^64). Two chunks multiply to a
//! polynomial in `z` of degree at most 62, and sums of such products stay below degree 64,
//! so the coefficients of `A(Y) B(Y)` over GF(2^64) are *exactly* the GF(2)\[z\] polynomials
//! that, shifted by `32 e` bits and XORed, give the binary product (Kronecker substitution,
//! no reduction ever happens). `A B` is computed by evaluation at `2^k` points and
//! interpolation, `2^k > deg(A B)`.
//!
//! **Transform** (Lin, Chung, Han, FOCS 2014; Cantor basis as in Gao and Mateer 2010 and
//! Chen, Cheng, Kuo, Li, Yang, arXiv:1708.09746). With a Cantor basis `v_0 = 1`,
//! `v_i^2 + v_i = v_(i-1)`, the subspace polynomials are `s_i = (x^2 + x)` composed `i`
//! times, with coefficients in GF(2) and `s_i(v_i) = 1`; the "novel" basis is
//! `X_j = prod_{bit i of j} s_i`. A polynomial is first converted from the monomial basis to
//! the novel basis ([`basis`]: XORs only), then evaluated at the `2^k` points
//! `omega_l = sum_{bit t of l} l_t v_t` by `k` levels of butterflies
//! `a += lambda c; c += a` with `lambda = s_i(omega_(2^(i+1) b)) = omega_(2b)` (because
//! `s_i(v_j) = v_(j-i)`; [`field::Twiddles`]). The inverse runs the butterflies backwards
//! and converts back; no division by field elements is needed anywhere.
//!
//! **Schedule.** Levels are done four at a time per pass over memory ([`kernels`]: a pass
//! over a block of `2^L` elements does its top four levels column by column, then recurses
//! into its 16 sub-blocks), and the last six levels of each 64-element block in registers,
//! so a transform of `2^23` elements reads and writes its data six times instead of 23. The
//! columns of a pass and the sub-blocks run on the rayon pool.
//!
//! **Zero tops.** An input whose chunks fit in the lowest `2^j` of the `2^k` coefficients
//! is converted at size `2^j` (on 32-bit chunks, half the memory of field elements), and its
//! first `k - j` levels are not computed: every butterfly there has `c = 0`, so each
//! sub-block of `2^j` elements starts as a copy of the converted polynomial.

mod basis;
mod buffer;
mod field;
mod kernels;

use rayon::join;
use rayon::prelude::*;
use zeroize::Zeroizing;

use super::clmul::ClmulBackend;
use buffer::Buffer;
use field::Twiddles;
use kernels::{GROUP_LOG, Kernels, LEAF, Portable};

/// Largest transform, `2^MAX_LOG` elements (`2^33` bits of product).
const MAX_LOG: u32 = 28;
/// `log2(LEAF)`.
const LEAF_LOG: u32 = LEAF.trailing_zeros();
/// Blocks of at least this many elements spread their sub-blocks over the rayon pool.
const PARALLEL: usize = 1 << 14;
/// Passes over rows of at least twice this many elements split the columns into ranges of
/// this many for the rayon pool; element loops (loading, widening, extraction) use the same
/// chunk size.
const COLUMNS: usize = 1 << 11;

/// The rows of `row` elements of `d`, cut into column ranges of `width`: range `c` holds
/// columns `c width ..` of every row, in row order. Ranges are disjoint, so they can be
/// handed to different threads.
fn column_ranges<T>(d: &mut [T], row: usize, width: usize) -> Vec<Vec<&mut [T]>> {
    let mut ranges: Vec<Vec<&mut [T]>> = (0..row.div_ceil(width))
        .map(|_| Vec::with_capacity(d.len() / row.max(1)))
        .collect();
    for r in d.chunks_exact_mut(row) {
        for (rows, piece) in ranges.iter_mut().zip(r.chunks_mut(width)) {
            rows.push(piece);
        }
    }
    ranges
}

/// `each(u, sub-block u)` for the sub-blocks of `s` elements of `d`, on the rayon pool when
/// `d` is long.
fn for_each_sub_block(d: &mut [u64], s: usize, each: impl Fn((usize, &mut [u64])) + Sync + Send) {
    if d.len() >= PARALLEL {
        d.par_chunks_mut(s).enumerate().for_each(each);
    } else {
        d.chunks_mut(s).enumerate().for_each(each);
    }
}

/// `dst[i] = src[i]` widened to a field element.
fn widen(dst: &mut [u64], src: &[u32]) {
    dst.iter_mut()
        .zip(src)
        .for_each(|(d, s)| *d = u64::from(*s));
}

/// The first `t` levels of block `b` in one pass ([`Kernels::group`]), column ranges on the
/// rayon pool when long. With a `source`, the block is first loaded from it (widened),
/// range by range, so the loading costs no pass of its own.
fn group_pass<K: Kernels>(
    d: &mut [u64],
    source: Option<&[u32]>,
    t: u32,
    tw: &Twiddles,
    b: usize,
    inverse: bool,
) {
    let s = d.len() >> t;
    if s >= 2 * COLUMNS && d.len() >= PARALLEL {
        column_ranges(d, s, COLUMNS)
            .par_iter_mut()
            .enumerate()
            .for_each(|(c, rows)| {
                if let Some(src) = source {
                    for (j, piece) in rows.iter_mut().enumerate() {
                        widen(piece, &src[j * s + c * COLUMNS..]);
                    }
                }
                K::group(rows, tw, b, inverse)
            });
    } else {
        if let Some(src) = source {
            widen(d, src);
        }
        let mut rows: [&mut [u64]; 1 << GROUP_LOG] = Default::default();
        for (slot, row) in rows.iter_mut().zip(d.chunks_exact_mut(s)) {
            *slot = row;
        }
        K::group(&mut rows[..1 << t], tw, b, inverse);
    }
}

/// Levels done by the pass at the top of a block of `len > LEAF` elements.
fn group_levels(len: usize) -> u32 {
    (len.trailing_zeros() - LEAF_LOG).min(GROUP_LOG)
}

/// Forward transform of block `b` (`d.len()` a power of two), loaded first from `source`
/// (32-bit coefficients, widened) when given.
fn forward<K: Kernels>(d: &mut [u64], source: Option<&[u32]>, tw: &Twiddles, b: usize) {
    if d.len() <= LEAF {
        if let Some(src) = source {
            widen(d, src);
        }
        return K::leaf(d, tw, b, false);
    }
    let t = group_levels(d.len());
    group_pass::<K>(d, source, t, tw, b, false);
    for_each_sub_block(d, d.len() >> t, |(u, sub)| {
        forward::<K>(sub, None, tw, (b << t) + u)
    });
}

/// Inverse of [`forward`], of the element-wise product of `d` and `factor` when given (the
/// products are taken leaf by leaf, just before each leaf's levels, so they cost no pass of
/// their own).
fn inverse<K: Kernels>(d: &mut [u64], factor: Option<&[u64]>, tw: &Twiddles, b: usize) {
    if d.len() <= LEAF {
        if let Some(f) = factor {
            K::pointwise(d, f);
        }
        return K::leaf(d, tw, b, true);
    }
    let t = group_levels(d.len());
    let s = d.len() >> t;
    for_each_sub_block(d, s, |(u, sub)| {
        let f = factor.map(|f| &f[u * s..(u + 1) * s]);
        inverse::<K>(sub, f, tw, (b << t) + u)
    });
    group_pass::<K>(d, None, t, tw, b, true);
}

/// The 32-bit chunks of the first `bits` bits of `words` into `out` (the rest zero).
fn load_chunks(out: &mut [u32], words: &[u64], bits: usize) {
    let used = bits.div_ceil(32);
    out.par_chunks_mut(COLUMNS)
        .enumerate()
        .for_each(|(c, part)| {
            for (i, slot) in part.iter_mut().enumerate() {
                let e = c * COLUMNS + i;
                *slot = if e >= used {
                    0
                } else {
                    let w = words.get(e / 2).copied().unwrap_or(0);
                    let v = (w >> (32 * (e % 2))) as u32;
                    let rest = bits - 32 * e;
                    if rest < 32 {
                        v & ((1u32 << rest) - 1)
                    } else {
                        v
                    }
                };
            }
        });
}

/// The transform at `2^k` points of the polynomial of the first `bits` bits of `words`
/// (see "Zero tops" in the module docs); `secret` buffers are zeroized after use.
fn transform_input<K: Kernels>(
    (words, bits): (&[u64], usize),
    secret: bool,
    k: u32,
    tw: &Twiddles,
) -> Buffer<u64> {
    let used = bits.div_ceil(32).max(1);
    let j = used
        .next_power_of_two()
        .trailing_zeros()
        .max(LEAF_LOG)
        .min(k);
    let mut chunks = Buffer::<u32>::scratch(1 << j, secret);
    load_chunks(&mut chunks, words, bits);
    basis::to_novel(&mut chunks[..]);
    let mut out = Buffer::<u64>::scratch(1 << k, secret);
    out.par_chunks_mut(1 << j)
        .enumerate()
        .for_each(|(u, sub)| forward::<K>(sub, Some(&chunks), tw, u));
    out
}

/// Transform length (log2) for a product of `a_bits` and `b_bits` bits.
fn log_len(a_bits: usize, b_bits: usize) -> u32 {
    let coeffs = a_bits.div_ceil(32) + b_bits.div_ceil(32);
    coeffs.next_power_of_two().trailing_zeros().max(1)
}

/// Bits `start .. start + len` of the binary product of `a` (`a_bits` bits) and `b`
/// (`b_bits` bits), as words (the last one zero-padded), with a supported `backend`. `a` is
/// public (the seed), `b` secret: every buffer derived from `b` is zeroized after use.
pub(crate) fn product_bits(
    backend: ClmulBackend,
    a: (&[u64], usize),
    b: (&[u64], usize),
    start: usize,
    len: usize,
) -> Zeroizing<Vec<u64>> {
    match backend {
        #[cfg(target_arch = "x86_64")]
        ClmulBackend::Vpclmul => product_bits_with::<kernels::Vpclmul>(a, b, start, len),
        #[cfg(target_arch = "x86_64")]
        ClmulBackend::Pclmul => product_bits_with::<kernels::Pclmul>(a, b, start, len),
        _ => product_bits_with::<Portable>(a, b, start, len),
    }
}

fn product_bits_with<K: Kernels>(
    a: (&[u64], usize),
    b: (&[u64], usize),
    start: usize,
    len: usize,
) -> Zeroizing<Vec<u64>> {
    let k = log_len(a.1, b.1);
    let tw = Twiddles::new(k);
    let (fa, mut fb) = join(
        || transform_input::<K>(a, false, k, &tw),
        || transform_input::<K>(b, true, k, &tw),
    );
    inverse::<K>(&mut fb, Some(&fa), &tw, 0);
    drop(fa);
    basis::from_novel(&mut fb[..]);
    extract_bits(&fb, start, len)
}

/// Bits `start .. start + len` of `sum_e c[e] z^(32 e)` (each `c[e]` below `z^64`).
fn extract_bits(c: &[u64], start: usize, len: usize) -> Zeroizing<Vec<u64>> {
    let coeff = |e: usize| c.get(e).copied().unwrap_or(0);
    // Word `w` of the sum: chunk 2w, the low half of chunk 2w + 1 and the high half of
    // chunk 2w - 1.
    let word = |w: usize| {
        let carry = if w == 0 { 0 } else { coeff(2 * w - 1) >> 32 };
        coeff(2 * w) ^ (coeff(2 * w + 1) << 32) ^ carry
    };
    let shift = start % 64;
    let mut out = Zeroizing::new(vec![0u64; len.div_ceil(64)]);
    out.par_chunks_mut(COLUMNS)
        .enumerate()
        .for_each(|(ci, part)| {
            for (i, o) in part.iter_mut().enumerate() {
                let w = start / 64 + ci * COLUMNS + i;
                *o = if shift == 0 {
                    word(w)
                } else {
                    (word(w) >> shift) | (word(w + 1) << (64 - shift))
                };
            }
        });
    if let Some(last) = out.last_mut()
        && !len.is_multiple_of(64)
    {
        *last &= (1u64 << (len % 64)) - 1;
    }
    out
}

#[cfg(test)]
mod tests;
