package libcontainer

import (
	"encoding/binary"
	"errors"
	"runtime"
	"testing"

	"golang.org/x/net/bpf"
	"golang.org/x/sys/unix"
)

// Audit architectures and the x32 ABI's system call bit (linux/audit.h, asm/unistd.h).
const (
	auditArchX8664 = 0xc000003e
	auditArchI386  = 0x40000003
	x32SyscallBit  = 0x40000000
)

// seccompData is struct seccomp_data as the program reads it. The kernel loads its words in the
// host's byte order (on amd64 a 64-bit argument's low word first) and x/net/bpf's machine
// big-endian, so each word is written big-endian.
func seccompData(arch, nr uint32, args ...uint64) []byte {
	b := make([]byte, 64)
	binary.BigEndian.PutUint32(b[0:], nr)
	binary.BigEndian.PutUint32(b[4:], arch)
	for i, a := range args {
		binary.BigEndian.PutUint32(b[16+8*i:], uint32(a))
		binary.BigEndian.PutUint32(b[20+8*i:], uint32(a>>32))
	}
	return b
}

// TestSeccompProgram runs the compiled program, as the agents get it, on system calls of the
// three x86 ABIs, and checks that nothing can change it.
func TestSeccompProgram(t *testing.T) {
	if runtime.GOARCH != "amd64" {
		t.Skip("the cases are amd64's system call numbers")
	}
	f, err := seccompProgram()
	if err != nil {
		t.Fatal(err)
	}
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		t.Fatal(err)
	}
	raw := make([]byte, st.Size)
	if _, err := unix.Pread(int(f.Fd()), raw, 0); err != nil {
		t.Fatal(err)
	}
	if _, err := unix.Pwrite(int(f.Fd()), []byte{0}, 0); !errors.Is(err, unix.EPERM) {
		t.Errorf("the program can be written: %v", err)
	}
	if err := unix.Ftruncate(int(f.Fd()), 0); !errors.Is(err, unix.EPERM) {
		t.Errorf("the program can be truncated: %v", err)
	}
	if len(raw) == 0 || len(raw)%8 != 0 {
		t.Fatalf("program of %d bytes", len(raw))
	}
	var insns []bpf.RawInstruction
	for i := 0; i < len(raw); i += 8 {
		insns = append(insns, bpf.RawInstruction{
			Op: binary.NativeEndian.Uint16(raw[i:]), Jt: raw[i+2], Jf: raw[i+3], K: binary.NativeEndian.Uint32(raw[i+4:]),
		})
	}
	program, ok := bpf.Disassemble(insns)
	if !ok {
		t.Fatalf("the program has instructions x/net/bpf does not know: %v", program)
	}
	vm, err := bpf.NewVM(program)
	if err != nil {
		t.Fatal(err)
	}
	const (
		allow = unix.SECCOMP_RET_ALLOW
		eperm = unix.SECCOMP_RET_ERRNO | uint32(unix.EPERM)
		nosys = unix.SECCOMP_RET_ERRNO | uint32(unix.ENOSYS)
	)
	for _, c := range []struct {
		name     string
		arch, nr uint32
		args     []uint64
		want     uint32
	}{
		{"getpid", auditArchX8664, unix.SYS_GETPID, nil, allow},
		{"mount", auditArchX8664, unix.SYS_MOUNT, nil, eperm},
		{"keyctl", auditArchX8664, unix.SYS_KEYCTL, nil, eperm},
		{"bpf", auditArchX8664, unix.SYS_BPF, nil, eperm},
		{"setns", auditArchX8664, unix.SYS_SETNS, nil, eperm},
		{"clone3", auditArchX8664, unix.SYS_CLONE3, nil, nosys},
		{"unshare mount ns", auditArchX8664, unix.SYS_UNSHARE, []uint64{unix.CLONE_NEWNS}, allow},
		{"unshare user ns", auditArchX8664, unix.SYS_UNSHARE, []uint64{unix.CLONE_NEWUSER | unix.CLONE_NEWNS}, eperm},
		{"clone", auditArchX8664, unix.SYS_CLONE, []uint64{uint64(unix.SIGCHLD)}, allow},
		{"clone user ns", auditArchX8664, unix.SYS_CLONE, []uint64{unix.CLONE_NEWUSER | uint64(unix.SIGCHLD)}, eperm},
		{"inet socket", auditArchX8664, unix.SYS_SOCKET, []uint64{unix.AF_INET, unix.SOCK_STREAM}, allow},
		{"vsock socket", auditArchX8664, unix.SYS_SOCKET, []uint64{unix.AF_VSOCK, unix.SOCK_STREAM}, eperm},
		// socket's family is an int: the kernel drops the register's upper half.
		{"vsock socket, upper half set", auditArchX8664, unix.SYS_SOCKET, []uint64{1<<32 | unix.AF_VSOCK, unix.SOCK_STREAM}, eperm},
		{"x32 getpid", auditArchX8664, x32SyscallBit | unix.SYS_GETPID, nil, allow},
		{"x32 mount", auditArchX8664, x32SyscallBit | unix.SYS_MOUNT, nil, eperm},
		{"i386 getpid", auditArchI386, 20, nil, allow},
		{"i386 mount", auditArchI386, 21, nil, eperm},
		{"i386 unshare user ns", auditArchI386, 310, []uint64{unix.CLONE_NEWUSER}, eperm},
	} {
		got, err := vm.Run(seccompData(c.arch, c.nr, c.args...))
		if err != nil || uint32(got) != c.want {
			t.Errorf("%s: got %#x %v, want %#x", c.name, got, err, c.want)
		}
	}
	// Another architecture's calls are not a sandbox's: they are killed.
	if got, _ := vm.Run(seccompData(0xc00000b7 /* AUDIT_ARCH_AARCH64 */, unix.SYS_GETPID)); uint32(got)&unix.SECCOMP_RET_ACTION_FULL == allow {
		t.Errorf("a call of another architecture is allowed: %#x", got)
	}
}
