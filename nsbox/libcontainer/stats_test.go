package libcontainer

import (
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"
)

// TestCgroupFilesRead reads stats files in both formats through kept descriptors, again after
// they change, and refuses to read once they are closed.
func TestCgroupFilesRead(t *testing.T) {
	dir := t.TempDir()
	files := map[string]string{"cpu.stat": "usage_usec 1500\nuser_usec 1000\n", "memory.current": "4096\n", "memory.max": "max\n",
		"pids.current": "3\n", "memory.events": "low 0\nhigh 0\nmax 2\noom 1\noom_kill 1\n"}
	for name, text := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	var fds [5]int
	for i, name := range []string{"cpu.stat", "memory.current", "memory.max", "pids.current", "memory.events"} {
		fd, err := unix.Open(filepath.Join(dir, name), unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			t.Fatal(err)
		}
		fds[i] = fd
	}
	f := &cgroupFiles{v2: true, cpu: fds[0], memory: fds[1], memoryLimit: fds[2], pids: fds[3], oom: fds[4]}
	st, err := f.read()
	if err != nil || st.CPUNanos != 1500000 || st.MemoryBytes != 4096 || st.MemoryLimit != 0 || st.Pids != 3 || st.OOMKills != 1 {
		t.Errorf("read: %+v, %v", st, err)
	}
	if err := os.WriteFile(filepath.Join(dir, "memory.events"), []byte("oom_kill 12\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if n, err := f.oomKills(); n != 12 || err != nil {
		t.Errorf("OOM kills after a change: %d, %v", n, err)
	}
	if err := os.WriteFile(filepath.Join(dir, "memory.current"), []byte("lots\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := f.read(); err == nil {
		t.Errorf("read a memory figure that is not a number")
	}
	f.close()
	if _, err := f.read(); err != errClosed {
		t.Errorf("read after close: %v", err)
	}
	if _, err := f.oomKills(); err != errClosed {
		t.Errorf("OOM kills after close: %v", err)
	}
	for _, bad := range []string{"", "12a", "99999999999999999999999"} {
		if _, err := parseUint([]byte(bad)); err == nil {
			t.Errorf("parseUint(%q) took it", bad)
		}
	}
	if n, err := parseUint([]byte("18446744073709551615")); n != 1<<64-1 || err != nil {
		t.Errorf("parseUint of the largest: %d, %v", n, err)
	}
}
