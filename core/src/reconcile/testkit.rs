//! Seeded key pairs with an exact number of errors, for tests, benchmarks and the experiment
//! harness (a stand-in for `core::sim` until the two are merged).

use crate::bits::BitBlock;
use crate::rng::SeededRandom;

/// Number of errors for `n` bits at error rate `qber`: `round(qber * n)`.
pub fn error_count(n: usize, qber: f64) -> usize {
    ((qber * n as f64).round().max(0.0) as usize).min(n)
}

/// Alice's key (uniform, from `seed`) and Bob's copy of it with exactly `errors` bits flipped
/// at distinct uniformly random positions (`errors` is capped at `n`).
pub fn noisy_pair(n: usize, errors: usize, seed: u64) -> (BitBlock, BitBlock) {
    let mut rng = SeededRandom::from_u64(seed);
    let words: Vec<u64> = (0..n.div_ceil(64)).map(|_| rng.u64()).collect();
    let alice = match BitBlock::from_words(words, n) {
        Ok(b) => b,
        Err(_) => unreachable!("exactly enough words"),
    };
    let errors = errors.min(n);
    // Choose the smaller of the flipped and the kept sets by rejection.
    let (pick, invert) = if errors <= n / 2 {
        (errors, false)
    } else {
        (n - errors, true)
    };
    let mut mask = BitBlock::zeros(n);
    let mut chosen = 0;
    while chosen < pick {
        let i = rng.below(n as u64) as usize;
        if mask.get(i) == Ok(false) {
            let _ = mask.set(i, true);
            chosen += 1;
        }
    }
    if invert {
        mask.with_words_mut(|w| w.iter_mut().for_each(|x| *x = !*x));
    }
    let bob = match alice.xor(&mask) {
        Ok(b) => b,
        Err(_) => unreachable!("same length"),
    };
    (alice, bob)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_error_count_and_reproducible() {
        for (n, e) in [(1000, 0), (1000, 37), (1000, 999), (1000, 1000), (77, 40)] {
            let (a, b) = noisy_pair(n, e, 9);
            assert_eq!(a.hamming_distance(&b).unwrap(), e);
            let (a2, b2) = noisy_pair(n, e, 9);
            assert_eq!((a, b), (a2, b2));
        }
        assert_eq!(error_count(16384, 0.02), 328);
    }
}
