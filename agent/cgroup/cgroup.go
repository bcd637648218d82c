// Package cgroup reads, from inside a sandbox, what its own cgroup counts: how many of its
// processes the kernel's OOM killer has killed, so that a command that died of SIGKILL can
// be reported as killed for lack of memory.
package cgroup

import (
	"bufio"
	"os"
	"strconv"
	"strings"
)

// oomFiles are where the count is, in the sandbox's cgroup namespace: cgroup v2's
// memory.events, and v1's memory.oom_control (its oom_kill line, Linux 4.13 or later).
var oomFiles = []string{"/sys/fs/cgroup/memory.events", "/sys/fs/cgroup/memory/memory.oom_control"}

// OOMKills is how many processes of the sandbox the OOM killer has killed so far; 0 when
// the count cannot be read.
func OOMKills() uint64 {
	for _, path := range oomFiles {
		f, err := os.Open(path)
		if err != nil {
			continue
		}
		defer f.Close()
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			if v, ok := strings.CutPrefix(sc.Text(), "oom_kill "); ok {
				n, _ := strconv.ParseUint(strings.TrimSpace(v), 10, 64)
				return n
			}
		}
	}
	return 0
}

// OOMKilled reports whether a command that ended with exitCode (128+signal when a signal
// ended it) was killed by the OOM killer: it died of SIGKILL while the count rose from before.
func OOMKilled(exitCode int, before uint64) bool {
	return exitCode == 128+9 && OOMKills() > before
}
