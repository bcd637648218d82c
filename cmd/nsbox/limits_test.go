package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nsbox/nsbox/api"
	"github.com/nsbox/nsbox/client"
)

// needLXCFS skips a test on a host without lxcfs (scripts/install-deps.sh installs it).
func needLXCFS(t *testing.T) {
	t.Helper()
	if _, err := exec.LookPath("lxcfs"); err != nil {
		t.Skip("lxcfs is not installed")
	}
}

// lxcfsPID is the pid of the daemon's LXCFS, as its pid file says.
func (d *testDaemon) lxcfsPID() int {
	d.t.Helper()
	data, err := os.ReadFile(filepath.Join(d.lxcfsDir(), "pid"))
	if err != nil {
		d.t.Fatalf("lxcfs pid: %v", err)
	}
	pid, _ := strconv.Atoi(strings.TrimSpace(string(data)))
	return pid
}

// checkLimitViews checks what a host-image sandbox of 256 MB and 0.5 CPU and a busybox one of
// 128 MB and 1.5 CPUs see of their limits.
func checkLimitViews(t *testing.T, d *testDaemon) {
	t.Helper()
	if got := d.sh("host", "free -m | awk '/^Mem:/ {print $2}'"); got != "256\n" {
		t.Errorf("free -m in a 256 MB sandbox: total %q", got)
	}
	if got := d.sh("host", "grep MemTotal /proc/meminfo"); !strings.Contains(got, " 262144 kB") {
		t.Errorf("/proc/meminfo in a 256 MB sandbox: %q", got)
	}
	// coreutils nproc counts the CPUs of its affinity (the cpuset); python3 os.cpu_count reads
	// /sys/devices/system/cpu/online (LXCFS's view of the CPU quota).
	if got := d.sh("host", "nproc; python3 -c 'import os; print(os.cpu_count())'; grep -c ^processor /proc/cpuinfo"); got != "1\n1\n1\n" {
		t.Errorf("nproc, os.cpu_count and /proc/cpuinfo in a 0.5-CPU sandbox: %q", got)
	}
	if _, err := exec.LookPath("node"); err == nil {
		if got := d.sh("host", `node -e 'const os = require("os"); console.log(os.cpus().length, os.availableParallelism())'`); got != "1 1\n" {
			t.Errorf("node os.cpus().length, os.availableParallelism() in a 0.5-CPU sandbox: %q", got)
		}
	}
	if got := d.sh("bb", "grep MemTotal /proc/meminfo"); !strings.Contains(got, " 131072 kB") {
		t.Errorf("/proc/meminfo in a 128 MB busybox sandbox: %q", got)
	}
	if got := d.sh("bb", "nproc; grep -c ^processor /proc/cpuinfo"); got != "2\n2\n" {
		t.Errorf("busybox nproc and /proc/cpuinfo in a 1.5-CPU sandbox: %q", got)
	}
	if got := d.sh("bb", "cat /sys/devices/system/cpu/online"); got != "0-1\n" {
		t.Errorf("cpu/online in a 1.5-CPU sandbox after a 0.5-CPU one read its own: %q", got)
	}
}

// TestLimitViews: sandboxes see their own memory and CPUs (free, /proc/meminfo, nproc,
// os.cpu_count), with and without user namespaces, after a daemon kill -9, after LXCFS died
// while the daemon ran (a warm pool's container too), and after it died while no daemon ran.
func TestLimitViews(t *testing.T) {
	needLXCFS(t)
	for _, userns := range []bool{true, false} {
		t.Run("userns="+strconv.FormatBool(userns), func(t *testing.T) {
			if userns && noUserNS {
				t.Skip("NSBOX_TEST_USERNS=false")
			}
			d := startDaemon(t, "--userns="+strconv.FormatBool(userns), "--warm-pool", "busybox=1")
			d.create(api.CreateSandboxRequest{ID: "host", Limits: api.Limits{CPUs: 0.5, MemoryMB: 256}})
			d.create(api.CreateSandboxRequest{ID: "bb", Image: "busybox", Limits: api.Limits{CPUs: 1.5, MemoryMB: 128}})
			checkLimitViews(t, d)
			if !userns {
				return
			}

			// The daemon dies; LXCFS does not, and the next daemon finds it.
			pid := d.lxcfsPID()
			d.kill9()
			d.start()
			if got := d.lxcfsPID(); got != pid {
				t.Errorf("lxcfs %d was started again (now %d) after a daemon restart", pid, got)
			}
			checkLimitViews(t, d)

			// LXCFS dies while the daemon runs: the daemon starts another and binds its views
			// into the sandboxes and the warm pool's containers (until then their reads fail
			// with ENOTCONN).
			d.waitWarm("busybox", 1)
			if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
				t.Fatal(err)
			}
			for deadline := time.Now().Add(20 * time.Second); ; {
				if got := d.exec("host", api.ExecRequest{Command: "grep MemTotal /proc/meminfo"}); got.ExitCode == 0 && strings.Contains(got.Stdout, " 262144 kB") {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("the views did not come back after lxcfs died; daemon log:\n%s", d.log)
				}
				time.Sleep(50 * time.Millisecond)
			}
			checkLimitViews(t, d)
			d.create(api.CreateSandboxRequest{ID: "pooled", Image: "busybox"}) // the container started before
			if got := d.exec("pooled", api.ExecRequest{Command: "grep MemTotal /proc/meminfo"}); got.ExitCode != 0 || !strings.Contains(got.Stdout, " 1048576 kB") {
				t.Errorf("a warm container after lxcfs died: exit %d, %q %q", got.ExitCode, got.Stdout, got.Stderr)
			}

			// LXCFS dies while no daemon runs: the next daemon starts one before it answers.
			pid = d.lxcfsPID()
			d.kill9()
			if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
				t.Fatal(err)
			}
			d.start()
			checkLimitViews(t, d)
			if got := d.sh("host", "grep -c lxcfs /proc/self/mountinfo"); got != "6\n" {
				t.Errorf("lxcfs mounts in a sandbox after two restarts of lxcfs: %q (want one per view)", got)
			}
		})
	}
}

// TestCPUsOnline: /sys/devices/system/cpu/online (what glibc's get_nprocs, so python's
// os.cpu_count and sysconf(_SC_NPROCESSORS_ONLN), count) lists each sandbox's own CPUs, its
// cpuset, read by sandboxes of different sizes in turn, and with or without LXCFS. (LXCFS
// 5.0.3's view of it is one FUSE inode for every sandbox: a read in a larger sandbox after a
// smaller one's could come back cut at the smaller size, "0-".)
func TestCPUsOnline(t *testing.T) {
	if runtime.NumCPU() < 2 {
		t.Skip("one CPU")
	}
	for _, lxcfs := range []bool{true, false} {
		t.Run("lxcfs="+strconv.FormatBool(lxcfs), func(t *testing.T) {
			if lxcfs {
				needLXCFS(t)
			}
			d := startDaemon(t, "--lxcfs="+strconv.FormatBool(lxcfs))
			d.create(api.CreateSandboxRequest{ID: "small", Image: "busybox", Limits: api.Limits{CPUs: 0.5}})
			d.create(api.CreateSandboxRequest{ID: "large", Image: "busybox", Limits: api.Limits{CPUs: 1.5}})
			for round := range 20 {
				for _, id := range []string{"small", "large"} {
					got := d.sh(id, "cat /sys/devices/system/cpu/online; sed -n 's/^Cpus_allowed_list:[[:space:]]*//p' /proc/self/status")
					online, allowed, _ := strings.Cut(got, "\n")
					if online == "" || online+"\n" != allowed {
						t.Fatalf("round %d, %s sandbox: cpu/online %q, its cpuset %q", round, id, online, strings.TrimSpace(allowed))
					}
				}
			}
			if got := d.sh("large", "cat /sys/devices/system/cpu/online"); got != "0-1\n" {
				t.Errorf("cpu/online of a 1.5-CPU sandbox on 2 CPUs: %q", got)
			}
		})
	}
}

// TestCPUSetsSpread: sandboxes of one CPU each get different CPUs, also when the second is
// created by a daemon started after the first (which learns the CPUs from the cgroups).
func TestCPUSetsSpread(t *testing.T) {
	if runtime.NumCPU() < 2 {
		t.Skip("one CPU")
	}
	d := startDaemon(t)
	seen := map[string]bool{}
	for _, id := range []string{"a", "b"} {
		d.create(api.CreateSandboxRequest{ID: id, Image: "busybox", Limits: api.Limits{CPUs: 0.5}})
		seen[d.sh(id, "cat /sys/fs/cgroup/cpuset/cpuset.cpus 2>/dev/null || cat /sys/fs/cgroup/cpuset.cpus")] = true
	}
	if len(seen) != 2 {
		t.Errorf("two 0.5-CPU sandboxes share their CPU: %v", seen)
	}
	if err := d.client.RemoveSandbox(context.Background(), "b", client.RemoveOptions{Force: true}); err != nil {
		t.Fatal(err)
	}
	d.kill9()
	d.start()
	d.create(api.CreateSandboxRequest{ID: "c", Image: "busybox", Limits: api.Limits{CPUs: 0.5}})
	cpus := func(id string) string {
		return d.sh(id, "cat /sys/fs/cgroup/cpuset/cpuset.cpus 2>/dev/null || cat /sys/fs/cgroup/cpuset.cpus")
	}
	if a, c := cpus("a"), cpus("c"); a == c {
		t.Errorf("a sandbox created after a restart shares the CPU of one created before: %q", a)
	}
}

// TestOOMKilled: a command and a process the kernel kills for lack of memory are reported
// as such, and the CLI says so; a command that dies of SIGKILL otherwise is not. Everything
// the agent starts has a raised OOM score (the agent's stays as it was, so the kernel picks
// it last): a process may lower its own only as far as the agent's, and the agent lives
// through every kill.
func TestOOMKilled(t *testing.T) {
	d := startDaemon(t)
	d.create(api.CreateSandboxRequest{ID: "oom", Limits: api.Limits{MemoryMB: 64}})
	agent := d.agentPID("oom")
	agentAdj := strings.TrimSpace(d.sh("oom", "cat /proc/1/oom_score_adj"))
	if got := d.sh("oom", "cat /proc/self/oom_score_adj; sh -c 'cat /proc/self/oom_score_adj'"); got != "1000\n1000\n" {
		t.Errorf("oom_score_adj of a session's command and its child: %q, want 1000", got)
	}
	// Lowered to the agent's (oom_score_adj_min, inherited): allowed; below it: refused.
	lower := fmt.Sprintf("echo %s > /proc/self/oom_score_adj && cat /proc/self/oom_score_adj; echo $((%s - 1)) > /proc/self/oom_score_adj || echo refused", agentAdj, agentAdj)
	if got := d.sh("oom", "sh -c '"+lower+"' 2>/dev/null"); got != agentAdj+"\nrefused\n" && agentAdj != "-1000" {
		t.Errorf("lowering a process's OOM score (the agent's is %s): %q", agentAdj, got)
	}
	const hog = `python3 -c 'b = bytearray(512 << 20); print(len(b))'`
	res := d.exec("oom", api.ExecRequest{Command: hog})
	if res.ExitCode != 137 || !res.OOMKilled {
		t.Errorf("a command beyond the memory limit: exit %d, oomKilled %v", res.ExitCode, res.OOMKilled)
	}
	if res := d.exec("oom", api.ExecRequest{Command: "sh -c 'kill -KILL $$'"}); res.ExitCode != 137 || res.OOMKilled {
		t.Errorf("a command killed by SIGKILL: exit %d, oomKilled %v", res.ExitCode, res.OOMKilled)
	}
	_, stderr, code := d.cli("", "sh", "oom", hog)
	if code != 137 || !strings.Contains(stderr, "killed: out of memory") {
		t.Errorf("nsbox sh of a command beyond the memory limit: exit %d, stderr %q", code, stderr)
	}

	ctx := context.Background()
	p, err := d.client.StartProcess(ctx, "oom", api.StartProcessRequest{ID: "hog", Command: hog})
	if err != nil {
		t.Fatal(err)
	}
	w, err := d.client.WaitProcess(ctx, "oom", p.ID, api.WaitProcessRequest{TimeoutMs: 60000})
	if err != nil {
		t.Fatal(err)
	}
	if w.Process.ExitCode != 137 || !w.Process.OOMKilled {
		t.Errorf("a process (command) beyond the memory limit: %+v", w.Process)
	}
	p, err = d.client.StartProcess(ctx, "oom", api.StartProcessRequest{ID: "hog2", Argv: []string{"python3", "-c", "b = bytearray(512 << 20)"}})
	if err != nil {
		t.Fatal(err)
	}
	w, err = d.client.WaitProcess(ctx, "oom", p.ID, api.WaitProcessRequest{TimeoutMs: 60000})
	if err != nil {
		t.Fatal(err)
	}
	if w.Process.Status != api.ProcessKilled || w.Process.Signal != "SIGKILL" || !w.Process.OOMKilled {
		t.Errorf("a process beyond the memory limit: %+v", w.Process)
	}
	if out, _, _ := d.cli("", "ps", "oom"); !strings.Contains(out, "killed: out of memory") {
		t.Errorf("nsbox ps of an OOM-killed process: %q", out)
	}
	if got := d.agentPID("oom"); got != agent {
		t.Errorf("the agent changed from pid %d to %d: it was killed", agent, got)
	}
	if got := d.sh("oom", "echo alive; cat /proc/1/oom_score_adj"); got != "alive\n"+agentAdj+"\n" {
		t.Errorf("after the OOM kills: %q", got)
	}
}

// TestCanceledExecIsKilled: a Go SDK exec whose context ends kills its command, so the
// session's next command runs at once; client.KeepRunning lets it run on.
func TestCanceledExecIsKilled(t *testing.T) {
	d := startDaemon(t)
	d.create(api.CreateSandboxRequest{ID: "can", Image: "busybox"})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		_, err := d.client.ExecStream(ctx, "can", api.ExecRequest{Command: "sleep 1000"}, func(ev api.ExecEvent) error {
			if ev.Type == api.EventStart {
				cancel()
			}
			return nil
		})
		done <- err
	}()
	if err := <-done; !strings.Contains(strings.ToLower(errString(err)), "cancel") {
		t.Fatalf("a canceled exec: %v", err)
	}
	// Were the sleep still running, this would wait for it (1000 s): the test would time out.
	res := d.exec("can", api.ExecRequest{Command: "echo next; ps -o args | grep -c '^sleep 1000' || true"})
	if res.ExitCode != 0 || res.Stdout != "next\n0\n" {
		t.Errorf("the next command after a canceled one: %+v", res)
	}

	ctx, cancel = context.WithCancel(client.KeepRunning(context.Background()))
	go func() {
		_, err := d.client.ExecStream(ctx, "can", api.ExecRequest{Command: "sleep 0.5; echo kept > /tmp/kept"}, func(ev api.ExecEvent) error {
			if ev.Type == api.EventStart {
				cancel()
			}
			return nil
		})
		done <- err
	}()
	<-done
	if got := d.sh("can", "cat /tmp/kept"); got != "kept\n" {
		t.Errorf("a command whose call was canceled with KeepRunning did not run to its end: %q", got)
	}
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}
