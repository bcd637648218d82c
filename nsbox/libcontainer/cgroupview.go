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
// hierarchies, rooted at the container's own cgroup, and a symbolic link for each controller
// of a co-mounted one ("cpu" → "cpu,cpuacct"). runc's init made those ~10 mounts with its path
// checks, ~130 system calls each; they are made from the host instead, once the container
// runs, on a thread that entered its mount namespace, beside its agent's start
// (docs/benchmarks.md, "Session 13"). Each is a copy (open_tree's clone) of the host's mount of
// the container's cgroup directory, not a new mount of the hierarchy in the container's cgroup
// namespace: the kernel makes every new cgroup v1 mount wait for the cgroups being taken down
// by walking every cgroup of the unified hierarchy, one per sandbox, so that each create
// cost more the more sandboxes there were (docs/benchmarks.md, "Session 19"). The container
// sees the same thing either way: the directory of its cgroup, shown as "/" in its
// mountinfo (the kernel shows a cgroup mount's root relative to the reader's cgroup
// namespace). Unlike runc's, the tmpfs is the host root's and read-only: nothing in the
// sandbox can put a file there. On a cgroup v2 host runc's single cgroup2 mount stays.

// cgroupHierarchy is one of the host's cgroup v1 hierarchies.
type cgroupHierarchy struct {
	dir        string // its name under /sys/fs/cgroup ("cpu", "cpu,cpuacct", "systemd"…)
	mountpoint string // where the host has it mounted
	subsystem  string // one of its controllers ("cpu"; "systemd" for name=systemd)
}

// cgroupViewDir is where a container sees its cgroups.
const cgroupViewDir = "/sys/fs/cgroup"

// cgroupHierarchies are the host's cgroup v1 hierarchies, or nil on a cgroup v2 host, whose
// containers get runc's cgroup2 mount.
func cgroupHierarchies() ([]cgroupHierarchy, error) {
	if cgroups.IsCgroup2UnifiedMode() {
		return nil, nil
	}
	mounts, err := cgroups.GetCgroupMounts(false)
	if err != nil {
		return nil, fmt.Errorf("find the host's cgroup hierarchies: %w", err)
	}
	var out []cgroupHierarchy
	for _, m := range mounts {
		if len(m.Subsystems) == 0 {
			return nil, fmt.Errorf("cgroup hierarchy %s: no controller", m.Mountpoint)
		}
		out = append(out, cgroupHierarchy{dir: filepath.Base(m.Mountpoint), mountpoint: m.Mountpoint, subsystem: m.Subsystems[0]})
	}
	return out, nil
}

// mountCgroupView mounts the container's cgroup view of the hierarchies (cgroupHierarchies).
func (i *instance) mountCgroupView(hierarchies []cgroupHierarchy) error {
	i.mu.RLock()
	defer i.mu.RUnlock()
	const attrs = unix.MOUNT_ATTR_RDONLY | unix.MOUNT_ATTR_NOSUID | unix.MOUNT_ATTR_NODEV | unix.MOUNT_ATTR_NOEXEC
	trees := make([]int, 0, len(hierarchies))
	defer func() {
		for _, fd := range trees {
			unix.Close(fd)
		}
	}()
	// The agent's cgroups are the roots of the container's cgroup namespace: its init joined
	// them before it made the namespace. The pid is pinned (i.mu).
	own, err := cgroups.ParseCgroupFile(fmt.Sprintf("/proc/%d/cgroup", i.pid))
	if err != nil {
		return fmt.Errorf("the container's cgroups: %w", err)
	}
	for _, h := range hierarchies {
		path, ok := own[h.subsystem]
		if !ok { // a named hierarchy: "name=systemd" in /proc/<pid>/cgroup
			path, ok = own["name="+h.subsystem]
		}
		if !ok {
			return fmt.Errorf("the container's cgroup in hierarchy %s: its agent has none", h.dir)
		}
		fd, err := cloneMount(filepath.Join(h.mountpoint, path), attrs)
		if err != nil {
			return fmt.Errorf("the container's cgroup in hierarchy %s: %w", h.dir, err)
		}
		trees = append(trees, fd)
	}
	return i.inNamespaces(unix.CLONE_NEWNS, func() error {
		const flags = unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC
		if err := unix.Mount("tmpfs", cgroupViewDir, "tmpfs", flags, "mode=755,size=64k"); err != nil {
			return fmt.Errorf("mount the cgroup view's tmpfs: %w", err)
		}
		for k, h := range hierarchies {
			path := filepath.Join(cgroupViewDir, h.dir)
			if err := unix.Mkdir(path, 0o755); err != nil {
				return fmt.Errorf("make %s: %w", path, err)
			}
			if err := unix.MoveMount(trees[k], "", unix.AT_FDCWD, path, unix.MOVE_MOUNT_F_EMPTY_PATH); err != nil {
				return fmt.Errorf("attach cgroup hierarchy %s: %w", h.dir, err)
			}
			if strings.Contains(h.dir, ",") {
				for ctrl := range strings.SplitSeq(h.dir, ",") {
					if err := unix.Symlink(h.dir, filepath.Join(cgroupViewDir, ctrl)); err != nil {
						return fmt.Errorf("link %s to %s: %w", ctrl, h.dir, err)
					}
				}
			}
		}
		return wrapErr("make the cgroup view read-only", unix.Mount("", cgroupViewDir, "", unix.MS_REMOUNT|unix.MS_RDONLY|flags, ""))
	})
}
