#!/usr/bin/env bash
# SIGKILLs either of two `qkd serve` KMEs N times while SAE_1 takes keys at KME_A and SAE_2
# fetches them at KME_B without pause, and checks every invariant: no key ID or key delivered
# twice, every delivered key served by the other KME with the same bytes, the two stores
# holding the same blocks at the end (test `sigkill_under_sae_load_...` in cli/tests/it/two_sites.rs;
# the test suite runs it with N = 8).
#
#   scripts/crash-soak.sh [N] [SEED]      (defaults: 1000 kills, seed from the clock)
set -euo pipefail
cd "$(dirname "$0")/.."
kills=${1:-1000}
seed=${2:-$(date +%s)}
echo "crash soak: $kills kills, seed $seed"
QKD_CRASH_KILLS=$kills QKD_CRASH_SEED=$seed cargo test --locked -q --profile test -p qkd-cli \
  --test it two_sites::sigkill_under_sae_load -- --nocapture
