package cgroup

import "testing"

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
