package cgroup

import (
	"os"
	"path/filepath"
	"testing"
)

func TestOOMKillLine(t *testing.T) {
	for _, c := range []struct {
		data string
		want uint64
	}{
		{"low 0\nhigh 0\nmax 3\noom 2\noom_kill 2\noom_group_kill 0\n", 2}, // v2 memory.events
		{"oom_kill_disable 0\nunder_oom 0\noom_kill 17\n", 17},             // v1 memory.oom_control
		{"oom_kill_disable 0\nunder_oom 0\n", 0},                           // before Linux 4.13
		{"oom_group_kill 5\noom_kill 1", 1},                                // no newline at the end
	} {
		if got := oomKillLine([]byte(c.data)); got != c.want {
			t.Errorf("oomKillLine(%q) = %d, want %d", c.data, got, c.want)
		}
	}
}

func TestParseMemoryLimit(t *testing.T) {
	for _, c := range []struct {
		data string
		want int64
	}{
		{"67108864\n", 64 << 20},     // v2 memory.max, v1 memory.limit_in_bytes
		{"max\n", 0},                 // v2: none
		{"9223372036854771712\n", 0}, // v1: none
		{"", 0},
	} {
		if got := parseMemoryLimit([]byte(c.data)); got != c.want {
			t.Errorf("parseMemoryLimit(%q) = %d, want %d", c.data, got, c.want)
		}
	}
}

// MemoryLimit says when it cannot read the limit (not "no limit"), and keeps to the file it
// read first.
func TestMemoryLimitFiles(t *testing.T) {
	saved := memoryLimitFiles
	t.Cleanup(func() { memoryLimitFiles, memoryLimitFile = saved, "" })
	dir := t.TempDir()
	v2, v1 := filepath.Join(dir, "memory.max"), filepath.Join(dir, "memory.limit_in_bytes")
	memoryLimitFiles, memoryLimitFile = []string{v2, v1}, ""
	if limit, ok := MemoryLimit(); ok || limit != 0 {
		t.Fatalf("without a file: %d %v", limit, ok)
	}
	if err := os.WriteFile(v1, []byte("67108864\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if limit, ok := MemoryLimit(); !ok || limit != 64<<20 {
		t.Fatalf("v1: %d %v", limit, ok)
	}
	// v1 it is: a v2 file appearing later is not read.
	if err := os.WriteFile(v2, []byte("max\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if limit, ok := MemoryLimit(); !ok || limit != 64<<20 {
		t.Fatalf("after the first read: %d %v", limit, ok)
	}
	if err := os.Remove(v1); err != nil {
		t.Fatal(err)
	}
	if limit, ok := MemoryLimit(); ok || limit != 0 {
		t.Fatalf("unreadable: %d %v", limit, ok)
	}
}
