#!/usr/bin/env bash
# Builds the Python module `qkd` as a wheel into OUTDIR: one abi3 wheel for every CPython
# >= 3.11 on this platform, manylinux-tagged when maturin's check passes (it inspects the
# symbols the extension needs). The wheel installs without a Rust toolchain:
#
#   scripts/build-wheel.sh dist/ && pip install dist/qkd-*.whl          (or 'qkd[notebook]')
#
# usage: scripts/build-wheel.sh OUTDIR
# QKD_PROFILE picks the cargo profile (default release; scripts/test-python.sh uses
# python-test). maturin comes from PATH, or from a virtual environment this script makes
# (target/maturin-venv).
set -euo pipefail
cd "$(dirname "$0")/.."

[ $# -eq 1 ] || { echo "usage: $0 OUTDIR" >&2; exit 2; }
outdir=$1
profile=${QKD_PROFILE:-release}

maturin=$(command -v maturin || true)
if [ -z "$maturin" ]; then
    venv=${CARGO_TARGET_DIR:-target}/maturin-venv
    if [ ! -x "$venv/bin/maturin" ]; then
        "${PYTHON:-python3}" -m venv "$venv"
        "$venv/bin/python" -m pip install --quiet --disable-pip-version-check "maturin==1.16.0"
    fi
    maturin=$venv/bin/maturin
fi

mkdir -p "$outdir"
"$maturin" build --manifest-path python/Cargo.toml --profile "$profile" --locked --quiet --strip \
    --out "$outdir"
