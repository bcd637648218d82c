package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/google/nftables"
	"github.com/vishvananda/netlink"

	"github.com/nsbox/nsbox/api"
	"github.com/nsbox/nsbox/api/spectest"
	"github.com/nsbox/nsbox/client"
)

// The integration tests drive the real nsbox binary: a daemon per test with its own data dir,
// run dir, socket and cgroup parent, real sandboxes, and after each test a check that nothing
// it made is left on the host.

var (
	nsboxBin string
	apiSpec  *spectest.Spec
	noUserNS bool // the daemons run with --userns=false
)

func TestMain(m *testing.M) {
	if os.Geteuid() != 0 {
		// Skipped, not failed: the unit tests of every package run without root.
		fmt.Fprintln(os.Stderr, "SKIP: the integration tests need root (sandboxes are real namespaces, cgroups and mounts)")
		os.Exit(0)
	}
	var err error
	if apiSpec, err = spectest.Load("../../api/openapi.json"); err != nil {
		fmt.Fprintln(os.Stderr, "load API spec:", err)
		os.Exit(1)
	}
	// NSBOX_TEST_USERNS=false runs every daemon with --userns=false (the tests of user
	// namespaces are skipped then).
	noUserNS = os.Getenv("NSBOX_TEST_USERNS") == "false"
	nsboxBin = os.Getenv("NSBOX_BIN")
	if nsboxBin == "" {
		dir, err := os.MkdirTemp("", "nsbox-bin-")
		if err != nil {
			panic(err)
		}
		defer os.RemoveAll(dir)
		nsboxBin = filepath.Join(dir, "nsbox")
		build := exec.Command("go", "build", "-tags", "seccomp netgo osusergo", "-ldflags", "-extldflags -static", "-o", nsboxBin, ".")
		build.Stdout, build.Stderr = os.Stderr, os.Stderr
		if err := build.Run(); err != nil {
			fmt.Fprintln(os.Stderr, "build nsbox:", err)
			os.Exit(1)
		}
	}
	reapDeadRuns()
	os.Exit(m.Run())
}

var daemonSeq atomic.Int64

// testDaemon is one nsbox daemon with private state.
type testDaemon struct {
	t            *testing.T
	bin          string // the nsbox binary the daemon runs
	dataDir      string
	runDir       string
	socket       string
	cgroupParent string
	args         []string // the test's own daemon flags, used again on every restart
	net          testNetwork
	nofile       int // the daemon's open-file limit (soft and hard); 0: the test's own
	cmd          *exec.Cmd
	log          *syncBuffer // the daemon's output, which tests may read while it runs
	client       *client.Client
	http         *http.Client
}

// startDaemon starts a daemon for the test and registers its cleanup and leak check.
func startDaemon(t *testing.T, extraArgs ...string) *testDaemon {
	t.Helper()
	return startDaemonLimited(t, 0, extraArgs...)
}

// startDaemonLimited is startDaemon with the daemon's open-file limit set to nofile.
func startDaemonLimited(t *testing.T, nofile int, extraArgs ...string) *testDaemon {
	t.Helper()
	return startDaemonOf(t, nsboxBin, nofile, extraArgs...)
}

// startDaemonOf is startDaemonLimited with the daemon run from the nsbox binary bin.
func startDaemonOf(t *testing.T, bin string, nofile int, extraArgs ...string) *testDaemon {
	t.Helper()
	n := daemonSeq.Add(1)
	d := daemonOf(int64(os.Getpid()), n)
	d.t, d.bin, d.dataDir, d.args, d.nofile = t, bin, t.TempDir(), extraArgs, nofile
	d.net = newTestNetwork(t, n)
	d.writeDataDir()
	// Every answer the tests get, through the SDK or raw, is checked against the OpenAPI spec.
	d.http = &http.Client{Transport: &specCheckingTransport{t: t, next: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var dialer net.Dialer
			return dialer.DialContext(ctx, "unix", d.socket)
		},
	}}}
	d.client = client.NewWithHTTPClient(d.http)
	t.Cleanup(d.cleanup)
	d.start()
	return d
}

// daemonOf is the n-th test daemon of the test process pid, as far as its names say: its run
// dir, socket, cgroup parent and network (its data dir is a temp dir of its test).
func daemonOf(pid, n int64) *testDaemon {
	name := fmt.Sprintf("nsbox-test-%d-%d", pid, n)
	return &testDaemon{runDir: "/run/" + name, socket: filepath.Join("/run", name, "nsbox.sock"), cgroupParent: name, net: testNetworkOf(pid, n)}
}

// dataDirFile, in a test daemon's run dir, names its data dir, for reapDeadRuns.
const dataDirFile = "test-data-dir"

// writeDataDir writes the daemon's data dir into its run dir.
func (d *testDaemon) writeDataDir() {
	d.t.Helper()
	err := os.MkdirAll(d.runDir, 0o711)
	if err == nil {
		err = os.WriteFile(filepath.Join(d.runDir, dataDirFile), []byte(d.dataDir), 0o600)
	}
	if err != nil {
		d.t.Fatalf("write the daemon's data dir into its run dir: %v", err)
	}
}

// reapDeadRuns cleans up after test binaries that were killed (a timeout, ^C) and so left
// their daemons' sandboxes running: for every test run dir (/run/nsbox-test-<pid>-<n>) whose
// test process is gone, it kills the daemon if it still runs, runs `nsbox daemon --cleanup
// --force` for it (sandboxes, cgroups, mounts, its nftables table, veths, routes), removes
// the uplink, the cgroup parents, the data dir and the run dir. Everything but the data dir
// is named after the pid and n (daemonOf); the data dir is in the run dir's dataDirFile. What it cannot remove it says
// on stderr, and the tests go on.
func reapDeadRuns() {
	dirs, _ := filepath.Glob("/run/nsbox-test-*-*")
	for _, dir := range dirs {
		var pid, n int64
		if _, err := fmt.Sscanf(filepath.Base(dir), "nsbox-test-%d-%d", &pid, &n); err != nil || int(pid) == os.Getpid() || alive(int(pid)) {
			continue
		}
		if err := reapDeadRun(pid, n); err != nil {
			fmt.Fprintf(os.Stderr, "clean up after the killed test run of %s: %v\n", dir, err)
		}
	}
	reapStrays()
}

// reapStrays removes what a test run killed during its daemon's cleanup, after its run dir
// went, may have left: its empty cgroup parents and its nftables table. (Its uplink is named
// after its pid modulo 1,000,000, which can be a live run's too: it stays.)
func reapStrays() {
	dead := func(pidText string) bool {
		pid, err := strconv.Atoi(pidText)
		return err == nil && pid != os.Getpid() && !alive(pid)
	}
	cgroups, _ := filepath.Glob("/sys/fs/cgroup/*/nsbox-test-*-*")
	for _, dir := range cgroups {
		if pid, _, _ := strings.Cut(strings.TrimPrefix(filepath.Base(dir), "nsbox-test-"), "-"); dead(pid) {
			_ = os.Remove(dir) // only an empty one: a run dir's daemon had the others
		}
	}
	c, err := nftables.New()
	if err != nil {
		return
	}
	tables, _ := c.ListTablesOfFamily(nftables.TableFamilyINet)
	for _, table := range tables {
		if rest, ok := strings.CutPrefix(table.Name, "nsboxit_"); ok {
			if pid, _, _ := strings.Cut(rest, "_"); dead(pid) {
				c.DelTable(table)
			}
		}
	}
	if err := c.Flush(); err != nil {
		fmt.Fprintf(os.Stderr, "remove the nftables tables of killed test runs: %v\n", err)
	}
}

// reapDeadRun is reapDeadRuns' work on the n-th daemon of the dead test process pid. Without
// a data dir (a run that never wrote one) it cleans up with an empty one: what is in the run
// dir and on the host goes, the data dir's files stay.
func reapDeadRun(pid, n int64) error {
	d := daemonOf(pid, n)
	d.dataDir = killDaemonsOf(d.runDir)
	if data, err := os.ReadFile(filepath.Join(d.runDir, dataDirFile)); err == nil {
		d.dataDir = string(data)
	}
	if d.dataDir == "" {
		var err error
		if d.dataDir, err = os.MkdirTemp("", "nsbox-reap-"); err != nil {
			return err
		}
	}
	if out, err := d.runCleanup("--force"); err != nil {
		return fmt.Errorf("nsbox daemon --cleanup --force: %w\n%s", err, out)
	}
	var errs []error
	if link, err := netlink.LinkByName(d.net.uplink); err == nil {
		errs = append(errs, netlink.LinkDel(link))
	}
	cgroups, _ := filepath.Glob("/sys/fs/cgroup/*/" + d.cgroupParent)
	for _, dir := range cgroups {
		if err := os.Remove(dir); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	errs = append(errs, os.RemoveAll(d.dataDir), os.RemoveAll(d.runDir))
	_ = os.Remove(filepath.Dir(d.dataDir)) // the test's temp dir, once empty
	return errors.Join(errs...)
}

// reachableTempDir is a temp dir of the test that a sandbox's root can reach: with user
// namespaces a daemon refuses a run dir under a directory others cannot search, as a test's
// temp dirs are.
func reachableTempDir(t *testing.T) string {
	dir := t.TempDir()
	for _, d := range []string{filepath.Dir(dir), dir} {
		if err := os.Chmod(d, 0o711); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// killDaemonsOf kills (SIGKILL) every nsbox daemon with the run dir, waits for them to go, and
// returns the data dir of the last one ("" for none).
func killDaemonsOf(runDir string) (dataDir string) {
	cmdlines, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, p := range cmdlines {
		data, _ := os.ReadFile(p)
		args := strings.Split(string(data), "\x00")
		if len(args) < 2 || args[1] != "daemon" || !slices.Contains(args, runDir) {
			continue
		}
		if i := slices.Index(args, "--data-dir"); i > 0 && i+1 < len(args) {
			dataDir = args[i+1]
		}
		pid := pidOf(p)
		if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
			continue
		}
		for deadline := time.Now().Add(10 * time.Second); alive(pid) && time.Now().Before(deadline); {
			time.Sleep(10 * time.Millisecond)
		}
	}
	return dataDir
}

// start starts (or restarts) the daemon. It keeps no warm pool unless the test asks for one.
func (d *testDaemon) start() {
	d.t.Helper()
	// No --socket: the daemon's default is nsbox.sock in its run dir, d.socket.
	args := append([]string{"daemon", "--data-dir", d.dataDir, "--run-dir", d.runDir,
		"--cgroup-parent", d.cgroupParent, "--log-level", "debug", "--warm-pool", ""}, append(d.net.daemonArgs(), d.args...)...)
	if noUserNS {
		args = append(args, "--userns=false")
	}
	d.log = &syncBuffer{}
	d.cmd = exec.Command(d.bin, args...)
	if d.nofile > 0 { // prlimit sets the limit and execs the daemon: the pid is the daemon's
		d.cmd = exec.Command("prlimit", append([]string{fmt.Sprintf("--nofile=%d:%d", d.nofile, d.nofile), "--", d.bin}, args...)...)
	}
	d.cmd.Stdout, d.cmd.Stderr = d.log, d.log
	if err := d.cmd.Start(); err != nil {
		d.t.Fatalf("start daemon: %v", err)
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		if _, err := d.client.Version(context.Background()); err == nil {
			return
		}
		if time.Now().After(deadline) {
			d.t.Fatalf("daemon did not answer within 20s; log:\n%s", d.log)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// stop stops the daemon cleanly (SIGTERM) and waits for it.
func (d *testDaemon) stop() {
	d.signal(syscall.SIGTERM)
}

// kill9 kills the daemon the hard way.
func (d *testDaemon) kill9() {
	d.signal(syscall.SIGKILL)
}

func (d *testDaemon) signal(sig syscall.Signal) {
	if d.cmd == nil {
		return
	}
	_ = d.cmd.Process.Signal(sig)
	_ = d.cmd.Wait()
	d.cmd = nil
}

// cleanup removes every sandbox, stops the daemon and fails the test if anything the daemon
// made is left: processes, cgroups, mounts, state directories.
func (d *testDaemon) cleanup() {
	t := d.t
	if d.cmd == nil {
		d.start()
	}
	list, err := d.client.ListSandboxes(context.Background())
	if err != nil {
		t.Errorf("cleanup: list sandboxes: %v", err)
	}
	for _, sb := range list {
		if err := d.client.RemoveSandbox(context.Background(), sb.ID, client.RemoveOptions{Force: true}); err != nil {
			t.Errorf("cleanup: remove %s: %v", sb.ID, err)
		}
	}
	for _, f := range d.openSpoolFiles() {
		t.Errorf("leaked: the daemon holds spooled output open: %s", f)
	}
	d.stop()
	if t.Failed() {
		t.Logf("daemon log:\n%s", d.log)
	}
	for _, leak := range d.leaks() {
		t.Errorf("leaked: %s", leak)
	}
	d.cleanupNetwork()
	// `daemon --cleanup` removed our parent cgroups, empty now.
	dirs, _ := filepath.Glob("/sys/fs/cgroup/*/" + d.cgroupParent)
	for _, dir := range dirs {
		t.Errorf("leaked: cgroup parent %s after `daemon --cleanup`", dir)
		if err := os.Remove(dir); err != nil {
			t.Errorf("remove cgroup %s: %v", dir, err)
		}
	}
	os.RemoveAll(d.runDir)
}

// leaks lists what a daemon with no sandboxes should not have left behind: what its
// containers left, and its LXCFS (which outlives a daemon only while sandboxes run). A remove
// tears its container down in the background after it answers: leaks waits (up to 20 s) for
// the list to empty.
func (d *testDaemon) leaks() []string {
	return waitEmpty(d.currentLeaks)
}

// containerLeaks is leaks of one container only (other sandboxes may run).
func (d *testDaemon) containerLeaks(container string) []string {
	return waitEmpty(func() []string {
		var leaks []string
		for _, l := range d.leftovers() {
			if l.container == container {
				leaks = append(leaks, l.what)
			}
		}
		return leaks
	})
}

// currentLeaks is what leaks lists, now. A running daemon keeps its LXCFS, its stage and its
// spare disks' loop devices: they count only once the daemon has stopped.
func (d *testDaemon) currentLeaks() []string {
	var leaks []string
	for _, l := range d.leftovers() {
		leaks = append(leaks, l.what)
	}
	if d.cmd != nil {
		return leaks
	}
	return append(append(append(leaks, d.lxcfsLeftovers()...), d.stageLeftovers()...), d.spareLeftovers()...)
}

// spareLeftovers are the loop devices of the daemon's spare disks, which it keeps mounted
// nowhere while it runs.
func (d *testDaemon) spareLeftovers() []string {
	var out []string
	for _, l := range boundLoops() {
		if strings.HasPrefix(l.file, d.sparesDir()+"/") {
			out = append(out, "spare disk's loop device "+l.dev+" on "+l.file)
		}
	}
	return out
}

// sparesDir is where the daemon keeps its spare disks.
func (d *testDaemon) sparesDir() string { return filepath.Join(d.dataDir, "disks") }

// waitSpares waits until the daemon has made its two spare disks and mounted them ahead.
func (d *testDaemon) waitSpares() {
	d.t.Helper()
	for deadline := time.Now().Add(20 * time.Second); len(d.spareLeftovers()) < 2; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			d.t.Fatalf("the daemon has not made its spare disks in 20s: %v", d.spareLeftovers())
		}
	}
}

// boundLoop is a loop device and the file bound to it.
type boundLoop struct{ dev, file string }

// boundLoops lists the loop devices bound to a file.
func boundLoops() []boundLoop {
	var out []boundLoop
	backing, _ := filepath.Glob("/sys/block/loop*/loop/backing_file")
	for _, f := range backing {
		if data, err := os.ReadFile(f); err == nil {
			out = append(out, boundLoop{filepath.Base(filepath.Dir(filepath.Dir(f))), strings.TrimSpace(string(data))})
		}
	}
	return out
}

// stageDir is the daemon's staging tmpfs, where the files sandboxes get by bind mount come
// from (nsbox/stage.go).
func (d *testDaemon) stageDir() string { return filepath.Join(d.runDir, "stage") }

// stageLeftovers is the daemon's stage mount.
func (d *testDaemon) stageLeftovers() []string {
	var out []string
	mountinfo, _ := os.ReadFile("/proc/self/mountinfo")
	for _, line := range strings.Split(string(mountinfo), "\n") {
		if strings.Contains(line, " "+d.stageDir()+" ") {
			out = append(out, "stage mount "+line)
		}
	}
	return out
}

// waitEmpty calls list until it answers nothing, for up to 20 s, and returns its last answer.
func waitEmpty(list func() []string) []string {
	deadline := time.Now().Add(20 * time.Second)
	for {
		got := list()
		if len(got) == 0 || time.Now().After(deadline) {
			return got
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// lxcfsDir is where the daemon runs LXCFS, which shows sandboxes their limits in /proc.
func (d *testDaemon) lxcfsDir() string { return filepath.Join(d.runDir, "lxcfs") }

// lxcfsLeftovers are the daemon's LXCFS mount and processes.
func (d *testDaemon) lxcfsLeftovers() []string {
	var out []string
	mountinfo, _ := os.ReadFile("/proc/self/mountinfo")
	for _, line := range strings.Split(string(mountinfo), "\n") {
		if strings.Contains(line, " "+d.lxcfsDir()+"/") {
			out = append(out, "lxcfs mount "+line)
		}
	}
	cmdlines, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, p := range cmdlines {
		data, _ := os.ReadFile(p)
		if bytes.Contains(data, []byte(d.lxcfsDir()+"/")) && alive(pidOf(p)) {
			out = append(out, "lxcfs process "+filepath.Dir(p)+": "+strings.ReplaceAll(string(data), "\x00", " "))
		}
	}
	return out
}

// leftover is something of a container's on the host: a cgroup, a mount, a loop device, a
// process, a state directory.
type leftover struct {
	container string // "" when it cannot be told
	what      string
}

// leftovers lists what the daemon's containers have on the host.
func (d *testDaemon) leftovers() []leftover {
	var out []leftover
	cgroupDirs, _ := filepath.Glob("/sys/fs/cgroup/*/" + d.cgroupParent + "/*")
	for _, dir := range cgroupDirs {
		if fi, err := os.Stat(dir); err == nil && fi.IsDir() {
			out = append(out, leftover{filepath.Base(dir), "cgroup " + dir})
		}
	}
	mountinfo, _ := os.ReadFile("/proc/self/mountinfo")
	for _, line := range strings.Split(string(mountinfo), "\n") {
		if strings.Contains(line, " "+d.lxcfsDir()+"/") || strings.Contains(line, " "+d.stageDir()+" ") { // the daemon's, not a container's (lxcfsLeftovers, stageLeftovers)
			continue
		}
		if strings.Contains(line, d.runDir) || strings.Contains(line, d.dataDir) {
			out = append(out, leftover{d.containerOfPath(line), "mount " + line})
		}
	}
	for _, l := range boundLoops() {
		if strings.HasPrefix(l.file, d.dataDir+"/") && !strings.HasPrefix(l.file, d.sparesDir()+"/") { // spares: the daemon's (spareLeftovers)
			out = append(out, leftover{d.containerOfPath(l.file), "loop device " + l.dev + " on " + l.file})
		}
	}
	procs, _ := filepath.Glob("/proc/[0-9]*/cgroup")
	for _, p := range procs {
		data, _ := os.ReadFile(p)
		_, rest, found := strings.Cut(string(data), "/"+d.cgroupParent+"/")
		if found && alive(pidOf(p)) {
			container, _, _ := strings.Cut(strings.Fields(rest)[0], "/")
			out = append(out, leftover{container, "process " + filepath.Dir(p)})
		}
	}
	for _, dir := range []string{filepath.Join(d.runDir, "containers"), filepath.Join(d.runDir, "sandboxes"), filepath.Join(d.dataDir, "sandboxes"), d.stageDir()} {
		entries, _ := os.ReadDir(dir)
		for _, e := range entries {
			if dir == d.stageDir() && !e.IsDir() { // the agent binary, the daemon's
				continue
			}
			out = append(out, leftover{e.Name(), "state " + filepath.Join(dir, e.Name())})
		}
	}
	spooled, _ := os.ReadDir(d.spoolDir())
	for _, e := range spooled {
		out = append(out, leftover{"", "spool file " + filepath.Join(d.spoolDir(), e.Name())})
	}
	return out
}

// spoolDir is where the daemon spools exec output for JSON answers (nsbox/output.go).
func (d *testDaemon) spoolDir() string { return filepath.Join(d.dataDir, "spool") }

// openSpoolFiles lists the spool files the running daemon holds open (unlinked, they show only
// there).
func (d *testDaemon) openSpoolFiles() []string {
	var out []string
	if d.cmd == nil {
		return nil
	}
	fds, _ := filepath.Glob(fmt.Sprintf("/proc/%d/fd/*", d.cmd.Process.Pid))
	for _, fd := range fds {
		if target, err := os.Readlink(fd); err == nil && strings.HasPrefix(target, d.spoolDir()+"/") {
			out = append(out, target)
		}
	}
	return out
}

// containerOfPath is the container whose run or data dir s names a path in ("" if none).
func (d *testDaemon) containerOfPath(s string) string {
	for _, dir := range []string{d.runDir, d.dataDir} {
		if _, rest, ok := strings.Cut(s, dir+"/sandboxes/"); ok {
			container, _, _ := strings.Cut(rest, "/")
			return container
		}
	}
	return ""
}

// call sends a raw API request and returns the status and body.
func (d *testDaemon) call(method, path string, body any) (int, []byte) {
	d.t.Helper()
	req, err := http.NewRequest(method, "http://nsbox"+path, requestBody(d.t, body))
	if err != nil {
		d.t.Fatal(err)
	}
	resp, err := d.http.Do(req)
	if err != nil {
		d.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		d.t.Fatalf("%s %s: read body: %v", method, path, err)
	}
	return resp.StatusCode, data
}

// requestBody is a request's body: none (nil), a string as it is, or anything else as JSON.
func requestBody(t *testing.T, body any) io.Reader {
	t.Helper()
	switch b := body.(type) {
	case nil:
		return nil
	case string:
		return strings.NewReader(b)
	default:
		data, err := json.Marshal(b)
		if err != nil {
			t.Fatal(err)
		}
		return bytes.NewReader(data)
	}
}

// expectError checks an error answer's status and code.
func (d *testDaemon) expectError(method, path string, body any, status int, code string) *api.Error {
	d.t.Helper()
	got, data := d.call(method, path, body)
	var eb api.ErrorBody
	if err := json.Unmarshal(data, &eb); err != nil || eb.Error == nil {
		d.t.Fatalf("%s %s: want error JSON, got %d %q", method, path, got, data)
	}
	if got != status || eb.Error.Code != code || eb.Error.Message == "" {
		d.t.Fatalf("%s %s: want %d %s, got %d %+v", method, path, status, code, got, eb.Error)
	}
	return eb.Error
}

// create makes a sandbox through the API and fails the test if it cannot.
func (d *testDaemon) create(req api.CreateSandboxRequest) *api.Sandbox {
	d.t.Helper()
	sb, err := d.client.CreateSandbox(context.Background(), req)
	if err != nil {
		d.t.Fatalf("create %+v: %v", req, err)
	}
	return sb
}

// sh runs a shell command in a sandbox and returns its stdout, failing on a non-zero exit.
func (d *testDaemon) sh(id, command string) string {
	d.t.Helper()
	res := d.exec(id, api.ExecRequest{Command: command})
	stdout, stderr, _ := res.Output()
	if res.ExitCode != 0 {
		d.t.Fatalf("%q in %s: exit %d, stderr %q, stdout %q", command, id, res.ExitCode, stderr, stdout)
	}
	return string(stdout)
}

func (d *testDaemon) exec(id string, req api.ExecRequest) *api.ExecResult {
	d.t.Helper()
	res, err := d.client.Exec(context.Background(), id, req)
	if err != nil {
		d.t.Fatalf("exec %+v in %s: %v", req, id, err)
	}
	return res
}

// cli runs the nsbox CLI against the daemon and returns stdout, stderr and the exit code.
func (d *testDaemon) cli(stdin string, args ...string) (string, string, int) {
	d.t.Helper()
	cmd := exec.Command(nsboxBin, append([]string{"--socket", d.socket}, args...)...)
	var stdout, stderr bytes.Buffer
	cmd.Stdin, cmd.Stdout, cmd.Stderr = strings.NewReader(stdin), &stdout, &stderr
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		d.t.Fatalf("run nsbox %v: %v", args, err)
	}
	return stdout.String(), stderr.String(), code
}

// agentPID is the host pid of a sandbox's agent.
func (d *testDaemon) agentPID(id string) int {
	d.t.Helper()
	sb, err := d.client.GetSandbox(context.Background(), id)
	if err != nil {
		d.t.Fatal(err)
	}
	if sb.PID <= 0 {
		d.t.Fatalf("sandbox %s has no pid: %+v", id, sb)
	}
	return sb.PID
}

func pidOf(procPath string) int {
	pid, _ := strconv.Atoi(filepath.Base(filepath.Dir(procPath)))
	return pid
}

// alive reports whether a process exists and is not a zombie. A sandbox's agent whose daemon
// exited is re-parented to the host's init, which reaps it when it pleases; a zombie holds
// nothing but its pid.
func alive(pid int) bool {
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	fields := strings.Fields(string(stat[strings.LastIndexByte(string(stat), ')')+1:]))
	return len(fields) > 0 && fields[0] != "Z"
}

// waitExited waits until process pid has exited: a forced remove answers once a sandbox's
// processes are killed, and they die right after.
func waitExited(t *testing.T, pid int, what string) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); alive(pid); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Errorf("%s (pid %d) still runs 10 s after it was killed", what, pid)
			return
		}
	}
}

// specCheckingTransport fails the test when an answer does not match api/openapi.json.
type specCheckingTransport struct {
	t    *testing.T
	next http.RoundTripper
}

func (s *specCheckingTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := s.next.RoundTrip(req)
	if err != nil {
		return nil, err
	}
	if resp.Header.Get("Content-Type") == "text/event-stream" {
		// Checked event by event as the test reads it: reading it whole here would defeat the
		// streaming under test.
		stream, err := apiSpec.NewSSEStream(req.Method, req.URL.EscapedPath(), resp.StatusCode)
		if err != nil {
			s.t.Errorf("answer does not match the API spec: %v", err)
			return resp, nil
		}
		resp.Body = &sseCheckingBody{ReadCloser: resp.Body, t: s.t, stream: stream}
		return resp, nil
	}
	if resp.Header.Get("Content-Type") == api.EventFrames {
		// An exec's answer as frames, checked whole (it is kept to the output cap).
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil {
			return nil, err
		}
		resp.Body = io.NopCloser(bytes.NewReader(body))
		if err := apiSpec.ValidateFrames(req.Method, req.URL.EscapedPath(), resp.StatusCode, body); err != nil {
			s.t.Errorf("frames do not match the API spec: %v", err)
		}
		return resp, nil
	}
	if ct := resp.Header.Get("Content-Type"); ct == "application/octet-stream" || ct == "application/x-tar" || strings.HasPrefix(ct, "multipart/byteranges") {
		// A file's raw content is left unread (it may be 1 GiB): it is checked only for being a
		// documented non-JSON answer of its operation (a nil body passes only then).
		if err := apiSpec.ValidateResponse(req.Method, req.URL.EscapedPath(), resp.StatusCode, nil); err != nil {
			s.t.Errorf("raw answer does not match the API spec: %v", err)
		}
		if resp.StatusCode != http.StatusOK && resp.StatusCode != http.StatusPartialContent {
			s.t.Errorf("%s %s: raw content with status %d", req.Method, req.URL, resp.StatusCode)
		}
		return resp, nil
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		return nil, err
	}
	resp.Body = io.NopCloser(bytes.NewReader(body))
	// Paths outside the API answer the documented not-found envelope; everything else must match
	// its operation in the spec.
	outsideAPI := resp.StatusCode == http.StatusNotFound && bytes.Contains(body, []byte("no such endpoint")) &&
		apiSpec.ValidateSchema("NotFoundError", body) == nil
	if err := apiSpec.ValidateResponse(req.Method, req.URL.EscapedPath(), resp.StatusCode, body); err != nil && !outsideAPI {
		s.t.Errorf("answer does not match the API spec: %v; body %.300s", err, body)
	}
	// Prometheus's text format is GET /metrics's only answer that is not JSON.
	if ct := resp.Header.Get("Content-Type"); len(body) > 0 && ct != "application/json" && !(req.URL.Path == "/metrics" && strings.HasPrefix(ct, "text/plain")) {
		s.t.Errorf("%s %s: Content-Type %q", req.Method, req.URL.Path, resp.Header.Get("Content-Type"))
	}
	return resp, nil
}

// sseCheckingBody checks an event stream against the spec as it is read, and at its end that
// it ended right after exit or error. A stream closed early is checked as far as it was read.
type sseCheckingBody struct {
	io.ReadCloser
	t      *testing.T
	stream *spectest.SSEStream
	failed bool
}

func (b *sseCheckingBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if b.failed {
		return n, err
	}
	var bad error
	if _, bad = b.stream.Write(p[:n]); bad == nil && err == io.EOF {
		bad = b.stream.Close()
	}
	if bad != nil {
		b.failed = true
		b.t.Errorf("event stream does not match the API spec: %v", bad)
	}
	return n, err
}

// syncBuffer is a bytes.Buffer that a process writes while a test reads it.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
