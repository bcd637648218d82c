package libcontainer

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strconv"

	"github.com/opencontainers/cgroups"
	"github.com/opencontainers/cgroups/manager"

	"github.com/nsbox/nsbox/nsbox/backend"
)

// cgroupFiles are the files a container's stats are read from, found once per instance: with
// cgroup v2 all in one directory, with v1 one per controller.
type cgroupFiles struct {
	v2                             bool
	cpu, memory, memoryLimit, pids string
	oom                            string // v2: memory.events; v1: memory.oom_control
}

// statFiles finds the cgroup files of a container's cgroup at path (relative to each hierarchy).
func statFiles(path string) (*cgroupFiles, error) {
	m, err := manager.New(&cgroups.Cgroup{Path: path, Resources: &cgroups.Resources{}})
	if err != nil {
		return nil, fmt.Errorf("cgroup manager for %s: %w", path, err)
	}
	paths := m.GetPaths()
	if cgroups.IsCgroup2UnifiedMode() {
		dir := paths[""]
		return &cgroupFiles{v2: true, cpu: filepath.Join(dir, "cpu.stat"), memory: filepath.Join(dir, "memory.current"),
			memoryLimit: filepath.Join(dir, "memory.max"), pids: filepath.Join(dir, "pids.current"), oom: filepath.Join(dir, "memory.events")}, nil
	}
	return &cgroupFiles{cpu: filepath.Join(paths["cpuacct"], "cpuacct.usage"), memory: filepath.Join(paths["memory"], "memory.usage_in_bytes"),
		memoryLimit: filepath.Join(paths["memory"], "memory.limit_in_bytes"), pids: filepath.Join(paths["pids"], "pids.current"),
		oom: filepath.Join(paths["memory"], "memory.oom_control")}, nil
}

// unlimited is where a cgroup v1 memory limit means none (the kernel shows PAGE_COUNTER_MAX pages).
const unlimited = 1 << 62

// read reads the container's stats from its cgroup files.
func (f *cgroupFiles) read() (backend.Stats, error) {
	var st backend.Stats
	var err error
	if f.v2 {
		var usec uint64
		usec, err = keyed(f.cpu, "usage_usec")
		st.CPUNanos = usec * 1000
	} else {
		st.CPUNanos, err = single(f.cpu)
	}
	if err != nil {
		return st, err
	}
	if st.MemoryBytes, err = single(f.memory); err != nil {
		return st, err
	}
	if st.MemoryLimit, err = single(f.memoryLimit); err != nil {
		return st, err
	}
	if st.MemoryLimit >= unlimited {
		st.MemoryLimit = 0
	}
	if st.Pids, err = single(f.pids); err != nil {
		return st, err
	}
	st.OOMKills, err = keyed(f.oom, "oom_kill")
	return st, err
}

// single reads a file that holds one number ("max" is 0: no limit).
func single(path string) (uint64, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return 0, fmt.Errorf("read cgroup stats: %w", err)
	}
	data = bytes.TrimSpace(data)
	if string(data) == "max" {
		return 0, nil
	}
	n, err := strconv.ParseUint(string(data), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("read cgroup stats %s: %w", path, err)
	}
	return n, nil
}

// keyed reads the number after key in a file of "key value" lines; 0 when the key is missing
// (a kernel that does not count it).
func keyed(path, key string) (uint64, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return 0, fmt.Errorf("read cgroup stats: %w", err)
	}
	for line := range bytes.Lines(data) {
		k, v, ok := bytes.Cut(bytes.TrimSpace(line), []byte(" "))
		if ok && string(k) == key {
			n, err := strconv.ParseUint(string(v), 10, 64)
			if err != nil {
				return 0, fmt.Errorf("read cgroup stats %s: %s: %w", path, key, err)
			}
			return n, nil
		}
	}
	return 0, nil
}
