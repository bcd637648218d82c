package nsbox

import (
	"path/filepath"
	"slices"
	"testing"

	devconfig "github.com/opencontainers/cgroups/devices/config"
	"github.com/opencontainers/runc/libcontainer/configs"

	"github.com/nsbox/nsbox/api"
	"github.com/nsbox/nsbox/rootfs"
)

func testConfig() *Config {
	return &Config{DefaultCPUs: 1, DefaultMemoryMB: 512, DefaultPids: 256, hostCPUs: 4, hostMemoryMB: 8192}
}

func TestResolveLimits(t *testing.T) {
	c := testConfig()
	req := api.Limits{}
	got, err := c.resolveLimits(&req)
	if err != nil || got != (limits{CPUQuota: 100000, MemoryBytes: 512 << 20, Pids: 256}) || req != (api.Limits{CPUs: 1, MemoryMB: 512, Pids: 256}) {
		t.Fatalf("defaults: %+v %+v %v", got, req, err)
	}
	got, err = c.resolveLimits(&api.Limits{CPUs: 0.25, MemoryMB: 64, Pids: 100})
	if err != nil || got != (limits{CPUQuota: 25000, MemoryBytes: 64 << 20, Pids: 100}) {
		t.Fatalf("explicit: %+v %v", got, err)
	}
	for _, bad := range []api.Limits{{CPUs: 5}, {CPUs: -1}, {CPUs: 0.001}, {MemoryMB: 8}, {MemoryMB: 9000}, {Pids: 3}, {Pids: -1}} {
		if _, err := c.resolveLimits(&bad); !api.IsCode(err, api.CodeInvalidArgument) {
			t.Errorf("%+v: got %v, want invalid_argument", bad, err)
		}
	}
}

func TestIDPattern(t *testing.T) {
	for _, ok := range []string{"a", "0", "my-box-1", "abcdefghijklmnopqrstuvwxyz0123456789-abcdefghijklmnopqrstuvwxyz0"[:63]} {
		if !idPattern.MatchString(ok) {
			t.Errorf("%q should be valid", ok)
		}
	}
	for _, bad := range []string{"", "-a", "A", "a_b", "a.b", "a/b", "../x", "abcdefghijklmnopqrstuvwxyz0123456789-abcdefghijklmnopqrstuvwxyz01"} {
		if idPattern.MatchString(bad) {
			t.Errorf("%q should be invalid", bad)
		}
	}
	if id := newID(); !idPattern.MatchString(id) || id == newID() {
		t.Errorf("generated id %q", id)
	}
}

func TestValidateEnv(t *testing.T) {
	if err := validateEnv(map[string]string{"A": "1", "PATH": "/x"}); err != nil {
		t.Fatal(err)
	}
	for _, bad := range []map[string]string{{"": "x"}, {"A=B": "x"}, {"A\x00": "x"}, {"A": "x\x00y"}, {"1A": "x"}, {"A.B": "x"}, {"UID": "0"}} {
		if err := validateEnv(bad); !api.IsCode(err, api.CodeInvalidArgument) {
			t.Errorf("%q: %v", bad, err)
		}
	}
}

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
	img := &rootfs.Image{Name: "t", Layers: []string{"/l"}, Binds: []rootfs.Bind{{Source: "/usr", Dest: "/usr"}}, Masked: []string{"/etc/shadow"}}
	cfg := containerConfig(containerSpec{
		ID: "box", Rootfs: "/r", Image: img, AgentBin: "/bin/nsbox", CgroupPath: cgroupPath("nsbox", "box"),
		Limits: limits{CPUQuota: 50000, MemoryBytes: 1 << 30, Pids: 64}, Seccomp: true, MaxOpenFiles: 4096,
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
	res := cfg.Cgroups.Resources
	if res.Memory != 1<<30 || res.MemorySwap != 1<<30 || res.CpuQuota != 50000 || res.CpuPeriod != cpuPeriod || *res.PidsLimit != 64 {
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
	if slices.Contains(cfg.Capabilities.Bounding, "CAP_SYS_ADMIN") || len(cfg.Capabilities.Bounding) != 14 {
		t.Errorf("capabilities: %v", cfg.Capabilities.Bounding)
	}
	if !slices.Contains(cfg.MaskPaths, "/etc/shadow") || !slices.Contains(cfg.MaskPaths, "/proc/kcore") {
		t.Errorf("masked: %v", cfg.MaskPaths)
	}
	agentMounted, usrBound := false, false
	for _, m := range cfg.Mounts {
		readOnly := m.Flags&0x1 != 0 // MS_RDONLY
		if m.Destination == AgentPath && m.Source == "/bin/nsbox" && readOnly {
			agentMounted = true
		}
		if m.Destination == "/usr" && m.Source == "/usr" && readOnly {
			usrBound = true
		}
	}
	if !agentMounted || !usrBound {
		t.Errorf("mounts: agent %v /usr %v", agentMounted, usrBound)
	}
	if cfg.Seccomp == nil || cfg.Seccomp.DefaultAction != configs.Allow || len(cfg.Seccomp.Syscalls) < len(deniedSyscalls) {
		t.Errorf("seccomp: %+v", cfg.Seccomp)
	}
	if cfg.Rlimits[0].Hard != 4096 {
		t.Errorf("rlimits: %+v", cfg.Rlimits)
	}
	if cgroupPath("a/b", "x") != filepath.Join("/a/b", "x") {
		t.Errorf("cgroupPath")
	}
}

func TestStore(t *testing.T) {
	s, err := OpenStore(filepath.Join(t.TempDir(), "meta.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	r := &record{Sandbox: api.Sandbox{ID: "a", Status: api.StatusRunning}, CgroupPath: "/nsbox/a"}
	if err := s.Insert(r); err != nil {
		t.Fatal(err)
	}
	if err := s.Insert(r); !api.IsCode(err, api.CodeConflict) {
		t.Fatalf("second insert: %v", err)
	}
	got, err := s.Get("a")
	if err != nil || got.CgroupPath != "/nsbox/a" || got.Status != api.StatusRunning {
		t.Fatalf("get: %+v %v", got, err)
	}
	if _, err := s.Get("b"); !api.IsCode(err, api.CodeNotFound) {
		t.Fatalf("get missing: %v", err)
	}
	if err := s.Delete("a"); err != nil {
		t.Fatal(err)
	}
	if list, err := s.List(); err != nil || len(list) != 0 {
		t.Fatalf("list after delete: %v %v", list, err)
	}
	// A second daemon cannot open the same database.
	if _, err := OpenStore(s.db.Path()); err == nil {
		t.Fatal("a second store opened a locked database")
	}
}
