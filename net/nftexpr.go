package net

import (
	"encoding/binary"
	"net"
	"net/netip"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// Small builders for the nftables expressions the rules are made of. Each returns the
// expressions of one match (or one statement) as nft would print it; rules are built by
// concatenating them.

// Registers: reg1 is NFT_REG_1, which is also NFT_REG32_00; concatenations continue in the
// following 32-bit registers.
const (
	reg1   = 1
	reg32b = unix.NFT_REG32_01
	reg32c = unix.NFT_REG32_02
)

// exprs concatenates expression lists into one rule body.
func exprs(parts ...[]expr.Any) []expr.Any {
	var out []expr.Any
	for _, p := range parts {
		out = append(out, p...)
	}
	return out
}

func ifname(name string) []byte {
	b := make([]byte, unix.IFNAMSIZ)
	copy(b, name)
	return b
}

func metaCmp(key expr.MetaKey, op expr.CmpOp, data []byte) []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: key, Register: reg1},
		&expr.Cmp{Op: op, Register: reg1, Data: data},
	}
}

// iif matches (or with CmpOpNeq excludes) the input interface by name.
func iif(op expr.CmpOp, name string) []expr.Any {
	return metaCmp(expr.MetaKeyIIFNAME, op, ifname(name))
}

// ifIn is `iifname @set` or `oifname @set` (key MetaKeyIIFNAME or MetaKeyOIFNAME), or with
// inverted its negation.
func ifIn(key expr.MetaKey, set *nftables.Set, inverted bool) []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: key, Register: reg1},
		&expr.Lookup{SourceRegister: reg1, SetName: set.Name, SetID: set.ID, Invert: inverted},
	}
}

// isIPv4 is `meta nfproto ipv4`: the dependency every IPv4 header match needs in an inet table.
func isIPv4() []expr.Any {
	return metaCmp(expr.MetaKeyNFPROTO, expr.CmpOpEq, []byte{unix.NFPROTO_IPV4})
}

// isIPv6 is `meta nfproto ipv6`.
func isIPv6() []expr.Any {
	return metaCmp(expr.MetaKeyNFPROTO, expr.CmpOpEq, []byte{unix.NFPROTO_IPV6})
}

const (
	ipv4SaddrOffset = 12
	ipv4DaddrOffset = 16
)

// ipAddrIn matches the IPv4 source or destination address (offset) against a prefix.
func ipAddrIn(offset uint32, op expr.CmpOp, p netip.Prefix) []expr.Any {
	load := &expr.Payload{DestRegister: reg1, Base: expr.PayloadBaseNetworkHeader, Offset: offset, Len: 4}
	network := p.Masked().Addr().As4()
	if p.Bits() == 32 {
		return []expr.Any{load, &expr.Cmp{Op: op, Register: reg1, Data: network[:]}}
	}
	mask := net.CIDRMask(p.Bits(), 32)
	return []expr.Any{
		load,
		&expr.Bitwise{SourceRegister: reg1, DestRegister: reg1, Len: 4, Mask: mask, Xor: make([]byte, 4)},
		&expr.Cmp{Op: op, Register: reg1, Data: network[:]},
	}
}

// daddrInSet is `ip daddr @set`.
func daddrInSet(set *nftables.Set) []expr.Any {
	return []expr.Any{
		&expr.Payload{DestRegister: reg1, Base: expr.PayloadBaseNetworkHeader, Offset: ipv4DaddrOffset, Len: 4},
		&expr.Lookup{SourceRegister: reg1, SetName: set.Name, SetID: set.ID},
	}
}

// dport is `th dport` compared with port.
func dport(op expr.CmpOp, port int) []expr.Any {
	return []expr.Any{
		&expr.Payload{DestRegister: reg1, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
		&expr.Cmp{Op: op, Register: reg1, Data: be16(port)},
	}
}

func saddrIn(op expr.CmpOp, p netip.Prefix) []expr.Any { return ipAddrIn(ipv4SaddrOffset, op, p) }
func daddrIn(op expr.CmpOp, p netip.Prefix) []expr.Any { return ipAddrIn(ipv4DaddrOffset, op, p) }

// sourceNotRoutedBack is `fib saddr . iif oif missing`: the route back to the source does
// not go out of the interface the packet came in on (strict reverse-path filtering).
func sourceNotRoutedBack() []expr.Any {
	return []expr.Any{
		&expr.Fib{Register: reg1, FlagSADDR: true, FlagIIF: true, ResultOIF: true},
		&expr.Cmp{Op: expr.CmpOpEq, Register: reg1, Data: make([]byte, 4)},
	}
}

// ctBits matches when the conntrack key (state or status) has any of the bits in mask set
// (op CmpOpNeq) or none of them (op CmpOpEq).
func ctBits(key expr.CtKey, mask uint32, op expr.CmpOp) []expr.Any {
	return []expr.Any{
		&expr.Ct{Register: reg1, Key: key},
		&expr.Bitwise{SourceRegister: reg1, DestRegister: reg1, Len: 4,
			Mask: binaryutil.NativeEndian.PutUint32(mask), Xor: make([]byte, 4)},
		&expr.Cmp{Op: op, Register: reg1, Data: make([]byte, 4)},
	}
}

// ctEstablished is `ct state established,related`.
func ctEstablished() []expr.Any {
	return ctBits(expr.CtKeySTATE, expr.CtStateBitESTABLISHED|expr.CtStateBitRELATED, expr.CmpOpNeq)
}

// ipsDstNAT is IPS_DST_NAT from linux/netfilter/nf_conntrack_common.h.
const ipsDstNAT = 1 << 5

// ctDNAT is `ct status dnat` (and with CmpOpEq its negation).
func ctDNAT(op expr.CmpOp) []expr.Any {
	return ctBits(expr.CtKeySTATUS, ipsDstNAT, op)
}

// daddrLocal is `fib daddr type local`: the destination is one of the host's addresses.
func daddrLocal() []expr.Any {
	return []expr.Any{
		&expr.Fib{Register: reg1, FlagDADDR: true, ResultADDRTYPE: true},
		&expr.Cmp{Op: expr.CmpOpEq, Register: reg1, Data: binaryutil.NativeEndian.PutUint32(unix.RTN_LOCAL)},
	}
}

func verdict(kind expr.VerdictKind) []expr.Any {
	return []expr.Any{&expr.Verdict{Kind: kind}}
}

// icmpReject answers with an ICMP(v6) administratively-prohibited error, so a refused
// connection fails instead of timing out.
func icmpReject() []expr.Any {
	return []expr.Any{&expr.Reject{Type: unix.NFT_REJECT_ICMPX_UNREACH, Code: unix.NFT_REJECT_ICMPX_ADMIN_PROHIBITED}}
}

// tcpReset answers a TCP segment with a reset (`reject with tcp reset`; TCP only).
func tcpReset() []expr.Any {
	return []expr.Any{&expr.Reject{Type: unix.NFT_REJECT_TCP_RST}}
}

func masquerade() []expr.Any { return []expr.Any{&expr.Masq{}} }

// dnatToAddr rewrites the destination address (not the port) to addr.
func dnatToAddr(addr netip.Addr) []expr.Any {
	a := addr.As4()
	return []expr.Any{
		&expr.Immediate{Register: reg1, Data: a[:]},
		&expr.NAT{Type: expr.NATTypeDestNAT, Family: unix.NFPROTO_IPV4, RegAddrMin: reg1},
	}
}

// dnatFromMap looks the key held from reg1 on up in a map whose values are
// `ipv4_addr . inet_service` and, on a hit, rewrites destination address and port to it.
func dnatFromMap(set string, setID uint32) []expr.Any {
	return []expr.Any{
		&expr.Lookup{SourceRegister: reg1, DestRegister: reg1, IsDestRegSet: true, SetName: set, SetID: setID},
		&expr.NAT{Type: expr.NATTypeDestNAT, Family: unix.NFPROTO_IPV4, RegAddrMin: reg1, RegProtoMin: reg32b},
	}
}

// Set keys and values. Concatenated fields are padded to 4-byte registers, as nft does.

func be16(v int) []byte { return binary.BigEndian.AppendUint16(nil, uint16(v)) }

// protoPortKey is `meta l4proto . th dport`, loaded into reg1 and the next register.
func protoPortKey() []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: reg1},
		&expr.Payload{DestRegister: reg32b, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
	}
}

// addrProtoPortKey is `ip daddr . meta l4proto . th dport`.
func addrProtoPortKey() []expr.Any {
	return []expr.Any{
		&expr.Payload{DestRegister: reg1, Base: expr.PayloadBaseNetworkHeader, Offset: ipv4DaddrOffset, Len: 4},
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: reg32b},
		&expr.Payload{DestRegister: reg32c, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
	}
}

func protoPortBytes(proto byte, port int) []byte {
	return append([]byte{proto, 0, 0, 0}, append(be16(port), 0, 0)...)
}

func addrPortBytes(addr netip.Addr, port int) []byte {
	a := addr.As4()
	return append(a[:], append(be16(port), 0, 0)...)
}
