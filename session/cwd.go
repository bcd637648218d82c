package session

import (
	"fmt"
	"os"
	"runtime"

	"golang.org/x/sys/unix"
)

// shellCwd reads the current directory of a session's shell from /proc. The kernel lets only
// a process with the shell's own ids (or CAP_SYS_PTRACE, which sandboxes do not have) read
// another process's cwd, so for a shell that runs as another user the read is made with the
// filesystem ids switched to the shell's user, on a thread of its own.
func shellCwd(pid int, cred credential) (string, error) {
	link := fmt.Sprintf("/proc/%d/cwd", pid)
	if cred.uid == os.Geteuid() && cred.gid == os.Getegid() {
		return os.Readlink(link)
	}
	type result struct {
		cwd string
		err error
	}
	done := make(chan result, 1)
	go func() {
		// The thread's ids are never switched back: it stays locked to this goroutine and
		// ends with it, so nothing else ever runs with them.
		runtime.LockOSThread()
		_ = unix.Setfsgid(cred.gid)
		_ = unix.Setfsuid(cred.uid)
		cwd, err := os.Readlink(link)
		done <- result{cwd, err}
	}()
	r := <-done
	return r.cwd, r.err
}
