package nsbox

import (
	"path/filepath"
	"testing"

	"github.com/nsbox/nsbox/api"
	"github.com/nsbox/nsbox/nsbox/backend"
)

func testConfig() *Config {
	return &Config{DefaultCPUs: 1, DefaultMemoryMB: 512, DefaultPids: 256, hostCPUs: 4, hostMemoryMB: 8192}
}

func TestResolveLimits(t *testing.T) {
	c := testConfig()
	req := api.Limits{}
	got, err := c.resolveLimits(&req)
	if err != nil || got != (backend.Limits{CPUQuota: 100000, MemoryBytes: 512 << 20, Pids: 256}) || req != (api.Limits{CPUs: 1, MemoryMB: 512, Pids: 256}) {
		t.Fatalf("defaults: %+v %+v %v", got, req, err)
	}
	got, err = c.resolveLimits(&api.Limits{CPUs: 0.25, MemoryMB: 64, Pids: 100})
	if err != nil || got != (backend.Limits{CPUQuota: 25000, MemoryBytes: 64 << 20, Pids: 100}) {
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
		if !api.ValidSandboxID(ok) {
			t.Errorf("%q should be valid", ok)
		}
	}
	for _, bad := range []string{"", "-a", "A", "a_b", "a.b", "a/b", "../x", "abcdefghijklmnopqrstuvwxyz0123456789-abcdefghijklmnopqrstuvwxyz01"} {
		if api.ValidSandboxID(bad) {
			t.Errorf("%q should be invalid", bad)
		}
	}
	if id := newID(); !api.ValidSandboxID(id) || id == newID() {
		t.Errorf("generated id %q", id)
	}
}

func TestValidateEnv(t *testing.T) {
	if err := api.CheckEnv(map[string]string{"A": "1", "PATH": "/x"}); err != nil {
		t.Fatal(err)
	}
	for _, bad := range []map[string]string{{"": "x"}, {"A=B": "x"}, {"A\x00": "x"}, {"A": "x\x00y"}, {"1A": "x"}, {"A.B": "x"}, {"UID": "0"}} {
		if err := api.CheckEnv(bad); !api.IsCode(err, api.CodeInvalidArgument) {
			t.Errorf("%q: %v", bad, err)
		}
	}
}

func TestRecords(t *testing.T) {
	s, err := openRecords(filepath.Join(t.TempDir(), "meta.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	r := &record{Sandbox: api.Sandbox{ID: "a", Status: api.StatusRunning}, Container: "c-1"}
	if err := s.Insert(r); err != nil {
		t.Fatal(err)
	}
	if err := s.Insert(r); !api.IsCode(err, api.CodeConflict) {
		t.Fatalf("second insert: %v", err)
	}
	r.Status = api.StatusFailed
	if err := s.Put(r); err != nil {
		t.Fatal(err)
	}
	list, err := s.List()
	if err != nil || len(list) != 1 || list[0].container() != "c-1" || list[0].Status != api.StatusFailed {
		t.Fatalf("list: %+v %v", list, err)
	}
	if err := s.Delete("a"); err != nil {
		t.Fatal(err)
	}
	if list, err := s.List(); err != nil || len(list) != 0 {
		t.Fatalf("list after delete: %v %v", list, err)
	}
	// A second daemon cannot open the same database.
	if _, err := openRecords(s.db.Path()); err == nil {
		t.Fatal("a second store opened a locked database")
	}
}

func TestCheckCwd(t *testing.T) {
	for _, ok := range []string{"/workspace", "/tmp/x", "/procfs", "/devel"} {
		if err := checkCwd(ok); err != nil {
			t.Errorf("%s: %v", ok, err)
		}
	}
	for _, bad := range []string{"rel", "/proc", "/proc/1/root/tmp/x", "/sys/x", "/dev/shm", "/run/nsbox/x", "/.nsbox", "/tmp/../proc/self"} {
		if err := checkCwd(bad); !api.IsCode(err, api.CodeInvalidArgument) {
			t.Errorf("%s: %v, want invalid_argument", bad, err)
		}
	}
}

func TestIsActivity(t *testing.T) {
	for _, c := range []struct {
		method, pattern string
		want            bool
	}{
		{"POST", "/v1/sandboxes/{id}/exec", true}, {"GET", "/v1/sandboxes/{id}/files", true},
		{"GET", "/v1/sandboxes/{id}/sessions/{sid}/terminal", true}, {"POST", "/v1/sandboxes/{id}/ports", true},
		{"GET", "/v1/sandboxes/{id}", false}, {"DELETE", "/v1/sandboxes/{id}", false}, {"POST", "/v1/sandboxes/{id}/pause", false},
		{"GET", "/v1/sandboxes/{id}/ports", false}, {"GET", "/v1/sandboxes", false}, {"GET", "/v1/images", false},
	} {
		if got := isActivity(c.method, c.pattern); got != c.want {
			t.Errorf("%s %s: %v", c.method, c.pattern, got)
		}
	}
}
