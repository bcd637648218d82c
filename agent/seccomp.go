package agent

import (
	"fmt"
	"unsafe"

	"golang.org/x/sys/unix"
)

// maxSeccompInsns is the kernel's limit on a filter's length (BPF_MAXINSNS).
const maxSeccompInsns = 4096

// loadSeccomp installs the seccomp filter in the file fd, a BPF program (struct sock_filter's)
// the daemon compiled from the sandboxes' profile (nsbox/libcontainer: seccompProgram), on
// every thread of the agent, and so on everything it will start; then closes fd. It is the
// agent's first step: before it only the agent's own start has run in the sandbox, and
// runc's init has set no_new_privs, which lets a process without CAP_SYS_ADMIN load a filter.
// An agent that cannot load it does not run.
func loadSeccomp(fd int) error {
	defer unix.Close(fd)
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return fmt.Errorf("seccomp program: %w", err)
	}
	const insnSize = int(unsafe.Sizeof(unix.SockFilter{}))
	size := int(st.Size)
	if size == 0 || size%insnSize != 0 || size/insnSize > maxSeccompInsns {
		return fmt.Errorf("seccomp program: %d bytes is no BPF program", size)
	}
	prog := make([]unix.SockFilter, size/insnSize)
	buf := unsafe.Slice((*byte)(unsafe.Pointer(&prog[0])), size)
	for off := 0; off < size; {
		n, err := unix.Pread(fd, buf[off:], int64(off))
		if err != nil {
			return fmt.Errorf("read the seccomp program: %w", err)
		}
		if n == 0 {
			return fmt.Errorf("read the seccomp program: %d of %d bytes", off, size)
		}
		off += n
	}
	fprog := unix.SockFprog{Len: uint16(len(prog)), Filter: &prog[0]}
	// TSYNC: the Go runtime's threads, started already, get it too; it answers with the id of
	// a thread it could not give the filter to.
	tid, _, errno := unix.Syscall(unix.SYS_SECCOMP, unix.SECCOMP_SET_MODE_FILTER, unix.SECCOMP_FILTER_FLAG_TSYNC, uintptr(unsafe.Pointer(&fprog)))
	switch {
	case errno != 0:
		return fmt.Errorf("load the seccomp filter: %w", errno)
	case tid != 0:
		return fmt.Errorf("load the seccomp filter: thread %d could not take it", tid)
	}
	return nil
}
