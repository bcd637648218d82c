#!/usr/bin/env bash
# Runs every test as root on Debian 12, installing what is missing first:
# gofmt and go vet, unit tests with the race detector, then the integration tests that drive
# the real daemon and sandboxes and check that nothing is left on the host.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH=$PATH:/usr/local/go/bin
scripts/install-deps.sh
exec make --no-print-directory test
