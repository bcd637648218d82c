package main

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/google/nftables"

	"github.com/nsbox/nsbox/api"
)

// killedRunEnv makes TestHarnessReapsKilledRun the test run it kills.
const killedRunEnv = "NSBOX_TEST_KILLED_RUN"

// TestHarnessReapsKilledRun runs this test binary as a test run that starts a daemon and a
// sandbox (its agent, cgroup, veth and nftables rules) and kills it with SIGKILL, as a timeout
// or ^C does; reapDeadRuns, which every test run calls first, must then remove all of it.
func TestHarnessReapsKilledRun(t *testing.T) {
	if os.Getenv(killedRunEnv) != "" {
		d := startDaemon(t)
		d.create(api.CreateSandboxRequest{ID: "left", Image: "busybox"})
		os.Stdout.WriteString("ready " + d.runDir + "\n")
		select {} // until killed
	}
	run := exec.Command(os.Args[0], "-test.run", "^TestHarnessReapsKilledRun$")
	run.Env = append(os.Environ(), killedRunEnv+"=1", "NSBOX_BIN="+nsboxBin)
	stdout, err := run.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	run.Stderr = os.Stderr
	if err := run.Start(); err != nil {
		t.Fatal(err)
	}
	var pid, n int64
	for lines := bufio.NewScanner(stdout); n == 0 && lines.Scan(); {
		_, _ = fmt.Sscanf(lines.Text(), "ready /run/nsbox-test-%d-%d", &pid, &n)
	}
	_ = run.Process.Kill()
	_ = run.Wait()
	if n == 0 {
		t.Fatal("the test run to kill never got ready")
	}
	d := daemonOf(pid, n)
	data, err := os.ReadFile(filepath.Join(d.runDir, dataDirFile))
	if err != nil {
		t.Fatal(err)
	}
	d.t, d.dataDir = t, string(data)
	runDir := d.runDir
	left := func() []string {
		var out []string
		for _, l := range d.leftovers() {
			out = append(out, l.what)
		}
		out = append(append(append(append(out, d.lxcfsLeftovers()...), d.stageLeftovers()...), d.spareLeftovers()...), d.net.leaks()...)
		for _, path := range []string{runDir, d.dataDir, "/sys/class/net/" + d.net.uplink} {
			if _, err := os.Stat(path); err == nil {
				out = append(out, path)
			}
		}
		return out
	}
	if len(left()) == 0 {
		t.Fatal("the killed test run left nothing: the test tests nothing")
	}
	// A daemon of the run whose run dir went already (killed during its cleanup) left an empty
	// cgroup parent and its table.
	stray := &testDaemon{t: t, cgroupParent: fmt.Sprintf("nsbox-test-%d-99", run.Process.Pid),
		net: testNetwork{table: fmt.Sprintf("nsboxit_%d_99", run.Process.Pid)}}
	hierarchies, _ := filepath.Glob("/sys/fs/cgroup/*/" + d.cgroupParent)
	if len(hierarchies) == 0 {
		t.Fatal("the killed run has no cgroup parent")
	}
	strayCgroup := filepath.Join(filepath.Dir(hierarchies[0]), stray.cgroupParent)
	if err := os.Mkdir(strayCgroup, 0o755); err != nil {
		t.Fatal(err)
	}
	c, err := nftables.New()
	if err != nil {
		t.Fatal(err)
	}
	c.AddTable(&nftables.Table{Name: stray.net.table, Family: nftables.TableFamilyINet})
	if err := c.Flush(); err != nil {
		t.Fatal(err)
	}
	reapDeadRuns()
	for _, l := range append(left(), stray.net.leaks()...) {
		t.Errorf("left after reapDeadRuns: %s", l)
	}
	if _, err := os.Stat(strayCgroup); err == nil {
		t.Errorf("left after reapDeadRuns: %s", strayCgroup)
	}
}
