#!/usr/bin/env bash
# The one test command: formatting, lints, and every test of the workspace.
# Runs on a fresh machine (Rust, gcc, Python 3.11 and pip present); installs what else it needs.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> [%4ds] %s\n' "$SECONDS" "$*" >&2; }

step "rustfmt"
rustup component add rustfmt clippy >/dev/null 2>&1 || true
cargo fmt --all -- --check

step "clippy (-D warnings)"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "cargo test"
./scripts/install-browser.sh
./scripts/install-softhsm.sh
cargo test --workspace --locked

step "libqkd: header freshness, C tests and examples under ASan/UBSan and valgrind"
./scripts/test-c.sh

step "Python module (pytest + notebook)"
./scripts/test-python.sh

step "live-server fuzzing from docs/openapi.yaml (schemathesis, mTLS)"
MAX_EXAMPLES="${MAX_EXAMPLES:-20}" ./scripts/server-fuzz.sh

step "all tests passed"
