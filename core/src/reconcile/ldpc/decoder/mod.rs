//! Layered min-sum decoding of syndromes, the consecutive checks of a circulant in SIMD lanes.
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
//! **Self-correction** ([`DecoderParams::self_correct`], on by default; Savin, "Self-corrected
//! min-sum decoding of LDPC codes", ISIT 2008): a variable's input to a check is erased (0)
//! when its sign differs from its last input to that check that was not erased, so that an
//! oscillating variable stops pushing the check's messages. The erasure is of the input only:
//! the posterior keeps `t_j`. On the built-in codes at full length it closes most of min-sum's
//! gap to belief propagation: near the thresholds (one-way, z = 512, nothing punctured) the
//! rate-0.5 code went from 9 to 24 of 24 frames at f = 1.15, the rate-0.8 one from 5 to 22 at
//! f = 1.2; one-way reconciliation at f = 1.35 and QBER 4 % from a frame error rate of 39 %
//! to 0.4 %.
//!
//! **Lanes** ([`lanes`]): the checks of a layer are `z` rows of circulants, so check `i + 1`
//! sees, in every block column, the variable after the one check `i` sees (mod `z`). A vector
//! of `WIDTH` lanes (64 with AVX-512BW, 32 with AVX2 or the portable `wide` lanes) therefore
//! holds `WIDTH` consecutive checks of one frame, and each of their variables is a run of
//! `WIDTH` consecutive posteriors: one unaligned load. Each block column's posteriors are
//! followed by a halo that repeats its first `WIDTH` (cyclically, for `z < WIDTH`), so the
//! run that passes the column's end is one load too; after each layer the variables written
//! through a halo go home and the halos are refreshed. Frames are decoded one per rayon task,
//! and a frame's whole state (115 KB of posteriors and 130 KB of messages at `n` = 102 400)
//! stays in the core's L2 cache. An earlier layout put one frame per lane instead (64 frames
//! at once): its 13 MB per thread lived in the shared L3 cache, and loading and harvesting
//! single frames cost a pass over all of it. This one, with the min-sum normalization
//! inlined (a closure had kept its instructions out of line), decodes four times as fast
//! (one-way, QBER 2 %, frames of 92 160 key bits, interleaved runs), with the same results
//! bit for bit.
//!
//! Messages and posteriors are `i8`, saturated and clamped to `-127..=127`. A check's messages
//! are kept compressed, as min-sum allows: its two smallest scaled magnitudes and the position
//! of the smallest, and each message's sign as one bit. After every iteration the hard
//! decisions' syndrome is checked, stopping at the first check that fails; a frame that
//! matches is decoded at that iteration. With [`DecoderParams::stop_stalled`] a frame is also
//! given up once the checks that pass 1 finds unsatisfied fell by less than a sixteenth over
//! the last [`STALL_WINDOW`] iterations: on the built-in codes the frames that decode show a steady
//! fall to the end, while those below the code's threshold level off at hundreds or thousands
//! of unsatisfied checks and would otherwise run to the iteration limit. Giving them up costs
//! one-way reconciliation frames (trial rules raised its FER at QBER 1 %, frames of 92 160
//! bits, f = 1.35, from 0 to 1.2-2.3 %), so only the blind rounds before the last use it,
//! where a failure means more reveals.
//!
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
    /// `alpha = 0.84375`.
    pub const TWENTY_SEVEN_THIRTY_SECONDS: Self = Self { a: 3, b: 5 };
    /// `alpha = 0.875`.
    pub const SEVEN_EIGHTHS: Self = Self { a: 3, b: 0 };

    /// The normalization for checks of `mean_degree` variables on average. Min-sum
    /// overestimates a check's message magnitudes by more the more variables it has, so
    /// low-degree checks want a factor nearer 1. Measured with self-correction on the built-in
    /// mother codes at full length (z = 512, one-way, 512 frames per point at QBER 1-8.5 % and
    /// f = 1.2 to 1.5, factors 0.75 to 0.9375; `examples/ldpc_frames.rs`): the codes of 6.5 to
    /// 15.5 variables per check (rates 0.5 to 0.75) lost at most one frame of 512 at 0.84375
    /// where 0.8125 lost up to 8 (QBER 8 %, f = 1.25: 504 decoded against 511; 8.5 %,
    /// f = 1.3: 507 against 512) and 0.75 most of them (at 8 %, f = 1.25: none decoded; f =
    /// 1.35: 52); those of 17.6 and 20 decoded as well or better at 0.8125 (QBER 3 %, f =
    /// 1.25: 512 against 510 at 0.75); those of 22.6 or more as well or better at 0.75 (QBER
    /// 1 %, f = 1.25: 18 against 10).
    pub fn for_check_degree(mean_degree: f64) -> Self {
        if mean_degree < 16.5 {
            Self::TWENTY_SEVEN_THIRTY_SECONDS
        } else if mean_degree < 21.0 {
            Self::THIRTEEN_SIXTEENTHS
        } else {
            Self::THREE_QUARTERS
        }
    }

    /// `alpha * x`, rounded down, for magnitudes `x >= 0`.
    ///
    /// # Safety
    /// The CPU must support `V`'s instructions.
    #[inline(always)]
    unsafe fn apply<V: Lanes>(self, x: V) -> V {
        // SAFETY: the caller guarantees V's instructions. (A function, not a closure: a
        // closure would not be compiled with the caller's target features.)
        unsafe {
            let y = x.subs(x.shr(u32::from(self.a)));
            if self.b == 0 {
                y
            } else {
                y.subs(x.shr(u32::from(self.b)))
            }
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
    /// Self-corrected min-sum (module docs).
    #[serde(default = "yes")]
    pub self_correct: bool,
}

impl Default for DecoderParams {
    fn default() -> Self {
        Self {
            max_iterations: 60,
            scaling: Scaling::THREE_QUARTERS,
            stop_stalled: false,
            self_correct: true,
        }
    }
}

fn yes() -> bool {
    true
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
    /// `wide` lanes, 32 checks.
    Portable,
    /// AVX2, 32 checks.
    Avx2,
    /// AVX-512BW, 64 checks.
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

    /// Checks decoded at once (lanes per vector).
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

    /// Decodes `frames` on the current rayon pool, one frame per task, each worker reusing
    /// one [`Workspace`].
    fn decode_all(
        self,
        graph: &Graph,
        params: DecoderParams,
        frames: &[Frame<'_>],
    ) -> Vec<Decoded> {
        match self {
            Backend::Portable => decode_with::<Portable>(graph, params, frames, |g, p, w, f| {
                // SAFETY: the portable lanes need no CPU feature.
                unsafe { decode_frame(g, p, w, f) }
            }),
            #[cfg(target_arch = "x86_64")]
            Backend::Avx2 => decode_with(graph, params, frames, |g, p, w, f| {
                // SAFETY: `decode` only picks a supported backend.
                unsafe { decode_frame_avx2(g, p, w, f) }
            }),
            #[cfg(target_arch = "x86_64")]
            Backend::Avx512 => decode_with(graph, params, frames, |g, p, w, f| {
                // SAFETY: as above.
                unsafe { decode_frame_avx512(g, p, w, f) }
            }),
            #[cfg(not(target_arch = "x86_64"))]
            _ => unreachable!("checked by decode"),
        }
    }
}

/// The signature of one backend's frame decoder.
type FrameDecoder<V> = fn(&Graph, DecoderParams, &mut Workspace<V>, &Frame<'_>) -> Decoded;

fn decode_with<V: Lanes>(
    graph: &Graph,
    params: DecoderParams,
    frames: &[Frame<'_>],
    one: FrameDecoder<V>,
) -> Vec<Decoded> {
    // At most four pieces per thread, so that few workspaces are allocated and each serves
    // many frames, while a thread that drew slow frames still gets help.
    let piece = frames
        .len()
        .div_ceil(4 * rayon::current_num_threads())
        .max(1);
    frames
        .par_iter()
        .with_min_len(piece)
        .map_init(Workspace::<V>::default, |ws, f| one(graph, params, ws, f))
        .collect()
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn decode_frame_avx2(
    graph: &Graph,
    params: DecoderParams,
    ws: &mut Workspace<lanes::Avx2>,
    frame: &Frame<'_>,
) -> Decoded {
    // SAFETY: compiled for and called on AVX2.
    unsafe { decode_frame(graph, params, ws, frame) }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw")]
unsafe fn decode_frame_avx512(
    graph: &Graph,
    params: DecoderParams,
    ws: &mut Workspace<lanes::Avx512>,
    frame: &Frame<'_>,
) -> Decoded {
    // SAFETY: compiled for and called on AVX-512BW.
    unsafe { decode_frame(graph, params, ws, frame) }
}

/// Decodes `frames` (any number) on `backend`, in parallel on the current rayon pool.
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
    let width = backend.width();
    if graph.z > width && !graph.z.is_multiple_of(width) {
        return Err(ReconcileError::BadParams(format!(
            "circulant of {} bits: the {} decoder needs a multiple of {width} or fewer",
            graph.z,
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
    Ok(backend.decode_all(graph, params, frames))
}

/// The decoder proper, for one frame (module docs): iterations until the hard decisions match
/// the syndrome, the limit, or (with [`DecoderParams::stop_stalled`]) a stall.
///
/// # Safety
/// The CPU must support `V`'s instructions.
#[inline(always)]
unsafe fn decode_frame<V: Lanes>(
    graph: &Graph,
    params: DecoderParams,
    ws: &mut Workspace<V>,
    frame: &Frame<'_>,
) -> Decoded {
    // SAFETY: the caller guarantees V's instructions (every workspace operation).
    unsafe {
        ws.load(graph, frame);
        let mut progress = Progress::default();
        for iteration in 1..=params.max_iterations {
            let unsatisfied = ws.iterate(graph, params);
            if ws.matches(graph) {
                return Decoded {
                    word: BitBlock::from_words(ws.word(graph), graph.n).ok(),
                    iterations: iteration,
                };
            }
            if params.stop_stalled && progress.stalled_after(iteration, unsatisfied) {
                return Decoded {
                    word: None,
                    iterations: iteration,
                };
            }
        }
    }
    Decoded {
        word: None,
        iterations: params.max_iterations,
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

/// The checks a frame's messages left unsatisfied in its last iterations.
#[derive(Debug, Default)]
struct Progress {
    /// The latest at `iteration % STALL_WINDOW`.
    recent: [u32; STALL_WINDOW],
}

impl Progress {
    /// Records iteration `iteration`'s count; true if the frame stalled ([`STALL_WINDOW`]).
    fn stalled_after(&mut self, iteration: u32, unsatisfied: u32) -> bool {
        let slot = iteration as usize % STALL_WINDOW;
        let before = std::mem::replace(&mut self.recent[slot], unsatisfied);
        iteration >= STALL_FROM && unsatisfied > before - before / STALL_DROP
    }
}

/// Where the chunks of a graph's layers read their variables, for one lane width: a chunk is
/// `valid = min(z, WIDTH)` consecutive checks of a layer, and its `k`-th variables are
/// `valid` consecutive variables of the `k`-th entry's block column, from offset
/// `(first check + shift) mod z`.
#[derive(Debug, Default)]
struct Layout {
    /// Checks per chunk.
    valid: usize,
    /// Chunks per layer.
    chunks: usize,
    /// Bytes per block column in [`Workspace::post`]: `z` variables and a halo of `WIDTH`.
    stride: usize,
    /// Bytes of [`Workspace::post`].
    post_len: usize,
    /// Every chunk's variable offsets into `post`, chunk after chunk.
    offsets: Vec<usize>,
    /// Per layer, each entry's block column start in `post` and `shift mod valid`: the first
    /// variables of the column that the layer's last chunk wrote in its halo.
    wraps: Vec<Vec<(usize, usize)>>,
}

impl Layout {
    fn new(graph: &Graph, width: usize) -> Self {
        let z = graph.z;
        let valid = z.min(width);
        let (chunks, stride) = (z / valid, z + width);
        let mut offsets = Vec::with_capacity(graph.vars.len() / valid);
        for layer in &graph.layers {
            for q in 0..chunks {
                offsets.extend(
                    layer
                        .iter()
                        .map(|&(c, s)| c as usize * stride + (q * valid + s as usize) % z),
                );
            }
        }
        let wraps = graph
            .layers
            .iter()
            .map(|layer| {
                layer
                    .iter()
                    .map(|&(c, s)| (c as usize * stride, s as usize % valid))
                    .collect()
            })
            .collect();
        let post_len = graph.n / z * stride;
        // What the unchecked loads rely on.
        assert!(offsets.iter().all(|&o| o + width <= post_len));
        Self {
            valid,
            chunks,
            stride,
            post_len,
            offsets,
            wraps,
        }
    }

    /// The lanes that hold checks.
    fn valid_lanes(&self) -> u64 {
        low_bits(self.valid)
    }
}

/// Repeats a block column's `z` variables cyclically after them, to its end.
fn fill_halo(column: &mut [i8], z: usize) {
    let mut filled = z;
    while filled < column.len() {
        let take = filled.min(column.len() - filled);
        column.copy_within(..take, filled);
        filled += take;
    }
}

/// The low `k` bits set (`k <= 64`).
fn low_bits(k: usize) -> u64 {
    if k >= 64 { u64::MAX } else { (1 << k) - 1 }
}

/// One frame's decoder state, kept by a worker from frame to frame.
struct Workspace<V> {
    layout: Layout,
    /// Posteriors: block column `c`'s `z` variables from `c * stride`, then a halo of `WIDTH`
    /// bytes that repeats them cyclically, so that any `WIDTH` consecutive variables (mod z)
    /// are one unaligned load.
    post: Vec<i8>,
    /// Per chunk, the syndrome bits as signs.
    synd: Vec<V>,
    /// The check-to-variable messages, compressed (module docs): magnitudes per chunk, one
    /// sign bit per lane per message.
    magnitudes: Vec<CheckMagnitudes<V>>,
    signs: Vec<u64>,
    /// Self-correction ([`DecoderParams::self_correct`]): per edge and lane, the sign of the
    /// last input and whether it was not 0.
    input_signs: Vec<u64>,
    input_live: Vec<u64>,
    /// A chunk's extrinsic posteriors, and its inputs to the check (the same unless erased).
    t: Vec<V>,
    inputs: Vec<V>,
}

impl<V> Default for Workspace<V> {
    fn default() -> Self {
        Self {
            layout: Layout::default(),
            post: Vec::new(),
            synd: Vec::new(),
            magnitudes: Vec::new(),
            signs: Vec::new(),
            input_signs: Vec::new(),
            input_live: Vec::new(),
            t: Vec::new(),
            inputs: Vec::new(),
        }
    }
}

impl<V: Lanes> Workspace<V> {
    /// Starts `frame`: its LLRs and syndrome, no messages.
    ///
    /// # Safety
    /// The CPU must support `V`'s instructions.
    #[inline(always)]
    unsafe fn load(&mut self, graph: &Graph, frame: &Frame<'_>) {
        let (z, w) = (graph.z, V::WIDTH);
        if self.layout.offsets.is_empty() {
            self.layout = Layout::new(graph, w);
        }
        let Layout {
            valid,
            chunks,
            stride,
            ..
        } = self.layout;
        let columns = graph.n / z;
        self.post.resize(columns * stride, 0);
        for (column, llr) in self.post.chunks_exact_mut(stride).zip(frame.llr.chunks(z)) {
            for (p, &l) in column.iter_mut().zip(llr) {
                *p = l.max(-127);
            }
            fill_halo(column, z);
        }
        // SAFETY: the caller guarantees V's instructions.
        unsafe {
            let zero = CheckMagnitudes::<V>::zero();
            let count = graph.layers.len() * chunks;
            self.magnitudes.clear();
            self.magnitudes.resize(count, zero);
            self.synd.clear();
            let words = frame.syndrome.words();
            for chunk in 0..count {
                let mut bits = [0u64];
                xor_bit_range(&mut bits, 0, words, chunk * valid, valid);
                self.synd.push(V::from_sign_bits(bits[0]));
            }
            self.t.resize(MAX_CHECK_DEGREE, V::splat(0));
            self.inputs.resize(MAX_CHECK_DEGREE, V::splat(0));
        }
        // With no magnitudes yet the signs do not matter; they are all written in the first
        // iteration.
        self.signs.resize(self.layout.offsets.len(), 0);
        self.input_signs.resize(self.layout.offsets.len(), 0);
        self.input_live.clear();
        self.input_live.resize(self.layout.offsets.len(), 0);
    }

    /// One layered iteration; returns the checks pass 1 found unsatisfied (counted only when
    /// stalled frames are given up).
    ///
    /// # Safety
    /// The CPU must support `V`'s instructions.
    #[inline(always)]
    unsafe fn iterate(&mut self, graph: &Graph, params: DecoderParams) -> u32 {
        let (w, z) = (V::WIDTH, graph.z);
        let Self {
            layout,
            post,
            synd,
            magnitudes,
            signs,
            input_signs,
            input_live,
            t,
            inputs,
        } = self;
        let valid_lanes = layout.valid_lanes();
        let mut unsatisfied = 0;
        assert_eq!(post.len(), layout.post_len);
        let at = post.as_mut_ptr();
        let (synd, magnitudes, signs, t) =
            (&synd[..], &mut magnitudes[..], &mut signs[..], &mut t[..]);
        let (input_signs, input_live, inputs) =
            (&mut input_signs[..], &mut input_live[..], &mut inputs[..]);
        // SAFETY: the caller guarantees V's instructions (every lane operation below); every
        // offset is at least WIDTH bytes before the end of `post` (`Layout::new`).
        unsafe {
            let (zero, floor) = (V::splat(0), V::splat(-127));
            let (mut chunk, mut edge) = (0, 0);
            for (layer, wraps) in graph.layers.iter().zip(&layout.wraps) {
                let d = layer.len();
                for _ in 0..layout.chunks {
                    let offsets = &layout.offsets[edge..edge + d];
                    let chunk_signs = &mut signs[edge..edge + d];
                    let chunk_input_signs = &mut input_signs[edge..edge + d];
                    let chunk_input_live = &mut input_live[edge..edge + d];
                    let old = magnitudes[chunk];
                    // Pass 1: extrinsic inputs, their sign parity and two smallest magnitudes.
                    let mut parity = synd[chunk];
                    let (mut min1, mut min2) = (V::splat(127), V::splat(127));
                    let mut arg = zero;
                    for (k, &o) in offsets.iter().enumerate() {
                        let old = old
                            .of(k)
                            .negate_where_negative(V::from_sign_bits(chunk_signs[k]));
                        let raw = V::load(at.add(o)).subs(old).max(floor);
                        t[k] = raw;
                        let tk = if params.self_correct {
                            let s = raw.sign_bits();
                            let flipped = (s ^ chunk_input_signs[k]) & chunk_input_live[k];
                            let input = raw.select(V::mask_from_bits(flipped), zero);
                            let zero_input = V::mask_bits(input.eq(zero));
                            chunk_input_signs[k] = s & !flipped;
                            chunk_input_live[k] = !zero_input;
                            input
                        } else {
                            raw
                        };
                        inputs[k] = tk;
                        parity = parity.xor(tk);
                        let a = tk.abs();
                        let smaller = a.le(min1);
                        min2 = a.max(min1).min(min2);
                        min1 = a.min(min1);
                        arg = arg.select(smaller, V::splat(k as i8));
                    }
                    if params.stop_stalled {
                        unsatisfied += (parity.sign_bits() & valid_lanes).count_ones();
                    }
                    let new = CheckMagnitudes {
                        smallest: params.scaling.apply(min1),
                        second: params.scaling.apply(min2),
                        smallest_at: arg,
                    };
                    magnitudes[chunk] = new;
                    // Pass 2: new messages and posteriors.
                    for (k, &o) in offsets.iter().enumerate() {
                        let sign = parity.xor(inputs[k]);
                        chunk_signs[k] = sign.sign_bits();
                        t[k].adds(new.of(k).negate_where_negative(sign))
                            .max(floor)
                            .store(at.add(o));
                    }
                    chunk += 1;
                    edge += d;
                }
                // The chunk that ran past a column's end wrote its first `wrap` variables in
                // the halo: move them home, then refresh the halo.
                // (A column and its halo are the `stride = z + WIDTH` bytes from `start`.)
                for &(start, wrap) in wraps {
                    let column = at.add(start);
                    if z >= w {
                        let halo = V::load(column.add(z));
                        let head = V::load(column).select(V::mask_from_bits(low_bits(wrap)), halo);
                        head.store(column);
                        head.store(column.add(z));
                    } else {
                        let column = std::slice::from_raw_parts_mut(column, z + w);
                        column.copy_within(z..z + wrap, 0);
                        fill_halo(column, z);
                    }
                }
            }
        }
        unsatisfied
    }

    /// True if the hard decisions match the syndrome (stops at the first check that misses).
    ///
    /// # Safety
    /// The CPU must support `V`'s instructions.
    #[inline(always)]
    unsafe fn matches(&self, graph: &Graph) -> bool {
        let valid_lanes = self.layout.valid_lanes();
        let mut offsets = self.layout.offsets.as_slice();
        assert_eq!(self.post.len(), self.layout.post_len);
        let at = self.post.as_ptr();
        let mut chunk = 0;
        for layer in &graph.layers {
            for _ in 0..self.layout.chunks {
                let (these, rest) = offsets.split_at(layer.len());
                let mut p = self.synd[chunk];
                // (A loop, not a fold: a closure would not get the caller's target features.)
                for &o in these {
                    // SAFETY: the caller guarantees V's instructions; as in `iterate`, `o +
                    // WIDTH <= post.len()`.
                    p = unsafe { p.xor(V::load(at.add(o))) };
                }
                // SAFETY: as above.
                if unsafe { p.sign_bits() } & valid_lanes != 0 {
                    return false;
                }
                offsets = rest;
                chunk += 1;
            }
        }
        true
    }

    /// The hard decisions, as words.
    ///
    /// # Safety
    /// The CPU must support `V`'s instructions.
    #[inline(always)]
    unsafe fn word(&self, graph: &Graph) -> Vec<u64> {
        let Layout {
            valid,
            chunks,
            stride,
            ..
        } = self.layout;
        let valid_lanes = self.layout.valid_lanes();
        let mut words = vec![0u64; graph.n.div_ceil(64)];
        for (c, column) in self.post.chunks_exact(stride).enumerate() {
            for j in 0..chunks {
                let from = j * valid;
                // SAFETY: the caller guarantees V's instructions.
                let bits = unsafe { V::from_slice(&column[from..]).sign_bits() } & valid_lanes;
                xor_bit_range(&mut words, c * graph.z + from, &[bits], 0, valid);
            }
        }
        words
    }
}

/// A chunk's message magnitudes, per lane: min-sum sends the smallest scaled input magnitude to
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
