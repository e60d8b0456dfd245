//! A plain floating-point sum-product (belief-propagation) syndrome decoder with a flooding
//! schedule: the textbook algorithm, one frame at a time, for the tests to hold the quantized
//! min-sum decoder against.

use super::Graph;
use crate::bits::BitBlock;

/// Decodes one frame: `llr[v]` in natural units (positive: 0 more likely), `syndrome` the
/// `m` check values. Returns the word and the iterations, or `None` after `max_iterations`.
pub fn sum_product(
    graph: &Graph,
    llr: &[f64],
    syndrome: &BitBlock,
    max_iterations: u32,
) -> Option<(BitBlock, u32)> {
    let checks: Vec<Vec<usize>> = graph.checks().collect();
    // Messages check -> variable, per check in the order of its variables.
    let mut c2v: Vec<Vec<f64>> = checks.iter().map(|c| vec![0.0; c.len()]).collect();
    let mut post = llr.to_vec();
    for iteration in 1..=max_iterations {
        // Variable -> check messages are the posterior minus the incoming message.
        let mut next_post = llr.to_vec();
        for (ci, vars) in checks.iter().enumerate() {
            let inputs: Vec<f64> = vars
                .iter()
                .zip(&c2v[ci])
                .map(|(&v, &m)| ((post[v] - m) / 2.0).tanh())
                .collect();
            let flip = if syndrome.get(ci).unwrap_or(false) {
                -1.0
            } else {
                1.0
            };
            for (j, &v) in vars.iter().enumerate() {
                let product: f64 = inputs
                    .iter()
                    .enumerate()
                    .filter(|&(k, _)| k != j)
                    .map(|(_, &x)| x)
                    .product();
                let p = (flip * product).clamp(-0.999_999_999_999, 0.999_999_999_999);
                c2v[ci][j] = 2.0 * p.atanh();
                next_post[v] += c2v[ci][j];
            }
        }
        post = next_post;
        let word = BitBlock::from_bools(&post.iter().map(|&l| l < 0.0).collect::<Vec<_>>());
        if let Ok(s) = graph.syndrome(&word)
            && &s == syndrome
        {
            return Some((word, iteration));
        }
    }
    None
}
