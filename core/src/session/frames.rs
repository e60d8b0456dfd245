//! A block's frames through reconciliation and confirmation, the same bookkeeping on both
//! sides: which frames the current round reconciles, which matched, which were dropped.
//!
//! Cascade frames are `frame_bits` long (the last one takes the rest). LDPC frames are the
//! code's key length: the block holds as many whole frames as fit, and the tail after them is
//! left out of the key before anything about it is disclosed. The tail's bits are charged as
//! disclosed, as a dropped frame's are (docs/security.md, section 6): the QBER bound is for the
//! whole sifted key, and the tail is not a random part of it. LDPC frames are not retried: a
//! frame Bob could not decode, or whose confirmation failed, is dropped.

use std::sync::Arc;

use super::{Link, SessionError};
use crate::BitBlock;
use crate::estimate::QberEstimate;
use crate::pipeline::BlockReport;
use crate::reconcile::cascade::Plan;
use crate::reconcile::frames::{join_frames, split_frames};
use crate::reconcile::ldpc::protocol::{FramePlan, LdpcParams};

/// Standard deviations of the sample's error rate that blind LDPC's last attempt covers.
const PLAN_SIGMAS: f64 = 3.0;

/// The QBER reconciliation plans for, the sample's (at least one error in the sample: zero
/// observed errors still needs a positive rate), and the highest blind LDPC plans to cover:
/// [`PLAN_SIGMAS`] binomial standard deviations above it, `sqrt(q (1 - q) / k)` for a
/// `k`-bit sample. Both sides compute them from the sample's size and error count. (The
/// bound the secret length uses, `eps_pe`-sure, is far higher and would cost every block
/// reveals it does not need.)
fn planning_qber(estimate: &QberEstimate) -> (f64, f64) {
    let k = estimate.k.max(1) as f64;
    let q = estimate.observed_qber.max(1.0 / k).min(0.5);
    let high = q + PLAN_SIGMAS * (q * (1.0 - q) / k).sqrt();
    // `choose_bounded` wants the bound below 0.5; a plan at such rates is refused anyway.
    (q, high.min(0.4999).max(q))
}

pub(super) struct FrameSet {
    frames: Vec<BitBlock>,
    matched: Vec<bool>,
    /// Frames of the current round (all of them first, then those that failed confirmation).
    round: Vec<usize>,
    /// Set once the frames that failed confirmation were retried (from the start for LDPC,
    /// which does not retry).
    retried: bool,
    /// The QBER the reconciliation plans for, and the highest it plans to cover (LDPC).
    plan_qber: f64,
    plan_qber_high: f64,
    /// Bits after an LDPC block's whole frames, left out.
    tail_bits: usize,
    /// Bits of the frames that failed reconciliation (LDPC).
    failed_bits: usize,
}

impl FrameSet {
    /// The sifted key (sample removed) cut into the link's frames; the sample's estimate sets
    /// the plans ([`planning_qber`]).
    pub(super) fn new(
        key: &BitBlock,
        link: &Link,
        estimate: &QberEstimate,
    ) -> Result<Self, SessionError> {
        let cfg = link.config();
        let fixed = link.algorithm().fixed_frame_bits();
        let frames = match fixed {
            None => split_frames(key, cfg.frame_bits)?,
            Some(k) if key.len() >= k => (0..key.len() / k)
                .map(|f| key.slice(f * k..(f + 1) * k))
                .collect::<Result<_, _>>()
                .map_err(|e| super::stage("reconcile", e))?,
            Some(k) => {
                return Err(SessionError::Config(format!(
                    "the block's {} bits after the sample are fewer than one {k}-bit LDPC frame",
                    key.len()
                )));
            }
        };
        let (plan_qber, plan_qber_high) = planning_qber(estimate);
        Ok(Self {
            matched: vec![false; frames.len()],
            round: (0..frames.len()).collect(),
            retried: fixed.is_some(),
            plan_qber,
            plan_qber_high,
            tail_bits: key.len() - frames.iter().map(BitBlock::len).sum::<usize>(),
            failed_bits: 0,
            frames,
        })
    }

    /// Frames the current round reconciles.
    pub(super) fn round_len(&self) -> usize {
        self.round.len()
    }

    /// The plans of the round's frames: the link's cached plans first, then plans of the
    /// retry's fresh seed.
    pub(super) fn plans(
        &self,
        link: &Link,
        seed: [u8; 32],
    ) -> Result<Vec<Arc<Plan>>, SessionError> {
        let mut fresh: Vec<(usize, Arc<Plan>)> = Vec::new();
        self.round
            .iter()
            .map(|&i| {
                let n = self.frames[i].len();
                if !self.retried {
                    return link.plan(seed, n, self.plan_qber);
                }
                if let Some((_, p)) = fresh.iter().find(|(len, _)| *len == n) {
                    return Ok(Arc::clone(p));
                }
                let p = link.fresh_plan(seed, n, self.plan_qber)?;
                fresh.push((n, Arc::clone(&p)));
                Ok(p)
            })
            .collect()
    }

    /// The LDPC plan of the frames under `params`: both sides compute it from the sample's
    /// error count, which both know.
    pub(super) fn ldpc_plan(&self, params: &LdpcParams) -> Result<Arc<FramePlan>, SessionError> {
        Ok(Arc::new(FramePlan::choose_bounded(
            params,
            self.plan_qber,
            self.plan_qber_high,
        )?))
    }

    /// Moves the round's frames out (to the Cascade parties).
    pub(super) fn take_round(&mut self) -> Vec<BitBlock> {
        self.round
            .iter()
            .map(|&i| std::mem::replace(&mut self.frames[i], BitBlock::zeros(0)))
            .collect()
    }

    /// Puts the round's frames back after Cascade.
    pub(super) fn put_round(&mut self, frames: Vec<BitBlock>) -> Result<(), SessionError> {
        if frames.len() != self.round.len() {
            return Err(SessionError::Stage {
                stage: "reconcile",
                message: format!("{} frames back of {}", frames.len(), self.round.len()),
            });
        }
        for (&i, f) in self.round.iter().zip(frames) {
            self.frames[i] = f;
        }
        Ok(())
    }

    /// Takes the round's frames at positions `failed` (of the round, increasing) out of it:
    /// they failed reconciliation, are not confirmed and are dropped.
    pub(super) fn drop_failed(&mut self, failed: &[u32]) {
        for (k, i) in std::mem::take(&mut self.round).into_iter().enumerate() {
            if failed.binary_search(&(k as u32)).is_ok() {
                self.failed_bits += self.frames[i].len();
            } else {
                self.round.push(i);
            }
        }
    }

    /// Bits whose reconciliation leakage the report counts, the basis of the efficiency: every
    /// frame for Cascade, the frames that did not fail for LDPC (whose failed frames' syndromes
    /// are not counted; they are charged whole instead).
    pub(super) fn efficiency_basis_bits(&self) -> usize {
        self.frames.iter().map(BitBlock::len).sum::<usize>() - self.failed_bits
    }

    /// The round's frames, in order (for confirmation).
    pub(super) fn round_frames(&self) -> impl Iterator<Item = &BitBlock> {
        self.round.iter().map(|&i| &self.frames[i])
    }

    /// Records the verdicts of the round's confirmation.
    pub(super) fn record(&mut self, matched: &[bool]) -> Result<(), SessionError> {
        if matched.len() != self.round.len() {
            return Err(SessionError::Inconsistent {
                message: "Verdicts",
                reason: format!("{} verdicts for {} frames", matched.len(), self.round.len()),
            });
        }
        for (&i, &m) in self.round.iter().zip(matched) {
            self.matched[i] = m;
        }
        Ok(())
    }

    /// After the first confirmation: makes the failed frames the next round and returns true,
    /// or false when nothing is to be retried (all matched, or the retry is done).
    pub(super) fn start_retry(&mut self, report: &mut BlockReport) -> bool {
        if self.retried {
            return false;
        }
        self.round = (0..self.frames.len())
            .filter(|&i| !self.matched[i])
            .collect();
        if self.round.is_empty() {
            return false;
        }
        self.retried = true;
        report.retried_frames = self.round.len() as u32;
        true
    }

    /// The confirmation correctness per check: each frame is checked at most twice, so
    /// `eps_cor / (2 frames)` keeps the block `eps_cor`-correct (union bound).
    pub(super) fn eps_check(&self, eps_cor: f64) -> f64 {
        eps_cor / (2 * self.frames.len()) as f64
    }

    /// The kept frames joined (or `None` when every frame was dropped), with the dropped frames
    /// (and an LDPC tail's bits) counted in `report`.
    pub(super) fn finish(self, report: &mut BlockReport) -> Option<BitBlock> {
        report.dropped_frame_bits += self.tail_bits as u64;
        let mut kept = Vec::with_capacity(self.frames.len());
        for (f, ok) in self.frames.into_iter().zip(self.matched) {
            if ok {
                kept.push(f);
            } else {
                report.dropped_frames += 1;
                report.dropped_frame_bits += f.len() as u64;
            }
        }
        report.confirmed = report.dropped_frames == 0;
        (!kept.is_empty()).then(|| join_frames(&kept))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::estimate::Bound;

    #[test]
    fn plans_cover_three_standard_deviations_above_the_sample() {
        // 328 errors in 2^14 bits: q = 0.020019531, sigma = 0.001094273 (worked out apart).
        let est = QberEstimate::new(1 << 20, 1 << 14, 328, 1e-10, Bound::Serfling).unwrap();
        let (q, high) = planning_qber(&est);
        assert!((q - 0.020_019_531).abs() < 1e-9, "{q}");
        assert!((high - 0.023_302_350).abs() < 1e-8, "{high}");
        // No error in a 4096-bit sample: one error's rate, and its deviation above it.
        let est = QberEstimate::new(1 << 16, 4096, 0, 1e-10, Bound::Serfling).unwrap();
        let (q, high) = planning_qber(&est);
        assert!((q - 1.0 / 4096.0).abs() < 1e-15, "{q}");
        assert!((high - 0.000_976_473).abs() < 1e-8, "{high}");
    }
}
