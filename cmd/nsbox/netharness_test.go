package main

import (
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/google/nftables"
	"github.com/vishvananda/netlink"

	sandboxnet "github.com/nsbox/nsbox/net"
)

// testNetwork is a test daemon's own sandbox network: an nftables table, a /27 of
// 10.240.0.0/12 and an uplink of its own, all named after the test process and a counter, so test
// runs from several worktrees at once never share them.
type testNetwork struct {
	table  string
	subnet netip.Prefix
	uplink string
}

// newSubnet is the /27 of 10.240.0.0/12 of a test process's n-th daemon.
func newSubnet(pid, n int64) netip.Prefix {
	index := (pid*32 + n) % (1 << 15)
	return netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(240 + index>>11), byte(index >> 3 & 0xff), byte(index & 7 * 32)}), 27)
}

func uplinkName(pid, n int64) string { return fmt.Sprintf("nsbu%d%c", pid%1000000, 'a'+n%26) }

// testNetworkOf is the network of the test process pid's n-th daemon.
func testNetworkOf(pid, n int64) testNetwork {
	return testNetwork{table: fmt.Sprintf("nsboxit_%d_%d", pid, n), subnet: newSubnet(pid, n), uplink: uplinkName(pid, n)}
}

// newTestNetwork makes the network of this test process's n-th daemon: its uplink.
func newTestNetwork(t *testing.T, n int64) testNetwork {
	t.Helper()
	tn := testNetworkOf(int64(os.Getpid()), n)
	attrs := netlink.NewLinkAttrs()
	attrs.Name = tn.uplink
	// A veth pair with both ends on the host (this kernel has no dummy interfaces).
	link := &netlink.Veth{LinkAttrs: attrs, PeerName: tn.uplink + "p"}
	if err := netlink.LinkAdd(link); err != nil {
		t.Fatalf("create uplink %s: %v", tn.uplink, err)
	}
	t.Cleanup(func() {
		if err := netlink.LinkDel(link); err != nil {
			t.Errorf("remove uplink %s: %v", tn.uplink, err)
		}
	})
	return tn
}

func (n testNetwork) daemonArgs() []string {
	return []string{"--subnet", n.subnet.String(), "--nft-table", n.table, "--uplink", n.uplink}
}

// cleanupNetwork checks, with the daemon stopped and every sandbox removed, that its table
// holds no sandbox's rules, then runs `nsbox daemon --cleanup` and checks that nothing of the
// network is left: table, veths, addresses, routes.
func (d *testDaemon) cleanupNetwork() {
	t := d.t
	for _, leak := range d.net.tableLeaks() {
		t.Errorf("leaked in nftables table %s: %s", d.net.table, leak)
	}
	if out, err := d.runCleanup(); err != nil {
		t.Errorf("nsbox daemon --cleanup: %v\n%s", err, out)
	}
	for _, leak := range d.net.leaks() {
		t.Errorf("leaked: %s", leak)
	}
	if _, err := os.Stat(d.runDir + "/network.json"); err == nil {
		t.Errorf("leaked: network state %s/network.json", d.runDir)
	}
}

// runCleanup runs `nsbox daemon --cleanup` with the daemon's paths and network and the extra
// flags, and returns its output.
func (d *testDaemon) runCleanup(extra ...string) (string, error) {
	args := append([]string{"--socket", d.socket, "daemon", "--data-dir", d.dataDir, "--run-dir", d.runDir,
		"--cgroup-parent", d.cgroupParent, "--cleanup"}, d.net.daemonArgs()...)
	return execNsbox(append(args, extra...)...)
}

// tableLeaks lists what is left in the table of a daemon whose sandboxes are all gone.
func (n testNetwork) tableLeaks() []string {
	c, err := nftables.New()
	if err != nil {
		return []string{"nftables: " + err.Error()}
	}
	table, err := c.ListTableOfFamily(n.table, nftables.TableFamilyINet)
	if err != nil {
		return []string{"the table itself is missing: " + err.Error()}
	}
	var leaks []string
	sets, err := c.GetSets(table)
	if err != nil {
		return []string{"list sets: " + err.Error()}
	}
	for _, s := range sets {
		elems, err := c.GetSetElements(s)
		if err != nil {
			leaks = append(leaks, "set "+s.Name+": "+err.Error())
		} else if len(elems) > 0 && s.Name != "nameservers" { // the host's, not a sandbox's
			leaks = append(leaks, fmt.Sprintf("%d elements in set %s", len(elems), s.Name))
		}
	}
	chains, err := c.ListChainsOfTableFamily(nftables.TableFamilyINet)
	if err != nil {
		return append(leaks, "list chains: "+err.Error())
	}
	for _, ch := range chains {
		if ch.Table.Name == n.table && strings.HasPrefix(ch.Name, "allow_") {
			leaks = append(leaks, "chain "+ch.Name)
		}
	}
	return leaks
}

// leaks lists what of the network is left after `nsbox daemon --cleanup`.
func (n testNetwork) leaks() []string {
	var leaks []string
	c, err := nftables.New()
	if err == nil {
		if _, err := c.ListTableOfFamily(n.table, nftables.TableFamilyINet); err == nil {
			leaks = append(leaks, "nftables table "+n.table)
		}
	}
	veths, err := n.veths()
	if err != nil {
		return append(leaks, err.Error())
	}
	for _, veth := range veths {
		leaks = append(leaks, "veth "+veth)
	}
	addrs, err := sandboxnet.Consistent(func() ([]netlink.Addr, error) { return netlink.AddrList(nil, netlink.FAMILY_V4) })
	if err != nil {
		return append(leaks, "list addresses: "+err.Error())
	}
	for _, a := range addrs {
		if ip, ok := netip.AddrFromSlice(a.IP.To4()); ok && n.subnet.Contains(ip) {
			leaks = append(leaks, "address "+a.IPNet.String())
		}
	}
	routes, err := sandboxnet.Consistent(func() ([]netlink.Route, error) {
		return netlink.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Table: 0}, netlink.RT_FILTER_TABLE)
	})
	if err != nil {
		return append(leaks, "list routes: "+err.Error())
	}
	for _, r := range routes {
		if r.Dst == nil {
			continue
		}
		if ip, ok := netip.AddrFromSlice(r.Dst.IP.To4()); ok && n.subnet.Contains(ip) {
			leaks = append(leaks, "route "+r.Dst.String())
		}
	}
	return leaks
}

// veths lists the host veths of the network's sandboxes, by sandbox id.
func (n testNetwork) veths() (map[string]string, error) {
	links, err := sandboxnet.Consistent(netlink.LinkList)
	if err != nil {
		return nil, fmt.Errorf("list links: %w", err)
	}
	out := map[string]string{}
	for _, l := range links {
		if id, ok := strings.CutPrefix(l.Attrs().Alias, "nsbox:"+n.table+":"); ok {
			out[id] = l.Attrs().Name
		}
	}
	return out, nil
}

// execNsbox runs the nsbox binary and returns its combined output.
func execNsbox(args ...string) (string, error) {
	out, err := exec.Command(nsboxBin, args...).CombinedOutput()
	return string(out), err
}
