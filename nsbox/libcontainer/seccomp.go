package libcontainer

import (
	"runtime"
	"sync"

	"github.com/opencontainers/runc/libcontainer/configs"
	"golang.org/x/sys/unix"
)

// deniedSyscalls fail with EPERM inside a sandbox. The profile is a denylist on top of the
// dropped capabilities: most of these already need a capability a sandbox does not have, and
// the rest reach kernel state that is not namespaced (keyrings, bpf, perf, io_uring, kernel
// modules, clocks). A denylist of ~60 rules compiles in a fraction of the time Docker's
// ~350-rule allowlist takes in every container start (see docs/benchmarks.md).
var deniedSyscalls = []string{
	"acct", "add_key", "bpf", "clock_adjtime", "clock_settime", "create_module", "delete_module",
	"finit_module", "fsconfig", "fsmount", "fsopen", "fspick", "get_kernel_syms", "get_mempolicy",
	"init_module", "io_uring_enter", "io_uring_register", "io_uring_setup", "ioperm", "iopl",
	"kcmp", "kexec_file_load", "kexec_load", "keyctl", "lookup_dcookie", "mbind", "mount",
	"mount_setattr", "move_mount", "move_pages", "name_to_handle_at", "nfsservctl",
	"open_by_handle_at", "open_tree", "perf_event_open", "pivot_root", "process_madvise",
	"query_module", "quotactl", "quotactl_fd", "reboot", "request_key", "set_mempolicy",
	"setns", "settimeofday", "stime", "swapoff", "swapon", "syslog", "sysfs", "_sysctl",
	"umount", "umount2", "uselib", "userfaultfd", "ustat", "vm86", "vm86old", "fanotify_init",
	"lsm_set_self_attr",
}

// seccompProfile allows everything except deniedSyscalls, creating user namespaces (a way
// back to a full capability set), AF_VSOCK sockets, and clone3 (whose flags sit in memory a
// filter cannot read;
// it fails with ENOSYS so libcs fall back to clone, whose flags can be checked).
//
// It is built once: every container's config points at the same profile, which nothing
// changes after (libcontainer only reads it), instead of keeping ~5 kB of rules per sandbox.
var seccompProfile = sync.OnceValue(func() *configs.Seccomp {
	eperm, enosys := uint(unix.EPERM), uint(unix.ENOSYS)
	var rules []*configs.Syscall
	for _, name := range deniedSyscalls {
		rules = append(rules, &configs.Syscall{Name: name, Action: configs.Errno, ErrnoRet: &eperm})
	}
	rules = append(rules, &configs.Syscall{Name: "clone3", Action: configs.Errno, ErrnoRet: &enosys})
	for _, name := range []string{"clone", "unshare"} {
		rules = append(rules, &configs.Syscall{
			Name: name, Action: configs.Errno, ErrnoRet: &eperm,
			Args: []*configs.Arg{{Index: 0, Value: unix.CLONE_NEWUSER, ValueTwo: unix.CLONE_NEWUSER, Op: configs.MaskEqualTo}},
		})
	}
	// AF_VSOCK reaches a VM host's hypervisor: a sandbox on a guest must not talk to it.
	rules = append(rules, &configs.Syscall{
		Name: "socket", Action: configs.Errno, ErrnoRet: &eperm,
		Args: []*configs.Arg{{Index: 0, Value: unix.AF_VSOCK, Op: configs.EqualTo}},
	})
	return &configs.Seccomp{
		DefaultAction: configs.Allow,
		Architectures: architectures[runtime.GOARCH],
		Syscalls:      rules,
	}
})

// architectures are the syscall ABIs a sandbox may use on each host architecture; calls
// through any other ABI are refused by libseccomp's bad-architecture action.
var architectures = map[string][]string{
	"amd64": {"amd64", "x86", "x32"},
	"arm64": {"arm64", "arm"},
}
