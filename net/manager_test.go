package net

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/google/nftables"
	"github.com/vishvananda/netlink"
)

func TestAttachGivesAddressAndDefaultRoute(t *testing.T) {
	tn := newTestNet(t)
	ns, a := tn.sandbox("a", ModeEgress)
	if !tn.cfg.Subnet.Contains(a.Addr) || a.Addr == tn.gw() || a.Gateway != tn.gw() {
		t.Fatalf("attachment %+v: want an address of %s other than the gateway", a, tn.cfg.Subnet)
	}
	h := ns.handle(t)
	eth, err := h.LinkByName("eth0")
	if err != nil {
		t.Fatalf("no eth0 in the sandbox: %v", err)
	}
	if eth.Attrs().OperState != netlink.OperUp && eth.Attrs().Flags&net.FlagUp == 0 {
		t.Errorf("eth0 is not up: %v", eth.Attrs().Flags)
	}
	addrs, err := h.AddrList(eth, netlink.FAMILY_V4)
	if err != nil || len(addrs) != 1 || addrs[0].IPNet.String() != a.Addr.String()+"/32" {
		t.Fatalf("eth0 addresses %v (%v), want %s/32", addrs, err, a.Addr)
	}
	routes, err := h.RouteList(eth, netlink.FAMILY_V4)
	if err != nil {
		t.Fatal(err)
	}
	var viaGateway bool
	for _, r := range routes {
		if (r.Dst == nil || isZeroMask(r.Dst.Mask)) && r.Gw.Equal(tn.gw().AsSlice()) {
			viaGateway = true
		}
	}
	if !viaGateway {
		t.Fatalf("no default route via %s in %v", tn.gw(), routes)
	}
	if got, ok := tn.m.Lookup(tn.id("a")); !ok || got.Addr != a.Addr || got.HostVeth != hostVethName(tn.cfg.Table, tn.id("a")) {
		t.Fatalf("Lookup = %+v, %v", got, ok)
	}
	// The outside host's networks are private (10.232.n.0/24 is also the host's LAN): egress
	// mode reaches them only once they are allowed.
	ns.mustNotReach(t, hostPort(tn.allowed, 80))
	ns.mustNotReach(t, hostPort(tn.other, 80))
	if err := tn.m.SetMode(tn.id("a"), ModeEgress, []netip.Prefix{netip.PrefixFrom(tn.allowed, 24).Masked()}); err != nil {
		t.Fatal(err)
	}
	// Egress is masqueraded: the outside host sees the host's address.
	ns.mustGet(t, hostPort(tn.allowed, 80), "outside "+tn.hostOut.String()+":")
	ns.mustNotReach(t, hostPort(tn.other, 80))
	// 169.254.0.0/16 is refused, though the host itself reaches it, even with every network
	// allowed.
	(*testNS)(nil).mustGet(t, hostPort(tn.metadata, 80), "outside ")
	ns.mustNotReach(t, hostPort(tn.metadata, 80))
	if err := tn.m.SetMode(tn.id("a"), ModeEgress, []netip.Prefix{netip.MustParsePrefix("0.0.0.0/0")}); err != nil {
		t.Fatal(err)
	}
	ns.mustGet(t, hostPort(tn.other, 80), "outside ")
	ns.mustNotReach(t, hostPort(tn.metadata, 80))
}

// TestEgressReachesTheNameservers: in egress mode the nameservers of the sandboxes'
// resolv.conf are reachable on port 53 even on a private network, and on no other port.
func TestEgressReachesTheNameservers(t *testing.T) {
	tn := newTestNet(t)
	ns, _ := tn.sandbox("a", ModeEgress)
	tn.outside.serveUDPEcho(t, hostPort(tn.other, 53), "dns")
	tn.outside.serveHTTP(t, hostPort(tn.other, 54), "not-dns")
	ask := func() error {
		c, err := ns.dial("udp4", hostPort(tn.other, 53), time.Second, nil)
		if err != nil {
			return err
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(time.Second))
		if _, err := c.Write([]byte("q")); err != nil {
			return err
		}
		buf := make([]byte, 64)
		n, err := c.Read(buf)
		if err == nil && string(buf[:n]) != "dns q" {
			err = fmt.Errorf("answer %q", buf[:n])
		}
		return err
	}
	if err := ask(); err == nil {
		t.Fatal("egress reached port 53 of a private address that is not a nameserver")
	}
	tn.m.mu.Lock()
	err := tn.m.apply("test nameservers", func(c *nftables.Conn) error { return tn.m.rules.setNameservers(c, []netip.Addr{tn.other}) })
	tn.m.mu.Unlock()
	if err != nil {
		t.Fatal(err)
	}
	if err := ask(); err != nil {
		t.Fatalf("egress to the nameserver's port 53: %v", err)
	}
	ns.mustNotReach(t, hostPort(tn.other, 54))
}

func TestNoneModeHasOnlyLoopback(t *testing.T) {
	tn := newTestNet(t)
	ns, a := tn.sandbox("none", ModeNone)
	if a.Addr.IsValid() || a.HostVeth != "" {
		t.Fatalf("mode none attachment %+v has network", a)
	}
	assertOnlyLoopback(t, ns)
	if _, err := tn.m.Expose(tn.id("none"), Port{Port: 80}); !errors.Is(err, ErrConflict) {
		t.Fatalf("Expose in mode none: %v, want ErrConflict", err)
	}
}

func assertOnlyLoopback(t *testing.T, ns *testNS) {
	t.Helper()
	links, err := ns.handle(t).LinkList()
	if err != nil {
		t.Fatal(err)
	}
	if len(links) != 1 || links[0].Attrs().Name != "lo" {
		var names []string
		for _, l := range links {
			names = append(names, l.Attrs().Name)
		}
		t.Fatalf("links %v, want only lo", names)
	}
}

func TestAllowModeAndModeChanges(t *testing.T) {
	tn := newTestNet(t)
	allowed := netip.PrefixFrom(tn.allowed, 24).Masked()
	ns, a := tn.sandbox("allow", ModeAllow, allowed)
	id := tn.id("allow")
	ns.mustGet(t, hostPort(tn.allowed, 80), "outside ")
	ns.mustNotReach(t, hostPort(tn.other, 80))
	ns.mustNotReach(t, hostPort(tn.metadata, 80))

	// A link-local network cannot be listed; one that holds it is no way there either.
	if err := tn.m.SetMode(id, ModeAllow, []netip.Prefix{netip.PrefixFrom(tn.metadata, 32)}); !errors.Is(err, ErrInvalid) {
		t.Fatalf("SetMode allow with a link-local address: %v, want ErrInvalid", err)
	}
	if err := tn.m.SetMode(id, ModeAllow, []netip.Prefix{netip.PrefixFrom(tn.other, 24), netip.MustParsePrefix("128.0.0.0/1"), netip.MustParsePrefix("0.0.0.0/1")}); err != nil {
		t.Fatalf("SetMode allow: %v", err)
	}
	ns.mustNotReach(t, hostPort(tn.metadata, 80))
	ns.mustGet(t, hostPort(tn.other, 80), "outside ")
	if err := tn.m.SetMode(id, ModeAllow, []netip.Prefix{netip.PrefixFrom(tn.other, 24)}); err != nil {
		t.Fatalf("SetMode allow: %v", err)
	}
	ns.mustNotReach(t, hostPort(tn.allowed, 80))
	ns.mustGet(t, hostPort(tn.other, 80), "outside ")

	// Egress with the outside's networks allowed: both.
	if err := tn.m.SetMode(id, ModeEgress, []netip.Prefix{allowed, netip.PrefixFrom(tn.other, 24)}); err != nil {
		t.Fatalf("SetMode egress: %v", err)
	}
	ns.mustGet(t, hostPort(tn.allowed, 80), "outside ")
	ns.mustGet(t, hostPort(tn.other, 80), "outside ")

	if err := tn.m.SetMode(id, ModeNone, nil); err != nil {
		t.Fatalf("SetMode none: %v", err)
	}
	assertOnlyLoopback(t, ns)

	if err := tn.m.SetMode(id, ModeAllow, []netip.Prefix{allowed}); err != nil {
		t.Fatalf("SetMode from none: %v", err)
	}
	if got, _ := tn.m.Lookup(id); got.Addr != a.Addr || got.Mode != ModeAllow {
		t.Fatalf("after none and back: %+v, want address %s in mode allow", got, a.Addr)
	}
	ns.mustGet(t, hostPort(tn.allowed, 80), "outside ")
	ns.mustNotReach(t, hostPort(tn.other, 80))

	if err := tn.m.SetMode(id, "bogus", nil); !errors.Is(err, ErrInvalid) {
		t.Fatalf("SetMode bogus: %v, want ErrInvalid", err)
	}
	if err := tn.m.SetMode(id, ModeNone, []netip.Prefix{allowed}); !errors.Is(err, ErrInvalid) {
		t.Fatalf("SetMode none with an allow list: %v, want ErrInvalid", err)
	}
}

func TestSandboxesAreIsolated(t *testing.T) {
	tn := newTestNet(t)
	nsA, a := tn.sandbox("a", ModeEgress, netip.PrefixFrom(tn.allowed, 24).Masked())
	nsB, b := tn.sandbox("b", ModeAllow, tn.cfg.Subnet, netip.PrefixFrom(tn.hostOut, 32))
	nsB.serveHTTP(t, "0.0.0.0:8080", "b")
	nsA.serveHTTP(t, "0.0.0.0:8080", "a")

	// Routed through the gateway, even when B's allow list names the sandbox subnet.
	nsA.mustNotReach(t, hostPort(b.Addr, 8080))
	nsB.mustNotReach(t, hostPort(a.Addr, 8080))

	// Straight over layer 2, with a route A sets up itself: there is no shared segment.
	h := nsA.handle(t)
	eth, err := h.LinkByName("eth0")
	if err != nil {
		t.Fatal(err)
	}
	if err := h.RouteAdd(&netlink.Route{LinkIndex: eth.Attrs().Index, Dst: ipNet(b.Addr, 32), Scope: netlink.SCOPE_LINK}); err != nil {
		t.Fatal(err)
	}
	nsA.mustNotReach(t, hostPort(b.Addr, 8080))

	// A address borrowed from B does not get out either, where A's own does.
	nsA.mustGet(t, hostPort(tn.allowed, 80), "outside ")
	if err := h.AddrAdd(eth, &netlink.Addr{IPNet: ipNet(b.Addr, 32)}); err != nil {
		t.Fatal(err)
	}
	c, err := nsA.dial("tcp4", hostPort(tn.allowed, 80), time.Second, &net.TCPAddr{IP: b.Addr.AsSlice()})
	if err == nil {
		c.Close()
		t.Fatal("a sandbox got out with another sandbox's address")
	}
}

func TestSandboxCannotReachHostServices(t *testing.T) {
	tn := newTestNet(t)
	ns, _ := tn.sandbox("a", ModeEgress)
	var host *testNS
	host.serveHTTP(t, hostPort(tn.gw(), 18080), "host-gw")
	host.serveHTTP(t, hostPort(tn.hostOut, 18080), "host-out")
	host.mustGet(t, hostPort(tn.gw(), 18080), "host-gw")
	host.mustGet(t, hostPort(tn.hostOut, 18080), "host-out")
	ns.mustNotReach(t, hostPort(tn.gw(), 18080))
	ns.mustNotReach(t, hostPort(tn.hostOut, 18080))
	// Not even in allow mode with the host's address listed.
	if err := tn.m.SetMode(tn.id("a"), ModeAllow, []netip.Prefix{netip.PrefixFrom(tn.hostOut, 32), tn.cfg.Subnet}); err != nil {
		t.Fatal(err)
	}
	ns.mustNotReach(t, hostPort(tn.gw(), 18080))
	ns.mustNotReach(t, hostPort(tn.hostOut, 18080))
}

func TestExpose(t *testing.T) {
	tn := newTestNet(t)
	nsA, _ := tn.sandbox("a", ModeEgress)
	nsB, _ := tn.sandbox("b", ModeEgress)
	idA := tn.id("a")
	nsA.serveHTTP(t, "0.0.0.0:8080", "a-wildcard")
	nsA.serveHTTP(t, "127.0.0.1:8081", "a-loopback")
	nsA.serveUDPEcho(t, "0.0.0.0:5353", "a-udp")

	web, err := tn.m.Expose(idA, Port{Port: 8080})
	if err != nil {
		t.Fatalf("Expose 8080: %v", err)
	}
	if web.Protocol != TCP || web.HostPort < tn.cfg.HostPortMin || web.HostPort > tn.cfg.HostPortMax || web.HostIP.IsValid() {
		t.Fatalf("Expose 8080 = %+v: want tcp, a host port from the range, every address", web)
	}
	var host *testNS
	host.mustGet(t, hostPort(tn.gw(), web.HostPort), "a-wildcard")
	host.mustGet(t, hostPort(localhost, web.HostPort), "a-wildcard")
	host.mustGet(t, hostPort(tn.hostOut, web.HostPort), "a-wildcard")
	// From another machine: the client's address is kept.
	tn.outside.mustGet(t, hostPort(tn.hostOut, web.HostPort), "a-wildcard "+tn.allowed.String()+":")
	// Never from sandboxes (through the host: hairpin), the exposing one included.
	nsB.mustNotReach(t, hostPort(tn.gw(), web.HostPort))
	nsB.mustNotReach(t, hostPort(tn.hostOut, web.HostPort))
	nsA.mustNotReach(t, hostPort(tn.hostOut, web.HostPort))

	// A service listening on the sandbox's 127.0.0.1 only, exposed on the host's 127.0.0.1 only.
	lo, err := tn.m.Expose(idA, Port{Port: 8081, HostIP: localhost})
	if err != nil {
		t.Fatalf("Expose 8081: %v", err)
	}
	host.mustGet(t, hostPort(localhost, lo.HostPort), "a-loopback")
	host.mustNotReach(t, hostPort(tn.gw(), lo.HostPort))
	nsB.mustNotReach(t, hostPort(localhost, lo.HostPort))

	udp, err := tn.m.Expose(idA, Port{Port: 5353, Protocol: UDP, HostPort: tn.cfg.HostPortMax})
	if err != nil {
		t.Fatalf("Expose udp: %v", err)
	}
	c, err := net.Dial("udp4", hostPort(localhost, udp.HostPort))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(3 * time.Second))
	if _, err := c.Write([]byte("ping")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 100)
	n, err := c.Read(buf)
	if err != nil || string(buf[:n]) != "a-udp ping" {
		t.Fatalf("UDP through the exposed port: %q, %v", buf[:n], err)
	}

	// Exposing the same port again answers the same exposure.
	again, err := tn.m.Expose(idA, Port{Port: 8080, Protocol: TCP})
	if err != nil || again != web {
		t.Fatalf("Expose 8080 again = %+v, %v; want %+v", again, err, web)
	}
	if got := tn.m.Ports(idA); len(got) != 3 {
		t.Fatalf("Ports = %+v, want 3", got)
	}
}

func TestExposeRefusesTakenHostPorts(t *testing.T) {
	tn := newTestNet(t)
	tn.sandbox("a", ModeEgress)
	tn.sandbox("b", ModeEgress)
	idA, idB := tn.id("a"), tn.id("b")

	// Taken by a host socket.
	l, err := net.Listen("tcp4", hostPort(localhost, tn.cfg.HostPortMax))
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	_, err = tn.m.Expose(idA, Port{Port: 80, HostPort: tn.cfg.HostPortMax})
	if !errors.Is(err, ErrConflict) || !strings.Contains(err.Error(), "in use by a host process") {
		t.Fatalf("Expose on a host-bound port: %v, want ErrConflict saying so", err)
	}

	// Taken by another exposure, on every address or on one.
	p, err := tn.m.Expose(idA, Port{Port: 80})
	if err != nil {
		t.Fatal(err)
	}
	for _, req := range []Port{{Port: 80, HostPort: p.HostPort}, {Port: 80, HostPort: p.HostPort, HostIP: localhost}} {
		_, err = tn.m.Expose(idB, req)
		if !errors.Is(err, ErrConflict) || !strings.Contains(err.Error(), idA) {
			t.Fatalf("Expose %+v on a port exposed for A: %v, want ErrConflict naming A", req, err)
		}
	}
	// The same port of the same sandbox on another host port.
	if _, err := tn.m.Expose(idA, Port{Port: 80, HostPort: p.HostPort + 1}); !errors.Is(err, ErrConflict) {
		t.Fatalf("re-expose on another host port: %v, want ErrConflict", err)
	}
	// While exposed, host processes cannot bind the port.
	if l2, err := net.Listen("tcp4", hostPort(localhost, p.HostPort)); err == nil {
		l2.Close()
		t.Fatal("a host process could bind an exposed host port")
	}
	// UDP is another port space.
	if _, err := tn.m.Expose(idB, Port{Port: 80, Protocol: UDP, HostPort: p.HostPort}); err != nil {
		t.Fatalf("UDP on a TCP-exposed port number: %v", err)
	}
	// Not an address of this host.
	if _, err := tn.m.Expose(idB, Port{Port: 81, HostIP: tn.allowed}); !errors.Is(err, ErrInvalid) {
		t.Fatalf("Expose on a foreign host IP: %v, want ErrInvalid", err)
	}
	for _, bad := range []Port{{Port: 0}, {Port: 70000}, {Port: 80, Protocol: "sctp"}, {Port: 80, HostIP: netip.MustParseAddr("::1")}} {
		if _, err := tn.m.Expose(idB, bad); !errors.Is(err, ErrInvalid) {
			t.Fatalf("Expose %+v: %v, want ErrInvalid", bad, err)
		}
	}
	if _, err := tn.m.Expose("nope", Port{Port: 80}); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Expose for an unknown sandbox: %v, want ErrNotFound", err)
	}
	if err := tn.m.Unexpose(idA, 9999, TCP); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Unexpose of a port never exposed: %v, want ErrNotFound", err)
	}
}

func TestUnexposeCutsOpenConnections(t *testing.T) {
	tn := newTestNet(t)
	ns, _ := tn.sandbox("a", ModeEgress)
	id := tn.id("a")
	ns.serveHTTP(t, "0.0.0.0:8080", "a")
	p, err := tn.m.Expose(id, Port{Port: 8080})
	if err != nil {
		t.Fatal(err)
	}
	addr := hostPort(localhost, p.HostPort)
	c, err := net.DialTimeout("tcp4", addr, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	r := bufio.NewReader(c)
	if err := keepAliveRequest(c, r); err != nil {
		t.Fatalf("first request on the kept-alive connection: %v", err)
	}
	if err := tn.m.Unexpose(id, 8080, TCP); err != nil {
		t.Fatalf("Unexpose: %v", err)
	}
	if err := keepAliveRequest(c, r); err == nil {
		t.Fatal("the kept-alive connection still works after Unexpose")
	}
	(*testNS)(nil).mustNotReach(t, addr)
	if ports := tn.m.Ports(id); len(ports) != 0 {
		t.Fatalf("Ports after Unexpose = %+v", ports)
	}
	// The host port is free again.
	l, err := net.Listen("tcp4", addr)
	if err != nil {
		t.Fatalf("host port not released: %v", err)
	}
	l.Close()
}

func keepAliveRequest(c net.Conn, r *bufio.Reader) error {
	c.SetDeadline(time.Now().Add(2 * time.Second))
	if _, err := io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
		return err
	}
	resp, err := http.ReadResponse(r, nil)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if _, err := io.ReadAll(resp.Body); err != nil {
		return err
	}
	if resp.Close {
		return fmt.Errorf("server closed the connection")
	}
	return nil
}

func TestReopenRestoresEverything(t *testing.T) {
	tn := newTestNet(t)
	nsA, a := tn.sandbox("a", ModeAllow, netip.PrefixFrom(tn.allowed, 32))
	nsA.serveHTTP(t, "0.0.0.0:8080", "a")
	id := tn.id("a")
	p, err := tn.m.Expose(id, Port{Port: 8080})
	if err != nil {
		t.Fatal(err)
	}
	tn.m.Close()
	// Take the table away too: the second Manager must rebuild it from the state alone.
	if err := deleteTable(tn.cfg.Table); err != nil {
		t.Fatal(err)
	}
	tn.m = tn.open()
	got, ok := tn.m.Lookup(id)
	if !ok || got.Addr != a.Addr || got.Mode != ModeAllow {
		t.Fatalf("after reopen Lookup = %+v, %v", got, ok)
	}
	if ports := tn.m.Ports(id); len(ports) != 1 || ports[0] != p {
		t.Fatalf("after reopen Ports = %+v, want [%+v]", ports, p)
	}
	var host *testNS
	host.mustGet(t, hostPort(localhost, p.HostPort), "a")
	nsA.mustGet(t, hostPort(tn.allowed, 80), "outside")
	nsA.mustNotReach(t, hostPort(tn.other, 80))
	if l, err := net.Listen("tcp4", hostPort(localhost, p.HostPort)); err == nil {
		l.Close()
		t.Fatal("after reopen a host process could bind the exposed port")
	}
	// A new sandbox does not get the address of the existing one.
	_, b := tn.sandbox("b", ModeEgress)
	if b.Addr == a.Addr {
		t.Fatalf("address %s handed out twice", a.Addr)
	}
}

func TestDetachAndCleanupLeaveNothing(t *testing.T) {
	tn := newTestNet(t)
	ns, a := tn.sandbox("a", ModeEgress)
	id := tn.id("a")
	if _, err := tn.m.Expose(id, Port{Port: 8080}); err != nil {
		t.Fatal(err)
	}
	if err := tn.m.Detach(id); err != nil {
		t.Fatalf("Detach: %v", err)
	}
	if err := tn.m.Detach(id); err != nil {
		t.Fatalf("second Detach: %v", err)
	}
	waitFor(t, "the veth of a detached sandbox to go", func() bool { ok, _ := linkExists(hostVethName(tn.cfg.Table, id)); return !ok })
	assertOnlyLoopback(t, ns)
	if routes, err := netlink.RouteGet(a.Addr.AsSlice()); err == nil && len(routes) > 0 && routes[0].LinkIndex > 0 {
		if l, err := netlink.LinkByIndex(routes[0].LinkIndex); err == nil && l.Attrs().Name == hostVethName(tn.cfg.Table, id) {
			t.Fatalf("route to %s via its veth left after Detach", a.Addr)
		}
	}
	if _, ok := tn.m.Lookup(id); ok {
		t.Fatal("Lookup still finds the sandbox after Detach")
	}

	// Detach after the sandbox's namespace is gone.
	nsB, _ := tn.sandbox("b", ModeEgress)
	idB := tn.id("b")
	nsB.h.Close()
	waitFor(t, "the veth of a closed namespace to go", func() bool { ok, _ := linkExists(hostVethName(tn.cfg.Table, idB)); return !ok })
	if err := tn.m.Detach(idB); err != nil {
		t.Fatalf("Detach after the namespace exited: %v", err)
	}
	// SetMode from none refuses a namespace that is gone.
	nsC, _ := tn.sandbox("c", ModeNone)
	nsC.h.Close()
	if err := tn.m.SetMode(tn.id("c"), ModeEgress, nil); err == nil {
		t.Fatal("SetMode attached a network to a namespace that is gone")
	}

	tn.m.Close()
	if err := Cleanup(tn.cfg); err != nil {
		t.Fatalf("Cleanup: %v", err)
	}
	if left := tn.leftovers([]string{hostVethName(tn.cfg.Table, id), hostVethName(tn.cfg.Table, idB)}); len(left) > 0 {
		t.Fatalf("after Cleanup: %v", left)
	}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); !cond(); {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestAllocateBeforeAttach(t *testing.T) {
	tn := newTestNet(t)
	id := tn.id("pre")
	addr, err := tn.m.Allocate(id)
	if err != nil {
		t.Fatal(err)
	}
	if again, _ := tn.m.Allocate(id); again != addr {
		t.Fatalf("Allocate twice: %s then %s", addr, again)
	}
	ns := newNetns(t)
	a, err := tn.m.Attach(id, ns.path, ModeEgress, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tn.m.Detach(id) })
	if a.Addr != addr {
		t.Fatalf("Attach used %s, Allocate reserved %s", a.Addr, addr)
	}
	if _, err := tn.m.Attach(id, ns.path, ModeEgress, nil); !errors.Is(err, ErrConflict) {
		t.Fatalf("second Attach: %v, want ErrConflict", err)
	}
}

// TestDetachForgetsTheSandboxFlows: after Detach no conntrack entry has the sandbox's address
// as its reply source (flows to it through an exposed port or straight to its address).
func TestDetachForgetsTheSandboxFlows(t *testing.T) {
	tn := newTestNet(t)
	ns, a := tn.sandbox("a", ModeEgress)
	id := tn.id("a")
	ns.serveHTTP(t, "0.0.0.0:8080", "a")
	p, err := tn.m.Expose(id, Port{Port: 8080})
	if err != nil {
		t.Fatal(err)
	}
	for _, addr := range []string{hostPort(localhost, p.HostPort), hostPort(a.Addr, 8080)} {
		c, err := net.DialTimeout("tcp4", addr, 2*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if err := keepAliveRequest(c, bufio.NewReader(c)); err != nil {
			t.Fatalf("request to %s: %v", addr, err)
		}
	}
	flowsOfSandbox := func() int {
		flows, err := netlink.ConntrackTableList(netlink.ConntrackTable, netlink.FAMILY_V4)
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for _, f := range flows {
			if f.Reverse.SrcIP.Equal(a.Addr.AsSlice()) {
				n++
			}
		}
		return n
	}
	if n := flowsOfSandbox(); n < 2 {
		t.Fatalf("%d conntrack entries of the sandbox before Detach, want at least 2", n)
	}
	if err := tn.m.Detach(id); err != nil {
		t.Fatal(err)
	}
	if n := flowsOfSandbox(); n != 0 {
		t.Fatalf("%d conntrack entries of the sandbox after Detach", n)
	}
}
