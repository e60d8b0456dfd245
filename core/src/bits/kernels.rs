//! Word kernels behind [`BitBlock`](super::BitBlock): XOR, popcount, XOR-popcount and XOR-fold,
//! with run-time dispatch.
//!
//! Each backend is the same plain loop compiled under a different `#[target_feature]` set, so
//! LLVM vectorizes it for that set (AVX-512 with `VPOPCNTQ`, AVX2 with the nibble-table
//! popcount, or scalar `POPCNT`). [`best`] picks the widest backend the CPU supports once per
//! process; [`Kernels::new`] hands out a specific one only if the CPU supports it, which is how
//! the tests run every path against the portable one.

use std::sync::OnceLock;

/// An instruction-set tier for the word kernels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Backend {
    /// Plain Rust for the build target's baseline; always available.
    Portable,
    /// x86-64 with `POPCNT`.
    Popcnt,
    /// x86-64 with AVX2 (and `POPCNT`).
    Avx2,
    /// x86-64 with AVX-512F, AVX-512BW and AVX-512 VPOPCNTDQ.
    Avx512,
}

impl Backend {
    /// All tiers, narrowest first.
    pub const ALL: [Backend; 4] = [
        Backend::Portable,
        Backend::Popcnt,
        Backend::Avx2,
        Backend::Avx512,
    ];

    /// Whether this CPU can run the backend.
    pub fn is_supported(self) -> bool {
        match self {
            Backend::Portable => true,
            #[cfg(target_arch = "x86_64")]
            Backend::Popcnt => std::arch::is_x86_feature_detected!("popcnt"),
            #[cfg(target_arch = "x86_64")]
            Backend::Avx2 => {
                std::arch::is_x86_feature_detected!("avx2")
                    && std::arch::is_x86_feature_detected!("popcnt")
            }
            #[cfg(target_arch = "x86_64")]
            Backend::Avx512 => {
                std::arch::is_x86_feature_detected!("avx512f")
                    && std::arch::is_x86_feature_detected!("avx512bw")
                    && std::arch::is_x86_feature_detected!("avx512vpopcntdq")
                    && std::arch::is_x86_feature_detected!("popcnt")
            }
            #[cfg(not(target_arch = "x86_64"))]
            _ => false,
        }
    }

    /// Short lowercase name, for reports and benchmarks.
    pub fn name(self) -> &'static str {
        match self {
            Backend::Portable => "portable",
            Backend::Popcnt => "popcnt",
            Backend::Avx2 => "avx2",
            Backend::Avx512 => "avx512",
        }
    }
}

/// A backend proven to be supported by this CPU; the only way to call the kernels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Kernels {
    backend: Backend,
}

/// The widest supported backend, detected once.
pub fn best() -> &'static Kernels {
    static BEST: OnceLock<Kernels> = OnceLock::new();
    BEST.get_or_init(|| {
        Backend::ALL
            .iter()
            .rev()
            .find_map(|&b| Kernels::new(b))
            .unwrap_or(Kernels {
                backend: Backend::Portable,
            })
    })
}

/// The plain loops. `#[inline(always)]` so each backend below compiles its own copy with its
/// own target features.
mod portable {
    #[inline(always)]
    pub(super) fn xor_into(dst: &mut [u64], src: &[u64]) {
        for (d, s) in dst.iter_mut().zip(src) {
            *d ^= *s;
        }
    }

    #[inline(always)]
    pub(super) fn popcount(words: &[u64]) -> u64 {
        // Four independent accumulators keep the adds off one dependency chain.
        let mut acc = [0u64; 4];
        let chunks = words.chunks_exact(4);
        let rest = chunks.remainder();
        for c in chunks {
            for k in 0..4 {
                acc[k] += u64::from(c[k].count_ones());
            }
        }
        let tail: u64 = rest.iter().map(|w| u64::from(w.count_ones())).sum();
        acc.iter().sum::<u64>() + tail
    }

    #[inline(always)]
    pub(super) fn xor_popcount(a: &[u64], b: &[u64]) -> u64 {
        let mut acc = [0u64; 4];
        let ca = a.chunks_exact(4);
        let cb = b.chunks_exact(4);
        let (ra, rb) = (ca.remainder(), cb.remainder());
        for (x, y) in ca.zip(cb) {
            for k in 0..4 {
                acc[k] += u64::from((x[k] ^ y[k]).count_ones());
            }
        }
        let tail: u64 = ra
            .iter()
            .zip(rb)
            .map(|(x, y)| u64::from((x ^ y).count_ones()))
            .sum();
        acc.iter().sum::<u64>() + tail
    }

    #[inline(always)]
    pub(super) fn xor_fold(words: &[u64]) -> u64 {
        let mut acc = [0u64; 8];
        let chunks = words.chunks_exact(8);
        let rest = chunks.remainder();
        for c in chunks {
            for k in 0..8 {
                acc[k] ^= c[k];
            }
        }
        acc.iter().chain(rest).fold(0, |a, w| a ^ w)
    }
}

/// Generates one backend module: the portable loops compiled under `$features`.
#[cfg(target_arch = "x86_64")]
macro_rules! backend {
    ($name:ident, $features:literal) => {
        mod $name {
            #[target_feature(enable = $features)]
            pub(super) fn xor_into(dst: &mut [u64], src: &[u64]) {
                super::portable::xor_into(dst, src)
            }
            #[target_feature(enable = $features)]
            pub(super) fn popcount(words: &[u64]) -> u64 {
                super::portable::popcount(words)
            }
            #[target_feature(enable = $features)]
            pub(super) fn xor_popcount(a: &[u64], b: &[u64]) -> u64 {
                super::portable::xor_popcount(a, b)
            }
            #[target_feature(enable = $features)]
            pub(super) fn xor_fold(words: &[u64]) -> u64 {
                super::portable::xor_fold(words)
            }
        }
    };
}

#[cfg(target_arch = "x86_64")]
backend!(popcnt, "popcnt");
#[cfg(target_arch = "x86_64")]
backend!(avx2, "avx2,popcnt");
#[cfg(target_arch = "x86_64")]
backend!(avx512, "avx512f,avx512bw,avx512vpopcntdq,popcnt");

/// Calls `$f` from the backend of `$self`.
macro_rules! dispatch {
    ($self:ident, $f:ident($($arg:expr),*)) => {
        match $self.backend {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: a `Kernels` with this backend exists only if `Backend::is_supported`
            // returned true, i.e. the CPU has every feature the function was compiled for.
            Backend::Popcnt => unsafe { popcnt::$f($($arg),*) },
            #[cfg(target_arch = "x86_64")]
            // SAFETY: as above, AVX2 and POPCNT were detected.
            Backend::Avx2 => unsafe { avx2::$f($($arg),*) },
            #[cfg(target_arch = "x86_64")]
            // SAFETY: as above, AVX-512F/BW/VPOPCNTDQ and POPCNT were detected.
            Backend::Avx512 => unsafe { avx512::$f($($arg),*) },
            _ => portable::$f($($arg),*),
        }
    };
}

impl Kernels {
    /// The kernels of `backend`, or `None` when this CPU cannot run it.
    pub fn new(backend: Backend) -> Option<Self> {
        backend.is_supported().then_some(Self { backend })
    }

    /// Which backend these kernels use.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// `dst[i] ^= src[i]` over the common length.
    #[inline]
    pub fn xor_into(&self, dst: &mut [u64], src: &[u64]) {
        let n = dst.len().min(src.len());
        let (dst, src) = (&mut dst[..n], &src[..n]);
        dispatch!(self, xor_into(dst, src))
    }

    /// Total number of one bits.
    #[inline]
    pub fn popcount(&self, words: &[u64]) -> u64 {
        dispatch!(self, popcount(words))
    }

    /// Number of one bits of `a[i] ^ b[i]` over the common length.
    #[inline]
    pub fn xor_popcount(&self, a: &[u64], b: &[u64]) -> u64 {
        let n = a.len().min(b.len());
        let (a, b) = (&a[..n], &b[..n]);
        dispatch!(self, xor_popcount(a, b))
    }

    /// XOR of all words; its popcount parity is the parity of all bits.
    ///
    /// The AVX-512 tier folds with the AVX2 code: LLVM's 512-bit version of this loop measured
    /// 5x slower than the 256-bit one (`cargo bench -p qkd-benches --bench bits -- xor_fold`:
    /// 5.4 us vs 1.1 us per 10^6 bits on an idle AMD EPYC), while XOR and popcount gain from it.
    #[inline]
    pub fn xor_fold(&self, words: &[u64]) -> u64 {
        match self.backend {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: the match guard has just checked that this CPU supports AVX2 and POPCNT,
            // every feature `avx2::xor_fold` was compiled for.
            Backend::Avx512 if Backend::Avx2.is_supported() => unsafe { avx2::xor_fold(words) },
            _ => dispatch!(self, xor_fold(words)),
        }
    }
}
