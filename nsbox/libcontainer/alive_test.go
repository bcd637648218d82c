package libcontainer

import (
	"os"
	"os/exec"
	"runtime"
	"sync/atomic"
	"testing"

	"golang.org/x/sys/unix"
)

// TestAliveThroughSignals: a live process is alive however many signals interrupt the check
// (Go's preemption sends its threads SIGURG; a poll interrupted by one fails with EINTR, which
// once made a create fail with "the container's agent (PID 1) has exited").
func TestAliveThroughSignals(t *testing.T) {
	cmd := exec.Command("sleep", "60")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	pidfd, err := unix.PidfdOpen(cmd.Process.Pid, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(pidfd)
	i := &instance{pidfd: pidfd}

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
	dead := 0
	for range 200000 {
		if !i.alive() {
			dead++
		}
	}
	stop.Store(true)
	<-done
	if dead > 0 {
		t.Fatalf("a live process was found dead %d times in 200000 checks", dead)
	}
}
