//! LDPC reconciliation (work in progress).

pub mod code;
pub mod codes;
pub mod construct;
pub mod decoder;
