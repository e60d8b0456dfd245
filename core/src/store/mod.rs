//! The durable key store. Placeholder: filled by its issue.
