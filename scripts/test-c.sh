#!/usr/bin/env bash
# The C part of the test command (scripts/test.sh calls it).
#
# Builds libqkd.so and libqkd.a, fails when include/qkd.h is stale, checks that the header
# compiles as C11 and as C++, renders the pkg-config file into two staging prefixes (static
# only, shared only), then compiles the C tests (ffi/tests/*.c) and the examples
# (ffi/examples/*.c) with gcc -std=c11 -Wall -Wextra -Werror through pkg-config and runs them:
# linked statically under AddressSanitizer + UndefinedBehaviorSanitizer, and linked against the
# shared library under valgrind (when installed; QKD_SKIP_VALGRIND=1 skips it).
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*" >&2; }

# gcc, g++ and valgrind come with the machine image; pkg-config may not: install it if we can.
need() {
    command -v "$1" >/dev/null && return 0
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        step "installing $2 (for $1)"
        (apt-get install -y -qq "$2" >/dev/null 2>&1 ||
            { apt-get update -qq >/dev/null && apt-get install -y -qq "$2" >/dev/null; }) || true
    fi
    command -v "$1" >/dev/null || { echo "test-c.sh needs $1 (package $2)" >&2; exit 1; }
}
need gcc gcc
need g++ g++
need pkg-config pkgconf

TARGET_DIR=${CARGO_TARGET_DIR:-target}
# The test profile (opt-level 2, debug assertions on) builds into target/debug.
LIBDIR=$TARGET_DIR/debug
WORK=$(mkdir -p "$TARGET_DIR/c-test" && cd "$TARGET_DIR/c-test" && pwd)
rm -rf "${WORK:?}"/*

step "build libqkd (cdylib + staticlib)"
cargo build -p qkd-ffi --profile test --locked

step "include/qkd.h is current"
cargo run -q --profile test -p qkd-ffi-gen-header --locked -- "$WORK/qkd.h"
if ! diff -u include/qkd.h "$WORK/qkd.h"; then
    echo "include/qkd.h is stale: run 'cargo run -p qkd-ffi-gen-header' and commit it" >&2
    exit 1
fi

step "header compiles as C11 and as C++"
gcc -std=c11 -Wall -Wextra -Werror -pedantic -fsyntax-only -x c include/qkd.h
g++ -std=c++17 -Wall -Wextra -Werror -pedantic -fsyntax-only -x c++ include/qkd.h

step "pkg-config file"
VERSION=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -n1)
for kind in static shared; do
    prefix=$WORK/prefix-$kind
    mkdir -p "$prefix/lib/pkgconfig" "$prefix/include"
    cp include/qkd.h "$prefix/include/"
    if [ "$kind" = static ]; then
        cp "$LIBDIR/libqkd.a" "$prefix/lib/"
    else
        cp "$LIBDIR/libqkd.so" "$prefix/lib/"
    fi
    sed -e "s|@PREFIX@|$prefix|" -e "s|@VERSION@|$VERSION|" ffi/qkd.pc.in \
        >"$prefix/lib/pkgconfig/qkd.pc"
done
PKG_CONFIG_PATH=$WORK/prefix-static/lib/pkgconfig pkg-config --validate qkd
test "$(PKG_CONFIG_PATH=$WORK/prefix-static/lib/pkgconfig pkg-config --modversion qkd)" = "$VERSION"

CFLAGS=(-std=c11 -Wall -Wextra -Werror -g -O1)
SOURCES=(ffi/tests/*.c ffi/examples/*.c)

# Program name -> arguments (small sizes keep the sanitizer and valgrind runs short).
args_for() {
    case "$1" in
        pipeline) echo "200000 0.03" ;;
        cascade_two_party) echo "100000 0.04" ;;
        session) echo "131072 0.03 3" ;;
        *) echo "" ;;
    esac
}

step "C tests and examples, static, AddressSanitizer + UBSan"
export PKG_CONFIG_PATH=$WORK/prefix-static/lib/pkgconfig
export ASAN_OPTIONS=detect_leaks=1:abort_on_error=0:halt_on_error=1
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
for src in "${SOURCES[@]}"; do
    name=$(basename "$src" .c)
    # shellcheck disable=SC2046
    gcc "${CFLAGS[@]}" -fsanitize=address,undefined -fno-sanitize-recover=all \
        -fno-omit-frame-pointer $(pkg-config --cflags qkd) "$src" -o "$WORK/asan-$name" \
        $(pkg-config --static --libs qkd)
    echo "--- $name (ASan)" >&2
    # shellcheck disable=SC2046
    "$WORK/asan-$name" $(args_for "$name")
done

if command -v valgrind >/dev/null && [ "${QKD_SKIP_VALGRIND:-0}" != 1 ]; then
    step "C tests and examples, shared library, valgrind"
    export PKG_CONFIG_PATH=$WORK/prefix-shared/lib/pkgconfig
    for src in "${SOURCES[@]}"; do
        name=$(basename "$src" .c)
        # shellcheck disable=SC2046
        gcc "${CFLAGS[@]}" $(pkg-config --cflags qkd) "$src" -o "$WORK/vg-$name" \
            $(pkg-config --libs qkd) -Wl,-rpath,"$WORK/prefix-shared/lib"
        echo "--- $name (valgrind)" >&2
        # shellcheck disable=SC2046
        valgrind --quiet --error-exitcode=99 --leak-check=full --errors-for-leak-kinds=definite --show-possibly-lost=no \
            --trace-children=yes "$WORK/vg-$name" $(args_for "$name")
    done
else
    step "valgrind not installed (or QKD_SKIP_VALGRIND=1): skipped"
fi

step "C side passed"
