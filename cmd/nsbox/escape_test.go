package main

import (
	"context"
	_ "embed"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nsbox/nsbox/api"
	"github.com/nsbox/nsbox/client"
)

//go:embed testdata/escape.py
var escapeScript string

// escapeAttempts are the names escape.py prints a line for; each must be reported blocked.
var escapeAttempts = []string{
	"mount", "pivot_root", "unshare", "setns", "ptrace", "keyctl", "bpf", "perf_event_open", "userfaultfd",
	"kexec_load", "init_module", "open_by_handle_at", "chroot", "mknod", "raw-socket", "vsock", "vsock-upper-half",
	"write-proc-sys", "sysrq-trigger", "write-cgroupfs", "read-kcore", "read-keys", "read-kpageflags",
	"read-slabinfo", "read-config-gz", "dev-nodes", "read-dev-kmsg", "read-dev-mem", "ptrace-session", "write-agent-exe",
	"write-self-exe-agent", "agent-oom-score", "agent-task-oom-score", "agent-fds", "inherited-fds",
	"host-loopback-listener", "host-veth-listener", "other-sandbox", "daemon-socket", "other-sandbox-agent-socket",
}

// TestEscapeSuite tries, as root inside a sandbox, each class of escape the kernel boundary must
// stop (issue 10's list): mounts, pivot_root and chroot, new user namespaces, setns, ptrace of
// PID 1 and of a session's shell, keyrings, bpf, perf, userfaultfd, kexec and modules, handles,
// device nodes (made, and any but runc's defaults in /dev), raw and vsock sockets (vsock also
// with the upper half of the family's register set), /proc/sys, sysrq, cgroupfs, kcore, keys,
// kpageflags, slabinfo and config.gz, /dev/kmsg and /dev/mem,
// the agent's binary, the agent's fds and fds leaked into the sandbox, host listeners on
// 127.0.0.1 and on the host side of the veth, another sandbox, and the sockets of the daemon
// and of the other sandbox's agent (by their host paths). Every attempt must be made and fail.
func TestEscapeSuite(t *testing.T) {
	if _, err := exec.LookPath("python3"); err != nil {
		t.Skip("the host image needs python3")
	}
	d := startDaemon(t)
	d.create(api.CreateSandboxRequest{ID: "jail"})
	d.create(api.CreateSandboxRequest{ID: "peer", Image: "busybox"})
	startWeb(d, "peer", "8080", "peer")
	peerIP := d.sandboxIP("peer")
	mustHostGet(t, "http://"+peerIP+":8080/", "peer") // it serves
	gateway := d.net.subnet.Addr().Next()
	loopback := newHostListener(t, "127.0.0.1:0", d.net.subnet)
	veth := newHostListener(t, gateway.String()+":0", d.net.subnet)
	mustHostGet(t, fmt.Sprintf("http://%s:%d/", gateway, veth.port), "host") // they serve
	victim := d.createSession("jail", "victim", api.CreateSessionRequest{})
	peerAgent := filepath.Join(d.runDir, "sandboxes", d.container("peer"), "agent.sock")
	for _, sock := range []string{d.socket, peerAgent} {
		if fi, err := os.Stat(sock); err != nil || fi.Mode()&os.ModeSocket == 0 {
			t.Fatalf("the host has no socket %s to try: %v %v", sock, fi, err)
		}
	}
	args := []string{"python3", "-c", escapeScript, strconv.Itoa(loopback.port), gateway.String(), strconv.Itoa(veth.port), peerIP, "8080",
		strconv.Itoa(victim.PID), d.socket, peerAgent}
	p := d.startProc("jail", api.StartProcessRequest{ID: "escape", Argv: args})
	if res := d.waitProc("jail", p.ID, api.WaitProcessRequest{}); !res.Met || res.Process.ExitCode != 0 {
		stdout, stderr, _, _ := d.readLogs("jail", p.ID, 0, 0)
		t.Fatalf("the escape script: %+v\n%s\n%s", res.Process, stdout, stderr)
	}
	stdout, _, _, _ := d.readLogs("jail", p.ID, 0, 0)
	reported := map[string]string{}
	for _, line := range strings.Split(strings.TrimSpace(string(stdout)), "\n") {
		verdict, rest, _ := strings.Cut(line, " ")
		name, how, _ := strings.Cut(rest, ": ")
		reported[name] = verdict + ": " + how
		if verdict != "BLOCKED" {
			t.Errorf("%s", line)
		}
	}
	for _, name := range escapeAttempts {
		if _, ok := reported[name]; !ok {
			t.Errorf("%s was not tried", name)
		}
	}
	// A ptrace refused for a process that is not there (ESRCH) would prove nothing, nor a vsock
	// socket refused by a kernel without vsock (EAFNOSUPPORT): the seccomp filter's is EPERM.
	for _, name := range []string{"ptrace", "ptrace-session", "vsock", "vsock-upper-half"} {
		if got := reported[name]; got != "BLOCKED: EPERM" {
			t.Errorf("%s: %q, want it refused with EPERM", name, got)
		}
	}
	for _, l := range []*hostListener{loopback, veth} {
		if from := l.sandboxConnections(); len(from) > 0 {
			t.Errorf("the host listener on port %d accepted connections from sandboxes: %v", l.port, from)
		}
	}
	t.Logf("escape attempts: %v", reported)

	// Seen from the host, no fd of PID 1 (nor its cwd or root) is a directory of the host's
	// file systems: its directories are the sandbox's root, its disk's and its tmpfs'. (Its
	// stdout and stderr are its log file on the host: a file, and PID 1's fds are not
	// reachable from inside, "agent-fds" above.)
	hostDevs := map[uint64]string{}
	for _, dir := range []string{"/", d.runDir, d.dataDir, os.TempDir()} {
		var st syscall.Stat_t
		if err := syscall.Stat(dir, &st); err != nil {
			t.Fatal(err)
		}
		hostDevs[st.Dev] = dir
	}
	agent := d.agentPID("jail")
	fds, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", agent))
	if err != nil {
		t.Fatal(err)
	}
	names := []string{"cwd", "root"}
	for _, fd := range fds {
		names = append(names, "fd/"+fd.Name())
	}
	dirs := 0
	for _, name := range names {
		p := fmt.Sprintf("/proc/%d/%s", agent, name)
		var st syscall.Stat_t
		if err := syscall.Stat(p, &st); err != nil || st.Mode&syscall.S_IFMT != syscall.S_IFDIR {
			continue // gone meanwhile, or not a directory
		}
		dirs++
		if dir, ok := hostDevs[st.Dev]; ok {
			target, _ := os.Readlink(p)
			t.Errorf("the agent's %s is a directory (%s) on the file system of the host's %s", name, target, dir)
		}
	}
	if dirs < 2 { // its cwd and root at least
		t.Errorf("found %d directories among the agent's fds, cwd and root", dirs)
	}

	// No host fd reaches a session's shell or its commands (CVE-2024-21626 class): every fd of
	// the shell and of a command in it is a terminal, /dev/null, a pipe or FIFO, one of the
	// agent's session files, or the session's private folder (fd 999: the directory named
	// after it in the detached private store, shown from that mount's root; TestPrivateFolder
	// checks that nothing beyond it is reached).
	allowed := regexp.MustCompile(`^(/dev/(pts/[0-9]+|null|ptmx|tty)|pipe:\[[0-9]+\]|/run/nsbox/sessions/.*|/proc/[0-9]+/fd|/(bash|sh)-session)$`)
	d.create(api.CreateSandboxRequest{ID: "shells", Image: "busybox"})
	for _, sess := range []api.CreateSessionRequest{{ID: "bash-session", Shell: "bash"}, {ID: "sh-session", Shell: "sh"}} {
		box := map[string]string{"bash-session": "jail", "sh-session": "shells"}[sess.ID]
		if _, err := d.client.CreateSession(context.Background(), box, sess); err != nil {
			t.Fatal(err)
		}
		res := d.exec(box, api.ExecRequest{SessionID: sess.ID, Command: `for f in /proc/$$/fd/* /proc/self/fd/*; do echo "$(readlink "$f")"; done`})
		targets := strings.Fields(string(res.Stdout))
		if len(targets) < 6 { // at least 0-2 of the shell and of the command
			t.Errorf("%s: the fds were not listed: %q %q", sess.ID, res.Stdout, res.Stderr)
		}
		for _, target := range targets {
			if !allowed.MatchString(target) {
				t.Errorf("%s: an fd of the shell or its command is %q", sess.ID, target)
			}
		}
	}
}

// cgroupCounter reads the counter named key (a "key N" line) of a sandbox's cgroup from the
// host: file in the controller's v1 hierarchy, or v2file in the unified one.
func cgroupCounter(t *testing.T, pid int, controller, file, v2file, key string) int {
	t.Helper()
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", pid))
	if err != nil {
		t.Fatal(err)
	}
	path := ""
	for _, line := range strings.Split(strings.TrimSpace(string(data)), "\n") {
		parts := strings.SplitN(line, ":", 3)
		if len(parts) != 3 {
			continue
		}
		if slices.Contains(strings.Split(parts[1], ","), controller) {
			path = filepath.Join("/sys/fs/cgroup", controller, parts[2], file)
			break
		}
		if parts[0] == "0" && parts[1] == "" {
			path = filepath.Join("/sys/fs/cgroup", parts[2], v2file)
		}
	}
	content, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("the sandbox's %s counters: %v", controller, err)
	}
	for _, line := range strings.Split(string(content), "\n") {
		if f := strings.Fields(line); len(f) == 2 && f[0] == key {
			n, err := strconv.Atoi(f[1])
			if err != nil {
				t.Fatalf("%s: %q", path, line)
			}
			return n
		}
	}
	t.Fatalf("%s has no %s line:\n%s", path, key, content)
	return 0
}

// TestEscapeResourcesContained runs a fork bomb, a memory hog and a disk filler, each in a
// sandbox of its own with limits, and checks that each hit its limit (the cgroup's pids.events
// max and memory oom_kill counters, ENOSPC), that the daemon and another sandbox keep
// answering meanwhile, and that each sandbox can still be removed (the harness then checks
// that nothing of them is left).
func TestEscapeResourcesContained(t *testing.T) {
	d := startDaemon(t)
	d.create(api.CreateSandboxRequest{ID: "bystander", Image: "busybox"})
	othersAnswer := func(during string) {
		t.Helper()
		if _, err := d.client.Version(context.Background()); err != nil {
			t.Errorf("during the %s the daemon does not answer: %v", during, err)
		}
		if out := d.sh("bystander", "echo alive && head -c 1048576 /dev/zero > /tmp/f && wc -c < /tmp/f"); out != "alive\n1048576\n" {
			t.Errorf("during the %s the other sandbox answers %q", during, out)
		}
	}

	// A fork bomb against a pids limit: it keeps running while the others answer.
	d.create(api.CreateSandboxRequest{ID: "forkbomb", Image: "busybox", Limits: api.Limits{Pids: 64}})
	d.startProc("forkbomb", api.StartProcessRequest{ID: "bomb", Command: "bomb() { bomb | bomb & }; bomb"})
	pid := d.agentPID("forkbomb")
	for cgroupCounter(t, pid, "pids", "work/pids.events", "pids.events", "max") == 0 {
		time.Sleep(50 * time.Millisecond) // until the bomb meets the limit; the test's deadline bounds it
	}
	othersAnswer("fork bomb")
	t.Logf("fork bomb: pids limit met %d times", cgroupCounter(t, pid, "pids", "work/pids.events", "pids.events", "max"))
	if err := d.client.RemoveSandbox(context.Background(), "forkbomb", client.RemoveOptions{Force: true}); err != nil {
		t.Fatalf("remove the fork bomb's sandbox: %v", err)
	}
	waitExited(t, pid, "the fork bomb's agent")

	// A memory hog against a memory limit: busybox dd allocates its 256 MiB block and fills it.
	d.create(api.CreateSandboxRequest{ID: "memhog", Image: "busybox", Limits: api.Limits{MemoryMB: 64}})
	pid = d.agentPID("memhog")
	res := d.exec("memhog", api.ExecRequest{Command: "dd if=/dev/zero of=/dev/null bs=256M count=4"})
	if res.ExitCode == 0 {
		t.Fatalf("256 MiB in a 64 MiB sandbox: exit 0")
	}
	n := cgroupCounter(t, pid, "memory", "memory.oom_control", "memory.events", "oom_kill")
	if n == 0 {
		t.Fatalf("the memory hog exited %d without an OOM kill", res.ExitCode)
	}
	t.Logf("memory hog: exit %d, %d OOM kills", res.ExitCode, n)
	othersAnswer("memory hog")
	if out := d.sh("memhog", "echo still-here"); out != "still-here\n" {
		t.Errorf("the memory hog's sandbox after the OOM kill: %q", out)
	}
	if err := d.client.RemoveSandbox(context.Background(), "memhog", client.RemoveOptions{}); err != nil {
		t.Fatalf("remove the memory hog's sandbox: %v", err)
	}

	// A disk filler against a disk limit: ENOSPC inside, nothing for anyone else.
	d.create(api.CreateSandboxRequest{ID: "diskhog", Image: "busybox", Limits: api.Limits{DiskMB: 64}})
	res = d.exec("diskhog", api.ExecRequest{Command: "dd if=/dev/zero of=/fill bs=1M count=256; echo rc=$?; wc -c < /fill"})
	out, stderr, _ := res.Output()
	if !strings.Contains(string(stderr), "No space left on device") || strings.Contains(string(out), "rc=0") {
		t.Fatalf("filling a 64 MB disk with 256 MB: %q %q", out, stderr)
	}
	if f := strings.Fields(string(out)); len(f) != 2 || mustAtoi(t, f[1]) > 64<<20 {
		t.Errorf("the disk filler wrote %v, more than the 64 MB limit", f)
	}
	t.Logf("disk filler: %q", out)
	othersAnswer("disk filler")
	if err := d.client.RemoveSandbox(context.Background(), "diskhog", client.RemoveOptions{}); err != nil {
		t.Fatalf("remove the disk filler's sandbox: %v", err)
	}
}

func mustAtoi(t *testing.T, s string) int {
	t.Helper()
	n, err := strconv.Atoi(s)
	if err != nil {
		t.Fatal(err)
	}
	return n
}
