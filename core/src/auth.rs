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
//! A failed verification tells the adversary that one guess was wrong; the side that sees it
//! retires the hash key ([`AuthKeys::retire_hash_key`]) so that nothing learnt accumulates, and
//! its peer retires it too when told (or when its next hello is refused for naming it).
//!
//! Key material comes from an [`AuthKeys`] source, named by position in 128-bit words so that
//! blocks running concurrently, in any order, agree on their bits: each block takes one
//! [`AuthLease`] (the hash key's position and two fresh pads, one per direction). [`KeyPool`]
//! starts from a pre-shared secret and is refilled from final keys set aside for it. A block
//! costs `2 * PAD_BITS` bits of pool, plus [`HASH_KEY_BITS`] whenever a hash key is retired.

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
    /// The source could not record durably which words it handed out, so it hands out none.
    #[error("authentication key pool not recorded durably: {0}")]
    Durability(String),
    /// The received tag differs from the one computed over the received transcript.
    #[error("transcript tag mismatch: a message was altered, dropped, replayed or forged")]
    TagMismatch,
    /// A lease names a pad word that was already used or is not in the pool (a replayed or
    /// forged hello, or pools that diverged).
    #[error("one-time pad at word {position} is used or not in the pool")]
    PadUsed {
        /// Position of the first pad word.
        position: u64,
    },
    /// A lease names a hash key that was retired after a failed verification, or a used word.
    #[error("hash key at word {position} is retired or not in the pool")]
    HashKeyRetired {
        /// Position of the hash key word.
        position: u64,
    },
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

/// The secret key of one block's authentication: the hash key (recycled across blocks) and one
/// fresh pad per direction, each named by its position in the pool (in 128-bit words), so the
/// two sides agree on the bits whatever order their blocks run in. Alice takes a lease with
/// [`AuthKeys::lease`] and sends the positions in her hello; Bob takes the same words with
/// [`AuthKeys::lease_at`]. Wiped on drop; `Debug` shows positions only.
pub struct AuthLease {
    /// Position of the hash key.
    pub hash_key_position: u64,
    /// Position of the first pad (the second follows it).
    pub pad_position: u64,
    hash_key: u128,
    pads: [u128; 2],
}

impl std::fmt::Debug for AuthLease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthLease")
            .field("hash_key_position", &self.hash_key_position)
            .field("pad_position", &self.pad_position)
            .finish_non_exhaustive()
    }
}

impl Drop for AuthLease {
    fn drop(&mut self) {
        self.hash_key.zeroize();
        self.pads.zeroize();
    }
}

impl AuthLease {
    fn pad(&self, direction: Direction) -> u128 {
        match direction {
            Direction::AliceToBob => self.pads[0],
            Direction::BobToAlice => self.pads[1],
        }
    }
}

/// Where the secret key material of authentication comes from. Both sides hold identical
/// material and name it by position, so blocks may take their leases in any order.
pub trait AuthKeys: Send {
    /// Alice's lease for a new block: the current hash key (a fresh word if there is none) and
    /// the two lowest unused words as pads.
    fn lease(&mut self) -> Result<AuthLease, AuthError>;
    /// Bob's lease for the positions Alice's hello names. The pads must be unused words; the
    /// hash key is the current one, or an unused word, which then becomes current (Alice drew
    /// a new one). A used, non-current hash key or a used pad is refused: no pad ever serves
    /// twice, whatever a forged hello asks for.
    fn lease_at(
        &mut self,
        hash_key_position: u64,
        pad_position: u64,
    ) -> Result<AuthLease, AuthError>;
    /// Retires the hash key at `position` after a failed verification (see the module docs):
    /// it is never used again, and the next [`Self::lease`] draws a new one.
    fn retire_hash_key(&mut self, position: u64);
    /// Pool bits consumed so far (hash keys and pads).
    fn spent_bits(&self) -> usize;
    /// Pool bits still unused.
    fn available_bits(&self) -> usize;
    /// Appends key material (bits of a final key set aside for authentication, or more
    /// pre-shared secret). Both sides must refill with the same bytes in the same order.
    fn refill(&mut self, key: &[u8]);
    /// Takes every unused word below `position` out of use (counted as spent): how a pool
    /// resumes after a restart, when the words below a durable watermark may have served
    /// before, and how two sides agree to skip words either may have used. A current hash key
    /// below it is retired.
    fn discard_below(&mut self, position: u64);
    /// One past the highest word position ever taken (everything below it may have served).
    fn high_water(&self) -> u64;
}

/// An [`AuthKeys`] source over a pool of secret bytes in 128-bit words: a pre-shared secret to
/// start, refilled with final key bits set aside for authentication ([`Self::refill`]). Every
/// word is wiped when taken, and the buffers move to new allocations (the old ones wiped)
/// whenever they grow or shrink, so no copy of a word outlives it.
pub struct KeyPool {
    /// Words from position `base` on; a taken word is zero and marked in `taken`.
    words: Zeroizing<Vec<u128>>,
    taken: Vec<bool>,
    /// Words not taken.
    unused: usize,
    base: u64,
    /// Bytes of a refill that do not fill a word yet.
    partial: Zeroizing<Vec<u8>>,
    /// The current hash key: its position and value (its word in `words` is wiped).
    hash_key: Option<(u64, u128)>,
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
    /// A pool holding `secret` (a pre-shared secret, or key set aside earlier); a trailing part
    /// shorter than a word waits for the next refill.
    pub fn new(secret: &[u8]) -> Self {
        let mut pool = Self {
            words: Zeroizing::new(Vec::new()),
            taken: Vec::new(),
            unused: 0,
            base: 0,
            partial: Zeroizing::new(Vec::new()),
            hash_key: None,
            spent: 0,
        };
        pool.append(secret);
        pool
    }

    fn append(&mut self, key: &[u8]) {
        let mut bytes = Zeroizing::new(Vec::with_capacity(self.partial.len() + key.len()));
        bytes.extend_from_slice(&self.partial);
        bytes.extend_from_slice(key);
        let whole = bytes.len() / 16 * 16;
        let needed = self.words.len() + whole / 16;
        if self.words.capacity() < needed {
            // Grown into a new buffer (twice the need, so refills stay linear); the old one is
            // wiped as it drops.
            let mut words = Zeroizing::new(Vec::with_capacity(2 * needed));
            words.extend_from_slice(&self.words);
            self.words = words;
        }
        for chunk in bytes[..whole].chunks_exact(16) {
            let mut w = [0u8; 16];
            w.copy_from_slice(chunk);
            self.words.push(u128::from_le_bytes(w));
            w.zeroize();
        }
        self.partial = Zeroizing::new(bytes[whole..].to_vec());
        self.unused += whole / 16;
        self.taken.resize(self.words.len(), false);
    }

    fn index(&self, position: u64) -> Option<usize> {
        let i = usize::try_from(position.checked_sub(self.base)?).ok()?;
        (i < self.words.len()).then_some(i)
    }

    fn is_unused(&self, position: u64) -> bool {
        self.index(position).is_some_and(|i| !self.taken[i])
    }

    /// The value at `position`, which the caller checked is unused; wipes it.
    fn take(&mut self, position: u64) -> u128 {
        let i = (position - self.base) as usize;
        let v = self.words[i];
        self.words[i].zeroize();
        self.taken[i] = true;
        self.unused -= 1;
        self.spent += 128;
        v
    }

    fn lowest_unused(&self, after: u64) -> Result<u64, AuthError> {
        let from = after.saturating_sub(self.base) as usize;
        (from..self.words.len())
            .find(|&i| !self.taken[i])
            .map(|i| self.base + i as u64)
            .ok_or(self.exhausted())
    }

    fn exhausted(&self) -> AuthError {
        AuthError::Exhausted {
            needed: 128,
            available: self.available_bits(),
        }
    }

    /// Drops the leading run of taken words, so the pool does not grow with use.
    fn compact(&mut self) {
        let run = self.taken.iter().take_while(|&&t| t).count();
        if run > 0 && run * 2 >= self.words.len() {
            // A fresh buffer: moving the words down in place would leave copies past the end.
            self.words = Zeroizing::new(self.words[run..].to_vec());
            self.taken.drain(..run);
            self.base += run as u64;
        }
    }

    fn lease_from(
        &mut self,
        hash_key_position: u64,
        pad_position: u64,
    ) -> Result<AuthLease, AuthError> {
        let hash_key = self.hash_key.map_or(0, |(_, k)| k);
        let pads = [self.take(pad_position), self.take(pad_position + 1)];
        self.compact();
        Ok(AuthLease {
            hash_key_position,
            pad_position,
            hash_key,
            pads,
        })
    }
}

impl Drop for KeyPool {
    fn drop(&mut self) {
        self.retire_current();
    }
}

impl AuthKeys for KeyPool {
    fn lease(&mut self) -> Result<AuthLease, AuthError> {
        let needed = 2 * PAD_BITS + self.hash_key.map_or(HASH_KEY_BITS, |_| 0);
        if self.available_bits() < needed {
            return Err(AuthError::Exhausted {
                needed,
                available: self.available_bits(),
            });
        }
        let (h, after) = match self.hash_key {
            Some((h, _)) => (h, 0),
            None => {
                let h = self.lowest_unused(0)?;
                (h, h + 1)
            }
        };
        let p = self.lowest_adjacent_pair(after)?;
        self.lease_at(h, p)
    }

    fn lease_at(
        &mut self,
        hash_key_position: u64,
        pad_position: u64,
    ) -> Result<AuthLease, AuthError> {
        if self.available_bits() < 2 * PAD_BITS {
            return Err(AuthError::Exhausted {
                needed: 2 * PAD_BITS,
                available: self.available_bits(),
            });
        }
        let pads_free = pad_position
            .checked_add(1)
            .is_some_and(|p1| self.is_unused(pad_position) && self.is_unused(p1));
        if !pads_free {
            return Err(AuthError::PadUsed {
                position: pad_position,
            });
        }
        if pad_position == hash_key_position || pad_position + 1 == hash_key_position {
            return Err(AuthError::PadUsed {
                position: pad_position,
            });
        }
        if self.hash_key.map(|(h, _)| h) != Some(hash_key_position) {
            if !self.is_unused(hash_key_position) {
                return Err(AuthError::HashKeyRetired {
                    position: hash_key_position,
                });
            }
            // A new hash key (Alice retired hers): the old one is retired here too.
            self.retire_current();
            let k = self.take(hash_key_position);
            self.hash_key = Some((hash_key_position, k));
        }
        self.lease_from(hash_key_position, pad_position)
    }

    fn retire_hash_key(&mut self, position: u64) {
        if self.hash_key.is_some_and(|(h, _)| h == position) {
            self.retire_current();
        }
    }

    fn spent_bits(&self) -> usize {
        self.spent
    }

    fn available_bits(&self) -> usize {
        self.unused * 128
    }

    fn refill(&mut self, key: &[u8]) {
        self.append(key);
    }

    fn discard_below(&mut self, position: u64) {
        if self.hash_key.is_some_and(|(h, _)| h < position) {
            self.retire_current();
        }
        let end = position
            .saturating_sub(self.base)
            .min(self.words.len() as u64);
        for p in self.base..self.base + end {
            if self.is_unused(p) {
                self.take(p);
            }
        }
        self.compact();
    }

    fn high_water(&self) -> u64 {
        self.taken
            .iter()
            .rposition(|&t| t)
            .map_or(self.base, |i| self.base + i as u64 + 1)
    }
}

impl KeyPool {
    fn retire_current(&mut self) {
        if let Some((_, k)) = self.hash_key.as_mut() {
            k.zeroize();
        }
        self.hash_key = None;
    }

    fn lowest_adjacent_pair(&self, after: u64) -> Result<u64, AuthError> {
        let from = after.saturating_sub(self.base) as usize;
        (from..self.words.len().saturating_sub(1))
            .find(|&i| !self.taken[i] && !self.taken[i + 1])
            .map(|i| self.base + i as u64)
            .ok_or(self.exhausted())
    }
}

/// The running transcript of one direction of one block: feed every message in order, then make
/// or check the tag.
pub struct TranscriptMac {
    encoded: Zeroizing<Vec<u8>>,
    messages: usize,
    direction: Direction,
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
            direction,
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
        hash_bytes(&self.encoded, hash_key)
    }

    /// The sender's tag with the lease's hash key and this direction's pad.
    pub fn tag(&self, lease: &AuthLease) -> u128 {
        self.hash(lease.hash_key) ^ lease.pad(self.direction)
    }

    /// The receiver's check of `tag` (constant time). On a mismatch the block must be
    /// discarded and the hash key retired on both sides ([`AuthKeys::retire_hash_key`]).
    pub fn verify(&self, tag: u128, lease: &AuthLease) -> Result<(), AuthError> {
        tags_match(self.tag(lease), tag)
    }
}

/// `poly_k(bytes)`: the bytes as little-endian 64-bit words (the last one zero-padded), with
/// their bit length appended by the hash.
fn hash_bytes(bytes: &[u8], hash_key: u128) -> u128 {
    let mut words = Zeroizing::new(vec![0u64; bytes.len().div_ceil(8)]);
    for (w, chunk) in words.iter_mut().zip(bytes.chunks(8)) {
        let mut b = [0u8; 8];
        b[..chunk.len()].copy_from_slice(chunk);
        *w = u64::from_le_bytes(b);
    }
    poly_hash(&words, bytes.len() as u64 * 8, hash_key, false)
}

/// Secret key bytes of one [`one_time_tag`]: a 128-bit hash key and a 128-bit pad, both used
/// for this one tag only.
pub const ONE_TIME_KEY_BYTES: usize = 32;

/// Context string of every [`one_time_tag`] (version 1 of its encoding).
const ONE_TIME_CONTEXT: &[u8] = b"qkd one-time tag v1";

/// A Wegman-Carter tag whose hash key and pad are both fresh: for a single message that
/// carries key material once (a key relayed between KMEs, docs/server.md), where no pool of
/// recycled hash keys is kept. `key` is 32 secret bytes never used again: the first 16 are the
/// hash key (little-endian), the last 16 the pad. The message is encoded injectively (a
/// context string, then `context` and `message`, each after its length), so the forgery bound
/// is [`forgery_bound`] of that encoding, as for transcripts.
pub fn one_time_tag(context: &[u8], message: &[u8], key: &[u8; ONE_TIME_KEY_BYTES]) -> u128 {
    let mut encoded = Zeroizing::new(Vec::with_capacity(
        ONE_TIME_CONTEXT.len() + 16 + context.len() + message.len(),
    ));
    encoded.extend_from_slice(ONE_TIME_CONTEXT);
    for part in [context, message] {
        encoded.extend_from_slice(&(part.len() as u64).to_le_bytes());
        encoded.extend_from_slice(part);
    }
    let mut halves = Zeroizing::new([[0u8; 16]; 2]);
    halves[0].copy_from_slice(&key[..16]);
    halves[1].copy_from_slice(&key[16..]);
    let mut hash_key = u128::from_le_bytes(halves[0]);
    let mut pad = u128::from_le_bytes(halves[1]);
    let tag = hash_bytes(&encoded, hash_key) ^ pad;
    hash_key.zeroize();
    pad.zeroize();
    tag
}

/// `Ok` when two tags are equal, compared in constant time.
fn tags_match(a: u128, b: u128) -> Result<(), AuthError> {
    let diff = a ^ b;
    // Fold the difference before the one branch.
    let folded = (diff as u64) | ((diff >> 64) as u64);
    if folded == 0 {
        Ok(())
    } else {
        Err(AuthError::TagMismatch)
    }
}

/// The receiver's check of a [`one_time_tag`] (constant time).
pub fn verify_one_time_tag(
    context: &[u8],
    message: &[u8],
    key: &[u8; ONE_TIME_KEY_BYTES],
    tag: u128,
) -> Result<(), AuthError> {
    tags_match(one_time_tag(context, message, key), tag)
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

    /// Alice's lease and Bob's lease of the same positions.
    fn leases(alice: &mut KeyPool, bob: &mut KeyPool) -> (AuthLease, AuthLease) {
        let a = alice.lease().unwrap();
        let b = bob.lease_at(a.hash_key_position, a.pad_position).unwrap();
        (a, b)
    }

    #[test]
    fn the_same_transcript_verifies_and_costs_two_pads_per_block() {
        let (mut alice, mut bob) = pools(16 * 10, 1);
        let msgs: [&[u8]; 3] = [b"hello", b"", b"parities"];
        for _ in 0..4 {
            let (a, b) = leases(&mut alice, &mut bob);
            for d in [Direction::AliceToBob, Direction::BobToAlice] {
                let tag = transcript(&msgs, d).tag(&a);
                transcript(&msgs, d).verify(tag, &b).unwrap();
            }
        }
        // One hash key (recycled) plus two pads per block on each side.
        assert_eq!(alice.spent_bits(), HASH_KEY_BITS + 8 * PAD_BITS);
        assert_eq!(bob.spent_bits(), alice.spent_bits());
        assert_eq!(alice.available_bits(), 128);
    }

    #[test]
    fn a_resumed_pool_never_serves_a_word_below_its_watermark() {
        let (mut alice, mut bob) = pools(16 * 12, 5);
        let (a, _) = leases(&mut alice, &mut bob);
        let mark = alice.high_water();
        assert_eq!(mark, a.pad_position + 2);
        assert_eq!(bob.high_water(), mark);
        // Both restart from the same material and the watermark.
        let (mut alice, mut bob) = pools(16 * 12, 5);
        alice.discard_below(mark);
        bob.discard_below(mark);
        assert_eq!(alice.spent_bits(), 128 * mark as usize);
        let (a2, b2) = leases(&mut alice, &mut bob);
        assert!(a2.hash_key_position >= mark && a2.pad_position >= mark);
        let t = transcript(&[b"y"], Direction::BobToAlice);
        t.verify(t.tag(&a2), &b2).unwrap();
        // A hello naming the old positions is refused.
        assert!(bob.lease_at(a.hash_key_position, a.pad_position).is_err());
    }

    #[test]
    fn leases_taken_in_another_order_agree_and_no_pad_serves_twice() {
        let (mut alice, mut bob) = pools(16 * 12, 2);
        let first: Vec<AuthLease> = (0..3).map(|_| alice.lease().unwrap()).collect();
        let t = transcript(&[b"x"], Direction::AliceToBob);
        // Bob meets the hellos of blocks 2, 0, 1.
        for &k in &[2usize, 0, 1] {
            let a = &first[k];
            let b = bob.lease_at(a.hash_key_position, a.pad_position).unwrap();
            t.verify(t.tag(a), &b).unwrap();
        }
        // A replayed hello (the positions of block 0 again) is refused.
        let a = &first[0];
        assert_eq!(
            bob.lease_at(a.hash_key_position, a.pad_position)
                .unwrap_err(),
            AuthError::PadUsed {
                position: a.pad_position
            }
        );
        // So is a pad overlapping the hash key, or past the pool.
        assert!(bob.lease_at(0, 0).is_err());
        assert!(bob.lease_at(0, 1_000).is_err());
        assert!(format!("{a:?}").contains("pad_position"));
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
            let (a, b) = leases(&mut alice, &mut bob);
            let tag = transcript(&base, Direction::AliceToBob).tag(&a);
            assert_eq!(
                transcript(c, Direction::AliceToBob).verify(tag, &b),
                Err(AuthError::TagMismatch),
                "change {i}"
            );
        }
        // The other direction, or another block, does not verify either.
        let (mut alice, mut bob) = pools(16 * 4, 20);
        let (a, b) = leases(&mut alice, &mut bob);
        let tag = transcript(&base, Direction::AliceToBob).tag(&a);
        assert!(
            transcript(&base, Direction::BobToAlice)
                .verify(tag, &b)
                .is_err()
        );
        let mut other = TranscriptMac::new(b"block-8", Direction::AliceToBob);
        for m in &base {
            other.absorb(m);
        }
        assert!(other.verify(tag, &b).is_err());
    }

    #[test]
    fn a_retired_hash_key_is_never_used_again() {
        let (mut alice, mut bob) = pools(16 * 8, 3);
        let (a, b) = leases(&mut alice, &mut bob);
        let t = transcript(&[b"x"], Direction::BobToAlice);
        assert_eq!(t.verify(t.tag(&b) ^ 1, &a), Err(AuthError::TagMismatch));
        // Alice retires her hash key; Bob has not heard yet.
        alice.retire_hash_key(a.hash_key_position);
        let old = a.hash_key_position;
        drop((a, b));
        let before = alice.spent_bits();
        let a = alice.lease().unwrap();
        assert_ne!(a.hash_key_position, old);
        assert_eq!(alice.spent_bits(), before + HASH_KEY_BITS + 2 * PAD_BITS);
        // Bob adopts the new hash key from her hello; the old one is refused from then on.
        let b = bob.lease_at(a.hash_key_position, a.pad_position).unwrap();
        let t = transcript(&[b"y"], Direction::AliceToBob);
        t.verify(t.tag(&a), &b).unwrap();
        let free = bob.lowest_adjacent_pair(0).unwrap();
        assert_eq!(
            bob.lease_at(old, free).unwrap_err(),
            AuthError::HashKeyRetired { position: old }
        );
    }

    #[test]
    fn an_exhausted_pool_gives_no_lease() {
        let (mut alice, _) = pools(16 * 2 + 8, 4);
        // A first lease needs a hash key and two pads.
        assert_eq!(
            alice.lease().unwrap_err(),
            AuthError::Exhausted {
                needed: 384,
                available: 256
            }
        );
        alice.refill(&[7u8; 8]);
        assert_eq!(alice.available_bits(), 384);
        assert!(alice.lease().is_ok());
        assert_eq!(
            alice.lease().unwrap_err(),
            AuthError::Exhausted {
                needed: 256,
                available: 0
            }
        );
        assert!(format!("{alice:?}").contains("available_bits"));
    }

    #[test]
    fn the_pool_does_not_grow_with_use() {
        let (mut alice, mut bob) = pools(16 * 5, 5);
        for i in 0..200u8 {
            let (a, b) = leases(&mut alice, &mut bob);
            drop((a, b));
            alice.refill(&[i; 32]);
            bob.refill(&[i; 32]);
        }
        assert!(alice.words.len() <= 16, "{} words kept", alice.words.len());
        assert_eq!(alice.available_bits(), bob.available_bits());
    }

    /// The polynomial hash worked by hand with the field product: Horner over the 16-byte
    /// blocks of `enc` (little-endian, the last zero-padded), then its bit length.
    fn horner(enc: &[u8], k: u128) -> u128 {
        let mut acc = 0u128;
        for chunk in enc.chunks(16) {
            let mut b = [0u8; 16];
            b[..chunk.len()].copy_from_slice(chunk);
            acc = crate::gf128::gf128_mul(acc ^ u128::from_le_bytes(b), k);
        }
        crate::gf128::gf128_mul(acc ^ (enc.len() as u128 * 8), k)
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
        let (k, pad, pad_back) = (0x1234_5678_9abc_def0_u128 << 3, 0x55u128, 0x66u128);
        let acc = horner(&enc, k);
        let mut secret = k.to_le_bytes().to_vec();
        secret.extend_from_slice(&pad.to_le_bytes());
        secret.extend_from_slice(&pad_back.to_le_bytes());
        let mut pool = KeyPool::new(&secret);
        let lease = pool.lease().unwrap();
        assert_eq!((lease.hash_key_position, lease.pad_position), (0, 1));
        let tag = transcript(&[b"hi"], Direction::AliceToBob).tag(&lease);
        assert_eq!(tag, acc ^ pad);
        assert!(forgery_bound(enc.len()) < 1e-37);
    }

    #[test]
    fn a_one_time_tag_is_the_polynomial_of_its_encoding_plus_the_pad() {
        // Worked with the field product: the one-time context, then context and message.
        let mut enc = Vec::new();
        enc.extend_from_slice(ONE_TIME_CONTEXT);
        enc.extend_from_slice(&3u64.to_le_bytes());
        enc.extend_from_slice(b"A>B");
        enc.extend_from_slice(&5u64.to_le_bytes());
        enc.extend_from_slice(b"key!!");
        let (k, pad) = (0x0fed_cba9_8765_4321_u128 << 40 | 0x77, 0x1234u128 << 100);
        let acc = horner(&enc, k);
        let mut key = [0u8; ONE_TIME_KEY_BYTES];
        key[..16].copy_from_slice(&k.to_le_bytes());
        key[16..].copy_from_slice(&pad.to_le_bytes());
        let tag = one_time_tag(b"A>B", b"key!!", &key);
        assert_eq!(tag, acc ^ pad);
        assert_eq!(verify_one_time_tag(b"A>B", b"key!!", &key, tag), Ok(()));
        // Moving a byte between context and message, or changing any part, fails.
        for (c, m, t) in [
            (&b"A>"[..], &b">Bkey!!"[..], tag),
            (b"A>B", b"key!?", tag),
            (b"A>C", b"key!!", tag),
            (b"A>B", b"key!!", tag ^ 1),
        ] {
            assert_eq!(
                verify_one_time_tag(c, m, &key, t),
                Err(AuthError::TagMismatch)
            );
        }
    }
}
