package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/nsbox/nsbox/api"
)

// TestAgentIgnoresSignalsFromInside is the attack of issue 11 item 7: sandbox root sends
// PID 1 (the agent) every signal, 1 to 64, by name the ones that used to end it or that it
// used to broadcast; then the host sends it every one but SIGKILL and SIGSTOP. The sandbox,
// its session and its background processes must go on.
func TestAgentIgnoresSignalsFromInside(t *testing.T) {
	d := startDaemon(t)
	d.create(api.CreateSandboxRequest{ID: "c", Image: "busybox"})
	pid := d.agentPID("c")
	d.sh("c", "export KEPT=yes; sleep 1000 &")
	d.sh("c", "for s in TERM INT QUIT HUP USR1 USR2 ALRM PIPE SEGV ABRT TSTP $(seq 1 64); do kill -$s 1; done")
	if got := d.sh("c", "echo $KEPT; grep -qx sleep /proc/[0-9]*/comm && echo sleeping"); got != "yes\nsleeping\n" {
		t.Fatalf("after the signals from inside: %q", got)
	}
	for s := unix.Signal(1); s <= 64; s++ {
		if s != unix.SIGKILL && s != unix.SIGSTOP {
			if err := unix.Kill(pid, s); err != nil {
				t.Fatalf("send signal %d: %v", s, err)
			}
		}
	}
	if got := d.sh("c", "echo $KEPT; grep -qx sleep /proc/[0-9]*/comm && echo sleeping"); got != "yes\nsleeping\n" {
		t.Fatalf("after the signals from the host: %q", got)
	}
	if !alive(pid) {
		t.Fatalf("the agent %d died", pid)
	}
}

// TestAgentShutdown: POST /v1/shutdown on the agent's host-only socket (what the daemon is
// to use to stop a sandbox, as signals are ignored) ends every process, answers 204 once
// nothing but the agent is left (the daemon's remove answers then, killing the agent), and
// the agent exits by itself after.
func TestAgentShutdown(t *testing.T) {
	d := startDaemon(t)
	d.create(api.CreateSandboxRequest{ID: "c", Image: "busybox"})
	pid := d.agentPID("c")
	d.sh("c", "sleep 1000 &")
	socks, _ := filepath.Glob(filepath.Join(d.runDir, "sandboxes", "*", "agent.sock"))
	if len(socks) != 1 {
		t.Fatalf("agent sockets: %v", socks)
	}
	agent := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var dialer net.Dialer
		return dialer.DialContext(ctx, "unix", socks[0])
	}}}
	resp, err := agent.Post("http://agent/v1/shutdown", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNoContent {
		t.Fatalf("shutdown: %s", resp.Status)
	}
	if children := childrenOf(t, pid); len(children) != 0 {
		t.Errorf("the agent answered its shutdown with children left: %v", children)
	}
	for deadline := time.Now().Add(time.Minute); alive(pid); { // a deadlock guard
		if time.Now().After(deadline) {
			t.Fatalf("the agent %d still runs after shutdown", pid)
		}
		time.Sleep(10 * time.Millisecond)
	}
	// Every process of the sandbox ended with it (its cgroup and files stay until rm).
	for _, leak := range d.currentLeaks() {
		if strings.HasPrefix(leak, "process ") {
			t.Errorf("still running after shutdown: %s", leak)
		}
	}
}

// childrenOf lists the pids of a process's children (of all its threads), none if it is gone.
func childrenOf(t *testing.T, pid int) []string {
	t.Helper()
	lists, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/children", pid))
	var children []string
	for _, list := range lists {
		data, err := os.ReadFile(list)
		if err != nil && !errors.Is(err, os.ErrNotExist) && !errors.Is(err, unix.ESRCH) {
			t.Fatal(err)
		}
		children = append(children, strings.Fields(string(data))...)
	}
	return children
}
