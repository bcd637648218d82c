#!/usr/bin/env bash
# Checks what operators install, as root on Debian: the systemd unit passes
# `systemd-analyze verify` (with no warning), and the .deb that `make deb` built installs
# (binary, unit, docs in place; the binary runs) and is removed and purged without a trace.
# Usage: scripts/test-package.sh DEB. It refuses to run where an nsbox package is installed.
set -euo pipefail
cd "$(dirname "$0")/.."
deb=$1
fail() { echo "test-package: FAIL: $*" >&2; exit 1; }
if dpkg-query -W -f='${Status}' nsbox 2>/dev/null | grep -q installed; then
	fail "an nsbox package is installed on this machine already; not touching it"
fi
[[ ! -e /usr/bin/nsbox ]] || fail "/usr/bin/nsbox exists and belongs to no package"

files=(/usr/bin/nsbox /lib/systemd/system/nsbox.service /usr/share/doc/nsbox/operations.md /usr/share/doc/nsbox/README.md)
dpkg -i "$deb" >/dev/null
trap 'dpkg -P nsbox >/dev/null 2>&1 || true' EXIT
for f in "${files[@]}"; do
	[[ -e $f ]] || fail "$f is not installed"
done
/usr/bin/nsbox --version >/dev/null || fail "the installed binary does not run"
out=$(systemd-analyze verify /lib/systemd/system/nsbox.service 2>&1) || fail "systemd-analyze verify: $out"
[[ -z $out ]] || fail "systemd-analyze verify warns: $out"
dpkg -r nsbox >/dev/null
dpkg -P nsbox >/dev/null
trap - EXIT
for f in "${files[@]}"; do
	[[ ! -e $f ]] || fail "$f is left after the package was purged"
done
[[ ! -e /usr/share/doc/nsbox ]] || fail "/usr/share/doc/nsbox is left after the package was purged"
! dpkg-query -W nsbox >/dev/null 2>&1 || fail "dpkg still knows the package"
echo "test-package: ok: $(basename "$deb") installs, its unit verifies, it is removed and purged cleanly"
