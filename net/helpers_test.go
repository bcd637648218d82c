package net

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/nftables"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
)

// The tests build everything with names and addresses of their own: table
// nsbox_test_<pid>_<n>, sandbox subnet 10.231.<n>.0/24, sandbox ids t<pid>-<n>-<name>, and an
// "outside" host as its own network namespace behind a veth nsbt<pid><n>x with
// 10.232.<n>.0/24 (reachable in allow mode) and 10.233.<n>.0/24 (not), plus a link-local
// address 169.254.77.<n> routed to it. Nothing is sent to any other address.

func TestMain(m *testing.M) {
	if os.Geteuid() != 0 {
		fmt.Fprintln(os.Stderr, "sandboxnet tests need root: they create veths, network namespaces and nftables tables")
		os.Exit(1)
	}
	os.Exit(m.Run())
}

var testSeq atomic.Int32

// testNS is a network namespace the test made, kept alive by an open handle.
type testNS struct {
	h    netns.NsHandle
	path string
}

func newNetns(t testing.TB) *testNS {
	t.Helper()
	type result struct {
		h   netns.NsHandle
		err error
	}
	done := make(chan result, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			runtime.UnlockOSThread()
			done <- result{err: err}
			return
		}
		defer orig.Close()
		h, err := netns.New()
		if err != nil {
			runtime.UnlockOSThread()
			done <- result{err: err}
			return
		}
		if err := netns.Set(orig); err != nil {
			done <- result{err: errors.Join(err, h.Close())} // thread stays locked and ends
			return
		}
		runtime.UnlockOSThread()
		done <- result{h: h}
	}()
	r := <-done
	if r.err != nil {
		t.Fatalf("create network namespace: %v", r.err)
	}
	ns := &testNS{h: r.h, path: fmt.Sprintf("/proc/%d/fd/%d", os.Getpid(), int(r.h))}
	t.Cleanup(func() { ns.h.Close() })
	return ns
}

// do runs fn inside the namespace (nil: the host).
func (ns *testNS) do(fn func() error) error {
	if ns == nil {
		return fn()
	}
	return inNetns(ns.h, fn)
}

func (ns *testNS) handle(t testing.TB) *netlink.Handle {
	t.Helper()
	h, err := netlink.NewHandleAt(ns.h)
	if err != nil {
		t.Fatalf("netlink handle: %v", err)
	}
	t.Cleanup(h.Close)
	return h
}

func (ns *testNS) listen(t testing.TB, network, addr string) net.Listener {
	t.Helper()
	var l net.Listener
	if err := ns.do(func() (err error) { l, err = net.Listen(network, addr); return err }); err != nil {
		t.Fatalf("listen %s %s: %v", network, addr, err)
	}
	t.Cleanup(func() { l.Close() })
	return l
}

func (ns *testNS) dial(network, addr string, timeout time.Duration, local net.Addr) (net.Conn, error) {
	var c net.Conn
	err := ns.do(func() (err error) {
		d := net.Dialer{Timeout: timeout, LocalAddr: local}
		c, err = d.Dial(network, addr)
		return err
	})
	return c, err
}

// serveHTTP serves, in the namespace (nil: the host), an HTTP server that answers
// "<name> <client address>".
func (ns *testNS) serveHTTP(t testing.TB, addr, name string) net.Listener {
	t.Helper()
	l := ns.listen(t, "tcp4", addr)
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "%s %s", name, r.RemoteAddr)
	})}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	return l
}

// serveUDPEcho answers every datagram with "<name> <payload>".
func (ns *testNS) serveUDPEcho(t testing.TB, addr, name string) {
	t.Helper()
	var pc net.PacketConn
	if err := ns.do(func() (err error) { pc, err = net.ListenPacket("udp4", addr); return err }); err != nil {
		t.Fatalf("listen udp %s: %v", addr, err)
	}
	t.Cleanup(func() { pc.Close() })
	go func() {
		buf := make([]byte, 1500)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			pc.WriteTo(fmt.Appendf(nil, "%s %s", name, buf[:n]), from)
		}
	}()
}

// get fetches http://addr/ from inside the namespace (nil: the host) on a fresh connection.
func (ns *testNS) get(addr string) (string, error) {
	client := &http.Client{Timeout: 3 * time.Second, Transport: &http.Transport{
		DisableKeepAlives: true,
		DialContext: func(ctx context.Context, network, a string) (net.Conn, error) {
			return ns.dial(network, a, 2*time.Second, nil)
		},
	}}
	resp, err := client.Get("http://" + addr + "/")
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return string(body), err
}

func (ns *testNS) mustGet(t testing.TB, addr, wantPrefix string) string {
	t.Helper()
	body, err := ns.get(addr)
	if err != nil {
		t.Fatalf("GET %s: %v", addr, err)
	}
	if !strings.HasPrefix(body, wantPrefix) {
		t.Fatalf("GET %s = %q, want %q...", addr, body, wantPrefix)
	}
	return body
}

func (ns *testNS) mustNotReach(t testing.TB, addr string) {
	t.Helper()
	c, err := ns.dial("tcp4", addr, time.Second, nil)
	if err == nil {
		c.Close()
		t.Fatalf("connected to %s; it must be unreachable", addr)
	}
}

// testNet is one Manager with its own table, subnet, state and outside host.
type testNet struct {
	t        testing.TB
	n        int
	cfg      Config
	m        *Manager
	outside  *testNS
	uplink   string     // host side of the veth to the outside host
	hostOut  netip.Addr // the host's address towards the outside host
	allowed  netip.Addr // outside address in 10.232.<n>.0/24
	other    netip.Addr // outside address in 10.233.<n>.0/24
	metadata netip.Addr // a link-local address the outside host also answers on
	ids      []string
}

// newTestNet makes a testNet; tweaks may change its Config (e.g. a larger subnet) before the
// Manager is opened.
func newTestNet(t testing.TB, tweaks ...func(cfg *Config, n int)) *testNet {
	t.Helper()
	n := int(testSeq.Add(1))
	pid := os.Getpid()
	tn := &testNet{t: t, n: n,
		uplink:   fmt.Sprintf("nsbt%d%cx", pid%10000, 'a'+n%26),
		hostOut:  netip.AddrFrom4([4]byte{10, 232, byte(n), 1}),
		allowed:  netip.AddrFrom4([4]byte{10, 232, byte(n), 2}),
		other:    netip.AddrFrom4([4]byte{10, 233, byte(n), 2}),
		metadata: netip.AddrFrom4([4]byte{169, 254, 77, byte(n)}),
	}
	tn.cfg = Config{
		Subnet:      netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 231, byte(n), 0}), 24),
		StatePath:   filepath.Join(t.TempDir(), "network.json"),
		Table:       fmt.Sprintf("nsbox_test_%d_%d", pid, n),
		HostPortMin: 29000 + 100*(n%10),
		HostPortMax: 29000 + 100*(n%10) + 99,
		Uplinks:     []string{tn.uplink},
	}
	for _, tweak := range tweaks {
		tweak(&tn.cfg, n)
	}
	tn.requireFreeAddresses()
	t.Cleanup(tn.assertNothingLeft)
	tn.makeOutside()
	t.Cleanup(func() {
		if err := Cleanup(tn.cfg); err != nil {
			t.Errorf("Cleanup: %v", err)
		}
	})
	// Registered before any sandbox's Detach, so it runs after them: the Manager open then.
	t.Cleanup(func() { tn.m.Close() })
	tn.m = tn.open()
	return tn
}

// requireFreeAddresses fails the test at once, saying why, when the host already routes any
// of the test's networks (a sandbox veth another daemon left, say): its packets would go
// there, and the test would fail later with a timeout that names nothing.
func (tn *testNet) requireFreeAddresses() {
	tn.t.Helper()
	ours := []netip.Prefix{tn.cfg.Subnet, netip.PrefixFrom(tn.allowed, 24).Masked(), netip.PrefixFrom(tn.other, 24).Masked(),
		netip.PrefixFrom(tn.metadata, 32)}
	routes, err := netlink.RouteList(nil, netlink.FAMILY_V4)
	if err != nil {
		tn.t.Fatalf("list the host's routes: %v", err)
	}
	for _, r := range routes {
		if r.Dst == nil {
			continue
		}
		addr, ok := netip.AddrFromSlice(r.Dst.IP)
		ones, _ := r.Dst.Mask.Size()
		dst := netip.PrefixFrom(addr.Unmap(), ones)
		for _, p := range ours {
			if ok && ones > 0 && dst.Overlaps(p) { // not the default route (nil or /0)
				dev := ""
				if link, err := netlink.LinkByIndex(r.LinkIndex); err == nil {
					dev = link.Attrs().Name
				}
				tn.t.Fatalf("the host already routes %s (dev %s), which overlaps this test's %s: a veth another nsbox daemon left? (`nsbox daemon --cleanup --force` with that daemon's flags removes it)", dst, dev, p)
			}
		}
	}
}

func (tn *testNet) open() *Manager {
	tn.t.Helper()
	m, err := Open(tn.cfg)
	if err != nil {
		tn.t.Fatalf("Open: %v", err)
	}
	return m
}

// makeOutside creates the outside host: a namespace behind a veth pair, with an HTTP server
// on each of its addresses.
func (tn *testNet) makeOutside() {
	t := tn.t
	t.Helper()
	tn.outside = newNetns(t)
	attrs := netlink.NewLinkAttrs()
	attrs.Name = tn.uplink
	if err := netlink.LinkAdd(&netlink.Veth{LinkAttrs: attrs, PeerName: "eth0", PeerNamespace: netlink.NsFd(tn.outside.h)}); err != nil {
		t.Fatalf("create outside veth: %v", err)
	}
	t.Cleanup(func() {
		if err := deleteVeth(tn.uplink); err != nil {
			t.Errorf("delete outside veth: %v", err)
		}
	})
	host, err := netlink.LinkByName(tn.uplink)
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range []netip.Addr{tn.hostOut, tn.other.Prev()} {
		if err := netlink.AddrAdd(host, &netlink.Addr{IPNet: ipNet(a, 24)}); err != nil {
			t.Fatalf("outside veth address: %v", err)
		}
	}
	if err := netlink.LinkSetUp(host); err != nil {
		t.Fatal(err)
	}
	if err := netlink.RouteAdd(&netlink.Route{LinkIndex: host.Attrs().Index, Dst: ipNet(tn.metadata, 32), Gw: tn.allowed.AsSlice()}); err != nil {
		t.Fatalf("route to the link-local test address: %v", err)
	}
	h := tn.outside.handle(t)
	eth, err := h.LinkByName("eth0")
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range []netip.Addr{tn.allowed, tn.other} {
		if err := h.AddrAdd(eth, &netlink.Addr{IPNet: ipNet(a, 24)}); err != nil {
			t.Fatal(err)
		}
	}
	lo, err := h.LinkByName("lo")
	if err != nil {
		t.Fatal(err)
	}
	if err := h.AddrAdd(lo, &netlink.Addr{IPNet: ipNet(tn.metadata, 32)}); err != nil {
		t.Fatal(err)
	}
	for _, l := range []netlink.Link{lo, eth} {
		if err := h.LinkSetUp(l); err != nil {
			t.Fatal(err)
		}
	}
	tn.outside.serveHTTP(t, "0.0.0.0:80", "outside")
}

// sandbox makes a namespace and attaches it; Detach runs at cleanup.
func (tn *testNet) sandbox(name string, mode Mode, allow ...netip.Prefix) (*testNS, *Attachment) {
	t := tn.t
	t.Helper()
	ns := newNetns(t)
	id := tn.id(name)
	a, err := tn.m.Attach(id, ns.path, mode, allow)
	if err != nil {
		t.Fatalf("Attach %s: %v", id, err)
	}
	t.Cleanup(func() {
		if err := tn.m.Detach(id); err != nil {
			t.Errorf("Detach %s: %v", id, err)
		}
	})
	return ns, a
}

func (tn *testNet) id(name string) string {
	id := fmt.Sprintf("t%d-%d-%s", os.Getpid(), tn.n, name)
	if !slices.Contains(tn.ids, id) {
		tn.ids = append(tn.ids, id)
	}
	return id
}

func (tn *testNet) gw() netip.Addr { return tn.cfg.gateway() }

func hostPort(a netip.Addr, port int) string {
	return netip.AddrPortFrom(a, uint16(port)).String()
}

// table lists the test's table (nil if it does not exist).
func (tn *testNet) table() *nftables.Table {
	c, err := nftables.New()
	if err != nil {
		tn.t.Fatal(err)
	}
	tab, err := c.ListTableOfFamily(tn.cfg.Table, nftables.TableFamilyINet)
	if err != nil {
		return nil
	}
	return tab
}

// assertNothingLeft checks that no link, address, route, table or state file of the test
// remains. Veths of a namespace that was closed go away asynchronously, so it waits a little.
func (tn *testNet) assertNothingLeft() {
	t := tn.t
	names := []string{tn.uplink}
	for _, id := range tn.ids {
		names = append(names, hostVethName(tn.cfg.Table, id))
	}
	var left []string
	for deadline := time.Now().Add(5 * time.Second); ; {
		left = tn.leftovers(names)
		if len(left) == 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if len(left) > 0 {
		t.Errorf("left behind: %s", strings.Join(left, "; "))
	}
}

func (tn *testNet) leftovers(names []string) []string {
	var left []string
	links, err := Consistent(netlink.LinkList)
	if err != nil {
		return []string{err.Error()}
	}
	for _, l := range links {
		if slices.Contains(names, l.Attrs().Name) {
			left = append(left, "link "+l.Attrs().Name)
		}
	}
	addrs, err := Consistent(func() ([]netlink.Addr, error) { return netlink.AddrList(nil, netlink.FAMILY_V4) })
	if err != nil {
		return []string{err.Error()}
	}
	for _, a := range addrs {
		if ip, _ := netip.AddrFromSlice(a.IP); tn.cfg.Subnet.Contains(ip.Unmap()) {
			left = append(left, "address "+a.IPNet.String())
		}
	}
	routes, err := Consistent(func() ([]netlink.Route, error) { return netlink.RouteList(nil, netlink.FAMILY_V4) })
	if err != nil {
		return []string{err.Error()}
	}
	for _, r := range routes {
		if r.Dst != nil && tn.cfg.Subnet.Contains(netip.AddrFrom4([4]byte(r.Dst.IP.To4()))) {
			left = append(left, "route "+r.Dst.String())
		}
	}
	if tn.table() != nil {
		left = append(left, "nftables table "+tn.cfg.Table)
	}
	for _, p := range slotPaths(tn.cfg.StatePath) {
		if _, err := os.Stat(p); err == nil {
			left = append(left, "state file "+p)
		}
	}
	return left
}

func linkExists(name string) (bool, error) {
	_, err := netlink.LinkByName(name)
	if isNotFound(err) {
		return false, nil
	}
	return err == nil, err
}
