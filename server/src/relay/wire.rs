//! The relay's messages on the peer listener, and how a hop seals the keys it passes back to
//! the previous hop: XOR with that link's pads (one-time pad), and one Wegman-Carter tag with a
//! fresh hash key and pad taken from the same link material (`qkd_core::auth::one_time_tag`).

use base64::Engine;
use qkd_core::auth::{ONE_TIME_KEY_BYTES, one_time_tag, verify_one_time_tag};
use serde::{Deserialize, Serialize};
use uuid::Uuid;
use zeroize::Zeroizing;

use crate::pool::FetchedKey;

/// The peer-listener route of a relay request.
pub(crate) const RELAY_PATH: &str = "/peer/v1/relay";

/// The peer-listener route of a relayed pair's status (allocatable material per hop).
pub(crate) const STATUS_PATH: &str = "/peer/v1/relay_status";

/// A previous hop's request: obtain `number` keys of `size_bits` for `master` and `slaves`
/// over the rest of `path`, and return them sealed with `pads`, the material the sender
/// allocated on its link with this KME.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RelayRequest {
    /// The master SAE (at `path[0]`).
    pub(crate) master: String,
    /// The slave SAEs (at the last KME of `path`).
    pub(crate) slaves: Vec<String>,
    /// Every KME from the master's to the slaves', in order.
    pub(crate) path: Vec<String>,
    /// Number of keys.
    pub(crate) number: u32,
    /// Key size in bits.
    pub(crate) size_bits: u32,
    /// When the slaves' reservation ends (Unix milliseconds).
    pub(crate) expires_at_ms: u64,
    /// One pad per key, of [`pad_bits`] each, in key order.
    pub(crate) pads: Vec<qkd_store::KeyAllocation>,
}

/// One key as a hop passes it back: its ID and its bytes XOR the pad (base64).
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct SealedKey {
    /// The key ID the slaves' KME reserved.
    pub(crate) key_id: Uuid,
    /// The key XOR its pad, base64.
    pub(crate) sealed: String,
}

/// A hop's answer: the keys sealed, and the tag over them.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RelayResponse {
    /// The keys, in order.
    pub(crate) keys: Vec<SealedKey>,
    /// The one-time tag, 32 hex digits.
    pub(crate) tag: String,
}

/// Why a relay failed, as a hop reports it back (status 503 or 409).
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RelayFailure {
    /// What went wrong, for the operator.
    pub(crate) message: String,
    /// The link that failed, if one did (another path may avoid it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) failed_link: Option<[String; 2]>,
}

/// A status request: the allocatable material of every hop of `path` from the receiver on.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct StatusRequest {
    /// Every KME from the master's to the slaves'.
    pub(crate) path: Vec<String>,
}

/// One hop's allocatable material toward the slaves' KME.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct HopStatus {
    /// The KME that allocates on this hop.
    pub(crate) from: String,
    /// The next KME.
    pub(crate) to: String,
    /// Bits `from` may allocate on the link.
    pub(crate) allocatable_bits: u64,
}

/// Bits of each pad for a request of `number` keys of `size_bits`: the key's size, plus its
/// share of the tag's key (32 bytes over all pads, whole bytes per pad).
pub(crate) fn pad_bits(number: u32, size_bits: u32) -> u32 {
    let share_bytes = (ONE_TIME_KEY_BYTES as u32).div_ceil(number.max(1));
    size_bits + 8 * share_bytes
}

/// The tag's key: the bytes of every pad past the key's size, in order, the first 32.
fn tag_key(pads: &[FetchedKey], key_bytes: usize) -> Option<Zeroizing<[u8; ONE_TIME_KEY_BYTES]>> {
    let mut key = Zeroizing::new([0u8; ONE_TIME_KEY_BYTES]);
    let mut filled = 0;
    for p in pads {
        let tail = p.material.get(key_bytes..)?;
        let n = tail.len().min(ONE_TIME_KEY_BYTES - filled);
        key[filled..filled + n].copy_from_slice(&tail[..n]);
        filled += n;
    }
    (filled == ONE_TIME_KEY_BYTES).then_some(key)
}

/// What the tag covers beside the keys: the path and the pair, each after its length.
fn context(path: &[String], master: &str, slaves: &[String]) -> Vec<u8> {
    let mut c = Vec::new();
    for part in path.iter().chain([&master.to_string()]).chain(slaves) {
        c.extend_from_slice(&(part.len() as u64).to_le_bytes());
        c.extend_from_slice(part.as_bytes());
    }
    c
}

/// The keys' IDs and sealed bytes, in order, as the tag covers them.
fn message(ids: &[Uuid], sealed: &[Zeroizing<Vec<u8>>]) -> Vec<u8> {
    let mut m = Vec::new();
    for (id, s) in ids.iter().zip(sealed) {
        m.extend_from_slice(id.as_bytes());
        m.extend_from_slice(&(s.len() as u64).to_le_bytes());
        m.extend_from_slice(s);
    }
    m
}

/// Seals `keys` for the previous hop with `pads` (one per key, each at least the key's length
/// plus its share of the tag key).
pub(crate) fn seal(
    request: &RelayRequest,
    keys: &[FetchedKey],
    pads: &[FetchedKey],
) -> Result<RelayResponse, String> {
    let key_bytes = request.size_bits as usize / 8;
    if keys.len() != pads.len() || keys.iter().any(|k| k.material.len() != key_bytes) {
        return Err("keys and pads do not match".into());
    }
    let tag_key = tag_key(pads, key_bytes).ok_or("pads too short for the tag")?;
    let sealed: Vec<Zeroizing<Vec<u8>>> = keys
        .iter()
        .zip(pads)
        .map(|(k, p)| {
            Zeroizing::new(
                k.material
                    .iter()
                    .zip(p.material.iter())
                    .map(|(a, b)| a ^ b)
                    .collect(),
            )
        })
        .collect();
    let ids: Vec<Uuid> = keys.iter().map(|k| k.id).collect();
    let ctx = context(&request.path, &request.master, &request.slaves);
    let tag = one_time_tag(&ctx, &message(&ids, &sealed), &tag_key);
    let b64 = base64::engine::general_purpose::STANDARD;
    Ok(RelayResponse {
        keys: ids
            .iter()
            .zip(&sealed)
            .map(|(id, s)| SealedKey {
                key_id: *id,
                sealed: b64.encode(s),
            })
            .collect(),
        tag: format!("{tag:032x}"),
    })
}

/// Checks the next hop's answer to `request` and opens it with the pads this KME sent:
/// exactly `number` distinct keys of the right size, and a valid tag; else nothing.
pub(crate) fn open(
    request: &RelayRequest,
    response: &RelayResponse,
    pads: &[FetchedKey],
) -> Result<Vec<FetchedKey>, String> {
    let key_bytes = request.size_bits as usize / 8;
    if response.keys.len() != request.number as usize || pads.len() != response.keys.len() {
        return Err(format!(
            "{} keys in the answer; {} asked",
            response.keys.len(),
            request.number
        ));
    }
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut ids = Vec::with_capacity(response.keys.len());
    let mut sealed = Vec::with_capacity(response.keys.len());
    for k in &response.keys {
        let bytes = Zeroizing::new(
            b64.decode(&k.sealed)
                .map_err(|e| format!("key {}: not base64: {e}", k.key_id))?,
        );
        if bytes.len() != key_bytes {
            return Err(format!(
                "key {}: {} bytes; {key_bytes} expected",
                k.key_id,
                bytes.len()
            ));
        }
        if ids.contains(&k.key_id) {
            return Err(format!("key {} twice in the answer", k.key_id));
        }
        ids.push(k.key_id);
        sealed.push(bytes);
    }
    let tag = u128::from_str_radix(&response.tag, 16)
        .ok()
        .filter(|_| response.tag.len() == 32)
        .ok_or("the tag is not 32 hex digits")?;
    let tag_key = tag_key(pads, key_bytes).ok_or("pads too short for the tag")?;
    let ctx = context(&request.path, &request.master, &request.slaves);
    verify_one_time_tag(&ctx, &message(&ids, &sealed), &tag_key, tag)
        .map_err(|_| "the tag does not verify: the answer was altered".to_string())?;
    Ok(ids
        .into_iter()
        .zip(sealed.iter().zip(pads))
        .map(|(id, (s, p))| FetchedKey {
            id,
            material: Zeroizing::new(
                s.iter()
                    .zip(p.material.iter())
                    .map(|(a, b)| a ^ b)
                    .collect(),
            ),
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(id: u128, bytes: &[u8]) -> FetchedKey {
        FetchedKey {
            id: Uuid::from_u128(id),
            material: Zeroizing::new(bytes.to_vec()),
        }
    }

    fn request(number: u32, size_bits: u32) -> RelayRequest {
        RelayRequest {
            master: "SAE_A".into(),
            slaves: vec!["SAE_C".into()],
            path: vec!["KME_A".into(), "KME_B".into(), "KME_C".into()],
            number,
            size_bits,
            expires_at_ms: 0,
            pads: Vec::new(),
        }
    }

    #[test]
    fn pads_carry_the_tag_key_whatever_the_number_of_keys() {
        assert_eq!(pad_bits(1, 256), 256 + 256);
        assert_eq!(pad_bits(3, 256), 256 + 88);
        assert_eq!(pad_bits(32, 128), 128 + 8);
        assert_eq!(pad_bits(100, 128), 128 + 8);
        for n in 1..70 {
            assert!(n * (pad_bits(n, 0) / 8) >= ONE_TIME_KEY_BYTES as u32);
        }
    }

    #[test]
    fn sealed_keys_open_with_the_same_pads_and_never_otherwise() {
        let req = request(2, 64);
        let pad_len = pad_bits(2, 64) as usize / 8;
        let pads: Vec<FetchedKey> = (0..2u8)
            .map(|i| key(100 + u128::from(i), &vec![0x5a ^ i; pad_len]))
            .collect();
        let keys = vec![key(1, &[1, 2, 3, 4, 5, 6, 7, 8]), key(2, &[9; 8])];
        let resp = seal(&req, &keys, &pads).unwrap();
        // The sealed bytes are the keys XOR the pads.
        let b64 = base64::engine::general_purpose::STANDARD;
        assert_eq!(b64.decode(&resp.keys[1].sealed).unwrap(), vec![9 ^ 0x5b; 8]);
        let opened = open(&req, &resp, &pads).unwrap();
        assert_eq!(opened[0].id, Uuid::from_u128(1));
        assert_eq!(*opened[0].material, vec![1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(*opened[1].material, vec![9; 8]);

        // Any change to a key, its ID, the tag, the path or the pair is refused.
        let reencode = |f: &dyn Fn(&mut RelayResponse)| {
            let mut r: RelayResponse =
                serde_json::from_str(&serde_json::to_string(&resp).unwrap()).unwrap();
            f(&mut r);
            r
        };
        let flipped = reencode(&|r| {
            let mut b = b64.decode(&r.keys[0].sealed).unwrap();
            b[3] ^= 0x10;
            r.keys[0].sealed = b64.encode(b);
        });
        let renamed = reencode(&|r| r.keys[1].key_id = Uuid::from_u128(3));
        let retagged = reencode(&|r| r.tag = format!("{:032x}", 1u128));
        let dropped = reencode(&|r| {
            r.keys.pop();
        });
        let doubled = reencode(&|r| r.keys[1].key_id = r.keys[0].key_id);
        for (what, r) in [
            ("flipped", &flipped),
            ("renamed", &renamed),
            ("retagged", &retagged),
            ("dropped", &dropped),
            ("doubled", &doubled),
        ] {
            assert!(open(&req, r, &pads).is_err(), "{what}");
        }
        let mut other_path = request(2, 64);
        other_path.path[1] = "KME_X".into();
        assert!(open(&other_path, &resp, &pads).is_err());
        let mut other_slave = request(2, 64);
        other_slave.slaves[0] = "SAE_D".into();
        assert!(open(&other_slave, &resp, &pads).is_err());
        // Pads too short for the tag key.
        let short: Vec<FetchedKey> = (0..2).map(|i| key(i, &[0; 9])).collect();
        assert!(seal(&req, &keys, &short).is_err());
    }
}
