package fs

import (
	"fmt"
	"runtime"

	"golang.org/x/sys/unix"

	"github.com/nsbox/nsbox/api"
)

// secbitNoSetuidFixup keeps a thread's capabilities when its file system uid leaves 0.
const secbitNoSetuidFixup = 1 << 2

// hostID is the host's id for the sandbox's id n; -1 (keep the caller's own) stays -1.
func (r *Root) hostID(what string, n int) (int, error) {
	switch {
	case n < 0 || !r.ids.Enabled():
		return n, nil
	case n >= int(r.ids.Size):
		return 0, api.Errorf(api.CodeInvalidArgument, "%s %d is not an id of the sandbox's user namespace (0 to %d)", what, n, r.ids.Size-1)
	}
	return int(r.ids.Host) + n, nil
}

// as runs f for the sandbox's user uid and group gid (-1: root). In a user namespace it runs
// on an OS thread of its own whose file system ids are their host ids, with the daemon's
// capabilities kept (SECBIT_NO_SETUID_FIXUP): what f creates belongs to them, also on an
// id-mapped mount, where the host's root may create nothing, and f may still touch every
// file. The thread never runs anything else: it ends with f. f gets the host ids (for chown).
func (r *Root) as(uid, gid int, f func(uid, gid int) error) error {
	huid, err := r.hostID("uid", uid)
	if err != nil {
		return err
	}
	hgid, err := r.hostID("gid", gid)
	if err != nil {
		return err
	}
	if !r.ids.Enabled() {
		return f(huid, hgid)
	}
	fsuid, fsgid := max(huid, int(r.ids.Host)), max(hgid, int(r.ids.Host))
	done := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread's credentials are not the process's
		if err := unix.Prctl(unix.PR_SET_SECUREBITS, secbitNoSetuidFixup, 0, 0, 0); err != nil {
			done <- fmt.Errorf("keep capabilities across setfsuid: %w", err)
			return
		}
		if r.onThread != nil {
			end, err := r.onThread()
			if err != nil {
				done <- err
				return
			}
			defer end()
		}
		// setfsuid and setfsgid answer the previous id, never an error.
		_ = unix.Setfsgid(fsgid)
		_ = unix.Setfsuid(fsuid)
		done <- f(huid, hgid)
	}()
	return <-done
}
