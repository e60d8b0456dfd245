//! Encryption at rest: the key-encryption key (KEK), the keys derived from it, per-segment data
//! keys (wrapped under the KEK) and the seekable stream cipher that encrypts segment bytes.
//!
//! - Each segment has a random 256-bit data key and a random 192-bit nonce. Its bytes are
//!   XChaCha20 keystream XOR material: any byte range decrypts on its own (seek to the offset),
//!   and an overwrite with zeros stays byte exact, so a torn overwrite never touches a neighbour.
//! - The data key and nonce are stored *wrapped* in the segment's index record:
//!   XChaCha20-Poly1305 under a key derived from the KEK, with the store ID and segment number as
//!   associated data. Deleting the record destroys the segment's key (crypto-erase).
//! - Integrity comes from the index's BLAKE3 digests of blocks and keys, which become keyed
//!   BLAKE3 (a MAC key derived from the KEK): the digests reveal nothing about the material.
//! - A check value derived from the KEK, stored in the index, tells a wrong KEK at open.

use std::fmt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use chacha20::XChaCha20;
use chacha20::cipher::{KeyIvInit, StreamCipher, StreamCipherSeek};
use chacha20poly1305::aead::{Aead, Payload};
use chacha20poly1305::{KeyInit, XChaCha20Poly1305, XNonce};
use qkd_core::rng::{OsRandom, RandomSource};
use zeroize::{Zeroize, Zeroizing};

use super::StoreError;

/// Bytes of a wrapped segment key: 24-byte nonce, 56-byte ciphertext, 16-byte tag.
pub(crate) const WRAPPED_LEN: usize = 24 + 56 + 16;

/// Errors loading a key-encryption key.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KekError {
    /// The file could not be read.
    #[error("cannot read the key-encryption key file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is readable by group or others (or is not a regular file).
    #[error(
        "the key-encryption key file {path} has mode {mode:o}; it must be readable by its owner \
         only (0600 or 0400): run `chmod 0600 {path}`"
    )]
    Permissions {
        /// The file.
        path: PathBuf,
        /// The mode found (permission bits).
        mode: u32,
    },
    /// The environment variable is not set (or not UTF-8).
    #[error("the environment variable {0} holding the key-encryption key is not set")]
    EnvMissing(String),
    /// The key is not in one of the accepted forms.
    #[error(
        "the key-encryption key from {source_name} is not 32 raw bytes, 64 hex digits or \
         base64 of 32 bytes ({detail})"
    )]
    Format {
        /// Where it came from (file or variable name).
        source_name: String,
        /// What was wrong (lengths, never key bytes).
        detail: String,
    },
}

/// A key-encryption key: 32 bytes that wrap the per-segment data keys of an encrypted store.
/// Zeroized on drop; `Debug` shows no bytes.
///
/// Accepted forms ([`Kek::from_file`], [`Kek::from_env`], [`Kek::parse`]): exactly 32 raw bytes
/// (files only), or, with surrounding ASCII whitespace ignored, 64 hex digits or standard base64
/// (with or without padding) of 32 bytes.
#[derive(Clone)]
pub struct Kek(Zeroizing<[u8; 32]>);

impl fmt::Debug for Kek {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Kek(32 bytes)")
    }
}

impl Kek {
    /// A KEK from its 32 bytes.
    pub fn from_bytes(bytes: &[u8; 32]) -> Self {
        Self(Zeroizing::new(*bytes))
    }

    /// Reads a KEK file: it must be a regular file with no group or other permission bits
    /// (0600 or 0400).
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self, KekError> {
        let path = path.as_ref();
        let io = |source| KekError::Io {
            path: path.to_path_buf(),
            source,
        };
        let meta = std::fs::metadata(path).map_err(io)?;
        let mode = meta.permissions().mode() & 0o7777;
        if !meta.is_file() || mode & 0o077 != 0 {
            return Err(KekError::Permissions {
                path: path.to_path_buf(),
                mode,
            });
        }
        let bytes = Zeroizing::new(std::fs::read(path).map_err(io)?);
        Self::decode(&bytes, &path.display().to_string(), true)
    }

    /// Reads a KEK from an environment variable (hex or base64).
    pub fn from_env(var: &str) -> Result<Self, KekError> {
        let value =
            Zeroizing::new(std::env::var(var).map_err(|_| KekError::EnvMissing(var.to_owned()))?);
        Self::decode(value.as_bytes(), &format!("${var}"), false)
    }

    /// Parses a KEK given as text: 64 hex digits or base64 of 32 bytes.
    pub fn parse(text: &str) -> Result<Self, KekError> {
        Self::decode(text.as_bytes(), "text", false)
    }

    fn decode(bytes: &[u8], source_name: &str, raw_ok: bool) -> Result<Self, KekError> {
        let bad = |detail: String| KekError::Format {
            source_name: source_name.to_owned(),
            detail,
        };
        let mut key = Zeroizing::new([0u8; 32]);
        if raw_ok && bytes.len() == 32 {
            key.copy_from_slice(bytes);
            return Ok(Self(key));
        }
        let text = bytes.trim_ascii();
        if text.len() == 64 && text.iter().all(u8::is_ascii_hexdigit) {
            for (out, pair) in key.iter_mut().zip(text.chunks_exact(2)) {
                *out = (hex_digit(pair[0]) << 4) | hex_digit(pair[1]);
            }
            return Ok(Self(key));
        }
        let engine = base64::engine::GeneralPurpose::new(
            &base64::alphabet::STANDARD,
            base64::engine::GeneralPurposeConfig::new()
                .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent),
        );
        let decoded = Zeroizing::new(engine.decode(text).map_err(|_| {
            bad(format!(
                "{} bytes that are neither raw, hex nor base64",
                bytes.len()
            ))
        })?);
        if decoded.len() != 32 {
            return Err(bad(format!("base64 of {} bytes", decoded.len())));
        }
        key.copy_from_slice(&decoded);
        Ok(Self(key))
    }
}

fn hex_digit(c: u8) -> u8 {
    // Only called on ASCII hex digits.
    match c {
        b'0'..=b'9' => c - b'0',
        _ => (c | 0x20) - b'a' + 10,
    }
}

/// The keys an encrypted store derives from its KEK.
pub(crate) struct KeyRing {
    wrap: Zeroizing<[u8; 32]>,
    mac: Zeroizing<[u8; 32]>,
    check: [u8; 32],
}

impl fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("KeyRing(..)")
    }
}

impl KeyRing {
    pub(crate) fn new(kek: &Kek) -> Self {
        let derive = |ctx: &str| Zeroizing::new(blake3::derive_key(ctx, kek.0.as_ref()));
        Self {
            wrap: derive("qkd-store 2 segment key wrapping"),
            mac: derive("qkd-store 2 index digest MAC"),
            check: *derive("qkd-store 2 KEK check value"),
        }
    }

    /// The check value stored in the index (a KDF output: reveals nothing about the KEK).
    pub(crate) fn check_value(&self) -> [u8; 32] {
        self.check
    }

    /// Whether `stored` is this KEK's check value (constant time).
    pub(crate) fn matches(&self, stored: &[u8]) -> bool {
        <[u8; 32]>::try_from(stored)
            .is_ok_and(|s| blake3::Hash::from(s) == blake3::Hash::from(self.check))
    }

    pub(crate) fn mac_key(&self) -> &[u8; 32] {
        &self.mac
    }

    fn aad(store_id: u128, segment: u64) -> [u8; 41] {
        let mut aad = [0u8; 41];
        aad[..17].copy_from_slice(b"qkd-store segment");
        aad[17..33].copy_from_slice(&store_id.to_le_bytes());
        aad[33..].copy_from_slice(&segment.to_le_bytes());
        aad
    }

    /// A fresh random data key for `segment`, and its wrapped form for the index.
    pub(crate) fn new_segment_key(
        &self,
        store_id: u128,
        segment: u64,
    ) -> Result<(SegmentKey, Vec<u8>), StoreError> {
        let mut plain = Zeroizing::new([0u8; 56]);
        let mut nonce = [0u8; 24];
        OsRandom.fill(plain.as_mut())?;
        OsRandom.fill(&mut nonce)?;
        let cipher = XChaCha20Poly1305::new_from_slice(self.wrap.as_ref())
            .map_err(|_| StoreError::Damaged("bad wrapping key length".into()))?;
        let aad = Self::aad(store_id, segment);
        let ct = cipher
            .encrypt(
                &XNonce::from(nonce),
                Payload {
                    msg: plain.as_ref(),
                    aad: &aad,
                },
            )
            .map_err(|_| StoreError::Damaged("wrapping a segment key failed".into()))?;
        let mut wrapped = Vec::with_capacity(WRAPPED_LEN);
        wrapped.extend_from_slice(&nonce);
        wrapped.extend_from_slice(&ct);
        Ok((SegmentKey::from_plain(&plain), wrapped))
    }

    /// Unwraps a segment's data key; `None` if it does not authenticate (wrong KEK, wrong
    /// segment or store, damaged record).
    pub(crate) fn unwrap_segment_key(
        &self,
        store_id: u128,
        segment: u64,
        wrapped: &[u8],
    ) -> Option<SegmentKey> {
        if wrapped.len() != WRAPPED_LEN {
            return None;
        }
        let cipher = XChaCha20Poly1305::new_from_slice(self.wrap.as_ref()).ok()?;
        let nonce = XNonce::try_from(&wrapped[..24]).ok()?;
        let aad = Self::aad(store_id, segment);
        let plain = Zeroizing::new(
            cipher
                .decrypt(
                    &nonce,
                    Payload {
                        msg: &wrapped[24..],
                        aad: &aad,
                    },
                )
                .ok()?,
        );
        let plain: &[u8; 56] = plain.as_slice().try_into().ok()?;
        Some(SegmentKey::from_plain(plain))
    }
}

/// A segment's data key and stream nonce. Zeroized on drop.
pub(crate) struct SegmentKey {
    key: Zeroizing<[u8; 32]>,
    nonce: [u8; 24],
}

impl SegmentKey {
    fn from_plain(plain: &[u8; 56]) -> Self {
        let mut key = Zeroizing::new([0u8; 32]);
        key.copy_from_slice(&plain[..32]);
        let mut nonce = [0u8; 24];
        nonce.copy_from_slice(&plain[32..]);
        Self { key, nonce }
    }

    /// XORs the keystream at byte `offset` of the segment into `buf` (encrypts or decrypts).
    pub(crate) fn apply(&self, offset: u64, buf: &mut [u8]) -> Result<(), StoreError> {
        let key: &[u8; 32] = &self.key;
        let mut c = XChaCha20::new(key.into(), &self.nonce.into());
        c.try_seek(offset)
            .and_then(|()| c.try_apply_keystream(buf))
            .map_err(|_| {
                StoreError::Damaged(format!(
                    "segment offset {offset} is past the cipher's keystream"
                ))
            })
    }
}

impl Drop for SegmentKey {
    fn drop(&mut self) {
        self.nonce.zeroize();
    }
}

/// How the store digests blocks and keys: plain BLAKE3, or keyed BLAKE3 when encrypted.
#[derive(Clone)]
pub(crate) struct Digester(Option<Zeroizing<[u8; 32]>>);

impl fmt::Debug for Digester {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.0.is_some() {
            "Digester(keyed)"
        } else {
            "Digester(plain)"
        })
    }
}

impl Digester {
    pub(crate) fn new(ring: Option<&KeyRing>) -> Self {
        Self(ring.map(|r| Zeroizing::new(*r.mac_key())))
    }

    pub(crate) fn hasher(&self) -> blake3::Hasher {
        match &self.0 {
            Some(k) => blake3::Hasher::new_keyed(k),
            None => blake3::Hasher::new(),
        }
    }

    pub(crate) fn digest(&self, bytes: &[u8]) -> [u8; 32] {
        match &self.0 {
            Some(k) => *blake3::keyed_hash(k, bytes).as_bytes(),
            None => *blake3::hash(bytes).as_bytes(),
        }
    }
}
