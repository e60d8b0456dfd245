//! Key confirmation: after reconciliation both sides hash their key with a fresh shared seed
//! and compare tags; a mismatch discards the block.
//!
//! The hash is an almost-universal family over GF(2^64) (modulus `x^64 + x^4 + x^3 + x + 1`):
//! the key's `L` words `m_0..m_{L-1}` and its bit length `m_L` are evaluated as a polynomial
//! at a random point `r` (Horner: `acc = (acc ^ m_i) * r`), and the tag is the top `t` bits of
//! `a * acc` for a second random element `a`. Two different keys of the same length collide
//! with probability at most `(L + 1) / 2^64 + 2^-t`: the polynomial difference has at most
//! `L + 1` roots, and for a nonzero difference `a * diff` is uniform over the field. The tag
//! length is the smallest `t` that brings this bound to `eps_cor` ([`tag_bits_for`]).
//!
//! Protocol (sans-IO): the initiator (Alice) draws `(r, a)` from a [`RandomSource`] after
//! reconciliation, sends them with her tag ([`ConfirmMessage::Challenge`]); the responder
//! (Bob) recomputes the tag and answers [`ConfirmMessage::Verdict`]. The `t` tag bits are
//! leakage, reported on their own ([`ConfirmOutcome::leaked_bits`]), not in Cascade's `f`.

use serde::{Deserialize, Serialize};

use crate::bits::BitBlock;
use crate::rng::{RandomSource, RngError};

/// Version byte of the confirmation messages' encoding.
pub const CONFIRM_WIRE_VERSION: u8 = 1;

/// Errors of key confirmation.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfirmError {
    /// `eps_cor` cannot be reached with a tag of at most 64 bits for this key length.
    #[error(
        "eps_cor = {eps_cor:e} is out of reach for a {key_bits}-bit key; expected a value in \
         ({floor:e}, 1) so that a tag of at most 64 bits suffices"
    )]
    EpsilonOutOfRange {
        /// Requested bound.
        eps_cor: f64,
        /// Key length.
        key_bits: usize,
        /// Smallest bound the family offers for this length (with a 64-bit tag).
        floor: f64,
    },
    /// The peer's challenge uses fewer tag bits than this side's `eps_cor` requires.
    #[error("challenge has a {got}-bit tag; this side requires {expected} bits")]
    TagTooShort {
        /// Tag bits in the challenge.
        got: u32,
        /// Tag bits required.
        expected: u32,
    },
    /// A message that does not decode, has another version, or comes at the wrong time.
    #[error("bad confirmation message: {0}")]
    BadMessage(String),
    /// The randomness source failed.
    #[error("cannot draw the hash seed: {0}")]
    Rng(#[from] RngError),
}

/// Seed of one hash: evaluation point `r` and multiplier `a`, both in GF(2^64).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct HashSeed {
    /// Evaluation point.
    pub r: u64,
    /// Final multiplier.
    pub a: u64,
}

impl HashSeed {
    /// Draws a fresh seed.
    pub fn draw(rng: &mut dyn RandomSource) -> Result<Self, RngError> {
        Ok(Self {
            r: rng.next_u64()?,
            a: rng.next_u64()?,
        })
    }
}

/// Reduces a 128-bit carry-less product modulo `x^64 + x^4 + x^3 + x + 1`.
#[inline]
fn reduce(hi: u64, lo: u64) -> u64 {
    let t = hi ^ (hi >> 60) ^ (hi >> 61) ^ (hi >> 63);
    lo ^ t ^ (t << 1) ^ (t << 3) ^ (t << 4)
}

/// Carry-less 64x64 -> 128-bit product, portable (the reference).
#[inline]
fn clmul_portable(a: u64, b: u64) -> (u64, u64) {
    let (mut hi, mut lo) = (0u64, 0u64);
    for i in 0..64 {
        let m = 0u64.wrapping_sub((b >> i) & 1);
        lo ^= (a << i) & m;
        if i > 0 {
            hi ^= (a >> (64 - i)) & m;
        }
    }
    (hi, lo)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "pclmulqdq,sse2")]
fn clmul_pclmul(a: u64, b: u64) -> (u64, u64) {
    use std::arch::x86_64::*;
    let p = _mm_clmulepi64_si128(_mm_cvtsi64_si128(a as i64), _mm_cvtsi64_si128(b as i64), 0);
    let lo = _mm_cvtsi128_si64(p) as u64;
    let hi = _mm_cvtsi128_si64(_mm_unpackhi_epi64(p, p)) as u64;
    (hi, lo)
}

/// Polynomial evaluation of `words` then `len` at `r`, with `mul` as the field product.
#[inline(always)]
fn poly(words: &[u64], len: u64, r: u64, clmul: impl Fn(u64, u64) -> (u64, u64)) -> u64 {
    let mul = |x: u64, y: u64| {
        let (h, l) = clmul(x, y);
        reduce(h, l)
    };
    let mut acc = 0u64;
    for &w in words {
        acc = mul(acc ^ w, r);
    }
    mul(acc ^ len, r)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "pclmulqdq,sse2")]
fn poly_pclmul(words: &[u64], len: u64, r: u64) -> u64 {
    poly(words, len, r, |x, y| clmul_pclmul(x, y))
}

fn has_pclmul() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("pclmulqdq")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

fn hash_words(words: &[u64], len: u64, r: u64, portable: bool) -> u64 {
    #[cfg(target_arch = "x86_64")]
    if !portable && has_pclmul() {
        // SAFETY: the CPU supports PCLMULQDQ (checked just above) and SSE2 (x86-64 baseline).
        return unsafe { poly_pclmul(words, len, r) };
    }
    let _ = portable;
    poly(words, len, r, clmul_portable)
}

/// Product in GF(2^64) (portable; for tests and the occasional single product).
pub fn gf64_mul(a: u64, b: u64) -> u64 {
    let (h, l) = clmul_portable(a, b);
    reduce(h, l)
}

/// The `bits`-bit tag (1..=64) of `key` under `seed`, in the low bits of the result.
pub fn tag(key: &BitBlock, seed: &HashSeed, bits: u32) -> u64 {
    tag_impl(key, seed, bits, false)
}

fn tag_impl(key: &BitBlock, seed: &HashSeed, bits: u32, portable: bool) -> u64 {
    let bits = bits.clamp(1, 64);
    let h = hash_words(key.words(), key.len() as u64, seed.r, portable);
    gf64_mul(seed.a, h) >> (64 - bits)
}

/// Collision bound of a `t`-bit tag on `key_bits`-bit keys: `(L + 1) / 2^64 + 2^-t`.
pub fn collision_bound(key_bits: usize, t: u32) -> f64 {
    let l = key_bits.div_ceil(64) as f64;
    (l + 1.0) * (-64f64).exp2() + (-f64::from(t)).exp2()
}

/// The shortest tag whose collision bound is at most `eps_cor` for `key_bits`-bit keys.
///
/// Computed exactly in integers: `(L + 1) + 2^(64 - t) <= floor(eps_cor * 2^64)`.
pub fn tag_bits_for(eps_cor: f64, key_bits: usize) -> Result<u32, ConfirmError> {
    let err = || ConfirmError::EpsilonOutOfRange {
        eps_cor,
        key_bits,
        floor: collision_bound(key_bits, 64),
    };
    if !(eps_cor > 0.0 && eps_cor < 1.0) {
        return Err(err());
    }
    // eps_cor * 2^64 is exact (a power-of-two scaling); the cast truncates, i.e. floors.
    let budget = (eps_cor * 18_446_744_073_709_551_616.0) as u128;
    let roots = key_bits.div_ceil(64) as u128 + 1;
    (1..=64u32)
        .find(|&t| roots + (1u128 << (64 - t)) <= budget)
        .ok_or_else(err)
}

/// Confirmation messages.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum ConfirmMessage {
    /// Initiator -> responder: the fresh seed and the initiator's tag.
    Challenge {
        /// Hash seed.
        seed: HashSeed,
        /// Tag length in bits.
        tag_bits: u32,
        /// The initiator's tag.
        tag: u64,
    },
    /// Responder -> initiator: whether the tags matched.
    Verdict {
        /// True when the tags matched.
        matched: bool,
    },
}

impl ConfirmMessage {
    /// Wire encoding: version byte then postcard.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = vec![CONFIRM_WIRE_VERSION];
        match postcard::to_io(self, &mut out) {
            Ok(_) => out,
            Err(_) => unreachable!("writing to a Vec cannot fail"),
        }
    }

    /// Decodes one message, rejecting another version and trailing bytes.
    pub fn decode(bytes: &[u8]) -> Result<Self, ConfirmError> {
        match bytes.split_first() {
            Some((&CONFIRM_WIRE_VERSION, body)) => match postcard::take_from_bytes(body) {
                Ok((m, [])) => Ok(m),
                Ok(_) => Err(ConfirmError::BadMessage("trailing bytes".into())),
                Err(e) => Err(ConfirmError::BadMessage(e.to_string())),
            },
            Some((v, _)) => Err(ConfirmError::BadMessage(format!(
                "wire version {v}; expected {CONFIRM_WIRE_VERSION}"
            ))),
            None => Err(ConfirmError::BadMessage("empty message".into())),
        }
    }
}

/// Result of a confirmation, the same on both sides.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ConfirmOutcome {
    /// True when the tags matched; false means the block must be discarded.
    pub matched: bool,
    /// Tag bits disclosed (leakage of the confirmation, reported apart from Cascade's).
    pub leaked_bits: u32,
}

/// The side that draws the seed and sends its tag (Alice).
#[derive(Debug)]
pub struct ConfirmInitiator {
    tag_bits: u32,
    done: bool,
}

impl ConfirmInitiator {
    /// Draws a fresh seed from `rng`, tags `key` and returns the challenge to send.
    pub fn start(
        key: &BitBlock,
        eps_cor: f64,
        rng: &mut dyn RandomSource,
    ) -> Result<(Self, ConfirmMessage), ConfirmError> {
        let tag_bits = tag_bits_for(eps_cor, key.len())?;
        let seed = HashSeed::draw(rng)?;
        let msg = ConfirmMessage::Challenge {
            seed,
            tag_bits,
            tag: tag(key, &seed, tag_bits),
        };
        Ok((
            Self {
                tag_bits,
                done: false,
            },
            msg,
        ))
    }

    /// Reads the responder's verdict.
    pub fn finish(&mut self, msg: ConfirmMessage) -> Result<ConfirmOutcome, ConfirmError> {
        match msg {
            ConfirmMessage::Verdict { matched } if !self.done => {
                self.done = true;
                Ok(ConfirmOutcome {
                    matched,
                    leaked_bits: self.tag_bits,
                })
            }
            other => Err(ConfirmError::BadMessage(format!(
                "expected one Verdict, got {other:?}"
            ))),
        }
    }
}

/// The side that checks the tag (Bob): recomputes it and answers with the verdict.
pub fn respond(
    key: &BitBlock,
    eps_cor: f64,
    msg: ConfirmMessage,
) -> Result<(ConfirmMessage, ConfirmOutcome), ConfirmError> {
    let need = tag_bits_for(eps_cor, key.len())?;
    let ConfirmMessage::Challenge {
        seed,
        tag_bits,
        tag: theirs,
    } = msg
    else {
        return Err(ConfirmError::BadMessage("expected a Challenge".into()));
    };
    if tag_bits < need || tag_bits > 64 {
        return Err(ConfirmError::TagTooShort {
            got: tag_bits,
            expected: need,
        });
    }
    let matched = tag(key, &seed, tag_bits) == theirs;
    Ok((
        ConfirmMessage::Verdict { matched },
        ConfirmOutcome {
            matched,
            leaked_bits: tag_bits,
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::SeededRandom;

    #[test]
    fn field_product_is_a_field_product() {
        let mut rng = SeededRandom::from_u64(1);
        for _ in 0..200 {
            let (a, b, c) = (rng.u64(), rng.u64(), rng.u64());
            assert_eq!(gf64_mul(a, 1), a);
            assert_eq!(gf64_mul(a, b), gf64_mul(b, a));
            assert_eq!(gf64_mul(gf64_mul(a, b), c), gf64_mul(a, gf64_mul(b, c)));
            assert_eq!(gf64_mul(a, b ^ c), gf64_mul(a, b) ^ gf64_mul(a, c));
            #[cfg(target_arch = "x86_64")]
            if has_pclmul() {
                // SAFETY: PCLMULQDQ is supported (checked).
                assert_eq!(unsafe { clmul_pclmul(a, b) }, clmul_portable(a, b));
            }
        }
        // x * x^63 = x^64 = x^4 + x^3 + x + 1.
        assert_eq!(gf64_mul(2, 1 << 63), 0x1b);
        // Frobenius: a^(2^64) = a for every a only if the modulus is irreducible.
        for _ in 0..20 {
            let a = rng.u64();
            let mut x = a;
            for _ in 0..64 {
                x = gf64_mul(x, x);
            }
            assert_eq!(x, a);
        }
    }

    #[test]
    fn tag_length_from_eps_cor_by_hand() {
        // 16384 bits: L = 256, floor (257 / 2^64) is about 1.4e-17, negligible next to 1e-12:
        // 2^-40 = 9.09e-13 <= 1e-12 < 2^-39, so 40 bits.
        assert_eq!(tag_bits_for(1e-12, 16384).unwrap(), 40);
        // Exactly 2^-20 is not enough for 20 bits (the polynomial term adds a little): 21.
        assert_eq!(tag_bits_for((-20f64).exp2(), 16384).unwrap(), 21);
        assert_eq!(tag_bits_for(0.5, 64).unwrap(), 2);
        assert!(tag_bits_for(1e-30, 16384).is_err());
        assert!(tag_bits_for(1.0, 16384).is_err());
        assert!(tag_bits_for(f64::NAN, 16384).is_err());
    }

    #[test]
    fn equal_keys_accept_and_one_bit_differences_reject() {
        let mut rng = SeededRandom::from_u64(2);
        for i in 0..300 {
            let n = 1 + (rng.below(5000) as usize);
            let words: Vec<u64> = (0..n.div_ceil(64)).map(|_| rng.u64()).collect();
            let alice = BitBlock::from_words(words, n).unwrap();
            let mut bob = alice.clone();
            let (mut init, challenge) = ConfirmInitiator::start(&alice, 1e-9, &mut rng).unwrap();
            let wire = ConfirmMessage::decode(&challenge.encode()).unwrap();
            let (verdict, out) = respond(&bob, 1e-9, wire.clone()).unwrap();
            assert!(out.matched);
            assert_eq!(out.leaked_bits, 30);
            assert!(init.finish(verdict).unwrap().matched);
            bob.flip(rng.below(n as u64) as usize).unwrap();
            let (_, out) = respond(&bob, 1e-9, wire.clone()).unwrap();
            assert!(!out.matched, "collision at iteration {i}");
            // The portable path agrees with the dispatched one.
            if let ConfirmMessage::Challenge { seed, .. } = wire {
                assert_eq!(tag_impl(&alice, &seed, 64, true), tag(&alice, &seed, 64));
            }
        }
    }

    #[test]
    fn bad_messages_are_errors() {
        let key = BitBlock::zeros(100);
        assert!(ConfirmMessage::decode(&[]).is_err());
        assert!(ConfirmMessage::decode(&[9, 0]).is_err());
        let mut rng = SeededRandom::from_u64(3);
        let (_, ch) = ConfirmInitiator::start(&key, 1e-3, &mut rng).unwrap();
        // A responder with a stricter policy refuses the short tag.
        assert!(matches!(
            respond(&key, 1e-12, ch.clone()),
            Err(ConfirmError::TagTooShort { .. })
        ));
        assert!(respond(&key, 1e-3, ConfirmMessage::Verdict { matched: true }).is_err());
        for _ in 0..500 {
            let mut b = vec![0u8; rng.below(40) as usize];
            rng.bytes(&mut b);
            if let Ok(m) = ConfirmMessage::decode(&b) {
                let _ = respond(&key, 1e-3, m);
            }
        }
    }
}
