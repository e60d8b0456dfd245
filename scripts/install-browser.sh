#!/usr/bin/env bash
# Installs the headless browser the dashboard test drives (server/tests/dashboard.rs): Debian's
# `chromium` (which provides /usr/bin/chromium) and a font to render text with. Does nothing
# when /usr/bin/chromium exists; skips with a message when it cannot install (not root, or no
# apt-get), and the dashboard test then fails saying what is missing.
set -euo pipefail

if [ -x /usr/bin/chromium ]; then
    exit 0
fi
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
    echo "install-browser.sh: /usr/bin/chromium is missing and cannot be installed here" \
        "(needs root and apt-get); install Debian's chromium package to run the dashboard test" >&2
    exit 0
fi
echo "install-browser.sh: installing chromium (apt-get)" >&2
export DEBIAN_FRONTEND=noninteractive
install() {
    apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core >/dev/null
}
install 2>/dev/null || { apt-get update -qq >/dev/null && install; }
test -x /usr/bin/chromium
