package net

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"syscall"

	"github.com/vishvananda/netlink/nl"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// ctnetlink constants the netlink package does not define (linux/netfilter/nfnetlink_conntrack.h).
const (
	ipctnlMsgCtDelete       = 2
	ctaFilter               = 25
	ctaFilterOrigFlags      = 1
	ctaFilterReplyFlags     = 2
	ctaFilterFlagIPSrc      = 1 << 0
	ctaFilterFlagIPDst      = 1 << 1
	ctaFilterFlagProtoNum   = 1 << 3
	ctaFilterFlagProtoDport = 1 << 5
	nfnetlinkV1             = 1 // with version 1 a flush is limited to the message's family
)

// portFlusher deletes conntrack entries inside the kernel: a delete request with a tuple filter
// (CTA_TUPLE_ORIG and CTA_FILTER, Linux 6.6 and later) is a flush limited to the entries whose
// original direction matches, so nothing is dumped to user space and deleted entry by entry.
// (The kernel filters a flush by the original direction only.) Its socket stays open, like the
// Manager's others.
type portFlusher struct {
	sock *nl.NetlinkSocket
}

func newPortFlusher() (*portFlusher, error) {
	s, err := nl.GetNetlinkSocketAt(netns.None(), netns.None(), unix.NETLINK_NETFILTER)
	if err != nil {
		return nil, fmt.Errorf("conntrack netlink socket: %w", err)
	}
	return &portFlusher{sock: s}, nil
}

func (f *portFlusher) close() { f.sock.Close() }

// origMatch selects conntrack entries by their original direction; zero fields match anything.
type origMatch struct {
	src, dst netip.Addr
	proto    uint8
	dport    uint16 // with proto
}

// portFlows matches every IPv4 flow of p's protocol whose original destination is p's host
// port (on p's host address, when the exposure has one). No other flow has that destination:
// the Manager holds the host port bound while it is exposed, so no host service has it, and no
// two exposures share it.
func portFlows(p Port) origMatch {
	return origMatch{dst: p.HostIP, proto: protoNumber(p.Protocol), dport: uint16(p.HostPort)}
}

// sandboxFlows matches every flow of a sandbox that has the given exposed ports: those it
// opened (original source), those opened to its address (the host's, e.g. the preview
// proxy's), and those forwarded to it through an exposed port (original destination: the
// host port). Together they are every entry whose reply comes from the sandbox.
func sandboxFlows(addr netip.Addr, ports []Port) []origMatch {
	out := []origMatch{{src: addr}, {dst: addr}}
	for _, p := range ports {
		out = append(out, portFlows(p))
	}
	return out
}

// flush deletes the IPv4 conntrack entries that match o.
func (f *portFlusher) flush(o origMatch) error {
	req := nl.NewNetlinkRequest(unix.NFNL_SUBSYS_CTNETLINK<<8|ipctnlMsgCtDelete, unix.NLM_F_ACK)
	req.AddData(&nl.Nfgenmsg{NfgenFamily: unix.AF_INET, Version: nfnetlinkV1})
	tuple := nl.NewRtAttr(unix.NLA_F_NESTED|nl.CTA_TUPLE_ORIG, nil)
	var flags uint32
	if o.src.IsValid() || o.dst.IsValid() {
		ip := tuple.AddRtAttr(unix.NLA_F_NESTED|nl.CTA_TUPLE_IP, nil)
		if o.src.IsValid() {
			a := o.src.As4()
			ip.AddRtAttr(nl.CTA_IP_V4_SRC, a[:])
			flags |= ctaFilterFlagIPSrc
		}
		if o.dst.IsValid() {
			a := o.dst.As4()
			ip.AddRtAttr(nl.CTA_IP_V4_DST, a[:])
			flags |= ctaFilterFlagIPDst
		}
	}
	if o.proto != 0 {
		proto := tuple.AddRtAttr(unix.NLA_F_NESTED|nl.CTA_TUPLE_PROTO, nil)
		proto.AddRtAttr(nl.CTA_PROTO_NUM, []byte{o.proto})
		proto.AddRtAttr(nl.CTA_PROTO_DST_PORT, binary.BigEndian.AppendUint16(nil, o.dport))
		flags |= ctaFilterFlagProtoNum | ctaFilterFlagProtoDport
	}
	req.AddData(tuple)
	filter := nl.NewRtAttr(unix.NLA_F_NESTED|ctaFilter, nil)
	filter.AddRtAttr(ctaFilterOrigFlags, binary.NativeEndian.AppendUint32(nil, flags))
	filter.AddRtAttr(ctaFilterReplyFlags, binary.NativeEndian.AppendUint32(nil, 0))
	req.AddData(filter)
	if err := f.sock.Send(req); err != nil {
		return fmt.Errorf("delete conntrack entries: %w", err)
	}
	for {
		msgs, _, err := f.sock.Receive()
		if err != nil {
			return fmt.Errorf("delete conntrack entries: %w", err)
		}
		for _, m := range msgs {
			if m.Header.Seq != req.Seq || m.Header.Type != unix.NLMSG_ERROR {
				continue
			}
			code := int32(binary.NativeEndian.Uint32(m.Data[:4]))
			// ENOENT: no entry matched.
			if code == 0 || syscall.Errno(-code) == unix.ENOENT {
				return nil
			}
			return fmt.Errorf("delete conntrack entries: %w", syscall.Errno(-code))
		}
	}
}
