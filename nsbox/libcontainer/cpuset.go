package libcontainer

import (
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/opencontainers/cgroups"
	"github.com/opencontainers/runc/libcontainer/configs"
	"golang.org/x/sys/unix"

	"github.com/nsbox/nsbox/nsbox/backend"
)

// cpuSets gives each container a cpuset of as many CPUs as its CPU quota rounds up to, so that
// what counts CPUs by affinity (nproc, os.process_cpu_count, Node's availableParallelism, the
// JVM) sees its limit, and spreads containers over the CPUs: each gets the CPUs the fewest
// containers have. Which CPUs the others have is read from their cgroups once, at the first
// pick (so a restarted daemon knows it), and then kept from the picks of this process (a
// container being started has no cgroup yet; reading every container's cgroup at every pick
// was a fifth of the daemon's CPU in creates with 500 sandboxes).
type cpuSets struct {
	parent string // the containers' parent cgroup
	mu     sync.Mutex
	loaded bool             // known holds what the cgroups said, and cpusetDir is set
	known  map[string][]int // container → its CPUs
	// cpusetDir is the parent cgroup's directory in the cpuset hierarchy ("" when there is none).
	cpusetDir string
}

func newCPUSets(parent string) *cpuSets {
	return &cpuSets{parent: parent, known: map[string][]int{}}
}

// pick chooses the CPUs of container id for the quota and returns them as a cpuset list
// ("0-1", "0,2"). The CPUs it has are kept when they are as many as it needs.
func (c *cpuSets) pick(id string, lim backend.Limits) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.loaded {
		c.cpusetDir = c.dir()
		for other, cpus := range readSets(c.cpusetDir) {
			if _, ok := c.known[other]; !ok {
				c.known[other] = cpus
			}
		}
		c.loaded = true
	}
	avail := c.available(c.cpusetDir)
	n := min(len(avail), max(1, int(math.Ceil(float64(lim.CPUQuota)/backend.CPUPeriod))))
	have := c.known
	if cur := have[id]; len(cur) == n {
		return formatCPUs(cur)
	}
	load := map[int]int{}
	for other, cpus := range have {
		if other != id {
			for _, cpu := range cpus {
				load[cpu]++
			}
		}
	}
	chosen := slices.Clone(avail)
	slices.SortStableFunc(chosen, func(a, b int) int { return load[a] - load[b] })
	chosen = chosen[:n]
	slices.Sort(chosen)
	c.known[id] = chosen
	return formatCPUs(chosen)
}

// forget drops what is known of a destroyed container.
func (c *cpuSets) forget(id string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.known, id)
}

// dir is the parent cgroup's directory in the cpuset hierarchy ("" when there is none).
func (c *cpuSets) dir() string {
	if cgroups.IsCgroup2UnifiedMode() {
		return filepath.Join("/sys/fs/cgroup", c.parent)
	}
	mnt, err := cgroups.FindCgroupMountpoint("", "cpuset")
	if err != nil {
		return ""
	}
	return filepath.Join(mnt, c.parent)
}

// available are the CPUs containers may have: this process's, within the parent cgroup's
// (dir, in the cpuset hierarchy).
func (c *cpuSets) available(dir string) []int {
	var aff unix.CPUSet
	if err := unix.SchedGetaffinity(0, &aff); err != nil {
		return []int{0}
	}
	var parent *unix.CPUSet
	if data, err := os.ReadFile(filepath.Join(dir, "cpuset.cpus")); err == nil && strings.TrimSpace(string(data)) != "" {
		parent, _ = configs.ToCPUSet(strings.TrimSpace(string(data)))
	}
	var out []int
	for cpu := range 1024 {
		if aff.IsSet(cpu) && (parent == nil || parent.IsSet(cpu)) {
			out = append(out, cpu)
		}
	}
	if len(out) == 0 {
		return []int{0}
	}
	return out
}

// readSets reads the CPUs of every container from their cgroups under dir.
func readSets(dir string) map[string][]int {
	out := map[string][]int{}
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		if !e.IsDir() {
			continue
		}
		data, err := os.ReadFile(filepath.Join(dir, e.Name(), "cpuset.cpus"))
		if err != nil {
			continue
		}
		// A cgroup being made by another start has an empty cpuset.cpus yet: no set (nil).
		if set, err := configs.ToCPUSet(strings.TrimSpace(string(data))); err == nil && set != nil {
			for cpu := range 1024 {
				if set.IsSet(cpu) {
					out[e.Name()] = append(out[e.Name()], cpu)
				}
			}
		}
	}
	return out
}

// formatCPUs lists sorted CPUs as the kernel does, in ranges ("0-2,5").
func formatCPUs(cpus []int) string {
	var s []string
	for i := 0; i < len(cpus); {
		j := i
		for j+1 < len(cpus) && cpus[j+1] == cpus[j]+1 {
			j++
		}
		s = append(s, strconv.Itoa(cpus[i]))
		if j > i {
			s[len(s)-1] += "-" + strconv.Itoa(cpus[j])
		}
		i = j + 1
	}
	return strings.Join(s, ",")
}

// CPUsOnline is the file of /sys that a container's own list of CPUs is bound over.
const CPUsOnline = "/sys/devices/system/cpu/online"

// writeCPUsOnline writes the file at path that a container binds over CPUsOnline: its cpuset
// (cpus), so that what counts the online CPUs (glibc's get_nprocs: python's os.cpu_count,
// sysconf(_SC_NPROCESSORS_ONLN)) sees its limit, with or without LXCFS. It is written in
// place: a bind holds the inode.
func writeCPUsOnline(path, cpus string) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o711); err != nil {
		return fmt.Errorf("write the container's cpu/online: %w", err)
	}
	if err := os.WriteFile(path, []byte(cpus+"\n"), 0o444); err != nil {
		return fmt.Errorf("write the container's cpu/online: %w", err)
	}
	return nil
}
