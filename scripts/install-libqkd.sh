#!/usr/bin/env bash
# Installs libqkd, the C API of qkd, into a prefix, as a vendor links it:
#
#   PREFIX/include/qkd.h
#   PREFIX/lib/libqkd.so.X.Y.Z            SONAME libqkd.so.X, stripped
#   PREFIX/lib/libqkd.so.X -> libqkd.so.X.Y.Z
#   PREFIX/lib/libqkd.so   -> libqkd.so.X
#   PREFIX/lib/libqkd.a                   debug info stripped
#   PREFIX/lib/pkgconfig/qkd.pc           from ffi/qkd.pc.in
#   PREFIX/lib/.debug/libqkd.so.X.Y.Z.debug   (with --keep-debug; gdb finds it there)
#
# usage: scripts/install-libqkd.sh [--keep-debug] PREFIX
# QKD_PROFILE selects the cargo profile (default release; scripts/test-c.sh uses test, whose
# artifacts the test suite has already built). The library is built first when needed.
set -euo pipefail
cd "$(dirname "$0")/.."

usage() { echo "usage: $0 [--keep-debug] PREFIX" >&2; exit 2; }
keep_debug=0
prefix=
while [ $# -gt 0 ]; do
    case "$1" in
        --keep-debug) keep_debug=1 ;;
        -h | --help) usage ;;
        -*) echo "unknown option $1" >&2; usage ;;
        *) [ -z "$prefix" ] || usage; prefix=$1 ;;
    esac
    shift
done
[ -n "$prefix" ] || usage
for tool in strip objcopy; do
    command -v "$tool" >/dev/null || { echo "$0 needs $tool (binutils)" >&2; exit 1; }
done

profile=${QKD_PROFILE:-release}
case "$profile" in
    test | dev) outdir=debug ;;
    *) outdir=$profile ;;
esac
target_dir=${CARGO_TARGET_DIR:-target}
cargo build -p qkd-ffi --profile "$profile" --locked

version=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -n1)
major=${version%%.*}
mkdir -p "$prefix/lib/pkgconfig" "$prefix/include"
prefix=$(cd "$prefix" && pwd)
lib=$prefix/lib
real=libqkd.so.$version

install -m 0644 include/qkd.h "$prefix/include/qkd.h"

install -m 0755 "$target_dir/$outdir/libqkd.so" "$lib/$real"
if [ "$keep_debug" = 1 ]; then
    mkdir -p "$lib/.debug"
    objcopy --only-keep-debug "$lib/$real" "$lib/.debug/$real.debug"
    chmod 0644 "$lib/.debug/$real.debug"
fi
strip --strip-unneeded "$lib/$real"
if [ "$keep_debug" = 1 ]; then
    (cd "$lib" && objcopy --add-gnu-debuglink=".debug/$real.debug" "$real")
fi
ln -sfn "$real" "$lib/libqkd.so.$major"
ln -sfn "libqkd.so.$major" "$lib/libqkd.so"

install -m 0644 "$target_dir/$outdir/libqkd.a" "$lib/libqkd.a"
strip --strip-debug "$lib/libqkd.a"

sed -e "s|@PREFIX@|$prefix|" -e "s|@VERSION@|$version|" ffi/qkd.pc.in >"$lib/pkgconfig/qkd.pc"
chmod 0644 "$lib/pkgconfig/qkd.pc"

echo "installed libqkd $version into $prefix" >&2
