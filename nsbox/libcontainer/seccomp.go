package libcontainer

import (
	"errors"
	"fmt"
	"os"
	"runtime"
	"sync"

	"github.com/opencontainers/runc/libcontainer/configs"
	libseccomp "github.com/seccomp/libseccomp-golang"
	"golang.org/x/sys/unix"
)

// deniedSyscalls fail with EPERM inside a sandbox. The profile is a denylist on top of the
// dropped capabilities: most of these already need a capability a sandbox does not have, and
// the rest reach kernel state that is not namespaced (keyrings, bpf, perf, io_uring, kernel
// modules, clocks). A denylist of ~60 rules compiles in a fraction of the time Docker's
// ~350-rule allowlist takes (see docs/benchmarks.md), once per daemon (seccompProgram).
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
// It is built once, and compiled once (seccompProgram).
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
	// AF_VSOCK reaches a VM host's hypervisor: a sandbox on a guest must not talk to it. The
	// family is an int, whose register's upper half the kernel drops: only the lower is
	// compared (EqualTo compares all 64 bits, and AF_VSOCK with an upper bit set got through).
	rules = append(rules, &configs.Syscall{
		Name: "socket", Action: configs.Errno, ErrnoRet: &eperm,
		Args: []*configs.Arg{{Index: 0, Value: 0xffffffff, ValueTwo: unix.AF_VSOCK, Op: configs.MaskEqualTo}},
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

// seccompProgram is seccompProfile compiled to a BPF program (an array of struct sock_filter),
// in a sealed memory file each new agent is handed (--seccomp-fd) and loads on every thread
// as its first step (agent/seccomp.go), before anything else runs in its sandbox. It is
// compiled once per daemon: compiled by runc's init, in every container's start, libseccomp
// took ~2.5 ms of runc's run (its allocations' page faults, on a VM where each costs 12-28 µs;
// docs/benchmarks.md, "Session 16").
var seccompProgram = sync.OnceValues(func() (*os.File, error) {
	return compileSeccomp(seccompProfile())
})

// compileSeccomp compiles p as runc's init would (libcontainer/seccomp.InitSeccomp): the same
// libseccomp filter, architectures, optimisation and rules, system calls this libseccomp does
// not know left out. The program is libseccomp's alone: runc prepends its -ENOSYS stub only to
// profiles whose default action refuses, and loads with no flags. Only what seccompProfile
// uses is supported: a default of Allow, and rules of Errno with a return value and at most one
// condition, a MaskEqualTo.
func compileSeccomp(p *configs.Seccomp) (*os.File, error) {
	if p.DefaultAction != configs.Allow {
		return nil, errors.New("seccomp: only profiles that allow by default are compiled")
	}
	filter, err := libseccomp.NewFilter(libseccomp.ActAllow)
	if err != nil {
		return nil, fmt.Errorf("seccomp filter: %w", err)
	}
	defer filter.Release()
	for _, name := range p.Architectures {
		arch, err := libseccomp.GetArchFromString(name)
		if err != nil {
			return nil, fmt.Errorf("seccomp architecture %s: %w", name, err)
		}
		if err := filter.AddArch(arch); err != nil {
			return nil, fmt.Errorf("seccomp architecture %s: %w", name, err)
		}
	}
	if len(p.Syscalls) > 32 {
		_ = filter.SetOptimize(2) // as runc: an older libseccomp without it builds a longer program
	}
	if err := filter.SetNoNewPrivsBit(false); err != nil { // runc's init sets it (NoNewPrivileges)
		return nil, fmt.Errorf("seccomp no_new_privs: %w", err)
	}
	for _, call := range p.Syscalls {
		if err := addSeccompRule(filter, call); err != nil {
			return nil, fmt.Errorf("seccomp rule for %s: %w", call.Name, err)
		}
	}
	fd, err := unix.MemfdCreate("nsbox-seccomp", unix.MFD_CLOEXEC|unix.MFD_ALLOW_SEALING)
	if err != nil {
		return nil, fmt.Errorf("memfd_create: %w", err)
	}
	f := os.NewFile(uintptr(fd), "nsbox-seccomp")
	if err := filter.ExportBPF(f); err != nil {
		f.Close()
		return nil, fmt.Errorf("export the seccomp program: %w", err)
	}
	seals := unix.F_SEAL_SEAL | unix.F_SEAL_SHRINK | unix.F_SEAL_GROW | unix.F_SEAL_WRITE
	if _, err := unix.FcntlInt(f.Fd(), unix.F_ADD_SEALS, seals); err != nil {
		f.Close()
		return nil, fmt.Errorf("seal the seccomp program: %w", err)
	}
	return f, nil
}

// addSeccompRule adds one rule of the profile to filter, as runc's matchCall does.
func addSeccompRule(filter *libseccomp.ScmpFilter, call *configs.Syscall) error {
	if call.Action != configs.Errno || call.ErrnoRet == nil {
		return errors.New("only Errno rules with a return value are compiled")
	}
	num, err := libseccomp.GetSyscallFromName(call.Name)
	if err != nil {
		return nil // not a system call of this architecture (or this libseccomp): as runc
	}
	action := libseccomp.ActErrno.SetReturnCode(int16(*call.ErrnoRet))
	if len(call.Args) == 0 {
		return filter.AddRule(num, action)
	}
	arg := call.Args[0]
	if len(call.Args) > 1 || arg.Op != configs.MaskEqualTo {
		return errors.New("only rules of one MaskEqualTo condition are compiled")
	}
	cond, err := libseccomp.MakeCondition(arg.Index, libseccomp.CompareMaskedEqual, arg.Value, arg.ValueTwo)
	if err != nil {
		return err
	}
	return filter.AddRuleConditional(num, action, []libseccomp.ScmpCondition{cond})
}
