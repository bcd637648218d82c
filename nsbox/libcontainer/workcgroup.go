package libcontainer

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"

	"github.com/opencontainers/cgroups"
	"github.com/opencontainers/cgroups/manager"
	"golang.org/x/sys/unix"
)

// agentPids is the room for the agent's own threads beyond a sandbox's pids limit.
//
// A sandbox's processes and its agent share the container's pids cgroup. A fork bomb that filled
// it left the agent's Go runtime unable to make a thread, and the runtime aborts then (fatal
// error: newosproc): the sandbox failed. So, on a host whose pids controller is on a cgroup v1
// hierarchy, everything the agent starts is forked from a thread moved first into a child
// cgroup of the container's, work/, which carries the sandbox's limit; the container's own
// cgroup carries the limit plus agentPids. The agent moves its forking thread there and back
// through descriptors of the two tasks files that the daemon opens (the kernel checks the
// opener's credentials, and nothing in the sandbox can write cgroupfs otherwise).
const agentPids = 64

// pidsHierarchy is where the cgroup v1 pids hierarchy is mounted, or "" on a host without
// one: there the agent shares its sandbox's limit.
func pidsHierarchy() string {
	if cgroups.IsCgroup2UnifiedMode() {
		return ""
	}
	return hierarchy("pids")
}

// hierarchy is where the cgroup hierarchy of a controller is mounted (libcontainer puts a
// container's cgroup path under it): the v1 controller's, or the unified one on cgroup v2;
// "" when there is none.
func hierarchy(controller string) string {
	m, err := manager.New(&cgroups.Cgroup{Path: "/", Resources: &cgroups.Resources{}})
	if err != nil {
		return ""
	}
	if cgroups.IsCgroup2UnifiedMode() {
		return m.Path("")
	}
	return m.Path(controller)
}

// workCgroup is the pids cgroup of a container's processes (the agent aside), under the
// hierarchy at root, or "" without a hierarchy.
func workCgroup(root, cgroupPath string) string {
	if root == "" {
		return ""
	}
	return filepath.Join(root, cgroupPath, "work")
}

// existingWorkCgroup is the work cgroup of a container that has one ("" for a container an
// older daemon started).
func existingWorkCgroup(root, cgroupPath string) string {
	dir := workCgroup(root, cgroupPath)
	if dir == "" {
		return ""
	}
	if _, err := os.Stat(dir); err != nil {
		return ""
	}
	return dir
}

// makeWorkCgroup makes the work cgroup dir (and the container's above it) with the sandbox's
// pids limit, and opens the tasks files of both for the agent: work's, then the container's.
func makeWorkCgroup(dir string, pids int64) ([]*os.File, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("make the sandbox's pids cgroup: %w", err)
	}
	if err := setWorkPids(dir, pids); err != nil {
		return nil, err
	}
	var files []*os.File
	for _, d := range []string{dir, filepath.Dir(dir)} {
		f, err := os.OpenFile(filepath.Join(d, "tasks"), os.O_WRONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			for _, f := range files {
				f.Close()
			}
			return nil, fmt.Errorf("open the tasks of pids cgroup %s: %w", d, err)
		}
		files = append(files, f)
	}
	return files, nil
}

// setWorkPids sets the work cgroup's pids limit (0: none).
func setWorkPids(dir string, pids int64) error {
	v := "max"
	if pids > 0 {
		v = strconv.FormatInt(pids, 10)
	}
	if err := os.WriteFile(filepath.Join(dir, "pids.max"), []byte(v), 0); err != nil {
		return fmt.Errorf("set the sandbox's pids limit: %w", err)
	}
	return nil
}

// containerPids is the pids limit of a container's own cgroup: the sandbox's, and the agent's
// room when the sandbox's processes have a work cgroup of their own.
func containerPids(pids int64, work string) int64 {
	if pids > 0 && work != "" {
		return pids + agentPids
	}
	return pids
}
