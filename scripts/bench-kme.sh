#!/usr/bin/env bash
# Secret key stored per second by two `qkd serve` KMEs post-processing a simulated device at
# 2 % QBER between themselves on this machine, against `qkd bench link` at the same round trip
# (same block, frame and sample sizes), measured in the same run. The round trip is a delay
# proxy on the peer connection (server/examples/delay_proxy.rs), not a hook in the KME.
#
#   [IN_FLIGHT=N] scripts/bench-kme.sh [SECONDS] [RTT_MS...]   (defaults: 60 s; 0 and 10 ms;
#   blocks in flight 3 at 0 ms, 12 at 10 ms, 24 beyond)
#
# Also feeds a 2^27-bit raw_dir file to a fresh pair and reports its time and the peak RSS of
# both KMEs. Run it on a quiet machine: it uses both cores.
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-60}
shift || true
rtts=("${@:-0 10}")
# shellcheck disable=SC2206
rtts=(${rtts[*]})
cargo build -q --release --locked -p qkd-cli --bin qkd
cargo build -q --release --locked -p qkd-server --example delay_proxy
qkd=target/release/qkd
proxy=target/release/examples/delay_proxy
work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT

state() { curl -s "http://127.0.0.1:$1/api/state"; }
secret_bits() { state "$1" | python3 -c 'import json,sys; print(json.load(sys.stdin)["links"][0]["secret_bits"])'; }

# setup DIR RTT_MS IN_FLIGHT SOURCE: a dev PKI and two configs on fresh ports; SOURCE is
# "sim" (simulated device, unlimited rate) or "dir" (raw_dir).
setup() {
  local dir=$1 rtt=$2 inflight=$3 source=$4
  "$qkd" pki init "$dir" --kme KME_A --kme KME_B --sae SAE_1@KME_A --sae SAE_2@KME_B \
    --raw simulated --port-base "$((20000 + RANDOM % 20000))" >/dev/null
  python3 - "$dir" "$rtt" "$inflight" "$source" <<'PY'
import re, sys, pathlib
d, rtt, inflight, source = pathlib.Path(sys.argv[1]), float(sys.argv[2]), sys.argv[3], sys.argv[4]
a = (d / "KME_A.toml").read_text()
b = (d / "KME_B.toml").read_text()
bport = re.search(r'peer_listen = "127.0.0.1:(\d+)"', b).group(1)
(d / "bpeer").write_text(bport)
mon = {"A": 19400, "B": 19401}
for name, t in (("A", a), ("B", b)):
    t = re.sub(r"block_bits = \d+", f"block_bits = {1 << 24}", t)
    t = re.sub(r"sample_bits = \d+", f"sample_bits = {1 << 15}", t)
    t = re.sub(r"in_flight = \d+", f"in_flight = {inflight}", t)
    t = re.sub(r"raw_bits_per_sec = \d+", "raw_bits_per_sec = 0", t)
    t = t.replace('kme_id = "KME_%s"' % name, 'kme_id = "KME_%s"\nmonitor_listen = "127.0.0.1:%d"' % (name, mon[name]))
    if source == "dir":
        t = re.sub(r'\[link.source\][^\[]*', '[link.source]\nkind = "raw_dir"\ndir = "raw-%s"\npoll_ms = 100\n\n' % name, t, flags=re.S)
    if name == "A" and rtt > 0:
        t = re.sub(r'url = "https://127.0.0.1:\d+"', 'url = "https://127.0.0.1:19402"', t)
    (d / f"KME_{name}.toml").write_text(t)
PY
  if [ "$rtt" != 0 ]; then
    "$proxy" 127.0.0.1:19402 "127.0.0.1:$(cat "$dir/bpeer")" "$(python3 -c "print($rtt/2)")" &
    pids+=($!)
  fi
}

kme_pids=()
start() { # start DIR: KME_B, then KME_A
  kme_pids=()
  for k in B A; do
    "$qkd" serve --config "$1/KME_$k.toml" 2>"$1/$k.log" &
    pids+=($!)
    kme_pids+=($!)
  done
  for port in 19400 19401; do
    for _ in $(seq 100); do curl -s "http://127.0.0.1:$port/api/state" >/dev/null && break; sleep 0.1; done
  done
}

peak_rss_mib() { # peak RSS of KME_B and KME_A (started last)
  for p in "${kme_pids[@]}"; do echo $(( $(awk '/VmHWM/ {print $2}' "/proc/$p/status") / 1024 )); done
}

stop_all() { for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; pids=(); }

inflight_for() { if [ -n "${IN_FLIGHT:-}" ]; then echo "$IN_FLIGHT"; return; fi; case $1 in 0) echo 3;; 1) echo 4;; 10) echo 12;; *) echo 24;; esac; }

raw_bits() { state "$1" | python3 -c 'import json,sys; print(json.load(sys.stdin)["links"][0]["raw_bits"])'; }

echo "| RTT | in flight | bench link: raw steady | bench link: secret steady | KME_A: raw / secret stored | KME_B: raw / secret stored | secret ratio (min KME / bench) |"
echo "|---|---|---|---|---|---|---|"
for rtt in "${rtts[@]}"; do
  inf=$(inflight_for "$rtt")
  # Steady secret rate of bench link: its steady raw rate times its secret bits per raw bit.
  bench=$("$qkd" bench link --rtt-ms "$rtt" --in-flight "$inf" --seconds "$secs" --json |
    python3 -c 'import json,sys; r=json.load(sys.stdin); s=r["steady_raw_bits_per_second"]; print(s, s*r["secret_bits_per_second"]/r["raw_bits_per_second"])')
  dir="$work/rtt$rtt"; mkdir -p "$dir"
  setup "$dir" "$rtt" "$inf" sim
  start "$dir"
  sleep 10 # warm-up: the first blocks in flight
  a0="$(raw_bits 19400) $(secret_bits 19400)"; b0="$(raw_bits 19401) $(secret_bits 19401)"; t0=$(date +%s.%N)
  sleep "$secs"
  a1="$(raw_bits 19400) $(secret_bits 19400)"; b1="$(raw_bits 19401) $(secret_bits 19401)"; t1=$(date +%s.%N)
  rss=$(peak_rss_mib | tr '\n' ' ')
  stop_all
  python3 - "$rtt" "$inf" "$bench" "$a0" "$a1" "$b0" "$b1" "$t0" "$t1" "$rss" <<'PY'
import sys
rtt, inf, bench, a0, a1, b0, b1, t0, t1, rss = sys.argv[1:]
dt = float(t1) - float(t0)
braw, bsec = map(float, bench.split())
def rates(x0, x1):
    (r0, s0), (r1, s1) = map(int, x0.split()), map(int, x1.split())
    return (r1 - r0) / dt, (s1 - s0) / dt
(ara, asa), (arb, asb) = rates(a0, a1), rates(b0, b1)
m = lambda v: f"{v/1e6:.2f} M"
print(f"| {rtt} ms | {inf} | {m(braw)} | {m(bsec)} | {m(ara)} / {m(asa)} | {m(arb)} / {m(asb)} | {min(asa, asb)/bsec:.2f} |  (peak RSS B, A: {rss}MiB)")
PY
done

# A 2^27-bit raw file through raw_dir: time to take, process and delete it; peak RSS.
dir="$work/rawdir"; mkdir -p "$dir"
setup "$dir" 0 3 dir
"$qkd" sim --bits $((1 << 27)) --qber 0.02 --out "$dir/sim" --name big >/dev/null
mkdir -p "$dir/raw-A" "$dir/raw-B"
start "$dir"
t0=$(date +%s.%N)
cp "$dir/sim/big.alice.bin" "$dir/raw-A/big"
cp "$dir/sim/big.bob.bin" "$dir/raw-B/big"
while [ -e "$dir/raw-A/big" ] || [ -e "$dir/raw-B/big" ]; do sleep 0.2; done
t1=$(date +%s.%N)
kept=$(state 19400 | python3 -c 'import json,sys; l=json.load(sys.stdin)["links"][0]; print(l["blocks_kept"], l["secret_bits"])')
rss=($(peak_rss_mib))
stop_all
echo
echo "raw_dir, one 2^27-bit file (8 blocks of 2^24): taken, post-processed and deleted in" \
  "$(python3 -c "print(round($t1-$t0,1))") s; blocks kept and secret bits at KME_A: $kept;" \
  "peak RSS KME_A ${rss[1]} MiB, KME_B ${rss[0]} MiB"
