package main

import (
	"context"
	"fmt"
	"maps"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/nftables"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/nsbox/nsbox/api"
)

// world is the outside host (newOutside) grown into the rest of the network a sandbox could
// try to reach: a LAN of the host's that is not a private range (a /28 of 198.18.0.0/15, the
// benchmarking range, on the host's side of the outside veth), and addresses standing for the
// internet (in 198.18.0.0/15), CGNAT (100.64.0.0/10) and the cloud metadata services
// (169.254.169.254, 100.100.100.200). Those are routed to the outside host only for packets
// from the test daemon's sandbox subnet (a policy routing rule and a table of the test's own),
// so the host's own routes to them, if it has any, are untouched.
type world struct {
	*outside
	lanHost, lan       netip.Addr // the host's address on the LAN, and the outside host's
	lanNet             netip.Prefix
	public, cgnat      netip.Addr
	linkLocal, aliyun  netip.Addr
	rfc1918            netip.Addr // the outside host's 10.208.x address (also a LAN of the host's)
	rfc1918Net         netip.Prefix
	routeTable, rulePr int
}

// newWorld makes the world for the daemon that will get network probe (build it before the
// daemon starts: the daemon reads the host's networks when it opens).
func newWorld(t *testing.T, probe testNetwork) *world {
	t.Helper()
	o := newOutside(t, probe)
	index := (int64(os.Getpid())*32 + daemonSeq.Load() + 1) % 4096
	base := netip.AddrFrom4([4]byte{198, byte(18 + index>>11), byte(index >> 3 & 0xff), byte(index & 7 * 32)})
	w := &world{outside: o,
		lanNet: netip.PrefixFrom(base, 28), lanHost: base.Next(), lan: base.Next().Next(),
		public:     addrPlus(base, 17), // outside the LAN's /28
		cgnat:      netip.AddrFrom4([4]byte{100, 64 + byte(index>>8), byte(index), 1}),
		linkLocal:  netip.MustParseAddr("169.254.169.254"),
		aliyun:     netip.MustParseAddr("100.100.100.200"),
		rfc1918:    o.allowed,
		rfc1918Net: netip.PrefixFrom(o.allowed, 27).Masked(),
		routeTable: 20000 + int(index), rulePr: 20000 + int(index),
	}
	host, err := netlink.LinkByName(o.veth)
	if err != nil {
		t.Fatal(err)
	}
	if err := netlink.AddrAdd(host, &netlink.Addr{IPNet: ipNetOf(netip.PrefixFrom(w.lanHost, 28))}); err != nil {
		t.Fatalf("LAN address on %s: %v", o.veth, err)
	}
	h, eth := nsEth0(t, o.ns)
	if err := h.AddrAdd(eth, &netlink.Addr{IPNet: ipNetOf(netip.PrefixFrom(w.lan, 28))}); err != nil {
		t.Fatal(err)
	}
	lo, err := h.LinkByName("lo")
	if err != nil {
		t.Fatal(err)
	}
	if err := h.LinkSetUp(lo); err != nil {
		t.Fatal(err)
	}
	for _, a := range []netip.Addr{w.public, w.cgnat, w.linkLocal, w.aliyun} {
		if err := h.AddrAdd(lo, &netlink.Addr{IPNet: ipNetOf(netip.PrefixFrom(a, 32))}); err != nil {
			t.Fatalf("outside address %s: %v", a, err)
		}
		// In the test's own table; the routes go with the veth.
		r := &netlink.Route{LinkIndex: host.Attrs().Index, Dst: ipNetOf(netip.PrefixFrom(a, 32)), Gw: o.allowed.AsSlice(), Table: w.routeTable}
		if err := netlink.RouteAdd(r); err != nil {
			t.Fatalf("route to %s in table %d: %v", a, w.routeTable, err)
		}
	}
	rule := netlink.NewRule()
	rule.Src = ipNetOf(probe.subnet)
	rule.Table = w.routeTable
	rule.Priority = w.rulePr
	if err := netlink.RuleAdd(rule); err != nil {
		t.Fatalf("routing rule from %s: %v", probe.subnet, err)
	}
	t.Cleanup(func() {
		if err := netlink.RuleDel(rule); err != nil {
			t.Errorf("delete the routing rule from %s: %v", probe.subnet, err)
		}
	})
	return w
}

func addrPlus(a netip.Addr, k int) netip.Addr {
	for range k {
		a = a.Next()
	}
	return a
}

func ipNetOf(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}

// hostListener is an HTTP server of the host's that records whether a sandbox connected.
type hostListener struct {
	port   int
	subnet netip.Prefix
	mu     sync.Mutex
	from   []string // remote addresses inside the sandbox subnet
}

func newHostListener(t *testing.T, addr string, subnet netip.Prefix) *hostListener {
	t.Helper()
	network := "tcp4"
	if strings.HasPrefix(addr, "[") {
		network = "tcp6"
	}
	ln, err := net.Listen(network, addr)
	if err != nil {
		t.Fatal(err)
	}
	l := &hostListener{port: ln.Addr().(*net.TCPAddr).Port, subnet: subnet}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, "host")
	}), ConnState: func(c net.Conn, s http.ConnState) {
		if ap, err := netip.ParseAddrPort(c.RemoteAddr().String()); s == http.StateNew && err == nil && subnet.Contains(ap.Addr()) {
			l.mu.Lock()
			l.from = append(l.from, c.RemoteAddr().String())
			l.mu.Unlock()
		}
	}}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return l
}

func (l *hostListener) sandboxConnections() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.from)
}

// reachAll tries every target (name → URL) from inside the sandbox in one exec and returns
// the names of those it fetched.
func reachAll(d *testDaemon, id string, targets map[string]string) []string {
	d.t.Helper()
	var script strings.Builder
	for _, name := range slices.Sorted(maps.Keys(targets)) {
		// timeout, not wget -T: busybox 1.35's wget -T crashes.
		fmt.Fprintf(&script, "if timeout 3 wget -q -O /dev/null %s 2>/dev/null; then echo %s; fi\n", targets[name], name)
	}
	res := d.exec(id, api.ExecRequest{Command: script.String()})
	out, _, _ := res.Output()
	return strings.Fields(string(out))
}

// TestNetworkReach tries, from inside a sandbox in each network mode, every place issue 10
// says a sandbox must not reach — the host's listeners (on 127.0.0.1, on the host side of the
// veth, on its LAN and uplink addresses), another sandbox directly and through its exposed
// port, private networks (RFC 1918, CGNAT, the host's LAN), link-local and the metadata
// addresses — and the internet it must reach, all against listeners the test made. Each mode
// must reach exactly what it allows.
func TestNetworkReach(t *testing.T) {
	n := daemonSeq.Load() + 1
	probe := testNetwork{subnet: newSubnet(int64(os.Getpid()), n), uplink: uplinkName(int64(os.Getpid()), n)}
	w := newWorld(t, probe)
	d := startDaemon(t, "--uplink", w.veth)
	if d.net.subnet != probe.subnet {
		t.Fatalf("the daemon got subnet %s, the world was made for %s", d.net.subnet, probe.subnet)
	}
	gw := d.net.subnet.Addr().Next()
	loopback := newHostListener(t, "127.0.0.1:0", d.net.subnet)
	every := newHostListener(t, "0.0.0.0:0", d.net.subnet)

	d.create(api.CreateSandboxRequest{ID: "peer", Image: "busybox"})
	startWeb(d, "peer", "8080", "peer")
	peerIP := d.sandboxIP("peer")
	mustHostGet(t, "http://"+peerIP+":8080/", "peer") // the daemon's user (root) reaches it
	public := d.expose("peer", api.ExposePortRequest{Port: 8080, Public: true})
	mustHostGet(t, fmt.Sprintf("http://%s:%d/", w.lanHost, public.HostPort), "peer") // from the host, on every address

	d.create(api.CreateSandboxRequest{ID: "probe", Image: "busybox"})
	targets := map[string]string{
		"host-loopback":    fmt.Sprintf("http://127.0.0.1:%d/", loopback.port),
		"host-gateway":     fmt.Sprintf("http://%s:%d/", gw, every.port),
		"host-lan":         fmt.Sprintf("http://%s:%d/", w.lanHost, every.port),
		"host-uplink":      fmt.Sprintf("http://%s:%d/", w.rfc1918Net.Addr().Next(), every.port),
		"peer-direct":      "http://" + peerIP + ":8080/",
		"peer-via-gateway": fmt.Sprintf("http://%s:%d/", gw, public.HostPort),
		"peer-via-lan":     fmt.Sprintf("http://%s:%d/", w.lanHost, public.HostPort),
		"rfc1918":          "http://" + w.rfc1918.String() + "/",
		"lan":              "http://" + w.lan.String() + "/",
		"cgnat":            "http://" + w.cgnat.String() + "/",
		"link-local":       "http://" + w.linkLocal.String() + "/",
		"metadata-aliyun":  "http://" + w.aliyun.String() + "/",
		"internet":         "http://" + w.public.String() + "/",
	}
	for _, c := range []struct {
		spec api.NetworkSpec
		want []string
	}{
		{api.NetworkSpec{Mode: api.NetworkEgress}, []string{"internet"}},
		{api.NetworkSpec{Mode: api.NetworkEgress, Allow: []string{w.rfc1918Net.String(), w.lanNet.String(), "100.64.0.0/10"}},
			[]string{"cgnat", "internet", "lan", "rfc1918"}},
		{api.NetworkSpec{Mode: api.NetworkEgress, Allow: []string{"0.0.0.0/0"}}, []string{"cgnat", "internet", "lan", "rfc1918"}},
		{api.NetworkSpec{Mode: api.NetworkAllow, Allow: []string{w.public.String()}}, []string{"internet"}},
		{api.NetworkSpec{Mode: api.NetworkAllow, Allow: []string{"0.0.0.0/1", "128.0.0.0/1"}}, []string{"cgnat", "internet", "lan", "rfc1918"}},
		{api.NetworkSpec{Mode: api.NetworkNone}, nil},
	} {
		if _, err := d.client.SetNetwork(context.Background(), "probe", c.spec); err != nil {
			t.Fatalf("network %+v: %v", c.spec, err)
		}
		if got := reachAll(d, "probe", targets); !slices.Equal(got, c.want) {
			t.Errorf("network %+v reached %v, want exactly %v", c.spec, got, c.want)
		}
	}
	for _, l := range []*hostListener{loopback, every} {
		if from := l.sandboxConnections(); len(from) > 0 {
			t.Errorf("the host listener on port %d accepted connections from sandboxes: %v", l.port, from)
		}
	}
	// The legitimate paths still work: the host reaches its own listeners and the exposed port.
	mustHostGet(t, fmt.Sprintf("http://127.0.0.1:%d/", loopback.port), "host")
	mustHostGet(t, fmt.Sprintf("http://127.0.0.1:%d/", public.HostPort), "peer")

	// Metadata addresses cannot even be listed.
	for _, bad := range []string{"169.254.169.254", "169.254.0.0/16", "100.100.100.200/32"} {
		d.expectError("PATCH", "/v1/sandboxes/probe/network", api.NetworkSpec{Mode: api.NetworkAllow, Allow: []string{bad}}, 400, api.CodeInvalidArgument)
	}
}

// TestHostUsersReachNoSandbox: a host user other than the daemon's (nobody, through setpriv)
// cannot connect to a sandbox's address, exposed port or not; it still reaches a port exposed
// on the host's 127.0.0.1 and the preview proxy, and root (the daemon's user) reaches the
// sandbox's address.
func TestHostUsersReachNoSandbox(t *testing.T) {
	if _, err := exec.LookPath("setpriv"); err != nil {
		t.Skip("needs setpriv (util-linux)")
	}
	proxyPort := freeLoopbackPort(t)
	d := startDaemon(t, "--proxy-listen", fmt.Sprintf("127.0.0.1:%d", proxyPort), "--proxy-domain", "preview.test")
	d.create(api.CreateSandboxRequest{ID: "web", Image: "busybox"})
	startWeb(d, "web", "8080", "web")
	ip := d.sandboxIP("web")
	mustHostGet(t, "http://"+ip+":8080/", "web")
	p := d.expose("web", api.ExposePortRequest{Port: 8080})
	if p.HostIP != "127.0.0.1" {
		t.Fatalf("a port exposed without hostIP or public listens on %s, want 127.0.0.1", p.HostIP)
	}
	asNobody := func(url string, header ...string) (string, error) {
		args := []string{"--reuid", "65534", "--regid", "65534", "--clear-groups", "--", "curl", "-sS", "-m", "5"}
		for _, h := range header {
			args = append(args, "-H", h)
		}
		out, err := exec.Command("setpriv", append(args, url)...).CombinedOutput()
		return strings.TrimSpace(string(out)), err
	}
	for _, url := range []string{"http://" + ip + ":8080/", "http://" + ip + ":22/"} {
		if out, err := asNobody(url); err == nil {
			t.Errorf("nobody fetched %s: %q", url, out)
		}
	}
	if out, err := asNobody(fmt.Sprintf("http://127.0.0.1:%d/", p.HostPort)); err != nil || out != "web" {
		t.Errorf("nobody through the port exposed on 127.0.0.1: %q, %v", out, err)
	}
	host := fmt.Sprintf("8080-web-%s.preview.test", p.Token)
	if out, err := asNobody(fmt.Sprintf("http://127.0.0.1:%d/", proxyPort), "Host: "+host); err != nil || out != "web" {
		t.Errorf("nobody through the preview proxy: %q, %v", out, err)
	}
	// The rule is about the socket's owner: the daemon's user still connects directly.
	mustHostGet(t, "http://"+ip+":8080/", "web")
}

// TestSpoofedSourcesAreDropped sends UDP datagrams out of a sandbox's network namespace (from
// the host, which may: the sandbox itself has no CAP_NET_RAW or CAP_NET_ADMIN) with source
// addresses that are not the sandbox's — another sandbox's, the host's, an outside address —
// and then one with its own, in each network mode that lets anything out. The outside
// listener must get only the last each time.
func TestSpoofedSourcesAreDropped(t *testing.T) {
	n := daemonSeq.Load() + 1
	probe := testNetwork{subnet: newSubnet(int64(os.Getpid()), n), uplink: uplinkName(int64(os.Getpid()), n)}
	w := newWorld(t, probe)
	d := startDaemon(t, "--uplink", w.veth)
	d.create(api.CreateSandboxRequest{ID: "liar", Image: "busybox"})
	d.create(api.CreateSandboxRequest{ID: "other", Image: "busybox"})
	own := netip.MustParseAddr(d.sandboxIP("liar"))
	var pc net.PacketConn
	if err := inNetns(w.ns, func() (err error) { pc, err = net.ListenPacket("udp4", w.public.String()+":9999"); return err }); err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	ns, err := netns.GetFromPath(fmt.Sprintf("/proc/%d/ns/net", d.agentPID("liar")))
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Close()
	sources := []netip.Addr{netip.MustParseAddr(d.sandboxIP("other")), d.net.subnet.Addr().Next(), w.lanHost, w.lan, own}
	// In every mode that lets the sandbox's own datagram out.
	for _, spec := range []api.NetworkSpec{
		{Mode: api.NetworkEgress},
		{Mode: api.NetworkEgress, Allow: []string{"0.0.0.0/0"}},
		{Mode: api.NetworkAllow, Allow: []string{w.public.String()}},
		{Mode: api.NetworkAllow, Allow: []string{"0.0.0.0/1", "128.0.0.0/1"}},
	} {
		if _, err := d.client.SetNetwork(context.Background(), "liar", spec); err != nil {
			t.Fatalf("network %+v: %v", spec, err)
		}
		for _, src := range sources {
			if err := inNetns(ns, func() error { return sendFrom(src, w.public, 9999, fmt.Sprintf("%s from %s", spec, src)) }); err != nil {
				t.Fatalf("send from %s: %v", src, err)
			}
		}
		// The datagrams take one path in order: the first to arrive must be the last sent.
		pc.SetReadDeadline(time.Now().Add(10 * time.Second))
		buf := make([]byte, 200)
		size, from, err := pc.ReadFrom(buf)
		if err != nil {
			t.Fatalf("network %+v: the datagram from the sandbox's own address never arrived: %v", spec, err)
		}
		if got, want := string(buf[:size]), fmt.Sprintf("%s from %s", spec, own); got != want {
			t.Fatalf("network %+v: a spoofed datagram got out: %q (from %s)", spec, got, from)
		}
	}
}

// sendFrom sends one UDP datagram from src; IP_TRANSPARENT lets the socket use an address
// that is not its network namespace's.
func sendFrom(src, dst netip.Addr, port int, payload string) error {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	if err := unix.SetsockoptInt(fd, unix.SOL_IP, unix.IP_TRANSPARENT, 1); err != nil {
		return err
	}
	if err := unix.Bind(fd, &unix.SockaddrInet4{Addr: src.As4(), Port: 40000}); err != nil {
		return err
	}
	return unix.Sendto(fd, []byte(payload), 0, &unix.SockaddrInet4{Addr: dst.As4(), Port: port})
}

// TestSandboxIPv6IsDropped: sandboxes have IPv4 only, and every IPv6 packet from one is
// dropped before anything else sees it, whatever its network mode, so no IPv6 address (the
// host's, fd00:ec2::254 the metadata service's, any) is reached. Sandbox root cannot give its
// eth0 IPv6 addresses or routes (no CAP_NET_ADMIN): the test does, from the host, as a sandbox
// that could would — a ULA on a network shared with the host side of its veth, where a host
// listener waits — and then tries from inside. As a control the drop rules are removed for a
// moment: the same attempt then gets through, and a restarted daemon drops it again.
func TestSandboxIPv6IsDropped(t *testing.T) {
	if _, err := exec.LookPath("python3"); err != nil {
		t.Skip("the host image needs python3")
	}
	d := startDaemon(t)
	d.create(api.CreateSandboxRequest{ID: "six", Image: "host"})
	ns, err := netns.GetFromPath(fmt.Sprintf("/proc/%d/ns/net", d.agentPID("six")))
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Close()
	prefix := fmt.Sprintf("fd6e:%x:%x::", os.Getpid()&0xffff, daemonSeq.Load())
	hostAddr, boxAddr := netip.MustParseAddr(prefix+"1"), netip.MustParseAddr(prefix+"2")
	addAddr := func(link netlink.Link, h *netlink.Handle, a netip.Addr) error {
		return h.AddrAdd(link, &netlink.Addr{IPNet: ipNetOf(netip.PrefixFrom(a, 64)), Flags: unix.IFA_F_NODAD})
	}
	h, eth := nsEth0(t, ns)
	if err := addAddr(eth, h, boxAddr); err != nil {
		t.Fatalf("the sandbox's IPv6 address: %v", err)
	}
	veth, err := netlink.LinkByIndex(eth.Attrs().ParentIndex) // the host side of eth0
	if err != nil {
		t.Fatalf("the host side of the sandbox's veth: %v", err)
	}
	host, err := netlink.NewHandle()
	if err != nil {
		t.Fatal(err)
	}
	defer host.Close()
	if err := addAddr(veth, host, hostAddr); err != nil {
		t.Fatalf("the host's IPv6 address on %s: %v", veth.Attrs().Name, err)
	}
	// Each side knows the other's link address for good, so that what is tried is the TCP
	// connection itself, and the control below does not depend on a neighbour discovery the
	// drop rules made fail a moment before (EHOSTUNREACH until the kernel retries).
	addNeigh := func(h *netlink.Handle, link, peer netlink.Link, a netip.Addr) {
		t.Helper()
		if err := h.NeighSet(&netlink.Neigh{LinkIndex: link.Attrs().Index, Family: unix.AF_INET6,
			State: netlink.NUD_PERMANENT, IP: a.AsSlice(), HardwareAddr: peer.Attrs().HardwareAddr}); err != nil {
			t.Fatalf("a neighbour entry for %s on %s: %v", a, link.Attrs().Name, err)
		}
	}
	addNeigh(h, eth, veth, hostAddr)
	addNeigh(host, veth, eth, boxAddr)
	l := newHostListener(t, fmt.Sprintf("[%s]:0", hostAddr), netip.PrefixFrom(boxAddr, 128))
	// It answers "connected" or why not.
	try := func() string {
		t.Helper()
		res := d.exec("six", api.ExecRequest{Command: fmt.Sprintf(`python3 -c '
import socket
try:
    socket.create_connection(("%s", %d), timeout=3).close()
    print("connected")
except OSError as e:
    print(e)'`, hostAddr, l.port)})
		out, _, _ := res.Output()
		return strings.TrimSpace(string(out))
	}
	for _, spec := range []api.NetworkSpec{
		{Mode: api.NetworkEgress},
		{Mode: api.NetworkEgress, Allow: []string{"0.0.0.0/0"}},
		{Mode: api.NetworkAllow, Allow: []string{"0.0.0.0/1", "128.0.0.0/1"}},
	} {
		if _, err := d.client.SetNetwork(context.Background(), "six", spec); err != nil {
			t.Fatalf("network %+v: %v", spec, err)
		}
		if got := try(); got == "connected" || got == "" {
			t.Errorf("network %+v: the sandbox's attempt to reach the host over IPv6: %q", spec, got)
		} else {
			t.Logf("network %+v: %s", spec, got)
		}
	}
	if from := l.sandboxConnections(); len(from) > 0 {
		t.Fatalf("the host's IPv6 listener accepted connections from the sandbox: %v", from)
	}

	// The control: without the table's drop rules (all IPv6 from a sandbox in the raw
	// prerouting hook, and all that is for the host in the input hook) the attempt succeeds.
	c, err := nftables.New()
	if err != nil {
		t.Fatal(err)
	}
	for _, chain := range []string{"antispoof", "input"} {
		c.FlushChain(&nftables.Chain{Table: &nftables.Table{Name: d.net.table, Family: nftables.TableFamilyINet}, Name: chain})
	}
	if err := c.Flush(); err != nil {
		t.Fatalf("flush the antispoof and input chains: %v", err)
	}
	got := try()
	d.stop()
	d.start() // the daemon builds its table anew
	if got != "connected" || len(l.sandboxConnections()) == 0 {
		t.Fatalf("without the drop rules the sandbox did not reach the host over IPv6 either (%v): the test tries nothing", got)
	}
	before := len(l.sandboxConnections())
	if got := try(); got == "connected" || len(l.sandboxConnections()) != before {
		t.Errorf("after a restart the sandbox reaches the host over IPv6: %q", got)
	}
}
