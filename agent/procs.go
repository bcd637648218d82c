package agent

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"runtime"
	"sync"

	"golang.org/x/sys/unix"

	"github.com/nsbox/nsbox/session"
)

// procTable starts processes and is the only place that waits for them. As PID 1 the agent
// must reap every process that ends in the sandbox, its own children and re-parented orphans
// alike, so one reaper calls wait4(-1) and hands each status to whoever started that pid.
// Starting and registering happen under the same lock the reaper takes, so no exit can be
// reaped before its waiter exists.
type procTable struct {
	mu      sync.Mutex
	waiters map[int]chan unix.WaitStatus
	// confine, when set, gives each started process a Landlock domain of its own
	// (landlock.go).
	confine *confinement
	// caught, when set, is closed once the agent catches the signals that would end it (Run):
	// no process starts before. Unset (tests: the agent is not PID 1), processes start at once.
	caught <-chan struct{}
	// work and home, when set, are the tasks files of the cgroup that carries the sandbox's
	// pids limit (a child of the container's, in the pids hierarchy) and of the container's
	// own, opened by the daemon: every process is forked from a thread moved into work first and
	// home again after, so the sandbox's processes count against the limit and the agent's own
	// threads do not (a fork bomb at the limit left the Go runtime unable to make a thread, and
	// it aborts then). Threads the runtime makes while a locked thread runs are made by its
	// template thread, at home.
	work, home *os.File
}

func newProcTable() *procTable {
	return &procTable{waiters: map[int]chan unix.WaitStatus{}}
}

// childOOMScoreAdj is the OOM score adjustment of every process the agent starts (sessions'
// shells, processes, code contexts, git) and so, inherited, of everything in the sandbox but
// the agent: the kernel's OOM killer, in the sandbox's memory cgroup or the host's, picks them
// before the agent, whose own score cannot be lowered without CAP_SYS_RESOURCE on the host.
// Raising needs no privilege; a process may lower its own back only as far as its
// oom_score_adj_min, inherited from the agent (docs/threat-model.md).
const childOOMScoreAdj = "1000"

// start starts a process and returns its pid and a channel that receives its exit status;
// private, when not nil, is a session's private folder, which the process gets at
// session.PrivateFD.
func (t *procTable) start(path string, argv []string, attr *os.ProcAttr, private *os.File) (int, <-chan unix.WaitStatus, error) {
	if t.caught != nil {
		<-t.caught
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	var pid int
	var err error
	if t.confine == nil && private == nil && t.work == nil {
		pid, err = startProcess(path, argv, attr)
	} else {
		// The child inherits the Landlock domain, the descriptor table and the cgroups of the
		// thread that forks it: a thread of its own, readied (forkThread). A thread that took a
		// domain or a table of its own ends with its goroutine, so the agent itself stays
		// unconfined and its own table as it was; one that only moved cgroups moves back.
		done := make(chan struct{})
		go func() {
			defer close(done)
			runtime.LockOSThread()
			if err = t.forkThread(private); err == nil {
				pid, err = startProcess(path, argv, attr)
			}
			// Home again, also before the thread ends: one that cannot go home is not reused.
			if t.goHome() && t.confine == nil && private == nil {
				runtime.UnlockOSThread()
			}
		}()
		<-done
	}
	if err != nil {
		return 0, nil, err
	}
	// Set once the program runs (Go has no hook between fork and exec): what it forks in the
	// first instant keeps the agent's score. The child is not reaped before (t.mu is held); one
	// that is gone already may answer ESRCH.
	err = os.WriteFile(fmt.Sprintf("/proc/%d/oom_score_adj", pid), []byte(childOOMScoreAdj), 0)
	if err != nil && !errors.Is(err, unix.ESRCH) {
		slog.Warn("raise a process's OOM score", "pid", pid, "err", err)
	}
	ch := make(chan unix.WaitStatus, 1)
	t.waiters[pid] = ch
	return pid, ch, nil
}

// forkThread readies the locked thread that is to fork a process: it enters the process's
// Landlock domain (when the agent confines) and, given a private folder, takes a descriptor
// table of its own holding the folder at session.PrivateFD, not close-on-exec, which the
// child inherits. Handing the folder over in the process's list of files instead would take
// a list up to PrivateFD: ~24 kB of allocations per start (the list and os.StartProcess's two
// copies), which an agent that never collects would keep.
func (t *procTable) forkThread(private *os.File) error {
	if t.work != nil {
		if err := moveThread(t.work); err != nil {
			return fmt.Errorf("move the forking thread into the sandbox's pids cgroup: %w", err)
		}
	}
	if t.confine != nil {
		if err := t.confine.restrict(private); err != nil {
			return err
		}
	}
	if private == nil {
		return nil
	}
	if err := unix.Unshare(unix.CLONE_FILES); err != nil {
		return fmt.Errorf("take a descriptor table of its own: %w", err)
	}
	if err := unix.Dup3(int(private.Fd()), session.PrivateFD, 0); err != nil {
		return fmt.Errorf("put the private folder at descriptor %d: %w", session.PrivateFD, err)
	}
	return nil
}

// goHome moves the calling thread back into the container's pids cgroup, and says whether it
// is there (it is where it always was without a work cgroup).
func (t *procTable) goHome() bool {
	if t.work == nil {
		return true
	}
	if err := moveThread(t.home); err != nil {
		slog.Warn("move the forking thread back into the agent's pids cgroup; it ends instead", "err", err)
		return false
	}
	return true
}

// moveThread moves the calling thread into the cgroup of a tasks file. The kernel checks the
// credentials the file was opened with (the daemon's): nothing in the sandbox may write
// cgroupfs. It writes 0, the calling thread, not its id: the kernel then moves it without
// taking the rwsem that every fork and exit on the host reads, whose writer waits for an RCU
// grace period when none took it within the last one (5–15 ms on the development machine:
// every process an agent idle for a while started waited that long; docs/benchmarks.md,
// "Session 23").
func moveThread(tasks *os.File) error {
	_, err := tasks.WriteAt([]byte("0"), 0)
	return err
}

// startProcess starts a process and drops the handle os.StartProcess keeps (a pidfd, opened
// in the descriptor table of the thread that forked: it is closed on that thread); the
// reaper, not os.Process, waits for it.
func startProcess(path string, argv []string, attr *os.ProcAttr) (int, error) {
	p, err := os.StartProcess(path, argv, attr)
	if err != nil {
		return 0, err
	}
	pid := p.Pid
	if err := p.Release(); err != nil {
		return 0, fmt.Errorf("release process handle: %w", err)
	}
	return pid, nil
}

// reap collects every process that has ended.
func (t *procTable) reap() {
	t.mu.Lock()
	defer t.mu.Unlock()
	for {
		var ws unix.WaitStatus
		pid, err := unix.Wait4(-1, &ws, unix.WNOHANG, nil)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil || pid <= 0 {
			return
		}
		if ch, ok := t.waiters[pid]; ok {
			ch <- ws
			delete(t.waiters, pid)
		}
	}
}

// waitAll blocks until the agent has no children left.
func (t *procTable) waitAll() {
	for {
		var ws unix.WaitStatus
		t.mu.Lock()
		pid, err := unix.Wait4(-1, &ws, 0, nil)
		if ch, ok := t.waiters[pid]; ok && err == nil {
			ch <- ws
			delete(t.waiters, pid)
		}
		t.mu.Unlock()
		if errors.Is(err, unix.ECHILD) {
			return
		}
	}
}
