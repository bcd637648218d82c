package agent

import (
	"fmt"
	"os"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Every process the agent starts (a session's shell, a process, a code context, git) gets a
// Landlock domain of its own, which everything it starts inherits. The domain grants every
// file access it governs (execute and reparenting, beneath / and beneath the private store),
// so files are reached as without it; what it adds is Landlock's ptrace rule: a process may
// ptrace, or read /proc/<pid>/{root,cwd,fd,mem,environ…} of, only processes of its own domain
// or of domains nested in it. Sessions are thus walled off from each other's processes, root
// sessions included (same uid, or a setuid to the victim's, does not help), and nothing but
// the agent itself reaches all of them.

// landlockAccess is what the domains govern: executing, and moving files between
// directories, which Landlock refuses (EXDEV) in any domain that does not grant it.
const landlockAccess = unix.LANDLOCK_ACCESS_FS_EXECUTE | unix.LANDLOCK_ACCESS_FS_REFER

// confinement is a Landlock ruleset that each new process is restricted by.
type confinement struct {
	ruleset int
}

// newConfinement makes the ruleset: landlockAccess beneath / and beneath each of dirs (the
// private store, a detached mount that is beneath no path). It fails where Landlock is
// missing or older than ABI 2 (no LANDLOCK_ACCESS_FS_REFER: a domain would refuse every
// rename across directories).
func newConfinement(dirs ...*os.File) (*confinement, error) {
	abi, _, errno := unix.Syscall(unix.SYS_LANDLOCK_CREATE_RULESET, 0, 0, unix.LANDLOCK_CREATE_RULESET_VERSION)
	if errno != 0 {
		return nil, fmt.Errorf("landlock is not available: %w", errno)
	}
	if abi < 2 {
		return nil, fmt.Errorf("landlock ABI %d is older than 2", abi)
	}
	// Only the first field (handled_access_fs, 8 bytes) is set: every kernel with Landlock
	// takes that size and zeroes the fields it has beyond it.
	attr := unix.LandlockRulesetAttr{Handled_access_fs: landlockAccess}
	fd, _, errno := unix.Syscall(unix.SYS_LANDLOCK_CREATE_RULESET, uintptr(unsafe.Pointer(&attr)), 8, 0)
	if errno != 0 {
		return nil, fmt.Errorf("create landlock ruleset: %w", errno)
	}
	c := &confinement{ruleset: int(fd)}
	root, err := os.OpenFile("/", unix.O_PATH|unix.O_CLOEXEC, 0)
	if err != nil {
		unix.Close(c.ruleset)
		return nil, fmt.Errorf("open /: %w", err)
	}
	defer root.Close()
	for _, d := range append([]*os.File{root}, dirs...) {
		rule := unix.LandlockPathBeneathAttr{Allowed_access: landlockAccess, Parent_fd: int32(d.Fd())}
		if _, _, errno := unix.Syscall6(unix.SYS_LANDLOCK_ADD_RULE, fd, unix.LANDLOCK_RULE_PATH_BENEATH, uintptr(unsafe.Pointer(&rule)), 0, 0, 0); errno != 0 {
			unix.Close(c.ruleset)
			return nil, fmt.Errorf("add landlock rule for %s: %w", d.Name(), errno)
		}
	}
	return c, nil
}

// restrict puts the calling thread in a new domain of the ruleset. The thread must be locked
// and must end without running anything else: what it forks from now on inherits the domain.
func (c *confinement) restrict() error {
	// The sandbox runs with no_new_privs; it is per thread, and Landlock needs it.
	if err := unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); err != nil {
		return fmt.Errorf("set no_new_privs: %w", err)
	}
	if _, _, errno := unix.Syscall(unix.SYS_LANDLOCK_RESTRICT_SELF, uintptr(c.ruleset), 0, 0); errno != 0 {
		return fmt.Errorf("enter landlock domain: %w", errno)
	}
	return nil
}
