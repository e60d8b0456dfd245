//! qkd-core: the QKD post-processing engine.
//!
//! Raw sifted key blocks go in; final secret keys come out. The stages, in order:
//! [`estimate`] (QBER from a disclosed sample), [`reconcile`] (Cascade, as two sans-IO parties),
//! [`confirm`] (universal-hash tag compare), [`amplify`] (finite-key secret length and Toeplitz
//! hashing), [`entropy`] (health of the output). [`session`] runs a block's whole life as one
//! sans-IO state machine per side, whose messages any transport carries, and [`auth`]
//! authenticates each direction's transcript (Wegman-Carter; [`gf128`] is the field both it and
//! [`confirm`] hash over). [`pipeline`] drives both sides in one process; final keys go to a store (the
//! `qkd-store` crate). Every key bit lives in a [`bits::BitBlock`]. Randomness comes from a
//! [`rng::RandomSource`]: the OS CSPRNG unless configured otherwise.
#![deny(missing_docs)]

pub mod amplify;
pub mod auth;
pub mod bits;
pub mod confirm;
pub mod dataset;
pub mod entropy;
pub mod estimate;
pub mod gf128;
pub mod pipeline;
pub mod reconcile;
pub mod rng;
pub mod session;
pub mod sim;

pub use bits::{BitBlock, BitsError, Permutation};
