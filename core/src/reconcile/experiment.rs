//! Experiment harness (in progress).
