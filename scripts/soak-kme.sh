#!/usr/bin/env bash
# A longer SIGKILL soak of two `qkd serve` processes post-processing between themselves: the
# test `sigkill_at_random_points_never_breaks_both_or_neither` with more kills and a seed of
# your choice (after every restart a key KME_A serves must be served by KME_B with the same
# bytes; at the end both stores must hold the same blocks).
#
#   scripts/soak-kme.sh [KILLS] [SEED]      (defaults: 500 kills, seed from the clock)
set -euo pipefail
cd "$(dirname "$0")/.."
kills=${1:-500}
seed=${2:-$(date +%s)}
echo "soak: $kills kills, seed $seed"
QKD_SOAK_KILLS=$kills QKD_SOAK_SEED=$seed cargo test --locked -q -p qkd-cli --test it \
  two_sites::sigkill_at_random_points -- --nocapture
