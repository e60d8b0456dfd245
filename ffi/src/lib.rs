//! libqkd: the C API of the qkd engine. Built by its own issue.
#![deny(missing_docs)]
