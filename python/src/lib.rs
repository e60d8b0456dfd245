//! Python bindings for the qkd engine: the native module `qkd._qkd`.
//!
//! The Python package `qkd` (python/qkd/) re-exports these functions in its submodules
//! (`qkd.simulate`, `qkd.estimate`, `qkd.amplify`, `qkd.entropy`, `qkd.session`, ...) and defines the
//! exception hierarchy in `qkd.errors`. This crate only translates types and errors and calls
//! `qkd-core`; no algorithm lives here (DESIGN §1).
//!
//! Keys cross the boundary as numpy arrays: packed `uint8` (bit `i` is bit `i % 8` of byte
//! `i / 8`, DESIGN §4) or `bool`, one element per bit. Long work runs with the GIL released.
#![deny(unsafe_code)]
#![deny(missing_docs)]
// Python keyword arguments are Rust parameters: long signatures are the API, not a smell.
#![allow(clippy::too_many_arguments)]

mod api;
mod convert;
mod protocol;
mod session;
mod store;

use pyo3::prelude::*;

/// The native module `qkd._qkd`. Import `qkd` instead.
#[pymodule(name = "_qkd")]
fn qkd_native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    api::register(m)?;
    protocol::register(m)?;
    session::register(m)?;
    store::register(m)
}
