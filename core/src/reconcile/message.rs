//! Messages between Alice and Bob, and their wire encoding.
//!
//! On the wire a message is one version byte ([`WIRE_VERSION`]) followed by the postcard
//! (compact serde binary, varint integers) encoding of [`Message`]. Decoding rejects another
//! version, malformed bodies and trailing bytes. Parity answers are packed bits
//! ([`Parities`]), LSB first, with a count; their length and tail bits are checked.

use serde::{Deserialize, Serialize};

use super::ReconcileError;
use super::cascade::Params;

/// Version byte of the encoding; bumped on any incompatible change.
pub const WIRE_VERSION: u8 = 2;

/// One parity question: Alice's parity of positions `start..start + len` of pass `pass`
/// (positions in that pass's shuffled order).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Question {
    /// Pass index (normal passes first, then BICONF rounds).
    pub pass: u16,
    /// First position.
    pub start: u32,
    /// Number of positions (at least 1).
    pub len: u32,
}

/// Packed parity bits: bit `i` is bit `i % 8` of `bytes[i / 8]`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Parities {
    /// Number of parity bits.
    pub count: u32,
    /// `ceil(count / 8)` bytes, unused high bits of the last byte zero.
    pub bytes: Vec<u8>,
}

impl Parities {
    /// Packs `bits`.
    pub fn from_bits(bits: impl IntoIterator<Item = bool>) -> Self {
        let mut p = Self::default();
        for b in bits {
            p.push(b);
        }
        p
    }

    /// The bits of a block, packed a word at a time (the layouts agree: bit `i` of a block is
    /// bit `i % 8` of its byte `i / 8`).
    pub fn from_block(bits: &crate::bits::BitBlock) -> Self {
        Self {
            count: bits.len() as u32,
            bytes: bits.to_bytes().to_vec(),
        }
    }

    /// Empty, with room for `bits` bits.
    pub fn with_capacity(bits: usize) -> Self {
        Self {
            count: 0,
            bytes: Vec::with_capacity(bits.div_ceil(8)),
        }
    }

    /// Appends one bit.
    #[inline]
    pub fn push(&mut self, bit: bool) {
        let i = self.count as usize;
        if i.is_multiple_of(8) {
            self.bytes.push(0);
        }
        if bit && let Some(last) = self.bytes.last_mut() {
            *last |= 1 << (i % 8);
        }
        self.count += 1;
    }

    /// Bit `i` (false past the end).
    #[inline]
    pub fn get(&self, i: usize) -> bool {
        self.bytes
            .get(i / 8)
            .is_some_and(|b| (b >> (i % 8)) & 1 == 1)
    }

    /// Checks that the packing is canonical and holds exactly `expected` bits.
    pub fn check(&self, expected: usize) -> Result<(), ReconcileError> {
        let count = self.count as usize;
        if count != expected {
            return Err(ReconcileError::WrongLength {
                what: "parity answer",
                got: count,
                expected,
            });
        }
        if self.bytes.len() != count.div_ceil(8) {
            return Err(ReconcileError::Malformed(format!(
                "{} parity bytes for {count} bits; expected {}",
                self.bytes.len(),
                count.div_ceil(8)
            )));
        }
        if !count.is_multiple_of(8)
            && let Some(&last) = self.bytes.last()
            && last >> (count % 8) != 0
        {
            return Err(ReconcileError::Malformed(
                "parity padding bits are not zero".into(),
            ));
        }
        Ok(())
    }
}

/// Questions as one byte string: per question `varint(pass)`, then the start (as a zigzag
/// varint of the difference to the previous start when the pass repeats, else a plain
/// varint), then `varint(len)`. Cheaper to write and read than a serde sequence of structs,
/// and shorter, since Bob sends questions sorted by pass and position.
mod packed_questions {
    use super::Question;
    use serde::de::{Error, Visitor};
    use serde::{Deserializer, Serializer};

    fn put(buf: &mut Vec<u8>, mut v: u64) {
        while v >= 0x80 {
            buf.push((v as u8) | 0x80);
            v >>= 7;
        }
        buf.push(v as u8);
    }

    fn get(bytes: &[u8], at: &mut usize) -> Option<u64> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = *bytes.get(*at)?;
            *at += 1;
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Some(v);
            }
        }
        None
    }

    pub(super) fn serialize<S: Serializer>(qs: &[Question], s: S) -> Result<S::Ok, S::Error> {
        let mut buf = Vec::with_capacity(qs.len() * 5);
        let mut prev: Option<(u16, u32)> = None;
        for q in qs {
            put(&mut buf, u64::from(q.pass));
            match prev {
                Some((p, start)) if p == q.pass => {
                    let d = i64::from(q.start) - i64::from(start);
                    put(&mut buf, ((d << 1) ^ (d >> 63)) as u64);
                }
                _ => put(&mut buf, u64::from(q.start)),
            }
            put(&mut buf, u64::from(q.len));
            prev = Some((q.pass, q.start));
        }
        s.serialize_bytes(&buf)
    }

    struct V;

    impl Visitor<'_> for V {
        type Value = Vec<Question>;

        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("packed questions")
        }

        fn visit_bytes<E: Error>(self, bytes: &[u8]) -> Result<Self::Value, E> {
            let mut out = Vec::with_capacity(bytes.len() / 3);
            let mut at = 0;
            let mut prev: Option<(u16, u32)> = None;
            let bad = || E::custom("malformed packed questions");
            while at < bytes.len() {
                let pass =
                    u16::try_from(get(bytes, &mut at).ok_or_else(bad)?).map_err(|_| bad())?;
                let raw = get(bytes, &mut at).ok_or_else(bad)?;
                let start = match prev {
                    Some((p, s)) if p == pass => {
                        let d = ((raw >> 1) as i64) ^ -((raw & 1) as i64);
                        i64::from(s)
                            .checked_add(d)
                            .and_then(|v| u32::try_from(v).ok())
                            .ok_or_else(bad)?
                    }
                    _ => u32::try_from(raw).map_err(|_| bad())?,
                };
                let len = u32::try_from(get(bytes, &mut at).ok_or_else(bad)?).map_err(|_| bad())?;
                out.push(Question { pass, start, len });
                prev = Some((pass, start));
            }
            Ok(out)
        }
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Question>, D::Error> {
        d.deserialize_bytes(V)
    }
}

/// A Cascade message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Message {
    /// Bob -> Alice: the parameters of the run (variant, length, QBER estimate, shuffle seed).
    Hello(Params),
    /// Alice -> Bob: the parities of every top-level block of every normal pass, in pass and
    /// block order (with the whole-key parity first when the variant infers last blocks).
    TopParities(Parities),
    /// Bob -> Alice: all questions of one round.
    Query {
        /// Round number, from 1, incremented by every query.
        round: u32,
        /// The questions (on the wire: one byte string of varints, starts delta-coded
        /// within a pass; see [`Question`]).
        #[serde(with = "packed_questions")]
        questions: Vec<Question>,
    },
    /// Alice -> Bob: the answers to the query of the same round, in order.
    Answer {
        /// Round number of the query answered.
        round: u32,
        /// One parity per question.
        parities: Parities,
    },
    /// Bob -> Alice: reconciliation finished after `rounds` queries.
    Done {
        /// Number of queries Bob sent.
        rounds: u32,
    },
    /// Bob -> Alice: all bisection steps of one round, two levels each (variants with
    /// [`Tweaks::descend`](super::cascade::Tweaks::descend)). Each question names a block
    /// `N = start..start + len` (`len >= 2`) whose parities differ. For `len >= 3`, the next
    /// bit of `bob` is Bob's parity of the left half `L` of `N` (the first `ceil(len / 2)`
    /// positions); Alice answers her parity of `L` and, knowing which half `C` of `N` is odd,
    /// also her parity of the left half of `C` when `C` has two or more positions. For
    /// `len == 2` Bob sends no parity and Alice answers only her parity of `L`. Alice discloses
    /// exactly the parities a one-level bisection would ask for; Bob's bits are the ones that
    /// one-level bisection reveals through the choice of its next question.
    Descend {
        /// Round number, shared with [`Message::Query`].
        round: u32,
        /// The blocks, encoded like the questions of a query.
        #[serde(with = "packed_questions")]
        questions: Vec<Question>,
        /// Bob's parities, in question order: of the left half of every block of three or
        /// more positions, then, for a three-level question, of the left halves of both
        /// halves.
        bob: Parities,
        /// One bit per question: three levels instead of two. Bob then also sends his parities
        /// of the left halves of `L` and of the right half `R` (blocks of 8 or more
        /// positions), so Alice, knowing which half `C` is odd, can pick the odd half of `C`
        /// and answer its left half's parity as well. One of those two parities lies off the
        /// bisection path; both sides count it as disclosed.
        deep: Parities,
    },
}

impl Message {
    /// The wire encoding: version byte, then postcard.
    pub fn encode(&self) -> Result<Vec<u8>, ReconcileError> {
        let mut out = Vec::new();
        self.encode_into(&mut out)?;
        Ok(out)
    }

    /// Replaces the contents of `out` with the wire encoding (reuses its allocation).
    pub fn encode_into(&self, out: &mut Vec<u8>) -> Result<(), ReconcileError> {
        super::encode_versioned_into(WIRE_VERSION, self, out, "message")
    }

    /// Decodes one message, rejecting another version, malformed bodies and trailing bytes.
    pub fn decode(bytes: &[u8]) -> Result<Self, ReconcileError> {
        super::decode_versioned(WIRE_VERSION, bytes, "message")
    }

    /// Short name of the message kind, for errors.
    pub fn kind(&self) -> &'static str {
        match self {
            Message::Hello(_) => "Hello",
            Message::TopParities(_) => "TopParities",
            Message::Query { .. } => "Query",
            Message::Answer { .. } => "Answer",
            Message::Done { .. } => "Done",
            Message::Descend { .. } => "Descend",
        }
    }
}
