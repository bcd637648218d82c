package libcontainer

import (
	"errors"
	"fmt"
	"time"

	"github.com/opencontainers/cgroups"
	"github.com/opencontainers/cgroups/manager"
	"golang.org/x/sys/unix"
)

// removeCgroup kills whatever is left in a cgroup that has no container state any more (a crash
// between creating the cgroup and saving the state) and removes it from every hierarchy. A
// crash can leave it in only some of the hierarchies: each is looked at on its own.
func removeCgroup(path string) error {
	m, err := manager.New(&cgroups.Cgroup{Path: path, Resources: &cgroups.Resources{}})
	if err != nil {
		return fmt.Errorf("cgroup manager for %s: %w", path, err)
	}
	for attempt := 0; attempt < 50; attempt++ {
		var pids []int
		for _, dir := range m.GetPaths() {
			p, _ := cgroups.GetAllPids(dir) // a hierarchy without the cgroup has none
			pids = append(pids, p...)
		}
		if len(pids) == 0 {
			break
		}
		for _, pid := range pids {
			_ = unix.Kill(pid, unix.SIGKILL)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err := m.Destroy(); err != nil && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("remove cgroup %s: %w", path, err)
	}
	return nil
}

// removeEmptyCgroup removes the cgroup at path from every hierarchy where it exists and holds
// no cgroup or process (rmdir refuses one that does).
func removeEmptyCgroup(path string) error {
	m, err := manager.New(&cgroups.Cgroup{Path: path, Resources: &cgroups.Resources{}})
	if err != nil {
		return fmt.Errorf("cgroup manager for %s: %w", path, err)
	}
	var errs []error
	for _, dir := range m.GetPaths() {
		err := unix.Rmdir(dir)
		if err != nil && !errors.Is(err, unix.ENOENT) && !errors.Is(err, unix.EBUSY) && !errors.Is(err, unix.ENOTEMPTY) {
			errs = append(errs, fmt.Errorf("remove cgroup %s: %w", dir, err))
		}
	}
	return errors.Join(errs...)
}
