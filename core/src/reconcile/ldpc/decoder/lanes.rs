//! The lane vectors the min-sum decoder works on: one `i8` message per check, `WIDTH`
//! consecutive checks per vector, with the same arithmetic on every backend so that they
//! decode bit for bit alike.
//!
//! - [`Portable`]: `wide::i8x32` (SSE2 on a baseline x86-64 build, NEON on aarch64).
//! - [`Avx2`]: `__m256i`, 32 checks.
//! - [`Avx512`]: `__m512i` with mask registers, 64 checks (AVX-512BW).
//!
//! `wide` picks its instructions when the crate is compiled, so it cannot dispatch at run
//! time; the AVX2 and AVX-512 lanes are therefore `std::arch` vectors, used only from
//! functions compiled with those features ([`super::Backend`] checks the CPU first). Every
//! operation is `#[inline(always)]` so that it is compiled inside the caller's
//! `#[target_feature]` function.
//!
//! Values are kept in `-127..=127` by the decoder (it clamps after each saturating add or
//! subtract), so `abs` never overflows and magnitudes compare as signed bytes.

/// One backend's lane vector and its operations.
///
/// # Safety
/// Implementations for `std::arch` vectors may only be used on CPUs with their features;
/// every method is `unsafe` for that reason.
pub(crate) unsafe trait Lanes: Copy + Send + Sync + 'static {
    /// Frames per vector.
    const WIDTH: usize;
    /// A lanewise condition.
    type Mask: Copy;

    /// Every lane `x`.
    unsafe fn splat(x: i8) -> Self;
    /// Lanewise saturating `a + b`.
    unsafe fn adds(self, b: Self) -> Self;
    /// Lanewise saturating `a - b`.
    unsafe fn subs(self, b: Self) -> Self;
    /// Lanewise signed maximum.
    unsafe fn max(self, b: Self) -> Self;
    /// Lanewise signed minimum.
    unsafe fn min(self, b: Self) -> Self;
    /// Lanewise absolute value (inputs above `-128`).
    unsafe fn abs(self) -> Self;
    /// Bitwise exclusive or.
    unsafe fn xor(self, b: Self) -> Self;
    /// `self <= b`, signed.
    unsafe fn le(self, b: Self) -> Self::Mask;
    /// `self == b`.
    unsafe fn eq(self, b: Self) -> Self::Mask;
    /// `if_true` where `m` holds, else `self`.
    unsafe fn select(self, m: Self::Mask, if_true: Self) -> Self;
    /// `-self` in the lanes where `sign` is negative, `self` elsewhere (`self >= 0`).
    unsafe fn negate_where_negative(self, sign: Self) -> Self;
    /// `self >> k` for non-negative lanes (`k < 8`).
    unsafe fn shr(self, k: u32) -> Self;
    /// Bit `i` set iff lane `i` is negative.
    unsafe fn sign_bits(self) -> u64;
    /// Lane `i` is -1 if bit `i` of `bits` is set, else 0 (the inverse of
    /// [`Lanes::sign_bits`] up to magnitudes).
    unsafe fn from_sign_bits(bits: u64) -> Self;
    /// The condition "lane `i`'s bit of `bits` is set".
    unsafe fn mask_from_bits(bits: u64) -> Self::Mask;
    /// Bit `i` set iff the condition holds in lane `i` (the inverse of
    /// [`Lanes::mask_from_bits`]).
    unsafe fn mask_bits(m: Self::Mask) -> u64;
    /// From the first `WIDTH` bytes of `bytes` (lane `i` from byte `i`).
    unsafe fn from_slice(bytes: &[i8]) -> Self;
    /// From the `WIDTH` bytes at `p`, which must be readable (the decoder's inner loop, where
    /// slicing cost a bounds check per load).
    unsafe fn load(p: *const i8) -> Self;
    /// Into the `WIDTH` bytes at `p`, which must be writable.
    unsafe fn store(self, p: *mut i8);
}

/// The portable lanes.
pub(crate) type Portable = wide::i8x32;

// SAFETY: wide's vectors need no CPU feature beyond the compile-time target.
unsafe impl Lanes for Portable {
    const WIDTH: usize = 32;
    type Mask = wide::i8x32;

    #[inline(always)]
    unsafe fn splat(x: i8) -> Self {
        wide::i8x32::splat(x)
    }
    #[inline(always)]
    unsafe fn adds(self, b: Self) -> Self {
        self.saturating_add(b)
    }
    #[inline(always)]
    unsafe fn subs(self, b: Self) -> Self {
        self.saturating_sub(b)
    }
    #[inline(always)]
    unsafe fn max(self, b: Self) -> Self {
        wide::i8x32::max(self, b)
    }
    #[inline(always)]
    unsafe fn min(self, b: Self) -> Self {
        wide::i8x32::min(self, b)
    }
    #[inline(always)]
    unsafe fn abs(self) -> Self {
        wide::i8x32::abs(self)
    }
    #[inline(always)]
    unsafe fn xor(self, b: Self) -> Self {
        self ^ b
    }
    #[inline(always)]
    unsafe fn le(self, b: Self) -> Self::Mask {
        !self.simd_gt(b)
    }
    #[inline(always)]
    unsafe fn eq(self, b: Self) -> Self::Mask {
        self.simd_eq(b)
    }
    #[inline(always)]
    unsafe fn select(self, m: Self::Mask, if_true: Self) -> Self {
        m.select(if_true, self)
    }
    #[inline(always)]
    unsafe fn negate_where_negative(self, sign: Self) -> Self {
        sign.is_negative().select(-self, self)
    }
    #[inline(always)]
    unsafe fn shr(self, k: u32) -> Self {
        self >> k
    }
    #[inline(always)]
    unsafe fn sign_bits(self) -> u64 {
        u64::from(self.is_negative().to_bitmask())
    }
    #[inline(always)]
    unsafe fn from_sign_bits(bits: u64) -> Self {
        // Lane i holds byte i / 8 of `bits`, then tests its bit i % 8.
        let b = (bits as u32).to_le_bytes();
        let spread = wide::i8x32::new(std::array::from_fn(|i| b[i / 8] as i8));
        let bit = wide::i8x32::new(std::array::from_fn(|i| (1u8 << (i % 8)) as i8));
        (spread & bit).simd_eq(bit)
    }
    #[inline(always)]
    unsafe fn mask_from_bits(bits: u64) -> Self::Mask {
        // SAFETY: no CPU feature needed.
        unsafe { Self::from_sign_bits(bits) }
    }
    #[inline(always)]
    unsafe fn mask_bits(m: Self::Mask) -> u64 {
        // SAFETY: no CPU feature needed.
        unsafe { m.sign_bits() }
    }
    #[inline(always)]
    unsafe fn from_slice(bytes: &[i8]) -> Self {
        let mut a = [0i8; 32];
        a.copy_from_slice(&bytes[..32]);
        wide::i8x32::new(a)
    }
    #[inline(always)]
    unsafe fn load(p: *const i8) -> Self {
        // SAFETY: the caller guarantees 32 readable bytes at `p`; unaligned read.
        unsafe { p.cast::<Self>().read_unaligned() }
    }
    #[inline(always)]
    unsafe fn store(self, p: *mut i8) {
        // SAFETY: the caller guarantees 32 writable bytes at `p`; unaligned write.
        unsafe { p.cast::<Self>().write_unaligned(self) }
    }
}

#[cfg(target_arch = "x86_64")]
pub(crate) use x86::{Avx2, Avx512};

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use super::Lanes;

    /// AVX2 lanes.
    #[derive(Clone, Copy, Debug)]
    #[repr(transparent)]
    pub(crate) struct Avx2(__m256i);

    // SAFETY: every method compiles to AVX2 instructions; the decoder calls them only from
    // `#[target_feature(enable = "avx2")]` functions after checking the CPU.
    unsafe impl Lanes for Avx2 {
        const WIDTH: usize = 32;
        type Mask = __m256i;

        #[inline(always)]
        unsafe fn splat(x: i8) -> Self {
            // SAFETY: AVX2 present (trait contract).
            Self(unsafe { _mm256_set1_epi8(x) })
        }
        #[inline(always)]
        unsafe fn adds(self, b: Self) -> Self {
            // SAFETY: as above.
            Self(unsafe { _mm256_adds_epi8(self.0, b.0) })
        }
        #[inline(always)]
        unsafe fn subs(self, b: Self) -> Self {
            // SAFETY: as above.
            Self(unsafe { _mm256_subs_epi8(self.0, b.0) })
        }
        #[inline(always)]
        unsafe fn max(self, b: Self) -> Self {
            // SAFETY: as above.
            Self(unsafe { _mm256_max_epi8(self.0, b.0) })
        }
        #[inline(always)]
        unsafe fn min(self, b: Self) -> Self {
            // SAFETY: as above.
            Self(unsafe { _mm256_min_epi8(self.0, b.0) })
        }
        #[inline(always)]
        unsafe fn abs(self) -> Self {
            // SAFETY: as above.
            Self(unsafe { _mm256_abs_epi8(self.0) })
        }
        #[inline(always)]
        unsafe fn xor(self, b: Self) -> Self {
            // SAFETY: as above.
            Self(unsafe { _mm256_xor_si256(self.0, b.0) })
        }
        #[inline(always)]
        unsafe fn le(self, b: Self) -> __m256i {
            // SAFETY: as above. a <= b is not (a > b).
            unsafe { _mm256_xor_si256(_mm256_cmpgt_epi8(self.0, b.0), _mm256_set1_epi8(-1)) }
        }
        #[inline(always)]
        unsafe fn eq(self, b: Self) -> __m256i {
            // SAFETY: as above.
            unsafe { _mm256_cmpeq_epi8(self.0, b.0) }
        }
        #[inline(always)]
        unsafe fn select(self, m: __m256i, if_true: Self) -> Self {
            // SAFETY: as above.
            Self(unsafe { _mm256_blendv_epi8(self.0, if_true.0, m) })
        }
        #[inline(always)]
        unsafe fn negate_where_negative(self, sign: Self) -> Self {
            // SAFETY: as above. `sign | 1` is never zero, so vpsignb negates or keeps.
            Self(unsafe { _mm256_sign_epi8(self.0, _mm256_or_si256(sign.0, _mm256_set1_epi8(1))) })
        }
        #[inline(always)]
        unsafe fn shr(self, k: u32) -> Self {
            // SAFETY: as above. A 16-bit shift, then the bits shifted in from the high byte
            // masked off.
            unsafe {
                let shifted = _mm256_srl_epi16(self.0, _mm_cvtsi32_si128(k as i32));
                Self(_mm256_and_si256(
                    shifted,
                    _mm256_set1_epi8((0xffu8 >> k) as i8),
                ))
            }
        }
        #[inline(always)]
        unsafe fn sign_bits(self) -> u64 {
            // SAFETY: as above.
            u64::from(unsafe { _mm256_movemask_epi8(self.0) } as u32)
        }
        #[inline(always)]
        unsafe fn from_sign_bits(bits: u64) -> Self {
            // SAFETY: as above. Every 32-bit group holds `bits`; the shuffle gives lane i byte
            // i / 8 (lanes 16-31 read bytes 2 and 3 of their 128-bit half), the compare tests
            // bit i % 8.
            unsafe {
                let spread = _mm256_shuffle_epi8(
                    _mm256_set1_epi32(bits as u32 as i32),
                    _mm256_setr_epi8(
                        0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2, 2, 2, 3,
                        3, 3, 3, 3, 3, 3, 3,
                    ),
                );
                let bit = _mm256_set1_epi64x(0x8040_2010_0804_0201_u64 as i64);
                Self(_mm256_cmpeq_epi8(_mm256_and_si256(spread, bit), bit))
            }
        }
        #[inline(always)]
        unsafe fn mask_from_bits(bits: u64) -> __m256i {
            // SAFETY: AVX2 present (trait contract).
            unsafe { Self::from_sign_bits(bits).0 }
        }
        #[inline(always)]
        unsafe fn mask_bits(m: __m256i) -> u64 {
            // SAFETY: as above.
            unsafe { Self(m).sign_bits() }
        }
        #[inline(always)]
        unsafe fn from_slice(bytes: &[i8]) -> Self {
            assert!(bytes.len() >= 32);
            // SAFETY: AVX2 present; `bytes` has 32 bytes (checked); unaligned load.
            Self(unsafe { _mm256_loadu_si256(bytes.as_ptr().cast()) })
        }
        #[inline(always)]
        unsafe fn load(p: *const i8) -> Self {
            // SAFETY: AVX2 present; the caller guarantees 32 readable bytes at `p`.
            Self(unsafe { _mm256_loadu_si256(p.cast()) })
        }
        #[inline(always)]
        unsafe fn store(self, p: *mut i8) {
            // SAFETY: AVX2 present; the caller guarantees 32 writable bytes at `p`.
            unsafe { _mm256_storeu_si256(p.cast(), self.0) }
        }
    }

    /// AVX-512BW lanes.
    #[derive(Clone, Copy, Debug)]
    #[repr(transparent)]
    pub(crate) struct Avx512(__m512i);

    // SAFETY: every method compiles to AVX-512F/BW instructions; the decoder calls them only
    // from `#[target_feature(enable = "avx512f,avx512bw")]` functions after checking the CPU.
    unsafe impl Lanes for Avx512 {
        const WIDTH: usize = 64;
        type Mask = __mmask64;

        #[inline(always)]
        unsafe fn splat(x: i8) -> Self {
            // SAFETY: AVX-512BW present (trait contract).
            Self(unsafe { _mm512_set1_epi8(x) })
        }
        #[inline(always)]
        unsafe fn adds(self, b: Self) -> Self {
            // SAFETY: as above.
            Self(unsafe { _mm512_adds_epi8(self.0, b.0) })
        }
        #[inline(always)]
        unsafe fn subs(self, b: Self) -> Self {
            // SAFETY: as above.
            Self(unsafe { _mm512_subs_epi8(self.0, b.0) })
        }
        #[inline(always)]
        unsafe fn max(self, b: Self) -> Self {
            // SAFETY: as above.
            Self(unsafe { _mm512_max_epi8(self.0, b.0) })
        }
        #[inline(always)]
        unsafe fn min(self, b: Self) -> Self {
            // SAFETY: as above.
            Self(unsafe { _mm512_min_epi8(self.0, b.0) })
        }
        #[inline(always)]
        unsafe fn abs(self) -> Self {
            // SAFETY: as above.
            Self(unsafe { _mm512_abs_epi8(self.0) })
        }
        #[inline(always)]
        unsafe fn xor(self, b: Self) -> Self {
            // SAFETY: as above.
            Self(unsafe { _mm512_xor_si512(self.0, b.0) })
        }
        #[inline(always)]
        unsafe fn le(self, b: Self) -> __mmask64 {
            // SAFETY: as above.
            unsafe { _mm512_cmple_epi8_mask(self.0, b.0) }
        }
        #[inline(always)]
        unsafe fn eq(self, b: Self) -> __mmask64 {
            // SAFETY: as above.
            unsafe { _mm512_cmpeq_epi8_mask(self.0, b.0) }
        }
        #[inline(always)]
        unsafe fn select(self, m: __mmask64, if_true: Self) -> Self {
            // SAFETY: as above.
            Self(unsafe { _mm512_mask_blend_epi8(m, self.0, if_true.0) })
        }
        #[inline(always)]
        unsafe fn negate_where_negative(self, sign: Self) -> Self {
            // SAFETY: as above.
            unsafe {
                let negative = _mm512_movepi8_mask(sign.0);
                Self(_mm512_mask_sub_epi8(
                    self.0,
                    negative,
                    _mm512_setzero_si512(),
                    self.0,
                ))
            }
        }
        #[inline(always)]
        unsafe fn shr(self, k: u32) -> Self {
            // SAFETY: as above; see the AVX2 shift.
            unsafe {
                let shifted = _mm512_srl_epi16(self.0, _mm_cvtsi32_si128(k as i32));
                Self(_mm512_and_si512(
                    shifted,
                    _mm512_set1_epi8((0xffu8 >> k) as i8),
                ))
            }
        }
        #[inline(always)]
        unsafe fn sign_bits(self) -> u64 {
            // SAFETY: as above.
            unsafe { _mm512_movepi8_mask(self.0) }
        }
        #[inline(always)]
        unsafe fn from_sign_bits(bits: u64) -> Self {
            // SAFETY: as above.
            Self(unsafe { _mm512_movm_epi8(bits) })
        }
        #[inline(always)]
        unsafe fn mask_from_bits(bits: u64) -> __mmask64 {
            bits
        }
        #[inline(always)]
        unsafe fn mask_bits(m: __mmask64) -> u64 {
            m
        }
        #[inline(always)]
        unsafe fn from_slice(bytes: &[i8]) -> Self {
            assert!(bytes.len() >= 64);
            // SAFETY: AVX-512F present; `bytes` has 64 bytes (checked); unaligned load.
            Self(unsafe { _mm512_loadu_si512(bytes.as_ptr().cast()) })
        }
        #[inline(always)]
        unsafe fn load(p: *const i8) -> Self {
            // SAFETY: AVX-512F present; the caller guarantees 64 readable bytes at `p`.
            Self(unsafe { _mm512_loadu_si512(p.cast()) })
        }
        #[inline(always)]
        unsafe fn store(self, p: *mut i8) {
            // SAFETY: AVX-512F present; the caller guarantees 64 writable bytes at `p`.
            unsafe { _mm512_storeu_si512(p.cast(), self.0) }
        }
    }
}
