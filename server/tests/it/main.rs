//! The KME's integration tests, one module per subject, in one test binary: one binary per
//! subject linked the whole server eleven times over, most of a clean build of the test
//! suite. `tests/access.rs` stays apart: it owns the process's log subscriber.

mod common;
#[path = "common/prom.rs"]
mod prom;

mod address_identity;
mod cor_check;
mod counts;
mod dashboard;
mod etsi;
mod hardening;
mod postprocess;
mod relay;
mod shutdown;
mod tls;
