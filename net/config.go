package net

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"maps"
	"net/netip"
	"slices"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Config says which host resources the Manager owns. Every name and range in it belongs to
// nsbox alone: Cleanup deletes the table, the veths and the state file it names.
type Config struct {
	// Subnet is the IPv4 sandbox network, e.g. 10.89.0.0/16. Its first address is the
	// gateway: the host's address on every sandbox's veth. Sandboxes get the others.
	Subnet netip.Prefix
	// StatePath is the file holding the address pool and the exposed ports, e.g.
	// /run/nsbox/network.json (with a second slot beside it, StatePath + ".1").
	StatePath string
	// Table is the name of the nftables table (family inet) owned by nsbox, e.g. "nsbox".
	// The same name is used for the small table inside each sandbox's network namespace,
	// and it marks the host veths (their alias is "nsbox:<Table>:<sandbox id>").
	Table string
	// HostPortMin and HostPortMax bound the host ports chosen when an exposure asks for none.
	// Keep the range outside net.ipv4.ip_local_port_range (32768-60999 by default).
	HostPortMin, HostPortMax int
	// ExtraHostPorts are host ports outside that range which an exposure may still ask for by
	// number. A requested host port that is in neither is refused (ErrInvalid): without this,
	// whoever may expose ports could take any port of the host, 22 or 443 included.
	ExtraHostPorts []int
	// Uplinks are the interfaces that carry sandbox traffic to and from the world. IPv4
	// forwarding must be on for packets arriving on them (replies to sandbox traffic, and
	// connections to exposed ports from other machines); Open turns it on per interface and
	// never through net.ipv4.ip_forward. Empty means the interfaces of the IPv4 default
	// routes when Open runs.
	Uplinks []string
}

func (c Config) validate() error {
	if !c.Subnet.IsValid() || !c.Subnet.Addr().Is4() || c.Subnet.Bits() > 29 || c.Subnet.Masked() != c.Subnet {
		return fmt.Errorf("subnet %s: must be an IPv4 network of at least 8 addresses (prefix /29 or shorter)", c.Subnet)
	}
	if c.StatePath == "" {
		return fmt.Errorf("state path is empty")
	}
	if c.Table == "" {
		return fmt.Errorf("nftables table name is empty")
	}
	if c.HostPortMin < 1 || c.HostPortMax > 65535 || c.HostPortMin > c.HostPortMax {
		return fmt.Errorf("host port range %d-%d: must be within 1-65535, low to high", c.HostPortMin, c.HostPortMax)
	}
	for _, p := range c.ExtraHostPorts {
		if p < 1 || p > 65535 {
			return fmt.Errorf("extra host port %d: must be within 1-65535", p)
		}
	}
	return nil
}

// hostPortAllowed reports whether an exposure may ask for host port p by number.
func (c Config) hostPortAllowed(p int) bool {
	return p >= c.HostPortMin && p <= c.HostPortMax || slices.Contains(c.ExtraHostPorts, p)
}

// checkRoutes refuses a subnet that overlaps a route of the host, in any routing table,
// other than a default route and those of this table's own sandbox veths (left by an earlier
// daemon: marked with its alias, or named in its state, known): the host's own addresses, its
// networks, another daemon's sandboxes. Sandbox routes would shadow part of such a network,
// or the other way round.
func (c Config) checkRoutes(known []string) error {
	routes, err := Consistent(func() ([]netlink.Route, error) {
		return netlink.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Table: unix.RT_TABLE_UNSPEC}, netlink.RT_FILTER_TABLE)
	})
	if err != nil {
		return fmt.Errorf("list the host's routes: %w", err)
	}
	var own map[string]string // this table's veths, listed at the first overlap
	for _, r := range routes {
		if r.Dst == nil {
			continue
		}
		dst, ok := netip.AddrFromSlice(r.Dst.IP)
		ones, _ := r.Dst.Mask.Size()
		if !ok || ones == 0 || !netip.PrefixFrom(dst.Unmap(), ones).Overlaps(c.Subnet) {
			continue
		}
		dev := "no device"
		if link, err := netlink.LinkByIndex(r.LinkIndex); err == nil {
			if own == nil {
				if own, err = ownVeths(c.Table); err != nil {
					return err
				}
			}
			if name := link.Attrs().Name; slices.Contains(known, name) || slices.Contains(slices.Collect(maps.Values(own)), name) {
				continue
			}
			dev = "dev " + link.Attrs().Name
		}
		return fmt.Errorf("%w: subnet %s overlaps the host's route to %s (%s, table %d): choose another subnet", ErrInvalid, c.Subnet, r.Dst, dev, r.Table)
	}
	return nil
}

// gateway is the host's address towards every sandbox: the subnet's first host address.
func (c Config) gateway() netip.Addr {
	return c.Subnet.Addr().Next()
}

// Mode is a sandbox's network mode.
type Mode string

const (
	// ModeNone gives the sandbox no interface but its loopback.
	ModeNone Mode = "none"
	// ModeEgress lets the sandbox reach the internet (masqueraded behind the host's address):
	// not the private ranges (RFC 1918, CGNAT 100.64.0.0/10) nor the networks of the host's
	// interfaces unless its allow list names them, and never what no mode reaches (see
	// neverReached), other sandboxes or the host itself. The nameservers of its resolv.conf
	// are reachable on port 53 even on a private network.
	ModeEgress Mode = "egress"
	// ModeAllow lets the sandbox reach only the listed networks; everything else is rejected.
	ModeAllow Mode = "allow"
)

// privateRanges are the networks egress mode denies unless allowed: RFC 1918 and CGNAT
// (100.64.0.0/10, which holds 100.100.100.200, a cloud metadata address). The networks of the
// host's own interfaces are added to them when the Manager opens (hostNetworks).
var privateRanges = []netip.Prefix{
	netip.MustParsePrefix("10.0.0.0/8"),
	netip.MustParsePrefix("172.16.0.0/12"),
	netip.MustParsePrefix("192.168.0.0/16"),
	netip.MustParsePrefix("100.64.0.0/10"),
}

// neverReached are the destinations no mode reaches, whatever an allow list says: link-local
// addresses (169.254.169.254 is the metadata service of most clouds) and Alibaba Cloud's
// metadata address. IPv6 (fd00:ec2::254 included) is dropped altogether.
var neverReached = []netip.Prefix{
	netip.MustParsePrefix("169.254.0.0/16"),
	netip.MustParsePrefix("100.100.100.200/32"),
}

func checkMode(mode Mode, allow []netip.Prefix) error {
	switch mode {
	case ModeNone:
		if len(allow) != 0 {
			return fmt.Errorf("network mode %q takes no allow list", mode)
		}
	case ModeEgress, ModeAllow:
		for _, p := range allow {
			if !p.IsValid() || !p.Addr().Is4() {
				return fmt.Errorf("allow %s: only IPv4 networks are supported", p)
			}
			for _, n := range neverReached {
				if n.Bits() <= p.Bits() && n.Contains(p.Addr()) {
					return fmt.Errorf("allow %s: within %s, which no sandbox may reach (link-local and cloud metadata addresses)", p, n)
				}
			}
		}
	default:
		return fmt.Errorf("network mode %q: must be none, egress or allow", mode)
	}
	return nil
}

// normalizeAllow returns the allow list masked, sorted and without duplicates, so two lists
// that allow the same networks compare equal.
func normalizeAllow(allow []netip.Prefix) []netip.Prefix {
	out := make([]netip.Prefix, 0, len(allow))
	for _, p := range allow {
		out = append(out, p.Masked())
	}
	slices.SortFunc(out, netip.Prefix.Compare)
	return slices.Compact(out)
}

const (
	maxIfname   = 15 // IFNAMSIZ - 1
	sandboxIf   = "eth0"
	vethPrefix  = "nsb"
	hashedChars = maxIfname - len(vethPrefix)
)

// hostVethName is the host side of a sandbox's veth pair: "nsb" and 12 hex digits of the
// SHA-256 of the table name and the sandbox id, so any id maps to a valid, stable interface
// name, and daemons with tables of their own can have sandboxes of the same id.
func hostVethName(table, id string) string {
	sum := sha256.Sum256([]byte(table + "\x00" + id))
	return vethPrefix + hex.EncodeToString(sum[:])[:hashedChars]
}

// vethAlias marks the host side of a sandbox's veth as this Manager's, so veths left by a
// crash can be found and removed.
func vethAlias(table, id string) string { return vethAliasPrefix(table) + id }

func vethAliasPrefix(table string) string { return "nsbox:" + table + ":" }
