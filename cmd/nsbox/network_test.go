package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"regexp"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"github.com/nsbox/nsbox/api"
	"github.com/nsbox/nsbox/client"
)

// The network tests only talk to addresses they made: sandboxes' addresses, the host's
// 127.0.0.1, the address the harness puts on its own uplink, and an "outside" host that is a
// network namespace of the test's own.

// startWeb starts busybox httpd (it daemonizes) in a sandbox on listen, serving body.
func startWeb(d *testDaemon, id, listen, body string) {
	d.t.Helper()
	dir := "/www-" + body
	d.sh(id, fmt.Sprintf("mkdir -p %s && echo %s > %s/index.html && httpd -p %s -h %s", dir, body, dir, listen, dir))
}

// hostGet fetches url from the host with a short timeout and no connection reuse.
func hostGet(url string) (string, error) {
	c := &http.Client{Timeout: 3 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := c.Get(url)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return strings.TrimSpace(string(b)), err
}

func mustHostGet(t *testing.T, url, want string) {
	t.Helper()
	var got string
	var err error
	for range 50 { // the server in the sandbox may still be starting
		if got, err = hostGet(url); err == nil {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err != nil || got != want {
		t.Fatalf("GET %s from the host = %q, %v; want %q", url, got, err, want)
	}
}

// sandboxGet fetches url from inside a sandbox; ok is false when it could not.
func sandboxGet(d *testDaemon, id, url string) (string, bool) {
	d.t.Helper()
	// timeout, not wget -T: busybox 1.35's wget -T crashes.
	res := d.exec(id, api.ExecRequest{Command: "timeout 3 wget -q -O- " + url})
	out, _, _ := res.Output()
	return strings.TrimSpace(string(out)), res.ExitCode == 0
}

func (d *testDaemon) expose(id string, req api.ExposePortRequest) *api.ExposedPort {
	d.t.Helper()
	p, err := d.client.ExposePort(context.Background(), id, req)
	if err != nil {
		d.t.Fatalf("expose %+v of %s: %v", req, id, err)
	}
	return p
}

func (d *testDaemon) sandboxIP(id string) string {
	d.t.Helper()
	sb, err := d.client.GetSandbox(context.Background(), id)
	if err != nil {
		d.t.Fatal(err)
	}
	return sb.Network.IP
}

// hostAddr puts an address of the test's own on the harness's uplink and returns it.
func (n testNetwork) hostAddr(t *testing.T) netip.Addr {
	t.Helper()
	addr := n.subnet.Addr().As4()
	addr[1] -= 16 // the /27 of 10.224.0.0/12 that matches the sandbox subnet
	a := netip.AddrFrom4(addr).Next()
	link, err := netlink.LinkByName(n.uplink)
	if err != nil {
		t.Fatal(err)
	}
	if err := netlink.AddrAdd(link, &netlink.Addr{IPNet: &net.IPNet{IP: a.AsSlice(), Mask: net.CIDRMask(32, 32)}}); err != nil {
		t.Fatalf("add %s to %s: %v", a, n.uplink, err)
	}
	if err := netlink.LinkSetUp(link); err != nil {
		t.Fatal(err)
	}
	return a
}

func TestExposeHTTP(t *testing.T) {
	d := startDaemon(t)
	sb := d.create(api.CreateSandboxRequest{ID: "web", Image: "busybox"})
	if sb.Network.Mode != api.NetworkEgress || !d.net.subnet.Contains(netip.MustParseAddr(sb.Network.IP)) {
		t.Fatalf("network of a new sandbox = %+v, want egress with an address in %s", sb.Network, d.net.subnet)
	}
	if hosts := d.sh("web", "cat /etc/hosts"); !strings.Contains(hosts, sb.Network.IP+"\tweb") {
		t.Errorf("/etc/hosts does not name the sandbox: %q", hosts)
	}
	if out := d.exec("web", api.ExecRequest{Command: "echo x >> /etc/resolv.conf"}); out.ExitCode == 0 {
		t.Error("/etc/resolv.conf is writable in the sandbox")
	}
	// No CAP_NET_ADMIN: the sandbox cannot change its addresses, routes or rules.
	for _, cmd := range []string{"ip addr add 10.1.2.3/32 dev eth0", "ip route del default", "ip link set eth0 down"} {
		if res := d.exec("web", api.ExecRequest{Command: cmd}); res.ExitCode == 0 {
			t.Errorf("%q succeeded in the sandbox", cmd)
		}
	}
	startWeb(d, "web", "8080", "hello")
	startWeb(d, "web", "127.0.0.1:8081", "local-only")

	// By default on the host's 127.0.0.1 only.
	p := d.expose("web", api.ExposePortRequest{Port: 8080})
	if p.Protocol != "tcp" || p.HostIP != "127.0.0.1" || p.HostPort < 20000 || p.HostPort > 29999 ||
		!regexp.MustCompile(`^[0-9a-f]{32}$`).MatchString(p.Token) || p.URL != fmt.Sprintf("http://127.0.0.1:%d", p.HostPort) {
		t.Fatalf("exposed port = %+v", p)
	}
	mustHostGet(t, p.URL, "hello")
	hostAddr := d.net.hostAddr(t)
	if out, err := hostGet(fmt.Sprintf("http://%s:%d/", hostAddr, p.HostPort)); err == nil {
		t.Errorf("a port exposed on 127.0.0.1 answered on %s: %q", hostAddr, out)
	}
	mustHostGet(t, fmt.Sprintf("http://%s:8080/", sb.Network.IP), "hello")
	// A server on the sandbox's 127.0.0.1 only, on a host port the test names, on 127.0.0.1 only.
	local := d.expose("web", api.ExposePortRequest{Port: 8081, HostPort: p.HostPort + 1, HostIP: "127.0.0.1", Public: true})
	if local.HostIP != "127.0.0.1" || local.HostPort != p.HostPort+1 || local.Token != "" || !local.Public {
		t.Fatalf("exposed local port = %+v", local)
	}
	mustHostGet(t, local.URL, "local-only")

	// Public: on every address, without a token; or on every address with a token, asked for.
	pub := d.expose("web", api.ExposePortRequest{Port: 8082, Public: true})
	every := d.expose("web", api.ExposePortRequest{Port: 8083, HostIP: "0.0.0.0"})
	if pub.HostIP != "0.0.0.0" || pub.Token != "" || every.HostIP != "0.0.0.0" || every.Token == "" || every.Public {
		t.Fatalf("public exposure %+v, exposure on 0.0.0.0 %+v", pub, every)
	}
	startWeb(d, "web", "8082", "public")
	mustHostGet(t, fmt.Sprintf("http://%s:%d/", hostAddr, pub.HostPort), "public")
	for _, port := range []int{8082, 8083} {
		if err := d.client.UnexposePort(context.Background(), "web", port, ""); err != nil {
			t.Fatal(err)
		}
	}

	// The same request again answers the same exposure; a taken host port is a conflict.
	if again := d.expose("web", api.ExposePortRequest{Port: 8080}); *again != *p {
		t.Errorf("exposing again = %+v, want %+v", again, p)
	}
	e := d.expectError("POST", "/v1/sandboxes/web/ports", api.ExposePortRequest{Port: 9000, HostPort: p.HostPort}, 409, api.CodeConflict)
	if !strings.Contains(e.Message, fmt.Sprint(p.HostPort)) {
		t.Errorf("conflict message does not name the host port: %q", e.Message)
	}
	d.expectError("POST", "/v1/sandboxes/web/ports", api.ExposePortRequest{Port: 0}, 400, api.CodeInvalidArgument)
	d.expectError("POST", "/v1/sandboxes/web/ports", api.ExposePortRequest{Port: 70000}, 400, api.CodeInvalidArgument)
	d.expectError("POST", "/v1/sandboxes/web/ports", api.ExposePortRequest{Port: 80, Protocol: "sctp"}, 400, api.CodeInvalidArgument)
	d.expectError("POST", "/v1/sandboxes/web/ports", api.ExposePortRequest{Port: 80, HostIP: "nope"}, 400, api.CodeInvalidArgument)
	d.expectError("POST", "/v1/sandboxes/nope/ports", api.ExposePortRequest{Port: 80}, 404, api.CodeNotFound)
	d.expectError("DELETE", "/v1/sandboxes/web/ports/abc", nil, 400, api.CodeInvalidArgument)
	d.expectError("DELETE", "/v1/sandboxes/web/ports/8080?protocol=icmp", nil, 400, api.CodeInvalidArgument)
	d.expectError("DELETE", "/v1/sandboxes/web/ports/8080?protocol=udp", nil, 404, api.CodeNotFound)

	// The CLI.
	out, stderr, code := d.cli("", "port", "add", "web", "53/udp")
	if code != 0 || !strings.Contains(out, "127.0.0.1:") || !strings.Contains(out, "/udp -> 53/udp") || !strings.Contains(out, "udp://127.0.0.1:") ||
		!strings.Contains(out, "listens on 127.0.0.1: this host only") {
		t.Fatalf("port add 53/udp: %d %q %q", code, out, stderr)
	}
	out, stderr, code = d.cli("", "port", "add", "--public", "web", "9090")
	if code != 0 || !strings.HasPrefix(out, "0.0.0.0:") || !strings.Contains(out, "every host address") || !strings.Contains(out, "public: no token") {
		t.Fatalf("port add --public 9090: %d %q %q", code, out, stderr)
	}
	out, stderr, code = d.cli("", "port", "add", "--host-ip", hostAddr.String(), "web", "9091")
	if code != 0 || !strings.HasPrefix(out, hostAddr.String()+":") || !strings.Contains(out, "listens on "+hostAddr.String()+" only") || !strings.Contains(out, "asks for its token") {
		t.Fatalf("port add --host-ip: %d %q %q", code, out, stderr)
	}
	for _, port := range []string{"9090", "9091"} {
		if _, stderr, code := d.cli("", "port", "rm", "web", port); code != 0 {
			t.Fatalf("port rm %s: %s", port, stderr)
		}
	}
	out, _, _ = d.cli("", "port", "ls", "web")
	for _, want := range []string{"8080", "8081", "53", "udp", "127.0.0.1:" + fmt.Sprint(local.HostPort)} {
		if !strings.Contains(out, want) {
			t.Errorf("port ls lacks %q:\n%s", want, out)
		}
	}
	out, _, _ = d.cli("", "port", "ls", "--json", "web")
	var listed []api.ExposedPort
	if err := json.Unmarshal([]byte(out), &listed); err != nil || len(listed) != 3 || listed[0].Port != 53 || listed[1] != *p {
		t.Fatalf("port ls --json = %q (%v)", out, err)
	}
	if _, stderr, code := d.cli("", "port", "rm", "web", "53/udp"); code != 0 {
		t.Fatalf("port rm 53/udp: %s", stderr)
	}
	if out, _, _ := d.cli("", "ls"); !strings.Contains(out, sb.Network.IP) {
		t.Errorf("ls does not show the ip:\n%s", out)
	}

	if err := d.client.UnexposePort(context.Background(), "web", 8080, ""); err != nil {
		t.Fatal(err)
	}
	if _, err := hostGet(p.URL); err == nil {
		t.Error("the host port still answers after unexpose")
	}
	ports, err := d.client.ListPorts(context.Background(), "web")
	if err != nil || len(ports) != 1 || ports[0].Port != 8081 {
		t.Fatalf("ports after unexpose = %+v, %v", ports, err)
	}
}

func TestUnexposeCutsKeepAlive(t *testing.T) {
	d := startDaemon(t)
	d.create(api.CreateSandboxRequest{ID: "echo", Image: "busybox"})
	d.sh("echo", "nc -ll -p 9000 -e cat </dev/null >/dev/null 2>&1 &")
	p := d.expose("echo", api.ExposePortRequest{Port: 9000})
	addr := fmt.Sprintf("127.0.0.1:%d", p.HostPort)
	var conn net.Conn
	var rd *bufio.Reader
	roundTrip := func(line string) (string, error) {
		conn.SetDeadline(time.Now().Add(3 * time.Second))
		if _, err := io.WriteString(conn, line+"\n"); err != nil {
			return "", err
		}
		return rd.ReadString('\n')
	}
	var err error
	for range 50 {
		if conn, err = net.DialTimeout("tcp", addr, time.Second); err == nil {
			rd = bufio.NewReader(conn)
			if got, err := roundTrip("one"); err == nil && got == "one\n" {
				break
			}
			conn.Close()
			conn = nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	if conn == nil {
		t.Fatalf("no echo through %s", addr)
	}
	defer conn.Close()
	if got, err := roundTrip("two"); err != nil || got != "two\n" {
		t.Fatalf("second line on the open connection: %q, %v", got, err)
	}
	if err := d.client.UnexposePort(context.Background(), "echo", 9000, "tcp"); err != nil {
		t.Fatal(err)
	}
	if got, err := roundTrip("three"); err == nil {
		t.Fatalf("the open connection still echoes after unexpose: %q", got)
	}
}

func TestSandboxesAreIsolated(t *testing.T) {
	d := startDaemon(t)
	d.create(api.CreateSandboxRequest{ID: "a", Image: "busybox"})
	d.create(api.CreateSandboxRequest{ID: "b", Image: "busybox"})
	startWeb(d, "a", "8080", "from-a")
	aIP := d.sandboxIP("a")
	mustHostGet(t, "http://"+aIP+":8080/", "from-a") // the host reaches it, so the server runs
	if out, ok := sandboxGet(d, "b", "http://"+aIP+":8080/"); ok {
		t.Errorf("sandbox b reached sandbox a directly: %q", out)
	}
	// Nor through a port exposed on every host address (hairpin), which the host reaches.
	p := d.expose("a", api.ExposePortRequest{Port: 8080, Public: true})
	hostAddr := d.net.hostAddr(t)
	mustHostGet(t, fmt.Sprintf("http://%s:%d/", hostAddr, p.HostPort), "from-a")
	if out, ok := sandboxGet(d, "b", fmt.Sprintf("http://%s:%d/", hostAddr, p.HostPort)); ok {
		t.Errorf("sandbox b reached a's exposed port through the host: %q", out)
	}

	// Host services: a server the test runs on every host address is out of reach, by the
	// gateway, by the test's own host address and (their own) 127.0.0.1.
	ln, err := net.Listen("tcp4", "0.0.0.0:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan string, 10)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			accepted <- c.RemoteAddr().String()
			c.Close()
		}
	}()
	port := ln.Addr().(*net.TCPAddr).Port
	gw := d.net.subnet.Addr().Next()
	for _, target := range []string{gw.String(), hostAddr.String(), "127.0.0.1"} {
		res := d.exec("b", api.ExecRequest{Command: fmt.Sprintf("nc -w 2 %s %d </dev/null", target, port)})
		if res.ExitCode == 0 {
			t.Errorf("sandbox b connected to the host's %s:%d", target, port)
		}
	}
	select {
	case from := <-accepted:
		t.Errorf("the host's server accepted a connection from %s", from)
	default:
	}
}

// outside is a host "beyond" the sandboxes: a network namespace of the test behind a veth,
// with two addresses, each serving HTTP.
type outside struct {
	ns             netns.NsHandle
	veth           string
	allowed, other netip.Addr
}

func newOutside(t *testing.T, n testNetwork) *outside {
	t.Helper()
	base := n.subnet.Addr().As4()
	base[1] -= 32 // the /27 of 10.208.0.0/12 that matches the sandbox subnet
	hostSide := netip.AddrFrom4(base).Next()
	o := &outside{veth: strings.Replace(n.uplink, "nsbu", "nsbo", 1), allowed: hostSide.Next(), other: hostSide.Next().Next()}
	var err error
	if o.ns, err = newNetns(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { o.ns.Close() })
	attrs := netlink.NewLinkAttrs()
	attrs.Name = o.veth
	link := &netlink.Veth{LinkAttrs: attrs, PeerName: "eth0", PeerNamespace: netlink.NsFd(o.ns)}
	if err := netlink.LinkAdd(link); err != nil {
		t.Fatalf("create outside veth: %v", err)
	}
	t.Cleanup(func() {
		if err := netlink.LinkDel(link); err != nil {
			t.Errorf("delete outside veth: %v", err)
		}
	})
	host, err := netlink.LinkByName(o.veth)
	if err != nil {
		t.Fatal(err)
	}
	if err := netlink.AddrAdd(host, &netlink.Addr{IPNet: &net.IPNet{IP: hostSide.AsSlice(), Mask: net.CIDRMask(27, 32)}}); err != nil {
		t.Fatal(err)
	}
	if err := netlink.LinkSetUp(host); err != nil {
		t.Fatal(err)
	}
	h, eth := nsEth0(t, o.ns)
	for _, a := range []netip.Addr{o.allowed, o.other} {
		if err := h.AddrAdd(eth, &netlink.Addr{IPNet: &net.IPNet{IP: a.AsSlice(), Mask: net.CIDRMask(27, 32)}}); err != nil {
			t.Fatal(err)
		}
	}
	if err := h.LinkSetUp(eth); err != nil {
		t.Fatal(err)
	}
	var ln net.Listener
	if err := inNetns(o.ns, func() (err error) { ln, err = net.Listen("tcp4", "0.0.0.0:80"); return err }); err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		host := r.Host
		if h, _, err := net.SplitHostPort(host); err == nil {
			host = h
		}
		fmt.Fprint(w, "outside-"+host)
	})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return o
}

// newNetns makes a network namespace, leaving the calling thread where it was.
func newNetns() (netns.NsHandle, error) {
	var h netns.NsHandle
	err := lockedThread(func() (err error) {
		orig, err := netns.Get()
		if err != nil {
			return err
		}
		defer orig.Close()
		if h, err = netns.New(); err != nil {
			return err
		}
		return netns.Set(orig)
	})
	return h, err
}

// nsEth0 is a netlink handle in ns, closed when the test ends, and the eth0 link there.
func nsEth0(t *testing.T, ns netns.NsHandle) (*netlink.Handle, netlink.Link) {
	t.Helper()
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(h.Close)
	eth, err := h.LinkByName("eth0")
	if err != nil {
		t.Fatal(err)
	}
	return h, eth
}

// inNetns runs fn on a thread inside ns.
func inNetns(ns netns.NsHandle, fn func() error) error {
	return lockedThread(func() error {
		orig, err := netns.Get()
		if err != nil {
			return err
		}
		defer orig.Close()
		if err := netns.Set(ns); err != nil {
			return err
		}
		return errors.Join(fn(), netns.Set(orig))
	})
}

// lockedThread runs fn on a locked OS thread that ends with it if fn fails (it may then be
// in another namespace).
func lockedThread(fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		err := fn()
		if err == nil {
			runtime.UnlockOSThread()
		}
		errc <- err
	}()
	return <-errc
}

func TestNetworkModes(t *testing.T) {
	n := daemonSeq.Load() + 1 // the next daemon's network, to build the outside host first
	probe := testNetwork{subnet: newSubnet(int64(os.Getpid()), n), uplink: uplinkName(int64(os.Getpid()), n)}
	o := newOutside(t, probe)
	d := startDaemon(t, "--uplink", o.veth)
	if d.net.subnet != probe.subnet {
		t.Fatalf("the daemon got subnet %s, the outside host was made for %s", d.net.subnet, probe.subnet)
	}
	allowed, other := "http://"+o.allowed.String()+"/", "http://"+o.other.String()+"/"

	// The outside host is on a private network: egress reaches it only where allowed.
	d.create(api.CreateSandboxRequest{ID: "eg", Image: "busybox"})
	for _, url := range []string{allowed, other} {
		if out, ok := sandboxGet(d, "eg", url); ok {
			t.Errorf("egress sandbox reached the private %s: %q", url, out)
		}
	}
	_, stderr, code := d.cli("", "network", "--allow", o.allowed.String(), "eg", "egress")
	if code != 0 {
		t.Fatalf("nsbox network --allow IP ID egress: %s", stderr)
	}
	if out, ok := sandboxGet(d, "eg", allowed); !ok || out != "outside-"+o.allowed.String() {
		t.Errorf("egress sandbox GET the allowed private address: %q, %v", out, ok)
	}
	if out, ok := sandboxGet(d, "eg", other); ok {
		t.Errorf("egress sandbox reached a private address it was not allowed: %q", out)
	}

	sb := d.create(api.CreateSandboxRequest{ID: "al", Image: "busybox",
		Network: &api.NetworkSpec{Mode: api.NetworkAllow, Allow: []string{o.allowed.String()}}})
	if sb.Network.Mode != api.NetworkAllow || len(sb.Network.Allow) != 1 || sb.Network.Allow[0] != o.allowed.String()+"/32" {
		t.Fatalf("allow sandbox network = %+v", sb.Network)
	}
	if out, ok := sandboxGet(d, "al", allowed); !ok || out != "outside-"+o.allowed.String() {
		t.Errorf("allow sandbox GET the allowed address: %q, %v", out, ok)
	}
	if out, ok := sandboxGet(d, "al", other); ok {
		t.Errorf("allow sandbox reached an address it was not allowed: %q", out)
	}

	_, stderr, code = d.cli("", "create", "--id", "no", "--image", "busybox", "--network", "none")
	if code != 0 {
		t.Fatalf("create --network none: %s", stderr)
	}
	if devs := d.sh("no", "tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' '"); devs != "lo\n" {
		t.Errorf("interfaces in mode none: %q, want lo only", devs)
	}
	if sb, _ := d.client.GetSandbox(context.Background(), "no"); sb.Network.IP != "" || sb.Network.Mode != api.NetworkNone {
		t.Errorf("mode none sandbox network = %+v", sb.Network)
	}
	e := d.expectError("POST", "/v1/sandboxes/no/ports", api.ExposePortRequest{Port: 80}, 409, api.CodeConflict)
	if !strings.Contains(e.Message, "none") {
		t.Errorf("expose in mode none: %q", e.Message)
	}

	// Live changes: allow → the other address only; → none; → egress again with the same address.
	ip := d.sandboxIP("al")
	if _, stderr, code := d.cli("", "network", "--allow", o.other.String()+"/32", "al", "allow"); code != 0 {
		t.Fatalf("nsbox network allow: %s", stderr)
	}
	if _, ok := sandboxGet(d, "al", allowed); ok {
		t.Error("after the change the formerly allowed address is still reachable")
	}
	if out, ok := sandboxGet(d, "al", other); !ok || out != "outside-"+o.other.String() {
		t.Errorf("after the change the newly allowed address: %q, %v", out, ok)
	}
	sbNone, err := d.client.SetNetwork(context.Background(), "al", api.NetworkSpec{Mode: api.NetworkNone})
	if err != nil || sbNone.Network.Mode != api.NetworkNone || sbNone.Network.IP != "" {
		t.Fatalf("PATCH to none: %+v, %v", sbNone, err)
	}
	if devs := d.sh("al", "tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' '"); devs != "lo\n" {
		t.Errorf("interfaces after PATCH to none: %q", devs)
	}
	sbEg, err := d.client.SetNetwork(context.Background(), "al", api.NetworkSpec{Mode: api.NetworkEgress, Allow: []string{o.allowed.String()}})
	if err != nil || sbEg.Network.IP != ip {
		t.Fatalf("PATCH back to egress: %+v, %v; want ip %s", sbEg, err, ip)
	}
	if _, ok := sandboxGet(d, "al", allowed); !ok {
		t.Error("after PATCH to egress the outside is unreachable")
	}
	d.expectError("PATCH", "/v1/sandboxes/al/network", api.NetworkSpec{}, 400, api.CodeInvalidArgument)
	d.expectError("PATCH", "/v1/sandboxes/al/network", api.NetworkSpec{Mode: "bridge"}, 400, api.CodeInvalidArgument)
	d.expectError("PATCH", "/v1/sandboxes/al/network", api.NetworkSpec{Mode: "allow", Allow: []string{"::1/128"}}, 400, api.CodeInvalidArgument)
	d.expectError("PATCH", "/v1/sandboxes/al/network", api.NetworkSpec{Mode: "none", Allow: []string{"10.0.0.0/8"}}, 400, api.CodeInvalidArgument)
	d.expectError("PATCH", "/v1/sandboxes/al/network", api.NetworkSpec{Mode: "egress", Allow: []string{"169.254.169.254"}}, 400, api.CodeInvalidArgument)
	d.expectError("POST", "/v1/sandboxes", api.CreateSandboxRequest{Network: &api.NetworkSpec{Mode: "host"}}, 400, api.CodeInvalidArgument)
}

func TestPortsSurviveKill9(t *testing.T) {
	d := startDaemon(t)
	d.create(api.CreateSandboxRequest{ID: "p", Image: "busybox"})
	startWeb(d, "p", "8080", "still-here")
	p := d.expose("p", api.ExposePortRequest{Port: 8080})
	pub := d.expose("p", api.ExposePortRequest{Port: 8081, Public: true})
	mustHostGet(t, p.URL, "still-here")
	d.kill9()
	d.start()
	ports, err := d.client.ListPorts(context.Background(), "p")
	if err != nil || len(ports) != 2 || ports[0] != *p || ports[1] != *pub {
		t.Fatalf("ports after kill -9 and restart = %+v, %v; want %+v and %+v", ports, err, p, pub)
	}
	mustHostGet(t, p.URL, "still-here")
	// The daemon holds the host port again: exposing another port on it is refused.
	d.expectError("POST", "/v1/sandboxes/p/ports", api.ExposePortRequest{Port: 9, HostPort: p.HostPort}, 409, api.CodeConflict)
	if ln, err := net.Listen("tcp4", fmt.Sprintf("0.0.0.0:%d", p.HostPort)); err == nil {
		ln.Close()
		t.Error("a host process could bind an exposed host port after the restart")
	}

	// The proxy's URLs, with a domain.
	d.stop()
	proxyPort := freeLoopbackPort(t)
	d.args = append(d.args, "--proxy-listen", fmt.Sprintf("127.0.0.1:%d", proxyPort), "--proxy-domain", "preview.test")
	d.start()
	ports, err = d.client.ListPorts(context.Background(), "p")
	if err != nil || len(ports) != 2 {
		t.Fatal(ports, err)
	}
	if want := fmt.Sprintf("http://8080-p-%s.preview.test:%d", p.Token, proxyPort); ports[0].URL != want {
		t.Errorf("url with a proxy domain = %q, want %q", ports[0].URL, want)
	}
	if want := fmt.Sprintf("http://8081-p.preview.test:%d", proxyPort); ports[1].URL != want {
		t.Errorf("public url with a proxy domain = %q, want %q", ports[1].URL, want)
	}

	// rm removes the sandbox's network once its processes are dead, right after it answers;
	// the harness checks the rest after --cleanup.
	if err := d.client.RemoveSandbox(context.Background(), "p", client.RemoveOptions{Force: true}); err != nil {
		t.Fatal(err)
	}
	if leaks := waitEmpty(func() []string {
		return slices.DeleteFunc(d.net.leaks(), func(l string) bool { return strings.HasPrefix(l, "nftables table") })
	}); len(leaks) != 0 {
		t.Errorf("left after rm: %q", leaks)
	}
	if _, err := hostGet(p.URL); err == nil {
		t.Error("the host port answers after rm")
	}
}

// TestCleanupRefusesARunningDaemon: `daemon --cleanup` on the run dir of a running daemon
// (whatever --data-dir it is given) refuses instead of removing that daemon's network.
func TestCleanupRefusesARunningDaemon(t *testing.T) {
	d := startDaemon(t)
	d.create(api.CreateSandboxRequest{ID: "keep", Image: "busybox"})
	args := append([]string{"--socket", d.socket, "daemon", "--data-dir", t.TempDir(), "--run-dir", d.runDir, "--cleanup"}, d.net.daemonArgs()...)
	out, err := execNsbox(args...)
	if err == nil || !strings.Contains(out, "stop it first") {
		t.Fatalf("--cleanup next to a running daemon: %v\n%s", err, out)
	}
	// The table is still there, with the sandbox's entries in it.
	entries := d.net.tableLeaks()
	if len(entries) == 0 || strings.HasPrefix(entries[0], "the table itself is missing") {
		t.Fatalf("the daemon's table after a refused --cleanup: %v", entries)
	}
	if _, err := d.client.GetSandbox(context.Background(), "keep"); err != nil {
		t.Fatal(err)
	}
}

// TestCleanupKeepsRunningSandboxes: `daemon --cleanup` with no daemon but sandboxes still
// running refuses and leaves their network alone (a daemon started afterwards finds them
// reachable at their address); with --force it removes them, and nothing is left.
func TestCleanupKeepsRunningSandboxes(t *testing.T) {
	d := startDaemon(t)
	d.create(api.CreateSandboxRequest{ID: "live", Image: "busybox"})
	d.create(api.CreateSandboxRequest{ID: "dead", Image: "busybox"})
	startWeb(d, "live", "8080", "still-here")
	port := d.expose("live", api.ExposePortRequest{Port: 8080})
	ip := d.sandboxIP("live")
	deadPID := d.agentPID("dead")
	d.stop()
	if err := syscall.Kill(deadPID, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	out, err := d.runCleanup()
	if err == nil || !strings.Contains(out, "1 sandboxes still run (live)") || !strings.Contains(out, "--force") {
		t.Fatalf("--cleanup with a sandbox running: %v\n%s", err, out)
	}
	if veths, err := d.net.veths(); err != nil || veths["live"] == "" {
		t.Fatalf("the running sandbox's veth after a refused --cleanup: %v %v", veths, err)
	}
	d.start()
	got, err := d.client.GetSandbox(context.Background(), "live")
	if err != nil || got.Status != api.StatusRunning || got.Network.IP != ip {
		t.Fatalf("after a refused --cleanup: %+v %v", got, err)
	}
	mustHostGet(t, port.URL, "still-here")
	if got, err := d.client.GetSandbox(context.Background(), "dead"); err != nil || got.Status != api.StatusFailed {
		t.Fatalf("the sandbox whose agent died: %+v %v", got, err)
	}
	d.stop()
	if out, err := d.runCleanup("--force"); err != nil {
		t.Fatalf("--cleanup --force: %v\n%s", err, out)
	}
	if alive(got.PID) {
		t.Errorf("the sandbox's agent (pid %d) runs after --cleanup --force", got.PID)
	}
	for _, leak := range d.net.leaks() {
		t.Errorf("after --cleanup --force: %s", leak)
	}
	d.start()
	if list, err := d.client.ListSandboxes(context.Background()); err != nil || len(list) != 1 || list[0].ID != "dead" {
		t.Fatalf("sandboxes after --cleanup --force: %+v %v", list, err)
	}
}
