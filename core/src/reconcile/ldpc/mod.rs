//! LDPC reconciliation: Alice sends syndromes of a quasi-cyclic LDPC code once, Bob decodes;
//! in blind mode Alice reveals punctured bits in a few short rounds for the frames Bob could not
//! decode.
//!
//! - [`code`]: QC base matrices, their text format and girth;
//! - [`construct`]: how the built-in codes are made (degree profile, seeded QC-PEG);
//! - [`codes`]: the built-in mother codes (`core/data/ldpc/`);
//! - [`decoder`]: layered normalized min-sum on SIMD lanes of frames, and a float reference;
//! - [`harness`]: LDPC in the experiment harness and `qkd bench reconcile`;
//! - [`protocol`]: rate adaption and the one-way and blind protocols as sans-IO parties.

pub mod code;
pub mod codes;
pub mod construct;
pub mod decoder;
pub mod harness;
pub mod protocol;
