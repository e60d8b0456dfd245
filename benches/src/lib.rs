//! Criterion benchmarks live in `benches/benches/`; run them with `cargo bench -p qkd-benches`.
#![forbid(unsafe_code)]
#![deny(missing_docs)]
