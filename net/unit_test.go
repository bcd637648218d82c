package net

import (
	"errors"
	"fmt"
	"maps"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/google/nftables"
	mdnetlink "github.com/mdlayher/netlink"
)

func TestAllocateRoundRobin(t *testing.T) {
	subnet := netip.MustParsePrefix("10.9.0.0/29") // .0 network, .1 gateway, .7 broadcast: .2-.6 usable
	st := &state{Sandboxes: map[string]*sandbox{}}
	var got []string
	for i := range 5 {
		a, err := st.allocate(subnet)
		if err != nil {
			t.Fatalf("allocation %d: %v", i, err)
		}
		st.Sandboxes[a.String()] = &sandbox{Addr: a}
		got = append(got, a.String())
	}
	want := []string{"10.9.0.2", "10.9.0.3", "10.9.0.4", "10.9.0.5", "10.9.0.6"}
	if !slices.Equal(got, want) {
		t.Fatalf("allocated %v, want %v", got, want)
	}
	if _, err := st.allocate(subnet); err == nil {
		t.Fatal("allocated from a full subnet")
	}
	// Released addresses come back only after the others (round robin).
	delete(st.Sandboxes, "10.9.0.3")
	delete(st.Sandboxes, "10.9.0.5")
	for _, want := range []string{"10.9.0.3", "10.9.0.5"} {
		a, err := st.allocate(subnet)
		if err != nil || a.String() != want {
			t.Fatalf("allocate = %s, %v; want %s", a, err, want)
		}
		st.Sandboxes[want] = &sandbox{Addr: a}
	}
}

func TestStateSurvivesSaveAndLoad(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sub", "network.json")
	st, err := loadState(path)
	if err != nil || len(st.Sandboxes) != 0 {
		t.Fatalf("missing state: %+v, %v", st, err)
	}
	st.Sandboxes["a"] = &sandbox{Addr: netip.MustParseAddr("10.9.0.2"), Mode: ModeAllow,
		Allow: []netip.Prefix{netip.MustParsePrefix("1.2.3.0/24")},
		Ports: []Port{{Port: 80, Protocol: TCP, HostPort: 30000}, {Port: 53, Protocol: UDP, HostPort: 30001, HostIP: localhost}}}
	if err := st.save(path); err != nil {
		t.Fatal(err)
	}
	entries, _ := os.ReadDir(filepath.Dir(path))
	if len(entries) != 1 {
		t.Fatalf("files after one save: %v", entries)
	}
	back, err := loadState(path)
	if err != nil {
		t.Fatal(err)
	}
	a := back.Sandboxes["a"]
	if a == nil || a.Addr != st.Sandboxes["a"].Addr || !slices.Equal(a.Ports, st.Sandboxes["a"].Ports) || !slices.Equal(a.Allow, st.Sandboxes["a"].Allow) {
		t.Fatalf("loaded %+v, saved %+v", a, st.Sandboxes["a"])
	}

	// The next saves alternate between the slots; a torn latest slot leaves the one before.
	back.Sandboxes["b"] = &sandbox{Addr: netip.MustParseAddr("10.9.0.3")}
	if err := back.save(path); err != nil {
		t.Fatal(err)
	}
	delete(back.Sandboxes, "a")
	if err := back.save(path); err != nil {
		t.Fatal(err)
	}
	if latest, err := loadState(path); err != nil || len(latest.Sandboxes) != 1 || latest.Sandboxes["b"] == nil {
		t.Fatalf("latest state: %+v, %v", latest, err)
	}
	latestSlot := slotPaths(path)[back.seq%2]
	data, err := os.ReadFile(latestSlot)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(latestSlot, data[:len(data)/2], 0o600); err != nil {
		t.Fatal(err)
	}
	if prev, err := loadState(path); err != nil || len(prev.Sandboxes) != 2 {
		t.Fatalf("with the latest slot torn: %+v, %v; want the state before", prev, err)
	}
	for _, p := range slotPaths(path) {
		if err := os.WriteFile(p, []byte("{"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := loadState(path); err == nil {
		t.Fatal("a corrupt state loaded")
	}
	if err := removeState(path); err != nil {
		t.Fatal(err)
	}
	if entries, _ := os.ReadDir(filepath.Dir(path)); len(entries) != 0 {
		t.Fatalf("left after removeState: %v", entries)
	}
}

func TestConfigValidation(t *testing.T) {
	good := Config{Subnet: netip.MustParsePrefix("10.89.0.0/16"), StatePath: "/run/x.json", Table: "nsbox", HostPortMin: 30000, HostPortMax: 32767}
	if err := good.validate(); err != nil {
		t.Fatalf("valid config: %v", err)
	}
	for name, mutate := range map[string]func(*Config){
		"ipv6 subnet":     func(c *Config) { c.Subnet = netip.MustParsePrefix("fd00::/64") },
		"unmasked subnet": func(c *Config) { c.Subnet = netip.MustParsePrefix("10.89.0.1/16") },
		"tiny subnet":     func(c *Config) { c.Subnet = netip.MustParsePrefix("10.89.0.0/30") },
		"no state path":   func(c *Config) { c.StatePath = "" },
		"no table":        func(c *Config) { c.Table = "" },
		"port range":      func(c *Config) { c.HostPortMin, c.HostPortMax = 40000, 30000 },
		"port 0":          func(c *Config) { c.HostPortMin = 0 },
	} {
		c := good
		mutate(&c)
		if err := c.validate(); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	if _, err := Open(Config{}); !errors.Is(err, ErrInvalid) {
		t.Fatalf("Open with an empty config: %v, want ErrInvalid", err)
	}
}

func TestModesAndNames(t *testing.T) {
	if err := checkMode(ModeAllow, []netip.Prefix{netip.MustParsePrefix("::/0")}); err == nil {
		t.Error("an IPv6 allow entry was accepted")
	}
	for _, never := range []string{"169.254.169.254/32", "169.254.0.0/16", "169.254.7.0/24", "100.100.100.200/32"} {
		for _, mode := range []Mode{ModeAllow, ModeEgress} {
			if err := checkMode(mode, []netip.Prefix{netip.MustParsePrefix(never)}); err == nil || !strings.Contains(err.Error(), "no sandbox may reach") {
				t.Errorf("mode %s allowing %s: %v, want a refusal", mode, never, err)
			}
		}
	}
	// Wider networks are accepted; the link-local and metadata rules still come first.
	for _, ok := range []string{"0.0.0.0/0", "100.64.0.0/10", "10.0.0.0/8"} {
		if err := checkMode(ModeEgress, []netip.Prefix{netip.MustParsePrefix(ok)}); err != nil {
			t.Errorf("egress allowing %s: %v", ok, err)
		}
	}
	if err := checkMode(ModeNone, []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}); err == nil {
		t.Error("mode none took an allow list")
	}
	got := normalizeAllow([]netip.Prefix{netip.MustParsePrefix("10.0.0.7/8"), netip.MustParsePrefix("1.1.1.1/32"), netip.MustParsePrefix("10.0.0.0/8")})
	if want := []netip.Prefix{netip.MustParsePrefix("1.1.1.1/32"), netip.MustParsePrefix("10.0.0.0/8")}; !slices.Equal(got, want) {
		t.Errorf("normalizeAllow = %v, want %v", got, want)
	}
	long := strings.Repeat("x", 63)
	if v := hostVethName("t", long); len(v) != maxIfname || !strings.HasPrefix(v, vethPrefix) || v == hostVethName("t", long[1:]) {
		t.Errorf("hostVethName = %q", v)
	}
	p, err := normalizePort(Port{Port: 80, HostIP: netip.MustParseAddr("0.0.0.0")})
	if err != nil || p.Protocol != TCP || p.HostIP.IsValid() {
		t.Errorf("normalizePort = %+v, %v: want tcp on every address", p, err)
	}
	p, err = normalizePort(Port{Port: 80, HostIP: netip.MustParseAddr("::ffff:127.0.0.1")})
	if err != nil || p.HostIP != localhost {
		t.Errorf("normalizePort of a mapped address = %+v, %v", p, err)
	}
}

func TestResolvConf(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string) string {
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		return path
	}
	local := map[netip.Addr]bool{netip.MustParseAddr("192.0.2.10"): true}
	stub := write("stub", "# managed\nnameserver 127.0.0.53\nnameserver 192.0.2.10\nnameserver fd00::1\nsearch corp.example\noptions edns0 trust-ad\n")
	upstream := write("upstream", "nameserver 198.51.100.1\nnameserver 198.51.100.2\nsearch other.example\n")

	got, servers, err := resolvConfFrom([]string{stub, upstream}, local)
	if err != nil {
		t.Fatal(err)
	}
	want := "nameserver 198.51.100.1\nnameserver 198.51.100.2\nsearch corp.example\noptions edns0 trust-ad\n"
	if string(got) != want {
		t.Fatalf("stub host: got\n%s\nwant\n%s", got, want)
	}
	if wantServers := []netip.Addr{netip.MustParseAddr("198.51.100.1"), netip.MustParseAddr("198.51.100.2")}; !slices.Equal(servers, wantServers) {
		t.Fatalf("stub host: nameservers %v, want %v", servers, wantServers)
	}

	got, servers, err = resolvConfFrom([]string{stub, filepath.Join(dir, "missing")}, local)
	if !errors.Is(err, ErrNoNameserver) || !strings.Contains(err.Error(), "127.0.0.53") {
		t.Fatalf("stub only: %v, want ErrNoNameserver naming the stub", err)
	}
	if string(got) != "search corp.example\noptions edns0 trust-ad\n" || len(servers) != 0 {
		t.Fatalf("stub only: got %q, nameservers %v", got, servers)
	}

	if got, _, err := resolvConfFrom([]string{upstream, stub}, nil); err != nil || !strings.HasPrefix(string(got), "nameserver 198.51.100.1\n") {
		t.Fatalf("plain host: %q, %v", got, err)
	}
}

func TestResolvConfOfThisHost(t *testing.T) {
	got, _, err := hostResolvConf()
	if err != nil && !errors.Is(err, ErrNoNameserver) {
		t.Fatalf("hostResolvConf: %v", err)
	}
	for _, line := range strings.Split(strings.TrimSpace(string(got)), "\n") {
		if f := strings.Fields(line); len(f) == 2 && f[0] == "nameserver" && netip.MustParseAddr(f[1]).IsLoopback() {
			t.Fatalf("ResolvConf gave sandboxes a loopback nameserver:\n%s", got)
		}
	}
}

func TestHostsFile(t *testing.T) {
	got := string(HostsFile("box1", netip.MustParseAddr("10.89.0.5")))
	if !strings.Contains(got, "127.0.0.1\tlocalhost\n") || !strings.HasSuffix(got, "10.89.0.5\tbox1\n") {
		t.Fatalf("HostsFile = %q", got)
	}
	if got := string(HostsFile("box2", netip.Addr{})); !strings.HasSuffix(got, "127.0.1.1\tbox2\n") {
		t.Fatalf("HostsFile without an address = %q", got)
	}
}

// TestTableBudgetBoundsTheBatch: the socket buffers restore sizes with tableBudget must hold
// the batch it sends. The batch is caught by a fake netlink connection and measured, for
// sandboxes in both modes with ports on every address and on one (crossing the element chunks).
func TestTableBudgetBoundsTheBatch(t *testing.T) {
	cfg := Config{Subnet: netip.MustParsePrefix("10.9.0.0/16"), Table: "nsbox", HostPortMin: 20000, HostPortMax: 29999}
	var sbs []sandboxRules
	addr := cfg.gateway()
	for i := range 700 {
		addr = addr.Next()
		sb := &sandbox{Addr: addr, Mode: ModeEgress, Ports: []Port{{Port: 80, Protocol: TCP, HostPort: 20000 + i}}}
		if i%3 == 0 || i%5 == 0 {
			if i%3 == 0 {
				sb.Mode = ModeAllow
			}
			sb.Allow = []netip.Prefix{netip.MustParsePrefix("192.0.2.0/24"), netip.MustParsePrefix("198.51.100.7/32")}
			sb.Ports = append(sb.Ports, Port{Port: 53, Protocol: UDP, HostPort: 20000 + i, HostIP: netip.MustParseAddr("127.0.0.1")})
		}
		sbs = append(sbs, sandboxRules{sb, hostVethName(cfg.Table, fmt.Sprint(i))})
	}
	for _, n := range []int{0, 1, len(sbs)} {
		var msgs, bytes int
		c, err := nftables.New(nftables.WithTestDial(func(req []mdnetlink.Message) ([]mdnetlink.Message, error) {
			for _, m := range req {
				b, err := m.MarshalBinary()
				if err != nil {
					return nil, err
				}
				msgs++
				bytes += len(b)
			}
			return req, nil
		}))
		if err != nil {
			t.Fatal(err)
		}
		private := append(slices.Clone(privateRanges), netip.MustParsePrefix("192.0.2.0/24"), netip.MustParsePrefix("198.18.0.0/15"))
		r := newRuleset(cfg, private, 0)
		if err := r.replaceTable(c, []string{"eth0"}, []netip.Addr{netip.MustParseAddr("10.0.0.2"), netip.MustParseAddr("10.0.0.3")}); err != nil {
			t.Fatal(err)
		}
		if err := r.addSandboxes(c, sbs[:n]); err != nil {
			t.Fatal(err)
		}
		if err := c.Flush(); err != nil {
			t.Fatal(err)
		}
		wantMsgs, wantBytes := r.tableBudget(sbs[:n])
		t.Logf("%d sandboxes: %d messages, %d bytes; budget %d messages, %d bytes", n, msgs, bytes, wantMsgs, wantBytes)
		if msgs > wantMsgs || bytes > wantBytes {
			t.Errorf("%d sandboxes: the batch has %d messages and %d bytes, more than the budget's %d and %d", n, msgs, bytes, wantMsgs, wantBytes)
		}
	}
}

// The host's addresses are its IPv4 addresses as net.InterfaceAddrs lists them.
func TestHostAddrs(t *testing.T) {
	got, err := hostAddrs()
	if err != nil {
		t.Fatal(err)
	}
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		t.Fatal(err)
	}
	want := map[netip.Addr]bool{}
	for _, a := range addrs {
		if addr, ok := netip.AddrFromSlice(a.(*net.IPNet).IP); ok && addr.Unmap().Is4() {
			want[addr.Unmap()] = true
		}
	}
	if !want[netip.MustParseAddr("127.0.0.1")] || !maps.Equal(got, want) {
		t.Errorf("host addresses: got %v, want %v", got, want)
	}
}
