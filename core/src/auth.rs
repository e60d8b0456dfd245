//! Information-theoretic authentication of a block's transcript: Wegman-Carter tags with a
//! recycled hash key and a one-time pad per tag (DESIGN §9; docs/security.md, section 9).
//!
//! Each direction of a block's exchange is authenticated once, before the final key is released:
//! the sender feeds every message it sends, in order, into a [`TranscriptMac`] (its receiver
//! feeds the same bytes as it receives them), and at the end sends
//! `tag = poly_k(transcript) XOR pad`, where `poly_k` is the polynomial hash of [`crate::gf128`]
//! at the secret point `k` (the **hash key**, reused for many tags) and `pad` is 128 fresh secret
//! bits used for this one tag. The receiver recomputes the tag with the same key and pad and
//! compares in constant time ([`TranscriptMac::verify`]); a mismatch means the block must be
//! discarded.
//!
//! The transcript is encoded injectively before hashing: a context string, the block ID and the
//! direction, then each message as its length (8 bytes, little-endian) and its bytes; the hash
//! appends the total bit length. Two different transcripts of at most `L` 128-bit blocks thus
//! give different polynomials of degree at most `L + 1`, so `poly_k` is
//! `(L + 1) / 2^128`-almost-XOR-universal: for any transcripts `m != m'` and any `c`,
//! `Pr_k[poly_k(m) ^ poly_k(m') = c] <= (L + 1) / 2^128`. With the pad uniform and secret, a
//! forger who saw the tag of `m` produces a valid tag for another transcript with probability at
//! most that, and the tags reveal nothing about `k`, so `k` can be recycled (Wegman and Carter,
//! J. Comput. Syst. Sci. 22, 265 (1981); Portmann, IEEE Trans. Inf. Theory 60(7), 4383 (2014)).
//! A failed verification tells the adversary that one guess was wrong; the driver then replaces
//! the hash key ([`AuthKeys::replace_hash_key`]) so that nothing learnt accumulates.
//!
//! Key material comes from an [`AuthKeys`] source: [`KeyPool`] starts from a pre-shared secret
//! and is refilled from final keys set aside for it. Each tag costs [`PAD_BITS`] bits of pool.

use zeroize::{Zeroize, Zeroizing};

use crate::gf128::poly_hash;

/// Bits of pool one tag consumes (its one-time pad).
pub const PAD_BITS: usize = 128;

/// Bits of pool a hash key takes.
pub const HASH_KEY_BITS: usize = 128;

/// Context string that starts every authenticated transcript (version 1 of the encoding).
const CONTEXT: &[u8] = b"qkd transcript auth v1";

/// Errors of transcript authentication.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AuthError {
    /// The pool holds less key than the next tag or hash key needs: no tag is made, and no key
    /// may be released unauthenticated.
    #[error("authentication key pool exhausted: {needed} bits needed, {available} available")]
    Exhausted {
        /// Bits needed.
        needed: usize,
        /// Bits left in the pool.
        available: usize,
    },
    /// The received tag differs from the one computed over the received transcript.
    #[error("transcript tag mismatch: a message was altered, dropped, replayed or forged")]
    TagMismatch,
}

/// Which way a transcript goes; part of what is authenticated, so a tag of one direction never
/// verifies the other.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Messages Alice sent to Bob.
    AliceToBob,
    /// Messages Bob sent to Alice.
    BobToAlice,
}

/// Where the secret key material of authentication comes from. Both sides must hold identical
/// sources and draw from them in the same order.
pub trait AuthKeys {
    /// The current hash key (the same for many tags until replaced).
    fn hash_key(&mut self) -> Result<u128, AuthError>;
    /// A fresh one-time pad, never returned again.
    fn next_pad(&mut self) -> Result<u128, AuthError>;
    /// Discards the current hash key (after a failed verification); the next
    /// [`Self::hash_key`] draws a new one.
    fn replace_hash_key(&mut self);
    /// Pool bits consumed so far (hash keys and pads).
    fn spent_bits(&self) -> usize;
}

/// An [`AuthKeys`] source over a pool of secret bytes: a pre-shared secret to start, refilled
/// with final key bits set aside for authentication ([`Self::refill`]). Bytes are consumed
/// front to back and wiped as they go.
pub struct KeyPool {
    bytes: Zeroizing<Vec<u8>>,
    next: usize,
    hash_key: Option<u128>,
    spent: usize,
}

impl std::fmt::Debug for KeyPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyPool")
            .field("available_bits", &self.available_bits())
            .field("spent_bits", &self.spent)
            .finish_non_exhaustive()
    }
}

impl KeyPool {
    /// A pool holding `secret` (a pre-shared secret, or key set aside earlier).
    pub fn new(secret: &[u8]) -> Self {
        Self {
            bytes: Zeroizing::new(secret.to_vec()),
            next: 0,
            hash_key: None,
            spent: 0,
        }
    }

    /// Appends key material (bits of a final key set aside for authentication). The pool moves
    /// to a new buffer and the old one is wiped, so no copy is left behind by a reallocation.
    pub fn refill(&mut self, key: &[u8]) {
        let rest = self.bytes.get(self.next..).unwrap_or_default();
        let mut bytes = Zeroizing::new(Vec::with_capacity(rest.len() + key.len()));
        bytes.extend_from_slice(rest);
        bytes.extend_from_slice(key);
        self.bytes = bytes;
        self.next = 0;
    }

    /// Bits left in the pool.
    pub fn available_bits(&self) -> usize {
        (self.bytes.len() - self.next) * 8
    }

    fn take(&mut self) -> Result<u128, AuthError> {
        let Some(chunk) = self.bytes.get_mut(self.next..self.next + 16) else {
            return Err(AuthError::Exhausted {
                needed: 128,
                available: self.available_bits(),
            });
        };
        let mut e = [0u8; 16];
        e.copy_from_slice(chunk);
        chunk.zeroize();
        self.next += 16;
        self.spent += 128;
        let v = u128::from_le_bytes(e);
        e.zeroize();
        Ok(v)
    }
}

impl AuthKeys for KeyPool {
    fn hash_key(&mut self) -> Result<u128, AuthError> {
        if let Some(k) = self.hash_key {
            return Ok(k);
        }
        let k = self.take()?;
        self.hash_key = Some(k);
        Ok(k)
    }

    fn next_pad(&mut self) -> Result<u128, AuthError> {
        self.take()
    }

    fn replace_hash_key(&mut self) {
        if let Some(k) = self.hash_key.as_mut() {
            k.zeroize();
        }
        self.hash_key = None;
    }

    fn spent_bits(&self) -> usize {
        self.spent
    }
}

impl Drop for KeyPool {
    fn drop(&mut self) {
        self.replace_hash_key();
    }
}

/// The running transcript of one direction of one block: feed every message in order, then make
/// or check the tag.
pub struct TranscriptMac {
    encoded: Zeroizing<Vec<u8>>,
    messages: usize,
}

impl std::fmt::Debug for TranscriptMac {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TranscriptMac")
            .field("messages", &self.messages)
            .field("bytes", &self.encoded.len())
            .finish()
    }
}

impl TranscriptMac {
    /// A transcript for `block_id` in `direction`.
    pub fn new(block_id: &[u8], direction: Direction) -> Self {
        let mut encoded = Zeroizing::new(Vec::with_capacity(1024));
        encoded.extend_from_slice(CONTEXT);
        encoded.push(match direction {
            Direction::AliceToBob => 0,
            Direction::BobToAlice => 1,
        });
        encoded.extend_from_slice(&(block_id.len() as u64).to_le_bytes());
        encoded.extend_from_slice(block_id);
        Self {
            encoded,
            messages: 0,
        }
    }

    /// Appends one message as sent (or received).
    pub fn absorb(&mut self, message: &[u8]) {
        self.encoded
            .extend_from_slice(&(message.len() as u64).to_le_bytes());
        self.encoded.extend_from_slice(message);
        self.messages += 1;
    }

    /// Messages absorbed so far.
    pub fn messages(&self) -> usize {
        self.messages
    }

    /// `poly_k(transcript)` before the pad.
    fn hash(&self, hash_key: u128) -> u128 {
        let mut words = Zeroizing::new(vec![0u64; self.encoded.len().div_ceil(8)]);
        for (w, chunk) in words.iter_mut().zip(self.encoded.chunks(8)) {
            let mut b = [0u8; 8];
            b[..chunk.len()].copy_from_slice(chunk);
            *w = u64::from_le_bytes(b);
        }
        poly_hash(&words, self.encoded.len() as u64 * 8, hash_key, false)
    }

    /// The sender's tag: draws the hash key and a fresh pad from `keys`.
    pub fn tag(&self, keys: &mut dyn AuthKeys) -> Result<u128, AuthError> {
        let k = keys.hash_key()?;
        Ok(self.hash(k) ^ keys.next_pad()?)
    }

    /// The receiver's check of `tag`: draws the same hash key and pad as the sender did. On a
    /// mismatch the hash key is replaced (see the module docs) and the block must be discarded.
    pub fn verify(&self, tag: u128, keys: &mut dyn AuthKeys) -> Result<(), AuthError> {
        let expected = self.tag(keys)?;
        // Constant time: fold the difference before the one branch.
        let diff = expected ^ tag;
        let folded = (diff as u64) | ((diff >> 64) as u64);
        if folded == 0 {
            Ok(())
        } else {
            keys.replace_hash_key();
            Err(AuthError::TagMismatch)
        }
    }
}

/// Forgery bound of one tag when the transcripts involved are at most `bytes` bytes long
/// (encoding included): `(L + 1) / 2^128` with `L = ceil(8 bytes / 128)` blocks (the length
/// block makes the degree `L + 1`).
pub fn forgery_bound(bytes: usize) -> f64 {
    let blocks = (bytes * 8).div_ceil(128);
    (blocks as f64 + 1.0) * (-128f64).exp2()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::{RandomSource, SeededRandom};

    fn pools(bytes: usize, seed: u64) -> (KeyPool, KeyPool) {
        let mut secret = vec![0u8; bytes];
        SeededRandom::from_u64(seed).fill(&mut secret).unwrap();
        (KeyPool::new(&secret), KeyPool::new(&secret))
    }

    fn transcript(msgs: &[&[u8]], direction: Direction) -> TranscriptMac {
        let mut t = TranscriptMac::new(b"block-7", direction);
        for m in msgs {
            t.absorb(m);
        }
        t
    }

    #[test]
    fn the_same_transcript_verifies_and_costs_one_pad_per_tag() {
        let (mut alice, mut bob) = pools(16 * 10, 1);
        let msgs: [&[u8]; 3] = [b"hello", b"", b"parities"];
        for _ in 0..4 {
            let tag = transcript(&msgs, Direction::AliceToBob)
                .tag(&mut alice)
                .unwrap();
            transcript(&msgs, Direction::AliceToBob)
                .verify(tag, &mut bob)
                .unwrap();
        }
        // One hash key (recycled) plus four pads on each side.
        assert_eq!(alice.spent_bits(), HASH_KEY_BITS + 4 * PAD_BITS);
        assert_eq!(bob.spent_bits(), alice.spent_bits());
    }

    #[test]
    fn any_change_to_the_transcript_is_refused() {
        let base: Vec<&[u8]> = vec![b"hello", b"abc", b"parities"];
        let changed: Vec<Vec<&[u8]>> = vec![
            vec![b"hello", b"abd", b"parities"],         // a flipped bit
            vec![b"hello", b"parities"],                 // a dropped message
            vec![b"hello", b"abc", b"abc", b"parities"], // a replayed message
            vec![b"hello", b"parities", b"abc"],         // reordered
            vec![b"helloabc", b"parities"],              // the same bytes cut differently
            vec![b"hello", b"abc", b"parities", b""],    // an empty message appended
        ];
        for (i, c) in changed.iter().enumerate() {
            let (mut alice, mut bob) = pools(16 * 4, 10 + i as u64);
            let tag = transcript(&base, Direction::AliceToBob)
                .tag(&mut alice)
                .unwrap();
            assert_eq!(
                transcript(c, Direction::AliceToBob).verify(tag, &mut bob),
                Err(AuthError::TagMismatch),
                "change {i}"
            );
        }
        // The other direction, or another block, does not verify either.
        let (mut alice, mut bob) = pools(16 * 4, 20);
        let tag = transcript(&base, Direction::AliceToBob)
            .tag(&mut alice)
            .unwrap();
        assert!(
            transcript(&base, Direction::BobToAlice)
                .verify(tag, &mut bob)
                .is_err()
        );
        let (mut alice, mut bob) = pools(16 * 4, 21);
        let tag = transcript(&base, Direction::AliceToBob)
            .tag(&mut alice)
            .unwrap();
        let mut other = TranscriptMac::new(b"block-8", Direction::AliceToBob);
        for m in &base {
            other.absorb(m);
        }
        assert!(other.verify(tag, &mut bob).is_err());
    }

    #[test]
    fn a_forged_tag_is_refused_and_the_hash_key_replaced() {
        let (mut alice, mut bob) = pools(16 * 8, 3);
        let t = transcript(&[b"x"], Direction::BobToAlice);
        let tag = t.tag(&mut alice).unwrap();
        assert_eq!(t.verify(tag ^ 1, &mut bob), Err(AuthError::TagMismatch));
        // Bob dropped his hash key: he draws a new one (16 more bytes) next time.
        let before = bob.spent_bits();
        bob.hash_key().unwrap();
        assert_eq!(bob.spent_bits(), before + HASH_KEY_BITS);
    }

    #[test]
    fn an_exhausted_pool_gives_no_tag() {
        let (mut alice, _) = pools(16 + 8, 4);
        let t = transcript(&[b"x"], Direction::AliceToBob);
        assert_eq!(
            t.tag(&mut alice),
            Err(AuthError::Exhausted {
                needed: 128,
                available: 64
            })
        );
        alice.refill(&[7u8; 8]);
        assert_eq!(alice.available_bits(), 128);
        assert!(t.tag(&mut alice).is_ok());
        assert!(t.tag(&mut alice).is_err());
        assert!(format!("{alice:?}").contains("available_bits"));
    }

    #[test]
    fn the_tag_is_the_polynomial_of_the_encoding_plus_the_pad() {
        // Worked by hand with the field product: context, direction 0, block ID, one message.
        let mut enc = Vec::new();
        enc.extend_from_slice(CONTEXT);
        enc.push(0);
        enc.extend_from_slice(&7u64.to_le_bytes());
        enc.extend_from_slice(b"block-7");
        enc.extend_from_slice(&2u64.to_le_bytes());
        enc.extend_from_slice(b"hi");
        let (k, pad) = (0x1234_5678_9abc_def0_u128 << 3, 0x55u128);
        let mut acc = 0u128;
        for chunk in enc.chunks(16) {
            let mut b = [0u8; 16];
            b[..chunk.len()].copy_from_slice(chunk);
            acc = crate::gf128::gf128_mul(acc ^ u128::from_le_bytes(b), k);
        }
        acc = crate::gf128::gf128_mul(acc ^ (enc.len() as u128 * 8), k);
        let mut secret = k.to_le_bytes().to_vec();
        secret.extend_from_slice(&pad.to_le_bytes());
        let mut pool = KeyPool::new(&secret);
        let tag = transcript(&[b"hi"], Direction::AliceToBob)
            .tag(&mut pool)
            .unwrap();
        assert_eq!(tag, acc ^ pad);
        assert!(forgery_bound(enc.len()) < 1e-37);
    }
}
