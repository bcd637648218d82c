#!/usr/bin/env bash
# The nsbox demo: installs what is missing, builds nsbox, starts the daemon (unless one is
# already running), drives a sandbox end to end, removes it and stops the daemon it started.
# Run as root on Debian 12: `bash scripts/demo.sh`.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH=$PATH:/usr/local/go/bin
scripts/install-deps.sh
make --no-print-directory build >/dev/null
BIN=$PWD/bin/nsbox
export NSBOX_SOCKET=${NSBOX_SOCKET:-/run/nsbox/nsbox.sock}

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
show() { printf '$ %s\n' "$*"; "$@"; }
nsbox() { "$BIN" "$@"; }

PROXY=127.0.0.1:18080 # the preview proxy of a daemon this demo starts
started_daemon=""
start_daemon() {
	"$BIN" daemon --proxy-listen "$PROXY" --proxy-domain nsbox.localhost >>/tmp/nsbox-demo-daemon.log 2>&1 &
	started_daemon=$!
	for _ in $(seq 100); do nsbox version >/dev/null 2>&1 && return; sleep 0.05; done
	echo "the daemon did not start; see /tmp/nsbox-demo-daemon.log" >&2
	exit 1
}
stop_daemon() {
	kill "$started_daemon" 2>/dev/null && wait "$started_daemon" 2>/dev/null || true
	"$BIN" daemon --cleanup >>/tmp/nsbox-demo-daemon.log 2>&1 || true # its network rules
	started_daemon=""
}
cleanup() {
	nsbox rm -f demo proj >/dev/null 2>&1 || true
	rm -rf /tmp/nsbox-demo-project
	if [[ -n $started_daemon ]]; then stop_daemon; fi
}
trap cleanup EXIT

step "start the daemon"
if nsbox version >/dev/null 2>&1; then
	echo "a daemon already answers on $NSBOX_SOCKET; using it"
else
	start_daemon
	echo "daemon pid $started_daemon, API on $NSBOX_SOCKET (log: /tmp/nsbox-demo-daemon.log)"
fi
show nsbox version
sleep 0.3 # the warm pool fills in the background
show nsbox images

step "create a sandbox with limits: it takes a warm container from the pool and binds it (time includes the CLI's own start)"
nsbox rm -f demo >/dev/null 2>&1 || true
start=$(date +%s%N)
show nsbox create --id demo --cpus 0.5 --memory 256 --pids 128 --env GREETING=hello --label owner=demo
echo "created in $(( ($(date +%s%N) - start) / 1000000 )) ms"
show nsbox ls

step "run commands in it: own hostname, pid namespace (the agent is PID 1), its own network"
show nsbox exec demo -- sh -c 'echo "$GREETING from $(hostname), cwd $(pwd)"; ps -o pid,comm -p 1; ip -brief addr 2>/dev/null || ls /sys/class/net'

step "sessions are stateful shells: cd, export, functions persist between commands"
show nsbox sh demo 'cd /tmp && export STAGE=built && greet() { echo "hi $1"; }'
show nsbox sh demo 'pwd; echo "STAGE=$STAGE"; greet there'
show nsbox session create --id other demo
show nsbox sh -s other demo 'pwd; echo "STAGE=${STAGE:-unset in this session}"'
show nsbox sh demo 'for i in 1 2 3; do echo "tick $i"; sleep 0.3; done'
show nsbox session ls demo

step "files go in and out through the API, resolved inside the sandbox"
echo 'echo "hello from a script copied in, running in $(hostname)"' > /tmp/nsbox-demo-hello.sh
show nsbox cp /tmp/nsbox-demo-hello.sh demo:/workspace/hello.sh
show nsbox files ls demo /workspace
show nsbox exec demo -- sh /workspace/hello.sh
rm -f /tmp/nsbox-demo-hello.sh

step "sandbox-wide environment: a change reaches new commands, but a session's own exports win"
show nsbox sh demo 'export GREETING=mine'
show nsbox env demo GREETING=changed MODE=dev
show nsbox sh demo 'echo "default session: GREETING=$GREETING MODE=$MODE"'
show nsbox sh -s other demo 'echo "other session:   GREETING=$GREETING MODE=$MODE"'

step "a long-running process: a web server, exposed on a host port and through the preview proxy"
show nsbox sh demo 'mkdir -p /workspace/www && echo "served from $(hostname)" > /workspace/www/index.html'
show nsbox start --id web demo -- busybox httpd -f -p 8080 -h /workspace/www
show nsbox wait --port 8080 --timeout 10s demo web
show nsbox ps demo
mapping=$(nsbox port add demo 8080)
echo "\$ nsbox port add demo 8080"; echo "$mapping"
# The first line is the mapping and its URL; the second says where it listens (127.0.0.1 by default).
host_port=$(head -n 1 <<<"$mapping" | sed -E 's/^[^:]*:([0-9]+).*/\1/')
url=$(head -n 1 <<<"$mapping" | awk '{print $NF}')
http_get() { # HOST-HEADER ADDRESS PORT: a GET with bash alone
	exec 3<>"/dev/tcp/$2/$3"
	printf 'GET / HTTP/1.0\r\nHost: %s\r\n\r\n' "$1" >&3
	tail -n 1 <&3
	exec 3<&-
}
echo "GET 127.0.0.1:$host_port -> $(http_get localhost 127.0.0.1 "$host_port")"
if [[ -n $started_daemon && $url == http://*.nsbox.localhost* ]]; then
	preview_host=$(sed -E 's|^http://([^:/]+).*|\1|' <<<"$url")
	echo "GET $url (the proxy on $PROXY, by Host) -> $(http_get "$preview_host" "${PROXY%:*}" "${PROXY#*:}")"
fi
show nsbox port rm demo 8080
show nsbox kill demo web

step "its limits, as the sandbox itself sees them"
show nsbox exec demo -- sh -c '
if [ -f /sys/fs/cgroup/memory.max ]; then
  echo "memory.max: $(cat /sys/fs/cgroup/memory.max)"; echo "cpu.max: $(cat /sys/fs/cgroup/cpu.max)"; echo "pids.max: $(cat /sys/fs/cgroup/pids.max)"
else
  echo "memory limit: $(cat /sys/fs/cgroup/memory/memory.limit_in_bytes) bytes"
  echo "cpu quota: $(cat /sys/fs/cgroup/cpu/cpu.cfs_quota_us)us per $(cat /sys/fs/cgroup/cpu/cpu.cfs_period_us)us"
  echo "pids max: $(cat /sys/fs/cgroup/pids$(sed -n "s/^[0-9]*:pids://p" /proc/self/cgroup)/pids.max)"
fi'

step "the host's system is read-only and its secrets are masked"
show nsbox exec demo -- sh -c 'echo "/etc/shadow has $(wc -c < /etc/shadow) bytes"; touch /usr/bin/x 2>&1 | head -1; echo "but /workspace is writable" > /workspace/note; cat /workspace/note'

step "exit codes, stderr and binary output pass through; timeouts kill the command"
show nsbox exec demo -- sh -c 'echo to-stderr >&2; exit 3' || echo "(exit code $?)"
echo "\$ nsbox exec demo -- printf 'a\\000b\\377\\n' | od -c"
nsbox exec demo -- printf 'a\000b\377\n' | od -c | head -1
show nsbox exec --timeout 300ms demo -- sleep 60 || echo "(exit code $?)"

step "pause freezes everything in the sandbox (its memory stays); the next request that needs it resumes it"
show nsbox pause demo
show nsbox ls
show nsbox sh demo 'echo "running again, cwd $(pwd)"'
show nsbox ls

if [[ -n $started_daemon ]]; then
	step "kill -9 the daemon and start it again: the sandbox and its files are still there"
	kill -9 "$started_daemon"; wait "$started_daemon" 2>/dev/null || true
	start_daemon
	show nsbox ls
	show nsbox exec demo -- cat /workspace/note
	show nsbox sh demo 'echo "the session still has cwd $(pwd) and STAGE=$STAGE"' 
fi

step "a host directory as a copy-on-write workspace: the sandbox changes it, the host's copy stays as it was"
rm -rf /tmp/nsbox-demo-project && mkdir -p /tmp/nsbox-demo-project
echo "first line" > /tmp/nsbox-demo-project/README; echo "old" > /tmp/nsbox-demo-project/old.txt
show nsbox create --id proj --image busybox --workspace /tmp/nsbox-demo-project
show nsbox sh proj 'echo "second line" >> README && rm old.txt && echo new > new.txt && ls'
show nsbox diff proj
show ls /tmp/nsbox-demo-project
show nsbox rm -f proj

step "remove it: nothing is left behind"
show nsbox rm demo
show nsbox ls
if [[ -n $started_daemon ]]; then
	echo "stopping the daemon (its warm pool goes with it) and removing its network rules"
	stop_daemon
	echo "nsbox mounts on the host: $(grep -c nsbox /proc/self/mountinfo || true)"
	echo "nsbox cgroups left: $(find /sys/fs/cgroup/*/nsbox /sys/fs/cgroup/nsbox -mindepth 1 -maxdepth 1 -type d 2>/dev/null | wc -l)"
	echo "nsbox processes left: $(pgrep -fc '/.nsbox/nsbox agent' || true)"
	if command -v nft >/dev/null; then echo "nftables table nsbox: $(nft list table inet nsbox >/dev/null 2>&1 && echo present || echo gone)"; fi
fi
step "done"
