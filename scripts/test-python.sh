#!/usr/bin/env bash
# The Python part of the test command: builds `import qkd` into a virtual environment it
# creates (target/py-venv), runs pytest, and executes the example notebooks headless.
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
    "maturin==1.16.0" "pytest==9.2.0" "numpy==2.4.6" "matplotlib==3.11.2" \
    "nbclient==0.11.0" "nbformat==5.11.1" "ipykernel==7.4.0"

# The python-test profile: release optimizations without LTO or debug info (built sooner).
step "build and install qkd (maturin develop --profile python-test)"
(
    export VIRTUAL_ENV="$PWD/$VENV" PATH="$PWD/$VENV/bin:$PATH"
    cd python && maturin develop --profile python-test --locked --quiet
)

step "pytest"
(cd python && "../$VENV/bin/python" -m pytest -q tests)

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

step "python tests passed"
