package libcontainer

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/opencontainers/cgroups"
	"golang.org/x/sys/unix"
)

// TestOOMWatch: a memory cgroup's OOM kills reach its registration's notify, each OOM killer
// kill counted in the cgroup's file; once removed, the registration is out of the set and a
// kill no longer notifies.
func TestOOMWatch(t *testing.T) {
	v2 := cgroups.IsCgroup2UnifiedMode()
	name := fmt.Sprintf("nsbox-oomwatch-test-%d", os.Getpid())
	dir, limits := filepath.Join("/sys/fs/cgroup/memory", name), map[string]string{"memory.limit_in_bytes": "16M"}
	if v2 {
		dir, limits = filepath.Join("/sys/fs/cgroup", name), map[string]string{"memory.max": "16M", "memory.swap.max": "0"}
	}
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := os.Remove(dir); err != nil {
			t.Errorf("remove the test's cgroup: %v", err)
		}
	})
	for file, value := range limits {
		if err := os.WriteFile(filepath.Join(dir, file), []byte(value), 0); err != nil {
			t.Fatal(err)
		}
	}
	kills := func() uint64 {
		file := "memory.oom_control"
		if v2 {
			file = "memory.events"
		}
		fd, err := unix.Open(filepath.Join(dir, file), unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer unix.Close(fd)
		var buf [512]byte
		n, err := keyed(fd, buf[:], "oom_kill")
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	// exhaust runs a process in the cgroup that takes memory until the OOM killer kills it.
	exhaust := func() {
		cmd := exec.Command("sh", "-c", "echo $$ > "+filepath.Join(dir, "cgroup.procs")+" && exec tail /dev/zero")
		if err := cmd.Run(); err == nil {
			t.Fatal("tail /dev/zero ended well in a 16 MB cgroup")
		} else if st, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); !ok || st.Signal() != syscall.SIGKILL {
			t.Fatalf("tail /dev/zero in a 16 MB cgroup: %v, not killed", err)
		}
	}

	notified := make(chan struct{}, 16)
	reg, err := ooms.add(dir, v2, func() { notified <- struct{}{} })
	if err != nil {
		t.Fatal(err)
	}
	fd := reg.fd
	if reg.killsAtStart != 0 {
		t.Errorf("a new cgroup's registration counted %d OOM kills", reg.killsAtStart)
	}
	exhaust()
	select {
	case <-notified:
	case <-time.After(30 * time.Second):
		t.Fatal("no OOM notification 30 s after the OOM killer killed a process")
	}
	if n := kills(); n != 1 {
		t.Errorf("the cgroup counted %d OOM kills, want 1", n)
	}

	ooms.remove(reg)
	ooms.mu.Lock()
	if ooms.regs[int32(fd)] != nil || reg.fd != -1 {
		t.Errorf("the registration is still in the set after remove")
	}
	ooms.mu.Unlock()
	for len(notified) > 0 { // more than one notification for the same kill is allowed
		<-notified
	}
	exhaust()
	if n := kills(); n != 2 {
		t.Errorf("the cgroup counted %d OOM kills, want 2", n)
	}
	// A registration made now (a restarted daemon's) starts from the kills counted so far.
	again, err := ooms.add(dir, v2, func() {})
	if err != nil {
		t.Fatal(err)
	}
	if again.killsAtStart != 2 {
		t.Errorf("a registration after 2 OOM kills counted %d", again.killsAtStart)
	}
	ooms.remove(again)
	select {
	case <-notified:
		t.Error("a notification after the registration was removed")
	case <-time.After(time.Second):
	}
}
