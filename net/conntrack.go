package net

import (
	"fmt"
	"net/netip"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// flowMatch selects IPv4 conntrack entries: by addresses (each a prefix for one of the
// tuple's addresses) and, if proto is set, by protocol and original destination port.
type flowMatch struct {
	nets        map[netlink.ConntrackFilterType]netip.Prefix
	proto       uint8
	origDstPort uint16
}

func (fm flowMatch) filter() (*netlink.ConntrackFilter, error) {
	f := &netlink.ConntrackFilter{}
	for typ, p := range fm.nets {
		if err := f.AddIPNet(typ, ipNet(p.Addr(), p.Bits())); err != nil {
			return nil, err
		}
	}
	if fm.proto != 0 {
		if err := f.AddProtocol(fm.proto); err != nil {
			return nil, err
		}
		if err := f.AddPort(netlink.ConntrackOrigDstPort, fm.origDstPort); err != nil {
			return nil, err
		}
	}
	return f, nil
}

// newConntrackHandle opens the netlink socket conntrack entries are deleted through. It is
// kept open: releasing a netfilter socket right after an nftables deletion waits for an RCU
// grace period (~8 ms measured).
func newConntrackHandle() (*netlink.Handle, error) {
	h, err := netlink.NewHandle(unix.NETLINK_NETFILTER)
	if err != nil {
		return nil, fmt.Errorf("conntrack netlink socket: %w", err)
	}
	return h, nil
}

// forgetFlows deletes the host's conntrack entries matching any of the matches, so the
// connections they describe are judged by the rules again (and, where the rules no longer
// forward them, stop). The kernel has no filtered delete for these fields: the table is
// dumped (a walk of every hash bucket, ~10 ms at 262144 buckets whatever the number of
// entries) and the matching entries are deleted one by one.
func forgetFlows(h *netlink.Handle, matches ...flowMatch) error {
	filters := make([]netlink.CustomConntrackFilter, 0, len(matches))
	for _, fm := range matches {
		f, err := fm.filter()
		if err != nil {
			return fmt.Errorf("conntrack filter: %w", err)
		}
		filters = append(filters, f)
	}
	if _, err := h.ConntrackDeleteFilters(netlink.ConntrackTable, unix.AF_INET, filters...); err != nil {
		return fmt.Errorf("delete conntrack entries: %w", err)
	}
	return nil
}

func host(addr netip.Addr) netip.Prefix { return netip.PrefixFrom(addr, 32) }

// flowsFrom matches connections a sandbox opened.
func flowsFrom(addr netip.Addr) flowMatch {
	return flowMatch{nets: map[netlink.ConntrackFilterType]netip.Prefix{netlink.ConntrackOrigSrcIP: host(addr)}}
}

// flowsOf matches every connection of a sandbox: opened by it, or to it (through a DNAT, so
// its address is the reply's source).
func flowsOf(addr netip.Addr) []flowMatch {
	return flowsOfNet(host(addr))
}

func flowsOfNet(p netip.Prefix) []flowMatch {
	return []flowMatch{
		{nets: map[netlink.ConntrackFilterType]netip.Prefix{netlink.ConntrackOrigSrcIP: p}},
		{nets: map[netlink.ConntrackFilterType]netip.Prefix{netlink.ConntrackReplySrcIP: p}},
	}
}

// flowsToPort matches the connections forwarded through an exposed host port to a sandbox,
// for kernels without the filtered flush (portFlusher).
func flowsToPort(p Port, target netip.Addr) flowMatch {
	return flowMatch{
		nets:        map[netlink.ConntrackFilterType]netip.Prefix{netlink.ConntrackReplySrcIP: host(target)},
		proto:       protoNumber(p.Protocol),
		origDstPort: uint16(p.HostPort),
	}
}
