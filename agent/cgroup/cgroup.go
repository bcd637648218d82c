// Package cgroup reads, from inside a sandbox, what its own cgroup counts: how many of its
// processes the kernel's OOM killer has killed, so that a command that died of SIGKILL can
// be reported as killed for lack of memory, and the sandbox's memory limit.
package cgroup

import (
	"bytes"
	"os"
	"strconv"
	"sync"

	"golang.org/x/sys/unix"
)

// oomFiles are where the count is, in the sandbox's cgroup namespace: cgroup v2's
// memory.events, and v1's memory.oom_control (its oom_kill line, Linux 4.13 or later).
var oomFiles = []string{"/sys/fs/cgroup/memory.events", "/sys/fs/cgroup/memory/memory.oom_control"}

// oomFile is the first of oomFiles that opens, kept open (-1: none does): every exec reads
// the count, and an agent that has idled is slow at every system call it makes, so each read
// is one pread instead of an open (of each candidate), a read and a close. The agent's cgroup
// is its sandbox's for as long as it runs.
var oomFile = sync.OnceValue(func() int {
	for _, path := range oomFiles {
		if fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0); err == nil {
			return fd
		}
	}
	return -1
})

// OOMKills is how many processes of the sandbox the OOM killer has killed so far; 0 when
// the count cannot be read.
func OOMKills() uint64 {
	fd := oomFile()
	if fd < 0 {
		return 0
	}
	var buf [512]byte // memory.events and memory.oom_control are a few short lines
	n, err := unix.Pread(fd, buf[:], 0)
	if err != nil || n <= 0 {
		return 0
	}
	return oomKillLine(buf[:n])
}

// oomKillLine is the number on the "oom_kill N" line of a memory.events or
// memory.oom_control (0 without one).
func oomKillLine(data []byte) uint64 {
	for line := range bytes.Lines(data) {
		if v, ok := bytes.CutPrefix(line, []byte("oom_kill ")); ok {
			n, _ := strconv.ParseUint(string(bytes.TrimSpace(v)), 10, 64)
			return n
		}
	}
	return 0
}

// OOMKilled reports whether a command that ended with exitCode (128+signal when a signal
// ended it) was killed by the OOM killer: it died of SIGKILL while the count rose from before.
func OOMKilled(exitCode int, before uint64) bool {
	return exitCode == 128+9 && OOMKills() > before
}

// memoryLimitFiles are where the sandbox's memory limit is, in its cgroup namespace: cgroup
// v2's memory.max ("max" when there is none) and v1's memory.limit_in_bytes (a number near
// 2^63 when there is none).
var memoryLimitFiles = []string{"/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"}

// memoryLimitFile is the first of memoryLimitFiles that could be read ("" until one could):
// the sandbox's cgroup version does not change while the agent runs, so later reads go to it
// directly.
var (
	memoryLimitMu   sync.Mutex
	memoryLimitFile string
)

// MemoryLimit is the sandbox's memory limit in bytes as its cgroup has it now (the daemon may
// change it while the agent runs); 0 when there is none. ok is false when it cannot be read:
// then the caller must not assume there is no limit.
func MemoryLimit() (limit int64, ok bool) {
	memoryLimitMu.Lock()
	defer memoryLimitMu.Unlock()
	if memoryLimitFile != "" {
		data, err := os.ReadFile(memoryLimitFile)
		if err != nil {
			return 0, false
		}
		return parseMemoryLimit(data), true
	}
	for _, path := range memoryLimitFiles {
		if data, err := os.ReadFile(path); err == nil {
			memoryLimitFile = path
			return parseMemoryLimit(data), true
		}
	}
	return 0, false
}

// parseMemoryLimit reads a memory.max or memory.limit_in_bytes (0: no limit).
func parseMemoryLimit(data []byte) int64 {
	n, err := strconv.ParseInt(string(bytes.TrimSpace(data)), 10, 64)
	if err != nil || n <= 0 || n >= 1<<62 { // "max", or v1's "unlimited"
		return 0
	}
	return n
}
