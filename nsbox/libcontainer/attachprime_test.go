package libcontainer

import (
	"bytes"
	"os"
	"runtime"
	"testing"

	"github.com/opencontainers/cgroups"
)

// TestMoveThreadToItsCgroup: the move WillStart makes ahead of a start finds the thread's
// threads file and is accepted, in the memory hierarchy of cgroup v1 and in a unified one (a
// cgroup v2 host's, or the one a hybrid host mounts beside its v1 hierarchies), and leaves the
// thread where it was (one that failed would only lose the start its head start, silently).
// Whether the kernel took its rwsem for it is a matter of time, which the bench shows
// (docs/benchmarks.md, "Session 23").
func TestMoveThreadToItsCgroup(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	hierarchies := map[string]bool{}
	if cgroups.IsCgroup2UnifiedMode() {
		hierarchies[hierarchy("")] = true
	} else {
		if memory := hierarchy("memory"); memory != "" {
			hierarchies[memory] = false
		}
		if _, err := os.Stat("/sys/fs/cgroup/unified/cgroup.threads"); err == nil {
			hierarchies["/sys/fs/cgroup/unified"] = true
		}
	}
	if len(hierarchies) == 0 {
		t.Skip("no memory or unified cgroup hierarchy")
	}
	runtime.LockOSThread()
	defer func() {
		if !t.Failed() { // a thread the move took elsewhere ends with the test
			runtime.UnlockOSThread()
		}
	}()
	for root, v2 := range hierarchies {
		before, err := os.ReadFile("/proc/thread-self/cgroup")
		if err != nil {
			t.Fatal(err)
		}
		if err := moveThreadToItsCgroup(root, v2); err != nil {
			t.Errorf("%s: %v", root, err)
		}
		if after, err := os.ReadFile("/proc/thread-self/cgroup"); err != nil || !bytes.Equal(after, before) {
			t.Errorf("%s: the thread's cgroups were\n%s\nand are\n%s (%v); want them unchanged", root, before, after, err)
		}
	}
}
