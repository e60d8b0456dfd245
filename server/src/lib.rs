//! qkd-server: the key management entity (KME) serving ETSI GS QKD 014 over mutual TLS.
//! Built by its own issue; this crate exists so the workspace layout is complete.
#![forbid(unsafe_code)]
#![deny(missing_docs)]
