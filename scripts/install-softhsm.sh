#!/usr/bin/env bash
# Installs SoftHSM2 (Debian's `softhsm2`: the PKCS#11 module /usr/lib/softhsm/libsofthsm2.so and
# softhsm2-util), which the HSM tests run against (cli/tests/it/hsm.rs).
exec "$(dirname "$0")/apt-install.sh" "the HSM tests" /usr/lib/softhsm/libsofthsm2.so softhsm2
