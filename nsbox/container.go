package nsbox

import (
	"path/filepath"

	"github.com/opencontainers/cgroups"
	devconfig "github.com/opencontainers/cgroups/devices/config"
	"github.com/opencontainers/runc/libcontainer/configs"
	"github.com/opencontainers/runc/libcontainer/specconv"
	"golang.org/x/sys/unix"

	"github.com/nsbox/nsbox/api"
	"github.com/nsbox/nsbox/rootfs"
)

// AgentPath is where the nsbox binary is bind-mounted (read-only) inside every sandbox.
const AgentPath = "/.nsbox/nsbox"

// defaultCapabilities is containerd v2's default set for a container process.
var defaultCapabilities = []string{
	"CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD", "CAP_NET_RAW",
	"CAP_SETGID", "CAP_SETUID", "CAP_SETFCAP", "CAP_SETPCAP", "CAP_NET_BIND_SERVICE",
	"CAP_SYS_CHROOT", "CAP_KILL", "CAP_AUDIT_WRITE",
}

// maskedPaths and readonlyPaths are the OCI runtime defaults for /proc and /sys.
var maskedPaths = []string{
	"/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
	"/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/proc/scsi",
	"/sys/firmware", "/sys/devices/virtual/powercap",
}
var readonlyPaths = []string{"/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"}

// agentTmpfsSize bounds the agent's tmpfs: it holds each running exec's stdin (up to the API's
// 64 MiB body limit) and small scripts; it is charged to the sandbox's memory.
const agentTmpfsSize = "80m"

// cpuPeriod is the CFS period limits are expressed in (100 ms, the kernel default).
const cpuPeriod = 100000

// containerSpec is everything a libcontainer config is built from.
type containerSpec struct {
	ID         string
	Rootfs     string // the mounted overlay
	Image      *rootfs.Image
	AgentBin   string // host path of the nsbox binary
	CgroupPath string // e.g. /nsbox/<id>
	Limits     limits
	Seccomp    bool
	// MaxOpenFiles is the sandbox's open-file limit: the daemon's own hard limit, the most a
	// process without CAP_SYS_RESOURCE can be given.
	MaxOpenFiles uint64
	// Mounts are the sandbox's workspace and bind mounts, mounted after everything else.
	Mounts []*configs.Mount
}

// limits are resolved limits in kernel units.
type limits struct {
	CPUQuota    int64 // µs per cpuPeriod
	MemoryBytes int64
	Pids        int64
}

// containerConfig builds the libcontainer config of a sandbox.
func containerConfig(s containerSpec) *configs.Config {
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
	pids := s.Limits.Pids
	cfg := &configs.Config{
		Rootfs:          s.Rootfs,
		RootPropagation: unix.MS_PRIVATE | unix.MS_REC,
		Hostname:        s.ID,
		NoNewPrivileges: true,
		Capabilities: &configs.Capabilities{
			Bounding:  defaultCapabilities,
			Effective: defaultCapabilities,
			Permitted: defaultCapabilities,
		},
		Namespaces: configs.Namespaces{
			{Type: configs.NEWNS}, {Type: configs.NEWUTS}, {Type: configs.NEWIPC},
			{Type: configs.NEWPID}, {Type: configs.NEWNET}, {Type: configs.NEWCGROUP},
		},
		Networks: []*configs.Network{{Type: "loopback", Address: "127.0.0.1/0", Gateway: "localhost"}},
		Cgroups: &cgroups.Cgroup{
			Path: s.CgroupPath,
			Resources: &cgroups.Resources{
				CpuQuota:   s.Limits.CPUQuota,
				CpuPeriod:  cpuPeriod,
				Memory:     s.Limits.MemoryBytes,
				MemorySwap: s.Limits.MemoryBytes, // no swap beyond the memory limit
				PidsLimit:  &pids,
				Devices:    rules,
			},
		},
		Devices:       nodes,
		MaskPaths:     append(append([]string{}, maskedPaths...), s.Image.Masked...),
		ReadonlyPaths: readonlyPaths,
		Mounts: []*configs.Mount{
			{Source: "proc", Destination: "/proc", Device: "proc", Flags: defaultMountFlags},
			{Source: "tmpfs", Destination: "/dev", Device: "tmpfs", Flags: unix.MS_NOSUID | unix.MS_STRICTATIME, Data: "mode=755,size=65536k"},
			{Source: "devpts", Destination: "/dev/pts", Device: "devpts", Flags: unix.MS_NOSUID | unix.MS_NOEXEC, Data: "newinstance,ptmxmode=0666,mode=0620,gid=5"},
			{Source: "shm", Destination: "/dev/shm", Device: "tmpfs", Flags: defaultMountFlags, Data: "mode=1777,size=65536k"},
			{Source: "mqueue", Destination: "/dev/mqueue", Device: "mqueue", Flags: defaultMountFlags},
			{Source: "sysfs", Destination: "/sys", Device: "sysfs", Flags: defaultMountFlags | unix.MS_RDONLY},
			{Source: "cgroup", Destination: "/sys/fs/cgroup", Device: "cgroup", Flags: defaultMountFlags | unix.MS_RDONLY},
			// The agent's session FIFOs and per-exec files: on tmpfs, not the overlay's disk, where
			// allocating four inodes per exec was most of an exec's cost (docs/benchmarks.md).
			{Source: "tmpfs", Destination: "/run/nsbox", Device: "tmpfs", Flags: defaultMountFlags, Data: "mode=0711,size=" + agentTmpfsSize},
			readonlyBind(s.AgentBin, AgentPath),
		},
		Rlimits: []configs.Rlimit{{Type: unix.RLIMIT_NOFILE, Hard: s.MaxOpenFiles, Soft: s.MaxOpenFiles}},
	}
	for _, b := range s.Image.Binds {
		cfg.Mounts = append(cfg.Mounts, readonlyBind(b.Source, b.Dest))
	}
	cfg.Mounts = append(cfg.Mounts, s.Mounts...)
	if s.Seccomp {
		cfg.Seccomp = seccompProfile()
	}
	return cfg
}

func readonlyBind(src, dst string) *configs.Mount {
	return &configs.Mount{
		Source: src, Destination: dst, Device: "bind",
		Flags: unix.MS_BIND | unix.MS_REC | unix.MS_RDONLY | unix.MS_NOSUID | unix.MS_NODEV,
	}
}

// cgroupPath is the cgroup (relative to each hierarchy's root) of a sandbox.
func cgroupPath(parent, id string) string {
	return filepath.Join("/", parent, id)
}

// resolveLimits validates requested limits, fills defaults and converts to kernel units.
func (c *Config) resolveLimits(l *api.Limits) (limits, error) {
	if l.CPUs == 0 {
		l.CPUs = c.DefaultCPUs
	}
	if l.MemoryMB == 0 {
		l.MemoryMB = c.DefaultMemoryMB
	}
	if l.Pids == 0 {
		l.Pids = c.DefaultPids
	}
	switch {
	case l.CPUs < 0.01 || l.CPUs > float64(c.hostCPUs):
		return limits{}, api.Errorf(api.CodeInvalidArgument, "limits.cpus must be between 0.01 and %d (this host's CPUs), got %g", c.hostCPUs, l.CPUs)
	case l.MemoryMB < 16 || l.MemoryMB > c.hostMemoryMB:
		return limits{}, api.Errorf(api.CodeInvalidArgument, "limits.memoryMB must be between 16 and %d (this host's memory), got %d", c.hostMemoryMB, l.MemoryMB)
	case l.Pids < 16 || l.Pids > 1<<22:
		return limits{}, api.Errorf(api.CodeInvalidArgument, "limits.pids must be between 16 and %d, got %d", 1<<22, l.Pids)
	}
	return limits{
		CPUQuota:    int64(l.CPUs * cpuPeriod),
		MemoryBytes: l.MemoryMB << 20,
		Pids:        l.Pids,
	}, nil
}
