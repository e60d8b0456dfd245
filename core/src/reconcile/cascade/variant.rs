//! Cascade variants as data: one [`Variant`] is one row of the table in Martinez-Mateo, Pacher,
//! Peev, Ciurana and Martin, "Demystifying the information reconciliation protocol Cascade"
//! (QIC 15, 2015; arXiv:1407.3257), with the names cascade-cpp and cascade-python use.
//!
//! | name       | paper            | passes | k1                     | k2                           | k3..           | sub-block reuse | BICONF |
//! |------------|------------------|--------|------------------------|------------------------------|----------------|-----------------|--------|
//! | `original` | Cascade orig.    | 4      | ceil(0.73/p)           | 2 k1                         | 2 k(i-1)       | no              | -      |
//! | `biconf`   | Cascade mod. (1) | 2      | ceil(0.92/p)           | 3 k1                         | -              | no              | until 10 error-free rounds |
//! | `yanetal`  | Cascade opt. (2) | 10     | ceil(0.80/p)           | 5 k1                         | n/2            | no              | -      |
//! | `option3`  | Cascade opt. (3) | 16     | ceil(1/p)              | 2 k1                         | n/2            | no              | -      |
//! | `option4`  | Cascade opt. (4) | 16     | ceil(1/p)              | 2 k1                         | n/2            | yes             | -      |
//! | `option7`  | Cascade opt. (7) | 14     | 2^ceil(log2(1/p))      | 4 k1                         | n/2            | yes             | -      |
//! | `option8`  | Cascade opt. (8) | 14     | 2^ceil(a), a = log2(1/p) - 1/2 | 2^ceil((a + 12)/2)   | k3 = 4096, then n/2 | yes        | -      |
//!
//! `p` is the QBER estimate given to the protocol and `n` the block length; every block size is
//! clamped to `1..=n`. Extra variants that go beyond the paper carry [`Tweaks`] and are listed
//! by [`Variant::extras`]; the paper's rows never set a tweak.
//!
//! How a run schedules its bisections is not part of the paper's rows: Bob asks, in each
//! round, every bisection step that is pending (as cascade-cpp and cascade-python batch them).
//! Parallel bisections sometimes chase an error that a cheaper one is about to fix, which
//! costs efficiency compared with a one-block-at-a-time execution; `Tweaks::smallest_first`
//! trades round trips for those bits.

use serde::{Deserialize, Serialize};

/// How the top-level block size of one pass is chosen.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum BlockRule {
    /// `ceil(c / p)`.
    InverseQber {
        /// The constant `c`.
        c: f64,
    },
    /// `2^ceil(log2(1 / p) - offset)`.
    Pow2InverseQber {
        /// Subtracted from `log2(1/p)` before rounding up.
        offset: f64,
    },
    /// `2^ceil((log2(1 / p) - offset + e) / 2)`: option 8's second pass.
    Pow2Mean {
        /// Subtracted from `log2(1/p)`.
        offset: f64,
        /// Added before halving.
        e: f64,
    },
    /// `m` times the previous pass's block size.
    TimesPrevious {
        /// The factor.
        m: u32,
    },
    /// A fixed size.
    Fixed {
        /// The size in bits.
        k: u32,
    },
    /// `n / d` (rounded down, at least 1).
    KeyFraction {
        /// The divisor.
        d: u32,
    },
}

/// BICONF rounds after the normal passes (Cascade mod. (1)).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Biconf {
    /// Number of BICONF rounds, or the length of the error-free streak that ends them.
    pub rounds: u32,
    /// Run until `rounds` consecutive rounds found no error (true) or exactly `rounds` (false).
    pub error_free_streak: bool,
    /// Upper bound on BICONF rounds when `error_free_streak` is set.
    pub max_rounds: u32,
}

/// Departures from the paper, each off in the paper's variants.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Tweaks {
    /// Alice sends the parity of the whole key once; the last top-level block of every pass
    /// then needs no parity of its own (it is the whole-key parity XOR the others).
    pub infer_last_block: bool,
    /// When nonzero, a round asks only for the bisections whose interval is at most this
    /// factor times the smallest pending interval; larger ones wait (fewer parallel chases of
    /// errors that a cheaper bisection is about to fix, at the price of more round trips).
    pub smallest_first: u32,
    /// A round asks only for the bisections of the lowest-numbered pass that has any (blocks
    /// of one pass are disjoint, so no two of them chase the same error); others wait.
    /// Takes precedence over `smallest_first`.
    pub lowest_pass_first: bool,
    /// Two bisection levels per round trip: Bob sends, with every block he bisects, his own
    /// parity of its left half, so Alice knows which half is odd and answers the next level
    /// too ([`Message::Descend`](crate::reconcile::message::Message::Descend)). Alice
    /// discloses the same parities as one level per round; Bob's bits are those a one-level
    /// bisection reveals through its next question (never sent for two-bit blocks, whose
    /// outcome one-level bisection keeps to itself). Rounds interleave differently, so which
    /// cascade steps run when can change: hence a tweak.
    pub descend: bool,
    /// With `descend`: when at most this many bisections are pending in a round (the serial
    /// tail of cascade chains), Bob also sends his parities of the left halves of both halves
    /// of each block, so Alice answers three levels per round trip. One of the two is off the
    /// bisection path and counted as disclosed. 0: never.
    pub speculate_below: u32,
}

/// A Cascade variant: block-size rules, number of passes, sub-block reuse and BICONF.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Variant {
    /// Name, as accepted by [`Variant::by_name`].
    pub name: String,
    /// Number of normal Cascade passes.
    pub passes: u32,
    /// Block-size rule of pass `i` is `blocks[min(i, blocks.len() - 1)]`.
    pub blocks: Vec<BlockRule>,
    /// Whether every block with a known parity, not only top-level blocks, takes part in the
    /// cascade step after a correction.
    pub sub_block_reuse: bool,
    /// BICONF rounds after the normal passes, if any.
    pub biconf: Option<Biconf>,
    /// Departures from the paper (all off for the paper's rows).
    pub tweaks: Tweaks,
}

/// Smallest QBER used in block-size rules, so `1/p` stays finite (as cascade-cpp does).
pub const MIN_QBER: f64 = 1e-5;

impl Variant {
    fn row(name: &str, passes: u32, blocks: Vec<BlockRule>, reuse: bool) -> Self {
        Self {
            name: name.to_owned(),
            passes,
            blocks,
            sub_block_reuse: reuse,
            biconf: None,
            tweaks: Tweaks::default(),
        }
    }

    /// Cascade as first published (Brassard and Salvail 1993).
    pub fn original() -> Self {
        use BlockRule::*;
        Self::row(
            "original",
            4,
            vec![InverseQber { c: 0.73 }, TimesPrevious { m: 2 }],
            false,
        )
    }

    /// Two passes then BICONF until ten error-free rounds (Cascade mod. (1)).
    pub fn biconf() -> Self {
        use BlockRule::*;
        let mut v = Self::row(
            "biconf",
            2,
            vec![InverseQber { c: 0.92 }, TimesPrevious { m: 3 }],
            false,
        );
        v.biconf = Some(Biconf {
            rounds: 10,
            error_free_streak: true,
            max_rounds: 4096,
        });
        v
    }

    /// Yan et al. (Cascade opt. (2)).
    pub fn yanetal() -> Self {
        use BlockRule::*;
        Self::row(
            "yanetal",
            10,
            vec![
                InverseQber { c: 0.80 },
                TimesPrevious { m: 5 },
                KeyFraction { d: 2 },
            ],
            false,
        )
    }

    /// Cascade opt. (3).
    pub fn option3() -> Self {
        use BlockRule::*;
        Self::row(
            "option3",
            16,
            vec![
                InverseQber { c: 1.0 },
                TimesPrevious { m: 2 },
                KeyFraction { d: 2 },
            ],
            false,
        )
    }

    /// Cascade opt. (4): opt. (3) with sub-block reuse.
    pub fn option4() -> Self {
        let mut v = Self::option3();
        v.name = "option4".into();
        v.sub_block_reuse = true;
        v
    }

    /// Cascade opt. (7).
    pub fn option7() -> Self {
        use BlockRule::*;
        Self::row(
            "option7",
            14,
            vec![
                Pow2InverseQber { offset: 0.0 },
                TimesPrevious { m: 4 },
                KeyFraction { d: 2 },
            ],
            true,
        )
    }

    /// Cascade opt. (8), the paper's recommendation.
    pub fn option8() -> Self {
        use BlockRule::*;
        Self::row(
            "option8",
            14,
            vec![
                Pow2InverseQber { offset: 0.5 },
                Pow2Mean {
                    offset: 0.5,
                    e: 12.0,
                },
                Fixed { k: 4096 },
                KeyFraction { d: 2 },
            ],
            true,
        )
    }

    /// The seven variants of the paper, in its order.
    pub fn paper() -> Vec<Self> {
        vec![
            Self::original(),
            Self::biconf(),
            Self::yanetal(),
            Self::option3(),
            Self::option4(),
            Self::option7(),
            Self::option8(),
        ]
    }

    /// Variants beyond the paper, each a paper row plus [`Tweaks`]:
    /// `yanetal-x` (whole-key parity, so the last block of every pass is free),
    /// `option8-x` (that, and bisections strictly smallest-first: best efficiency, many round
    /// trips), `option8-xb` (smallest-first within a factor 8: a balance of the two), and the
    /// two-levels-per-round-trip versions ([`Tweaks::descend`]) `yanetal-d`, `yanetal-xd`,
    /// `option8-d` and `option8-xbd` (about half the round trips, same leakage up to how
    /// cascade steps interleave).
    pub fn extras() -> Vec<Self> {
        let tweak = |mut v: Self, name: &str, smallest_first: u32| {
            v.name = name.to_owned();
            v.tweaks = Tweaks {
                infer_last_block: true,
                smallest_first,
                lowest_pass_first: false,
                descend: false,
                speculate_below: 0,
            };
            v
        };
        let descend = |mut v: Self, name: &str| {
            v.name = name.to_owned();
            v.tweaks.descend = true;
            v
        };
        vec![
            tweak(Self::yanetal(), "yanetal-x", 0),
            tweak(Self::option8(), "option8-x", 1),
            tweak(Self::option8(), "option8-xb", 8),
            descend(Self::yanetal(), "yanetal-d"),
            descend(tweak(Self::yanetal(), "", 0), "yanetal-xd"),
            descend(Self::option8(), "option8-d"),
            descend(tweak(Self::option8(), "", 8), "option8-xbd"),
        ]
    }

    /// Every built-in variant.
    pub fn all() -> Vec<Self> {
        let mut v = Self::paper();
        v.extend(Self::extras());
        v
    }

    /// The built-in variant called `name`.
    pub fn by_name(name: &str) -> Option<Self> {
        Self::all().into_iter().find(|v| v.name == name)
    }

    /// Top-level block size of every normal pass for an `n`-bit key at QBER estimate `qber`.
    pub fn block_sizes(&self, n: usize, qber: f64) -> Vec<usize> {
        let p = qber.max(MIN_QBER);
        let log_inv = (1.0 / p).log2();
        let clamp = |x: f64| -> usize {
            if !x.is_finite() || x >= n as f64 {
                n.max(1)
            } else {
                (x as usize).max(1)
            }
        };
        let mut out: Vec<usize> = Vec::with_capacity(self.passes as usize);
        for i in 0..self.passes as usize {
            let Some(rule) = self.blocks.get(i.min(self.blocks.len().saturating_sub(1))) else {
                out.push(n.max(1));
                continue;
            };
            let k = match *rule {
                BlockRule::InverseQber { c } => clamp((c / p).ceil()),
                BlockRule::Pow2InverseQber { offset } => clamp((log_inv - offset).ceil().exp2()),
                BlockRule::Pow2Mean { offset, e } => {
                    clamp(((log_inv - offset + e) / 2.0).ceil().exp2())
                }
                BlockRule::TimesPrevious { m } => {
                    let prev = out.last().copied().unwrap_or(1) as f64;
                    clamp(prev * f64::from(m))
                }
                BlockRule::Fixed { k } => clamp(f64::from(k)),
                BlockRule::KeyFraction { d } => clamp((n / (d.max(1) as usize)) as f64),
            };
            out.push(k);
        }
        out
    }
}
