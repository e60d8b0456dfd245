#!/usr/bin/env bash
# The round-trip sweep of `qkd bench link` (issue 12's figures): Alice and Bob as two processes
# over loopback TCP, 2^24-bit blocks at 2 % QBER, at 0, 1, 10 and 50 ms of round trip, with
# enough blocks in flight to cover each round trip (3, 4, 8 and 24).
# Run on a quiet machine (nothing else building or benchmarking): both cores are used.
#
#   scripts/bench-link.sh [SECONDS] [extra qkd bench link flags...]
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-30}"
shift || true
cargo build --release --locked -q -p qkd-cli --bin qkd
for point in "0 3" "1 4" "10 8" "50 24"; do
  set -- $point "$@"
  rtt="$1" in_flight="$2"
  shift 2
  ./target/release/qkd bench link --block-bits 16777216 --qber 0.02 --rtt-ms "$rtt" \
    --in-flight "$in_flight" --seconds "$seconds" --json "$@"
done
