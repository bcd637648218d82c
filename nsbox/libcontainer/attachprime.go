package libcontainer

import (
	"errors"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"

	"github.com/opencontainers/cgroups"
	"golang.org/x/sys/unix"
)

// A start's wait for the kernel's grace period, moved off its way.
//
// The kernel moves a process into a cgroup (libcontainer writes the container's init into
// cgroup.procs of each hierarchy before the init may go on) under cgroup_threadgroup_rwsem, a
// per-CPU rwsem that every fork, exec and exit on the host takes for reading. Its writer waits
// for an RCU grace period first, unless another writer took it within the last grace period:
// 5–15 ms on the development machine, the largest single wait of a cold start
// (docs/benchmarks.md, "Session 23"). WillStart has a thread of the daemon take the rwsem as
// soon as a start is known to come (it moves itself into the cgroup it is in already, which
// changes nothing), so that the grace period passes while the daemon prepares the container's
// storage, and the init's moves find the writers' way open. The move holds the kernel's cgroup
// mutex until the grace period has passed, as the init's first move would: the start's own
// cgroup work (makeWorkCgroup, then libcontainer's) comes as late in Start as it can.

// WillStart begins, in the background, what the next Start's cgroup moves would wait for. One
// move at a time: a move covers every start that comes within its grace period, and each one
// blocks a thread in the kernel meanwhile.
func (b *Backend) WillStart() {
	if b.memory == "" || !b.priming.CompareAndSwap(false, true) {
		return
	}
	go func() {
		defer b.priming.Store(false)
		// The thread is not given back to the runtime: it ends with the goroutine (unless it is
		// the main one, which Go parks instead). Go keeps every thread it has, and the runtime
		// may have started another to run what this one's wait held up: the daemon would keep
		// one thread more after a burst of starts. A thread whose cgroup another process changed
		// meanwhile ends with it too.
		runtime.LockOSThread()
		if err := moveThreadToItsCgroup(b.memory, cgroups.IsCgroup2UnifiedMode()); err != nil {
			b.cfg.Log.Debug("take the cgroup attach lock ahead of a start", "err", err)
		}
	}()
}

// moveThreadToItsCgroup writes the calling thread, locked to it, into its own cgroup's threads
// file in the hierarchy mounted at root: the memory controller's (cgroup v1), or a unified one
// (v2).
func moveThreadToItsCgroup(root string, v2 bool) error {
	own, err := cgroups.ParseCgroupFile("/proc/thread-self/cgroup")
	if err != nil {
		return err
	}
	dir, file := own["memory"], "tasks"
	if v2 {
		dir, file = own[""], "cgroup.threads"
	}
	if dir == "" || slices.Contains(strings.Split(dir, "/"), "..") {
		return errors.New("the thread's cgroup is not in this cgroup namespace's hierarchy")
	}
	f, err := os.OpenFile(filepath.Join(root, dir, file), os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	_, err = f.WriteString(strconv.Itoa(unix.Gettid()))
	return err
}
