package nsbox

import (
	"os"

	"golang.org/x/sys/unix"

	"github.com/nsbox/nsbox/api"
)

// watchAgent marks a sandbox failed as soon as its agent (PID 1) exits by itself, so the API
// never shows a dead sandbox as running. It waits on a pidfd through Go's poller: a parked
// goroutine per sandbox, no thread, no polling.
func (r *Runtime) watchAgent(id string, pid int) {
	fd, err := unix.PidfdOpen(pid, unix.PIDFD_NONBLOCK)
	if err != nil {
		r.agentExited(id, pid)
		return
	}
	pidfd := os.NewFile(uintptr(fd), "pidfd")
	conn, err := pidfd.SyscallConn()
	if err != nil {
		pidfd.Close()
		r.log.Warn("cannot watch agent", "sandbox", id, "err", err)
		return
	}
	go func() {
		defer pidfd.Close()
		// The callback runs when the poller reports the pidfd readable, which is when the process exits.
		_ = conn.Read(func(fd uintptr) bool {
			n, _ := unix.Poll([]unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}, 0)
			return n > 0
		})
		r.agentExited(id, pid)
	}()
}

// agentExited records that a sandbox's agent is gone, unless the sandbox is being removed (or
// is already gone, or is another sandbox by now with the same id).
func (r *Runtime) agentExited(id string, pid int) {
	release, err := r.claim(id, claimRecord)
	if err != nil {
		r.log.Warn("sandbox's agent exited, but its id stayed claimed; not recorded", "sandbox", id, "err", err)
		return
	}
	defer release()
	rec, err := r.store.Get(id)
	if err != nil || rec.Status != api.StatusRunning || rec.PID != pid {
		return
	}
	rec.Status, rec.Error, rec.PID = api.StatusFailed, "its agent (PID 1) exited; everything in the sandbox was stopped", 0
	if err := r.store.Put(rec); err != nil {
		r.log.Error("record failed sandbox", "sandbox", id, "err", err)
		return
	}
	r.forgetAgent(rec.container())
	r.log.Warn("sandbox failed: its agent exited", "sandbox", id, "pid", pid)
}
