package agent

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"runtime"
	"sync"

	"golang.org/x/sys/unix"
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

// start starts a process and returns its pid and a channel that receives its exit status.
func (t *procTable) start(path string, argv []string, attr *os.ProcAttr) (int, <-chan unix.WaitStatus, error) {
	if t.caught != nil {
		<-t.caught
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	var p *os.Process
	var err error
	if t.confine == nil {
		p, err = os.StartProcess(path, argv, attr)
	} else {
		// The child inherits the domain of the thread that forks it: a thread of its own,
		// restricted and then ended with its goroutine, so the agent itself stays unconfined.
		done := make(chan struct{})
		go func() {
			defer close(done)
			runtime.LockOSThread() // never unlocked: the thread is in the child's domain
			if err = t.confine.restrict(privateOf(attr)); err == nil {
				p, err = os.StartProcess(path, argv, attr)
			}
		}()
		<-done
	}
	if err != nil {
		return 0, nil, err
	}
	pid := p.Pid
	// Set once the program runs (Go has no hook between fork and exec): what it forks in the
	// first instant keeps the agent's score. The child is not reaped before (t.mu is held); one
	// that is gone already may answer ESRCH.
	err = os.WriteFile(fmt.Sprintf("/proc/%d/oom_score_adj", pid), []byte(childOOMScoreAdj), 0)
	if err != nil && !errors.Is(err, unix.ESRCH) {
		slog.Warn("raise a process's OOM score", "pid", pid, "err", err)
	}
	// The reaper, not os.Process, waits for it; drop the handle's resources.
	if err := p.Release(); err != nil {
		return 0, nil, fmt.Errorf("release process handle: %w", err)
	}
	ch := make(chan unix.WaitStatus, 1)
	t.waiters[pid] = ch
	return pid, ch, nil
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
