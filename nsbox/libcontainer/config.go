package libcontainer

import (
	"cmp"
	"path/filepath"
	"slices"

	"github.com/opencontainers/cgroups"
	devconfig "github.com/opencontainers/cgroups/devices/config"
	"github.com/opencontainers/runc/libcontainer/configs"
	"github.com/opencontainers/runc/libcontainer/specconv"
	"golang.org/x/sys/unix"

	"github.com/nsbox/nsbox/nsbox/backend"
	"github.com/nsbox/nsbox/rootfs"
)

// AgentPath is where the nsbox binary is bind-mounted (read-only) inside every container.
const AgentPath = "/.nsbox/nsbox"

// defaultCapabilities is containerd 2.0's default set for a container process, without
// NET_RAW, MKNOD, SETFCAP, SYS_CHROOT and AUDIT_WRITE: raw packets, device nodes, file
// capabilities, chroot and the audit log are for sandboxes that ask for them (Spec.Capabilities).
var defaultCapabilities = []string{
	"CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_SETGID", "CAP_SETUID",
	"CAP_SETPCAP", "CAP_NET_BIND_SERVICE", "CAP_KILL",
}

// maskedPaths are the OCI runtime defaults for /proc and /sys, and the host's page, slab,
// vmalloc and I/O memory maps and its kernel config, which tell an attacker about the host's
// kernel and memory layout. readonlyPaths are the OCI defaults, and the agent's OOM score:
// sandbox root owns PID 1 and could otherwise raise it to 1000, making the agent the first
// process the kernel kills when the sandbox runs out of memory (reached through /proc/1 and
// /proc/1/task/1; the agent is single-pid, its other threads' tasks come and go).
var maskedPaths = []string{
	"/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
	"/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/proc/scsi",
	"/proc/kpageflags", "/proc/kpagecount", "/proc/kpagecgroup", "/proc/slabinfo",
	"/proc/vmallocinfo", "/proc/iomem", "/proc/config.gz",
	"/sys/firmware", "/sys/devices/virtual/powercap",
}
var readonlyPaths = []string{"/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger",
	"/proc/1/oom_score_adj", "/proc/1/oom_adj", "/proc/1/task/1/oom_score_adj", "/proc/1/task/1/oom_adj"}

// agentTmpfsSize bounds the agent's tmpfs: it holds each running exec's stdin (up to the API's
// 64 MiB body limit) and small scripts; it is charged to the sandbox's memory.
const agentTmpfsSize = "80m"

// configSpec is everything a libcontainer config is built from.
type configSpec struct {
	backend.Spec
	Rootfs     string // the mounted overlay
	AgentBin   string // host path of the nsbox binary
	CgroupPath string // e.g. /nsbox/<id>
	// WorkCgroup is the pids cgroup of the sandbox's processes, "" when they share the
	// container's with the agent (workcgroup.go).
	WorkCgroup string
	// UserNS is the path of a user namespace with the container's mapping (Spec.IDs): the
	// container joins it, and runc maps the image's binds and read-only mounts with it.
	UserNS string
	// CPUs is the container's cpuset ("0-1"), and CPUsOnline the host file that lists them
	// for its CPUsOnline (writeCPUsOnline).
	CPUs, CPUsOnline string
	// CgroupMount has runc mount the container's cgroups at /sys/fs/cgroup (cgroup v2);
	// without it the backend shows them once the container runs (cgroupview.go).
	CgroupMount bool
}

// containerConfig builds the libcontainer config of a sandbox.
func containerConfig(s configSpec) *configs.Config {
	const defaultMountFlags = unix.MS_NOEXEC | unix.MS_NOSUID | unix.MS_NODEV
	var rules []*devconfig.Rule
	var nodes []*devconfig.Device
	for _, d := range specconv.AllowedDevices {
		// Leave out runc's "mknod any device" wildcards and /dev/net/tun (10:200).
		if d.Major == devconfig.Wildcard || (d.Major == 10 && d.Minor == 200) {
			continue
		}
		rules = append(rules, &d.Rule)
		if d.Path != "" {
			nodes = append(nodes, d)
		}
	}
	caps := slices.Compact(slices.Sorted(slices.Values(append(slices.Clone(defaultCapabilities), s.Capabilities...))))
	cfg := &configs.Config{
		Rootfs:          s.Rootfs,
		RootPropagation: unix.MS_PRIVATE | unix.MS_REC,
		Hostname:        cmp.Or(s.Hostname, s.ID),
		NoNewPrivileges: true,
		Capabilities: &configs.Capabilities{
			Bounding:  caps,
			Effective: caps,
			Permitted: caps,
		},
		Namespaces: configs.Namespaces{
			{Type: configs.NEWNS}, {Type: configs.NEWUTS}, {Type: configs.NEWIPC},
			{Type: configs.NEWPID}, {Type: configs.NEWNET}, {Type: configs.NEWCGROUP},
		},
		Networks: []*configs.Network{{Type: "loopback", Address: "127.0.0.1/0", Gateway: "localhost"}},
		Cgroups: &cgroups.Cgroup{
			Path:      s.CgroupPath,
			Resources: resources(s.Limits, s.WorkCgroup, s.CPUs, rules),
		},
		Devices:       nodes,
		MaskPaths:     append(append([]string{}, maskedPaths...), s.Masked...),
		ReadonlyPaths: readonlyPaths,
		Mounts: []*configs.Mount{
			{Source: "proc", Destination: "/proc", Device: "proc", Flags: defaultMountFlags},
			{Source: "tmpfs", Destination: "/dev", Device: "tmpfs", Flags: unix.MS_NOSUID | unix.MS_STRICTATIME, Data: "mode=755,size=65536k"},
			{Source: "devpts", Destination: "/dev/pts", Device: "devpts", Flags: unix.MS_NOSUID | unix.MS_NOEXEC, Data: "newinstance,ptmxmode=0666,mode=0620,gid=5"},
			{Source: "shm", Destination: "/dev/shm", Device: "tmpfs", Flags: defaultMountFlags, Data: "mode=1777,size=65536k"},
			{Source: "mqueue", Destination: "/dev/mqueue", Device: "mqueue", Flags: defaultMountFlags},
			{Source: "sysfs", Destination: "/sys", Device: "sysfs", Flags: defaultMountFlags | unix.MS_RDONLY},
			// The agent's session FIFOs and per-exec files: on tmpfs, not the overlay's disk, where
			// allocating four inodes per exec was most of an exec's cost (docs/benchmarks.md).
			{Source: "tmpfs", Destination: "/run/nsbox", Device: "tmpfs", Flags: defaultMountFlags, Data: "mode=0711,size=" + agentTmpfsSize},
		},
	}
	if s.CgroupMount {
		cfg.Mounts = slices.Insert(cfg.Mounts, 6, &configs.Mount{Source: "cgroup", Destination: "/sys/fs/cgroup", Device: "cgroup", Flags: defaultMountFlags | unix.MS_RDONLY})
	}
	for _, b := range s.ImageBinds {
		cfg.Mounts = append(cfg.Mounts, readonlyBind(b, s))
	}
	for _, m := range s.Mounts {
		cfg.Mounts = append(cfg.Mounts, bindMount(m, s))
	}
	// Not id-mapped: root's file, read-only for all.
	cfg.Mounts = append(cfg.Mounts, readonlyBind(backend.Mount{Source: s.CPUsOnline, Target: CPUsOnline, IDs: backend.MountIDs{Native: true}}, s))
	// The agent last: runc mounts it where AgentPath leads in the sandbox's root, which the
	// sandbox may have made a symbolic link (into its workspace, say); a mount made after it
	// there would cover it, and runc would execute whatever the sandbox left in its place as
	// PID 1 (TestAgentCannotBeReplaced). Not id-mapped: the sandbox's root does not own it.
	cfg.Mounts = append(cfg.Mounts, readonlyBind(backend.Mount{Source: s.AgentBin, Target: AgentPath, IDs: backend.MountIDs{Native: true}}, s))
	if s.IDs.Enabled() {
		// The daemon's namespace with the container's mapping (rootfs.UserNS), owned by the
		// sandbox's root: one runc made would be the host root's.
		cfg.Namespaces = append(cfg.Namespaces, configs.Namespace{Type: configs.NEWUSER, Path: s.UserNS})
		cfg.UIDMappings = idMaps(0, s.IDs)
		cfg.GIDMappings = idMaps(0, s.IDs)
	}
	return cfg
}

// readonlyBind is an image's bind mount: recursive, read-only, no setuid files or devices.
func readonlyBind(m backend.Mount, s configSpec) *configs.Mount {
	return &configs.Mount{
		Source: m.Source, Destination: m.Target, Device: "bind",
		Flags:     unix.MS_BIND | unix.MS_REC | unix.MS_RDONLY | unix.MS_NOSUID | unix.MS_NODEV,
		IDMapping: mountIDMapping(m.IDs, s, true),
	}
}

// bindMount is a container's own bind mount (workspace, --mount, network files): not
// recursive, no setuid files or devices.
func bindMount(m backend.Mount, s configSpec) *configs.Mount {
	flags := unix.MS_BIND | unix.MS_NOSUID | unix.MS_NODEV
	if m.ReadOnly {
		flags |= unix.MS_RDONLY
	}
	return &configs.Mount{Source: m.Source, Destination: m.Target, Device: "bind", Flags: flags, IDMapping: mountIDMapping(m.IDs, s, false)}
}

// mountIDMapping is how a mount is id-mapped in the container s: nil without a user
// namespace, or for a Native mount; the container's own mapping (through s.UserNS) by default.
func mountIDMapping(m backend.MountIDs, s configSpec, recursive bool) *configs.MountIDMapping {
	switch {
	case !s.IDs.Enabled() || m.Native:
		return nil
	case m.RootUID == 0 && m.RootGID == 0 && s.UserNS != "":
		return &configs.MountIDMapping{Recursive: recursive, UserNSPath: s.UserNS}
	}
	return &configs.MountIDMapping{Recursive: recursive, UIDMappings: idMaps(m.RootUID, s.IDs), GIDMappings: idMaps(m.RootGID, s.IDs)}
}

// idMaps maps the ids n of a file system (or of a namespace's parent) to the container's n,
// that is to the host's ids.Host+n, for n from 0 to ids.Size-1; except that with root not 0
// the file system's root is the container's 0 instead, and its 0 (and the container's root
// when it is in range) is mapped to nothing.
func idMaps(root uint32, ids rootfs.IDMap) []configs.IDMap {
	host, size := int64(ids.Host), int64(ids.Size)
	if root == 0 {
		return []configs.IDMap{{ContainerID: 0, HostID: host, Size: size}}
	}
	out := []configs.IDMap{{ContainerID: int64(root), HostID: host, Size: 1}}
	next := int64(1)
	if r := int64(root); r < size {
		if r > 1 {
			out = append(out, configs.IDMap{ContainerID: 1, HostID: host + 1, Size: r - 1})
		}
		next = r + 1
	}
	if next < size {
		out = append(out, configs.IDMap{ContainerID: next, HostID: host + next, Size: size - next})
	}
	return out
}

// cgroupPath is the cgroup (relative to each hierarchy's root) of a container.
func cgroupPath(parent, id string) string {
	return filepath.Join("/", parent, id)
}

// resources are a container's cgroup resources with the limits lim, on the CPUs cpus; the
// sandbox's processes have the work cgroup's pids limit, when there is one.
func resources(lim backend.Limits, work, cpus string, devices []*devconfig.Rule) *cgroups.Resources {
	pids := containerPids(lim.Pids, work)
	return &cgroups.Resources{
		CpusetCpus: cpus,
		CpuQuota:   lim.CPUQuota,
		CpuPeriod:  backend.CPUPeriod,
		Memory:     lim.MemoryBytes,
		MemorySwap: lim.MemoryBytes, // no swap beyond the memory limit
		PidsLimit:  &pids,
		Devices:    devices,
	}
}
