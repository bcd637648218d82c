package agent

import (
	"fmt"
	"os"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Every process the agent starts (a session's shell, a process, a code context, git) gets a
// Landlock domain of its own, which everything it starts inherits. The domain governs every
// file access right the kernel has (up to truncate) and grants all of them beneath /, and
// beneath the private folder the process holds at session.PrivateFD, if any. So:
//   - files in the sandbox are reached as without it: everything in the sandbox is beneath /;
//   - the private store, a detached mount that is beneath no path (session/private.go), is
//     closed to the process except for its own session's folder: ".." of that folder, and
//     every other session's folder, are refused whatever the uid and file modes say;
//   - Landlock's ptrace rule applies: a process may ptrace, or read /proc/<pid>/{fd,cwd,root,
//     mem,environ,ns…} of, only processes of its own domain or of domains nested in it.
//     Sessions are walled off from each other's processes, root sessions included (same uid,
//     or a setuid to the victim's, does not help); only the agent reaches them all.

// confinement makes the Landlock domains.
type confinement struct {
	rights uint64   // the filesystem rights governed (and granted where granted)
	root   *os.File // an O_PATH descriptor of /
}

// newConfinement checks Landlock. It fails where Landlock is missing or older than ABI 2 (no
// LANDLOCK_ACCESS_FS_REFER: a domain would refuse every rename across directories).
func newConfinement() (*confinement, error) {
	abi, _, errno := unix.Syscall(unix.SYS_LANDLOCK_CREATE_RULESET, 0, 0, unix.LANDLOCK_CREATE_RULESET_VERSION)
	if errno != 0 {
		return nil, fmt.Errorf("landlock is not available: %w", errno)
	}
	if abi < 2 {
		return nil, fmt.Errorf("landlock ABI %d is older than 2", abi)
	}
	// ABI 1's thirteen rights (execute … make_sym), refer (ABI 2) and truncate (ABI 3). Device
	// ioctls (ABI 5) stay ungoverned: a sandbox cannot make device files.
	rights := uint64(unix.LANDLOCK_ACCESS_FS_MAKE_SYM<<1-1) | unix.LANDLOCK_ACCESS_FS_REFER
	if abi >= 3 {
		rights |= unix.LANDLOCK_ACCESS_FS_TRUNCATE
	}
	root, err := os.OpenFile("/", unix.O_PATH|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open /: %w", err)
	}
	return &confinement{rights: rights, root: root}, nil
}

// restrict puts the calling thread in a new domain that grants its rights beneath / and
// beneath private (nil: none). The thread must be locked and must end without running
// anything else: what it forks from now on inherits the domain.
func (c *confinement) restrict(private *os.File) error {
	// Only the first field (handled_access_fs, 8 bytes) is set: every kernel with Landlock
	// takes that size and zeroes the fields it has beyond it.
	attr := unix.LandlockRulesetAttr{Handled_access_fs: c.rights}
	fd, _, errno := unix.Syscall(unix.SYS_LANDLOCK_CREATE_RULESET, uintptr(unsafe.Pointer(&attr)), 8, 0)
	if errno != 0 {
		return fmt.Errorf("create landlock ruleset: %w", errno)
	}
	defer unix.Close(int(fd))
	for _, dir := range []*os.File{c.root, private} {
		if dir == nil {
			continue
		}
		rule := unix.LandlockPathBeneathAttr{Allowed_access: c.rights, Parent_fd: int32(dir.Fd())}
		if _, _, errno := unix.Syscall6(unix.SYS_LANDLOCK_ADD_RULE, fd, unix.LANDLOCK_RULE_PATH_BENEATH, uintptr(unsafe.Pointer(&rule)), 0, 0, 0); errno != 0 {
			return fmt.Errorf("add landlock rule for %s: %w", dir.Name(), errno)
		}
	}
	// The sandbox runs with no_new_privs; it is per thread, and Landlock needs it.
	if err := unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); err != nil {
		return fmt.Errorf("set no_new_privs: %w", err)
	}
	if _, _, errno := unix.Syscall(unix.SYS_LANDLOCK_RESTRICT_SELF, fd, 0, 0); errno != 0 {
		return fmt.Errorf("enter landlock domain: %w", errno)
	}
	return nil
}
