package net

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"sync"

	"github.com/google/nftables"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

func isNotFound(err error) bool {
	var lnf netlink.LinkNotFoundError
	return errors.As(err, &lnf) || errors.Is(err, unix.ENODEV) || errors.Is(err, unix.ENOENT)
}

func ipNet(addr netip.Addr, bits int) *net.IPNet {
	return &net.IPNet{IP: addr.AsSlice(), Mask: net.CIDRMask(bits, addr.BitLen())}
}

// defaultUplinks returns the interfaces of the host's IPv4 default routes.
func defaultUplinks() ([]string, error) {
	routes, err := Consistent(func() ([]netlink.Route, error) { return netlink.RouteList(nil, netlink.FAMILY_V4) })
	if err != nil {
		return nil, fmt.Errorf("list routes: %w", err)
	}
	var names []string
	addIndex := func(index int) error {
		link, err := netlink.LinkByIndex(index)
		if err != nil {
			return fmt.Errorf("default route interface %d: %w", index, err)
		}
		names = append(names, link.Attrs().Name)
		return nil
	}
	for _, r := range routes {
		if r.Dst != nil && !(r.Dst.IP.IsUnspecified() && isZeroMask(r.Dst.Mask)) {
			continue
		}
		if r.LinkIndex > 0 {
			if err := addIndex(r.LinkIndex); err != nil {
				return nil, err
			}
		}
		for _, hop := range r.MultiPath {
			if err := addIndex(hop.LinkIndex); err != nil {
				return nil, err
			}
		}
	}
	return names, nil
}

func isZeroMask(m net.IPMask) bool {
	ones, _ := m.Size()
	return ones == 0
}

// enableForwarding turns IPv4 forwarding on for each uplink and returns the ones where it
// was off.
func enableForwarding(uplinks []string) ([]string, error) {
	var enabled []string
	for _, u := range uplinks {
		v, err := getIPv4Conf(u, "forwarding")
		if err != nil {
			return nil, fmt.Errorf("uplink %s: %w", u, err)
		}
		if v == "1" {
			continue
		}
		if err := setIPv4Conf(u, "forwarding", "1"); err != nil {
			return nil, err
		}
		enabled = append(enabled, u)
	}
	return enabled, nil
}

// createVeth creates the sandbox's veth pair, its peer created directly inside the namespace
// ns as eth0, and configures both ends. It is a point-to-point link between the host and this
// one sandbox: there is no bridge, so sandboxes share no layer-2 segment and everything
// between them is routed through the host's rules. On error it removes what it made.
func (m *Manager) createVeth(id, veth string, addr netip.Addr, ns netns.NsHandle, t *steps) error {
	m.deleting.waitFor(veth) // a sandbox of the same id removed a moment ago
	attrs := netlink.NewLinkAttrs()
	attrs.Name = veth
	if err := netlink.LinkAdd(&netlink.Veth{LinkAttrs: attrs, PeerName: sandboxIf, PeerNamespace: netlink.NsFd(ns)}); err != nil {
		return fmt.Errorf("create veth %s: %w", veth, err)
	}
	t.mark("veth")
	// The kernel ignores an alias given with RTM_NEWLINK: the mark is set on the new link.
	if err := netlink.LinkSetAlias(&netlink.Veth{LinkAttrs: attrs}, vethAlias(m.cfg.Table, id)); err != nil {
		return errors.Join(fmt.Errorf("mark veth %s as this daemon's: %w", veth, err), deleteVeth(veth))
	}
	t.mark("alias")
	if err := m.configureVeth(veth, addr, ns, t); err != nil {
		return errors.Join(err, deleteVeth(veth))
	}
	return nil
}

// configureVeth sets up the host end (the gateway address as a /32, forwarding and
// route_localnet for this interface alone, up), the sandbox end, and then the host's route to
// the sandbox address.
func (m *Manager) configureVeth(veth string, addr netip.Addr, ns netns.NsHandle, t *steps) error {
	link, err := netlink.LinkByName(veth)
	if err != nil {
		return fmt.Errorf("veth %s: %w", veth, err)
	}
	for _, key := range []string{"forwarding", "route_localnet"} {
		if err := setIPv4Conf(veth, key, "1"); err != nil {
			return err
		}
	}
	t.mark("hostSysctls")
	gw := m.cfg.gateway()
	if err := netlink.AddrReplace(link, &netlink.Addr{IPNet: ipNet(gw, 32)}); err != nil {
		return fmt.Errorf("veth %s: address %s: %w", veth, gw, err)
	}
	if err := netlink.LinkSetUp(link); err != nil {
		return fmt.Errorf("bring up %s: %w", veth, err)
	}
	t.mark("hostAddr")
	if err := m.configureSandboxSide(addr, ns, t); err != nil {
		return err
	}
	route := &netlink.Route{LinkIndex: link.Attrs().Index, Dst: ipNet(addr, 32), Scope: netlink.SCOPE_LINK, Src: gw.AsSlice()}
	if err := netlink.RouteReplace(route); err != nil {
		return fmt.Errorf("route to %s via %s: %w", addr, veth, err)
	}
	t.mark("hostRoute")
	return nil
}

// configureSandboxSide sets up eth0 inside the sandbox: its address as a /32 and a default
// route via the gateway, loopback up, route_localnet on eth0 and the table that delivers
// exposed ports to 127.0.0.1.
func (m *Manager) configureSandboxSide(addr netip.Addr, ns netns.NsHandle, t *steps) error {
	// A route socket only: without a family, the handle opens (and enters the namespace
	// for) xfrm and netfilter sockets too.
	h, err := netlink.NewHandleAt(ns, unix.NETLINK_ROUTE)
	if err != nil {
		return fmt.Errorf("netlink in the sandbox namespace: %w", err)
	}
	defer h.Close()
	eth, err := h.LinkByName(sandboxIf)
	if err != nil {
		return fmt.Errorf("sandbox %s: %w", sandboxIf, err)
	}
	lo, err := h.LinkByName("lo")
	if err != nil {
		return fmt.Errorf("sandbox lo: %w", err)
	}
	if err := h.AddrReplace(eth, &netlink.Addr{IPNet: ipNet(addr, 32)}); err != nil {
		return fmt.Errorf("sandbox %s: address %s: %w", sandboxIf, addr, err)
	}
	for _, l := range []netlink.Link{lo, eth} {
		if err := h.LinkSetUp(l); err != nil {
			return fmt.Errorf("sandbox: bring up %s: %w", l.Attrs().Name, err)
		}
	}
	gw := m.cfg.gateway()
	idx := eth.Attrs().Index
	for _, r := range []*netlink.Route{
		{LinkIndex: idx, Dst: ipNet(gw, 32), Scope: netlink.SCOPE_LINK},
		{LinkIndex: idx, Gw: gw.AsSlice()},
	} {
		if err := h.RouteReplace(r); err != nil {
			return fmt.Errorf("sandbox: route %s: %w", r, err)
		}
	}
	t.mark("inside")
	if err := inNetns(ns, func() error { return setIPv4Conf(sandboxIf, "route_localnet", "1") }); err != nil {
		return fmt.Errorf("sandbox: %w", err)
	}
	t.mark("insideSysctl")
	c, err := nftables.New(nftables.WithNetNSFd(int(ns)))
	if err != nil {
		return fmt.Errorf("nftables in the sandbox namespace: %w", err)
	}
	replaceSandboxSideTable(c, m.cfg.Table, addr)
	if err := c.Flush(); err != nil {
		return fmt.Errorf("sandbox: nftables table %s: %w", m.cfg.Table, err)
	}
	t.mark("insideRules")
	return nil
}

// deleteVeth removes the host side of a sandbox's veth, which takes the peer, the host's
// address on it and the route to the sandbox with it; a veth already gone is not an error.
// vethDeletions deletes the host veths of detached sandboxes in the background. Deleting a
// link waits for the kernel's RCU grace periods (measured: ~15 ms a veth here, most of a
// remove), and by the time a sandbox is detached its container is gone, so its namespace and
// the veth's other end are going anyway. Nothing depends on the host end being gone at once:
// its rules are removed first, and its address is not handed out again soon (addresses are
// reused as late as possible). A new veth of the same name waits for the old one; Close waits
// for them all.
type vethDeletions struct {
	mu      sync.Mutex
	pending map[string]chan struct{}
	wg      sync.WaitGroup
}

func (d *vethDeletions) start(veth string, log *slog.Logger) {
	done := make(chan struct{})
	d.mu.Lock()
	if d.pending == nil {
		d.pending = map[string]chan struct{}{}
	}
	d.pending[veth] = done
	d.mu.Unlock()
	d.wg.Add(1)
	go func() {
		defer d.wg.Done()
		if err := deleteVeth(veth); err != nil {
			log.Error("delete the veth of a detached sandbox", "veth", veth, "err", err)
		}
		d.mu.Lock()
		if d.pending[veth] == done {
			delete(d.pending, veth)
		}
		d.mu.Unlock()
		close(done)
	}()
}

// waitFor waits until a pending deletion of veth, if any, is done.
func (d *vethDeletions) waitFor(veth string) {
	d.mu.Lock()
	done := d.pending[veth]
	d.mu.Unlock()
	if done != nil {
		<-done
	}
}

// wait waits for every pending deletion.
func (d *vethDeletions) wait() { d.wg.Wait() }

func deleteVeth(veth string) error {
	link, err := netlink.LinkByName(veth)
	if isNotFound(err) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("veth %s: %w", veth, err)
	}
	if err := netlink.LinkDel(link); err != nil && !isNotFound(err) {
		return fmt.Errorf("delete veth %s: %w", veth, err)
	}
	return nil
}

// ownVeths returns the host veths marked with this table's alias prefix, by sandbox id.
func ownVeths(table string) (map[string]string, error) {
	links, err := Consistent(netlink.LinkList)
	if err != nil {
		return nil, fmt.Errorf("list links: %w", err)
	}
	prefix := vethAliasPrefix(table)
	own := map[string]string{}
	for _, l := range links {
		if id, ok := strings.CutPrefix(l.Attrs().Alias, prefix); ok {
			own[id] = l.Attrs().Name
		}
	}
	return own, nil
}
