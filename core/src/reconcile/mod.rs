//! Two-party error reconciliation. Not yet implemented.
