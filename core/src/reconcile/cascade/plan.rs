//! The public, key-independent part of a Cascade run: block sizes and shuffles of every pass.
//!
//! Both sides derive the same [`Plan`] from the same [`Params`] (the seed is public). A plan
//! depends on neither key, so one `Arc<Plan>` can serve any number of blocks: the shuffles are
//! drawn independently of the error pattern, which is all Cascade needs from them.

use std::sync::{Arc, OnceLock};

use serde::{Deserialize, Serialize};

use super::variant::Variant;
use crate::bits::BitBlock;
use crate::reconcile::ReconcileError;
use crate::rng::{RandomSource, SeededRandom};

/// Largest block Cascade accepts (shuffles use `u32` indices).
pub const MAX_BITS: usize = 1 << 31;

/// Most BICONF rounds a variant may ask for.
pub const MAX_BICONF_ROUNDS: usize = 4096;

/// Passes whose top-level blocks number at most this use precomputed masks for their block
/// parities instead of a shuffled copy of the key.
const MASK_MAX_BLOCKS: usize = 8;

/// Everything both sides must agree on before a Cascade run; Bob sends it in the hello.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Params {
    /// The variant (the whole table row, so a new variant needs no code on Alice's side).
    pub variant: Variant,
    /// Key length in bits.
    pub n: u32,
    /// QBER estimate the block sizes are computed from.
    pub qber: f64,
    /// Public seed of the shuffles (expanded with [`SeededRandom::from_seed`]).
    pub seed: [u8; 32],
}

impl Params {
    /// Parameters with a fresh shuffle seed drawn from `rng` (Bob draws it; it is public and
    /// travels in the hello).
    pub fn with_fresh_seed(
        variant: Variant,
        n: usize,
        qber: f64,
        rng: &mut dyn RandomSource,
    ) -> Result<Self, ReconcileError> {
        let n = u32::try_from(n)
            .ok()
            .filter(|&n| n as usize <= MAX_BITS)
            .ok_or_else(|| {
                ReconcileError::BadParams(format!(
                    "key length {n} bits; expected at most {MAX_BITS}"
                ))
            })?;
        let seed = rng
            .seed32()
            .map_err(|e| ReconcileError::Randomness(e.to_string()))?;
        Ok(Self {
            variant,
            n,
            qber,
            seed,
        })
    }
}

/// One pass of a plan.
#[derive(Debug)]
pub(crate) struct PassPlan {
    /// Top-level block size.
    pub k: usize,
    /// Number of top-level blocks (`ceil(n / k)`).
    pub nblocks: usize,
    /// Blocks that take part (all, or 1 for a BICONF round).
    pub used_blocks: usize,
    /// `perm[j]` = original index of the bit at position `j` of this pass (None: identity).
    pub perm: Option<Vec<u32>>,
    /// `inv[i]` = position in this pass of original bit `i`.
    pub inv: Option<Vec<u32>>,
    /// For passes with few blocks: the mask (in original order) of every used block but the
    /// last one, whose parity is the whole-key parity XOR the others when all blocks are used.
    pub masks: Option<Vec<BitBlock>>,
    /// Stride of a block's node slots in the known-parity tables: `2 * next_pow2(k)`.
    pub stride: usize,
}

impl PassPlan {
    /// Position of original bit `i` in this pass.
    #[inline]
    pub fn pos(&self, i: usize) -> usize {
        match &self.inv {
            Some(inv) => inv[i] as usize,
            None => i,
        }
    }

    /// Top-level block holding original bit `i` (may be `>= used_blocks` in a BICONF round).
    /// Uses the masks when the pass has them, which stay in cache better than `inv`.
    #[inline]
    pub fn block_of(&self, i: usize) -> usize {
        if let Some(masks) = &self.masks {
            for (b, m) in masks.iter().enumerate() {
                if (m.words()[i / 64] >> (i % 64)) & 1 == 1 {
                    return b;
                }
            }
            return masks.len();
        }
        self.pos(i) / self.k
    }

    /// Bits `start..end` of top-level block `b`.
    #[inline]
    pub fn block_range(&self, b: usize, n: usize) -> (usize, usize) {
        let s = b * self.k;
        (s, (s + self.k).min(n))
    }
}

/// Block sizes and shuffles of every pass, derived from [`Params`].
#[derive(Debug)]
pub struct Plan {
    pub(crate) params: Params,
    pub(crate) n: usize,
    /// The normal passes.
    pub(crate) passes: Vec<PassPlan>,
    /// Number of normal passes; BICONF rounds follow.
    pub(crate) normal: usize,
    /// BICONF rounds: a seed each, the shuffle drawn on first use.
    biconf: Vec<([u8; 32], OnceLock<PassPlan>)>,
}

impl Plan {
    /// Checks `params` and draws the shuffles. Pass 1 is not shuffled (as in the original
    /// protocol); every later pass and every BICONF round draws a uniform permutation
    /// (Fisher-Yates) from the seed's ChaCha20 stream, in pass order.
    pub fn new(params: Params) -> Result<Arc<Self>, ReconcileError> {
        let n = params.n as usize;
        let v = &params.variant;
        if n == 0 || n > MAX_BITS {
            return Err(ReconcileError::BadParams(format!(
                "key length {n} bits; expected 1..={MAX_BITS}"
            )));
        }
        if !(params.qber > 0.0 && params.qber < 0.5) {
            return Err(ReconcileError::BadParams(format!(
                "QBER estimate {}; expected 0 < p < 0.5",
                params.qber
            )));
        }
        if v.passes == 0 || v.passes > 64 || v.blocks.is_empty() {
            return Err(ReconcileError::BadParams(format!(
                "variant '{}' has {} passes and {} block rules; expected 1..=64 passes and at least one rule",
                v.name,
                v.passes,
                v.blocks.len()
            )));
        }
        let biconf_rounds = match v.biconf {
            None => 0,
            Some(b) if b.error_free_streak => b.max_rounds.max(b.rounds) as usize,
            Some(b) => b.rounds as usize,
        };
        if biconf_rounds > MAX_BICONF_ROUNDS {
            return Err(ReconcileError::BadParams(format!(
                "{biconf_rounds} BICONF rounds; expected at most {MAX_BICONF_ROUNDS}"
            )));
        }
        let mut rng = SeededRandom::from_seed(params.seed);
        let sizes = v.block_sizes(n, params.qber);
        let mut passes = Vec::with_capacity(sizes.len() + biconf_rounds);
        for (i, &k) in sizes.iter().enumerate() {
            let shuffled = i > 0;
            passes.push(PassPlan::build(n, k, None, shuffled, &mut rng));
        }
        let biconf = (0..biconf_rounds)
            .map(|_| {
                let mut s = [0u8; 32];
                rng.bytes(&mut s);
                (s, OnceLock::new())
            })
            .collect();
        Ok(Arc::new(Self {
            n,
            normal: sizes.len(),
            passes,
            biconf,
            params,
        }))
    }

    /// Number of passes, BICONF rounds included.
    pub(crate) fn total_passes(&self) -> usize {
        self.normal + self.biconf.len()
    }

    /// Pass `q` (a BICONF round's shuffle is drawn from its own seed on first use).
    pub(crate) fn get_pass(&self, q: usize) -> Option<&PassPlan> {
        if q < self.normal {
            return self.passes.get(q);
        }
        let (seed, cell) = self.biconf.get(q - self.normal)?;
        Some(cell.get_or_init(|| {
            let half = (self.n / 2).max(1);
            PassPlan::build(
                self.n,
                half,
                Some(1),
                true,
                &mut SeededRandom::from_seed(*seed),
            )
        }))
    }

    /// Pass `q`, which the caller knows exists.
    #[inline]
    pub(crate) fn pass(&self, q: usize) -> &PassPlan {
        match self.get_pass(q) {
            Some(p) => p,
            None => unreachable!("pass index checked by the caller"),
        }
    }

    /// The parameters the plan was built from.
    pub fn params(&self) -> &Params {
        &self.params
    }

    /// Top-level block size of each normal pass.
    pub fn block_sizes(&self) -> Vec<usize> {
        self.passes[..self.normal].iter().map(|p| p.k).collect()
    }

    /// Number of parity bits Alice sends for the top-level blocks of the normal passes.
    pub(crate) fn top_parity_count(&self) -> usize {
        let infer = self.params.variant.tweaks.infer_last_block;
        let per_pass: usize = self.passes[..self.normal]
            .iter()
            .map(|p| p.nblocks - usize::from(infer))
            .sum();
        per_pass + usize::from(infer)
    }
}

impl PassPlan {
    fn build(
        n: usize,
        k: usize,
        used: Option<usize>,
        shuffled: bool,
        rng: &mut SeededRandom,
    ) -> Self {
        let k = k.clamp(1, n);
        let nblocks = n.div_ceil(k);
        let used_blocks = used.unwrap_or(nblocks).min(nblocks);
        let (perm, inv) = if shuffled {
            let p =
                crate::bits::Permutation::shuffled(n as u32, |b| rng.below(u64::from(b)) as u32);
            let inv = p.inverse();
            (Some(p.as_slice().to_vec()), Some(inv.as_slice().to_vec()))
        } else {
            (None, None)
        };
        let masks = match &perm {
            Some(perm) if used_blocks <= MASK_MAX_BLOCKS => {
                let count = if used_blocks == nblocks {
                    nblocks - 1
                } else {
                    used_blocks
                };
                let mut masks: Vec<BitBlock> = (0..count).map(|_| BitBlock::zeros(n)).collect();
                for (b, mask) in masks.iter_mut().enumerate() {
                    let (s, e) = (b * k, ((b + 1) * k).min(n));
                    mask.with_words_mut(|w| {
                        for &i in &perm[s..e] {
                            let i = i as usize;
                            w[i / 64] |= 1 << (i % 64);
                        }
                    });
                }
                Some(masks)
            }
            _ => None,
        };
        Self {
            k,
            nblocks,
            used_blocks,
            perm,
            inv,
            masks,
            stride: 2 * k.next_power_of_two(),
        }
    }
}
