//! Key confirmation: after reconciliation both sides hash their key with a fresh shared seed
//! and compare tags; a mismatch discards the block.
//!
//! The hash is an almost-universal family over GF(2^128) (modulus `x^128 + x^7 + x^2 + x + 1`,
//! plain bit order: bit `i` of a `u128` is the coefficient of `x^i`): the key is cut into
//! `L = ceil(bits / 128)` blocks `m_0..m_{L-1}` (block `j` holds key bits `128 j ..
//! 128 j + 127`, the last one zero-padded), its bit length is appended as a final block `m_L`,
//! and the `L + 1` blocks are evaluated as a polynomial at a random point `r` (Horner:
//! `acc = (acc ^ m_i) * r`, so `acc = sum_i m_i r^(L + 1 - i)`). The tag is the top `t` bits of
//! `a * acc` for a second random element `a`.
//!
//! Two different keys of the same length collide with probability at most
//! `(L + 1) / 2^128 + 2^-t` over the seed: either the two polynomial values are equal, which
//! happens for at most `L + 1` values of `r` (their difference is a nonzero polynomial of degree
//! at most `L + 1` without a constant term, so `r = 0` and at most `L` further roots), or they
//! differ by some `d != 0`, and then `a * d` is uniform over the field when `a` is, so the top
//! `t` bits of the two products agree with probability `2^-t`. (Keys of different lengths
//! differ in the coefficient of `r^1`, the length block, so the difference is nonzero too.)
//! The tag length is the smallest `t` that brings this bound to `eps_cor` ([`tag_bits_for`]);
//! keys up to [`MAX_KEY_BITS`] bits are accepted, where the polynomial term is at most
//! `(2^23 + 1) / 2^128`, about `2.5e-32`.
//!
//! The field arithmetic and the polynomial evaluation (PCLMULQDQ with run-time dispatch,
//! aggregated Horner) live in [`crate::gf128`], shared with transcript authentication.
//!
//! Protocol (sans-IO): the initiator (Alice) draws `(r, a)` from a [`RandomSource`] after
//! reconciliation, sends them with her tag ([`ConfirmMessage::Challenge`]); the responder
//! (Bob) recomputes the tag and answers [`ConfirmMessage::Verdict`]. The `t` tag bits are
//! leakage, reported on their own ([`ConfirmOutcome::leaked_bits`]), not in Cascade's `f`.

use serde::{Deserialize, Serialize};

use crate::bits::BitBlock;
use crate::gf128::{gf128_mul, poly_hash};
use crate::rng::{RandomSource, RngError};

/// Version byte of the confirmation messages' encoding (2: GF(2^128) seeds and tags).
pub const CONFIRM_WIRE_VERSION: u8 = 2;

/// Longest key confirmation accepts, in bits.
pub const MAX_KEY_BITS: usize = 1 << 30;

/// Longest tag, in bits (a whole field element).
pub const MAX_TAG_BITS: u32 = 128;

/// `2^128` as an `f64` (exact).
const TWO_POW_128: f64 = 340_282_366_920_938_463_463_374_607_431_768_211_456.0;

/// Errors of key confirmation.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfirmError {
    /// `eps_cor` cannot be reached with a tag of at most 128 bits for this key length.
    #[error(
        "eps_cor = {eps_cor:e} is out of reach for a {key_bits}-bit key; expected a value in \
         [{floor:e}, 1) so that a tag of at most 128 bits suffices"
    )]
    EpsilonOutOfRange {
        /// Requested bound.
        eps_cor: f64,
        /// Key length.
        key_bits: usize,
        /// Smallest bound the family offers for this length (with a 128-bit tag).
        floor: f64,
    },
    /// The key is longer than confirmation supports.
    #[error("a {key_bits}-bit key is too long to confirm; expected at most {max_bits} bits")]
    KeyTooLong {
        /// Key length.
        key_bits: usize,
        /// Longest key accepted ([`MAX_KEY_BITS`]).
        max_bits: usize,
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

/// Seed of one hash: evaluation point `r` and multiplier `a`, both in GF(2^128).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct HashSeed {
    /// Evaluation point.
    pub r: u128,
    /// Final multiplier.
    pub a: u128,
}

impl HashSeed {
    /// Draws a fresh seed.
    pub fn draw(rng: &mut dyn RandomSource) -> Result<Self, RngError> {
        let mut b = [0u8; 32];
        rng.fill(&mut b)?;
        let (r, a) = b.split_at(16);
        let elem = |s: &[u8]| {
            let mut e = [0u8; 16];
            e.copy_from_slice(s);
            u128::from_le_bytes(e)
        };
        Ok(Self {
            r: elem(r),
            a: elem(a),
        })
    }
}

/// Number of 128-bit blocks of a `bits`-bit key (the length block not included).
#[inline]
fn key_blocks(bits: usize) -> usize {
    bits.div_ceil(128)
}

/// The words of `key` that hold its bits (all of them, by the block's invariant).
fn key_words(key: &BitBlock) -> &[u64] {
    let w = key.words();
    w.get(..key.len().div_ceil(64)).unwrap_or(w)
}

/// The `bits`-bit tag (1..=128, clamped) of `key` under `seed`, in the low bits of the result.
pub fn tag(key: &BitBlock, seed: &HashSeed, bits: u32) -> u128 {
    tag_impl(key, seed, bits, false)
}

fn tag_impl(key: &BitBlock, seed: &HashSeed, bits: u32, portable: bool) -> u128 {
    let bits = bits.clamp(1, MAX_TAG_BITS);
    let h = poly_hash(key_words(key), key.len() as u64, seed.r, portable);
    gf128_mul(seed.a, h) >> (MAX_TAG_BITS - bits)
}

/// Collision bound of a `t`-bit tag on `key_bits`-bit keys: `(L + 1) / 2^128 + 2^-t` with
/// `L = ceil(key_bits / 128)`.
pub fn collision_bound(key_bits: usize, t: u32) -> f64 {
    let l = key_blocks(key_bits) as f64;
    (l + 1.0) / TWO_POW_128 + (-f64::from(t)).exp2()
}

/// The shortest tag (1..=128 bits) whose collision bound is at most `eps_cor` for
/// `key_bits`-bit keys.
///
/// Computed exactly in integers: `(L + 1) + 2^(128 - t) <= floor(eps_cor * 2^128)`. Keys
/// longer than [`MAX_KEY_BITS`] are refused ([`ConfirmError::KeyTooLong`]), and so is an
/// `eps_cor` outside `[(L + 2) / 2^128, 1)` ([`ConfirmError::EpsilonOutOfRange`]).
pub fn tag_bits_for(eps_cor: f64, key_bits: usize) -> Result<u32, ConfirmError> {
    if key_bits > MAX_KEY_BITS {
        return Err(ConfirmError::KeyTooLong {
            key_bits,
            max_bits: MAX_KEY_BITS,
        });
    }
    let err = || ConfirmError::EpsilonOutOfRange {
        eps_cor,
        key_bits,
        floor: collision_bound(key_bits, MAX_TAG_BITS),
    };
    if !(eps_cor > 0.0 && eps_cor < 1.0) {
        return Err(err());
    }
    // eps_cor * 2^128 is exact (a power-of-two scaling, with no overflow and no subnormal
    // result for eps_cor in (0, 1)) and below 2^128, so it fits a u128; the cast truncates,
    // i.e. floors, and an integer is <= a real number exactly when it is <= its floor.
    let budget = (eps_cor * TWO_POW_128) as u128;
    let roots = key_blocks(key_bits) as u128 + 1;
    (1..=MAX_TAG_BITS)
        .find(|&t| roots + (1u128 << (MAX_TAG_BITS - t)) <= budget)
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
        /// Tag length in bits (1..=128).
        tag_bits: u32,
        /// The initiator's tag, in the low `tag_bits` bits.
        tag: u128,
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
///
/// A challenge whose tag is longer than 128 bits or does not fit its length is a
/// [`ConfirmError::BadMessage`]; one shorter than `eps_cor` needs is
/// [`ConfirmError::TagTooShort`].
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
    if tag_bits > MAX_TAG_BITS {
        return Err(ConfirmError::BadMessage(format!(
            "challenge has a {tag_bits}-bit tag; expected at most {MAX_TAG_BITS} bits"
        )));
    }
    if tag_bits < need {
        return Err(ConfirmError::TagTooShort {
            got: tag_bits,
            expected: need,
        });
    }
    if tag_bits < MAX_TAG_BITS && theirs >> tag_bits != 0 {
        return Err(ConfirmError::BadMessage(format!(
            "the tag does not fit in its {tag_bits} bits"
        )));
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

    fn u128_of(rng: &mut SeededRandom) -> u128 {
        (u128::from(rng.u64()) << 64) | u128::from(rng.u64())
    }

    fn random_key(rng: &mut SeededRandom, n: usize) -> BitBlock {
        let words: Vec<u64> = (0..n.div_ceil(64)).map(|_| rng.u64()).collect();
        BitBlock::from_words(words, n).unwrap()
    }

    #[test]
    fn portable_and_dispatched_tags_agree() {
        let mut rng = SeededRandom::from_u64(4);
        let key = random_key(&mut rng, (1 << 20) + 77);
        let seed = HashSeed {
            r: u128_of(&mut rng),
            a: u128_of(&mut rng),
        };
        assert_eq!(tag_impl(&key, &seed, 128, true), tag(&key, &seed, 128));
        assert_eq!(tag(&key, &seed, 50), tag(&key, &seed, 128) >> 78);
    }

    #[test]
    fn tag_length_from_eps_cor_by_hand() {
        // 16384 bits: L = 128, floor (129 / 2^128) is about 3.8e-37, negligible next to 1e-12:
        // 2^-40 = 9.09e-13 <= 1e-12 < 2^-39, so 40 bits.
        assert_eq!(tag_bits_for(1e-12, 16384).unwrap(), 40);
        // Exactly 2^-20 is not enough for 20 bits (the polynomial term adds a little): 21.
        assert_eq!(tag_bits_for((-20f64).exp2(), 16384).unwrap(), 21);
        // 64 bits: L + 1 = 2, budget 2^127; 2 + 2^127 > 2^127, 2 + 2^126 fits: 2 bits.
        assert_eq!(tag_bits_for(0.5, 64).unwrap(), 2);
        // 2^30 bits at 1e-15: L = 2^23. The f64 1e-15 is 2535301200456459 / 2^101, so the
        // budget is floor(1e-15 * 2^128) = 340282366920938489905152 (about 3.40e23). t = 49:
        // 2^23 + 1 + 2^79 = 604462909807314595741697 > budget. t = 50: 2^23 + 1 + 2^78 =
        // 302231454903657302065153 <= budget (slack about 3.8e22). So 50 bits, the same as
        // ceil(log2(1e15)) = 50: the polynomial term (~2.5e-32) does not matter at this size.
        assert_eq!(tag_bits_for(1e-15, 1 << 30).unwrap(), 50);
        for log in [0, 7, 14, 18, 20, 22, 24, 26] {
            assert_eq!(tag_bits_for(1e-15, 1 << log).unwrap(), 50, "2^{log} bits");
        }
        // The old GF(2^64) family needed 53 bits at 2^20 and refused 2^21 at 1e-15.
        assert_eq!(tag_bits_for(1e-15, 1 << 21).unwrap(), 50);
        // Keys past 2^30 bits are refused with their own error.
        assert!(matches!(
            tag_bits_for(1e-15, MAX_KEY_BITS + 1),
            Err(ConfirmError::KeyTooLong {
                key_bits,
                max_bits: MAX_KEY_BITS
            }) if key_bits == MAX_KEY_BITS + 1
        ));
        // The floor (L + 2) / 2^128 is reachable with 128 bits, anything below is not.
        let floor = collision_bound(16384, 128);
        assert_eq!(floor, 130.0 / TWO_POW_128);
        assert_eq!(tag_bits_for(floor, 16384).unwrap(), 128);
        // 1.5 floor: budget 195 = 129 + 66, and 2^6 <= 66 < 2^7: t = 128 - 6.
        assert_eq!(tag_bits_for(1.5 * floor, 16384).unwrap(), 122);
        let below = f64::from_bits(floor.to_bits() - 1);
        match tag_bits_for(below, 16384) {
            Err(ConfirmError::EpsilonOutOfRange { floor: f, .. }) => assert_eq!(f, floor),
            other => panic!("expected EpsilonOutOfRange, got {other:?}"),
        }
        let msg = tag_bits_for(1e-40, 16384).unwrap_err().to_string();
        assert!(msg.contains("[3.82") && msg.contains("128 bits"), "{msg}");
        for bad in [
            0.0,
            -1e-9,
            1.0,
            2.0,
            f64::NAN,
            f64::INFINITY,
            f64::MIN_POSITIVE,
        ] {
            assert!(tag_bits_for(bad, 16384).is_err(), "{bad}");
        }
        // The loosest eps_cor below 1 needs a single bit.
        assert_eq!(tag_bits_for(1.0 - f64::EPSILON, 16384).unwrap(), 1);
        assert!(collision_bound(16384, 50) <= 1e-15);
    }

    /// Alice's challenge for `alice` is accepted by an equal key, and rejected after each of
    /// `flips` random one-bit changes (each on a fresh seed).
    fn accept_then_reject(rng: &mut SeededRandom, alice: &BitBlock, flips: usize) {
        let n = alice.len();
        let mut bob = alice.clone();
        for i in 0..flips {
            let (mut init, challenge) = ConfirmInitiator::start(alice, 1e-15, rng).unwrap();
            let wire = ConfirmMessage::decode(&challenge.encode()).unwrap();
            assert_eq!(wire, challenge);
            let (verdict, out) = respond(&bob, 1e-15, wire.clone()).unwrap();
            assert!(out.matched, "{n} bits: equal keys rejected at {i}");
            assert_eq!(out.leaked_bits, 50);
            let verdict = ConfirmMessage::decode(&verdict.encode()).unwrap();
            assert_eq!(init.finish(verdict).unwrap(), out);
            let pos = rng.below(n as u64) as usize;
            bob.flip(pos).unwrap();
            let (_, out) = respond(&bob, 1e-15, wire).unwrap();
            assert!(!out.matched, "{n} bits: collision at {i} (bit {pos})");
            bob.flip(pos).unwrap();
        }
    }

    #[test]
    fn equal_keys_accept_and_one_bit_differences_reject() {
        let mut rng = SeededRandom::from_u64(2);
        for _ in 0..300 {
            let n = 1 + (rng.below(5000) as usize);
            let alice = random_key(&mut rng, n);
            accept_then_reject(&mut rng, &alice, 1);
        }
        let alice = random_key(&mut rng, 1 << 22);
        accept_then_reject(&mut rng, &alice, 50);
    }

    #[test]
    fn confirms_keys_of_2_pow_26_bits() {
        let mut rng = SeededRandom::from_u64(5);
        let alice = random_key(&mut rng, 1 << 26);
        accept_then_reject(&mut rng, &alice, 3);
        // Not a multiple of 128 bits either.
        let alice = random_key(&mut rng, (1 << 26) - 5);
        accept_then_reject(&mut rng, &alice, 1);
    }

    #[test]
    fn bad_messages_are_errors() {
        let key = BitBlock::zeros(100);
        assert!(ConfirmMessage::decode(&[]).is_err());
        assert!(ConfirmMessage::decode(&[9, 0]).is_err());
        let mut rng = SeededRandom::from_u64(3);
        let (mut init, ch) = ConfirmInitiator::start(&key, 1e-3, &mut rng).unwrap();
        // A responder with a stricter policy refuses the short tag.
        assert!(matches!(
            respond(&key, 1e-12, ch.clone()),
            Err(ConfirmError::TagTooShort {
                got: 10,
                expected: 40
            })
        ));
        assert!(respond(&key, 1e-3, ConfirmMessage::Verdict { matched: true }).is_err());
        assert!(init.finish(ch.clone()).is_err());
        let ConfirmMessage::Challenge { seed, tag, .. } = ch else {
            panic!("not a challenge")
        };
        // Tag lengths 0, 129 and more are refused; so is a tag with bits above its length.
        let with = |tag_bits: u32, tag: u128| ConfirmMessage::Challenge {
            seed,
            tag_bits,
            tag,
        };
        assert!(matches!(
            respond(&key, 1e-3, with(0, 0)),
            Err(ConfirmError::TagTooShort { got: 0, .. })
        ));
        for t in [129, 200, u32::MAX] {
            let m = ConfirmMessage::decode(&with(t, tag).encode()).unwrap();
            assert!(matches!(
                respond(&key, 1e-3, m),
                Err(ConfirmError::BadMessage(_))
            ));
        }
        assert!(matches!(
            respond(&key, 1e-3, with(10, tag | 1 << 10)),
            Err(ConfirmError::BadMessage(_))
        ));
        // The full 128-bit tag is fine.
        let full = with(128, super::tag(&key, &seed, 128));
        assert!(respond(&key, 1e-3, full.clone()).unwrap().1.matched);
        // The longest challenge fits the 64-byte buffers of the C examples.
        let longest = ConfirmMessage::Challenge {
            seed: HashSeed {
                r: u128::MAX,
                a: u128::MAX,
            },
            tag_bits: 128,
            tag: u128::MAX,
        };
        assert!(longest.encode().len() <= 64, "{}", longest.encode().len());
        // Version 1 (the GF(2^64) family) is refused, as is a v2 body under another version.
        let mut v1 = vec![1u8, 0];
        v1.extend(postcard::to_allocvec(&(1u64, 2u64, 40u32, 3u64)).unwrap());
        assert!(matches!(
            ConfirmMessage::decode(&v1),
            Err(ConfirmError::BadMessage(m)) if m.contains("version 1")
        ));
        let mut enc = full.encode();
        enc[0] = 1;
        assert!(ConfirmMessage::decode(&enc).is_err());
        // Every strict prefix and any trailing byte are errors.
        let enc = full.encode();
        for cut in 0..enc.len() {
            assert!(ConfirmMessage::decode(&enc[..cut]).is_err(), "prefix {cut}");
        }
        let mut long = enc.clone();
        long.push(0);
        assert!(ConfirmMessage::decode(&long).is_err());
        // Random bytes, with and without the right version byte: errors or messages that
        // respond handles, never a panic.
        for i in 0..2000 {
            let mut b = vec![0u8; rng.below(80) as usize];
            rng.bytes(&mut b);
            if i % 2 == 0
                && let Some(v) = b.first_mut()
            {
                *v = CONFIRM_WIRE_VERSION;
            }
            if let Ok(m) = ConfirmMessage::decode(&b) {
                let _ = respond(&key, 1e-3, m.clone());
                let _ = init.finish(m);
            }
        }
    }

    #[test]
    fn seeds_are_drawn_whole() {
        let mut rng = SeededRandom::from_u64(6);
        let s = HashSeed::draw(&mut rng).unwrap();
        assert_ne!(s.r, s.a);
        assert!(s.r >> 64 != 0 && s.a >> 64 != 0);
    }
}
