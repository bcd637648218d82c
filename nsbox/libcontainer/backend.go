// Package libcontainer is the runtime backend (package backend) built on runc's libcontainer:
// each container is a libcontainer container on an overlay root, in its own mount, pid, uts,
// ipc, net and cgroup namespaces, with cgroup limits, seccomp, reduced capabilities and masked
// /proc paths, and the nsbox binary bind-mounted read-only as its PID 1, the agent.
package libcontainer

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	runc "github.com/opencontainers/runc/libcontainer"
	"golang.org/x/sys/unix"

	"github.com/nsbox/nsbox/internal/pidwait"
	"github.com/nsbox/nsbox/nsbox/backend"
	"github.com/nsbox/nsbox/rootfs"
)

// Config is where the backend keeps its state and what every container gets.
type Config struct {
	// StateRoot is libcontainer's state directory (e.g. /run/nsbox/containers). It must not be
	// inside the directory of AgentBin: libcontainer would copy that whole directory on
	// every start.
	StateRoot string
	// RunDir holds one directory per container (e.g. /run/nsbox/sandboxes/<id>): the agent's
	// socket and log, and the mount point of its root while it starts.
	RunDir string
	// FilesDir holds one directory per container for files bound into it (in the daemon's
	// stage, nsbox.StagedFiles, so that mountinfo names no host path): its cpu/online list.
	FilesDir string
	// AgentBin is the host path of the nsbox binary, mounted into containers as the agent.
	AgentBin string
	// InitBin, when not "", is the host path of nsbox-init, which a container's init (nsbox
	// started as "nsbox init") executes in place of itself (cmd/nsbox/runcinit.go): its name
	// must start with InitBinPrefix.
	InitBin      string
	CgroupParent string
	// Seccomp has every container's agent load the sandboxes' seccomp filter (seccompProgram).
	Seccomp bool
	// UserNS says containers will have user namespaces: New checks that the host can.
	UserNS bool
	Log    *slog.Logger
}

// checkTraversable refuses a run dir that a container's root, an unprivileged host uid in its
// user namespace, cannot reach (runc's init mounts the container's root from under it): every
// directory above it must let others search it.
func checkTraversable(runDir string) error {
	for dir := filepath.Dir(runDir); ; dir = filepath.Dir(dir) {
		fi, err := os.Stat(dir)
		if err != nil {
			return fmt.Errorf("check the run dir's parents: %w", err)
		}
		if fi.Mode().Perm()&0o001 == 0 {
			return fmt.Errorf("sandboxes' user namespaces cannot reach %s: %s is mode %04o; give it o+x (chmod o+x %s) or choose another --run-dir",
				runDir, dir, fi.Mode().Perm(), dir)
		}
		if dir == "/" {
			return nil
		}
	}
}

// Backend starts and finds libcontainer containers.
type Backend struct {
	cfg Config
	// starting holds a token for each start under way: at most two per CPU (Start).
	starting chan struct{}
	cpus     *cpuSets
	// priming is set while WillStart's move waits in the kernel (attachprime.go).
	priming atomic.Bool
	// pids is the pids hierarchy's mount point, "" when it is not a cgroup v1 one (workcgroup.go);
	// memory the memory hierarchy's (cgroup v2: the unified one), for OOM notifications.
	pids, memory string
	// cgroupView are the host's cgroup v1 hierarchies, which a started container is shown
	// from the host (cgroupview.go); nil on a cgroup v2 host.
	cgroupView []cgroupHierarchy
}

var _ backend.Backend = (*Backend)(nil)

// New returns a backend with the config.
func New(cfg Config) (*Backend, error) {
	if cfg.InitBin != "" && !strings.HasPrefix(filepath.Base(cfg.InitBin), InitBinPrefix) {
		return nil, fmt.Errorf("init binary %s: its name must start with %s", cfg.InitBin, InitBinPrefix)
	}
	if rel, err := filepath.Rel(filepath.Dir(cfg.AgentBin), cfg.StateRoot); err == nil && !strings.HasPrefix(rel, "..") {
		return nil, fmt.Errorf("state dir %s must not be inside the directory of the nsbox binary %s", cfg.StateRoot, cfg.AgentBin)
	}
	if cfg.UserNS {
		if err := os.MkdirAll(cfg.RunDir, 0o711); err != nil {
			return nil, fmt.Errorf("make run dir: %w", err)
		}
		if err := checkTraversable(cfg.RunDir); err != nil {
			return nil, err
		}
		if err := rootfs.CheckIDMappedOverlay(cfg.RunDir); err != nil {
			return nil, fmt.Errorf("user namespaces cannot work on this host (they need id-mapped mounts under overlayfs: Linux 5.19 or later, and file systems for nsbox's state and images that support id-mapped mounts): %w; run the daemon with --userns=false", err)
		}
	}
	if cfg.Seccomp {
		if _, err := seccompProgram(); err != nil {
			return nil, err
		}
	}
	view, err := cgroupHierarchies()
	if err != nil {
		return nil, err
	}
	return &Backend{cfg: cfg, starting: make(chan struct{}, 2*runtime.NumCPU()), cpus: newCPUSets(cfg.CgroupParent),
		pids: pidsHierarchy(), memory: hierarchy("memory"), cgroupView: view}, nil
}

// RunDir is the directory of a container's host-side files.
func (b *Backend) RunDir(id string) string { return filepath.Join(b.cfg.RunDir, id) }

func (b *Backend) agentSocket(id string) string { return filepath.Join(b.RunDir(id), "agent.sock") }
func (b *Backend) rootMount(id string) string   { return filepath.Join(b.RunDir(id), "rootfs") }
func (b *Backend) cpusOnline(id string) string {
	return filepath.Join(b.cfg.FilesDir, id, "cpus-online")
}

// Start mounts a new container's root, starts the container with the agent as PID 1 and
// returns once the agent runs. On failure nothing of it is left.
//
// A start is CPU work (runc's init, ~50 mounts, the agent's runtime; ~115 ms of CPU here under
// a burst) and blocks its thread in runc's handshakes with the container's init, so at most two
// per CPU run at once: more only share the same CPUs (every create of a burst then answers at
// its end) and each holds a thread.
func (b *Backend) Start(ctx context.Context, spec backend.Spec) (backend.Instance, error) {
	select {
	case b.starting <- struct{}{}:
	case <-ctx.Done():
		return nil, fmt.Errorf("wait to start: %w", ctx.Err())
	}
	defer func() { <-b.starting }()
	inst, err := b.start(spec)
	if err != nil {
		if derr := b.Destroy(spec.ID); derr != nil {
			b.cfg.Log.Error("clean up after failed start", "container", spec.ID, "err", derr)
		}
		return nil, err
	}
	return inst, nil
}

func (b *Backend) start(spec backend.Spec) (*instance, error) {
	began := time.Now()
	runDir := b.RunDir(spec.ID)
	if err := os.MkdirAll(runDir, 0o700); err != nil {
		return nil, fmt.Errorf("make run dir: %w", err)
	}
	if spec.IDs.Enabled() {
		// runc's init, as the container's root, reaches its root mount through this dir.
		if err := os.Chown(runDir, int(spec.IDs.Host), int(spec.IDs.Host)); err != nil {
			return nil, fmt.Errorf("give the run dir to the container's root: %w", err)
		}
	}
	// The overlay is mounted (in a thread of its own in the user namespace, 1-1.5 ms) while the
	// listener and files below are made, on the daemon's other CPU: only the cwd, RootMounts
	// and libcontainer need it. Its mount point exists first (libcontainer's checks).
	merged := b.rootMount(spec.ID)
	if err := os.MkdirAll(merged, 0o755); err != nil {
		return nil, fmt.Errorf("make root mount point: %w", err)
	}
	mounting := make(chan error, 1)
	go func() { mounting <- rootfs.MountOverlay(spec.Layers, spec.UpperDir, spec.WorkDir, merged, spec.IDs) }()
	mounted := sync.OnceValue(func() error { return <-mounting })
	// Once the container runs, its mount namespace holds the root; the host needs no mount.
	defer func() {
		if mounted() != nil {
			return
		}
		if err := rootfs.Detach(merged); err != nil {
			b.cfg.Log.Warn("detach container root", "container", spec.ID, "err", err)
		}
	}()

	// The agent's listener is made here and handed over as fd 3: its path is on the host only.
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: b.agentSocket(spec.ID), Net: "unix"})
	if err != nil {
		return nil, fmt.Errorf("listen for agent: %w", err)
	}
	ln.SetUnlinkOnClose(false)
	lnFile, err := ln.File()
	ln.Close()
	if err != nil {
		return nil, fmt.Errorf("agent listener fd: %w", err)
	}
	defer lnFile.Close()
	logFile, err := os.OpenFile(filepath.Join(runDir, "agent.log"), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return nil, fmt.Errorf("open agent log: %w", err)
	}
	defer logFile.Close()
	extra := []*os.File{lnFile}
	if b.cfg.InitBin != "" {
		// The init's descriptor InitBinFD: the listener is fd 3, the first of ExtraFiles.
		initBin, err := os.OpenFile(b.cfg.InitBin, unix.O_PATH|unix.O_CLOEXEC, 0)
		if err != nil {
			return nil, fmt.Errorf("open the init binary: %w", err)
		}
		defer initBin.Close()
		extra = append(extra, initBin)
	}

	args := []string{AgentPath, "agent", "--listen-fd", "3"}
	if b.cfg.Seccomp {
		prog, err := seccompProgram() // made by New
		if err != nil {
			return nil, err
		}
		args = append(args, "--seccomp-fd", strconv.Itoa(3+len(extra)))
		extra = append(extra, prog)
	}
	if spec.AgentConfig != nil {
		cfg, err := memFile("agent-config", spec.AgentConfig)
		if err != nil {
			return nil, fmt.Errorf("agent config: %w", err)
		}
		defer cfg.Close()
		args = append(args, "--config-fd", strconv.Itoa(3+len(extra)))
		extra = append(extra, cfg)
	}

	if spec.PrivateStore != "" {
		store, err := openDetached(spec.PrivateStore)
		if err != nil {
			return nil, fmt.Errorf("private store: %w", err)
		}
		defer store.Close()
		args = append(args, "--private-fd", strconv.Itoa(3+len(extra)))
		extra = append(extra, store)
	}

	prepared := time.Since(began)
	if err := mounted(); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(filepath.Join(merged, spec.Cwd), 0o755); err != nil {
		return nil, fmt.Errorf("make cwd %s: %w", spec.Cwd, err)
	}
	if spec.RootMounts != nil {
		layers, err := spec.RootMounts(merged)
		if err != nil {
			return nil, err
		}
		spec.Mounts = append(layers, spec.Mounts...)
	}
	rooted := time.Since(began)
	cgroup := cgroupPath(b.cfg.CgroupParent, spec.ID)
	work := workCgroup(b.pids, cgroup)
	cs := configSpec{
		Spec: spec, Rootfs: merged, AgentBin: b.cfg.AgentBin, CgroupPath: cgroup, WorkCgroup: work,
		CPUs: b.cpus.pick(spec.ID, spec.Limits), CPUsOnline: b.cpusOnline(spec.ID),
		CgroupMount: b.cgroupView == nil,
	}
	if err := writeCPUsOnline(cs.CPUsOnline, cs.CPUs); err != nil {
		return nil, err
	}
	if spec.IDs.Enabled() {
		// The overlay's lowers were mapped with the same namespace: it exists already. The
		// container joins it, and runc maps its binds with it.
		userns, err := rootfs.UserNS(spec.IDs)
		if err != nil {
			return nil, err
		}
		cs.UserNS = fmt.Sprintf("/proc/%d/fd/%d", os.Getpid(), userns.Fd())
	}
	config := containerConfig(cs)
	c, err := runc.Create(b.cfg.StateRoot, spec.ID, config)
	if err != nil {
		return nil, fmt.Errorf("create container: %w", err)
	}
	// The start's first cgroup work comes as late as it can (attachprime.go).
	if work != "" {
		tasks, err := makeWorkCgroup(work, spec.Limits.Pids)
		if err != nil {
			return nil, err
		}
		for _, f := range tasks {
			defer f.Close()
		}
		args = append(args, "--pids-cgroup-fds", strconv.Itoa(3+len(extra)))
		extra = append(extra, tasks...)
	}
	created := time.Since(began)
	proc := &runc.Process{
		Args:       args,
		Env:        agentEnv(),
		Cwd:        spec.Cwd,
		Stdout:     logFile,
		Stderr:     logFile,
		ExtraFiles: extra,
		Init:       true,
	}
	if err := c.Run(proc); err != nil {
		return nil, fmt.Errorf("start agent: %w; agent log: %q", err, tail(logFile.Name(), 2048))
	}
	// files: the run dir, the listener and the config, while the overlay is mounted; root:
	// the wait for it after those, the cwd and RootMounts; create: the user namespace, the
	// config, libcontainer's checks and state dir, the work cgroup; run: its init, from the
	// exec of nsbox init to that of the agent (cgroups, namespaces, mounts).
	b.cfg.Log.Debug("libcontainer start", "container", spec.ID, "files", prepared, "root", rooted-prepared,
		"create", created-rooted, "run", time.Since(began)-created)
	pid, err := proc.Pid()
	if err != nil {
		return nil, fmt.Errorf("agent pid: %w", err)
	}
	// The agent is this daemon's child until the daemon exits: the instance reaps it when it ends.
	inst, err := b.newInstance(c, pid, func() { _, _ = proc.Wait() })
	if err != nil || b.cgroupView == nil {
		return inst, err
	}
	if err := inst.mountCgroupView(b.cgroupView); err != nil {
		inst.Kill()
		inst.Close()
		return nil, err
	}
	return inst, nil
}

// cloneMount makes a copy of the mount at path (open_tree's clone, attached nowhere) with the
// mount attributes attrs set, and returns its descriptor.
func cloneMount(path string, attrs uint64) (int, error) {
	tree, err := unix.OpenTree(unix.AT_FDCWD, path, unix.OPEN_TREE_CLONE|unix.OPEN_TREE_CLOEXEC)
	if err != nil {
		return -1, fmt.Errorf("clone the mount of %s: %w", path, err)
	}
	attr := unix.MountAttr{Attr_set: attrs}
	if err := unix.MountSetattr(tree, "", unix.AT_EMPTY_PATH, &attr); err != nil {
		unix.Close(tree)
		return -1, fmt.Errorf("set the attributes of a mount of %s: %w", path, err)
	}
	return tree, nil
}

// openDetached opens directory dir as the root of a copy of its mount that is attached
// nowhere (open_tree's clone), without setuid files or devices: ".." of the directory is
// itself, whatever mount namespace holds the descriptor. The copy goes when the last
// descriptor of it is closed.
func openDetached(dir string) (*os.File, error) {
	tree, err := cloneMount(dir, unix.MOUNT_ATTR_NOSUID|unix.MOUNT_ATTR_NODEV)
	if err != nil {
		return nil, err
	}
	defer unix.Close(tree)
	fd, err := unix.Openat(tree, ".", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", dir, err)
	}
	return os.NewFile(uintptr(fd), dir), nil
}

// memFile is an unlinked in-memory file holding data, read from its start.
func memFile(name string, data []byte) (*os.File, error) {
	fd, err := unix.MemfdCreate(name, unix.MFD_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("memfd_create: %w", err)
	}
	f := os.NewFile(uintptr(fd), name)
	if _, err := f.Write(data); err != nil {
		f.Close()
		return nil, fmt.Errorf("write %s: %w", name, err)
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		f.Close()
		return nil, fmt.Errorf("rewind %s: %w", name, err)
	}
	return f, nil
}

// InitBinFD is the descriptor at which a container's init finds Config.InitBin, and
// InitBinPrefix how that file's name starts (cmd/nsbox/runcinit.go checks both).
const (
	InitBinFD     = 4
	InitBinPrefix = "nsbox-init-"
)

// defaultPath is the PATH an agent starts with.
const defaultPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// agentEnv is the environment an agent starts with: the defaults, under the hostname and the
// sandbox's own env, which the agent gets when its container is bound to a sandbox.
func agentEnv() []string {
	env := map[string]string{"PATH": defaultPath, "HOME": "/root", "TERM": "xterm-256color"}
	var out []string
	for _, k := range slices.Sorted(maps.Keys(env)) {
		out = append(out, k+"="+env[k])
	}
	return out
}

// Load finds a container by id.
func (b *Backend) Load(id string) (backend.Instance, error) {
	c, err := runc.Load(b.cfg.StateRoot, id)
	if errors.Is(err, runc.ErrNotExist) {
		return nil, backend.ErrNotExist
	}
	if err != nil {
		return nil, fmt.Errorf("load container %s: %w", id, err)
	}
	state, err := c.State()
	if err != nil {
		return nil, fmt.Errorf("container %s state: %w", id, err)
	}
	return b.newInstance(c, state.InitProcessPid, nil)
}

// Containers lists the containers with state, and those with only a run dir left.
func (b *Backend) Containers() ([]string, error) {
	seen := map[string]bool{}
	for _, dir := range []string{b.cfg.StateRoot, b.cfg.RunDir} {
		entries, err := os.ReadDir(dir)
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("list %s: %w", dir, err)
		}
		for _, e := range entries {
			seen[e.Name()] = true
		}
	}
	return slices.Sorted(maps.Keys(seen)), nil
}

// Destroy kills a container's processes and removes its container state, cgroup and root
// mount. It copes with every partial state a crash can leave.
func (b *Backend) Destroy(id string) error {
	defer b.cpus.forget(id)
	errs := []error{rootfs.Detach(b.rootMount(id))}
	c, err := runc.Load(b.cfg.StateRoot, id)
	switch {
	case err == nil:
		if state, err := c.State(); err == nil {
			killInit(state.InitProcessPid)
		}
		errs = append(errs, wrapErr("destroy container", c.Destroy()))
	default:
		// No (complete) container: remove whatever cgroup and state a crash left.
		if !errors.Is(err, runc.ErrNotExist) {
			errs = append(errs, fmt.Errorf("load container: %w", err))
		}
		errs = append(errs, removeCgroup(cgroupPath(b.cfg.CgroupParent, id)), os.RemoveAll(filepath.Join(b.cfg.StateRoot, id)))
	}
	return errors.Join(errs...)
}

// Release removes the cgroup parent, empty once every container is gone, from each hierarchy.
// One that still holds a cgroup (another daemon's, given the same parent) stays.
func (b *Backend) Release() error {
	return removeEmptyCgroup(cgroupPath(b.cfg.CgroupParent, ""))
}

// killInit kills a container's init (and with it its pid namespace) and waits for it to be gone.
func killInit(pid int) {
	if pid <= 0 {
		return
	}
	if pidfd, err := unix.PidfdOpen(pid, 0); err == nil {
		_ = unix.PidfdSendSignal(pidfd, unix.SIGKILL, nil, 0)
		_, _ = pidwait.Wait(pidfd, 10*time.Second)
		unix.Close(pidfd)
	}
}

// wrapErr wraps err with what failed, or is nil.
func wrapErr(what string, err error) error {
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	return nil
}

// tail returns up to the last n bytes of a file, for error messages.
func tail(path string, n int64) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	if fi, err := f.Stat(); err == nil && fi.Size() > n {
		_, _ = f.Seek(fi.Size()-n, 0)
	}
	data, _ := io.ReadAll(f)
	return strings.TrimSpace(string(data))
}
