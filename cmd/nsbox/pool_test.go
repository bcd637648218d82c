package main

import (
	"cmp"
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nsbox/nsbox/api"
	"github.com/nsbox/nsbox/client"
)

// waitWarm waits until the daemon has n warm containers of the image ready.
func (d *testDaemon) waitWarm(image string, n int) {
	d.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		images, err := d.client.Images(context.Background())
		if err != nil {
			d.t.Fatal(err)
		}
		for _, img := range images {
			if img.Name == image && img.Warm == n {
				return
			}
		}
		if time.Now().After(deadline) {
			d.t.Fatalf("the pool did not get %d warm %s containers in 30s: %+v", n, image, images)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// containerDirs lists the daemon's containers (pool included) by their state dirs.
func (d *testDaemon) containerDirs() []string {
	entries, _ := os.ReadDir(filepath.Join(d.runDir, "containers"))
	var out []string
	for _, e := range entries {
		out = append(out, e.Name())
	}
	return out
}

func TestWarmPoolSandboxIsBoundToItsRequest(t *testing.T) {
	d := startDaemon(t, "--warm-pool", "busybox=2")
	d.waitWarm("busybox", 2)
	warm := d.containerDirs()
	sb := d.create(api.CreateSandboxRequest{
		ID: "pooled", Image: "busybox", Cwd: "/srv/app", Env: map[string]string{"GREETING": "hi there", "PATH": "/bin:/usr/bin"},
		Limits: api.Limits{MemoryMB: 96, Pids: 40, CPUs: 0.5},
	})
	container := d.container(sb.ID)
	if !slices.Contains(warm, container) {
		t.Fatalf("sandbox was not made from a warm container: its container %s, pool %v", container, warm)
	}
	got := d.sh("pooled", `echo "$(hostname) $HOSTNAME $(pwd) $GREETING $PATH"`)
	if want := "pooled pooled /srv/app hi there /bin:/usr/bin\n"; got != want {
		t.Errorf("hostname, cwd, env: got %q, want %q", got, want)
	}
	if got := cgroupValue(d, "pooled", "memory/memory.limit_in_bytes", "memory.max"); got != strconv.Itoa(96<<20) {
		t.Errorf("memory limit %s", got)
	}
	if got := cgroupValue(d, "pooled", "pids/work/pids.max", "pids.max"); got != "40" {
		t.Errorf("pids limit %s", got)
	}
	if got := cgroupValue(d, "pooled", "cpu/cpu.cfs_quota_us", "cpu.max"); got != "50000" && got != "50000 100000" {
		t.Errorf("cpu limit %s", got)
	}
	// A session made later starts in the sandbox's cwd with its env; processes see the hostname.
	if _, err := d.client.CreateSession(context.Background(), "pooled", api.CreateSessionRequest{ID: "s2"}); err != nil {
		t.Fatal(err)
	}
	res := d.exec("pooled", api.ExecRequest{SessionID: "s2", Command: `echo "$(pwd) $GREETING $(cat /proc/sys/kernel/hostname)"`})
	if string(res.Stdout) != "/srv/app hi there pooled\n" {
		t.Errorf("new session: %q", res.Stdout)
	}
	// The pool refills, and removing the sandbox leaves nothing of its container.
	d.waitWarm("busybox", 2)
	if err := d.client.RemoveSandbox(context.Background(), "pooled", client.RemoveOptions{Force: true}); err != nil {
		t.Fatal(err)
	}
	waitExited(t, sb.PID, "the agent")
	for _, leak := range d.containerLeaks(container) {
		t.Errorf("leaked: %s", leak)
	}
}

// A warm container's default session runs before a sandbox takes the container, so the
// sandbox's first command does not wait for a shell; it still sees the sandbox's hostname,
// environment and working directory, and a sandbox that wants another working directory or
// user gets a default session started again with them.
func TestWarmPoolStartsTheDefaultSessionAhead(t *testing.T) {
	d := startDaemon(t, "--warm-pool", "busybox=2")
	d.waitWarm("busybox", 2)
	ctx := context.Background()
	sb := d.create(api.CreateSandboxRequest{ID: "ahead", Image: "busybox", Env: map[string]string{"GREETING": "hello"}})
	def, err := d.client.GetSession(ctx, "ahead", "default")
	if err != nil {
		t.Fatal(err)
	}
	if !def.CreatedAt.Before(sb.CreatedAt) {
		t.Errorf("the default session was started at %v, not before the sandbox (%v)", def.CreatedAt, sb.CreatedAt)
	}
	if got, want := d.sh("ahead", `echo "$HOSTNAME $(pwd) $GREETING $(id -u)"`), "ahead /workspace hello 0\n"; got != want {
		t.Errorf("the first command: got %q, want %q", got, want)
	}
	d.waitWarm("busybox", 2)
	warm := d.containerDirs()
	other := d.create(api.CreateSandboxRequest{ID: "other", Image: "busybox", Cwd: "/tmp", User: "nobody"})
	if !slices.Contains(warm, d.container(other.ID)) {
		t.Fatalf("sandbox was not made from a warm container: its container %s, pool %v", d.container(other.ID), warm)
	}
	if got, want := d.sh("other", `echo "$HOSTNAME $(pwd) $(id -un)"`), "other /tmp nobody\n"; got != want {
		t.Errorf("a sandbox with its own cwd and user: got %q, want %q", got, want)
	}
	def, err = d.client.GetSession(ctx, "other", "default")
	if err != nil {
		t.Fatal(err)
	}
	if def.CreatedAt.Before(other.CreatedAt) || def.User != "nobody" {
		t.Errorf("the default session of a sandbox with its own cwd and user: %+v, sandbox created at %v", def, other.CreatedAt)
	}
}

func TestWarmPoolIsDestroyedOnShutdownAndAfterACrash(t *testing.T) {
	d := startDaemon(t, "--warm-pool", "busybox=2")
	d.waitWarm("busybox", 2)
	// kill -9: the next daemon destroys the old pool's containers (they have no record) and
	// makes a new pool.
	old := d.containerDirs()
	d.kill9()
	d.start()
	d.waitWarm("busybox", 2)
	for _, c := range d.containerDirs() {
		for _, o := range old {
			if c == o {
				t.Errorf("container %s of the crashed daemon's pool is still there", c)
			}
		}
	}
	// A clean stop destroys the pool: the leak check sees no container at all.
	d.stop()
	for _, leak := range d.leaks() {
		t.Errorf("after a clean stop: %s", leak)
	}
}

func TestWarmPoolOnlyServesItsImage(t *testing.T) {
	d := startDaemon(t, "--warm-pool", "busybox=1")
	d.waitWarm("busybox", 1)
	before := d.containerDirs()
	d.create(api.CreateSandboxRequest{ID: "hosted", Image: "host"})
	d.waitWarm("busybox", 1)
	if after := d.containerDirs(); len(after) != len(before)+1 {
		t.Errorf("a host sandbox took from the busybox pool: before %v, after %v", before, after)
	}
	if got := d.sh("hosted", "hostname"); got != "hosted\n" {
		t.Errorf("hostname %q", got)
	}
}

// container is the id of the container that runs a sandbox (it names the sandbox's cgroup, run
// and data dirs).
func (d *testDaemon) container(id string) string {
	d.t.Helper()
	return filepath.Base(cgroupDirOf(d.t, d.agentPID(id)))
}

// cgroupDirOf is the cgroup (in the pids hierarchy, or the unified one) of a process.
func cgroupDirOf(t *testing.T, pid int) string {
	t.Helper()
	data, _ := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cgroup")
	for _, line := range strings.Split(string(data), "\n") {
		if parts := strings.SplitN(line, ":", 3); len(parts) == 3 && (parts[1] == "pids" || parts[1] == "") {
			return parts[2]
		}
	}
	t.Fatalf("no cgroup for pid %d", pid)
	return ""
}

// A sandbox started cold gets its hostname, environment, working directory and user with its
// container's start (the agent takes them before it first answers, and starts the default
// session with them): its first command, a later session and its network files see them; a
// user or working directory the image cannot give fails the create with 400 and leaves nothing.
func TestColdSandboxIsBoundToItsRequest(t *testing.T) {
	d := startDaemon(t)
	ctx := context.Background()
	sb := d.create(api.CreateSandboxRequest{ID: "cold", Image: "busybox", Cwd: "/srv/app", User: "nobody",
		Env: map[string]string{"GREETING": "hi there", "PATH": "/bin:/usr/bin"}})
	if got, err := d.client.GetSandbox(ctx, "cold"); err != nil || got.PID != sb.PID || sb.PID != d.agentPID("cold") || got.Status != api.StatusRunning {
		t.Fatalf("created %+v, then %+v (%v); agent pid %d", sb, got, err, d.agentPID("cold"))
	}
	if got, want := d.sh("cold", `echo "$(hostname) $HOSTNAME $(pwd) $(id -un) $GREETING $PATH"`), "cold cold /srv/app nobody hi there /bin:/usr/bin\n"; got != want {
		t.Errorf("the first command: got %q, want %q", got, want)
	}
	// The agent closed the file its configuration came in.
	fds, _ := filepath.Glob(fmt.Sprintf("/proc/%d/fd/*", sb.PID))
	for _, fd := range fds {
		if target, _ := os.Readlink(fd); strings.Contains(target, "agent-config") {
			t.Errorf("the agent keeps its configuration's file open: %s -> %s", fd, target)
		}
	}
	if got := d.sh("cold", `awk '$2 == "cold"' /etc/hosts | wc -l`); strings.TrimSpace(got) != "1" {
		t.Errorf("/etc/hosts names the sandbox %s times:\n%s", got, d.sh("cold", "cat /etc/hosts"))
	}
	if _, err := d.client.CreateSession(ctx, "cold", api.CreateSessionRequest{ID: "s2"}); err != nil {
		t.Fatal(err)
	}
	res := d.exec("cold", api.ExecRequest{SessionID: "s2", Command: `echo "$(pwd) $(id -un) $GREETING $(cat /proc/sys/kernel/hostname)"`})
	if string(res.Stdout) != "/srv/app nobody hi there cold\n" {
		t.Errorf("new session: %q", res.Stdout)
	}
	def, err := d.client.GetSession(ctx, "cold", "default")
	if err != nil || def.User != "nobody" {
		t.Errorf("the default session: %+v %v", def, err)
	}
	for name, req := range map[string]api.CreateSandboxRequest{
		"unknown user":     {ID: "nouser", Image: "busybox", User: "nosuch"},
		"cwd under a file": {ID: "nocwd", Image: "busybox", Cwd: "/etc/passwd/app"},
		"cwd on read-only": {ID: "rocwd", Image: "busybox", Cwd: "/proc/app"},
	} {
		e := d.expectError(http.MethodPost, "/v1/sandboxes", req, http.StatusBadRequest, api.CodeInvalidArgument)
		if !strings.Contains(e.Message, cmp.Or(req.User, req.Cwd)) {
			t.Errorf("%s: the error does not name it: %q", name, e.Message)
		}
	}
	if list, err := d.client.ListSandboxes(ctx); err != nil || len(list) != 1 {
		t.Errorf("after failed creates: %+v %v", list, err)
	}
	if err := d.client.RemoveSandbox(ctx, "cold", client.RemoveOptions{}); err != nil {
		t.Fatal(err)
	}
	for _, leak := range d.leaks() {
		t.Errorf("leaked: %s", leak)
	}
}
