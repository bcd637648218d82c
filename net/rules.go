package net

import (
	"fmt"
	"net/netip"
	"slices"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// Names inside the table. Per-sandbox chains carry the host veth's name.
const (
	chainAntispoof   = "antispoof"
	chainPrerouting  = "prerouting"
	chainOutput      = "output"
	chainPostrouting = "postrouting"
	chainInput       = "input"
	chainForward     = "forward"
	chainHostUsers   = "host_users"
	chainEgress      = "egress"
	setSandboxes     = "sandboxes"
	setModes         = "modes"
	setPortsAny      = "ports_any"
	setPortsIP       = "ports_ip"
	setNameservers   = "nameservers"
)

// allowChain is the chain of a sandbox with an allow list (in mode allow, or egress with
// private networks allowed).
func allowChain(veth string) string { return "allow_" + veth }

var (
	loopbackNet = netip.MustParsePrefix("127.0.0.0/8")
	localhost   = netip.MustParseAddr("127.0.0.1")
)

// ruleset queues the operations that build nsbox's table on an nftables connection; the
// caller flushes them as one atomic batch.
type ruleset struct {
	cfg         Config
	table       *nftables.Table
	sandboxes   *nftables.Set
	modes       *nftables.Set
	portsAny    *nftables.Set
	portsIP     *nftables.Set
	nameservers *nftables.Set
	// private are the networks egress mode denies unless allowed: privateRanges and the
	// networks of the host's interfaces that are not in them.
	private []netip.Prefix
	// daemonUID is the one host user whose sockets may connect to sandbox addresses directly.
	daemonUID uint32
}

func newRuleset(cfg Config, private []netip.Prefix, daemonUID uint32) *ruleset {
	t := &nftables.Table{Name: cfg.Table, Family: nftables.TableFamilyINet}
	natTarget := nftables.MustConcatSetType(nftables.TypeIPAddr, nftables.TypeInetService)
	return &ruleset{
		cfg:       cfg,
		table:     t,
		private:   private,
		daemonUID: daemonUID,
		// nameservers holds the IPv4 nameservers of the sandboxes' resolv.conf.
		nameservers: &nftables.Set{Table: t, Name: setNameservers, KeyType: nftables.TypeIPAddr},
		// sandboxes holds the host veth of every networked sandbox.
		sandboxes: &nftables.Set{Table: t, Name: setSandboxes, KeyType: nftables.TypeIFName, KeyByteOrder: binaryutil.NativeEndian},
		// modes maps a sandbox address to the chain that decides where it may go.
		modes: &nftables.Set{Table: t, Name: setModes, IsMap: true,
			KeyType: nftables.TypeIPAddr, DataType: nftables.TypeVerdict},
		// ports_any maps protocol . host port, on every host address, to sandbox address . port.
		portsAny: &nftables.Set{Table: t, Name: setPortsAny, IsMap: true, Concatenation: true,
			KeyType:  nftables.MustConcatSetType(nftables.TypeInetProto, nftables.TypeInetService),
			DataType: natTarget},
		// ports_ip does the same for exposures on one host address.
		portsIP: &nftables.Set{Table: t, Name: setPortsIP, IsMap: true, Concatenation: true,
			KeyType:  nftables.MustConcatSetType(nftables.TypeIPAddr, nftables.TypeInetProto, nftables.TypeInetService),
			DataType: natTarget},
	}
}

func (r *ruleset) chain(name string) *nftables.Chain {
	return &nftables.Chain{Table: r.table, Name: name}
}

func (r *ruleset) baseChain(c *nftables.Conn, name string, typ nftables.ChainType, hook *nftables.ChainHook, prio *nftables.ChainPriority) *nftables.Chain {
	return c.AddChain(&nftables.Chain{Table: r.table, Name: name, Type: typ, Hooknum: hook, Priority: prio})
}

func (r *ruleset) add(c *nftables.Conn, ch *nftables.Chain, parts ...[]expr.Any) {
	c.AddRule(&nftables.Rule{Table: r.table, Chain: ch, Exprs: exprs(parts...)})
}

// reject queues two rules that refuse what match matches at once: TCP with a reset, the rest
// with an ICMP administratively-prohibited error. A reset is never rate-limited; ICMP errors
// to one host are (1 a second after a burst of 6, net.ipv4.icmp_ratelimit), and a TCP
// connect that gets none retransmits its SYN and fails only after a second.
func (r *ruleset) reject(c *nftables.Conn, ch *nftables.Chain, match ...[]expr.Any) {
	r.add(c, ch, append(slices.Clone(match), metaCmp(expr.MetaKeyL4PROTO, expr.CmpOpEq, []byte{unix.IPPROTO_TCP}), tcpReset())...)
	r.add(c, ch, append(slices.Clone(match), icmpReject())...)
}

// fromSandbox matches packets that came in on a sandbox's veth (or, with inverted, on any
// other interface); toSandbox the same for the output interface.
func (r *ruleset) fromSandbox(inverted bool) []expr.Any {
	return ifIn(expr.MetaKeyIIFNAME, r.sandboxes, inverted)
}

func (r *ruleset) toSandbox(inverted bool) []expr.Any {
	return ifIn(expr.MetaKeyOIFNAME, r.sandboxes, inverted)
}

// replaceTable queues the whole table from scratch: the table is added (so the delete
// cannot fail), deleted and added again, so the batch swaps the old table for the new one
// atomically. guarded lists the uplinks on which nsbox turned forwarding on.
func (r *ruleset) replaceTable(c *nftables.Conn, guarded []string, nameservers []netip.Addr) error {
	c.AddTable(r.table)
	c.DelTable(r.table)
	c.AddTable(r.table)
	for _, s := range []*nftables.Set{r.sandboxes, r.modes, r.portsAny, r.portsIP} {
		if err := c.AddSet(s, nil); err != nil {
			return fmt.Errorf("nftables set %s: %w", s.Name, err)
		}
	}
	if err := c.AddSet(r.nameservers, addrElements(nameservers)); err != nil {
		return fmt.Errorf("nftables set %s: %w", r.nameservers.Name, err)
	}
	r.addAntispoof(c)
	r.addNAT(c)
	r.addFilter(c, guarded)
	return nil
}

// setNameservers queues the replacement of the nameservers set's elements.
func (r *ruleset) setNameservers(c *nftables.Conn, nameservers []netip.Addr) error {
	c.FlushSet(r.nameservers)
	return addElements(c, r.nameservers, addrElements(nameservers))
}

func addrElements(addrs []netip.Addr) []nftables.SetElement {
	elems := make([]nftables.SetElement, 0, len(addrs))
	for _, a := range addrs {
		b := a.As4()
		elems = append(elems, nftables.SetElement{Key: b[:]})
	}
	return elems
}

// addAntispoof drops, before conntrack sees them, packets from a sandbox whose source address
// is not routed back through the veth they came in on (another sandbox's address, or any
// other), and all IPv6 from sandboxes (they have IPv4 only).
func (r *ruleset) addAntispoof(c *nftables.Conn) {
	ch := r.baseChain(c, chainAntispoof, nftables.ChainTypeFilter, nftables.ChainHookPrerouting, nftables.ChainPriorityRaw)
	r.add(c, ch, r.fromSandbox(false), isIPv6(), verdict(expr.VerdictDrop))
	r.add(c, ch, r.fromSandbox(false), isIPv4(), sourceNotRoutedBack(), verdict(expr.VerdictDrop))
}

func (r *ruleset) addNAT(c *nftables.Conn) {
	pre := r.baseChain(c, chainPrerouting, nftables.ChainTypeNAT, nftables.ChainHookPrerouting, nftables.ChainPriorityNATDest)
	// Never forward 127.0.0.0/8 from the network: with route_localnet on the sandbox veths
	// this would let a sandbox (or, through DNAT, anyone) reach host-local exposures.
	r.add(c, pre, isIPv4(), daddrIn(expr.CmpOpEq, loopbackNet), verdict(expr.VerdictReturn))
	r.addDNAT(c, pre)
	r.addDNAT(c, r.baseChain(c, chainOutput, nftables.ChainTypeNAT, nftables.ChainHookOutput, nftables.ChainPriorityNATDest))

	post := r.baseChain(c, chainPostrouting, nftables.ChainTypeNAT, nftables.ChainHookPostrouting, nftables.ChainPriorityNATSource)
	// Egress: sandbox traffic leaving by any other interface goes out as the host.
	r.add(c, post, isIPv4(), saddrIn(expr.CmpOpEq, r.cfg.Subnet), r.toSandbox(true), masquerade())
	// Exposed ports reached from the host's 127.0.0.1: the sandbox must answer to the
	// gateway, not to its own loopback.
	r.add(c, post, isIPv4(), r.toSandbox(false), ctDNAT(expr.CmpOpNeq), saddrIn(expr.CmpOpEq, loopbackNet), masquerade())
}

// addDNAT queues the two rules that forward exposed host ports: one for exposures on a
// single host address, one for exposures on every host address.
func (r *ruleset) addDNAT(c *nftables.Conn, ch *nftables.Chain) {
	r.add(c, ch, isIPv4(), addrProtoPortKey(), dnatFromMap(r.portsIP.Name, r.portsIP.ID))
	r.add(c, ch, isIPv4(), daddrLocal(), protoPortKey(), dnatFromMap(r.portsAny.Name, r.portsAny.ID))
}

func (r *ruleset) addFilter(c *nftables.Conn, guarded []string) {
	in := r.baseChain(c, chainInput, nftables.ChainTypeFilter, nftables.ChainHookInput, nftables.ChainPriorityFilter)
	// Sandboxes reach no host service on any host address; the host's own connections
	// into sandboxes (and their replies) still work.
	r.add(c, in, r.fromSandbox(false), ctEstablished(), verdict(expr.VerdictAccept))
	r.reject(c, in, r.fromSandbox(false))

	// Host users other than the daemon's connect to no sandbox address; exposed ports (DNAT-ed
	// here, in the nat output chain, before this one) stay theirs to use. Packets without a
	// socket (the kernel's own answers) have no owner and do not match.
	out := r.baseChain(c, chainHostUsers, nftables.ChainTypeFilter, nftables.ChainHookOutput, nftables.ChainPriorityFilter)
	r.reject(c, out, r.toSandbox(false), ctDNAT(expr.CmpOpEq),
		metaCmp(expr.MetaKeySKUID, expr.CmpOpNeq, binaryutil.NativeEndian.PutUint32(r.daemonUID)))

	fwd := r.baseChain(c, chainForward, nftables.ChainTypeFilter, nftables.ChainHookForward, nftables.ChainPriorityFilter)
	for _, u := range guarded {
		// Forwarding was turned on for this uplink only for sandbox traffic.
		r.add(c, fwd, iif(expr.CmpOpEq, u), r.toSandbox(true), verdict(expr.VerdictDrop))
	}
	r.add(c, fwd, ctEstablished(), verdict(expr.VerdictAccept))
	// Into the sandboxes from elsewhere: exposed ports only.
	r.add(c, fwd, r.toSandbox(false), r.fromSandbox(true), ctDNAT(expr.CmpOpNeq), verdict(expr.VerdictAccept))
	r.add(c, fwd, r.toSandbox(false), r.fromSandbox(true), verdict(expr.VerdictDrop))
	// Sandbox to sandbox: never, not even through an exposed port (DNAT-ed to a sandbox).
	r.reject(c, fwd, r.fromSandbox(false), r.toSandbox(false))
	// Link-local and metadata addresses: never, whatever the mode.
	for _, p := range neverReached {
		r.reject(c, fwd, r.fromSandbox(false), isIPv4(), daddrIn(expr.CmpOpEq, p))
	}
	// Out of the sandboxes: whatever each sandbox's mode allows.
	r.add(c, fwd, r.fromSandbox(false), isIPv4(),
		[]expr.Any{&expr.Payload{DestRegister: reg1, Base: expr.PayloadBaseNetworkHeader, Offset: ipv4SaddrOffset, Len: 4}},
		[]expr.Any{&expr.Lookup{SourceRegister: reg1, IsDestRegSet: true, SetName: r.modes.Name, SetID: r.modes.ID}})
	r.reject(c, fwd, r.fromSandbox(false))

	// Egress: the sandboxes' nameservers on port 53, then anything but the private networks.
	egress := c.AddChain(r.chain(chainEgress))
	for _, proto := range []byte{unix.IPPROTO_UDP, unix.IPPROTO_TCP} {
		r.add(c, egress, isIPv4(), daddrInSet(r.nameservers), metaCmp(expr.MetaKeyL4PROTO, expr.CmpOpEq, []byte{proto}),
			dport(expr.CmpOpEq, 53), verdict(expr.VerdictAccept))
	}
	for _, p := range r.private {
		r.reject(c, egress, isIPv4(), daddrIn(expr.CmpOpEq, p))
	}
	r.add(c, egress, verdict(expr.VerdictAccept))
}

// sandboxRules names a networked sandbox and its host veth, for queueing its rules.
type sandboxRules struct {
	sb   *sandbox
	veth string
}

// addSandboxes queues everything the networked sandboxes need: their elements of the sets and
// maps in bulk (a few messages however many sandboxes there are) and, for each sandbox in
// allow mode, its chain. The rules match veths by name, so they can (and do) go in before the
// veths exist.
func (r *ruleset) addSandboxes(c *nftables.Conn, sbs []sandboxRules) error {
	elems := map[*nftables.Set][]nftables.SetElement{}
	for _, s := range sbs {
		elems[r.sandboxes] = append(elems[r.sandboxes], nftables.SetElement{Key: ifname(s.veth)})
		elems[r.modes] = append(elems[r.modes], r.modeElement(c, s.sb, s.veth))
		for _, p := range s.sb.Ports {
			set, elem := r.portElement(p, s.sb.Addr)
			elems[set] = append(elems[set], elem)
		}
	}
	for _, set := range []*nftables.Set{r.sandboxes, r.modes, r.portsAny, r.portsIP} {
		if err := addElements(c, set, elems[set]); err != nil {
			return err
		}
	}
	return nil
}

// addSandbox queues everything one networked sandbox needs.
func (r *ruleset) addSandbox(c *nftables.Conn, sb *sandbox, veth string) error {
	return r.addSandboxes(c, []sandboxRules{{sb, veth}})
}

// elementsPerMessage keeps a message of set elements well below the 64 KiB its element list
// (one netlink attribute) can hold: the largest element here, a verdict naming an allow
// chain, takes under maxElementBytes.
const elementsPerMessage = 256

// addElements queues elements of a set, elementsPerMessage to a message.
func addElements(c *nftables.Conn, set *nftables.Set, elems []nftables.SetElement) error {
	for chunk := range slices.Chunk(elems, elementsPerMessage) {
		if err := c.SetAddElements(set, chunk); err != nil {
			return fmt.Errorf("nftables: add %d elements to %s: %w", len(chunk), set.Name, err)
		}
	}
	return nil
}

// Bounds of a batch's cost, for sizing the socket buffers of the one that builds the table.
// The kernel handles a whole batch inside sendmsg, so the batch must fit the send buffer, and
// it acknowledges every message (google/nftables v0.3.0 asks for an acknowledgement of each)
// before the first can be read, so the acknowledgements must all fit the receive buffer. One
// takes ~1.1 KiB of it (measured on kernel 6.18: a 200,000-byte buffer holds 180).
// TestTableBudgetBoundsTheBatch checks that tableBudget bounds what restore queues.
const (
	ackBytes        = 2048
	maxRuleBytes    = 1024 // a message of one rule or chain; the largest here is ~550 bytes
	maxElementBytes = 128
	tableMessages   = 64 // replaceTable queues 51 and two rules per private network
)

// tableBudget bounds the number of messages and bytes of replaceTable followed by
// addSandboxes(sbs).
func (r *ruleset) tableBudget(sbs []sandboxRules) (msgs, bytes int) {
	elements := 0
	msgs = tableMessages + 2*len(r.private)
	for _, s := range sbs {
		elements += 2 + len(s.sb.Ports)
		if s.sb.hasChain() {
			msgs += 3 + len(s.sb.Allow) // the chain, a rule per prefix, the two rejects or the goto
		}
	}
	elementMessages := elements/elementsPerMessage + 4 // a partial message for each of the 4 sets
	return msgs + elementMessages, (msgs+elementMessages)*maxRuleBytes + elements*maxElementBytes
}

// delSandbox queues the removal of everything addSandbox added.
func (r *ruleset) delSandbox(c *nftables.Conn, sb *sandbox, veth string) error {
	for _, p := range sb.Ports {
		if err := r.delPort(c, p); err != nil {
			return err
		}
	}
	if err := r.delMode(c, sb, veth); err != nil {
		return err
	}
	if err := c.SetDeleteElements(r.sandboxes, []nftables.SetElement{{Key: ifname(veth)}}); err != nil {
		return fmt.Errorf("nftables: delete %s from %s: %w", veth, setSandboxes, err)
	}
	return nil
}

// modeElement queues the chain of a sandbox with an allow list, and returns the sandbox's
// element of the modes map: its address and the chain that decides where it may go. In
// mode allow that chain accepts the listed networks and rejects the rest; in mode egress it
// accepts them and goes on to the egress chain.
func (r *ruleset) modeElement(c *nftables.Conn, sb *sandbox, veth string) nftables.SetElement {
	target := &expr.Verdict{Kind: expr.VerdictJump, Chain: chainEgress}
	if sb.hasChain() {
		ch := c.AddChain(r.chain(allowChain(veth)))
		for _, p := range sb.Allow {
			r.add(c, ch, isIPv4(), daddrIn(expr.CmpOpEq, p), verdict(expr.VerdictAccept))
		}
		if sb.Mode == ModeAllow {
			r.reject(c, ch)
		} else {
			r.add(c, ch, []expr.Any{&expr.Verdict{Kind: expr.VerdictGoto, Chain: chainEgress}})
		}
		target = &expr.Verdict{Kind: expr.VerdictJump, Chain: ch.Name}
	}
	a := sb.Addr.As4()
	return nftables.SetElement{Key: a[:], VerdictData: target}
}

func (r *ruleset) addMode(c *nftables.Conn, sb *sandbox, veth string) error {
	return addElements(c, r.modes, []nftables.SetElement{r.modeElement(c, sb, veth)})
}

func (r *ruleset) delMode(c *nftables.Conn, sb *sandbox, veth string) error {
	a := sb.Addr.As4()
	if err := c.SetDeleteElements(r.modes, []nftables.SetElement{{Key: a[:]}}); err != nil {
		return fmt.Errorf("nftables: delete %s from %s: %w", sb.Addr, setModes, err)
	}
	if sb.hasChain() {
		c.DelChain(r.chain(allowChain(veth)))
	}
	return nil
}

func (r *ruleset) portElement(p Port, target netip.Addr) (*nftables.Set, nftables.SetElement) {
	key := protoPortBytes(protoNumber(p.Protocol), p.HostPort)
	set := r.portsAny
	if p.HostIP.IsValid() {
		a := p.HostIP.As4()
		key = append(a[:], key...)
		set = r.portsIP
	}
	elem := nftables.SetElement{Key: key}
	if target.IsValid() {
		elem.Val = addrPortBytes(target, p.Port)
	}
	return set, elem
}

func (r *ruleset) addPort(c *nftables.Conn, target netip.Addr, p Port) error {
	set, elem := r.portElement(p, target)
	return addElements(c, set, []nftables.SetElement{elem})
}

func (r *ruleset) delPort(c *nftables.Conn, p Port) error {
	set, elem := r.portElement(p, netip.Addr{})
	if err := c.SetDeleteElements(set, []nftables.SetElement{elem}); err != nil {
		return fmt.Errorf("nftables: delete host port %s from %s: %w", p.hostSide(), set.Name, err)
	}
	return nil
}

// replaceSandboxSideTable queues, for a sandbox's own network namespace, the table that
// delivers new TCP connections arriving on eth0 for the sandbox's address to 127.0.0.1, so
// services listening only on the sandbox's loopback are reachable (wildcard listeners are
// reached through 127.0.0.1 too). UDP is left alone: a wildcard-bound UDP server answers
// from the address routing picks (the sandbox's), not from 127.0.0.1, and conntrack would
// then remap the reply's port.
func replaceSandboxSideTable(c *nftables.Conn, name string, addr netip.Addr) {
	// Created if missing and its one chain emptied, rather than deleted and made again: a
	// table deletion in the batch costs an RCU grace period (10-25 ms measured).
	t := &nftables.Table{Name: name, Family: nftables.TableFamilyIPv4}
	c.AddTable(t)
	ch := c.AddChain(&nftables.Chain{Table: t, Name: chainPrerouting, Type: nftables.ChainTypeNAT,
		Hooknum: nftables.ChainHookPrerouting, Priority: nftables.ChainPriorityNATDest})
	c.FlushChain(ch)
	c.AddRule(&nftables.Rule{Table: t, Chain: ch, Exprs: exprs(
		iif(expr.CmpOpEq, sandboxIf), daddrIn(expr.CmpOpEq, netip.PrefixFrom(addr, 32)),
		metaCmp(expr.MetaKeyL4PROTO, expr.CmpOpEq, []byte{unix.IPPROTO_TCP}), dnatToAddr(localhost))})
}
