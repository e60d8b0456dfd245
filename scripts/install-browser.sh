#!/usr/bin/env bash
# Installs the headless browser the dashboard test drives (server/tests/it/dashboard.rs): Debian's
# `chromium` (which provides /usr/bin/chromium) and a font to render text with.
exec "$(dirname "$0")/apt-install.sh" "the dashboard test" /usr/bin/chromium chromium fonts-dejavu-core
