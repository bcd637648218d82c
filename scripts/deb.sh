#!/usr/bin/env bash
# Builds the Debian package of nsbox with dpkg-deb: bin/nsbox as /usr/bin/nsbox, the systemd
# unit, and the docs. Usage: scripts/deb.sh BINARY VERSION OUTDIR; prints the .deb's path.
# The package enables the unit, and starts it when systemd runs; removing it stops the daemon
# (sandboxes keep running, KillMode=process) and purging leaves /var/lib/nsbox, where the
# sandboxes' data is, for the operator to remove.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=$1 version=$2 out=$3
# A Debian version starts with a digit: git describe's tag, or 0~ and the commit.
[[ $version =~ ^[0-9] ]] || version="0~git${version}"
version=${version//-/.}
arch=$(dpkg --print-architecture)
root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
install -D -m 0755 "$bin" "$root/usr/bin/nsbox"
install -D -m 0644 scripts/nsbox.service "$root/lib/systemd/system/nsbox.service"
for doc in README.md docs/*.md; do
	install -D -m 0644 "$doc" "$root/usr/share/doc/nsbox/$(basename "$doc")"
done
mkdir -p "$root/DEBIAN"
cat >"$root/DEBIAN/control" <<CONTROL
Package: nsbox
Version: $version
Architecture: $arch
Maintainer: nsbox developers <nsbox@localhost>
Section: admin
Priority: optional
Recommends: e2fsprogs
Installed-Size: $(du -sk "$root/usr" "$root/lib" | awk '{s += $1} END {print s}')
Description: Linux sandbox runtime for AI agents and untrusted code
 nsbox runs sandboxes built from Linux namespaces, cgroups and overlayfs, each
 with stateful shell sessions, processes, files and a network of its own,
 behind an HTTP API on a unix socket. The package holds the daemon and CLI
 (one static binary) and its systemd unit.
CONTROL
cat >"$root/DEBIAN/postinst" <<'SCRIPT'
#!/bin/sh
set -e
if [ "$1" = configure ] && [ -d /run/systemd/system ]; then
	systemctl daemon-reload
	systemctl enable --now nsbox.service
fi
SCRIPT
cat >"$root/DEBIAN/prerm" <<'SCRIPT'
#!/bin/sh
set -e
if [ "$1" = remove ] && [ -d /run/systemd/system ]; then
	systemctl disable --now nsbox.service || true
fi
SCRIPT
cat >"$root/DEBIAN/postrm" <<'SCRIPT'
#!/bin/sh
set -e
if [ -d /run/systemd/system ]; then
	systemctl daemon-reload || true
fi
SCRIPT
chmod 0755 "$root/DEBIAN/postinst" "$root/DEBIAN/prerm" "$root/DEBIAN/postrm"
mkdir -p "$out"
deb="$out/nsbox_${version}_${arch}.deb"
dpkg-deb --root-owner-group -Zxz --build "$root" "$deb" >/dev/null
echo "$deb"
