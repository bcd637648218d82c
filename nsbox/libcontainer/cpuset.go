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
// containers have. Which CPUs the others have is read from their cgroups (so a restarted
// daemon knows it), and remembered from the picks of this process (a container being started
// has no cgroup yet).
type cpuSets struct {
	parent string // the containers' parent cgroup
	mu     sync.Mutex
	picked map[string][]int // container → its CPUs, as picked here
}

func newCPUSets(parent string) *cpuSets {
	return &cpuSets{parent: parent, picked: map[string][]int{}}
}

// pick chooses the CPUs of container id for the quota and returns them as a cpuset list
// ("0-1", "0,2"). The CPUs it has are kept when they are as many as it needs.
func (c *cpuSets) pick(id string, lim backend.Limits) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	avail := c.available()
	n := min(len(avail), max(1, int(math.Ceil(float64(lim.CPUQuota)/backend.CPUPeriod))))
	have := c.sets()
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
	c.picked[id] = chosen
	return formatCPUs(chosen)
}

// forget drops what pick remembered of a destroyed container.
func (c *cpuSets) forget(id string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.picked, id)
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

// available are the CPUs containers may have: this process's, within the parent cgroup's.
func (c *cpuSets) available() []int {
	var aff unix.CPUSet
	if err := unix.SchedGetaffinity(0, &aff); err != nil {
		return []int{0}
	}
	var parent *unix.CPUSet
	if data, err := os.ReadFile(filepath.Join(c.dir(), "cpuset.cpus")); err == nil && strings.TrimSpace(string(data)) != "" {
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

// sets are the CPUs of every container: from their cgroups, and from this process's picks.
func (c *cpuSets) sets() map[string][]int {
	out := map[string][]int{}
	entries, _ := os.ReadDir(c.dir())
	for _, e := range entries {
		if !e.IsDir() {
			continue
		}
		data, err := os.ReadFile(filepath.Join(c.dir(), e.Name(), "cpuset.cpus"))
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
	for id, cpus := range c.picked {
		out[id] = cpus
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
	if err := os.WriteFile(path, []byte(cpus+"\n"), 0o444); err != nil {
		return fmt.Errorf("write the container's cpu/online: %w", err)
	}
	return nil
}
