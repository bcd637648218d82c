package libcontainer

import (
	"os"
	"runtime"
	"testing"

	"github.com/opencontainers/cgroups"
)

// TestMoveThreadToItsCgroup: the move WillStart makes ahead of a start works on this host
// (one that failed would leave every start to wait for the kernel's grace period, silently),
// in the memory hierarchy of cgroup v1 and in a unified one (a cgroup v2 host's, or the one a
// hybrid host mounts beside its v1 hierarchies), and leaves the thread where it was.
func TestMoveThreadToItsCgroup(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	hierarchies := map[string]bool{}
	if cgroups.IsCgroup2UnifiedMode() {
		hierarchies[hierarchy("")] = true
	} else {
		hierarchies[hierarchy("memory")] = false
		if _, err := os.Stat("/sys/fs/cgroup/unified/cgroup.threads"); err == nil {
			hierarchies["/sys/fs/cgroup/unified"] = true
		}
	}
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	for root, v2 := range hierarchies {
		before, err := os.ReadFile("/proc/thread-self/cgroup")
		if err != nil {
			t.Fatal(err)
		}
		if err := moveThreadToItsCgroup(root, v2); err != nil {
			t.Errorf("%s: %v", root, err)
		}
		after, err := os.ReadFile("/proc/thread-self/cgroup")
		if err != nil {
			t.Fatal(err)
		}
		if string(after) != string(before) {
			t.Errorf("%s: the thread's cgroups were\n%s\nand are\n%s", root, before, after)
		}
	}
}
