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

// TestLoadSeccomp loads filters as the agent does, in a child process (a filter cannot be
// taken off) with no_new_privs set, as runc's init leaves the agent: what is no program, or one
// the kernel refuses, is an error; a program is loaded on every thread, those the process had
// before the load too; the file is closed either way.
func TestLoadSeccomp(t *testing.T) {
	if os.Getenv("NSBOX_SECCOMP_CHILD") != "" {
		loadSeccompChild(t)
		return
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestLoadSeccomp$", "-test.v")
	cmd.Env = append(os.Environ(), "NSBOX_SECCOMP_CHILD=1")
	cmd.ExtraFiles = []*os.File{seccompFile(t, refuseGetppid)}
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "every thread filtered") {
		t.Fatalf("child: %v\n%s", err, out)
	}
}

func loadSeccompChild(t *testing.T) {
	runtime.LockOSThread() // no_new_privs is the thread's
	if err := unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name string
		f    *os.File
		want error // nil: any error
	}{
		{"empty", seccompFile(t, nil), nil},
		{"odd size", seccompFile(t, refuseGetppid, 1), nil},
		{"over length", seccompFile(t, make([]unix.SockFilter, maxSeccompInsns+1)), nil},
		{"no return", seccompFile(t, refuseGetppid[:1]), unix.EINVAL},
		{"bad jump", seccompFile(t, []unix.SockFilter{{Code: unix.BPF_JMP | unix.BPF_JA, K: 5}, refuseGetppid[3]}), unix.EINVAL},
	} {
		fd, err := unix.Dup(int(c.f.Fd()))
		if err != nil {
			t.Fatal(err)
		}
		if err := loadSeccomp(fd); err == nil || (c.want != nil && !errors.Is(err, c.want)) {
			t.Errorf("%s: %v, want an error (%v)", c.name, err, c.want)
		}
		if _, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0); !errors.Is(err, unix.EBADF) {
			t.Errorf("%s: fd left open (%v)", c.name, err)
		}
	}
	if err := getppidErr(); err != nil {
		t.Fatalf("filtered before the load: %v", err)
	}

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
	if err := loadSeccomp(3); err != nil {
		t.Fatal(err)
	}
	if _, err := unix.FcntlInt(3, unix.F_GETFD, 0); !errors.Is(err, unix.EBADF) {
		t.Errorf("the program's fd left open (%v)", err)
	}
	close(check)
	for range threads {
		if err := <-results; !errors.Is(err, unix.EPERM) {
			t.Fatalf("a thread started before the load is not filtered: %v", err)
		}
	}
	if err := getppidErr(); !errors.Is(err, unix.EPERM) {
		t.Fatalf("the loading thread is not filtered: %v", err)
	}
	if !t.Failed() {
		t.Log("every thread filtered")
	}
}
