//! The tolerated QBERs a block may be sized for, fixed before any sample is seen.
//!
//! Tomamichel, Lim, Gisin, Renner's bound ([`super::Bb84Tlgr2012`]) is for a *fixed-length*
//! protocol: the key length follows from a tolerated QBER `Q_tol` chosen in advance, and the
//! protocol aborts when the sample's QBER exceeds it. Sizing each block from its own observed
//! QBER is outside that theorem. A [`QberLadder`] restores it: `L` rungs `Q_1 < ... < Q_L` are
//! fixed by the configuration; a block whose sample QBER is `Q_obs` is sized for the smallest
//! rung `Q_i >= Q_obs` and aborts above the top rung.
//!
//! The price of choosing among `L` rungs is paid in eps (docs/security.md, "QBER ladder"): the
//! protocol is the union of `L` fixed-length protocols on disjoint public events (the rung the
//! sample selects), each run at `eps_sec / L`, so their distances from ideal add up to at most
//! `eps_sec`. The model takes `L` as [`super::FiniteKeyInput::length_choices`].

use serde::Serialize;

use super::FiniteKeyError;

/// Lowest rung of the default ladder: blocks with a sample QBER at or below 0.25 % are sized
/// for 0.25 %.
pub const DEFAULT_LOWEST_RUNG: f64 = 0.0025;

/// Ratio between consecutive rungs of the default ladder: a block is sized for at most 10 %
/// (relative) more QBER than its sample showed.
pub const DEFAULT_RUNG_RATIO: f64 = 1.1;

/// Tolerated QBERs fixed in advance, strictly increasing, in `(0, 0.5]`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(transparent)]
pub struct QberLadder {
    rungs: Vec<f64>,
}

impl QberLadder {
    /// A ladder with these rungs (strictly increasing, each in `(0, 0.5]`).
    pub fn new(rungs: Vec<f64>) -> Result<Self, FiniteKeyError> {
        let bad = |why: String| Err(FiniteKeyError::BadLadder(why));
        if rungs.is_empty() {
            return bad("no rungs; expected at least one tolerated QBER".into());
        }
        if let Some(q) = rungs.iter().find(|q| !(**q > 0.0 && **q <= 0.5)) {
            return bad(format!("rung {q} is outside (0, 0.5]"));
        }
        if let Some(w) = rungs.windows(2).find(|w| w[0] >= w[1]) {
            return bad(format!(
                "rungs must increase strictly; {} is followed by {}",
                w[0], w[1]
            ));
        }
        Ok(Self { rungs })
    }

    /// `lowest`, `lowest * ratio`, `lowest * ratio^2`, ... while below `highest`, then
    /// `highest` itself as the top rung. `ratio` must exceed 1; `0 < lowest <= highest <= 0.5`.
    pub fn geometric(lowest: f64, highest: f64, ratio: f64) -> Result<Self, FiniteKeyError> {
        if !(ratio > 1.0 && ratio.is_finite()) {
            return Err(FiniteKeyError::BadLadder(format!(
                "ratio {ratio}; expected a finite number above 1"
            )));
        }
        if !(lowest > 0.0 && lowest <= highest && highest <= 0.5) {
            return Err(FiniteKeyError::BadLadder(format!(
                "lowest {lowest} and highest {highest}; expected 0 < lowest <= highest <= 0.5"
            )));
        }
        let mut rungs = Vec::new();
        let mut q = lowest;
        while q < highest {
            rungs.push(q);
            q *= ratio;
        }
        rungs.push(highest);
        Self::new(rungs)
    }

    /// The default ladder up to `highest` (the configured maximum QBER): rungs from
    /// [`DEFAULT_LOWEST_RUNG`] by [`DEFAULT_RUNG_RATIO`] (a single rung when `highest` is at or
    /// below the lowest rung).
    pub fn default_up_to(highest: f64) -> Result<Self, FiniteKeyError> {
        Self::geometric(
            DEFAULT_LOWEST_RUNG.min(highest),
            highest,
            DEFAULT_RUNG_RATIO,
        )
    }

    /// The rung a block with sample QBER `observed` is sized for: the smallest rung at or above
    /// it, or `None` when it exceeds the top rung (the block aborts).
    pub fn rung_for(&self, observed: f64) -> Option<f64> {
        self.rungs.iter().copied().find(|&q| q >= observed)
    }

    /// Number of rungs `L`: the number of lengths the protocol chooses between.
    pub fn len(&self) -> u32 {
        u32::try_from(self.rungs.len()).unwrap_or(u32::MAX)
    }

    /// Always false: a ladder has at least one rung.
    pub fn is_empty(&self) -> bool {
        self.rungs.is_empty()
    }

    /// The rungs, increasing.
    pub fn rungs(&self) -> &[f64] {
        &self.rungs
    }

    /// The top rung: blocks whose sample QBER exceeds it abort.
    pub fn top(&self) -> f64 {
        self.rungs.last().copied().unwrap_or(0.5)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_ladder_has_the_rungs_worked_out_by_hand() {
        // 0.0025 * 1.1^k < 0.11  <=>  k < ln(44) / ln(1.1) = 3.7842 / 0.09531 = 39.70, so
        // k = 0..=39 gives 40 rungs below 0.11, plus 0.11 itself: 41 rungs.
        let l = QberLadder::default_up_to(0.11).unwrap();
        assert_eq!(l.len(), 41);
        assert_eq!(l.rungs()[0], 0.0025);
        assert!((l.rungs()[39] - 0.0025 * 1.1f64.powi(39)).abs() < 1e-15);
        assert_eq!(l.top(), 0.11);
        // 2 %: 0.0025 * 1.1^21 = 0.018500, 0.0025 * 1.1^22 = 0.020350.
        let r = l.rung_for(0.02).unwrap();
        assert!((r - 0.020_350_0).abs() < 1e-6, "{r}");
        assert_eq!(l.rung_for(0.0), Some(0.0025));
        assert_eq!(l.rung_for(0.11), Some(0.11));
        assert_eq!(l.rung_for(0.1101), None);
    }

    #[test]
    fn bad_ladders_are_refused() {
        assert!(QberLadder::new(vec![]).is_err());
        assert!(QberLadder::new(vec![0.01, 0.01]).is_err());
        assert!(QberLadder::new(vec![0.02, 0.01]).is_err());
        assert!(QberLadder::new(vec![0.0, 0.01]).is_err());
        assert!(QberLadder::new(vec![0.01, 0.6]).is_err());
        assert!(QberLadder::new(vec![f64::NAN]).is_err());
        assert!(QberLadder::geometric(0.01, 0.1, 1.0).is_err());
        assert!(QberLadder::geometric(0.2, 0.1, 1.1).is_err());
        assert_eq!(QberLadder::default_up_to(0.001).unwrap().rungs(), &[0.001]);
    }
}
