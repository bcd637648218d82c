package libcontainer

import (
	"path/filepath"
	"slices"
	"testing"

	devconfig "github.com/opencontainers/cgroups/devices/config"
	"github.com/opencontainers/runc/libcontainer/configs"
	"golang.org/x/sys/unix"

	"github.com/nsbox/nsbox/nsbox/backend"
	"github.com/nsbox/nsbox/rootfs"
)

func TestAgentEnvHasOnlyTheDefaults(t *testing.T) {
	// The hostname and the sandbox's own env reach the agent when its container is bound to
	// the sandbox (PUT /v1/config), and later with PUT /v1/env; it lays them over these.
	env := agentEnv()
	want := []string{"HOME=/root", "PATH=" + defaultPath, "TERM=xterm-256color"}
	if !slices.Equal(env, want) {
		t.Fatalf("got %v, want %v", env, want)
	}
}

func TestContainerConfigIsLockedDown(t *testing.T) {
	cfg := containerConfig(configSpec{
		Spec: backend.Spec{
			ID: "box", Layers: []string{"/l"}, ImageBinds: []backend.Mount{{Source: "/usr", Target: "/usr", ReadOnly: true}},
			Masked: []string{"/etc/shadow"}, Limits: backend.Limits{CPUQuota: 50000, MemoryBytes: 1 << 30, Pids: 64},
			Mounts: []backend.Mount{{Source: "/h", Target: "/workspace"}, {Source: "/m", Target: "/data", ReadOnly: true}},
		},
		Rootfs: "/r", AgentBin: "/bin/nsbox", CgroupPath: cgroupPath("nsbox", "box"),
	})
	if !cfg.NoNewPrivileges || cfg.Hostname != "box" || cfg.Cgroups.Path != "/nsbox/box" {
		t.Errorf("basics: nnp %v host %q cgroup %q", cfg.NoNewPrivileges, cfg.Hostname, cfg.Cgroups.Path)
	}
	for _, ns := range []configs.NamespaceType{configs.NEWNS, configs.NEWPID, configs.NEWUTS, configs.NEWIPC, configs.NEWNET, configs.NEWCGROUP} {
		if !cfg.Namespaces.Contains(ns) {
			t.Errorf("namespace %s missing", ns)
		}
	}
	if cfg.Namespaces.Contains(configs.NEWUSER) {
		t.Errorf("unexpected user namespace")
	}
	// runc mounts the cgroups only when told to (cgroup v2); on v1 the backend shows them.
	cgroupMounts := func(cfg *configs.Config) (n int) {
		for _, m := range cfg.Mounts {
			if m.Device == "cgroup" {
				n++
			}
		}
		return n
	}
	if n := cgroupMounts(cfg); n != 0 {
		t.Errorf("%d cgroup mounts without CgroupMount", n)
	}
	if withMount := containerConfig(configSpec{Rootfs: "/r", CgroupMount: true}); cgroupMounts(withMount) != 1 || withMount.Mounts[6].Destination != "/sys/fs/cgroup" || withMount.Mounts[5].Device != "sysfs" {
		t.Errorf("CgroupMount: mounts %+v", withMount.Mounts)
	}
	res := cfg.Cgroups.Resources
	if res.Memory != 1<<30 || res.MemorySwap != 1<<30 || res.CpuQuota != 50000 || res.CpuPeriod != backend.CPUPeriod || *res.PidsLimit != 64 {
		t.Errorf("resources: %+v", res)
	}
	for _, rule := range res.Devices {
		if rule.Major == devconfig.Wildcard || (rule.Major == 10 && rule.Minor == 200) {
			t.Errorf("device rule %+v must not be allowed", rule)
		}
	}
	for _, d := range cfg.Devices {
		if d.Path == "/dev/net/tun" {
			t.Errorf("/dev/net/tun must not be created")
		}
	}
	wantCaps := []string{"CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FOWNER", "CAP_FSETID", "CAP_KILL", "CAP_NET_BIND_SERVICE", "CAP_SETGID", "CAP_SETPCAP", "CAP_SETUID"}
	if !slices.Equal(cfg.Capabilities.Bounding, wantCaps) || !slices.Equal(cfg.Capabilities.Effective, wantCaps) {
		t.Errorf("capabilities: %v, want containerd 2.0's %v", cfg.Capabilities.Bounding, wantCaps)
	}
	if !slices.Contains(cfg.MaskPaths, "/etc/shadow") || !slices.Contains(cfg.MaskPaths, "/proc/kcore") ||
		!slices.Contains(cfg.MaskPaths, "/proc/kpageflags") || !slices.Contains(cfg.MaskPaths, "/proc/slabinfo") {
		t.Errorf("masked: %v", cfg.MaskPaths)
	}
	readOnly := map[string]bool{}
	for _, m := range cfg.Mounts {
		if m.Device == "bind" {
			readOnly[m.Source+":"+m.Destination] = m.Flags&unix.MS_RDONLY != 0
			if m.Flags&unix.MS_NOSUID == 0 || m.Flags&unix.MS_NODEV == 0 {
				t.Errorf("bind mount %s allows setuid files or devices", m.Destination)
			}
		}
	}
	want := map[string]bool{"/bin/nsbox:" + AgentPath: true, "/usr:/usr": true, "/h:/workspace": false, "/m:/data": true}
	for k, ro := range want {
		if got, ok := readOnly[k]; !ok || got != ro {
			t.Errorf("mount %s: present %v, read-only %v, want read-only %v", k, ok, got, ro)
		}
	}
	if last := cfg.Mounts[len(cfg.Mounts)-1]; last.Destination != AgentPath {
		t.Errorf("the last mount is %s, not the agent's: a later one could cover it", last.Destination)
	}
	if cfg.Seccomp != nil { // the agent loads the compiled program (seccompProgram)
		t.Errorf("runc's init is given a seccomp profile to compile: %+v", cfg.Seccomp)
	}
	if cgroupPath("a/b", "x") != filepath.Join("/a/b", "x") {
		t.Errorf("cgroupPath")
	}
}

func TestContainerConfigUserNamespace(t *testing.T) {
	ids := rootfs.IDMap{Host: 1 << 30, Size: rootfs.IDsPerSandbox}
	cfg := containerConfig(configSpec{
		Spec: backend.Spec{
			ID: "box", Layers: []string{"/l"}, ImageBinds: []backend.Mount{{Source: "/usr", Target: "/usr", ReadOnly: true}},
			Mounts: []backend.Mount{
				{Source: "/ws", Target: "/workspace", IDs: backend.MountIDs{Native: true}},
				{Source: "/m", Target: "/data", ReadOnly: true},
				{Source: "/w", Target: "/w", IDs: backend.MountIDs{RootUID: 1000, RootGID: 1001}},
			},
			IDs: ids, Capabilities: []string{"CAP_NET_RAW"},
		},
		Rootfs: "/r", AgentBin: "/bin/nsbox", CgroupPath: cgroupPath("nsbox", "box"), UserNS: "/proc/7/fd/9",
	})
	if got := cfg.Namespaces.PathOf(configs.NEWUSER); !cfg.Namespaces.Contains(configs.NEWUSER) || got != "/proc/7/fd/9" {
		t.Fatalf("the user namespace: joined at %q, want the daemon's (owned by the sandbox's root)", got)
	}
	want := []configs.IDMap{{ContainerID: 0, HostID: 1 << 30, Size: rootfs.IDsPerSandbox}}
	if !slices.Equal(cfg.UIDMappings, want) || !slices.Equal(cfg.GIDMappings, want) {
		t.Errorf("mappings %v %v, want %v", cfg.UIDMappings, cfg.GIDMappings, want)
	}
	if !slices.Contains(cfg.Capabilities.Bounding, "CAP_NET_RAW") || len(cfg.Capabilities.Bounding) != 10 {
		t.Errorf("extra capability: %v", cfg.Capabilities.Bounding)
	}
	maps := map[string]*configs.MountIDMapping{}
	for _, m := range cfg.Mounts {
		if m.Device == "bind" {
			maps[m.Destination] = m.IDMapping
		}
	}
	if maps[AgentPath] != nil || maps["/workspace"] != nil {
		t.Errorf("the agent binary and a copy-on-write workspace must not be id-mapped: %+v %+v", maps[AgentPath], maps["/workspace"])
	}
	for _, dst := range []string{"/usr", "/data"} {
		if m := maps[dst]; m == nil || m.UserNSPath != "/proc/7/fd/9" {
			t.Errorf("%s: id mapping %+v, want the container's own namespace", dst, m)
		}
	}
	// The writable mount: its owner 1000 is the container's root, the host's root is nobody.
	host := int64(1 << 30)
	wantUIDs := []configs.IDMap{{ContainerID: 1000, HostID: host, Size: 1}, {ContainerID: 1, HostID: host + 1, Size: 999}, {ContainerID: 1001, HostID: host + 1001, Size: 65535 - 1000}}
	if m := maps["/w"]; m == nil || !slices.Equal(m.UIDMappings, wantUIDs) || m.GIDMappings[0] != (configs.IDMap{ContainerID: 1001, HostID: host, Size: 1}) {
		t.Errorf("writable mount: id mapping %+v, want uids %v", m, wantUIDs)
	}
	if got := idMaps(100000, ids); !slices.Equal(got, []configs.IDMap{{ContainerID: 100000, HostID: host, Size: 1}, {ContainerID: 1, HostID: host + 1, Size: 65535}}) {
		t.Errorf("owner outside the range: %v", got)
	}
}
