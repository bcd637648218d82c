package libcontainer

import (
	"fmt"
	"path/filepath"
	"strings"

	"github.com/opencontainers/cgroups"
	"golang.org/x/sys/unix"
)

// On a cgroup v1 host a container sees its cgroups at /sys/fs/cgroup as runc's "cgroup" mount
// would show them: a tmpfs with, in it, one read-only mount of each of the host's
// hierarchies, made in the container's cgroup namespace (so rooted at its own cgroup), and a
// symbolic link for each controller of a co-mounted one ("cpu" → "cpu,cpuacct"). runc's init
// made those ~10 mounts with its path checks, ~130 system calls each; they are made from the
// host instead, once the container runs, on a thread that entered its mount and cgroup
// namespaces, beside its agent's start (docs/benchmarks.md, "Session 13"). Unlike runc's,
// the tmpfs is the host root's and read-only: nothing in the sandbox can put a file there.
// On a cgroup v2 host runc's single cgroup2 mount stays.

// cgroupViewDir is where a container sees its cgroups.
const cgroupViewDir = "/sys/fs/cgroup"

// cgroupHierarchies are the directories of the host's cgroup v1 hierarchies under
// /sys/fs/cgroup ("cpu", "cpu,cpuacct", "systemd"…), or nil on a cgroup v2 host, whose
// containers get runc's cgroup2 mount.
func cgroupHierarchies() ([]string, error) {
	if cgroups.IsCgroup2UnifiedMode() {
		return nil, nil
	}
	mounts, err := cgroups.GetCgroupMounts(false)
	if err != nil {
		return nil, fmt.Errorf("find the host's cgroup hierarchies: %w", err)
	}
	var dirs []string
	for _, m := range mounts {
		dirs = append(dirs, filepath.Base(m.Mountpoint))
	}
	return dirs, nil
}

// mountCgroupView mounts the container's cgroup view of the hierarchies (cgroupHierarchies).
func (i *instance) mountCgroupView(hierarchies []string) error {
	i.mu.RLock()
	defer i.mu.RUnlock()
	return i.inNamespaces(unix.CLONE_NEWNS|unix.CLONE_NEWCGROUP, func() error {
		const flags = unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC
		if err := unix.Mount("tmpfs", cgroupViewDir, "tmpfs", flags, "mode=755,size=64k"); err != nil {
			return fmt.Errorf("mount the cgroup view's tmpfs: %w", err)
		}
		for _, dir := range hierarchies {
			path := filepath.Join(cgroupViewDir, dir)
			if err := unix.Mkdir(path, 0o755); err != nil {
				return fmt.Errorf("make %s: %w", path, err)
			}
			source, data := "cgroup", dir
			if dir == "systemd" {
				source, data = "systemd", cgroups.CgroupNamePrefix+dir
			}
			if err := unix.Mount(source, path, "cgroup", flags|unix.MS_RDONLY, data); err != nil {
				return fmt.Errorf("mount cgroup hierarchy %s: %w", dir, err)
			}
			if strings.Contains(dir, ",") {
				for ctrl := range strings.SplitSeq(dir, ",") {
					if err := unix.Symlink(dir, filepath.Join(cgroupViewDir, ctrl)); err != nil {
						return fmt.Errorf("link %s to %s: %w", ctrl, dir, err)
					}
				}
			}
		}
		return wrapErr("make the cgroup view read-only", unix.Mount("", cgroupViewDir, "", unix.MS_REMOUNT|unix.MS_RDONLY|flags, ""))
	})
}
