//! The CLI's integration tests, one module per subject, in one test binary (one binary per
//! subject linked the CLI seven times over).

mod common;

mod cli;
mod client_errors;
mod hsm;
mod pki;
mod relay;
mod serve;
mod two_sites;
