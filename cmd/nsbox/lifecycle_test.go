package main

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/nsbox/nsbox/api"
	"github.com/nsbox/nsbox/client"
)

// counter reads the counter a sandbox's process keeps in /tmp/count, from the host, through
// the agent's root (works while the sandbox is frozen).
func (d *testDaemon) counter(id string) string {
	d.t.Helper()
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/root/tmp/count", d.agentPID(id)))
	if err != nil {
		d.t.Fatal(err)
	}
	return strings.TrimSpace(string(data))
}

// counts reports whether the counter moves within a few seconds.
func (d *testDaemon) counts(id string) bool {
	d.t.Helper()
	first := d.counter(id)
	for deadline := time.Now().Add(3 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if d.counter(id) != first {
			return true
		}
	}
	return false
}

func TestPauseAndResume(t *testing.T) {
	d := startDaemon(t)
	ctx := context.Background()
	d.create(api.CreateSandboxRequest{ID: "pz", Image: "busybox"})
	d.sh("pz", "cd /tmp && export MARK=kept")
	d.startProc("pz", api.StartProcessRequest{ID: "count", Command: "i=0; while true; do i=$((i+1)); echo $i > /tmp/count; sleep 0.02; done"})
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		if _, err := os.Stat(fmt.Sprintf("/proc/%d/root/tmp/count", d.agentPID("pz"))); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the counter never started")
		}
	}
	if !d.counts("pz") {
		t.Fatal("the counter does not count before the pause")
	}

	sb, err := d.client.PauseSandbox(ctx, "pz")
	if err != nil || sb.Status != api.StatusPaused {
		t.Fatalf("pause: %+v %v", sb, err)
	}
	if d.counts("pz") {
		t.Error("the counter counts while the sandbox is paused")
	}
	if e := d.expectError("POST", "/v1/sandboxes/pz/pause", nil, http.StatusConflict, api.CodeConflict); !strings.Contains(e.Message, "paused") {
		t.Errorf("pause while paused: %q does not name the state", e.Message)
	}
	if out, _, code := d.cli("", "ls"); code != 0 || !strings.Contains(out, "paused") {
		t.Errorf("ls while paused: %q %d", out, code)
	}

	// A daemon restart keeps it paused; resume then works.
	d.kill9()
	d.start()
	if sb, err := d.client.GetSandbox(ctx, "pz"); err != nil || sb.Status != api.StatusPaused {
		t.Fatalf("after a daemon restart: %+v %v", sb, err)
	}
	if out, errOut, code := d.cli("", "resume", "pz"); code != 0 || out != "pz\n" {
		t.Fatalf("nsbox resume: %q %q %d", out, errOut, code)
	}
	if !d.counts("pz") {
		t.Error("the counter does not count after resume")
	}
	if got := d.sh("pz", "pwd; echo $MARK"); got != "/tmp\nkept\n" {
		t.Errorf("the session after resume: %q", got)
	}
	d.expectError("POST", "/v1/sandboxes/pz/resume", nil, http.StatusConflict, api.CodeConflict)
	d.expectError("POST", "/v1/sandboxes/nope/pause", nil, http.StatusNotFound, api.CodeNotFound)

	// A request that needs it running resumes a paused sandbox; GET does not.
	if _, err := d.client.PauseSandbox(ctx, "pz"); err != nil {
		t.Fatal(err)
	}
	if sb, _ := d.client.GetSandbox(ctx, "pz"); sb.Status != api.StatusPaused {
		t.Fatalf("GET woke it: %s", sb.Status)
	}
	if got := d.sh("pz", "echo awake"); got != "awake\n" {
		t.Errorf("exec in a paused sandbox: %q", got)
	}
	if sb, _ := d.client.GetSandbox(ctx, "pz"); sb.Status != api.StatusRunning || !d.counts("pz") {
		t.Errorf("after an exec: %s", sb.Status)
	}

	// A paused sandbox can be removed, gracefully, and leaves nothing.
	if out, errOut, code := d.cli("", "pause", "pz"); code != 0 || out != "pz\n" {
		t.Fatalf("nsbox pause: %q %q %d", out, errOut, code)
	}
	pid := d.agentPID("pz")
	if err := d.client.RemoveSandbox(ctx, "pz", client.RemoveOptions{}); err != nil {
		t.Fatal(err)
	}
	if alive(pid) {
		t.Errorf("the agent of a removed paused sandbox still runs")
	}
	if leaks := d.leaks(); len(leaks) > 0 {
		t.Errorf("after removing a paused sandbox: %v", leaks)
	}
}

func TestIdleLifecycle(t *testing.T) {
	d := startDaemon(t)
	ctx := context.Background()
	d.create(api.CreateSandboxRequest{ID: "nap", Image: "busybox", Lifecycle: &api.Lifecycle{IdleSeconds: 1}})
	out, errOut, code := d.cli("", "create", "--id", "brief", "--image", "busybox", "--ttl", "2s")
	if code != 0 || out != "brief\n" {
		t.Fatalf("create --ttl: %d %q %q", code, out, errOut)
	}
	// A long exec is activity: the sandbox does not pause under it.
	if got := d.sh("nap", "sleep 2.5; echo done"); got != "done\n" {
		t.Fatalf("a long exec: %q", got)
	}
	if sb, _ := d.client.GetSandbox(ctx, "nap"); sb.Status != api.StatusRunning {
		t.Errorf("paused during a long exec: %s", sb.Status)
	}
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		nap, _ := d.client.GetSandbox(ctx, "nap")
		_, err := d.client.GetSandbox(ctx, "brief")
		if nap.Status == api.StatusPaused && api.IsCode(err, api.CodeNotFound) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after 20 s: nap is %s, brief: %v", nap.Status, err)
		}
	}
	if got := d.sh("nap", "echo back"); got != "back\n" {
		t.Errorf("a request to a sandbox paused when idle: %q", got)
	}
}
