package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/nsbox/nsbox/api"
	"github.com/nsbox/nsbox/client"
)

// waitCounter waits until the counting process of a sandbox has written /tmp/count.
func (d *testDaemon) waitCounter(id string) {
	d.t.Helper()
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		if _, err := os.Stat(fmt.Sprintf("/proc/%d/root/tmp/count", d.agentPID(id))); err == nil {
			return
		}
		if time.Now().After(deadline) {
			d.t.Fatal("the counter never started")
		}
	}
}

// containerOf is the container a sandbox runs in, read from its agent's cgroup.
func (d *testDaemon) containerOf(id string) string {
	d.t.Helper()
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", d.agentPID(id)))
	if err != nil {
		d.t.Fatal(err)
	}
	_, rest, ok := strings.Cut(string(data), "/"+d.cgroupParent+"/")
	if !ok {
		d.t.Fatalf("sandbox %s's agent is in no cgroup under %s: %s", id, d.cgroupParent, data)
	}
	container, _, _ := strings.Cut(strings.Fields(rest)[0], "/")
	return container
}

// containerCgroups lists the cgroup directories of a container, on every hierarchy.
func (d *testDaemon) containerCgroups(container string) []string {
	dirs, _ := filepath.Glob("/sys/fs/cgroup/*/" + d.cgroupParent + "/" + container)
	return dirs
}

const countLoop = "i=0; while true; do i=$((i+1)); echo $i > /tmp/count; sleep 0.02; done"

// TestHibernateAndWake is the scenario: a session holding state and a counting process;
// hibernate (processes gone, cgroup gone, memory freed), a daemon kill -9, then an exec wakes it
// with the session's cwd, exports, alias and function, its files, the same address and exposed
// port, the restart-policy process counting again and the other one listed as stopped.
func TestHibernateAndWake(t *testing.T) {
	d := startDaemon(t)
	ctx := context.Background()
	d.create(api.CreateSandboxRequest{ID: "hb", Env: map[string]string{"FROM_CREATE": "yes"}})
	d.sh("hb", `echo kept > /root/file && mkdir -p /tmp/deep && cd /tmp/deep && export MARK=kept && alias hi='echo alias-works' && fn() { echo fn-works; }; set -o noclobber`)
	d.startProc("hb", api.StartProcessRequest{ID: "count", Command: countLoop, Restart: api.RestartOnResume})
	d.startProc("hb", api.StartProcessRequest{ID: "plain", Command: "echo plain-started; sleep 1000"})
	// It has written its line before the hibernation (on a busy machine the test got there
	// first); the save keeps what it wrote, read or still in the pipe (TestSaveHasWhatWasWritten).
	if w, err := d.client.WaitProcess(ctx, "hb", "plain", api.WaitProcessRequest{Log: "plain-started"}); err != nil || !w.Met {
		t.Fatalf("plain's line: %+v %v", w, err)
	}
	d.waitCounter("hb")
	port, err := d.client.ExposePort(ctx, "hb", api.ExposePortRequest{Port: 8080})
	if err != nil {
		t.Fatal(err)
	}
	pid := d.agentPID("hb")
	before, err := d.client.GetSandbox(ctx, "hb")
	if err != nil {
		t.Fatal(err)
	}
	cgroups := d.containerCgroups(d.containerOf("hb"))
	if len(cgroups) == 0 {
		t.Fatal("the sandbox's container has no cgroup to watch")
	}

	if out, errOut, code := d.cli("", "hibernate", "hb"); code != 0 || out != "hb\n" {
		t.Fatalf("nsbox hibernate: %q %q %d", out, errOut, code)
	}
	got, err := d.client.GetSandbox(ctx, "hb")
	if err != nil || got.Status != api.StatusHibernated || got.PID != 0 {
		t.Fatalf("after hibernate: %+v %v", got, err)
	}
	if alive(pid) {
		t.Errorf("the agent (pid %d) still runs after hibernate", pid)
	}
	for _, dir := range cgroups {
		if _, err := os.Stat(dir); err == nil {
			t.Errorf("cgroup %s is still there after hibernate (its memory is not freed)", dir)
		}
	}
	if out, _, code := d.cli("", "ls"); code != 0 || !strings.Contains(out, "hibernated") {
		t.Errorf("ls while hibernated: %q %d", out, code)
	}
	if e := d.expectError("POST", "/v1/sandboxes/hb/pause", nil, 409, api.CodeConflict); !strings.Contains(e.Message, "hibernated") {
		t.Errorf("pause while hibernated: %q does not name the state", e.Message)
	}
	if e := d.expectError("POST", "/v1/sandboxes/hb/hibernate", api.HibernateRequest{Memory: true}, 400, api.CodeInvalidArgument); !strings.Contains(e.Message, "CRIU") {
		t.Errorf("memory: true: %q does not say why", e.Message)
	}

	d.kill9()
	d.start()
	if got, err := d.client.GetSandbox(ctx, "hb"); err != nil || got.Status != api.StatusHibernated {
		t.Fatalf("after a daemon kill -9: %+v %v", got, err)
	}

	// An exec wakes it, in the session as it was.
	began := time.Now()
	out := d.sh("hb", `pwd; echo "$MARK $FROM_CREATE"; hi; fn; cat /root/file; set -o | grep noclobber`)
	t.Logf("exec that woke the hibernated sandbox answered in %s", time.Since(began))
	for _, want := range []string{"/tmp/deep\n", "kept yes\n", "alias-works\n", "fn-works\n", "kept\n", "noclobber"} {
		if !strings.Contains(out, want) {
			t.Errorf("after wake: %q lacks %q", out, want)
		}
	}
	if strings.Contains(out, "noclobber      \toff") || strings.Contains(out, "noclobber\toff") {
		t.Errorf("shell option noclobber not restored: %q", out)
	}
	after, err := d.client.GetSandbox(ctx, "hb")
	if err != nil || after.Status != api.StatusRunning || after.Network.IP != before.Network.IP || after.PID == 0 {
		t.Fatalf("after wake: %+v (before: %+v) %v", after, before, err)
	}
	ports, err := d.client.ListPorts(ctx, "hb")
	if err != nil || len(ports) != 1 || ports[0].HostPort != port.HostPort {
		t.Errorf("ports after wake: %+v %v (before: %+v)", ports, err, port)
	}
	procs, err := d.client.ListProcesses(ctx, "hb", "", "")
	if err != nil {
		t.Fatal(err)
	}
	status := map[string]api.Process{}
	for _, p := range procs {
		status[p.ID] = p
	}
	if p := status["plain"]; p.Status != api.ProcessStopped || !strings.Contains(p.Error, "hibernation") {
		t.Errorf("plain after wake: %+v", p)
	}
	if p := status["count"]; p.Status != api.ProcessRunning {
		t.Errorf("count after wake: %+v", p)
	}
	logs, err := d.client.ProcessLogs(ctx, "hb", "plain", client.LogsOptions{})
	if err != nil || len(logs.Chunks) == 0 || !strings.Contains(logs.Chunks[0].Data, "plain-started") {
		t.Errorf("plain's log after wake: %+v %v", logs, err)
	}
	d.waitCounter("hb")
	if !d.counts("hb") {
		t.Error("the restart-policy process does not count after wake")
	}

	// Hibernate again from paused, resume explicitly, remove while hibernated.
	if _, err := d.client.PauseSandbox(ctx, "hb"); err != nil {
		t.Fatal(err)
	}
	if _, err := d.client.HibernateSandbox(ctx, "hb", api.HibernateRequest{}); err != nil {
		t.Fatal(err)
	}
	if got, err := d.client.ResumeSandbox(ctx, "hb"); err != nil || got.Status != api.StatusRunning {
		t.Fatalf("resume from hibernation: %+v %v", got, err)
	}
	if out := d.sh("hb", "pwd"); out != "/tmp/deep\n" {
		t.Errorf("after a second hibernation: pwd %q", out)
	}
	if _, err := d.client.HibernateSandbox(ctx, "hb", api.HibernateRequest{}); err != nil {
		t.Fatal(err)
	}
	if err := d.client.RemoveSandbox(ctx, "hb", client.RemoveOptions{}); err != nil {
		t.Fatal(err)
	}
}

// TestHibernateLosesNoOutput: a hibernation stops the sandbox's processes before it saves
// them, so what a process wrote is in its saved log, however fast it writes: a loop that
// prints a count and then appends it to a file (which outlives the container) never has the
// file ahead of its log. Before the stop the file was hundreds of counts ahead.
func TestHibernateLosesNoOutput(t *testing.T) {
	d := startDaemon(t)
	ctx := context.Background()
	d.countingSandbox("hw", "i=0; while :; do i=$((i+1)); echo $i; echo $i >> /tmp/counts; done", 500)
	if _, err := d.client.HibernateSandbox(ctx, "hw", api.HibernateRequest{}); err != nil {
		t.Fatal(err)
	}
	if _, err := d.client.ResumeSandbox(ctx, "hw"); err != nil {
		t.Fatal(err)
	}
	logged := d.lastCount("hw")
	file, err := strconv.Atoi(strings.TrimSpace(d.sh("hw", "tail -n 1 /tmp/counts")))
	if err != nil {
		t.Fatal(err)
	}
	// Stopped between its two echos, the file is one behind.
	if file != logged && file != logged-1 {
		t.Errorf("the loop wrote %d to its file and its saved log ends at %d: what it printed after the save was lost", file, logged)
	}
}

// TestFailedHibernateLetsProcessesRun: a hibernation that fails after its save stopped the
// sandbox's processes (here its saved state cannot be written: the sandbox's data dir is
// immutable) lets them run again, and the sandbox goes on running.
func TestFailedHibernateLetsProcessesRun(t *testing.T) {
	d := startDaemon(t)
	ctx := context.Background()
	d.countingSandbox("hf", "i=0; while :; do i=$((i+1)); echo $i; sleep 0.01; done", 5)
	dir := filepath.Join(d.dataDir, "sandboxes", d.containerOf("hf"))
	setImmutable(t, dir, true)
	_, err := d.client.HibernateSandbox(ctx, "hf", api.HibernateRequest{})
	setImmutable(t, dir, false)
	if err == nil {
		t.Fatal("hibernate succeeded with the sandbox's data dir immutable")
	}
	if got, err := d.client.GetSandbox(ctx, "hf"); err != nil || got.Status != api.StatusRunning {
		t.Fatalf("after the failed hibernation: %+v %v", got, err)
	}
	last := d.lastCount("hf")
	// Stopped for good, it would print nothing more; continued, it counts on within a second.
	want := fmt.Sprintf("^%d$", last+20)
	if w, err := d.client.WaitProcess(ctx, "hf", "count", api.WaitProcessRequest{Log: want, TimeoutMs: 5000}); err != nil || !w.Met {
		t.Errorf("the loop did not go on after the failed hibernation (last %d): %+v %v", last, w, err)
	}
}

// countingSandbox creates the busybox sandbox id with a process "count" that runs command, a
// loop printing 1, 2, 3…, and waits until it has printed until.
func (d *testDaemon) countingSandbox(id, command string, until int) {
	d.t.Helper()
	d.create(api.CreateSandboxRequest{ID: id, Image: "busybox"})
	d.startProc(id, api.StartProcessRequest{ID: "count", Command: command})
	w, err := d.client.WaitProcess(context.Background(), id, "count", api.WaitProcessRequest{Log: fmt.Sprintf("^%d$", until)})
	if err != nil || !w.Met {
		d.t.Fatalf("the loop's output: %+v %v", w, err)
	}
}

// lastCount is the last number in the log of the process "count" of the sandbox id.
func (d *testDaemon) lastCount(id string) int {
	d.t.Helper()
	logs, err := d.client.ProcessLogs(context.Background(), id, "count", client.LogsOptions{})
	if err != nil {
		d.t.Fatal(err)
	}
	var out strings.Builder
	for _, c := range logs.Chunks {
		out.WriteString(c.Data)
	}
	lines := strings.Fields(out.String())
	if len(lines) == 0 {
		d.t.Fatal("the loop's log is empty")
	}
	n, err := strconv.Atoi(lines[len(lines)-1])
	if err != nil {
		d.t.Fatalf("the loop's log ends with %q", lines[len(lines)-1])
	}
	return n
}

// setImmutable sets or clears a directory's immutable flag (chattr +i): not even root can
// create files in it then.
func setImmutable(t *testing.T, dir string, on bool) {
	t.Helper()
	f, err := os.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	flags, err := unix.IoctlGetUint32(int(f.Fd()), unix.FS_IOC_GETFLAGS)
	if err != nil {
		t.Fatal(err)
	}
	const immutable = 0x10 // FS_IMMUTABLE_FL (linux/fs.h)
	if on {
		flags |= immutable
	} else {
		flags &^= immutable
	}
	if err := unix.IoctlSetPointerInt(int(f.Fd()), unix.FS_IOC_SETFLAGS, int(flags)); err != nil {
		t.Fatal(err)
	}
}

// TestIdleStop: a sandbox with onIdle "stop" hibernates by itself without its sessions' state;
// a request wakes it with its files and a fresh session.
func TestIdleStop(t *testing.T) {
	d := startDaemon(t)
	ctx := context.Background()
	d.create(api.CreateSandboxRequest{ID: "nap", Image: "busybox", Lifecycle: &api.Lifecycle{IdleSeconds: 1, OnIdle: api.OnIdleStop}})
	d.sh("nap", "echo kept > /tmp/file; cd /tmp")
	for deadline := time.Now().Add(15 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		sb, err := d.client.GetSandbox(ctx, "nap")
		if err != nil {
			t.Fatal(err)
		}
		if sb.Status == api.StatusHibernated {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("an idle sandbox with onIdle stop is still %s", sb.Status)
		}
	}
	if out := d.sh("nap", "pwd; cat /tmp/file"); out != "/workspace\nkept\n" {
		t.Errorf("after an idle stop: %q (want a fresh session and the files)", out)
	}
}

// TestAgentCannotBeReplaced: the sandbox's root makes /.nsbox a symbolic link into its
// workspace, where it leaves a program of its own named nsbox, and the sandbox hibernates. On
// wake runc mounts the agent where the link leads, inside the workspace; a mount of the
// workspace made after it would cover it, and runc would execute the sandbox's program as
// PID 1, with the daemon's descriptors and without the seccomp filter the agent loads. The
// agent's mount is the container's last: the agent runs, the sandbox's program never does.
func TestAgentCannotBeReplaced(t *testing.T) {
	d := startDaemon(t)
	ws := t.TempDir()
	if err := os.Chown(ws, 1000, 1000); err != nil { // with user namespaces, not root's (storage.go)
		t.Fatal(err)
	}
	d.create(api.CreateSandboxRequest{ID: "swap", Image: "busybox", Workspace: &api.Workspace{HostPath: ws, Mode: api.WorkspaceRW}})
	d.sh("swap", `mv /.nsbox /.nsbox.old && ln -s /workspace /.nsbox &&
printf '#!/bin/sh\ngrep Seccomp: /proc/self/status > /workspace/ran\nexec sleep 1000\n' > /workspace/nsbox && chmod +x /workspace/nsbox`)
	if out, errOut, code := d.cli("", "hibernate", "swap"); code != 0 {
		t.Fatalf("nsbox hibernate: %q %q %d", out, errOut, code)
	}
	res, err := d.client.Exec(context.Background(), "swap", api.ExecRequest{Command: "tr '\\0' ' ' < /proc/1/cmdline; grep Seccomp: /proc/1/status"})
	if ran, _ := os.ReadFile(filepath.Join(ws, "ran")); ran != nil {
		t.Fatalf("the sandbox's own program ran as its PID 1: %q", ran)
	}
	if err != nil {
		t.Fatalf("wake: %v", err)
	}
	if stdout, _, _ := res.Output(); !strings.Contains(string(stdout), "/.nsbox/nsbox agent") || !strings.Contains(string(stdout), "Seccomp:\t2") {
		t.Errorf("PID 1 after wake: %q", stdout)
	}
}
