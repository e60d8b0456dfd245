//! HSMs over PKCS#11 (the `cryptoki` crate): open a token by label and log in, reseed the token's
//! random generator (`C_SeedRandom`), and the checks of `qkd hsm test` (docs/server.md, "HSMs
//! over PKCS#11").
//!
//! The PIN comes from a file or an environment variable, never from a configuration's text, and
//! is wiped after the login.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Condvar, Mutex, OnceLock};

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki::types::AuthPin;
use zeroize::Zeroizing;

/// Errors of HSM operations, each naming what failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HsmError {
    /// The PKCS#11 module could not be loaded or initialized.
    #[error("PKCS#11 module {path}: {message}")]
    Module {
        /// The module's path.
        path: PathBuf,
        /// What failed.
        message: String,
    },
    /// No slot holds a token with this label.
    #[error("no token labelled {label:?} (tokens present: {found})")]
    NoToken {
        /// The label asked for.
        label: String,
        /// The labels present, comma separated (`none` if none).
        found: String,
    },
    /// The login was refused (wrong PIN, locked PIN, wrong user type).
    #[error("login to token {label:?} as {user}: {message}")]
    Login {
        /// The token.
        label: String,
        /// `user` or `so`.
        user: &'static str,
        /// What the module said.
        message: String,
    },
    /// The PIN could not be read.
    #[error("PIN: {0}")]
    Pin(String),
    /// A PKCS#11 operation failed.
    #[error("{what}: {message}")]
    Operation {
        /// The operation.
        what: &'static str,
        /// What the module said.
        message: String,
    },
}

fn op(what: &'static str) -> impl FnOnce(cryptoki::error::Error) -> HsmError {
    move |e| HsmError::Operation {
        what,
        message: e.to_string(),
    }
}

/// A secret key as [`Hsm::describe_key`] reads it from the token.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KeyFacts {
    /// An AES key (else a generic secret).
    pub aes: bool,
    /// Its length in bytes.
    pub bytes: u64,
    /// CKA_SENSITIVE: its value cannot be read.
    pub sensitive: bool,
    /// CKA_EXTRACTABLE: it can be wrapped out.
    pub extractable: bool,
    /// CKA_TOKEN: it lives beyond the session.
    pub persistent: bool,
    /// CKA_ENCRYPT: it may encrypt (a sealing key only wraps).
    pub encrypts: bool,
    /// The AES key check value (AES keys that may encrypt only).
    pub check_value: Option<[u8; 3]>,
}

/// Who logs in to the token.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HsmUser {
    /// The normal user (CKU_USER).
    #[default]
    User,
    /// The security officer (CKU_SO).
    So,
}

impl HsmUser {
    fn name(self) -> &'static str {
        match self {
            Self::User => "user",
            Self::So => "so",
        }
    }
}

/// Reads a PIN from `file` (its first line; the file must be private: mode 0600 or 0400) or
/// from the environment variable `env`, exactly one of them.
pub fn read_pin(file: Option<&Path>, env: Option<&str>) -> Result<Zeroizing<String>, HsmError> {
    let text = match (file, env) {
        (Some(f), None) => {
            use std::os::unix::fs::PermissionsExt;
            let meta = std::fs::metadata(f)
                .map_err(|e| HsmError::Pin(format!("cannot read {}: {e}", f.display())))?;
            if meta.is_dir() {
                return Err(HsmError::Pin(format!("{} is a directory", f.display())));
            }
            let mode = meta.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                return Err(HsmError::Pin(format!(
                    "{} has mode {mode:o}; a PIN file must be readable by its owner only \
                     (chmod 600)",
                    f.display()
                )));
            }
            Zeroizing::new(
                std::fs::read_to_string(f)
                    .map_err(|e| HsmError::Pin(format!("cannot read {}: {e}", f.display())))?,
            )
        }
        (None, Some(v)) => Zeroizing::new(
            std::env::var(v)
                .map_err(|_| HsmError::Pin(format!("environment variable {v} is not set")))?,
        ),
        _ => {
            return Err(HsmError::Pin(
                "give exactly one of a PIN file or a PIN environment variable".into(),
            ));
        }
    };
    let pin = Zeroizing::new(text.lines().next().unwrap_or("").to_string());
    if pin.is_empty() {
        return Err(HsmError::Pin("the PIN is empty".into()));
    }
    Ok(pin)
}

/// The process's one initialized context of `module`: PKCS#11 allows a single `C_Initialize`
/// per library and process, so HSMs on the same module, and reseeds that overlap, share it.
/// A module that fails to load or initialize is not kept (the next call tries again).
fn context(module: &Path) -> Result<Pkcs11, String> {
    static CONTEXTS: OnceLock<Mutex<HashMap<PathBuf, Pkcs11>>> = OnceLock::new();
    let mut contexts = CONTEXTS
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    if let Some(c) = contexts.get(module) {
        return Ok(c.clone());
    }
    if !module.is_file() {
        return Err("no such file".into());
    }
    let c = Pkcs11::new(module).map_err(|e| e.to_string())?;
    c.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK))
        .map_err(|e| format!("C_Initialize: {e}"))?;
    contexts.insert(module.to_path_buf(), c.clone());
    Ok(c)
}

/// The right to use one token of a module in this process, held by one [`Hsm`] at a time.
/// PKCS#11 login state belongs to the application, not the session: a second session would be
/// logged in already (and its PIN never checked) while the first is open. So each `Hsm` opens,
/// logs in, works and closes in its turn; the login ends with its session.
struct TokenTurn {
    key: (PathBuf, String),
}

static TURNS: (Mutex<Vec<(PathBuf, String)>>, Condvar) = (Mutex::new(Vec::new()), Condvar::new());

impl TokenTurn {
    /// Waits until no other `Hsm` of this process uses `token` of `module`.
    fn take(module: &Path, token: &str) -> Self {
        let key = (module.to_path_buf(), token.to_string());
        let (busy, freed) = &TURNS;
        let mut b = busy.lock().unwrap_or_else(|p| p.into_inner());
        while b.contains(&key) {
            b = freed.wait(b).unwrap_or_else(|p| p.into_inner());
        }
        b.push(key.clone());
        Self { key }
    }
}

impl Drop for TokenTurn {
    fn drop(&mut self) {
        let (busy, freed) = &TURNS;
        busy.lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|k| k != &self.key);
        freed.notify_all();
    }
}

/// A logged-in session with one token; the only one of this process while it lives.
pub struct Hsm {
    /// Closed (and so logged out) before `_turn` is released: fields drop in order.
    session: Session,
    label: String,
    _turn: TokenTurn,
}

impl std::fmt::Debug for Hsm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hsm").field("token", &self.label).finish()
    }
}

impl Hsm {
    /// Opens the token of a configured `[[hsm]]`, with the PIN from its file or variable.
    pub fn open_configured(h: &crate::config::HsmConfig) -> Result<Self, HsmError> {
        let pin = read_pin(h.pin_file.as_deref(), h.pin_env.as_deref())?;
        Self::open(&h.module, &h.token, h.user, &pin)
    }

    /// Loads `module`, finds the token labelled `token` and logs in as `user` with `pin`.
    pub fn open(module: &Path, token: &str, user: HsmUser, pin: &str) -> Result<Self, HsmError> {
        let module_err = |message: String| HsmError::Module {
            path: module.to_path_buf(),
            message,
        };
        let turn = TokenTurn::take(module, token);
        let context = context(module).map_err(module_err)?;
        let slots = context
            .get_slots_with_token()
            .map_err(|e| module_err(format!("listing slots: {e}")))?;
        let mut found = Vec::new();
        let mut slot = None;
        for s in slots {
            let Ok(info) = context.get_token_info(s) else {
                continue;
            };
            let label = info.label().trim_end().to_string();
            if label == token && slot.is_none() {
                slot = Some(s);
            }
            if !label.is_empty() {
                found.push(label);
            }
        }
        let Some(slot) = slot else {
            return Err(HsmError::NoToken {
                label: token.to_string(),
                found: if found.is_empty() {
                    "none".into()
                } else {
                    found.join(", ")
                },
            });
        };
        let session = context
            .open_rw_session(slot)
            .map_err(op("opening a session"))?;
        let user_type = match user {
            HsmUser::User => UserType::User,
            HsmUser::So => UserType::So,
        };
        session
            .login(user_type, Some(&AuthPin::from(pin)))
            .map_err(|e| HsmError::Login {
                label: token.to_string(),
                user: user.name(),
                message: e.to_string(),
            })?;
        Ok(Self {
            session,
            label: token.to_string(),
            _turn: turn,
        })
    }

    /// The token's label.
    pub fn label(&self) -> &str {
        &self.label
    }

    /// Mixes `seed` into the token's random generator (`C_SeedRandom`).
    pub fn seed_random(&self, seed: &[u8]) -> Result<(), HsmError> {
        self.session.seed_random(seed).map_err(op("C_SeedRandom"))
    }

    /// Stores `key` in the token as a persistent secret-key object labelled `label` with
    /// CKA_ID `id`: sensitive and not extractable, so its value never leaves the token again.
    /// AES (encrypt, decrypt) for 16, 24 or 32 bytes, else a generic secret (sign, verify).
    pub fn import_key(&self, label: &str, id: &[u8], key: &[u8]) -> Result<(), HsmError> {
        let usage = if matches!(key.len(), 16 | 24 | 32) {
            [
                Attribute::KeyType(KeyType::AES),
                Attribute::Encrypt(true),
                Attribute::Decrypt(true),
            ]
        } else {
            [
                Attribute::KeyType(KeyType::GENERIC_SECRET),
                Attribute::Sign(true),
                Attribute::Verify(true),
            ]
        };
        let mut template = vec![
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::Token(true),
            Attribute::Private(true),
            Attribute::Sensitive(true),
            Attribute::Extractable(false),
            Attribute::Label(label.as_bytes().to_vec()),
            Attribute::Id(id.to_vec()),
        ];
        template.extend(usage);
        template.push(Attribute::Value(key.to_vec()));
        self.create_wiping(&mut template).map(|_| ())
    }

    /// The secret-key objects labelled `label`.
    fn secret_keys(&self, label: &str) -> Result<Vec<ObjectHandle>, HsmError> {
        self.session
            .find_objects(&[
                Attribute::Class(ObjectClass::SECRET_KEY),
                Attribute::Label(label.as_bytes().to_vec()),
            ])
            .map_err(op("finding objects"))
    }

    /// Destroys every secret-key object labelled `label`; returns how many there were.
    pub fn destroy_keys(&self, label: &str) -> Result<usize, HsmError> {
        let found = self.secret_keys(label)?;
        for h in &found {
            self.session
                .destroy_object(*h)
                .map_err(op("destroying an object"))?;
        }
        Ok(found.len())
    }

    /// What the token says of the one secret key labelled `label`, with its key check value
    /// when it is an AES key: the first 3 bytes of its AES-ECB encryption of a zero block (the
    /// usual KCV), so its value can be compared without taking it out of the token.
    pub fn describe_key(&self, label: &str) -> Result<KeyFacts, HsmError> {
        let found = self.secret_keys(label)?;
        let [key] = found[..] else {
            return Err(HsmError::Operation {
                what: "finding the key",
                message: format!("{} secret keys labelled {label:?}", found.len()),
            });
        };
        let mut facts = KeyFacts::default();
        let attributes = self
            .session
            .get_attributes(
                key,
                &[
                    AttributeType::KeyType,
                    AttributeType::ValueLen,
                    AttributeType::Sensitive,
                    AttributeType::Extractable,
                    AttributeType::Token,
                    AttributeType::Encrypt,
                ],
            )
            .map_err(op("reading the key's attributes"))?;
        for a in attributes {
            match a {
                Attribute::KeyType(t) => facts.aes = t == KeyType::AES,
                Attribute::ValueLen(n) => facts.bytes = u64::from(n),
                Attribute::Sensitive(b) => facts.sensitive = b,
                Attribute::Extractable(b) => facts.extractable = b,
                Attribute::Token(b) => facts.persistent = b,
                Attribute::Encrypt(b) => facts.encrypts = b,
                _ => {}
            }
        }
        if facts.aes && facts.encrypts {
            let block = self
                .session
                .encrypt(&Mechanism::AesEcb, key, &[0u8; 16])
                .map_err(op("C_Encrypt (AES-ECB)"))?;
            facts.check_value = Some([block[0], block[1], block[2]]);
        }
        Ok(facts)
    }

    /// Wraps `kek` (32 bytes) under the token's persistent AES-256 key labelled `label`
    /// (AES key wrap with padding, RFC 5649), made first if the token has none: sensitive, not
    /// extractable, only for wrapping. The result can be stored anywhere; only this token
    /// unwraps it.
    pub fn seal(&self, label: &str, kek: &[u8; 32]) -> Result<Vec<u8>, HsmError> {
        let sealing = match self.sealing_key(label)? {
            Some(k) => k,
            None => self
                .session
                .generate_key(
                    &Mechanism::AesKeyGen,
                    &[
                        Attribute::Token(true),
                        Attribute::Private(true),
                        Attribute::Sensitive(true),
                        Attribute::Extractable(false),
                        Attribute::Label(label.as_bytes().to_vec()),
                        Attribute::ValueLen(32.into()),
                        Attribute::Wrap(true),
                        Attribute::Unwrap(true),
                        Attribute::Encrypt(false),
                        Attribute::Decrypt(false),
                        Attribute::Sign(false),
                        Attribute::Verify(false),
                    ],
                )
                .map_err(op("generating the sealing key"))?,
        };
        let plain = self.create_session_secret("qkd store kek", kek)?;
        let wrapped = self
            .session
            .wrap_key(&Mechanism::AesKeyWrapPad, sealing, plain)
            .map_err(op("C_WrapKey"));
        let _ = self.session.destroy_object(plain);
        wrapped
    }

    /// Unwraps what [`Hsm::seal`] made with the key labelled `label` into 32 bytes.
    pub fn unseal(&self, label: &str, wrapped: &[u8]) -> Result<Zeroizing<[u8; 32]>, HsmError> {
        let sealing = self
            .sealing_key(label)?
            .ok_or_else(|| HsmError::Operation {
                what: "finding the sealing key",
                message: format!("the token holds no key labelled {label:?}"),
            })?;
        let plain = self
            .session
            .unwrap_key(
                &Mechanism::AesKeyWrapPad,
                sealing,
                wrapped,
                &[
                    Attribute::Class(ObjectClass::SECRET_KEY),
                    Attribute::KeyType(KeyType::GENERIC_SECRET),
                    Attribute::Token(false),
                    Attribute::Sensitive(false),
                    Attribute::Extractable(true),
                ],
            )
            .map_err(op("C_UnwrapKey (is this the token that sealed it?)"))?;
        let value = self
            .session
            .get_attributes(plain, &[AttributeType::Value])
            .map_err(op("reading the unwrapped key"));
        let _ = self.session.destroy_object(plain);
        let value = match value?.into_iter().next() {
            Some(Attribute::Value(v)) => Zeroizing::new(v),
            _ => Zeroizing::new(Vec::new()),
        };
        <[u8; 32]>::try_from(value.as_slice())
            .map(Zeroizing::new)
            .map_err(|_| HsmError::Operation {
                what: "unsealing",
                message: format!("the token gave {} bytes, not 32", value.len()),
            })
    }

    /// The one secret key labelled `label`, if any (several are an error: which seals?).
    fn sealing_key(&self, label: &str) -> Result<Option<ObjectHandle>, HsmError> {
        match self.secret_keys(label)?[..] {
            [] => Ok(None),
            [k] => Ok(Some(k)),
            _ => Err(HsmError::Operation {
                what: "finding the sealing key",
                message: format!("several keys labelled {label:?}; expected one"),
            }),
        }
    }

    /// A session (not persistent) secret-key object labelled `label` holding `key`: AES for
    /// 16, 24 or 32 bytes, else a generic secret; extractable, so it can be wrapped.
    fn create_session_secret(&self, label: &str, key: &[u8]) -> Result<ObjectHandle, HsmError> {
        let key_type = if matches!(key.len(), 16 | 24 | 32) {
            KeyType::AES
        } else {
            KeyType::GENERIC_SECRET
        };
        let mut template = [
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::KeyType(key_type),
            Attribute::Token(false),
            Attribute::Private(true),
            Attribute::Extractable(true),
            Attribute::Label(label.as_bytes().to_vec()),
            Attribute::Value(key.to_vec()),
        ];
        self.create_wiping(&mut template)
    }

    /// `C_CreateObject` from `template`, whose last attribute is the value: wiped afterwards.
    fn create_wiping(&self, template: &mut [Attribute]) -> Result<ObjectHandle, HsmError> {
        let created = self.session.create_object(template);
        if let Some(Attribute::Value(v)) = template.last_mut() {
            zeroize::Zeroize::zeroize(v);
        }
        created.map_err(op("creating a secret-key object"))
    }

    /// The checks of `qkd hsm test`, in order, each with its outcome: SeedRandom, random
    /// bytes, a session secret-key object, and an AES key wrap of it and back (what sealing a
    /// store's key-encryption key in the HSM needs). Objects made here live in the session only.
    pub fn self_test(&self, seed: &[u8]) -> Vec<(&'static str, Result<String, HsmError>)> {
        let mut out = Vec::new();
        out.push((
            "C_SeedRandom",
            self.seed_random(seed)
                .map(|()| format!("{} bytes mixed in", seed.len())),
        ));
        let mut random = Zeroizing::new([0u8; 32]);
        out.push((
            "C_GenerateRandom",
            self.session
                .generate_random_slice(&mut random[..])
                .map_err(op("C_GenerateRandom"))
                .map(|()| "32 bytes".to_string()),
        ));
        let object = self.create_session_secret("qkd hsm test", &random[..]);
        let handle = object.as_ref().ok().copied();
        out.push((
            "create a secret-key object",
            object.map(|_| "AES-256, session object".to_string()),
        ));
        if let Some(h) = handle {
            out.push(("wrap and unwrap (AES key wrap)", self.wrap_round_trip(h)));
            let _ = self.session.destroy_object(h);
        }
        out
    }

    /// Wraps `key` under a fresh session AES key and unwraps it again.
    fn wrap_round_trip(&self, key: ObjectHandle) -> Result<String, HsmError> {
        let kek = self
            .session
            .generate_key(
                &Mechanism::AesKeyGen,
                &[
                    Attribute::Token(false),
                    Attribute::ValueLen(32.into()),
                    Attribute::Wrap(true),
                    Attribute::Unwrap(true),
                ],
            )
            .map_err(op("generating a wrapping key"))?;
        let result = (|| {
            let wrapped = self
                .session
                .wrap_key(&Mechanism::AesKeyWrapPad, kek, key)
                .map_err(op("C_WrapKey"))?;
            let back = self
                .session
                .unwrap_key(
                    &Mechanism::AesKeyWrapPad,
                    kek,
                    &wrapped,
                    &[
                        Attribute::Class(ObjectClass::SECRET_KEY),
                        Attribute::KeyType(KeyType::AES),
                        Attribute::Token(false),
                    ],
                )
                .map_err(op("C_UnwrapKey"))?;
            let _ = self.session.destroy_object(back);
            Ok(format!("{} bytes wrapped", wrapped.len()))
        })();
        let _ = self.session.destroy_object(kek);
        result
    }
}
