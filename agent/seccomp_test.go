package agent

import (
	"errors"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"
)

// seccompFile is a memory file holding prog as the daemon hands it over.
func seccompFile(t *testing.T, prog []unix.SockFilter, extra ...byte) *os.File {
	t.Helper()
	fd, err := unix.MemfdCreate("seccomp-test", unix.MFD_CLOEXEC)
	if err != nil {
		t.Fatal(err)
	}
	f := os.NewFile(uintptr(fd), "seccomp-test")
	t.Cleanup(func() { f.Close() })
	var b []byte
	if len(prog) > 0 {
		b = unsafe.Slice((*byte)(unsafe.Pointer(&prog[0])), len(prog)*int(unsafe.Sizeof(prog[0])))
	}
	if _, err := f.Write(append(append([]byte(nil), b...), extra...)); err != nil {
		t.Fatal(err)
	}
	return f
}

// refuseGetppid is a filter that makes getppid fail with EPERM and allows the rest.
var refuseGetppid = []unix.SockFilter{
	{Code: unix.BPF_LD | unix.BPF_W | unix.BPF_ABS, K: 0}, // seccomp_data.nr
	{Code: unix.BPF_JMP | unix.BPF_JEQ | unix.BPF_K, K: unix.SYS_GETPPID, Jt: 0, Jf: 1},
	{Code: unix.BPF_RET | unix.BPF_K, K: unix.SECCOMP_RET_ERRNO | uint32(unix.EPERM)},
	{Code: unix.BPF_RET | unix.BPF_K, K: unix.SECCOMP_RET_ALLOW},
}

func getppidErr() error {
	if _, _, errno := unix.RawSyscall(unix.SYS_GETPPID, 0, 0, 0); errno != 0 {
		return errno
	}
	return nil
}

// TestLoadSeccomp loads a filter as the agent does, in a child process (a filter cannot be
// taken off): every thread has it, those the process had before the load too. What is no
// program, or one the kernel refuses, is an error, and the file is closed either way.
func TestLoadSeccomp(t *testing.T) {
	if os.Getenv("NSBOX_SECCOMP_CHILD") != "" {
		loadSeccompChild()
		return
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestLoadSeccomp$", "-test.v")
	cmd.Env = append(os.Environ(), "NSBOX_SECCOMP_CHILD=1")
	cmd.ExtraFiles = []*os.File{seccompFile(t, refuseGetppid)}
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "every thread filtered") {
		t.Fatalf("child: %v\n%s", err, out)
	}

	for name, f := range map[string]*os.File{
		"empty":       seccompFile(t, nil),
		"odd size":    seccompFile(t, refuseGetppid, 1),
		"no return":   seccompFile(t, refuseGetppid[:1]),
		"bad jump":    seccompFile(t, []unix.SockFilter{{Code: unix.BPF_JMP | unix.BPF_JA, K: 5}, refuseGetppid[3]}),
		"over length": seccompFile(t, make([]unix.SockFilter, maxSeccompInsns+1)),
	} {
		fd, err := unix.Dup(int(f.Fd()))
		if err != nil {
			t.Fatal(err)
		}
		if err := loadSeccomp(fd); err == nil {
			t.Errorf("%s: loaded", name)
		}
		if _, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0); !errors.Is(err, unix.EBADF) {
			t.Errorf("%s: fd left open (%v)", name, err)
		}
	}
	if err := getppidErr(); err != nil {
		t.Fatalf("the test process itself was filtered: %v", err)
	}
}

func loadSeccompChild() {
	// Threads that exist before the load, each holding its own OS thread.
	const threads = 4
	ready, check, results := make(chan struct{}), make(chan struct{}), make(chan error)
	for range threads {
		go func() {
			runtime.LockOSThread()
			ready <- struct{}{}
			<-check
			results <- getppidErr()
		}()
		<-ready
	}
	if err := getppidErr(); err != nil {
		println("filtered before the load:", err.Error())
		os.Exit(1)
	}
	if err := loadSeccomp(3); err != nil {
		println(err.Error())
		os.Exit(1)
	}
	close(check)
	for range threads {
		if err := <-results; !errors.Is(err, unix.EPERM) {
			println("a thread started before the load is not filtered:", err)
			os.Exit(1)
		}
	}
	if err := getppidErr(); !errors.Is(err, unix.EPERM) {
		println("the loading thread is not filtered")
		os.Exit(1)
	}
	println("every thread filtered")
}
