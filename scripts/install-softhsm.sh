#!/usr/bin/env bash
# Installs SoftHSM2 (Debian's `softhsm2`: the PKCS#11 module /usr/lib/softhsm/libsofthsm2.so and
# softhsm2-util), which the HSM tests run against (server/tests/hsm.rs). Does nothing when the
# module exists; skips with a message when it cannot install (not root, or no apt-get), and the
# HSM tests then fail saying what is missing.
set -euo pipefail

if [ -e /usr/lib/softhsm/libsofthsm2.so ] && command -v softhsm2-util >/dev/null; then
    exit 0
fi
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
    echo "install-softhsm.sh: SoftHSM2 is missing and cannot be installed here" \
        "(needs root and apt-get); install Debian's softhsm2 package to run the HSM tests" >&2
    exit 0
fi
echo "install-softhsm.sh: installing softhsm2 (apt-get)" >&2
export DEBIAN_FRONTEND=noninteractive
install() {
    apt-get install -y -qq --no-install-recommends softhsm2 >/dev/null
}
install 2>/dev/null || { apt-get update -qq >/dev/null && install; }
test -e /usr/lib/softhsm/libsofthsm2.so
