package main

import (
	_ "embed"
	"os/exec"
	"strings"
	"testing"

	"github.com/nsbox/nsbox/api"
)

//go:embed testdata/escape.py
var escapeScript string

// escapeAttempts are the names escape.py prints a line for; each must be reported blocked.
var escapeAttempts = []string{
	"mount", "pivot_root", "unshare", "setns", "ptrace", "keyctl", "bpf", "perf_event_open", "userfaultfd",
	"kexec_load", "init_module", "open_by_handle_at", "chroot", "mknod", "raw-socket", "vsock",
	"write-proc-sys", "sysrq-trigger", "write-cgroupfs", "read-kcore", "read-keys", "write-agent-exe",
	"write-self-exe-agent", "agent-oom-score", "agent-task-oom-score", "agent-fds", "inherited-fds",
}

// TestEscapeSuite tries, as root inside a sandbox, each class of escape the kernel boundary must
// stop (issue 10's list): mounts, pivot_root and chroot, new user namespaces, setns, ptrace of
// PID 1, keyrings, bpf, perf, userfaultfd, kexec and modules, handles, device nodes, raw and
// vsock sockets, /proc/sys, sysrq, cgroupfs, kcore and keys, the agent's binary, the agent's fds
// and fds leaked into the sandbox. Every attempt must be made and fail.
func TestEscapeSuite(t *testing.T) {
	if _, err := exec.LookPath("python3"); err != nil {
		t.Skip("the host image needs python3")
	}
	d := startDaemon(t)
	d.create(api.CreateSandboxRequest{ID: "jail"})
	p := d.startProc("jail", api.StartProcessRequest{ID: "escape", Argv: []string{"python3", "-c", escapeScript}})
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
	t.Logf("escape attempts: %v", reported)
}
