package pidwait

import (
	"os"
	"os/exec"
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// signalled runs fn on a thread that another goroutine sends SIGURG (Go's preemption signal)
// as fast as it can, so that the polls fn makes are interrupted.
func signalled(fn func()) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	tid := unix.Gettid()
	var stop atomic.Bool
	done := make(chan struct{})
	go func() {
		defer close(done)
		for !stop.Load() {
			_ = unix.Tgkill(os.Getpid(), tid, unix.SIGURG)
		}
	}()
	fn()
	stop.Store(true)
	<-done
}

func start(t *testing.T, args ...string) (*exec.Cmd, int) {
	t.Helper()
	cmd := exec.Command(args[0], args[1:]...)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	fd, err := unix.PidfdOpen(cmd.Process.Pid, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	return cmd, fd
}

// TestThroughSignals: a live process is not taken for exited however many signals interrupt
// the polls, a wait lasts until the process exits, and a wait with a timeout ends with it.
func TestThroughSignals(t *testing.T) {
	_, live := start(t, "sleep", "60")
	wrong := 0
	signalled(func() {
		for range 100000 {
			if Exited(live) {
				wrong++
			}
		}
	})
	if wrong > 0 {
		t.Fatalf("a live process was taken for exited %d times in 100000", wrong)
	}

	_, soon := start(t, "sleep", "0.3")
	began := time.Now()
	var exited bool
	var err error
	signalled(func() { exited, err = Wait(soon, -1) })
	if !exited || err != nil || time.Since(began) < 250*time.Millisecond || !Exited(soon) {
		t.Fatalf("a wait for a process that exits after 0.3 s: %v, %v after %v", exited, err, time.Since(began))
	}

	began = time.Now()
	signalled(func() { exited, err = Wait(live, 300*time.Millisecond) })
	if exited || err != nil || time.Since(began) < 250*time.Millisecond {
		t.Fatalf("a wait of 0.3 s for a live process: %v, %v after %v", exited, err, time.Since(began))
	}
}
