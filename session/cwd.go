package session

import (
	"fmt"
	"os"
	"runtime"

	"golang.org/x/sys/unix"
)

// shellCwd reads the current directory of a session's shell from /proc, and the id of the
// mount it is on. The kernel lets only a process with the shell's own ids (or CAP_SYS_PTRACE,
// which sandboxes do not have) read another process's cwd, so for a shell that runs as
// another user the read is made with the filesystem ids switched to the shell's user, on a
// thread of its own.
func shellCwd(pid int, cred credential) (string, uint64, error) {
	link := fmt.Sprintf("/proc/%d/cwd", pid)
	read := func() (string, uint64, error) {
		cwd, err := os.Readlink(link)
		if err != nil {
			return "", 0, err
		}
		var st unix.Statx_t
		if err := unix.Statx(unix.AT_FDCWD, link, 0, unix.STATX_MNT_ID, &st); err != nil {
			return "", 0, fmt.Errorf("statx %s: %w", link, err)
		}
		return cwd, st.Mnt_id, nil
	}
	if cred.uid == os.Geteuid() && cred.gid == os.Getegid() {
		return read()
	}
	type result struct {
		cwd string
		mnt uint64
		err error
	}
	done := make(chan result, 1)
	go func() {
		// The thread's ids are never switched back: it stays locked to this goroutine and
		// ends with it, so nothing else ever runs with them.
		runtime.LockOSThread()
		_ = unix.Setfsgid(cred.gid)
		_ = unix.Setfsuid(cred.uid)
		cwd, mnt, err := read()
		done <- result{cwd, mnt, err}
	}()
	r := <-done
	return r.cwd, r.mnt, r.err
}

// CheckCwd is nil when cwd can be the working directory of a new process (one of the session
// whose private folder is dir, linked at link, as ChdirPath takes them; "" and nil for none),
// else an ErrInvalid that says why: cwd does not exist, or is not a directory. A process
// changes to its directory just before it runs its program, and the kernel's error would then
// name the program ("fork/exec /usr/bin/bash: no such file or directory"), so the places that
// start processes check first. The check is the agent's, as root: a directory that the
// process's user may not enter still fails the start itself. An empty cwd (the process stays
// in the agent's directory) is fine.
func CheckCwd(cwd, link string, dir *os.File) error {
	if cwd == "" {
		return nil
	}
	var st unix.Stat_t
	err := unix.Stat(ChdirPath(cwd, link, dir), &st)
	switch {
	case err == unix.ENOENT:
		return fmt.Errorf("%w: cwd %q does not exist", ErrInvalid, cwd)
	case err == unix.ENOTDIR || (err == nil && st.Mode&unix.S_IFMT != unix.S_IFDIR):
		return fmt.Errorf("%w: cwd %q is not a directory", ErrInvalid, cwd)
	}
	return nil
}
