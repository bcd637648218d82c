package libcontainer

import (
	"bytes"
	"errors"
	"fmt"
	"path/filepath"
	"strconv"
	"sync"

	"github.com/opencontainers/cgroups"
	"github.com/opencontainers/cgroups/manager"
	"golang.org/x/sys/unix"

	"github.com/nsbox/nsbox/nsbox/backend"
)

// cgroupFiles are the cgroup files a container's stats are read from, opened on the first
// reading and kept open until the instance is closed: each reading is one pread at offset 0
// a file (the kernel makes a cgroup file's text anew at every read from its start), where
// opening the file again costs ten times that (measured: 20-100 µs an open+read+close, 2 µs
// a pread, on this project's VM). With cgroup v2 all are in one directory, with v1 one per
// controller.
type cgroupFiles struct {
	v2 bool
	// mu guards the descriptors against close while they are read.
	mu                             sync.RWMutex
	cpu, memory, memoryLimit, pids int // -1 when closed
	oom                            int // v2: memory.events; v1: memory.oom_control
}

// openStatFiles opens the cgroup files of a container's cgroup at path (relative to each
// hierarchy).
func openStatFiles(path string) (*cgroupFiles, error) {
	m, err := manager.New(&cgroups.Cgroup{Path: path, Resources: &cgroups.Resources{}})
	if err != nil {
		return nil, fmt.Errorf("cgroup manager for %s: %w", path, err)
	}
	paths := m.GetPaths()
	var names [5]string // cpu, memory, memoryLimit, pids, oom
	v2 := cgroups.IsCgroup2UnifiedMode()
	if v2 {
		dir := paths[""]
		names = [5]string{filepath.Join(dir, "cpu.stat"), filepath.Join(dir, "memory.current"), filepath.Join(dir, "memory.max"),
			filepath.Join(dir, "pids.current"), filepath.Join(dir, "memory.events")}
	} else {
		names = [5]string{filepath.Join(paths["cpuacct"], "cpuacct.usage"), filepath.Join(paths["memory"], "memory.usage_in_bytes"),
			filepath.Join(paths["memory"], "memory.limit_in_bytes"), filepath.Join(paths["pids"], "pids.current"),
			filepath.Join(paths["memory"], "memory.oom_control")}
	}
	var fds [5]int
	for i, name := range names {
		if fds[i], err = unix.Open(name, unix.O_RDONLY|unix.O_CLOEXEC, 0); err != nil {
			for _, fd := range fds[:i] {
				unix.Close(fd)
			}
			return nil, fmt.Errorf("open cgroup stats file %s: %w", name, err)
		}
	}
	return &cgroupFiles{v2: v2, cpu: fds[0], memory: fds[1], memoryLimit: fds[2], pids: fds[3], oom: fds[4]}, nil
}

// close closes the files; reading them after is an error.
func (f *cgroupFiles) close() {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, fd := range []*int{&f.cpu, &f.memory, &f.memoryLimit, &f.pids, &f.oom} {
		if *fd >= 0 {
			unix.Close(*fd)
			*fd = -1
		}
	}
}

// errClosed is a reading of a container's stats after its instance was closed.
var errClosed = errors.New("read cgroup stats: the container's instance is closed")

// unlimited is where a cgroup v1 memory limit means none (the kernel shows PAGE_COUNTER_MAX pages).
const unlimited = 1 << 62

// read reads the container's stats from its cgroup files.
func (f *cgroupFiles) read() (backend.Stats, error) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	var st backend.Stats
	if f.cpu < 0 {
		return st, errClosed
	}
	var buf [1024]byte
	var err error
	if f.v2 {
		var usec uint64
		usec, err = keyed(f.cpu, buf[:], "usage_usec")
		st.CPUNanos = usec * 1000
	} else {
		st.CPUNanos, err = single(f.cpu, buf[:])
	}
	if err != nil {
		return st, err
	}
	if st.MemoryBytes, err = single(f.memory, buf[:]); err != nil {
		return st, err
	}
	if st.MemoryLimit, err = single(f.memoryLimit, buf[:]); err != nil {
		return st, err
	}
	if st.MemoryLimit >= unlimited {
		st.MemoryLimit = 0
	}
	if st.Pids, err = single(f.pids, buf[:]); err != nil {
		return st, err
	}
	st.OOMKills, err = keyed(f.oom, buf[:], "oom_kill")
	return st, err
}

// oomKills reads how many of the container's processes the OOM killer killed.
func (f *cgroupFiles) oomKills() (uint64, error) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	if f.oom < 0 {
		return 0, errClosed
	}
	var buf [1024]byte
	return keyed(f.oom, buf[:], "oom_kill")
}

// pread reads a cgroup file from its start into buf.
func pread(fd int, buf []byte) ([]byte, error) {
	for {
		n, err := unix.Pread(fd, buf, 0)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("read cgroup stats: %w", err)
		}
		return buf[:n], nil
	}
}

// single reads a file that holds one number ("max" is 0: no limit).
func single(fd int, buf []byte) (uint64, error) {
	data, err := pread(fd, buf)
	if err != nil {
		return 0, err
	}
	data = bytes.TrimSpace(data)
	if string(data) == "max" {
		return 0, nil
	}
	return parseUint(data)
}

// keyed reads the number after key in a file of "key value" lines; 0 when the key is missing
// (a kernel that does not count it).
func keyed(fd int, buf []byte, key string) (uint64, error) {
	data, err := pread(fd, buf)
	if err != nil {
		return 0, err
	}
	for line := range bytes.Lines(data) {
		k, v, ok := bytes.Cut(bytes.TrimSpace(line), []byte(" "))
		if ok && string(k) == key {
			n, err := parseUint(v)
			if err != nil {
				return 0, fmt.Errorf("%s: %w", key, err)
			}
			return n, nil
		}
	}
	return 0, nil
}

// parseUint parses a decimal number without making a string of it.
func parseUint(b []byte) (uint64, error) {
	if len(b) == 0 || len(b) > 20 {
		return 0, fmt.Errorf("read cgroup stats: not a number: %q", b)
	}
	var n uint64
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0, fmt.Errorf("read cgroup stats: not a number: %q", b)
		}
		d := uint64(c - '0')
		if n > (1<<64-1-d)/10 {
			return 0, fmt.Errorf("read cgroup stats: %q: %w", b, strconv.ErrRange)
		}
		n = n*10 + d
	}
	return n, nil
}
