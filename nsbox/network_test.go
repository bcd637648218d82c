package nsbox

import (
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"github.com/nsbox/nsbox/api"
	sandboxnet "github.com/nsbox/nsbox/net"
)

// netRuntime is a Runtime with a store and a real sandbox network (its own table, subnet and
// uplink) but no containers: a "sandbox" is a network namespace the test made and a record.
func netRuntime(t *testing.T) *Runtime {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: creates veths, network namespaces and an nftables table")
	}
	pid := os.Getpid()
	uplink := fmt.Sprintf("nsbq%d", pid%1000000)
	attrs := netlink.NewLinkAttrs()
	attrs.Name = uplink
	link := &netlink.Veth{LinkAttrs: attrs, PeerName: uplink + "p"}
	if err := netlink.LinkAdd(link); err != nil {
		t.Fatalf("create uplink: %v", err)
	}
	dir := t.TempDir()
	cfg := Config{RunDir: dir, ProxyDomain: "preview.test", ProxyPort: 8443, Network: NetworkConfig{
		Subnet:      netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 207, byte(pid >> 3), byte(pid & 7 * 32)}), 27),
		Table:       fmt.Sprintf("nsboxut_%d", pid),
		HostPortMin: 20000, HostPortMax: 29999,
		Uplinks: []string{uplink},
	}}
	recs, err := openRecords(filepath.Join(dir, "meta.db"))
	if err != nil {
		t.Fatal(err)
	}
	r := &Runtime{cfg: cfg, records: recs, log: slog.Default(), sandboxes: map[string]*sandbox{}, pool: newWarmPool(nil, 0)}
	r.ops = newOps(r)
	if err := r.openNetwork(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		for _, id := range r.net.Sandboxes() {
			if err := r.net.Detach(id); err != nil {
				t.Errorf("detach %s: %v", id, err)
			}
		}
		r.Close()
		if err := cleanupNetwork(cfg); err != nil {
			t.Errorf("cleanup network: %v", err)
		}
		if err := netlink.LinkDel(link); err != nil {
			t.Errorf("delete uplink: %v", err)
		}
	})
	return r
}

// fakeSandbox records a running sandbox whose network namespace is a new one of the test's.
func fakeSandbox(t *testing.T, r *Runtime, id string) {
	t.Helper()
	ns := make(chan netns.NsHandle, 1)
	go func() {
		runtime.LockOSThread() // ends with the goroutine: it stays in the new namespace
		h, err := netns.New()
		if err != nil {
			t.Error(err)
		}
		ns <- h
	}()
	h := <-ns
	if !h.IsOpen() {
		t.FailNow()
	}
	t.Cleanup(func() { h.Close() })
	rec := &record{Sandbox: api.Sandbox{ID: id, Status: api.StatusRunning, CreatedAt: time.Now(),
		Network: api.SandboxNetwork{Mode: api.NetworkEgress}}}
	a, err := r.net.Attach(id, fmt.Sprintf("/proc/%d/fd/%d", os.Getpid(), int(h)), sandboxnet.ModeEgress, nil)
	if err != nil {
		t.Fatal(err)
	}
	rec.Network = apiNetwork(a)
	if err := r.records.Insert(rec); err != nil {
		t.Fatal(err)
	}
	r.sandboxes[id] = &sandbox{id: id, rec: *rec}
}

func TestPreviewTarget(t *testing.T) {
	r := netRuntime(t)
	fakeSandbox(t, r, "pv")
	ip := netip.MustParseAddr(mustGet(t, r, "pv").Network.IP)

	if _, _, _, err := r.PreviewTarget("nope", 80); !api.IsCode(err, api.CodeNotFound) {
		t.Errorf("unknown sandbox: %v", err)
	}
	if _, _, _, err := r.PreviewTarget("pv", 8080); !api.IsCode(err, api.CodeNotFound) {
		t.Errorf("port not exposed: %v", err)
	}
	p, err := r.ExposePort("pv", api.ExposePortRequest{Port: 8080})
	if err != nil {
		t.Fatal(err)
	}
	if want := fmt.Sprintf("http://8080-pv-%s.preview.test:8443", p.Token); p.URL != want || len(p.Token) != 32 {
		t.Errorf("url %q, want %q", p.URL, want)
	}
	addr, token, public, err := r.PreviewTarget("pv", 8080)
	if err != nil || addr != netip.AddrPortFrom(ip, 8080) || token != p.Token || public {
		t.Errorf("PreviewTarget = %s %q %t %v; want %s:8080 %q false", addr, token, public, err, ip, p.Token)
	}
	pub, err := r.ExposePort("pv", api.ExposePortRequest{Port: 3000, Public: true})
	if err != nil || pub.Token != "" || pub.URL != "http://3000-pv.preview.test:8443" {
		t.Fatalf("public port = %+v, %v", pub, err)
	}
	if addr, token, public, err := r.PreviewTarget("pv", 3000); err != nil || addr.Port() != 3000 || token != "" || !public {
		t.Errorf("public PreviewTarget = %s %q %t %v", addr, token, public, err)
	}
	if _, err := r.ExposePort("pv", api.ExposePortRequest{Port: 53, Protocol: "udp"}); err != nil {
		t.Fatal(err)
	}
	if _, _, _, err := r.PreviewTarget("pv", 53); !api.IsCode(err, api.CodeNotFound) {
		t.Errorf("UDP port: %v, want not_found (the proxy carries TCP only)", err)
	}

	// Mode none: the port is still exposed, the sandbox unreachable.
	if _, err := r.SetNetwork("pv", api.NetworkSpec{Mode: api.NetworkNone}); err != nil {
		t.Fatal(err)
	}
	if _, _, _, err := r.PreviewTarget("pv", 8080); !api.IsCode(err, api.CodeUnavailable) {
		t.Errorf("mode none: %v, want unavailable", err)
	}
	if _, err := r.SetNetwork("pv", api.NetworkSpec{Mode: api.NetworkEgress}); err != nil {
		t.Fatal(err)
	}
	if _, _, _, err := r.PreviewTarget("pv", 8080); err != nil {
		t.Errorf("back to egress: %v", err)
	}

	// A sandbox that failed is unavailable; its port is still known.
	sb, _ := r.lookup("pv")
	sb.mu.Lock()
	r.fail(sb, "a test")
	sb.mu.Unlock()
	if _, _, _, err := r.PreviewTarget("pv", 8080); !api.IsCode(err, api.CodeUnavailable) {
		t.Errorf("failed sandbox: %v, want unavailable", err)
	}

	if err := r.UnexposePort("pv", 8080, "tcp"); err != nil {
		t.Fatal(err)
	}
	if _, _, _, err := r.PreviewTarget("pv", 8080); !api.IsCode(err, api.CodeNotFound) {
		t.Errorf("after unexpose: %v, want not_found", err)
	}
}

func mustGet(t *testing.T, r *Runtime, id string) *api.Sandbox {
	t.Helper()
	sb, err := r.Get(id)
	if err != nil {
		t.Fatal(err)
	}
	return sb
}
