//! The messages of a block's session and their encoding.
//!
//! Every message is one [`Envelope`]: a version byte ([`SESSION_WIRE_VERSION`]), then postcard of
//! the block ID, the sender's sequence number (0, 1, 2, ... per block and direction, so a
//! replayed, dropped or reordered message is seen at once) and the [`Body`]. The envelope bytes
//! are what each side's transcript authenticates ([`crate::auth`]), so a change to any of them,
//! framing included, fails the block's tag. A driver routes messages by
//! [`block_id_of`], which reads the ID without decoding the rest.

use serde::{Deserialize, Serialize};

use super::SessionError;
use crate::confirm::ConfirmMessage;
use crate::estimate::SampleMessage;
use crate::pipeline::PipelineConfig;
use crate::reconcile::frames::FrameBatch;
use crate::reconcile::ldpc::protocol::LdpcMessage;

/// Version byte of the session encoding.
pub const SESSION_WIRE_VERSION: u8 = 1;

/// Version of the protocol a hello announces (what the two sides must agree on).
pub const PROTOCOL_VERSION: u16 = 1;

/// Longest block ID accepted, in bytes.
pub const MAX_BLOCK_ID_BYTES: usize = 128;

/// One message of a block's session.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Envelope {
    /// The block the message belongs to (what both sides got from their raw source).
    pub block_id: String,
    /// The sender's sequence number in this block, from 0.
    pub seq: u32,
    /// The message.
    pub body: Body,
}

/// What a message says. The comment on each variant names its direction.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Body {
    /// Alice -> Bob, first: the protocol version, parameters, the block's length, the link's
    /// Cascade shuffle seed and the positions of the block's authentication key.
    Hello(Hello),
    /// Alice -> Bob: her disclosed sample (public seed and bits).
    Sample(SampleMessage),
    /// Bob -> Alice: errors in the sample; both sides derive the QBER bound from it.
    Estimate {
        /// Positions of the sample where the two sides differ.
        sample_errors: u64,
    },
    /// Either way: one round of every frame's Cascade messages.
    Reconcile(FrameBatch),
    /// Alice -> Bob: one confirmation challenge per frame of the round, in frame order.
    Confirm {
        /// The challenges.
        challenges: Vec<ConfirmMessage>,
    },
    /// Bob -> Alice: whether each challenged frame's tags matched.
    Verdicts {
        /// One verdict per challenge.
        matched: Vec<bool>,
        /// Errors Bob's Cascade corrected so far in the block (for the report).
        errors_corrected: u64,
    },
    /// Alice -> Bob: reconcile the frames that failed confirmation again, with these plans.
    Retry {
        /// The fresh public shuffle seed of the retry.
        shuffle_seed: [u8; 32],
    },
    /// Alice -> Bob: the secret length she computed and the public Toeplitz seed.
    Amplify {
        /// Final key bits (Bob compares with his own computation).
        secret_bits: u64,
        /// The seed, packed (DESIGN §4 order), `ceil(bits / 8)` bytes.
        seed: Vec<u8>,
    },
    /// Either way, last: the Wegman-Carter tag of everything the sender sent in this block.
    Tag {
        /// The tag.
        tag: u128,
    },
    /// Either way: the sender ended the block without key, for this reason.
    Abort {
        /// Why.
        reason: String,
    },
    /// Either way, on LDPC links instead of `Reconcile`: Alice's syndromes and reveals, Bob's
    /// requests and his `Done` (last here so that the other variants keep their encoding).
    Ldpc(LdpcMessage),
}

impl Body {
    /// Short name of the message kind, for errors.
    pub fn kind(&self) -> &'static str {
        match self {
            Body::Hello(_) => "Hello",
            Body::Sample(_) => "Sample",
            Body::Estimate { .. } => "Estimate",
            Body::Reconcile(_) => "Reconcile",
            Body::Confirm { .. } => "Confirm",
            Body::Verdicts { .. } => "Verdicts",
            Body::Retry { .. } => "Retry",
            Body::Amplify { .. } => "Amplify",
            Body::Tag { .. } => "Tag",
            Body::Abort { .. } => "Abort",
            Body::Ldpc(_) => "Ldpc",
        }
    }
}

/// Alice's hello.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Hello {
    /// [`PROTOCOL_VERSION`].
    pub protocol: u16,
    /// The parameters both sides must share.
    pub params: HelloParams,
    /// Raw bits of the block, sample included.
    pub raw_bits: u64,
    /// The link's public Cascade shuffle seed (plans are reused across the link's blocks).
    pub shuffle_seed: [u8; 32],
    /// Position of the hash key in the authentication pool ([`crate::auth::AuthLease`]).
    pub hash_key_position: u64,
    /// Position of the block's first pad.
    pub pad_position: u64,
}

/// The settings that decide the protocol and the key's length: both sides must hold the same.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HelloParams {
    /// Bits disclosed per block to estimate the QBER.
    pub sample_bits: u64,
    /// Reconciliation algorithm name ([`crate::reconcile::algorithm::Algorithm::parse`]).
    pub algorithm: String,
    /// Bits per frame (0: one Cascade frame, or the largest LDPC frame).
    pub frame_bits: u64,
    /// Failure probability of the QBER bound.
    pub eps_pe: f64,
    /// Secrecy parameter.
    pub eps_sec: f64,
    /// Correctness parameter.
    pub eps_cor: f64,
    /// Top rung of the QBER ladder.
    pub max_qber: f64,
}

impl HelloParams {
    /// The parameters of `cfg` (the Toeplitz method is each side's own choice: every method
    /// gives the same bits).
    pub fn of(cfg: &PipelineConfig) -> Self {
        Self {
            sample_bits: cfg.sample_bits as u64,
            algorithm: cfg.algorithm.clone(),
            frame_bits: cfg.frame_bits as u64,
            eps_pe: cfg.eps_pe,
            eps_sec: cfg.eps_sec,
            eps_cor: cfg.eps_cor,
            max_qber: cfg.max_qber,
        }
    }

    /// The first setting in which `theirs` differs from `self`, described.
    pub fn mismatch(&self, theirs: &HelloParams) -> Option<String> {
        let fields = [
            (
                "sample_bits",
                self.sample_bits.to_string(),
                theirs.sample_bits.to_string(),
            ),
            (
                "algorithm",
                self.algorithm.clone(),
                theirs.algorithm.clone(),
            ),
            (
                "frame_bits",
                self.frame_bits.to_string(),
                theirs.frame_bits.to_string(),
            ),
            ("eps_pe", self.eps_pe.to_string(), theirs.eps_pe.to_string()),
            (
                "eps_sec",
                self.eps_sec.to_string(),
                theirs.eps_sec.to_string(),
            ),
            (
                "eps_cor",
                self.eps_cor.to_string(),
                theirs.eps_cor.to_string(),
            ),
            (
                "max_qber",
                self.max_qber.to_string(),
                theirs.max_qber.to_string(),
            ),
        ];
        fields
            .into_iter()
            .find(|(_, ours, peer)| ours != peer)
            .map(|(name, ours, peer)| format!("{name}: ours {ours}, peer's {peer}"))
    }
}

impl Envelope {
    /// The wire encoding.
    pub fn encode(&self) -> Result<Vec<u8>, SessionError> {
        let mut out = vec![SESSION_WIRE_VERSION];
        postcard::to_io(self, &mut out)
            .map_err(|e| SessionError::Malformed(format!("cannot encode message: {e}")))?;
        Ok(out)
    }

    /// Decodes one message, refusing another version, an over-long block ID, malformed bodies
    /// and trailing bytes.
    pub fn decode(bytes: &[u8]) -> Result<Self, SessionError> {
        let body = check_version(bytes)?;
        let (env, rest) = postcard::take_from_bytes::<Self>(body)
            .map_err(|e| SessionError::Malformed(format!("undecodable message: {e}")))?;
        if !rest.is_empty() {
            return Err(SessionError::Malformed(format!(
                "{} trailing bytes after the message",
                rest.len()
            )));
        }
        check_block_id(&env.block_id).map_err(SessionError::Malformed)?;
        Ok(env)
    }
}

/// Whether `bytes` is (meant as) a session message: it starts with this wire's version byte.
/// A transport that carries messages of its own beside the sessions' starts them with another.
pub fn is_session_message(bytes: &[u8]) -> bool {
    bytes.first() == Some(&SESSION_WIRE_VERSION)
}

/// The block ID of an encoded message, read without decoding the body (for routing).
pub fn block_id_of(bytes: &[u8]) -> Result<String, SessionError> {
    let body = check_version(bytes)?;
    let (id, _) = postcard::take_from_bytes::<String>(body)
        .map_err(|e| SessionError::Malformed(format!("undecodable block ID: {e}")))?;
    check_block_id(&id).map_err(SessionError::Malformed)?;
    Ok(id)
}

/// Checks a block ID: 1 to [`MAX_BLOCK_ID_BYTES`] bytes, no control characters; the error says
/// what is wrong.
pub fn check_block_id(id: &str) -> Result<(), String> {
    if id.is_empty() || id.len() > MAX_BLOCK_ID_BYTES || id.chars().any(char::is_control) {
        return Err(format!(
            "block ID {id:?}: expected 1 to {MAX_BLOCK_ID_BYTES} bytes without control characters"
        ));
    }
    Ok(())
}

fn check_version(bytes: &[u8]) -> Result<&[u8], SessionError> {
    match bytes.split_first() {
        Some((&SESSION_WIRE_VERSION, body)) => Ok(body),
        Some((&v, _)) => Err(SessionError::Malformed(format!(
            "wire version {v}; expected {SESSION_WIRE_VERSION}"
        ))),
        None => Err(SessionError::Malformed("empty message".into())),
    }
}
