//! Helpers shared by the CLI's integration tests.
#![allow(dead_code)]

pub mod kmes;
pub mod load;

use std::process::{Command, Output};

/// Runs `qkd` with `args` and returns what it did.
pub fn qkd(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_qkd"))
        .args(args)
        .output()
        .expect("qkd runs")
}

/// Runs `qkd` with `args`, asserts it succeeded, and returns its stdout.
pub fn ok(args: &[&str]) -> String {
    let out = qkd(args);
    assert!(
        out.status.success(),
        "qkd {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8 stdout")
}

/// A loopback port free when asked.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
