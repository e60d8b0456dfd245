//! The Taylor expansion of [`super::taylor`] in one pass over memory.
//!
//! Cut `f` (`2^k` coefficients) into `R = 2^(k-b)` rows `f_h` of `tau = 2^b` coefficients,
//! `f = sum_h f_h(x) x^(h tau)`, with `R <= tau`. Because `x^tau = y + x` and binomial
//! coefficients mod 2 follow Lucas' theorem, `x^(h tau) = sum_{i subset of h} y^i x^(h - i)`,
//! so `g_i = sum_{h superset of i} x^(h - i) f_h`: a *zeta transform* over the row bits in
//! which level `t` adds each row `h` with bit `t` set, shifted right by `2^t` columns, to row
//! `h - 2^t`. Shifted rows reach up to `R - 1` columns past `tau`; those terms are
//! `x^(tau + r) = y x^r + x^(r + 1)`, so the overflow of row `i` at column `tau + r` is added
//! to row `i + 1` at `r` and to row `i` at `r + 1` (the last row never overflows: only
//! `h = R - 1` reaches it, unshifted).
//!
//! The inverse, `f = sum_i g_i (x^tau + x)^i = sum_{j subset of i} x^(j tau) x^(i - j) g_i`,
//! is the same zeta transform, after which the overflow of row `j` at `tau + r` is simply
//! coefficient `r` of row `j + 1`.
//!
//! The zeta transform runs on blocks of columns in a cache-sized scratch, each block together
//! with the `R - 1` columns to its left that shift into it. Column ranges (segments) run on
//! the rayon pool; each walks its blocks from right to left, so the columns a block reads on
//! its left are still untransformed, and a segment's own left halo is saved before any
//! segment starts.

use rayon::prelude::*;

use super::super::column_ranges;
use super::{Coeff, SCRATCH_BYTES, xor_into};

/// Segments (parallel column ranges) per pass, at most.
const SEGMENTS: usize = 16;

/// [`super::taylor`] on single coefficients, `2^(k-b) <= 2^b`.
pub(super) fn taylor<T: Coeff>(f: &mut [T], k: u32, b: u32, inverse: bool) {
    let tau = 1usize << b;
    let rows = 1usize << (k - b);
    debug_assert!(rows <= tau && f.len() == rows * tau);
    let halo = rows - 1;
    let overflow = overflow_columns(f, tau, rows);
    zeta(f, tau, rows);
    for i in 0..halo {
        for r in 0..halo {
            let v = overflow[i * halo + r];
            f[(i + 1) * tau + r] ^= v;
            if !inverse {
                f[i * tau + r + 1] ^= v;
            }
        }
    }
}

/// Level `t = 0..log2(rows)` of the zeta transform on a scratch of `rows` rows of `width`
/// columns: row `h - 2^t` gets row `h` shifted right by `2^t` (columns past the width drop).
fn zeta_scratch<T: Coeff>(s: &mut [T], rows: usize, width: usize) {
    let mut d = 1;
    while d < rows {
        for h in (0..rows).filter(|h| h & d != 0) {
            let (lo, hi) = s.split_at_mut(h * width);
            xor_into(&mut lo[(h - d) * width..][d..width], &hi[..width - d]);
        }
        d *= 2;
    }
}

/// Columns `tau .. tau + rows - 1` of the zeta transform (row-major, `rows - 1` per row),
/// from the last `rows - 1` columns of each row.
fn overflow_columns<T: Coeff>(f: &[T], tau: usize, rows: usize) -> Vec<T> {
    let halo = rows - 1;
    let width = 2 * halo;
    let mut s = vec![T::default(); rows * width];
    for (h, r) in f.chunks_exact(tau).enumerate() {
        s[h * width..h * width + halo].copy_from_slice(&r[tau - halo..]);
    }
    zeta_scratch(&mut s, rows, width);
    s.chunks_exact(width)
        .flat_map(|r| r[halo..].iter().copied())
        .collect()
}

/// The zeta transform of columns `0..tau` in place, by cache-sized column blocks.
fn zeta<T: Coeff>(f: &mut [T], tau: usize, rows: usize) {
    let halo = rows - 1;
    let budget = SCRATCH_BYTES / size_of::<T>() / rows;
    let block = budget.saturating_sub(halo).max(2 * halo).max(1);
    let segment = tau.div_ceil(SEGMENTS).max(block);
    // The `halo` columns left of each segment, saved before any segment writes.
    let saved: Vec<Vec<T>> = (0..tau.div_ceil(segment))
        .map(|g| {
            let start = g * segment;
            let mut saved = vec![T::default(); rows * halo];
            if start > 0 {
                for (h, r) in f.chunks_exact(tau).enumerate() {
                    saved[h * halo..(h + 1) * halo].copy_from_slice(&r[start - halo..start]);
                }
            }
            saved
        })
        .collect();
    column_ranges(f, tau, segment)
        .par_iter_mut()
        .zip(&saved)
        .for_each(|(pieces, saved)| {
            let mut scratch = vec![T::default(); rows * (halo + block)];
            let len = pieces.first().map_or(0, |p| p.len());
            let mut end = len;
            while end > 0 {
                let start = end.saturating_sub(block);
                let width = halo + end - start;
                for (h, piece) in pieces.iter().enumerate() {
                    let row = &mut scratch[h * width..(h + 1) * width];
                    // Columns start - halo .. start: from this segment, else the saved halo.
                    let own = halo.min(start);
                    row[halo - own..halo].copy_from_slice(&piece[start - own..start]);
                    row[..halo - own].copy_from_slice(&saved[h * halo + own..(h + 1) * halo]);
                    row[halo..].copy_from_slice(&piece[start..end]);
                }
                zeta_scratch(&mut scratch[..rows * width], rows, width);
                for (h, piece) in pieces.iter_mut().enumerate() {
                    piece[start..end].copy_from_slice(&scratch[h * width + halo..(h + 1) * width]);
                }
                end = start;
            }
        });
}
