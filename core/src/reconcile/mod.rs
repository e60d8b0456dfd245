//! Two-party error reconciliation.
//!
//! [`algorithm`] names what reconciles a block: a Cascade variant or LDPC ([`ldpc`]).
//! [`cascade`] holds the Cascade protocol as two sans-IO state machines, Alice (holds the
//! reference key and answers parity questions) and Bob (holds the noisy key, asks and
//! corrects), exchanging [`message::Message`] values. [`frames`] runs one party per frame of a
//! large block, every frame's messages of a round in one batch. [`loopback::LoopbackLink`] runs
//! both in one process; [`experiment`] sweeps variants, QBERs and block sizes and reports efficiency,
//! frame error rate, round trips and throughput. [`testkit`] makes seeded key pairs with an
//! exact number of errors for tests, benchmarks and the harness. Key confirmation after
//! reconciliation lives in [`crate::confirm`].

pub mod algorithm;
pub mod cascade;
pub mod experiment;
pub mod frames;
pub mod ldpc;
pub mod loopback;
pub mod message;
pub mod testkit;

/// Errors of a reconciliation session: bad parameters or a peer's message that is malformed,
/// out of order or inconsistent. After one of these the session is poisoned.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum ReconcileError {
    /// Parameters that no run can use.
    #[error("invalid reconciliation parameters: {0}")]
    BadParams(String),
    /// A key of the wrong length.
    #[error("key has {got} bits; expected {expected}")]
    KeyLength {
        /// Length given.
        got: usize,
        /// Length expected.
        expected: usize,
    },
    /// The peer's parameters differ from the plan this side was configured with.
    #[error("peer's parameters differ from this side's plan: {0}")]
    ParamsMismatch(String),
    /// A message encoded with another wire version.
    #[error("message has wire version {got}; expected {expected}")]
    WrongVersion {
        /// Version byte received.
        got: u8,
        /// Version this side speaks.
        expected: u8,
    },
    /// Bytes that do not decode to a message.
    #[error("malformed message: {0}")]
    Malformed(String),
    /// A list in a message has the wrong number of entries.
    #[error("{what} has {got} entries; expected {expected}")]
    WrongLength {
        /// What was counted.
        what: &'static str,
        /// Entries received.
        got: usize,
        /// Entries expected.
        expected: usize,
    },
    /// A message that is not valid in the current state.
    #[error("unexpected {got} message while {state}")]
    Unexpected {
        /// Kind of message received.
        got: &'static str,
        /// What this side was waiting for.
        state: &'static str,
    },
    /// A message for another round.
    #[error("message for round {got}; expected round {expected}")]
    OutOfOrder {
        /// Round received.
        got: u32,
        /// Round expected.
        expected: u32,
    },
    /// A question outside the plan (pass or range out of bounds).
    #[error("invalid question: {0}")]
    BadQuestion(String),
    /// The randomness source failed while drawing a seed.
    #[error("cannot draw a seed: {0}")]
    Randomness(String),
    /// The session failed earlier and accepts nothing more.
    #[error("session already failed")]
    Poisoned,
}

/// Replaces `out` with the wire form of a reconciliation message: `version`, then postcard
/// (reusing `out`'s allocation). `what` names the message in errors.
pub(crate) fn encode_versioned_into<T: serde::Serialize>(
    version: u8,
    value: &T,
    out: &mut Vec<u8>,
    what: &str,
) -> Result<(), ReconcileError> {
    out.clear();
    out.push(version);
    postcard::to_io(value, out)
        .map_err(|e| ReconcileError::Malformed(format!("cannot encode {what}: {e}")))?;
    Ok(())
}

/// [`encode_versioned_into`] a new buffer.
pub(crate) fn encode_versioned<T: serde::Serialize>(
    version: u8,
    value: &T,
    what: &str,
) -> Result<Vec<u8>, ReconcileError> {
    let mut out = Vec::new();
    encode_versioned_into(version, value, &mut out, what)?;
    Ok(out)
}

/// Decodes [`encode_versioned_into`]'s form, rejecting another version, malformed bodies and
/// trailing bytes.
pub(crate) fn decode_versioned<T: serde::de::DeserializeOwned>(
    version: u8,
    bytes: &[u8],
    what: &str,
) -> Result<T, ReconcileError> {
    match bytes.split_first() {
        Some((&v, body)) if v == version => match postcard::take_from_bytes(body) {
            Ok((value, [])) => Ok(value),
            Ok((_, rest)) => Err(ReconcileError::Malformed(format!(
                "{} trailing bytes after the {what}",
                rest.len()
            ))),
            Err(e) => Err(ReconcileError::Malformed(format!(
                "undecodable {what}: {e}"
            ))),
        },
        Some((&v, _)) => Err(ReconcileError::WrongVersion {
            got: v,
            expected: version,
        }),
        None => Err(ReconcileError::Malformed(format!("empty {what}"))),
    }
}

/// Binary entropy, shared with the finite-key bound.
pub use crate::amplify::binary_entropy;

/// Reconciliation efficiency (DESIGN §4): `disclosed / (n h(errors / n))`, with the error rate
/// *realized* in the block (the number of differences actually present divided by `n`), which
/// is what the experiment harness reports. Its key pairs carry exactly `round(qber * n)`
/// errors, so realized and nominal rates agree up to that rounding. Infinite when the block
/// had no error and something was disclosed.
pub fn efficiency(disclosed: u64, n: usize, errors: u64) -> f64 {
    let h = binary_entropy(errors as f64 / n.max(1) as f64);
    disclosed as f64 / (n as f64 * h)
}

/// The efficiency that counts failed frames as fully disclosed (their bits are dropped, so
/// for the key rate they cost `1 / h(QBER)` each): `(1 - fer) f + fer / h(qber)`, with `f` the
/// mean efficiency of the frames that succeeded. Equal to `f` when no frame failed.
pub fn efficiency_with_failures(f: f64, fer: f64, qber: f64) -> f64 {
    if fer == 0.0 {
        return f;
    }
    (1.0 - fer) * f + fer / binary_entropy(qber)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn efficiency_with_failures_counts_failed_frames_as_disclosed() {
        // h(0.02) = 0.1414405 (worked by hand); 0.99 * 1.1 + 0.01 / 0.1414405 = 1.159701.
        assert!((efficiency_with_failures(1.1, 0.01, 0.02) - 1.159701).abs() < 1e-5);
        // Every frame failed: 1 / h.
        assert!((efficiency_with_failures(1.1, 1.0, 0.02) - 7.070109).abs() < 1e-5);
        // No failure: f itself, even at QBER 0 where 1 / h is infinite.
        assert_eq!(efficiency_with_failures(1.2, 0.0, 0.0), 1.2);
    }
}
