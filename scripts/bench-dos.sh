#!/usr/bin/env bash
# A well-behaved SAE's latency while other SAEs hold idle and slow-header TLS connections open
# against the same `qkd serve` (issue 14's target: 1000 idle + 200 slow-header connections,
# p99 under 100 ms). Both runs use the same KME process: first without the load (baseline), then
# with it. The load comes from 20 attacker SAE identities (the per-SAE connection cap is 64),
# each connection reopened 100 ms after the KME closes it (server/examples/dos_probe.rs).
#
#   scripts/bench-dos.sh [IDLE] [SLOW] [REQUESTS]     (defaults: 1000 200 1000)
#
# Run it on a quiet machine.
set -euo pipefail
cd "$(dirname "$0")/.."
idle=${1:-1000}
slow=${2:-200}
requests=${3:-1000}
cargo build -q --release --locked -p qkd-cli --bin qkd
cargo build -q --release --locked -p qkd-server --example dos_probe
qkd=target/release/qkd
probe=target/release/examples/dos_probe
work=$(mktemp -d)
pid=
cleanup() { [ -n "$pid" ] && kill -9 "$pid" 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT
ulimit -n "$(ulimit -Hn)"

port=$((20000 + RANDOM % 20000))
saes=(--sae SAE_1@KME_A --sae SAE_2@KME_A)
for i in $(seq 1 20); do saes+=(--sae "ATT_$i@KME_A"); done
"$qkd" pki init "$work/pki" --kme KME_A "${saes[@]}" --port-base "$port" >/dev/null
"$qkd" serve --config "$work/pki/KME_A.toml" 2>"$work/serve.log" &
pid=$!
for _ in $(seq 100); do
  (echo >"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
  sleep 0.1
done
url="https://localhost:$port"
echo "baseline (no load):"
"$probe" "$work/pki" "$url" SAE_1 SAE_2 ATT_ 20 0 0 "$requests"
echo "with $idle idle and $slow slow-header connections:"
"$probe" "$work/pki" "$url" SAE_1 SAE_2 ATT_ 20 "$idle" "$slow" "$requests"
echo "KME peak RSS: $(grep VmHWM "/proc/$pid/status" | awk '{print $2, $3}')"
