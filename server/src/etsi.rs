//! The ETSI GS QKD 014 V1.1.1 data formats (Tables 9 to 13), shared by server and client.
#![allow(non_snake_case)]

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use zeroize::Zeroize;

/// Status (Table 9).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Status {
    /// KME ID of the KME answering.
    pub source_KME_ID: String,
    /// KME ID of the KME the slave SAE is attached to.
    pub target_KME_ID: String,
    /// The calling master SAE.
    pub master_SAE_ID: String,
    /// The slave SAE named in the path.
    pub slave_SAE_ID: String,
    /// Default key size in bits.
    pub key_size: u64,
    /// Keys of `key_size` bits available to this master now.
    pub stored_key_count: u64,
    /// Most keys of `key_size` bits the KME holds.
    pub max_key_count: u64,
    /// Most keys per request.
    pub max_key_per_request: u64,
    /// Largest key size in bits.
    pub max_key_size: u64,
    /// Smallest key size in bits.
    pub min_key_size: u64,
    /// Most additional slave SAE IDs per request (0: no multicast).
    pub max_SAE_ID_count: u64,
    /// What the standard lacks: reservation TTL, link state, pool counts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_extension: Option<Value>,
}

/// Key request (Table 10). Every field is optional.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyRequest {
    /// Number of keys (default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub number: Option<u64>,
    /// Key size in bits (default: Status `key_size`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    /// Further slaves allowed to fetch the same keys (multicast).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub additional_slave_SAE_IDs: Option<Vec<String>>,
    /// Extensions the KME must honour (none is supported).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extension_mandatory: Option<Vec<Map<String, Value>>>,
    /// Extensions the KME may ignore (all are ignored).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extension_optional: Option<Vec<Map<String, Value>>>,
}

/// One key (Table 11). `key` is base64 (RFC 4648); zeroized on drop, never printed.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
pub struct Key {
    /// Key ID (a UUID).
    pub key_ID: String,
    /// Optional extension.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_ID_extension: Option<Value>,
    /// The key, base64.
    pub key: String,
    /// Optional extension.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_extension: Option<Value>,
}

impl Drop for Key {
    fn drop(&mut self) {
        self.key.zeroize();
    }
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Key")
            .field("key_ID", &self.key_ID)
            .field("key_base64_len", &self.key.len())
            .finish()
    }
}

/// Key container (Table 11).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct KeyContainer {
    /// The keys.
    pub keys: Vec<Key>,
    /// Optional extension.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_container_extension: Option<Value>,
}

/// One key ID (Table 12).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyIdEntry {
    /// The key ID.
    pub key_ID: String,
    /// Optional extension (ignored).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_ID_extension: Option<Value>,
}

/// Key IDs (Table 12): the body of POST dec_keys.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyIds {
    /// The IDs.
    pub key_IDs: Vec<KeyIdEntry>,
    /// Optional extension (ignored).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_IDs_extension: Option<Value>,
}

/// Error (Table 13), the body of every 400, 401 and 503.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// What went wrong.
    pub message: String,
    /// Details: an array of objects.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub details: Option<Vec<Map<String, Value>>>,
}

/// The standard's messages.
pub mod messages {
    /// Size not a multiple of 8.
    pub const SIZE_MULTIPLE_OF_8: &str = "size shall be a multiple of 8";
    /// Unsupported mandatory extension.
    pub const EXT_MANDATORY_UNSUPPORTED: &str =
        "not all extension_mandatory parameters are supported";
    /// Unknown or consumed key IDs.
    pub const KEYS_NOT_FOUND: &str = "one or more keys specified are not found on KME";
}
