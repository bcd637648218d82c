package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/nsbox/nsbox/api"
	"github.com/nsbox/nsbox/client"
)

// bench owns everything the benchmark makes on the host, so that cleanup can remove it all.
type bench struct {
	bin     string // a private copy of the nsbox binary, immune to rebuilds during the run
	tmpDir  string // the binary, the daemons' data dirs and logs, the runc bundle
	runDir  string // /run/nsbox-bench-<pid>: the daemons' run dirs and runc's state
	cgroup  string // nsbox-bench-<pid>: the parent of every cgroup made here
	daemons map[string]*daemon
	net     benchNet // the daemons' sandbox networks
}

// daemon is a private nsbox daemon.
type daemon struct {
	name, dataDir, runDir, cgroupParent, log string
	netArgs                                  []string // its own nftables table, subnet and uplink
	args                                     []string // its command line, for every start
	cmd                                      *exec.Cmd
	exited                                   chan struct{}
	client                                   *client.Client
	warmPool                                 bool // started with a warm pool
}

func newBench(bin string) (*bench, error) {
	tmp, err := os.MkdirTemp("", "nsbox-bench-")
	if err != nil {
		return nil, fmt.Errorf("make temp dir: %w", err)
	}
	name := fmt.Sprintf("nsbox-bench-%d", os.Getpid())
	b := &bench{bin: filepath.Join(tmp, "bin", "nsbox"), tmpDir: tmp, runDir: filepath.Join("/run", name), cgroup: name, daemons: map[string]*daemon{}}
	if err := errors.Join(os.Mkdir(filepath.Dir(b.bin), 0o755), runCommand("cp", bin, b.bin)); err != nil {
		return nil, errors.Join(fmt.Errorf("copy the nsbox binary: %w", err), os.RemoveAll(tmp))
	}
	if b.net, err = newBenchNet(); err != nil {
		return nil, errors.Join(err, os.RemoveAll(tmp))
	}
	return b, nil
}

func (b *bench) runcRoot() string { return filepath.Join(b.runDir, "runc") }

// daemon returns the daemon called name, starting it and waiting for its API on first use.
func (b *bench) daemon(ctx context.Context, name string, seccomp bool, warmPool string, extraArgs ...string) (*daemon, error) {
	if d, ok := b.daemons[name]; ok {
		return d, nil
	}
	runDir := filepath.Join(b.runDir, name)
	socket := filepath.Join(runDir, "nsbox.sock")
	d := &daemon{name: name, dataDir: filepath.Join(b.tmpDir, name), runDir: runDir, cgroupParent: b.cgroup + "/" + name,
		log: filepath.Join(b.tmpDir, name+".log"), client: client.New(socket), netArgs: b.net.daemonArgs(len(b.daemons)), warmPool: warmPool != ""}
	d.args = append([]string{"--socket", socket, "daemon", "--data-dir", d.dataDir, "--run-dir", runDir,
		"--cgroup-parent", d.cgroupParent, "--seccomp=" + strconv.FormatBool(seccomp), "--warm-pool", warmPool, "--log-level", "warn"}, append(d.netArgs, extraArgs...)...)
	if err := d.start(b.bin); err != nil {
		return nil, err
	}
	b.daemons[name] = d
	if err := d.waitAPI(ctx); err != nil {
		return nil, err
	}
	return d, nil
}

// start starts the daemon's process, its output appended to its log.
func (d *daemon) start(bin string) error {
	logFile, err := os.OpenFile(d.log, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("open daemon log: %w", err)
	}
	defer logFile.Close()
	// Its own process group: a Ctrl-C meant for the benchmark must not stop the daemon
	// before the benchmark has removed its sandboxes through it.
	d.cmd = command(bin, d.args...)
	d.cmd.Stdout, d.cmd.Stderr = logFile, logFile
	if err := d.cmd.Start(); err != nil {
		return fmt.Errorf("start daemon %s: %w", d.name, err)
	}
	exited := make(chan struct{})
	d.exited = exited
	go func() { _ = d.cmd.Wait(); close(exited) }()
	return nil
}

// waitAPI waits, up to a minute, until the daemon answers on its API socket.
func (d *daemon) waitAPI(ctx context.Context) error {
	var err error
	for deadline := time.Now().Add(time.Minute); ; {
		if _, err = d.client.Version(ctx); err == nil {
			return nil
		}
		select {
		case <-d.exited:
			log, _ := os.ReadFile(d.log)
			return fmt.Errorf("daemon %s exited (%v): %s", d.name, d.cmd.ProcessState, strings.TrimSpace(string(log)))
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("daemon %s did not answer within a minute: %w", d.name, err)
		}
	}
}

// restart ends the daemon with sig (its sandboxes keep running), starts it again and returns
// how long the new one took to answer on its API (it opens its socket once it has
// reconciled every sandbox and rebuilt their network) and the CPU time it used meanwhile.
func (d *daemon) restart(ctx context.Context, bin string, sig syscall.Signal) (wall, cpu time.Duration, err error) {
	if err := d.cmd.Process.Signal(sig); err != nil {
		return 0, 0, fmt.Errorf("signal daemon %s: %w", d.name, err)
	}
	<-d.exited
	began := time.Now()
	if err := d.start(bin); err != nil {
		return 0, 0, err
	}
	if err := d.waitAPI(ctx); err != nil {
		return 0, 0, err
	}
	wall = time.Since(began)
	cpu, err = cpuTime(d.cmd.Process.Pid)
	return wall, cpu, err
}

// waitWarm waits until the daemon's pool has a container of the benchmark's image ready.
func (d *daemon) waitWarm(ctx context.Context) error {
	for deadline := time.Now().Add(time.Minute); time.Now().Before(deadline); {
		images, err := d.client.Images(ctx)
		if err != nil {
			return fmt.Errorf("list images: %w", err)
		}
		for _, img := range images {
			if img.Name == image && img.Warm > 0 {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Millisecond):
		}
	}
	return fmt.Errorf("daemon %s: no warm %s container within a minute", d.name, image)
}

// refilled waits until what the daemon makes in the background after a create is made again:
// its warm container, if it keeps a pool, and its spare disks.
func (d *daemon) refilled(ctx context.Context) error {
	if d.warmPool {
		if err := d.waitWarm(ctx); err != nil {
			return err
		}
	}
	return d.waitSpares(ctx)
}

// spareDisks is how many spare disks of the default size a daemon keeps made and mounted
// (nsbox/sparedisks.go's spareDiskCount).
const spareDisks = 2

// waitSpares waits, at most 2 s, until the daemon has its spare disks made and mounted again
// (the daemon makes them 200 ms after a take): untimed, so that their copy, fsync and mount
// land on no other case. A daemon without a default disk has none and returns at once.
func (d *daemon) waitSpares(ctx context.Context) error {
	dir := filepath.Join(d.dataDir, "disks")
	if templates, _ := filepath.Glob(filepath.Join(dir, "template*.img")); len(templates) == 0 {
		return nil
	}
	for deadline := time.Now().Add(2 * time.Second); time.Now().Before(deadline); {
		bound := 0
		files, _ := filepath.Glob("/sys/block/loop*/loop/backing_file")
		for _, f := range files {
			if data, err := os.ReadFile(f); err == nil && strings.HasPrefix(string(data), dir+"/") {
				bound++
			}
		}
		if bound >= spareDisks {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(10 * time.Millisecond):
		}
	}
	return nil // a refill that failed is the daemon's log's to say
}

// warmCount is how many containers of the benchmark's image the daemon's pool holds.
func (d *daemon) warmCount(ctx context.Context) (int, error) {
	images, err := d.client.Images(ctx)
	if err != nil {
		return 0, fmt.Errorf("list images: %w", err)
	}
	for _, img := range images {
		if img.Name == image {
			return img.Warm, nil
		}
	}
	return 0, nil
}

// removeAllSandboxes force-removes every sandbox of the (private) daemon.
func (d *daemon) removeAllSandboxes() error {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	sandboxes, err := d.client.ListSandboxes(ctx)
	if err != nil {
		return fmt.Errorf("list sandboxes of %s: %w", d.name, err)
	}
	var errs []error
	for _, sb := range sandboxes {
		err := d.client.RemoveSandbox(ctx, sb.ID, client.RemoveOptions{Force: true})
		// A create cut short by Ctrl-C may still be under way: a conflict until it is done.
		for try := 0; api.IsCode(err, api.CodeConflict) && try < 100; try++ {
			time.Sleep(100 * time.Millisecond)
			err = d.client.RemoveSandbox(ctx, sb.ID, client.RemoveOptions{Force: true})
		}
		if err != nil && !api.IsCode(err, api.CodeNotFound) {
			errs = append(errs, fmt.Errorf("remove sandbox %s of %s: %w", sb.ID, d.name, err))
		}
	}
	return errors.Join(errs...)
}

// stop removes the daemon's sandboxes, then ends it: SIGTERM, and SIGKILL after 10 s.
func (d *daemon) stop() error {
	var err error
	select {
	case <-d.exited:
	default:
		err = d.removeAllSandboxes()
		_ = d.cmd.Process.Signal(syscall.SIGTERM)
	}
	select {
	case <-d.exited:
	case <-time.After(10 * time.Second):
		_ = d.cmd.Process.Kill()
		<-d.exited
	}
	return err
}

// makeRuncBundle makes the OCI bundle tmpDir/name whose rootfs is a copy of d's busybox image
// and whose process is args, in mount, pid, uts, ipc and network namespaces, with the cgroup
// b.cgroup/name.
func (b *bench) makeRuncBundle(d *daemon, name string, args ...string) (string, error) {
	images, _ := filepath.Glob(filepath.Join(d.dataDir, "images", image, "rootfs-*"))
	if len(images) == 0 {
		return "", fmt.Errorf("no %s image rootfs in %s", image, d.dataDir)
	}
	bundle, spec := filepath.Join(b.tmpDir, name), map[string]any{}
	err := errors.Join(os.Mkdir(bundle, 0o700), runCommand("cp", "-a", images[len(images)-1], filepath.Join(bundle, "rootfs")),
		runCommand("runc", "spec", "--bundle", bundle))
	if err != nil {
		return "", fmt.Errorf("make runc bundle: %w", err)
	}
	path := filepath.Join(bundle, "config.json")
	data, err := os.ReadFile(path)
	if err == nil {
		err = json.Unmarshal(data, &spec)
	}
	process, ok1 := spec["process"].(map[string]any)
	root, ok2 := spec["root"].(map[string]any)
	linux, ok3 := spec["linux"].(map[string]any)
	if err != nil || !ok1 || !ok2 || !ok3 {
		return "", fmt.Errorf("read the OCI spec `runc spec` wrote (process, root, linux): %v", err)
	}
	process["args"], process["terminal"], root["readonly"] = args, false, true
	var namespaces []map[string]string
	for _, ns := range []string{"mount", "pid", "uts", "ipc", "network"} {
		namespaces = append(namespaces, map[string]string{"type": ns})
	}
	linux["namespaces"], linux["cgroupsPath"] = namespaces, "/"+b.cgroup+"/"+name
	if data, err = json.MarshalIndent(spec, "", "\t"); err == nil {
		err = os.WriteFile(path, data, 0o644)
	}
	if err != nil {
		return "", fmt.Errorf("write OCI spec: %w", err)
	}
	return bundle, nil
}

// runDetached starts bundle's container in the background as id and returns the host pid of
// its process and a function that kills and deletes it (cleanup would, too, by its cgroup and
// runc's state directory).
func (b *bench) runDetached(bundle, id string) (pid int, stop func() error, err error) {
	stop = func() error { return runCommand("runc", "--root", b.runcRoot(), "delete", "--force", id) }
	// The container's process inherits runc's stdio: a pipe would keep CombinedOutput waiting
	// for it, so the output goes to a file.
	out, err := os.Create(filepath.Join(b.tmpDir, id+".out"))
	if err != nil {
		return 0, func() error { return nil }, err
	}
	defer out.Close()
	pidFile := filepath.Join(b.tmpDir, id+".pid")
	cmd := command("runc", "--root", b.runcRoot(), "run", "--detach", "--pid-file", pidFile, "--bundle", bundle, id)
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Run(); err != nil { // cleanup kills and removes what it may have left
		log, _ := os.ReadFile(out.Name())
		return 0, func() error { return nil }, fmt.Errorf("%s: %w: %s", strings.Join(cmd.Args, " "), err, strings.TrimSpace(string(log)))
	}
	data, err := os.ReadFile(pidFile)
	if err == nil {
		pid, err = strconv.Atoi(strings.TrimSpace(string(data)))
	}
	return pid, stop, err
}

// command is a command in its own process group, out of reach of a Ctrl-C, which the
// benchmark handles itself.
func command(name string, args ...string) *exec.Cmd {
	cmd := exec.Command(name, args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	return cmd
}

// runCommand runs a command (see command) and puts its output in the error when it fails.
func runCommand(name string, args ...string) error {
	cmd := command(name, args...)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

// cleanup stops the daemons, then removes the mounts, directories (runc's state among them)
// and cgroups the benchmark made, killing whatever still runs in them (a runc container
// left by a failed run, say). It tries every step and reports every failure.
func (b *bench) cleanup() error {
	var errs []error
	for _, d := range b.daemons {
		errs = append(errs, d.stop())
		// The sandbox network's table, veths and state.
		args := append([]string{"daemon", "--data-dir", d.dataDir, "--run-dir", d.runDir, "--cgroup-parent", d.cgroupParent, "--cleanup"}, d.netArgs...)
		errs = append(errs, runCommand(b.bin, args...))
	}
	errs = append(errs, b.net.remove())
	for _, dir := range []string{b.runDir, b.tmpDir} {
		errs = append(errs, unmountUnder(dir), os.RemoveAll(dir))
	}
	roots, _ := filepath.Glob("/sys/fs/cgroup/*/" + b.cgroup)
	for _, root := range append(roots, "/sys/fs/cgroup/"+b.cgroup) {
		errs = append(errs, removeCgroupTree(root))
	}
	return errors.Join(errs...)
}

// unmountUnder lazily unmounts every mount at or below dir, the latest first.
func unmountUnder(dir string) error {
	data, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return fmt.Errorf("read mountinfo: %w", err)
	}
	var errs []error
	lines := strings.Split(strings.TrimSpace(string(data)), "\n")
	for _, line := range slices.Backward(lines) {
		fields := strings.Fields(line)
		if len(fields) < 5 {
			continue
		}
		mnt := strings.ReplaceAll(fields[4], `\040`, " ")
		if mnt != dir && !strings.HasPrefix(mnt, dir+"/") {
			continue
		}
		if err := unix.Unmount(mnt, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) {
			errs = append(errs, fmt.Errorf("unmount %s: %w", mnt, err))
		}
	}
	return errors.Join(errs...)
}

// removeCgroupTree kills whatever still runs in a cgroup tree and removes the tree, leaves first.
func removeCgroupTree(dir string) error {
	entries, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	var errs []error
	for _, e := range entries {
		if e.IsDir() {
			errs = append(errs, removeCgroupTree(filepath.Join(dir, e.Name())))
		}
	}
	for attempt := 0; ; attempt++ {
		for _, pid := range cgroupProcs(dir) {
			_ = unix.Kill(pid, unix.SIGKILL)
		}
		err := unix.Rmdir(dir)
		if err == nil || errors.Is(err, unix.ENOENT) {
			return errors.Join(errs...)
		}
		if attempt == 100 {
			return errors.Join(append(errs, fmt.Errorf("remove cgroup %s: %w", dir, err))...)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// cgroupProcs lists the pids in one cgroup, not in its children.
func cgroupProcs(dir string) []int {
	data, _ := os.ReadFile(filepath.Join(dir, "cgroup.procs"))
	var pids []int
	for _, f := range strings.Fields(string(data)) {
		if pid, err := strconv.Atoi(f); err == nil {
			pids = append(pids, pid)
		}
	}
	return pids
}
