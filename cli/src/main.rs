//! The `qkd` command.
#![forbid(unsafe_code)]
fn main() {}
