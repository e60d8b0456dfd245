#!/usr/bin/env bash
# The Python part of the test command: builds the qkd wheel (scripts/build-wheel.sh), installs
# it (not the source tree) into the test virtual environment (target/py-venv) and runs pytest
# and the example notebooks headless there; then installs the wheel with its notebook extra
# into a fresh virtual environment, with no Rust toolchain on PATH, and uses it.
# Needs only Python >= 3.11 with venv/pip and the Rust toolchain; installs everything else.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*" >&2; }

PYTHON="${PYTHON:-python3}"
VENV="${QKD_PY_VENV:-target/py-venv}"

step "python venv ($VENV)"
if [ ! -x "$VENV/bin/python" ]; then
    "$PYTHON" -m venv "$VENV"
fi
"$VENV/bin/python" -c 'import sys; assert sys.version_info >= (3, 11), sys.version' \
    || { echo "qkd needs Python >= 3.11 (set PYTHON=...)" >&2; exit 1; }
# Pinned versions known to work together (November 2026; numpy 2.4 is the last for 3.11).
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check \
    "maturin==1.16.0" "pytest==9.2.0" "numpy==2.4.6" "matplotlib==3.11.2" "pandas==3.1.1" \
    "nbclient==0.11.0" "nbformat==5.11.1" "ipykernel==7.4.0"

# The python-test profile: release optimizations without LTO or debug info (built sooner).
WHEELS=${CARGO_TARGET_DIR:-target}/wheels
step "build the wheel (scripts/build-wheel.sh, profile python-test)"
rm -rf "$WHEELS"
PATH="$PWD/$VENV/bin:$PATH" QKD_PROFILE=python-test scripts/build-wheel.sh "$WHEELS"
WHEEL=$(ls "$WHEELS"/qkd-*-abi3-*.whl)
WHEEL=$(cd "$(dirname "$WHEEL")" && pwd)/$(basename "$WHEEL")
echo "$WHEEL" >&2
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --force-reinstall \
    --no-deps "$WHEEL"

# From python/tests, so `import qkd` finds the installed wheel, not python/qkd.
step "pytest (against the installed wheel)"
(cd python/tests && "../../$VENV/bin/python" -m pytest -q .)

step "notebooks (headless)"
MPLBACKEND=Agg "$VENV/bin/python" - <<'PY'
import glob
import time

import nbformat
from nbclient import NotebookClient

for path in sorted(glob.glob("python/examples/*.ipynb")):
    nb = nbformat.read(path, as_version=4)
    t0 = time.perf_counter()
    NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": "python/examples"}}).execute()
    print(f"{path}: {len(nb.cells)} cells executed in {time.perf_counter() - t0:.1f} s")
PY

step "the wheel with its notebook extra, in a fresh venv, without a Rust toolchain"
FRESH=${CARGO_TARGET_DIR:-target}/wheel-venv
rm -rf "$FRESH"
"$PYTHON" -m venv "$FRESH"
FRESH=$(cd "$FRESH" && pwd)
"$FRESH/bin/python" -m pip install --quiet --disable-pip-version-check "$WHEEL[notebook]"
(
    cd "$FRESH"
    env -i HOME="$HOME" PATH="$FRESH/bin:/usr/bin:/bin" MPLBACKEND=Agg python - <<'PY'
import shutil
import sys

import matplotlib.pyplot as plt
import pandas as pd

import qkd

assert shutil.which("cargo") is None and shutil.which("rustc") is None, "a Rust toolchain is on PATH"
assert qkd.__file__.startswith(sys.prefix), f"qkd imported from {qkd.__file__}, not the venv"
alice, bob, _ = qkd.simulate(1 << 18, 0.03, seed=7)
keys, reports, summary = qkd.pipeline.process(alice, bob, block_bits=1 << 17, sample_bits=1 << 13)
frame = pd.DataFrame(reports)
assert len(frame) == 2 and (frame["outcome"] == "key").all(), frame[["outcome", "outcome_reason"]]
assert (keys[0] is not None) and summary["final_bits"] == frame["final_bits"].sum()
frame.plot(x="index", y="efficiency")
plt.close("all")
print(f"qkd {qkd.__version__} from the wheel: {summary['final_bits']} final bits, pandas {pd.__version__}")
PY
)

step "python tests passed"
