package main

import (
	"bytes"
	"context"
	"debug/buildinfo"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nsbox/nsbox/api"
	"github.com/nsbox/nsbox/client"
	bolt "go.etcd.io/bbolt"
)

func TestCLILifecycle(t *testing.T) {
	d := startDaemon(t)
	out, errOut, code := d.cli("", "create", "--id", "cli1", "--image", "busybox", "--env", "GREETING=hi there", "--label", "team=qa")
	if code != 0 || out != "cli1\n" {
		t.Fatalf("create: %q %q %d", out, errOut, code)
	}
	out, _, _ = d.cli("", "ls")
	if !strings.Contains(out, "cli1") || !strings.Contains(out, "running") || !strings.Contains(out, "team=qa") {
		t.Fatalf("ls does not show the sandbox:\n%s", out)
	}
	out, _, _ = d.cli("", "ls", "-q")
	if out != "cli1\n" {
		t.Fatalf("ls -q: %q", out)
	}
	out, _, _ = d.cli("", "inspect", "cli1")
	var sb api.Sandbox
	if err := json.Unmarshal([]byte(out), &sb); err != nil || sb.ID != "cli1" || sb.Image != "busybox" || sb.Env["GREETING"] != "hi there" {
		t.Fatalf("inspect: %v %q", err, out)
	}
	// stdout, stderr and the exit code pass through; env from create is there.
	out, errOut, code = d.cli("", "exec", "cli1", "--", "sh", "-c", `echo "$GREETING"; echo oops >&2; exit 7`)
	if out != "hi there\n" || errOut != "oops\n" || code != 7 {
		t.Fatalf("exec: stdout %q stderr %q code %d", out, errOut, code)
	}
	out, _, code = d.cli("some input", "exec", "-i", "-e", "X=1", "-w", "/tmp", "cli1", "--", "sh", "-c", `cat; echo " $X $(pwd)"`)
	if out != "some input 1 /tmp\n" || code != 0 {
		t.Fatalf("exec -i -e -w: %q %d", out, code)
	}
	_, errOut, code = d.cli("", "exec", "--timeout", "200ms", "cli1", "--", "sleep", "30")
	if code != 124 || !strings.Contains(errOut, "timed out") {
		t.Fatalf("exec --timeout: %q %d", errOut, code)
	}
	// Errors are one line and a non-zero exit.
	_, errOut, code = d.cli("", "exec", "nope", "--", "true")
	if code == 0 || errOut != "nsbox: sandbox \"nope\" not found\n" {
		t.Fatalf("exec in a missing sandbox: %q %d", errOut, code)
	}
	_, errOut, code = d.cli("", "create", "--id", "Bad_ID")
	if code == 0 || strings.Count(errOut, "\n") != 1 || !strings.Contains(errOut, "invalid sandbox id") {
		t.Fatalf("create with a bad id: %q %d", errOut, code)
	}
	out, errOut, code = d.cli("", "rm", "cli1", "nope")
	if code == 0 || out != "cli1\n" || !strings.Contains(errOut, "not found") {
		t.Fatalf("rm: %q %q %d", out, errOut, code)
	}
	out, _, _ = d.cli("", "ls", "--json")
	if strings.TrimSpace(out) != "[]" {
		t.Fatalf("ls after rm: %q", out)
	}
	out, _, code = d.cli("", "version")
	if code != 0 || !strings.Contains(out, "daemon:") {
		t.Fatalf("version: %q %d", out, code)
	}
}

func TestSocketGroup(t *testing.T) {
	d := startDaemon(t, "--socket-group", "daemon")
	fi, err := os.Stat(d.socket)
	if err != nil {
		t.Fatal(err)
	}
	if st := fi.Sys().(*syscall.Stat_t); fi.Mode().Perm() != 0o660 || st.Uid != 0 || st.Gid != 1 {
		t.Fatalf("API socket mode %v uid %d gid %d, want 0660 root:daemon(1)", fi.Mode().Perm(), st.Uid, st.Gid)
	}
}

func TestSocketIsRootOnly(t *testing.T) {
	d := startDaemon(t)
	fi, err := os.Stat(d.socket)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 || fi.Sys().(*syscall.Stat_t).Uid != 0 {
		t.Fatalf("API socket mode %v uid %d, want 0600 root", fi.Mode().Perm(), fi.Sys().(*syscall.Stat_t).Uid)
	}
}

// cgroupValue reads a limit from inside a sandbox, from the v1 or the v2 file.
func cgroupValue(d *testDaemon, id, v1, v2 string) string {
	return strings.TrimSpace(d.sh(id, fmt.Sprintf("cat /sys/fs/cgroup/%s 2>/dev/null || cat /sys/fs/cgroup/%s", v1, v2)))
}

// TestCgroupViewInside: a sandbox sees its cgroups at /sys/fs/cgroup as runc's cgroup mount
// showed them (on cgroup v1, which the daemon now mounts from the host: one read-only mount of
// each of the host's hierarchies, rooted at the sandbox's own cgroup), in a tmpfs that is
// read-only, from a cold start and from the warm pool.
func TestCgroupViewInside(t *testing.T) {
	if _, err := os.Stat("/sys/fs/cgroup/cgroup.controllers"); err == nil {
		t.Skip("cgroup v2: runc's own cgroup2 mount")
	}
	d := startDaemon(t, "--warm-pool", "busybox=1")
	var want []string
	mountinfo, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(mountinfo), "\n") {
		if f := strings.Fields(line); len(f) > 8 && f[len(f)-3] == "cgroup" && strings.HasPrefix(f[4], "/sys/fs/cgroup/") {
			want = append(want, strings.TrimPrefix(f[4], "/sys/fs/cgroup/"))
		}
	}
	d.waitWarm("busybox", 1)
	for _, id := range []string{"warm", "cold"} {
		d.create(api.CreateSandboxRequest{ID: id, Image: "busybox"})
		got := d.sh(id, `cd /sys/fs/cgroup && for d in *; do [ -L "$d" ] || echo "$d"; done`)
		if strings.Join(strings.Fields(got), " ") != strings.Join(slices.Sorted(slices.Values(want)), " ") {
			t.Errorf("%s: hierarchies %q, want %q", id, strings.Fields(got), want)
		}
		for _, line := range strings.Split(d.sh(id, "grep ' /sys/fs/cgroup' /proc/self/mountinfo"), "\n") {
			if f := strings.Fields(line); len(f) > 5 && (f[3] != "/" || !strings.HasPrefix(f[5], "ro,")) {
				t.Errorf("%s: not a read-only view of its own cgroup: %s", id, line)
			}
		}
		if res := d.exec(id, api.ExecRequest{Command: "touch /sys/fs/cgroup/x"}); res.ExitCode == 0 {
			t.Errorf("%s: the sandbox wrote to /sys/fs/cgroup", id)
		}
		if got := d.sh(id, "cat /sys/fs/cgroup/memory/memory.limit_in_bytes"); strings.TrimSpace(got) != strconv.Itoa(1024<<20) {
			t.Errorf("%s: memory limit %q", id, got)
		}
	}
}

func TestLimitsAppliedAndVisibleInside(t *testing.T) {
	d := startDaemon(t)
	d.create(api.CreateSandboxRequest{ID: "lim", Image: "busybox", Limits: api.Limits{CPUs: 0.5, MemoryMB: 64, Pids: 32}})
	if got := cgroupValue(d, "lim", "memory/memory.limit_in_bytes", "memory.max"); got != strconv.Itoa(64<<20) {
		t.Errorf("memory limit inside: %q", got)
	}
	if got := cgroupValue(d, "lim", "memory/memory.memsw.limit_in_bytes", "memory.swap.max"); got != strconv.Itoa(64<<20) && got != "0" {
		t.Errorf("swap limit inside: %q (want memory+swap = memory)", got)
	}
	// The sandbox's processes' own pids cgroup (their /proc/self/cgroup says pids:/work): the
	// container's has room for the agent's threads above it.
	if got := cgroupValue(d, "lim", "pids/work/pids.max", "pids.max"); got != "32" {
		t.Errorf("pids limit inside: %q", got)
	}
	if got := cgroupValue(d, "lim", "cpu/cpu.cfs_quota_us", "cpu.max"); got != "50000" && got != "50000 100000" {
		t.Errorf("cpu limit inside: %q", got)
	}
	// The limits are enforced, not just written down.
	res := d.exec("lim", api.ExecRequest{Command: "head -c 200000000 /dev/zero | tail -c 100000000 >/dev/null"})
	if res.ExitCode == 0 {
		t.Errorf("holding 100 MB in a 64 MB sandbox succeeded")
	}
	res = d.exec("lim", api.ExecRequest{Command: "for i in $(seq 40); do sleep 5 & done 2>&1; wait"})
	if stdout, stderr, _ := res.Output(); !strings.Contains(string(stdout)+string(stderr), "fork") {
		t.Errorf("40 processes in a 32-pid sandbox: exit %d, %q %q", res.ExitCode, stdout, stderr)
	}
	sb, err := d.client.GetSandbox(context.Background(), "lim")
	if err != nil || sb.Limits != (api.Limits{CPUs: 0.5, MemoryMB: 64, Pids: 32, DiskMB: 10240}) { // DiskMB: the daemon's default disk
		t.Errorf("limits in the API: %+v %v", sb, err)
	}
}

func TestIsolation(t *testing.T) {
	d := startDaemon(t)
	sb := d.create(api.CreateSandboxRequest{ID: "iso", Image: "busybox"})
	// The init ran with a larger timer slack (cmd/nsbox/runcinit.go); the agent, and so
	// everything it starts, has the daemon's (this test's, which the daemon inherited).
	slack, err := os.ReadFile("/proc/self/timerslack_ns")
	if err != nil {
		t.Fatal(err)
	}
	if agent, err := os.ReadFile(fmt.Sprintf("/proc/%d/timerslack_ns", sb.PID)); err != nil || string(agent) != string(slack) {
		t.Errorf("the agent's timer slack: %q %v, want %q", agent, err, slack)
	}
	// Its GOMAXPROCS is not checked again while it runs (cmd/nsbox-agent).
	if info, err := buildinfo.ReadFile(fmt.Sprintf("/proc/%d/exe", sb.PID)); err != nil {
		t.Errorf("the agent's build info: %v", err)
	} else if i := slices.IndexFunc(info.Settings, func(s debug.BuildSetting) bool { return s.Key == "DefaultGODEBUG" }); i < 0 ||
		!slices.Contains(strings.Split(info.Settings[i].Value, ","), "updatemaxprocs=0") {
		t.Errorf("the agent's build settings: %v, want DefaultGODEBUG with updatemaxprocs=0", info.Settings)
	}
	checks := map[string]string{
		"cat /proc/self/timerslack_ns": strings.TrimSpace(string(slack)),
		"hostname":                     "iso",
		// The pids cgroups' files follow on a cgroup v1 host (workcgroup.go).
		"cat /proc/1/cmdline | tr '\\0' ' ' | cut -d' ' -f1-8": "/.nsbox/nsbox agent --listen-fd 3 --seccomp-fd 5 --config-fd 6",
		"ip -o link | cut -d: -f2 | cut -d@ -f1 | tr -d ' \n'": "loeth0",
		"ip -o link show lo | grep -o UP | head -1":            "UP",
		"grep NoNewPrivs /proc/self/status":                    "NoNewPrivs:\t1",
		"grep Seccomp: /proc/self/status":                      "Seccomp:\t2",
		// The agent loads the filter on its threads (agent/seccomp.go): all of them have it.
		"grep -h Seccomp: /proc/1/task/*/status | sort -u":      "Seccomp:\t2",
		"grep CapEff /proc/self/status":                         "CapEff:\t00000000000005fb",
		"cat /proc/timer_list /proc/keys | wc -c":               "0",
		"echo 1 > /proc/sys/kernel/ostype || echo refused":      "refused",
		"cat /proc/1/environ >/dev/null 2>&1 || echo refused":   "refused",
		"readlink /proc/1/fd/3 >/dev/null 2>&1 || echo refused": "refused",
		"mknod /tmp/sda b 8 0 2>/dev/null || echo refused":      "refused",
		"test -e /dev/net/tun || echo absent":                   "absent",
		"unshare -U true 2>/dev/null || echo refused":           "refused",
		"mount -t tmpfs none /mnt 2>/dev/null || echo refused":  "refused",
		"echo x > /.nsbox/nsbox 2>/dev/null || echo refused":    "refused",
		"pwd": "/workspace",
	}
	for command, want := range checks {
		if got := strings.TrimSpace(d.sh("iso", command)); got != want {
			t.Errorf("%s: got %q, want %q", command, got, want)
		}
	}
}

func TestHostImage(t *testing.T) {
	d := startDaemon(t)
	d.create(api.CreateSandboxRequest{ID: "host1"}) // host is the default image
	checks := map[string]string{
		"wc -c < /etc/shadow":                            "0",
		"test -x /usr/bin/env && echo yes":               "yes",
		"touch /usr/nsbox-test 2>/dev/null || echo ro":   "ro",
		"touch /etc/nsbox-test 2>/dev/null || echo ro":   "ro",
		"ls -A /var/lib":                                 "",
		"ls /run; ls /run/nsbox":                         "nsbox\nsessions",
		"echo data > /workspace/f && cat /workspace/f":   "data",
		"echo t > /tmp/f && echo t > /root/f && echo ok": "ok",
		"pwd": "/workspace",
	}
	for command, want := range checks {
		if got := strings.TrimSpace(d.sh("host1", command)); got != want {
			t.Errorf("%s: got %q, want %q", command, got, want)
		}
	}
	if _, err := os.Stat("/usr/nsbox-test"); err == nil {
		t.Errorf("a sandbox wrote to the host's /usr")
	}
}

func TestAPIErrors(t *testing.T) {
	d := startDaemon(t)
	d.create(api.CreateSandboxRequest{ID: "e1", Image: "busybox"})
	d.expectError("POST", "/v1/sandboxes", api.CreateSandboxRequest{ID: "e1", Image: "busybox"}, 409, api.CodeConflict)
	d.expectError("POST", "/v1/sandboxes", api.CreateSandboxRequest{ID: "-bad"}, 400, api.CodeInvalidArgument)
	d.expectError("POST", "/v1/sandboxes", api.CreateSandboxRequest{ID: strings.Repeat("a", 64)}, 400, api.CodeInvalidArgument)
	d.expectError("POST", "/v1/sandboxes", api.CreateSandboxRequest{Image: "ubuntu:nope"}, 404, api.CodeNotFound)
	d.expectError("POST", "/v1/sandboxes", api.CreateSandboxRequest{Limits: api.Limits{MemoryMB: 1}}, 400, api.CodeInvalidArgument)
	d.expectError("POST", "/v1/sandboxes", api.CreateSandboxRequest{Limits: api.Limits{CPUs: 1000}}, 400, api.CodeInvalidArgument)
	d.expectError("POST", "/v1/sandboxes", api.CreateSandboxRequest{Limits: api.Limits{Pids: -5}}, 400, api.CodeInvalidArgument)
	d.expectError("POST", "/v1/sandboxes", api.CreateSandboxRequest{Cwd: "relative"}, 400, api.CodeInvalidArgument)
	// A cwd the sandbox cannot make (under a file) is the request's mistake, and leaves nothing.
	if e := d.expectError("POST", "/v1/sandboxes", api.CreateSandboxRequest{Image: "busybox", Cwd: "/.nsbox/nsbox/sub"}, 400, api.CodeInvalidArgument); !strings.Contains(e.Message, "/.nsbox/nsbox/sub") {
		t.Errorf("cwd error does not name the cwd: %q", e.Message)
	}
	d.expectError("POST", "/v1/sandboxes", api.CreateSandboxRequest{Env: map[string]string{"A=B": "x"}}, 400, api.CodeInvalidArgument)
	d.expectError("POST", "/v1/sandboxes", `{"id": "x", "imagee": "busybox"}`, 400, api.CodeInvalidArgument)
	d.expectError("POST", "/v1/sandboxes", `{"id": `, 400, api.CodeInvalidArgument)
	d.expectError("POST", "/v1/sandboxes", ``, 400, api.CodeInvalidArgument)
	d.expectError("GET", "/v1/sandboxes/nope", nil, 404, api.CodeNotFound)
	d.expectError("DELETE", "/v1/sandboxes/nope", nil, 404, api.CodeNotFound)
	d.expectError("DELETE", "/v1/sandboxes/e1?force=maybe", nil, 400, api.CodeInvalidArgument)
	d.expectError("POST", "/v1/sandboxes/nope/exec", api.ExecRequest{Argv: []string{"true"}}, 404, api.CodeNotFound)
	d.expectError("POST", "/v1/sandboxes/e1/exec", api.ExecRequest{}, 400, api.CodeInvalidArgument)
	d.expectError("POST", "/v1/sandboxes/e1/exec", api.ExecRequest{Argv: []string{"true"}, Command: "true"}, 400, api.CodeInvalidArgument)
	d.expectError("POST", "/v1/sandboxes/e1/exec", api.ExecRequest{Argv: []string{"cat"}, Stdin: "!!", StdinEncoding: "base64"}, 400, api.CodeInvalidArgument)
	d.expectError("POST", "/v1/sandboxes/e1/exec", api.ExecRequest{Argv: []string{"true"}, TimeoutMs: -1}, 400, api.CodeInvalidArgument)
	d.expectError("GET", "/v1/nothing", nil, 404, api.CodeNotFound)
	// A cwd that does not exist fails the command the way cd does in the shell.
	if got := d.exec("e1", api.ExecRequest{Argv: []string{"true"}, Cwd: "/does/not/exist"}); got.ExitCode == 0 || !strings.Contains(got.Stderr, "/does/not/exist") {
		t.Errorf("missing cwd: %+v", got)
	}
	if got := d.exec("e1", api.ExecRequest{Argv: []string{"no-such-program"}}); got.ExitCode != 127 || !strings.Contains(got.Stderr, "not found") {
		t.Errorf("missing program: %+v", got)
	}
	if got := d.exec("e1", api.ExecRequest{Argv: []string{"/etc/passwd"}}); got.ExitCode != 126 {
		t.Errorf("non-executable program: %+v", got)
	}
	// None of the failed creates left a record or anything on the host.
	list, err := d.client.ListSandboxes(context.Background())
	if err != nil || len(list) != 1 {
		t.Fatalf("after failed creates: %+v %v", list, err)
	}
}

func TestExecOutputIsByteExact(t *testing.T) {
	d := startDaemon(t)
	d.create(api.CreateSandboxRequest{ID: "bytes", Image: "busybox"})
	all := make([]byte, 256)
	for i := range all {
		all[i] = byte(i)
	}
	for _, a := range execAnswers {
		res := a.exec(d, "bytes", api.ExecRequest{Argv: []string{"cat"}, Stdin: base64.StdEncoding.EncodeToString(all), StdinEncoding: "base64"})
		stdout, _, err := res.Output()
		if err != nil || string(stdout) != string(all) || res.StdoutEncoding != a.notText || res.StderrEncoding != api.EncodingUTF8 {
			t.Fatalf("%s: 256 byte values through cat: %v encodings %s %s, got %q", a.name, err, res.StdoutEncoding, res.StderrEncoding, stdout)
		}
	}
	res := d.exec("bytes", api.ExecRequest{Command: `printf 'a\0b\r\nno newline'; printf 'err\n' >&2`})
	stdout, stderr, _ := res.Output()
	if string(stdout) != "a\x00b\r\nno newline" || string(stderr) != "err\n" || res.StdoutEncoding != api.EncodingUTF8 || res.StderrEncoding != api.EncodingUTF8 {
		t.Fatalf("NUL, CR and a missing newline: %q %q %s %s", stdout, stderr, res.StdoutEncoding, res.StderrEncoding)
	}
	// A background job does not hold the exec open.
	start := time.Now()
	res = d.exec("bytes", api.ExecRequest{Command: "sleep 1000 & echo started"})
	if res.Stdout != "started\n" || time.Since(start) > 5*time.Second {
		t.Fatalf("background job: %+v after %v", res, time.Since(start))
	}
	res = d.exec("bytes", api.ExecRequest{Command: "yes", TimeoutMs: 300})
	if !res.TimedOut || res.ExitCode != 124 || res.DurationMs < 300 {
		t.Fatalf("timeout: %+v", res.ExitCode)
	}
	res = d.exec("bytes", api.ExecRequest{Command: "kill -9 $$"})
	if res.ExitCode != 137 {
		t.Fatalf("killed by a signal: exit %d, want 137", res.ExitCode)
	}
}

func TestRestartKeepsSandboxes(t *testing.T) {
	for _, how := range []string{"clean", "kill -9"} {
		t.Run(how, func(t *testing.T) {
			d := startDaemon(t)
			sb := d.create(api.CreateSandboxRequest{ID: "keep", Image: "busybox", Labels: map[string]string{"a": "b"}})
			d.sh("keep", "echo kept > /workspace/file; sleep 1000 &")
			if how == "clean" {
				d.stop()
			} else {
				d.kill9()
			}
			d.start()
			got, err := d.client.GetSandbox(context.Background(), "keep")
			if err != nil || got.Status != api.StatusRunning || got.PID != sb.PID || got.Labels["a"] != "b" {
				t.Fatalf("after restart: %+v %v", got, err)
			}
			if out := d.sh("keep", "cat /workspace/file; ps | grep -q '[s]leep 1000' && echo sleeping"); out != "kept\nsleeping\n" {
				t.Fatalf("state after restart: %q", out)
			}
		})
	}
}

func TestReconcile(t *testing.T) {
	d := startDaemon(t)
	d.create(api.CreateSandboxRequest{ID: "dead", Image: "busybox"})
	d.create(api.CreateSandboxRequest{ID: "orphan", Image: "busybox"})
	orphanPID, deadPID := d.agentPID("orphan"), d.agentPID("dead")
	d.kill9()
	d.loseWhileDown(deadPID, "orphan")
	d.start()
	got, err := d.client.GetSandbox(context.Background(), "dead")
	if err != nil || got.Status != api.StatusFailed || got.Error == "" {
		t.Fatalf("sandbox whose agent died: %+v %v", got, err)
	}
	d.expectError("POST", "/v1/sandboxes/dead/exec", api.ExecRequest{Argv: []string{"true"}}, 409, api.CodeConflict)
	if _, err := d.client.GetSandbox(context.Background(), "orphan"); !api.IsCode(err, api.CodeNotFound) {
		t.Fatalf("container without a record: %v", err)
	}
	if alive(orphanPID) {
		t.Fatalf("the orphan's agent (pid %d) still runs", orphanPID)
	}
	if err := d.client.RemoveSandbox(context.Background(), "dead", client.RemoveOptions{}); err != nil {
		t.Fatalf("remove a failed sandbox: %v", err)
	}
}

// loseWhileDown does, while the daemon is down, what reconcile must cope with: a sandbox's
// agent (deadPID) dies and another sandbox's record (lostID) is lost.
func (d *testDaemon) loseWhileDown(deadPID int, lostID string) {
	d.t.Helper()
	if err := syscall.Kill(deadPID, syscall.SIGKILL); err != nil {
		d.t.Fatal(err)
	}
	// The daemon's records are a bbolt database with one bucket, "sandboxes", keyed by id.
	db, err := bolt.Open(filepath.Join(d.dataDir, "meta.db"), 0o600, &bolt.Options{Timeout: time.Second})
	if err != nil {
		d.t.Fatal(err)
	}
	defer db.Close()
	if err := db.Update(func(tx *bolt.Tx) error { return tx.Bucket([]byte("sandboxes")).Delete([]byte(lostID)) }); err != nil {
		d.t.Fatal(err)
	}
}

// A graceful remove gives the sandbox's processes SIGTERM and answers once they have all
// exited (a handler that takes its time has finished), then the agent and the container go.
func TestRemoveStopsEverything(t *testing.T) {
	d := startDaemon(t)
	ws := t.TempDir()
	if err := os.Chown(ws, 1000, 1000); err != nil { // a sandbox writes to a host path as its owner
		t.Fatal(err)
	}
	d.create(api.CreateSandboxRequest{ID: "gentle", Image: "busybox", Workspace: &api.Workspace{HostPath: ws, Mode: api.WorkspaceRW}})
	d.sh("gentle", "sleep 1000 & sleep 1000 &")
	d.sh("gentle", "(trap 'sleep 0.2; echo done > /workspace/term; exit 0' TERM; touch /workspace/ready; while :; do sleep 0.05; done) >/dev/null 2>&1 &")
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		if _, err := os.Stat(filepath.Join(ws, "ready")); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the process with a SIGTERM handler never started")
		}
	}
	pid := d.agentPID("gentle")
	start := time.Now()
	if err := d.client.RemoveSandbox(context.Background(), "gentle", client.RemoveOptions{}); err != nil {
		t.Fatal(err)
	}
	if time.Since(start) > 5*time.Second {
		t.Errorf("graceful remove of sleeping processes took %v", time.Since(start))
	}
	if got, err := os.ReadFile(filepath.Join(ws, "term")); string(got) != "done\n" {
		t.Errorf("the SIGTERM handler had written %q (%v) when the remove answered, want \"done\"", got, err)
	}
	waitExited(t, pid, "the agent")
	if leaks := d.leaks(); len(leaks) > 0 {
		t.Errorf("after rm: %v", leaks)
	}
}

// A forced remove answers before the sandbox's processes are dead, but only once each of them
// is killed: none writes anything after it (loops appending to files of the host's, through a
// read-write workspace: a process of the API's and a session's background job).
func TestForcedRemoveKillsEveryProcessFirst(t *testing.T) {
	d := startDaemon(t)
	ws := t.TempDir()
	if err := os.Chown(ws, 1000, 1000); err != nil { // a sandbox writes to a host path as its owner
		t.Fatal(err)
	}
	d.create(api.CreateSandboxRequest{ID: "ticking", Image: "busybox", Workspace: &api.Workspace{HostPath: ws, Mode: api.WorkspaceRW}})
	d.startProc("ticking", api.StartProcessRequest{ID: "tick", Command: "while :; do echo >> /workspace/a; done"})
	d.sh("ticking", "(while :; do echo >> /workspace/b; done) >/dev/null 2>&1 &")
	sizes := func() (out [2]int64) {
		for i, name := range []string{"a", "b"} {
			if fi, err := os.Stat(filepath.Join(ws, name)); err == nil {
				out[i] = fi.Size()
			}
		}
		return out
	}
	for deadline := time.Now().Add(10 * time.Second); sizes()[0] == 0 || sizes()[1] == 0; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("the loops never wrote: %v", sizes())
		}
	}
	pid := d.agentPID("ticking")
	if err := d.client.RemoveSandbox(context.Background(), "ticking", client.RemoveOptions{Force: true}); err != nil {
		t.Fatal(err)
	}
	after := sizes()
	waitExited(t, pid, "the agent")
	time.Sleep(100 * time.Millisecond) // long enough for a loop that still ran to write again
	if now := sizes(); now != after {
		t.Errorf("the sandbox's processes wrote after the remove answered: %v bytes then, %v now", after, now)
	}
	if leaks := d.leaks(); len(leaks) > 0 {
		t.Errorf("after rm: %v", leaks)
	}
}

// TestExecAnswersARemoveUnderIt: commands that run when their sandbox is removed (forced: its
// agent is killed) answer that the sandbox was removed (404), not that it failed: a streamed
// exec (frames, as the Go client asks) in its error frame, a JSON one in its answer.
func TestExecAnswersARemoveUnderIt(t *testing.T) {
	d := startDaemon(t)
	d.create(api.CreateSandboxRequest{ID: "gone", Image: "busybox"})
	for _, sid := range []string{"frames", "json"} {
		if _, err := d.client.CreateSession(context.Background(), "gone", api.CreateSessionRequest{ID: sid}); err != nil {
			t.Fatal(err)
		}
	}
	framed, answered := make(chan error, 1), make(chan *api.ErrorBody, 1)
	go func() {
		_, err := d.client.Exec(context.Background(), "gone", api.ExecRequest{SessionID: "frames", Command: "touch /tmp/frames; sleep 30"})
		framed <- err
	}()
	go func() {
		status, data := d.call("POST", "/v1/sandboxes/gone/exec", api.ExecRequest{SessionID: "json", Command: "touch /tmp/json; sleep 30"})
		var eb api.ErrorBody
		if json.Unmarshal(data, &eb) != nil || eb.Error == nil || status != http.StatusNotFound {
			eb.Error = &api.Error{Code: fmt.Sprintf("status %d", status), Message: string(data)}
		}
		answered <- &eb
	}()
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		if res := d.exec("gone", api.ExecRequest{Command: "test -f /tmp/frames -a -f /tmp/json"}); res.ExitCode == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the commands never ran")
		}
	}
	if err := d.client.RemoveSandbox(context.Background(), "gone", client.RemoveOptions{Force: true}); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		select {
		case err := <-framed:
			if !api.IsCode(err, api.CodeNotFound) || !strings.Contains(err.Error(), "was removed") {
				t.Errorf("the streamed exec under the remove ended with %v; want not found, the sandbox removed", err)
			}
		case eb := <-answered:
			if eb.Error.Code != api.CodeNotFound || !strings.Contains(eb.Error.Message, "was removed") {
				t.Errorf("the JSON exec under the remove answered %+v; want 404 not found, the sandbox removed", eb.Error)
			}
		case <-time.After(20 * time.Second):
			t.Fatal("an exec under the remove never answered")
		}
	}
}

func TestConcurrentCreates(t *testing.T) {
	d := startDaemon(t)
	const n = 6
	var wg sync.WaitGroup
	errs := make([]error, n+2)
	for i := 0; i < n+2; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			id := fmt.Sprintf("par-%d", i)
			if i >= n {
				id = "same"
			}
			_, errs[i] = d.client.CreateSandbox(context.Background(), api.CreateSandboxRequest{ID: id, Image: "busybox"})
		}(i)
	}
	wg.Wait()
	for i := 0; i < n; i++ {
		if errs[i] != nil {
			t.Errorf("create par-%d: %v", i, errs[i])
		}
	}
	if (errs[n] == nil) == (errs[n+1] == nil) || !api.IsCode(errs[n], api.CodeConflict) && !api.IsCode(errs[n+1], api.CodeConflict) {
		t.Errorf("two creates of one id: %v / %v (want one success, one conflict)", errs[n], errs[n+1])
	}
	list, _ := d.client.ListSandboxes(context.Background())
	if len(list) != n+1 {
		t.Errorf("want %d sandboxes, have %d", n+1, len(list))
	}
}

func TestAgentDeathIsNoticed(t *testing.T) {
	d := startDaemon(t)
	d.create(api.CreateSandboxRequest{ID: "fragile", Image: "busybox"})
	if err := syscall.Kill(d.agentPID("fragile"), syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		sb, err := d.client.GetSandbox(context.Background(), "fragile")
		if err == nil && sb.Status == api.StatusFailed && sb.Error != "" && sb.PID == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("sandbox whose agent was killed: %+v %v", sb, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
	d.expectError("POST", "/v1/sandboxes/fragile/exec", api.ExecRequest{Argv: []string{"true"}}, 409, api.CodeConflict)
	if err := d.client.RemoveSandbox(context.Background(), "fragile", client.RemoveOptions{}); err != nil {
		t.Fatal(err)
	}
}

// TestExecOutputIsCappedWithoutStreaming: a JSON answer keeps by default what the daemon's
// --max-exec-output allows (here 16 MiB, below the 128 MiB default); a streamed exec (events
// or frames) has no bound.
func TestExecOutputIsCappedWithoutStreaming(t *testing.T) {
	d := startDaemon(t, "--max-exec-output", "16")
	d.create(api.CreateSandboxRequest{ID: "big", Image: "busybox"})
	cmd := "head -c 20000000 /dev/zero | tr '\\0' a; head -c 100 /dev/zero | tr '\\0' b >&2"
	res := d.execJSON("big", api.ExecRequest{Command: cmd})
	stdout, stderr, err := res.Output()
	if err != nil || len(stdout) != 16<<20 || string(stderr) != strings.Repeat("b", 100) || !res.Truncated ||
		!res.StdoutTruncated || res.StderrTruncated || res.ExitCode != 0 {
		t.Fatalf("capped exec: %d bytes out, %q err, truncated %v/%v/%v, exit %d, %v", len(stdout), stderr,
			res.Truncated, res.StdoutTruncated, res.StderrTruncated, res.ExitCode, err)
	}
	d.expectError("POST", "/v1/sandboxes/big/exec", api.ExecRequest{Command: "true", MaxOutputBytes: 16<<20 + 1}, 400, api.CodeInvalidArgument)
	n := 0
	_, err = d.client.ExecStream(context.Background(), "big", api.ExecRequest{Command: cmd}, func(ev api.ExecEvent) error {
		if ev.Type == api.EventStdout {
			b, _ := ev.Bytes()
			n += len(b)
		}
		return nil
	})
	if err != nil || n != 20000000 {
		t.Fatalf("streamed: %d bytes, %v", n, err)
	}
	var out, errOut bytes.Buffer
	if res, err = d.client.ExecTo(context.Background(), "big", api.ExecRequest{Command: cmd}, &out, &errOut); err != nil ||
		out.Len() != 20000000 || errOut.String() != strings.Repeat("b", 100) || res.Truncated {
		t.Fatalf("as frames: %d bytes out, %d err, %+v, %v", out.Len(), errOut.Len(), res, err)
	}
}

// TestHostDetailsHidden: what the host's other users may not read in /etc stays unreadable
// in a sandbox of the host image, and /proc's maps of the host's memory and kernel are masked
// (issue 11); a working directory under /proc is refused.
func TestHostDetailsHidden(t *testing.T) {
	secret := fmt.Sprintf("/etc/nsbox-test-secret-%d", os.Getpid())
	if err := os.WriteFile(secret, []byte("host secret\n"), 0o640); err != nil {
		t.Fatal(err)
	}
	defer os.Remove(secret)
	d := startDaemon(t) // the host image is built at start: it sees the file
	d.create(api.CreateSandboxRequest{ID: "peek"})
	if got := d.sh("peek", "cat "+secret+" 2>&1; wc -c < "+secret); strings.Contains(got, "host secret") {
		t.Errorf("a host file other users may not read is readable in the sandbox: %q", got)
	}
	for _, p := range []string{"/proc/kpageflags", "/proc/slabinfo", "/proc/vmallocinfo", "/proc/iomem", "/proc/kcore"} {
		if got := strings.TrimSpace(d.sh("peek", "wc -c < "+p+" 2>/dev/null || echo 0")); got != "0" {
			t.Errorf("%s shows %s bytes in the sandbox", p, got)
		}
	}
	d.expectError("POST", "/v1/sandboxes", api.CreateSandboxRequest{Cwd: "/proc/1/root/tmp/x"}, http.StatusBadRequest, api.CodeInvalidArgument)
}
