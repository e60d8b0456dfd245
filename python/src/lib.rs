//! Python bindings (module `qkd`). Built by its own issue.
#![forbid(unsafe_code)]
#![deny(missing_docs)]
