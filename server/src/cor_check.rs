//! The `.cor` block check: before a `.cor` file of a link becomes allocatable key, the two KMEs
//! compare a tag of it over the peer listener and refuse it when the tags differ.
//!
//! The tag is a Wegman-Carter tag keyed by the file's own first [`TAG_KEY_BYTES`] bytes: `K1` =
//! bytes `0..16` is the point at which [`poly_hash`] evaluates the rest of the file (the
//! material, bytes `32..`), and `K2` = bytes `16..32` is XORed onto that value as a one-time pad,
//! so the tag is uniform and independent of the material. Those 32 bytes are never key: the
//! block appended to the store is the material (`docs/security.md`, "The `.cor` block check").
//!
//! A stable file is *pending*: its tag is kept in memory and the file stays in the directory.
//! Each poll, the KME asks the peer about every pending block (`POST /peer/v1/block_check`,
//! [`CheckRequest`] → [`CheckResponse`]); the peer answers from its own state ([`CorLink::answer`])
//! and decides there and then when it holds the block pending too. Both sides decide the same,
//! from the same two tags: on a match the material is appended, recorded in the link ledger
//! (`Active`) and the file is overwritten and deleted; on a mismatch a `block_mismatch` event is
//! raised, an empty marker `NAME.cor.rejected` is written (durably) and the file is overwritten
//! and deleted. Every step is safe to repeat after a crash: an append of a block the store has is
//! a no-op, the file goes only after the append and its record (or the marker) are durable, and a
//! file whose block was decided before is erased when it is seen again.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use qkd_core::BitBlock;
use qkd_core::gf128::poly_hash;
use serde::{Deserialize, Serialize};
use tokio::sync::Mutex;
use zeroize::Zeroizing;

use crate::kme::Kme;
use crate::link::ledger::{BlockState, Ledger, burn, write_private};
use crate::monitor::Event;

/// Bytes at the start of a `.cor` file that key its tag (never key material).
pub(crate) const TAG_KEY_BYTES: usize = 32;

/// The peer route of the check.
pub(crate) const PATH: &str = "/peer/v1/block_check";

/// Suffix of the marker of a refused block (`NAME.cor.rejected`).
const REJECTED: &str = ".rejected";

/// The asking KME's block and its tag.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct CheckRequest {
    /// The block ID (the `.cor` file name).
    pub(crate) block_id: String,
    /// The tag: 32 hex digits, most significant first.
    pub(crate) tag: String,
}

/// What the answering KME knows of the block.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Verdict {
    /// The tags are equal: the block is (now) in the answering KME's store.
    Match,
    /// The tags differ: the block is refused there.
    Mismatch,
    /// The answering KME does not hold the block yet: ask again later.
    Unknown,
}

/// The answer to a [`CheckRequest`].
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct CheckResponse {
    /// The verdict.
    pub(crate) result: Verdict,
}

/// The tag of a `.cor` file's bytes; refuses a file of [`TAG_KEY_BYTES`] bytes or fewer.
pub(crate) fn tag(file: &[u8]) -> Result<u128, String> {
    if file.len() <= TAG_KEY_BYTES {
        return Err(format!(
            "a .cor file of {} bytes is too short: expected more than {TAG_KEY_BYTES} (its first \
             {TAG_KEY_BYTES} bytes key the block check and are not key)",
            file.len()
        ));
    }
    let (key, material) = file.split_at(TAG_KEY_BYTES);
    let k1 = Zeroizing::new(u128::from_le_bytes(
        key[..16].try_into().unwrap_or_default(),
    ));
    let k2 = Zeroizing::new(u128::from_le_bytes(
        key[16..].try_into().unwrap_or_default(),
    ));
    let bits = material.len() * 8;
    // The bits as the engine packs them (little-endian words), wiped on drop.
    let block = BitBlock::from_bytes(material, bits).map_err(|e| e.to_string())?;
    let words = &block.words()[..bits.div_ceil(64)];
    Ok(poly_hash(words, bits as u64, *k1, false) ^ *k2)
}

fn tag_hex(t: u128) -> String {
    format!("{t:032x}")
}

fn parse_tag(s: &str) -> Result<u128, String> {
    if s.len() != 32 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(format!("tag {s:?} is not 32 hex digits"));
    }
    u128::from_str_radix(s, 16).map_err(|e| format!("tag {s:?}: {e}"))
}

/// A block ID the check accepts: a plain `.cor` file name, never a path.
fn check_name(id: &str) -> Result<(), String> {
    let plain = Path::new(id).file_name().and_then(|n| n.to_str()) == Some(id);
    if plain && id.len() > 4 && id.ends_with(".cor") {
        Ok(())
    } else {
        Err(format!("block ID {id:?} is not a .cor file name"))
    }
}

/// Runs blocking file or store work off the async workers.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, String> + Send + 'static,
) -> Result<T, String> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| format!("task failed: {e}"))?
}

#[derive(Debug, Default)]
struct State {
    /// Pending blocks: file name -> tag.
    pending: HashMap<String, u128>,
    /// Files refused as unreadable or too short, with their size (reported once per size).
    refused: HashMap<String, u64>,
}

/// The `.cor` source of one link and its pending blocks.
#[derive(Debug)]
pub(crate) struct CorLink {
    peer: String,
    dir: PathBuf,
    ledger: Arc<Ledger>,
    state: Mutex<State>,
}

impl CorLink {
    /// The `.cor` source in `dir` of the link with `peer`; decisions recorded in `ledger`.
    pub(crate) fn new(peer: &str, dir: &Path, ledger: Arc<Ledger>) -> Self {
        Self {
            peer: peer.to_string(),
            dir: dir.to_path_buf(),
            ledger,
            state: Mutex::new(State::default()),
        }
    }

    fn marker(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}{REJECTED}"))
    }

    async fn appended(&self, name: &str) -> Result<bool, String> {
        let (l, p, n) = (self.ledger.clone(), self.peer.clone(), name.to_string());
        blocking(move || Ok(matches!(l.state(&p, &n)?, Some(BlockState::Active { .. })))).await
    }

    async fn erase(&self, name: &str) -> Result<(), String> {
        let path = self.dir.join(name);
        blocking(move || burn(&path)).await
    }

    /// A stable file `name` of `size` bytes: made pending with its tag, or erased when its block
    /// was decided before (a restart between the decision and the deletion).
    pub(crate) async fn offer(&self, name: &str, size: u64) -> Result<(), String> {
        let mut st = self.state.lock().await;
        if st.pending.contains_key(name) || st.refused.get(name) == Some(&size) {
            return Ok(());
        }
        if self.marker(name).exists() || self.appended(name).await? {
            return self.erase(name).await;
        }
        let path = self.dir.join(name);
        let p = path.clone();
        let read = blocking(move || {
            let bytes = Zeroizing::new(std::fs::read(&p).map_err(|e| e.to_string())?);
            tag(&bytes)
        })
        .await;
        match read {
            Ok(t) => {
                st.refused.remove(name);
                st.pending.insert(name.to_string(), t);
                Ok(())
            }
            Err(m) => {
                st.refused.insert(name.to_string(), size);
                Err(format!("{}: {m}", path.display()))
            }
        }
    }

    /// Forgets pending blocks whose file is gone (removed by hand) from `present`.
    pub(crate) async fn retain(&self, present: &HashSet<String>) {
        let mut st = self.state.lock().await;
        st.pending.retain(|n, _| present.contains(n));
        st.refused.retain(|n, _| present.contains(n));
    }

    /// Appends a pending block whose tags matched, records it and erases its file. A file that
    /// changed since its tag was taken is refused instead (its new bytes were never compared).
    async fn accept(
        &self,
        kme: &Kme,
        st: &mut State,
        name: &str,
        t: u128,
    ) -> Result<Verdict, String> {
        let path = self.dir.join(name);
        let p = path.clone();
        let material = blocking(move || {
            let bytes =
                Zeroizing::new(std::fs::read(&p).map_err(|e| format!("{}: {e}", p.display()))?);
            Ok((tag(&bytes)? == t).then(|| Zeroizing::new(bytes[TAG_KEY_BYTES..].to_vec())))
        })
        .await?;
        let Some(material) = material else {
            kme.monitor.event(Event::SourceError {
                pool: self.peer.clone(),
                message: format!(
                    "{}: changed after its tag was compared; refused",
                    path.display()
                ),
            });
            self.reject(st, name).await?;
            return Ok(Verdict::Mismatch);
        };
        crate::sources::add(kme, &self.peer, name.to_string(), material).await?;
        let (l, p, n) = (self.ledger.clone(), self.peer.clone(), name.to_string());
        blocking(move || l.set(&p, &n, &BlockState::Active { refill: None })).await?;
        self.erase(name).await?;
        st.pending.remove(name);
        Ok(Verdict::Match)
    }

    /// Refuses a block: the marker (durable) first, then the file is erased.
    async fn reject(&self, st: &mut State, name: &str) -> Result<(), String> {
        let marker = self.marker(name);
        blocking(move || write_private(&marker, &[])).await?;
        self.erase(name).await?;
        st.pending.remove(name);
        Ok(())
    }

    fn mismatch_event(&self, kme: &Kme, name: &str) {
        kme.monitor.event(Event::BlockMismatch {
            pool: self.peer.clone(),
            block: name.to_string(),
        });
    }

    /// The answer to the peer's tag `theirs` of block `name`, deciding the block if it is
    /// pending here.
    async fn answer(&self, kme: &Kme, name: &str, theirs: u128) -> Result<Verdict, String> {
        let mut st = self.state.lock().await;
        if self.appended(name).await? {
            return Ok(Verdict::Match);
        }
        if let Some(&mine) = st.pending.get(name) {
            if mine == theirs {
                return self.accept(kme, &mut st, name, mine).await;
            }
            self.mismatch_event(kme, name);
            self.reject(&mut st, name).await?;
            return Ok(Verdict::Mismatch);
        }
        if self.marker(name).exists() {
            return Ok(Verdict::Mismatch);
        }
        Ok(Verdict::Unknown)
    }

    /// Asks the peer about every pending block and acts on the answers (unknown or no answer:
    /// asked again next time). Errors are returned one per block.
    pub(crate) async fn check_pending(&self, kme: &Kme) -> Vec<String> {
        let Some(link) = kme.links.get(&self.peer) else {
            return Vec::new();
        };
        let Some(client) = &link.client else {
            return Vec::new();
        };
        if !link.up.load(Ordering::Relaxed) {
            return Vec::new();
        }
        let todo: Vec<(String, u128)> = {
            let st = self.state.lock().await;
            st.pending.iter().map(|(n, t)| (n.clone(), *t)).collect()
        };
        let url = format!("{}{PATH}", link.url.trim_end_matches('/'));
        let mut errors = Vec::new();
        for (name, t) in todo {
            let req = CheckRequest {
                block_id: name.clone(),
                tag: tag_hex(t),
            };
            let verdict = match client.post(&url).json(&req).send().await {
                Ok(r) if r.status().is_success() => match r.json::<CheckResponse>().await {
                    Ok(c) => c.result,
                    Err(e) => {
                        errors.push(format!("block check of {name}: bad answer: {e}"));
                        continue;
                    }
                },
                // Not reachable or not ready: asked again at the next poll.
                _ => continue,
            };
            if verdict == Verdict::Unknown {
                continue;
            }
            let mut st = self.state.lock().await;
            if st.pending.get(&name) != Some(&t) {
                continue; // decided meanwhile, when the peer asked us
            }
            let done = if verdict == Verdict::Match {
                self.accept(kme, &mut st, &name, t).await.map(|_| ())
            } else {
                self.mismatch_event(kme, &name);
                self.reject(&mut st, &name).await
            };
            if let Err(e) = done {
                errors.push(format!("block {name}: {e}"));
            }
        }
        errors
    }
}

/// The peer listener's `POST /peer/v1/block_check` from peer KME `from`.
pub(crate) async fn peer_block_check(kme: &Kme, from: &str, body: &[u8]) -> Response {
    let Some(cor) = kme.cor.get(from) else {
        return (
            StatusCode::NOT_FOUND,
            format!("the link with {from} has no .cor source here"),
        )
            .into_response();
    };
    let parsed = serde_json::from_slice::<CheckRequest>(body)
        .map_err(|e| format!("not a block check request: {e}"))
        .and_then(|r| {
            check_name(&r.block_id)?;
            Ok((parse_tag(&r.tag)?, r.block_id))
        });
    let (theirs, name) = match parsed {
        Ok(p) => p,
        Err(m) => return (StatusCode::BAD_REQUEST, m).into_response(),
    };
    match cor.answer(kme, &name, theirs).await {
        Ok(result) => axum::Json(CheckResponse { result }).into_response(),
        Err(m) => (StatusCode::SERVICE_UNAVAILABLE, m).into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(n: usize, seed: u8) -> Vec<u8> {
        (0..n)
            .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
            .collect()
    }

    #[test]
    fn equal_bytes_equal_tags_and_any_flipped_bit_changes_the_tag() {
        for n in [33, 48, 63, 64, 100, 4096 + 7] {
            let f = file(n, 5);
            let t = tag(&f).unwrap();
            assert_eq!(tag(&file(n, 5)).unwrap(), t);
            for bit in 0..n * 8 {
                let mut g = f.clone();
                g[bit / 8] ^= 1 << (bit % 8);
                assert_ne!(tag(&g).unwrap(), t, "{n} bytes, bit {bit}");
            }
            // A byte more or less is a different tag too.
            let mut longer = f.clone();
            longer.push(0);
            assert_ne!(tag(&longer).unwrap(), t);
        }
    }

    #[test]
    fn the_tag_is_the_keyed_polynomial_hash_plus_the_pad() {
        let mut f = file(80, 9);
        f[..16].copy_from_slice(&1u128.to_le_bytes()); // K1 = 1: the hash is the block sum
        f[16..32].copy_from_slice(&0u128.to_le_bytes());
        let m = &f[32..];
        let b0 = u128::from_le_bytes(m[..16].try_into().unwrap());
        let b1 = u128::from_le_bytes(m[16..32].try_into().unwrap());
        let b2 = u128::from_le_bytes(m[32..48].try_into().unwrap());
        assert_eq!(tag(&f).unwrap(), b0 ^ b1 ^ b2 ^ (48 * 8));
        f[16] ^= 0x80;
        assert_eq!(tag(&f).unwrap(), b0 ^ b1 ^ b2 ^ (48 * 8) ^ 0x80);
    }

    #[test]
    fn short_files_bad_tags_and_bad_names_are_refused() {
        for n in [0, 1, 32] {
            let e = tag(&vec![7u8; n]).unwrap_err();
            assert!(e.contains(&format!("{n} bytes")), "{e}");
        }
        let t = tag(&file(40, 1)).unwrap();
        assert_eq!(parse_tag(&tag_hex(t)).unwrap(), t);
        let bad = [
            String::new(),
            "00".into(),
            "g".repeat(32),
            "0".repeat(33),
            format!("+{}", "0".repeat(31)),
        ];
        for b in &bad {
            assert!(parse_tag(b).is_err(), "{b}");
        }
        assert!(check_name("block-1.cor").is_ok());
        for bad in [
            "../x.cor",
            "a/b.cor",
            ".cor",
            "x.cor.rejected",
            "x",
            "",
            "..",
        ] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
    }
}
