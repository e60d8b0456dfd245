//! Layered min-sum decoding of syndromes, many frames at once.
//!
//! Bob knows his noisy frame `y` and Alice's syndrome `s = H x`; he looks for the word `x` with
//! syndrome `s` nearest to `y`. Each variable starts from a quantized log-likelihood ratio
//! (positive: "bit is 0"; [`channel_llr`]), punctured variables from 0 and shortened ones from
//! [`KNOWN`]. The decoder is the layered (row-by-row, "turbo-decoding message passing") form of
//! normalized min-sum: for each check, in block-row order,
//!
//! 1. `t_j = L_vj - R_j` for its variables (posterior minus the check's previous message);
//! 2. the new messages `R_j = (-1)^(s + sum of the other signs) * alpha * min_{k != j} |t_k|`,
//!    with `alpha = 1 - 2^-a - 2^-b` ([`Scaling`]);
//! 3. `L_vj = t_j + R_j`.
//!
//! Messages and posteriors are `i8`, saturated and clamped to `-127..=127`. A check's messages
//! are kept compressed, as min-sum allows: its two smallest scaled magnitudes and the position
//! of the smallest (one vector each per check), and each message's sign as one bit per lane.
//! That is 8 bytes per edge instead of a vector, which keeps a thread's working set within
//! the last-level cache for longer codes (frames of 92 160 key bits, AVX-512: one-way
//! reconciliation 1.07 to 1.3 times as fast, blind 1.2 to 1.4, bit for bit the same; measured
//! against the uncompressed decoder in interleaved runs). After every
//! iteration the hard decisions' syndrome is checked per frame; a frame that matches is kept as
//! decoded at that iteration. With [`DecoderParams::stop_stalled`] a frame is also given up
//! once the checks that pass 1 finds unsatisfied fell by less than a sixteenth over the last
//! [`STALL_WINDOW`] iterations: on the built-in codes the frames that decode show a steady
//! fall to the end, while those below the code's threshold level off at hundreds or thousands
//! of unsatisfied checks and would otherwise run to the iteration limit. Giving them up costs
//! one-way reconciliation frames (trial rules raised its FER at QBER 1 %, frames of 92 160
//! bits, f = 1.35, from 0 to 1.2-2.3 %), so only the blind rounds before the last use it,
//! where a failure means more reveals.
//!
//! Each lane decodes one frame ([`lanes`]): 64 at once with AVX-512BW, 32 with AVX2 or the
//! portable `wide` lanes. Lanes never mix, so a lane whose frame matched its syndrome, or
//! reached the iteration limit, takes the next waiting frame at once: the lanes stay busy
//! while their neighbours still decode, instead of idling until the slowest frame of a fixed
//! batch is done, and a frame decodes exactly as it would alone. [`decode`] gives each rayon
//! thread one share of the frames.
//! [`reference`] holds a floating-point sum-product decoder the tests compare against.

pub(crate) mod lanes;
pub mod reference;

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use self::lanes::{Lanes, Portable};
use super::code::{BaseMatrix, lifted_vars};
use crate::bits::{BitBlock, xor_bit_range};
use crate::reconcile::ReconcileError;

/// LLR of a variable known to both sides (shortened).
pub const KNOWN: i8 = 127;

/// Fixed-point scale of the channel LLRs: `llr * LLR_SCALE`, rounded.
pub const LLR_SCALE: f64 = 4.0;

/// Largest check degree the decoder accepts (its argmin index is a signed byte).
pub const MAX_CHECK_DEGREE: usize = 127;

/// The quantized channel LLR of a bit read over a binary symmetric channel with crossover
/// `qber`: `round(LLR_SCALE * ln((1 - q) / q))`, at least 1 and at most 126.
pub fn channel_llr(qber: f64) -> i8 {
    let q = qber.clamp(1e-6, 0.5 - 1e-6);
    ((LLR_SCALE * ((1.0 - q) / q).ln()).round()).clamp(1.0, 126.0) as i8
}

/// The normalization `alpha = 1 - 2^-a - 2^-b` of the min-sum magnitudes (`b = 0`: no second
/// term).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Scaling {
    /// First shift (1..=7).
    pub a: u8,
    /// Second shift (0: none, else 1..=7).
    pub b: u8,
}

impl Scaling {
    /// `alpha = 0.75`.
    pub const THREE_QUARTERS: Self = Self { a: 2, b: 0 };
    /// `alpha = 0.8125`.
    pub const THIRTEEN_SIXTEENTHS: Self = Self { a: 3, b: 4 };
    /// `alpha = 0.875`.
    pub const SEVEN_EIGHTHS: Self = Self { a: 3, b: 0 };

    /// The normalization for checks of `mean_degree` variables on average. Min-sum
    /// overestimates a check's message magnitudes by more the more variables it has, so
    /// low-degree checks want a factor nearer 1. Measured on the built-in mother codes at full
    /// length (z = 256, 64 frames at the QBER where f = 1.2 or 1.3, factors 0.5 to 0.9375):
    /// the rate-0.5 code (checks of 6.5 variables) decoded every frame at 0.8125 to 0.875 and
    /// 4 of 64 at 0.75; every code of 8.8 or more variables per check did best at 0.75 (or
    /// within a frame of it at 0.72).
    pub fn for_check_degree(mean_degree: f64) -> Self {
        if mean_degree < 8.0 {
            Self::SEVEN_EIGHTHS
        } else {
            Self::THREE_QUARTERS
        }
    }

    /// The factor as a number.
    pub fn alpha(self) -> f64 {
        let term = |k: u8| {
            if k == 0 {
                0.0
            } else {
                0.5f64.powi(i32::from(k))
            }
        };
        1.0 - term(self.a) - term(self.b)
    }

    fn check(self) -> Result<(), ReconcileError> {
        if (1..=7).contains(&self.a) && self.b <= 7 {
            Ok(())
        } else {
            Err(ReconcileError::BadParams(format!(
                "min-sum scaling shifts {self:?}; expected a in 1..=7, b in 0..=7"
            )))
        }
    }
}

/// Decoder settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct DecoderParams {
    /// Most iterations per frame.
    pub max_iterations: u32,
    /// Min-sum normalization.
    pub scaling: Scaling,
    /// Give up a frame early once its unsatisfied checks stop falling ([`STALL_WINDOW`]), for
    /// attempts whose failure costs only more disclosure (blind rounds before the last).
    #[serde(default)]
    pub stop_stalled: bool,
}

impl Default for DecoderParams {
    fn default() -> Self {
        Self {
            max_iterations: 60,
            scaling: Scaling::THREE_QUARTERS,
            stop_stalled: false,
        }
    }
}

/// The parity-check matrix in the shape the decoder walks: block rows ("layers") of `z`
/// checks, each check `i` of layer `r` on variables `c * z + (i + s) mod z`, listed once in
/// message order so that message `e` and its variable share an index.
#[derive(Debug, Clone)]
pub struct Graph {
    z: usize,
    n: usize,
    /// Check degree of each layer.
    degrees: Vec<usize>,
    /// Each layer's `(block column, shift)` entries.
    layers: Vec<Vec<(u32, u32)>>,
    /// The variables of every check, check after check.
    vars: Vec<u32>,
}

impl Graph {
    /// The decoder's view of a base matrix.
    pub fn new(base: &BaseMatrix) -> Result<Self, ReconcileError> {
        let layers = base.layers();
        let z = base.z() as usize;
        if let Some(d) = layers.iter().map(Vec::len).find(|&d| d > MAX_CHECK_DEGREE) {
            return Err(ReconcileError::BadParams(format!(
                "check degree {d} above the decoder's {MAX_CHECK_DEGREE}"
            )));
        }
        let mut vars = Vec::with_capacity(base.edges());
        for layer in &layers {
            for i in 0..z {
                vars.extend(lifted_vars(layer, z, i).map(|v| v as u32));
            }
        }
        Ok(Self {
            z,
            n: base.n(),
            degrees: layers.iter().map(Vec::len).collect(),
            vars,
            layers,
        })
    }

    /// Variables.
    pub fn n(&self) -> usize {
        self.n
    }

    /// Checks.
    pub fn m(&self) -> usize {
        self.degrees.len() * self.z
    }

    /// Variables per check, on average.
    pub fn mean_check_degree(&self) -> f64 {
        self.vars.len() as f64 / self.m() as f64
    }

    /// Every check as `(first message index, its variables)`, in check order.
    fn check_spans(&self) -> impl Iterator<Item = (usize, &[u32])> + '_ {
        let degrees = self
            .degrees
            .iter()
            .flat_map(|&d| std::iter::repeat_n(d, self.z));
        degrees.scan(0, |at, d| {
            let start = *at;
            *at += d;
            Some((start, &self.vars[start..start + d]))
        })
    }

    /// Every check's variables, in check order.
    pub fn checks(&self) -> impl Iterator<Item = Vec<usize>> + '_ {
        self.check_spans()
            .map(|(_, vars)| vars.iter().map(|&v| v as usize).collect())
    }

    /// The syndrome `H x` of a word of `n` bits.
    pub fn syndrome(&self, word: &BitBlock) -> Result<BitBlock, ReconcileError> {
        if word.len() != self.n {
            return Err(ReconcileError::KeyLength {
                got: word.len(),
                expected: self.n,
            });
        }
        // Check `i` of layer `r` sees variable `c * z + (i + s) mod z` of each entry `(c, s)`:
        // the layer's syndrome is the XOR of its blocks rotated by their shifts, a word at a
        // time (a bit at a time cost a fifth of one-way reconciliation's time).
        let (x, z) = (word.words(), self.z);
        let mut out = vec![0u64; self.m().div_ceil(64)];
        for (r, layer) in self.layers.iter().enumerate() {
            for &(c, s) in layer {
                let (block, s) = (c as usize * z, s as usize);
                xor_bit_range(&mut out, r * z, x, block + s, z - s);
                xor_bit_range(&mut out, r * z + z - s, x, block, s);
            }
        }
        BitBlock::from_words(out, self.m()).map_err(|e| ReconcileError::BadParams(e.to_string()))
    }
}

/// One frame to decode: its LLRs (`n`) and Alice's syndrome (`m` bits).
#[derive(Debug, Clone, Copy)]
pub struct Frame<'a> {
    /// Quantized LLR per variable (positive: 0 more likely), in `-127..=127`.
    pub llr: &'a [i8],
    /// The syndrome to match.
    pub syndrome: &'a BitBlock,
}

/// What decoding one frame gave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decoded {
    /// The word found, `None` if none matched the syndrome within the iteration limit.
    pub word: Option<BitBlock>,
    /// Iterations until the syndrome matched, or until the decoder gave up.
    pub iterations: u32,
}

/// Which lanes decode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Backend {
    /// `wide` lanes, 32 frames.
    Portable,
    /// AVX2, 32 frames.
    Avx2,
    /// AVX-512BW, 64 frames.
    Avx512,
}

impl Backend {
    /// Every backend, slowest first.
    pub const ALL: [Backend; 3] = [Backend::Portable, Backend::Avx2, Backend::Avx512];

    /// True if this CPU runs it.
    pub fn is_supported(self) -> bool {
        match self {
            Backend::Portable => true,
            #[cfg(target_arch = "x86_64")]
            Backend::Avx2 => std::arch::is_x86_feature_detected!("avx2"),
            #[cfg(target_arch = "x86_64")]
            Backend::Avx512 => {
                std::arch::is_x86_feature_detected!("avx512f")
                    && std::arch::is_x86_feature_detected!("avx512bw")
            }
            #[cfg(not(target_arch = "x86_64"))]
            _ => false,
        }
    }

    /// The fastest backend this CPU runs.
    pub fn best() -> Self {
        *Self::ALL
            .iter()
            .rev()
            .find(|b| b.is_supported())
            .unwrap_or(&Backend::Portable)
    }

    /// Frames decoded at once per thread.
    pub fn width(self) -> usize {
        match self {
            Backend::Portable | Backend::Avx2 => 32,
            Backend::Avx512 => 64,
        }
    }

    /// Name, as in `qkd bench reconcile`.
    pub fn name(self) -> &'static str {
        match self {
            Backend::Portable => "portable",
            Backend::Avx2 => "avx2",
            Backend::Avx512 => "avx512",
        }
    }

    /// Decodes `frames` (any number) on this thread, [`Backend::width`] at a time.
    fn decode_share(
        self,
        graph: &Graph,
        params: DecoderParams,
        frames: &[Frame<'_>],
    ) -> Vec<Decoded> {
        match self {
            // SAFETY: the portable lanes need no CPU feature.
            Backend::Portable => unsafe { decode_lanes::<Portable>(graph, params, frames) },
            #[cfg(target_arch = "x86_64")]
            // SAFETY: `decode` only picks a supported backend.
            Backend::Avx2 => unsafe { decode_avx2(graph, params, frames) },
            #[cfg(target_arch = "x86_64")]
            // SAFETY: as above.
            Backend::Avx512 => unsafe { decode_avx512(graph, params, frames) },
            #[cfg(not(target_arch = "x86_64"))]
            _ => unreachable!("checked by decode"),
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn decode_avx2(graph: &Graph, params: DecoderParams, frames: &[Frame<'_>]) -> Vec<Decoded> {
    // SAFETY: compiled for and called on AVX2.
    unsafe { decode_lanes::<lanes::Avx2>(graph, params, frames) }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw")]
unsafe fn decode_avx512(
    graph: &Graph,
    params: DecoderParams,
    frames: &[Frame<'_>],
) -> Vec<Decoded> {
    // SAFETY: compiled for and called on AVX-512BW.
    unsafe { decode_lanes::<lanes::Avx512>(graph, params, frames) }
}

/// Decodes `frames` (any number) on `backend`, in parallel shares on the current rayon pool.
pub fn decode(
    graph: &Graph,
    params: DecoderParams,
    backend: Backend,
    frames: &[Frame<'_>],
) -> Result<Vec<Decoded>, ReconcileError> {
    params.scaling.check()?;
    if !backend.is_supported() {
        return Err(ReconcileError::BadParams(format!(
            "decoder backend {} is not supported by this CPU",
            backend.name()
        )));
    }
    for f in frames {
        if f.llr.len() != graph.n || f.syndrome.len() != graph.m() {
            return Err(ReconcileError::BadParams(format!(
                "frame of {} LLRs and a {}-bit syndrome for a code of n = {}, m = {}",
                f.llr.len(),
                f.syndrome.len(),
                graph.n,
                graph.m()
            )));
        }
    }
    // One share of the frames per thread, unless fewer would fill every lane.
    let shares = rayon::current_num_threads()
        .min(frames.len().div_ceil(backend.width()))
        .max(1);
    let share = frames.len().div_ceil(shares).max(1);
    let decoded: Vec<Vec<Decoded>> = frames
        .par_chunks(share)
        .map(|s| backend.decode_share(graph, params, s))
        .collect();
    Ok(decoded.into_iter().flatten().collect())
}

/// The decoder proper, for any number of frames on one thread: a frame occupies a lane until
/// its syndrome matches or it reaches the iteration limit, and the lane then takes the next
/// waiting frame (module docs).
///
/// # Safety
/// The CPU must support `V`'s instructions.
#[inline(always)]
unsafe fn decode_lanes<V: Lanes>(
    graph: &Graph,
    params: DecoderParams,
    frames: &[Frame<'_>],
) -> Vec<Decoded> {
    let w = V::WIDTH;
    let (n, m) = (graph.n, graph.m());
    // SAFETY: the caller guarantees V's instructions (every lane operation below).
    unsafe {
        // Posteriors and syndromes, lane-interleaved: variable v's lanes at post[v], check c's
        // syndrome bits as the signs of synd[c]. A lane without a frame holds the all-zero
        // word, which matches its zero syndrome.
        let mut state = LaneState {
            post: vec![V::splat(KNOWN); n],
            synd: vec![V::splat(0); m],
            // The check-to-variable messages, compressed (module docs): magnitudes per check,
            // one sign bit per lane per message.
            magnitudes: vec![CheckMagnitudes::<V>::zero(); m],
            signs: vec![0; graph.vars.len()],
        };
        // Per lane: the frame it decodes and the iterations that frame has had.
        let mut lanes: Vec<Option<LaneFrame>> = vec![None; w];
        let mut waiting = 0..frames.len();
        let mut out: Vec<Decoded> = frames
            .iter()
            .map(|_| Decoded {
                word: None,
                iterations: params.max_iterations,
            })
            .collect();
        let (zero, floor) = (V::splat(0), V::splat(-127));
        let (sa, sb) = (u32::from(params.scaling.a), u32::from(params.scaling.b));
        let scale = |x: V| {
            let y = x.subs(x.shr(sa));
            if sb == 0 { y } else { y.subs(x.shr(sb)) }
        };
        let mut t: Vec<V> = vec![zero; MAX_CHECK_DEGREE];
        let mut unsatisfied_checks = LaneCounter::default();
        loop {
            let loads: Vec<(usize, usize)> = (0..w)
                .filter(|&lane| lanes[lane].is_none())
                .zip(waiting.by_ref())
                .collect();
            for &(lane, frame) in &loads {
                lanes[lane] = Some(LaneFrame::new(frame));
            }
            state.load(frames, &loads);
            let busy = busy_lanes(&lanes);
            if busy == 0 {
                break;
            }
            for (check, (base, vars)) in graph.check_spans().enumerate() {
                let check_signs = &mut state.signs[base..base + vars.len()];
                let old = state.magnitudes[check];
                // Pass 1: extrinsic inputs, their sign parity and two smallest magnitudes.
                let mut parity = state.synd[check];
                let (mut min1, mut min2) = (V::splat(127), V::splat(127));
                let mut arg = zero;
                for (k, &v) in vars.iter().enumerate() {
                    let old = old
                        .of(k)
                        .negate_where_negative(V::from_sign_bits(check_signs[k]));
                    let tk = state.post[v as usize].subs(old).max(floor);
                    t[k] = tk;
                    parity = parity.xor(tk);
                    let a = tk.abs();
                    let smaller = a.le(min1);
                    min2 = a.max(min1).min(min2);
                    min1 = a.min(min1);
                    arg = arg.select(smaller, V::splat(k as i8));
                }
                if params.stop_stalled {
                    unsatisfied_checks.add(parity.sign_bits());
                }
                let new = CheckMagnitudes {
                    smallest: scale(min1),
                    second: scale(min2),
                    smallest_at: arg,
                };
                state.magnitudes[check] = new;
                // Pass 2: new messages and posteriors.
                for (k, &v) in vars.iter().enumerate() {
                    let tk = t[k];
                    let sign = parity.xor(tk);
                    check_signs[k] = sign.sign_bits();
                    state.post[v as usize] =
                        tk.adds(new.of(k).negate_where_negative(sign)).max(floor);
                }
            }
            // Each frame's progress, from the unsatisfied parities of pass 1 (counted only
            // when stalled frames are given up).
            for (lane, f) in lanes.iter_mut().enumerate() {
                if let Some(f) = f {
                    f.iterated(unsatisfied_checks.count(lane));
                }
            }
            unsatisfied_checks = LaneCounter::default();
            let matched = busy & !state.unsatisfied(graph, busy);
            if matched != 0 {
                for (lane, word) in state.harvest(matched) {
                    let f = lanes[lane].take().expect("a busy lane");
                    out[f.frame] = Decoded {
                        word: BitBlock::from_words(word, n).ok(),
                        iterations: f.iterations,
                    };
                }
            }
            // Frames at the limit, or stalled, stay undecoded; their lanes take the next
            // frames.
            for lane in &mut lanes {
                if let Some(f) = lane.filter(|f| {
                    f.iterations >= params.max_iterations || (params.stop_stalled && f.stalled)
                }) {
                    out[f.frame].iterations = f.iterations;
                    *lane = None;
                }
            }
        }
        out
    }
}

/// A frame is given up once its unsatisfied checks fell by less than `1 / STALL_DROP` over
/// the last [`STALL_WINDOW`] iterations: the frames that decode show a steady fall (module
/// docs).
pub const STALL_WINDOW: usize = 5;
/// See [`STALL_WINDOW`].
pub const STALL_DROP: u32 = 16;
/// The first iteration at which a frame may be given up as stalled.
pub const STALL_FROM: u32 = 8;

/// A lane's frame and its progress.
#[derive(Debug, Clone, Copy)]
struct LaneFrame {
    frame: usize,
    iterations: u32,
    /// The checks its messages left unsatisfied in the last iterations, the latest at
    /// `iterations % STALL_WINDOW`.
    recent: [u32; STALL_WINDOW],
    /// Set once the count fell too little over the window ([`STALL_WINDOW`]).
    stalled: bool,
}

impl LaneFrame {
    fn new(frame: usize) -> Self {
        Self {
            frame,
            iterations: 0,
            recent: [0; STALL_WINDOW],
            stalled: false,
        }
    }

    /// One more iteration, which left `unsatisfied` checks.
    fn iterated(&mut self, unsatisfied: u32) {
        self.iterations += 1;
        let slot = self.iterations as usize % STALL_WINDOW;
        let before = std::mem::replace(&mut self.recent[slot], unsatisfied);
        self.stalled = self.iterations >= STALL_FROM && unsatisfied > before - before / STALL_DROP;
    }
}

/// A count per lane, bit-sliced: plane `i` holds bit `i` of every lane's count, so adding a
/// mask of lanes is a few word operations.
#[derive(Debug, Default)]
struct LaneCounter {
    planes: [u64; 32],
}

impl LaneCounter {
    /// Adds one to the lanes set in `lanes`.
    #[inline(always)]
    fn add(&mut self, lanes: u64) {
        let mut carry = lanes;
        for plane in &mut self.planes {
            if carry == 0 {
                break;
            }
            let next = *plane & carry;
            *plane ^= carry;
            carry = next;
        }
    }

    /// Lane `lane`'s count.
    fn count(&self, lane: usize) -> u32 {
        self.planes
            .iter()
            .enumerate()
            .fold(0, |c, (i, p)| c | (((p >> lane) & 1) as u32) << i)
    }
}

/// The bits of the lanes that hold a frame.
fn busy_lanes(lanes: &[Option<LaneFrame>]) -> u64 {
    lanes
        .iter()
        .enumerate()
        .filter(|(_, l)| l.is_some())
        .fold(0, |bits, (lane, _)| bits | 1 << lane)
}

/// Everything the decoder keeps per lane, lane-interleaved.
struct LaneState<V> {
    post: Vec<V>,
    synd: Vec<V>,
    magnitudes: Vec<CheckMagnitudes<V>>,
    signs: Vec<u64>,
}

impl<V: Lanes> LaneState<V> {
    /// Starts each `(lane, frame)` of `loads`: the frame's LLRs and syndrome, no messages.
    ///
    /// # Safety
    /// The CPU must support `V`'s instructions.
    #[inline(always)]
    unsafe fn load(&mut self, frames: &[Frame<'_>], loads: &[(usize, usize)]) {
        if loads.is_empty() {
            return;
        }
        let bits = loads.iter().fold(0u64, |b, &(lane, _)| b | 1 << lane);
        // SAFETY: the caller guarantees V's instructions.
        unsafe {
            let mask = V::mask_from_bits(bits);
            let mut bytes = vec![0i8; V::WIDTH];
            for (v, post) in self.post.iter_mut().enumerate() {
                for &(lane, f) in loads {
                    bytes[lane] = frames[f].llr[v].max(-127);
                }
                *post = post.select(mask, V::from_slice(&bytes));
            }
            for (c, synd) in self.synd.iter_mut().enumerate() {
                for &(lane, f) in loads {
                    bytes[lane] = if frames[f].syndrome.get(c).unwrap_or(false) {
                        -128
                    } else {
                        0
                    };
                }
                *synd = synd.select(mask, V::from_slice(&bytes));
            }
            let zero = CheckMagnitudes::<V>::zero();
            for m in &mut self.magnitudes {
                *m = CheckMagnitudes {
                    smallest: m.smallest.select(mask, zero.smallest),
                    second: m.second.select(mask, zero.second),
                    smallest_at: m.smallest_at.select(mask, zero.smallest_at),
                };
            }
        }
        for s in &mut self.signs {
            *s &= !bits;
        }
    }

    /// The lanes among `open` whose hard decisions miss their syndrome somewhere (the search
    /// stops once every open lane has missed a check).
    ///
    /// # Safety
    /// The CPU must support `V`'s instructions.
    #[inline(always)]
    unsafe fn unsatisfied(&self, graph: &Graph, open: u64) -> u64 {
        let mut unsatisfied = 0u64;
        for (check, (_, vars)) in graph.check_spans().enumerate() {
            // SAFETY: the caller guarantees V's instructions.
            let p = vars.iter().fold(self.synd[check], |p, &v| unsafe {
                p.xor(self.post[v as usize])
            });
            // SAFETY: as above.
            unsatisfied |= unsafe { p.sign_bits() };
            if unsatisfied & open == open {
                break;
            }
        }
        unsatisfied
    }

    /// The hard decisions of the lanes in `lanes`, as words, lane by lane.
    ///
    /// # Safety
    /// The CPU must support `V`'s instructions.
    #[inline(always)]
    unsafe fn harvest(&self, lanes: u64) -> Vec<(usize, Vec<u64>)> {
        let n = self.post.len();
        let mut words: Vec<Option<Vec<u64>>> = (0..V::WIDTH)
            .map(|lane| (lanes >> lane & 1 == 1).then(|| vec![0u64; n.div_ceil(64)]))
            .collect();
        for (v, &p) in self.post.iter().enumerate() {
            // SAFETY: the caller guarantees V's instructions.
            let mut rest = unsafe { p.sign_bits() } & lanes;
            while rest != 0 {
                let lane = rest.trailing_zeros() as usize;
                if let Some(w) = &mut words[lane] {
                    w[v / 64] |= 1 << (v % 64);
                }
                rest &= rest - 1;
            }
        }
        words
            .into_iter()
            .enumerate()
            .filter_map(|(lane, w)| w.map(|w| (lane, w)))
            .collect()
    }
}

/// A check's message magnitudes, per lane: min-sum sends the smallest scaled input magnitude to
/// every variable but the one it came from, which gets the second smallest.
#[derive(Clone, Copy)]
struct CheckMagnitudes<V> {
    smallest: V,
    second: V,
    /// Position (in the check) of the smallest input.
    smallest_at: V,
}

impl<V: Lanes> CheckMagnitudes<V> {
    /// No message yet.
    ///
    /// # Safety
    /// The CPU must support `V`'s instructions.
    #[inline(always)]
    unsafe fn zero() -> Self {
        // SAFETY: the caller guarantees V's instructions.
        let z = unsafe { V::splat(0) };
        Self {
            smallest: z,
            second: z,
            smallest_at: z,
        }
    }

    /// The magnitude of the message to the check's `k`-th variable.
    ///
    /// # Safety
    /// The CPU must support `V`'s instructions.
    #[inline(always)]
    unsafe fn of(self, k: usize) -> V {
        // SAFETY: the caller guarantees V's instructions.
        unsafe {
            self.smallest
                .select(self.smallest_at.eq(V::splat(k as i8)), self.second)
        }
    }
}

#[cfg(test)]
mod tests;
