#!/usr/bin/env bash
# The C part of the test command (scripts/test.sh calls it).
#
# Installs libqkd into a prefix with scripts/install-libqkd.sh (test profile) and checks the
# install (SONAME, symlinks, stripped library, separate debug file, pkg-config file), fails when
# include/qkd.h is stale, checks that the header compiles as C11 and as C++, then compiles the C
# tests (ffi/tests/*.c) and the examples (ffi/examples/*.c) against the installed prefix with
# gcc -std=c11 -Wall -Wextra -Werror through pkg-config, as a vendor would, and runs them:
# linked statically under AddressSanitizer + UndefinedBehaviorSanitizer, and linked against the
# shared library under valgrind (when installed; QKD_SKIP_VALGRIND=1 skips it). Last, the
# CMake project of docs/c-guide.md (ffi/examples/cmake) builds and runs both ways.
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
WORK=$(mkdir -p "$TARGET_DIR/c-test" && cd "$TARGET_DIR/c-test" && pwd)
rm -rf "${WORK:?}"/*

step "install libqkd into a prefix (scripts/install-libqkd.sh, test profile)"
PREFIX=$WORK/prefix
QKD_PROFILE=test scripts/install-libqkd.sh --keep-debug "$PREFIX"
VERSION=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -n1)
MAJOR=${VERSION%%.*}
LIB=$PREFIX/lib
test "$(readlink "$LIB/libqkd.so")" = "libqkd.so.$MAJOR"
test "$(readlink "$LIB/libqkd.so.$MAJOR")" = "libqkd.so.$VERSION"
grep -q "Library soname: \[libqkd.so.$MAJOR\]" <<<"$(readelf -d "$LIB/libqkd.so.$VERSION")"
sections=$(readelf -S "$LIB/libqkd.so.$VERSION")
if grep -q '\.debug_' <<<"$sections"; then
    echo "installed libqkd.so still has debug sections" >&2
    exit 1
fi
grep -q '\.gnu_debuglink' <<<"$sections"
grep -q '\.debug_line' <<<"$(readelf -S "$LIB/.debug/libqkd.so.$VERSION.debug")"

step "include/qkd.h is current"
cargo run -q --profile test -p qkd-ffi-gen-header --locked -- "$WORK/qkd.h"
if ! diff -u include/qkd.h "$WORK/qkd.h"; then
    echo "include/qkd.h is stale: run 'cargo run -p qkd-ffi-gen-header' and commit it" >&2
    exit 1
fi

step "header compiles as C11 and as C++"
gcc -std=c11 -Wall -Wextra -Werror -pedantic -fsyntax-only -x c "$PREFIX/include/qkd.h"
g++ -std=c++17 -Wall -Wextra -Werror -pedantic -fsyntax-only -x c++ "$PREFIX/include/qkd.h"

step "pkg-config file"
export PKG_CONFIG_PATH=$LIB/pkgconfig
pkg-config --validate qkd
test "$(pkg-config --modversion qkd)" = "$VERSION"
test "$(pkg-config --variable=libdir qkd)" = "$LIB"

CFLAGS=(-std=c11 -Wall -Wextra -Werror -g -O1)
SOURCES=(ffi/tests/*.c ffi/examples/*.c)

# Program name -> arguments (small sizes keep the sanitizer and valgrind runs short). At
# 100000 bits and QBER 4 % a sample that reads high leaves no key (4 of about 25 ASan runs):
# 3 % leaves about 14 000 bits (0 of 40 failed).
args_for() {
    case "$1" in
        pipeline) echo "200000 0.03" ;;
        cascade_two_party) echo "100000 0.03" ;;
        session) echo "131072 0.03 3" ;;
        *) echo "" ;;
    esac
}

# Both link styles as docs/c-guide.md shows them; the static one names the archive, so the
# shared library beside it must not be recorded as needed.
expect_link() { # PROGRAM shared|static
    local got=static
    if grep -q 'NEEDED.*\[libqkd\.so' <<<"$(readelf -d "$1")"; then got=shared; fi
    [ "$got" = "$2" ] || { echo "$1 links libqkd $got, expected $2" >&2; exit 1; }
}

step "C tests and examples, static, AddressSanitizer + UBSan"
export ASAN_OPTIONS=detect_leaks=1:abort_on_error=0:halt_on_error=1
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
for src in "${SOURCES[@]}"; do
    name=$(basename "$src" .c)
    # shellcheck disable=SC2046
    gcc "${CFLAGS[@]}" -fsanitize=address,undefined -fno-sanitize-recover=all \
        -fno-omit-frame-pointer $(pkg-config --cflags qkd) "$src" -o "$WORK/asan-$name" \
        -Wl,--as-needed "$LIB/libqkd.a" $(pkg-config --static --libs qkd)
    expect_link "$WORK/asan-$name" static
    echo "--- $name (ASan)" >&2
    # shellcheck disable=SC2046
    "$WORK/asan-$name" $(args_for "$name")
done

if command -v valgrind >/dev/null && [ "${QKD_SKIP_VALGRIND:-0}" != 1 ]; then
    step "C tests and examples, shared library, valgrind"
    for src in "${SOURCES[@]}"; do
        name=$(basename "$src" .c)
        # shellcheck disable=SC2046
        gcc "${CFLAGS[@]}" $(pkg-config --cflags qkd) "$src" -o "$WORK/vg-$name" \
            $(pkg-config --libs qkd) -Wl,-rpath,"$LIB"
        expect_link "$WORK/vg-$name" shared
        echo "--- $name (valgrind)" >&2
        # shellcheck disable=SC2046
        valgrind --quiet --error-exitcode=99 --leak-check=full --errors-for-leak-kinds=definite --show-possibly-lost=no \
            --trace-children=yes "$WORK/vg-$name" $(args_for "$name")
    done
else
    step "valgrind not installed (or QKD_SKIP_VALGRIND=1): skipped"
fi

step "CMake project of the guide (ffi/examples/cmake), shared and static"
CMAKE=$(command -v cmake || true)
if [ -z "$CMAKE" ]; then
    tools=$TARGET_DIR/tools/cmake-venv
    [ -x "$tools/bin/cmake" ] || { python3 -m venv "$tools" && "$tools/bin/pip" install -q cmake; }
    CMAKE=$tools/bin/cmake
fi
"$CMAKE" -S ffi/examples/cmake -B "$WORK/cmake" >/dev/null
"$CMAKE" --build "$WORK/cmake" >/dev/null
expect_link "$WORK/cmake/pipeline_shared" shared
expect_link "$WORK/cmake/pipeline_static" static
for kind in shared static; do
    echo "--- pipeline_$kind (CMake)" >&2
    "$WORK/cmake/pipeline_$kind" $(args_for pipeline) >/dev/null
done

step "C side passed"
