package libcontainer

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/opencontainers/cgroups"
	runc "github.com/opencontainers/runc/libcontainer"
	"golang.org/x/sys/unix"

	sandboxfs "github.com/nsbox/nsbox/fs"
	"github.com/nsbox/nsbox/internal/lxcfs"
	"github.com/nsbox/nsbox/internal/pidwait"
	"github.com/nsbox/nsbox/nsbox/backend"
	"github.com/nsbox/nsbox/rootfs"
)

// instance is one libcontainer container. It holds a pidfd of the agent: a dead agent is
// noticed, and its pid is never taken for another process's while the pidfd is open.
type instance struct {
	// mu guards pidfd against Close while it is used.
	mu         sync.RWMutex
	c          *runc.Container
	pid        int
	pidfd      int // -1 when the agent was gone already when the instance was made
	cgroupPath string
	// work is the pids cgroup of the sandbox's processes ("": none; workcgroup.go).
	work   string
	socket string
	log    string
	// exited is done once the agent has exited (markExited, after it was reaped).
	exited     context.Context
	markExited context.CancelFunc
	// reap collects the agent's exit status once it has exited, when it is this daemon's child.
	reap func()
	cpus *cpuSets
	// memoryDir is its memory cgroup (cgroup v2: its cgroup), where its OOM notification is
	// registered (registerOOM); "" on a host without a memory hierarchy.
	memoryDir string
	// online is the file bound over the container's CPUsOnline.
	online string
	// stats are the cgroup files Stats reads, opened on its first call that can, closed by
	// Close.
	statsMu sync.Mutex
	stats   *cgroupFiles
	// oom is the container's OOM notification, registered when the instance is made (for a
	// start, on its thread of its own: the system calls may wait on the kernel's cgroup
	// locks) and removed by Kill and Close; oomErr is why there is none. closed says Close
	// was called (the files are not opened again). All under statsMu. onOOM is what a
	// notification calls (OnOOM).
	oom    *oomRegistration
	oomErr error
	closed bool
	onOOM  atomic.Pointer[func()]
}

// newInstance pins the agent at pid and starts watching for its exit; reap (nil when the agent
// is not this process's child) is called once it has exited.
func (b *Backend) newInstance(c *runc.Container, pid int, reap func()) (*instance, error) {
	inst := &instance{c: c, pid: pid, pidfd: -1, cgroupPath: c.Config().Cgroups.Path, work: existingWorkCgroup(b.pids, c.Config().Cgroups.Path),
		socket: b.agentSocket(c.ID()), log: filepath.Join(b.RunDir(c.ID()), "agent.log"), reap: reap, cpus: b.cpus,
		online: b.cpusOnline(c.ID())}
	if b.memory != "" {
		inst.memoryDir = filepath.Join(b.memory, inst.cgroupPath)
	}
	inst.exited, inst.markExited = context.WithCancel(context.Background())
	status, err := c.Status()
	if err == nil && (status == runc.Running || status == runc.Paused) && pid > 0 {
		inst.pidfd, err = unix.PidfdOpen(pid, 0)
		if err != nil {
			inst.pidfd = -1
		}
	}
	if inst.pidfd >= 0 {
		inst.registerOOM()
	} else {
		inst.oomErr = errors.New("its agent was not running")
	}
	inst.watch()
	return inst, nil
}

// registerOOM registers the container's OOM notification.
func (i *instance) registerOOM() {
	if i.memoryDir == "" {
		i.oomErr = errors.New("the host has no memory cgroup hierarchy")
		return
	}
	i.oom, i.oomErr = ooms.add(i.memoryDir, cgroups.IsCgroup2UnifiedMode(), func() {
		if f := i.onOOM.Load(); f != nil {
			(*f)()
		}
	})
}

// watch marks the instance exited when the agent exits, after reaping it. It waits on its own copy of the
// pidfd through Go's poller: a parked goroutine per container, no thread, no polling (a wait4
// per agent would hold a thread for each running sandbox).
func (i *instance) watch() {
	if i.pidfd < 0 {
		go i.exit()
		return
	}
	fd, err := unix.FcntlInt(uintptr(i.pidfd), unix.F_DUPFD_CLOEXEC, 0)
	if err == nil {
		err = unix.SetNonblock(fd, true)
	}
	if err != nil {
		go i.exit()
		return
	}
	pidfd := os.NewFile(uintptr(fd), "pidfd")
	conn, err := pidfd.SyscallConn()
	if err != nil {
		pidfd.Close()
		go i.exit()
		return
	}
	go func() {
		defer i.exit()
		defer pidfd.Close()
		// The callback runs when the poller reports the pidfd readable: the process has exited.
		_ = conn.Read(func(fd uintptr) bool { return pidwait.Exited(int(fd)) })
	}()
}

// exit reaps the agent when it is this daemon's child, and marks it exited.
func (i *instance) exit() {
	if i.reap != nil {
		i.reap()
	}
	i.markExited()
}

func (i *instance) ID() string                  { return i.c.ID() }
func (i *instance) PID() int                    { return i.pid }
func (i *instance) Exited() <-chan struct{}     { return i.exited.Done() }
func (i *instance) OnExit(f func()) func() bool { return context.AfterFunc(i.exited, f) }
func (i *instance) NetNS() string               { return fmt.Sprintf("/proc/%d/ns/net", i.pid) }

// IDs is the container's user namespace, as its config recorded it.
func (i *instance) IDs() rootfs.IDMap {
	m := i.c.Config().UIDMappings
	if len(m) != 1 || m[0].ContainerID != 0 {
		return rootfs.IDMap{}
	}
	return rootfs.IDMap{Host: uint32(m[0].HostID), Size: uint32(m[0].Size)}
}

// Alive reports whether the agent still runs (its pidfd is not readable yet).
func (i *instance) Alive() bool {
	i.mu.RLock()
	defer i.mu.RUnlock()
	return i.alive()
}

func (i *instance) alive() bool {
	// Through the signals that interrupt a poll: taken for dead by one, the agent failed a
	// create under load (pidwait).
	return i.pidfd >= 0 && !pidwait.Exited(i.pidfd)
}

// AgentLog is the end of the agent's log, for error messages.
func (i *instance) AgentLog() string { return tail(i.log, 2048) }

// DialAgent connects to the agent's socket, whose path exists on the host only.
func (i *instance) DialAgent(ctx context.Context) (net.Conn, error) {
	var d net.Dialer
	return d.DialContext(ctx, "unix", i.socket)
}

// SetHostname sets the hostname in the container's UTS namespace. A goroutine of its own does
// it on a locked thread, which enters that namespace and returns to its own before it is
// unlocked; if it cannot return, the thread ends with the goroutine.
func (i *instance) SetHostname(name string) error {
	i.mu.RLock()
	defer i.mu.RUnlock()
	if !i.alive() {
		return fmt.Errorf("the container's agent (pid %d) has exited", i.pid)
	}
	result := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		own, err := os.Open("/proc/thread-self/ns/uts")
		if err != nil {
			runtime.UnlockOSThread()
			result <- fmt.Errorf("open own uts namespace: %w", err)
			return
		}
		defer own.Close()
		if err := unix.Setns(i.pidfd, unix.CLONE_NEWUTS); err != nil {
			runtime.UnlockOSThread()
			result <- fmt.Errorf("enter sandbox uts namespace: %w", err)
			return
		}
		setErr := unix.Sethostname([]byte(name))
		if err := unix.Setns(int(own.Fd()), unix.CLONE_NEWUTS); err != nil {
			result <- fmt.Errorf("return from sandbox uts namespace: %w", err) // the thread stays locked
			return
		}
		runtime.UnlockOSThread()
		result <- wrapErr("set hostname", setErr)
	}()
	return <-result
}

// SetLimits changes the cgroup limits of the running container, and its cpuset to as many
// CPUs as the quota needs (and its cpu/online with it).
func (i *instance) SetLimits(lim backend.Limits) error {
	cfg := i.c.Config()
	cgroupsCopy := *cfg.Cgroups
	cpus := i.cpus.pick(i.ID(), lim)
	cgroupsCopy.Resources = resources(lim, i.work, cpus, cfg.Cgroups.Resources.Devices)
	cfg.Cgroups = &cgroupsCopy
	if i.work != "" {
		if err := setWorkPids(i.work, lim.Pids); err != nil {
			return err
		}
	}
	if err := i.c.Set(cfg); err != nil {
		return wrapErr("set limits", err)
	}
	return writeCPUsOnline(i.online, cpus)
}

// ShowLimits binds the LXCFS files of the mount at dir over the container's /proc and /sys
// files, in place of the views it has, in the container's mount namespace. The
// new mounts are clones made here, in the host's mount namespace, where dir is; read-only,
// and not id-mapped (FUSE cannot be): their files are nobody's in a user namespace. Bound
// by runc's init instead, as config mounts, they cost a cold start 1–2 ms more (its path
// checks ask LXCFS each time, docs/benchmarks.md "Session 13").
func (i *instance) ShowLimits(dir string) error {
	i.mu.RLock()
	defer i.mu.RUnlock()
	if !i.alive() {
		return backend.ErrExited
	}
	var trees []int
	defer func() {
		for _, fd := range trees {
			unix.Close(fd)
		}
	}()
	if dir != "" {
		for _, f := range lxcfs.Files {
			fd, err := cloneMount(filepath.Join(dir, f), unix.MOUNT_ATTR_RDONLY|unix.MOUNT_ATTR_NOSUID|unix.MOUNT_ATTR_NODEV|unix.MOUNT_ATTR_NOEXEC)
			if err != nil {
				return fmt.Errorf("lxcfs view %s: %w", f, err)
			}
			trees = append(trees, fd)
		}
	}
	return i.inNamespaces(unix.CLONE_NEWNS, func() error {
		for k, f := range lxcfs.Files {
			// Every view stacked there goes (a dead one is unmounted all the same); then
			// Unmount fails with EINVAL: f is the file of /proc or /sys again.
			for range 8 {
				if unix.Unmount(f, unix.MNT_DETACH) != nil {
					break
				}
			}
			if trees != nil {
				if err := unix.MoveMount(trees[k], "", unix.AT_FDCWD, f, unix.MOVE_MOUNT_F_EMPTY_PATH); err != nil {
					return fmt.Errorf("bind lxcfs view %s: %w", f, err)
				}
			}
		}
		return nil
	})
}

// inNamespaces runs fn in the container's namespaces ns (CLONE_NEWNS, and others), on a
// locked thread of a goroutine of its own that leaves this process's file system context;
// the thread ends with the goroutine. i.mu must be held (read).
func (i *instance) inNamespaces(ns int, fn func() error) error {
	result := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread has left the daemon's mount namespace
		if err := unix.Unshare(unix.CLONE_FS); err != nil {
			result <- fmt.Errorf("unshare file system context: %w", err)
			return
		}
		if err := unix.Setns(i.pidfd, ns); err != nil {
			result <- fmt.Errorf("enter the container's namespaces: %w", err)
			return
		}
		result <- fn()
	}()
	return <-result
}

// OpenRoot opens the root directory of the container as its agent sees it
// (/proc/<agent pid>/root). The pid is pinned by the instance's pidfd; the process must be
// PID 1 of its own pid namespace and live in the container's cgroup (nothing else on the host
// is both); and only if it is still alive after the root was opened was the root the one of
// the process that was checked.
func (i *instance) OpenRoot() (*sandboxfs.Root, error) {
	if !i.Alive() || !isContainerInit(i.pid, i.cgroupPath) {
		return nil, backend.ErrExited
	}
	root, err := sandboxfs.OpenRoot(fmt.Sprintf("/proc/%d/root", i.pid), i.IDs())
	if err != nil {
		return nil, err
	}
	if !i.Alive() {
		root.Close()
		return nil, backend.ErrExited
	}
	return root, nil
}

// isContainerInit reports whether the process pid is PID 1 in its pid namespace and a member
// of the cgroup at cgroupPath.
func isContainerInit(pid int, cgroupPath string) bool {
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return false
	}
	init := false
	for _, line := range strings.Split(string(status), "\n") {
		if rest, ok := strings.CutPrefix(line, "NSpid:"); ok {
			f := strings.Fields(rest)
			init = len(f) > 1 && f[len(f)-1] == "1"
		}
	}
	return init && inCgroup(pid, cgroupPath, false)
}

// inCgroup reports whether the process pid is a member of the cgroup at cgroupPath (in any
// hierarchy), or, with beneath, of it or a cgroup beneath it.
func inCgroup(pid int, cgroupPath string, beneath bool) bool {
	cgroups, err := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", pid))
	if err != nil {
		return false
	}
	for _, line := range strings.Split(string(cgroups), "\n") {
		if strings.HasSuffix(line, ":"+cgroupPath) || (beneath && strings.Contains(line, ":"+cgroupPath+"/")) {
			return true
		}
	}
	return false
}

// Stats reads the container's resource use from its cgroup.
func (i *instance) Stats() (backend.Stats, error) {
	files, err := i.statFiles()
	if err != nil {
		return backend.Stats{}, err
	}
	return files.read()
}

// OOMKills reads how many of the container's processes the OOM killer killed.
func (i *instance) OOMKills() (uint64, error) {
	files, err := i.statFiles()
	if err != nil {
		return 0, err
	}
	return files.oomKills()
}

// statFiles are the open cgroup files of the container's stats.
func (i *instance) statFiles() (*cgroupFiles, error) {
	i.statsMu.Lock()
	defer i.statsMu.Unlock()
	if i.closed {
		return nil, errClosed
	}
	if i.stats == nil {
		files, err := openStatFiles(i.cgroupPath)
		if err != nil {
			return nil, err
		}
		i.stats = files
	}
	return i.stats, nil
}

// OnOOM has f run, in a goroutine of its own, each time the kernel reports an OOM in the
// container's memory cgroup, until Kill or Close; OOMKills then tells how many processes the OOM
// killer killed. A second call replaces the first's f. It makes no system call: the
// notification was registered with the instance (~50 µs; not the 5 stats files, ~270 µs).
// kills is the OOM kill count of the cgroup then: 0 for a container this daemon started.
func (i *instance) OnOOM(f func()) (kills uint64, err error) {
	i.statsMu.Lock()
	defer i.statsMu.Unlock()
	switch {
	case i.closed:
		return 0, errClosed
	case i.oom == nil && i.oomErr == nil:
		return 0, nil // killed: nothing in it can run out of memory
	case i.oom == nil:
		return 0, fmt.Errorf("register for OOM notifications: %w", i.oomErr)
	}
	i.onOOM.Store(&f)
	return i.oom.killsAtStart, nil
}

// Processes lists the container's processes (its cgroup's).
func (i *instance) Processes() ([]int, error) {
	pids, err := i.c.Processes()
	return pids, wrapErr("list container processes", err)
}

// Freeze freezes every process of the container (cgroup freezer).
func (i *instance) Freeze() error { return wrapErr("freeze container", i.c.Pause()) }

// Thaw lets a frozen container run again.
func (i *instance) Thaw() error { return wrapErr("thaw container", i.c.Resume()) }

// SendKill sends SIGKILL to the agent and to each other process of the container, without
// waiting. The agent's death alone would kill the others only once its own exit is well along
// (its memory, files and namespaces released: milliseconds), and they would run until then.
// The container's processes are listed again until a pass finds none it did not kill: one
// forked before its parent was killed is in the cgroup by then. Each is pinned by a pidfd
// and signalled only if it is still in the container's cgroup (a pid read from the cgroup may
// be a host process's by the time it is used).
func (i *instance) SendKill() {
	i.mu.RLock()
	defer i.mu.RUnlock()
	defer func() { // nothing of it runs out of memory that is news any more
		i.statsMu.Lock()
		defer i.statsMu.Unlock()
		i.dropOOM()
	}()
	if !i.alive() {
		return
	}
	_ = unix.PidfdSendSignal(i.pidfd, unix.SIGKILL, nil, 0)
	killed := map[int]bool{i.pid: true}
	for {
		pids, err := i.c.Processes()
		if err != nil {
			return // the cgroup is gone: so are its processes
		}
		fresh := false
		for _, pid := range pids {
			if !killed[pid] {
				killed[pid], fresh = true, true
				killInCgroup(pid, i.cgroupPath)
			}
		}
		if !fresh {
			return
		}
	}
}

// killInCgroup sends SIGKILL to process pid if it is in the cgroup at cgroupPath or beneath
// it, in any hierarchy, once pinned.
func killInCgroup(pid int, cgroupPath string) {
	fd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		return // exited
	}
	defer unix.Close(fd)
	if inCgroup(pid, cgroupPath, true) {
		_ = unix.PidfdSendSignal(fd, unix.SIGKILL, nil, 0)
	}
}

// Kill kills the agent, and with it the container's pid namespace, and waits until it is gone.
func (i *instance) Kill() {
	i.mu.RLock()
	defer i.mu.RUnlock()
	if i.alive() {
		_ = unix.PidfdSendSignal(i.pidfd, unix.SIGKILL, nil, 0)
		_, _ = pidwait.Wait(i.pidfd, 10*time.Second)
	}
	// Nothing in it runs out of memory any more: the OOM notification goes before the removal
	// of its cgroup would fire it.
	i.statsMu.Lock()
	defer i.statsMu.Unlock()
	i.dropOOM()
}

// dropOOM removes the OOM notification, if any (OnOOM then has nothing to watch, and says so
// without an error). statsMu must be held.
func (i *instance) dropOOM() {
	if i.oom != nil {
		ooms.remove(i.oom)
		i.oom, i.oomErr = nil, nil
	}
}

// Close releases the pidfd and the cgroup files.
func (i *instance) Close() {
	i.mu.Lock()
	defer i.mu.Unlock()
	if i.pidfd >= 0 {
		unix.Close(i.pidfd)
		i.pidfd = -1
	}
	i.statsMu.Lock()
	defer i.statsMu.Unlock()
	i.closed = true
	if i.stats != nil {
		i.stats.close()
	}
	i.dropOOM()
}
