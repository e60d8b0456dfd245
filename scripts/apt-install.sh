#!/usr/bin/env bash
# apt-install.sh WHAT PATH PACKAGE...: installs Debian PACKAGEs that WHAT (a test, for the
# message) needs, unless PATH exists already. Skips with a message when it cannot install (not
# root, or no apt-get); the test then fails saying what is missing.
set -euo pipefail

what=$1 path=$2
shift 2
if [ -e "$path" ]; then
    exit 0
fi
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
    echo "apt-install.sh: $path is missing and cannot be installed here (needs root and" \
        "apt-get); install Debian's $* to run $what" >&2
    exit 0
fi
echo "apt-install.sh: installing $* for $what (apt-get)" >&2
export DEBIAN_FRONTEND=noninteractive
install() {
    apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}
install "$@" 2>/dev/null || { apt-get update -qq >/dev/null && install "$@"; }
test -e "$path"
