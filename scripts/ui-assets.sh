#!/usr/bin/env bash
# Fetches the web terminal's third-party code from the npm registry (the exact versions of
# ui/package-lock.json) and copies xterm.js's prebuilt ES module and CSS and its fit addon,
# with their licenses, into ui/assets/vendor, which package ui embeds. `make build` runs it
# when the lock file is newer than the copies.
set -euo pipefail
cd "$(dirname "$0")/../ui"
command -v npm >/dev/null || { echo "ui-assets: npm is needed to fetch xterm.js (Debian: apt-get install npm)" >&2; exit 1; }
npm ci --no-audit --no-fund --ignore-scripts --loglevel=error
mkdir -p assets/vendor
cp node_modules/@xterm/xterm/lib/xterm.mjs node_modules/@xterm/xterm/css/xterm.css node_modules/@xterm/addon-fit/lib/addon-fit.mjs assets/vendor/
cp node_modules/@xterm/xterm/LICENSE assets/vendor/LICENSE.xterm
cp node_modules/@xterm/addon-fit/LICENSE assets/vendor/LICENSE.addon-fit
touch assets/vendor/xterm.mjs
