#!/usr/bin/env bash
# Installs the Debian packages nsbox needs to build, test and benchmark, when missing:
# gcc and libseccomp-dev (cgo + seccomp, static), busybox-static (the busybox image),
# runc and bubblewrap (the peers `make bench` compares against), e2fsprogs (mkfs.ext4 for
# sandboxes with a disk limit), python3 (the code contexts' tests on the host image, and the Python SDK's), nodejs and npm
# when node is missing (the TypeScript SDK; Node 20 or later), debootstrap (the Debian test image with NSBOX_TEST_DEBOOTSTRAP=1), skopeo
# and umoci (the image pull `make bench` compares against), chromium (the web terminal's test
# drives it headless), lxcfs (sandboxes' views of their own limits in /proc; the daemon works
# without it), systemd (systemd-analyze verifies the unit; systemd need not run); hyperfine is
# not needed. npm also fetches xterm.js for the build. The
# Debian image test downloads packages with `apt-get download`, so apt's package lists are
# fetched when there are none.
set -euo pipefail
cd "$(dirname "$0")/.."
need=()
for pkg in gcc libc6-dev libseccomp-dev busybox-static runc bubblewrap make git e2fsprogs python3 debootstrap skopeo umoci chromium lxcfs systemd; do
	dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || need+=("$pkg")
done
if ! command -v node >/dev/null; then
	need+=(nodejs npm)
fi
if ((${#need[@]})); then
	if [[ $EUID -ne 0 ]]; then
		echo "install-deps: run as root to install: ${need[*]}" >&2
		exit 1
	fi
	echo "install-deps: installing ${need[*]}"
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq
	apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
elif [[ $EUID -eq 0 ]] && ! compgen -G '/var/lib/apt/lists/*_Packages*' >/dev/null; then
	apt-get update -qq
fi
if ! command -v go >/dev/null && [[ -x /usr/local/go/bin/go ]]; then
	export PATH=$PATH:/usr/local/go/bin
fi
if ! command -v go >/dev/null; then
	echo "install-deps: Go 1.26+ is required (see go.mod); Debian's golang package is older" >&2
	exit 1
fi
go mod download
