package net

import (
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net/netip"
	"os"
	"slices"
	"sync"

	"github.com/google/nftables"
	mdnetlink "github.com/mdlayher/netlink"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// Errors the API layer can map to answers: wrapped by every error they describe.
var (
	// ErrNotFound: the sandbox has no network state, or the port is not exposed.
	ErrNotFound = errors.New("not found")
	// ErrInvalid: a mode, allow list, port, protocol or host address that cannot be used.
	ErrInvalid = errors.New("invalid")
	// ErrConflict: the host port is taken, the port is already exposed differently, the
	// sandbox is already attached, or it has no network (mode none).
	ErrConflict = errors.New("conflict")
)

// Manager owns the nftables table, the sandbox veths and the state file named by its
// Config. It is safe for concurrent use; operations are serialized.
type Manager struct {
	cfg   Config
	rules *ruleset
	log   *slog.Logger

	mu sync.Mutex
	st *state
	// nft is a lasting connection: releasing a netfilter socket right after a batch that
	// deleted something waits for an RCU grace period in the kernel (~10 ms measured).
	nft      *nftables.Conn
	ct       *netlink.Handle     // conntrack, kept open for the same reason
	flusher  *portFlusher        // conntrack, for the kernel-side delete of one port's flows
	holds    map[hostPortKey]int // bound sockets that keep exposed host ports from host processes
	nextPort int                 // where the search for a free host port starts
	deleting vethDeletions       // veths of detached sandboxes, deleted in the background
	// nameservers are those of the sandboxes' resolv.conf, as the nameservers set holds them.
	nameservers []netip.Addr
}

// Attachment describes a sandbox's network.
type Attachment struct {
	ID    string
	Mode  Mode // empty while the address is only reserved (Allocate, no Attach yet)
	Allow []netip.Prefix
	// Addr is the sandbox's address: reserved by Allocate or by the first networked mode,
	// kept until Detach (also while the mode is none). Zero if never reserved.
	Addr    netip.Addr
	Gateway netip.Addr
	// HostVeth is the host side of the sandbox's veth pair; empty in mode none.
	HostVeth string
}

// Open takes ownership of the configured table, veths and state: it turns forwarding on for
// the uplinks and rebuilds the whole table from the state in one batch, so after a daemon
// restart every sandbox network and exposed port works as before. Veths of this table that
// the state does not know (left by a crash mid-operation) are removed.
func Open(cfg Config) (*Manager, error) {
	if err := cfg.validate(); err != nil {
		return nil, fmt.Errorf("%w: network config: %w", ErrInvalid, err)
	}
	st, err := loadState(cfg.StatePath)
	if err != nil {
		return nil, err
	}
	var known []string // veths of the state's sandboxes, also those made before they had an alias
	for id, sb := range st.Sandboxes {
		if sb.Addr.IsValid() && !cfg.Subnet.Contains(sb.Addr) {
			return nil, fmt.Errorf("network state %s: sandbox %q has %s, outside %s (the subnet changed?)", cfg.StatePath, id, sb.Addr, cfg.Subnet)
		}
		known = append(known, hostVethName(cfg.Table, id))
	}
	if err := cfg.checkRoutes(known); err != nil {
		return nil, err
	}
	uplinks := cfg.Uplinks
	if len(uplinks) == 0 {
		if uplinks, err = defaultUplinks(); err != nil {
			return nil, err
		}
	}
	private, err := hostNetworks(cfg.Subnet)
	if err != nil {
		return nil, err
	}
	_, nameservers, err := hostResolvConf()
	if err != nil && !errors.Is(err, ErrNoNameserver) {
		return nil, err
	}
	enabled, err := enableForwarding(uplinks)
	if err != nil {
		return nil, err
	}
	for _, u := range enabled {
		if !slices.Contains(st.Forwarding, u) {
			st.Forwarding = append(st.Forwarding, u)
		}
	}
	ct, err := newConntrackHandle()
	if err != nil {
		return nil, err
	}
	flusher, err := newPortFlusher()
	if err != nil {
		ct.Close()
		return nil, err
	}
	conn, err := nftables.New(nftables.AsLasting())
	if err != nil {
		ct.Close()
		flusher.close()
		return nil, fmt.Errorf("nftables: %w", err)
	}
	m := &Manager{cfg: cfg, rules: newRuleset(cfg, private, uint32(os.Geteuid())), log: slog.Default().With("component", "sandboxnet"),
		st: st, nft: conn, ct: ct, flusher: flusher, holds: map[hostPortKey]int{}, nextPort: cfg.HostPortMin,
		nameservers: nameservers}
	m.log.Info("egress mode denies private networks unless allowed", "networks", private, "nameservers", nameservers)
	if err := m.restore(); err != nil {
		m.Close()
		return nil, err
	}
	return m, nil
}

// restore brings veths, rules and port holds in line with the state.
func (m *Manager) restore() error {
	if err := m.removeStrayVeths(); err != nil {
		return err
	}
	if err := m.buildTable(); err != nil {
		return err
	}
	for id, sb := range m.st.Sandboxes {
		for _, p := range sb.Ports {
			fd, err := holdPort(p)
			if err != nil {
				// The rule still forwards the port; only a host process may now bind it too.
				m.log.Warn("exposed host port is also bound by a host process", "sandbox", id, "hostPort", p.hostSide(), "err", err)
				continue
			}
			m.holds[p.key()] = fd
		}
	}
	return m.st.save(m.cfg.StatePath)
}

// buildTable replaces the table with one built from the state, in one atomic batch, so no
// packet ever meets half a table. The batch is sent on a connection of its own whose socket
// buffers fit it (tableBudget): with the default ones (~200 KiB) the acknowledgements of the
// batch of ~90 sandboxes overflowed the receive buffer (ENOBUFS), and a larger batch does not
// fit the send buffer (EMSGSIZE).
func (m *Manager) buildTable() error {
	var sbs []sandboxRules
	for _, id := range slices.Sorted(maps.Keys(m.st.Sandboxes)) {
		if sb := m.st.Sandboxes[id]; sb.networked() {
			sbs = append(sbs, sandboxRules{sb, hostVethName(m.cfg.Table, id)})
		}
	}
	msgs, bytes := m.rules.tableBudget(sbs)
	// Without AsLasting, New only fills in a struct; Flush dials and sets the buffers.
	c, _ := nftables.New(nftables.WithSockOptions(socketBuffers(bytes, msgs*ackBytes)))
	if err := m.rules.replaceTable(c, m.st.Forwarding, m.nameservers); err != nil {
		return err
	}
	if err := m.rules.addSandboxes(c, sbs); err != nil {
		return err
	}
	if err := c.Flush(); err != nil {
		return fmt.Errorf("nftables: build table %s with %d sandboxes: %w", m.cfg.Table, len(sbs), err)
	}
	return nil
}

// hostNetworks returns the networks egress mode denies unless allowed: privateRanges and the
// networks of the host's interfaces (the host's LAN) outside them, other than loopback, single
// addresses (a host address is refused anyway) and the sandbox subnet. They are read once:
// interfaces that appear later count from the next daemon start.
func hostNetworks(subnet netip.Prefix) ([]netip.Prefix, error) {
	addrs, err := Consistent(func() ([]netlink.Addr, error) { return netlink.AddrList(nil, netlink.FAMILY_V4) })
	if err != nil {
		return nil, fmt.Errorf("list the host's addresses: %w", err)
	}
	out := slices.Clone(privateRanges)
	for _, a := range addrs {
		ip, ok := netip.AddrFromSlice(a.IP.To4())
		ones, _ := a.Mask.Size()
		if !ok || ip.IsLoopback() || ones >= 32 || ones == 0 {
			continue
		}
		p := netip.PrefixFrom(ip, ones).Masked()
		if p.Overlaps(subnet) || slices.ContainsFunc(out, func(q netip.Prefix) bool { return q.Bits() <= p.Bits() && q.Contains(p.Addr()) }) {
			continue
		}
		out = append(out, p)
	}
	return out, nil
}

// ResolvConf returns the resolv.conf a sandbox should see (the daemon bind-mounts it
// read-only): the nameservers the host uses that a sandbox can reach (IPv4, not loopback, not
// an address of the host itself), and the host's search and options lines. It keeps those
// nameservers reachable on port 53 in egress mode, even on a private network. When no such
// nameserver exists it returns the file without nameserver lines and an error wrapping
// ErrNoNameserver; the daemon can still write the file and should log the error.
func (m *Manager) ResolvConf() ([]byte, error) {
	data, servers, err := hostResolvConf()
	if err != nil && !errors.Is(err, ErrNoNameserver) {
		return nil, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if !slices.Equal(servers, m.nameservers) {
		if err := m.apply("update nameservers", func(c *nftables.Conn) error { return m.rules.setNameservers(c, servers) }); err != nil {
			return nil, err
		}
		m.log.Info("the sandboxes' nameservers changed", "nameservers", servers)
		m.nameservers = servers
	}
	return data, err
}

// socketBuffers sets a netlink socket's send and receive buffers to at least these sizes, also
// beyond net.core.wmem_max and rmem_max (SO_SNDBUFFORCE and SO_RCVBUFFORCE need CAP_NET_ADMIN,
// which the Manager needs anyway). A buffer is only a limit: memory is taken as it is used.
func socketBuffers(send, receive int) nftables.SockOption {
	return func(conn *mdnetlink.Conn) error {
		raw, err := conn.SyscallConn()
		if err != nil {
			return fmt.Errorf("netlink socket: %w", err)
		}
		var errs []error
		err = raw.Control(func(fd uintptr) {
			for _, b := range []struct {
				get, force int
				size       int
			}{{unix.SO_SNDBUF, unix.SO_SNDBUFFORCE, send}, {unix.SO_RCVBUF, unix.SO_RCVBUFFORCE, receive}} {
				// The kernel reports (and uses) twice the size it was given.
				if have, err := unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, b.get); err == nil && have/2 >= b.size {
					continue
				}
				if err := unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, b.force, b.size); err != nil {
					errs = append(errs, fmt.Errorf("netlink socket buffer of %d bytes: %w", b.size, err))
				}
			}
		})
		return errors.Join(append(errs, err)...)
	}
}

// removeStrayVeths removes the veths of this table that belong to no networked sandbox.
func (m *Manager) removeStrayVeths() error {
	own, err := ownVeths(m.cfg.Table)
	if err != nil {
		return err
	}
	for id, veth := range own {
		if sb := m.st.Sandboxes[id]; sb != nil && sb.networked() {
			continue
		}
		m.log.Info("removing a veth no sandbox owns", "veth", veth, "sandbox", id)
		if err := deleteVeth(veth); err != nil {
			return err
		}
	}
	return nil
}

// apply sends what queue adds as one atomic nftables batch. After an error the connection
// is replaced: it would otherwise keep a half-queued batch, or a marshalling error, and send
// or report it with the next batch.
func (m *Manager) apply(what string, queue func(*nftables.Conn) error) error {
	err := queue(m.nft)
	if err == nil {
		if err = m.nft.Flush(); err != nil {
			err = fmt.Errorf("nftables: %s: %w", what, err)
		}
	}
	if err != nil {
		m.replaceConn()
	}
	return err
}

func (m *Manager) replaceConn() {
	if err := m.nft.CloseLasting(); err != nil {
		m.log.Warn("nftables: close connection", "err", err)
	}
	c, err := nftables.New(nftables.AsLasting())
	if err != nil {
		m.log.Warn("nftables: no lasting connection; using one socket per batch", "err", err)
		c, _ = nftables.New() // without AsLasting, New only fills in a struct and cannot fail
	}
	m.nft = c
}

// Close releases the host ports the Manager holds and its netlink socket. The kernel
// configuration stays: a Manager opened later on the same state takes it over.
func (m *Manager) Close() {
	m.mu.Lock()
	defer m.mu.Unlock()
	for k, fd := range m.holds {
		releasePort(fd)
		delete(m.holds, k)
	}
	if err := m.nft.CloseLasting(); err != nil {
		m.log.Warn("nftables: close connection", "err", err)
	}
	m.ct.Close()
	m.flusher.close()
	m.deleting.wait()
}

// Allocate reserves an address for a sandbox before it is attached, e.g. to write its
// /etc/hosts before the container starts. It returns the address already reserved, if any.
// The reservation lasts until Detach.
func (m *Manager) Allocate(id string) (netip.Addr, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	sb := m.st.Sandboxes[id]
	if sb != nil && sb.Addr.IsValid() {
		return sb.Addr, nil
	}
	next := &sandbox{}
	if sb != nil {
		*next = *sb
	}
	addr, err := m.st.allocate(m.cfg.Subnet)
	if err != nil {
		return netip.Addr{}, fmt.Errorf("%w: sandbox %q: %w", ErrConflict, id, err)
	}
	next.Addr = addr
	if err := m.commit(id, next, sb); err != nil {
		return netip.Addr{}, err
	}
	return addr, nil
}

// commit records next as the sandbox's state and saves it; if saving fails the previous
// record (nil: none) is put back.
func (m *Manager) commit(id string, next, prev *sandbox) error {
	m.st.Sandboxes[id] = next
	if err := m.st.save(m.cfg.StatePath); err != nil {
		if prev == nil {
			delete(m.st.Sandboxes, id)
		} else {
			m.st.Sandboxes[id] = prev
		}
		return err
	}
	return nil
}

// Attach gives the sandbox whose network namespace is at netnsPath (e.g. /proc/<pid>/ns/net)
// its network. In modes egress and allow: an address (the one Allocate reserved, if any),
// its rules in one batch, then a veth pair (eth0 inside, with the address and a default route
// via the gateway). In mode none: nothing but the record, so SetMode can add a network later.
// netnsPath is kept for that, and used only while it names the same namespace.
func (m *Manager) Attach(id, netnsPath string, mode Mode, allow []netip.Prefix) (*Attachment, error) {
	if err := checkMode(mode, allow); err != nil {
		return nil, fmt.Errorf("%w: sandbox %q: %w", ErrInvalid, id, err)
	}
	t := newSteps()
	ns, nsid, err := openNetns(netnsPath)
	if err != nil {
		return nil, err
	}
	defer ns.Close()
	m.mu.Lock()
	defer m.mu.Unlock()
	t.mark("open")
	prev := m.st.Sandboxes[id]
	if prev != nil && prev.attached() {
		return nil, fmt.Errorf("%w: sandbox %q is already attached", ErrConflict, id)
	}
	next := &sandbox{Mode: mode, Allow: normalizeAllow(allow), Netns: netnsPath, NetnsID: nsid}
	if prev != nil {
		next.Addr = prev.Addr
	}
	if err := m.connect(id, next, ns, t); err != nil {
		return nil, err
	}
	if err := m.commit(id, next, prev); err != nil {
		return nil, errors.Join(err, m.disconnect(id, next))
	}
	t.mark("state")
	m.log.Debug("network attached", append([]any{"sandbox", id, "mode", mode}, t.log()...)...)
	return m.attachment(id, next), nil
}

// connect gives a sandbox in a networked mode an address (if it has none), its rules and then
// its veth, so no packet of it is ever outside the rules. On error nothing of it is left in
// the kernel.
func (m *Manager) connect(id string, next *sandbox, ns netns.NsHandle, t *steps) error {
	if !next.networked() {
		return nil
	}
	if !next.Addr.IsValid() {
		addr, err := m.st.allocate(m.cfg.Subnet)
		if err != nil {
			return fmt.Errorf("%w: sandbox %q: %w", ErrConflict, id, err)
		}
		next.Addr = addr
	}
	veth := hostVethName(m.cfg.Table, id)
	err := m.apply("add sandbox rules", func(c *nftables.Conn) error { return m.rules.addSandbox(c, next, veth) })
	if err != nil {
		return fmt.Errorf("sandbox %q: %w", id, err)
	}
	t.mark("rules")
	if err := m.createVeth(id, veth, next.Addr, ns, t); err != nil {
		return errors.Join(fmt.Errorf("sandbox %q: %w", id, err), m.delSandboxRules(next, veth))
	}
	return nil
}

// disconnect removes a networked sandbox's veth and rules. Whatever is already gone (the
// namespace exited, the table was deleted) is skipped.
func (m *Manager) disconnect(id string, sb *sandbox) error {
	if !sb.networked() {
		return nil
	}
	veth := hostVethName(m.cfg.Table, id)
	if err := deleteVeth(veth); err != nil {
		return fmt.Errorf("sandbox %q: %w", id, err)
	}
	if err := m.delSandboxRules(sb, veth); err != nil {
		return fmt.Errorf("sandbox %q: %w", id, err)
	}
	return nil
}

// flushFlows deletes conntrack entries inside the kernel (portFlusher); on a kernel without the
// filtered flush it dumps the table and deletes what matches the fallback matches instead.
func (m *Manager) flushFlows(id string, matches []origMatch, fallback ...flowMatch) error {
	for _, o := range matches {
		err := m.flusher.flush(o)
		if errors.Is(err, unix.EOPNOTSUPP) || errors.Is(err, unix.EINVAL) {
			// A kernel before the filtered flush (Linux 6.6): dump the table and delete.
			return m.cutFlows(id, fallback...)
		}
		if err != nil {
			return fmt.Errorf("sandbox %q: changed, but its open connections could not be cut: %w", id, err)
		}
	}
	return nil
}

// cutFlows deletes conntrack entries once a change is in the rules and the state, so open
// connections are judged by the new rules; its failure leaves rules and state consistent.
func (m *Manager) cutFlows(id string, matches ...flowMatch) error {
	if err := forgetFlows(m.ct, matches...); err != nil {
		return fmt.Errorf("sandbox %q: changed, but its open connections could not be cut: %w", id, err)
	}
	return nil
}

func (m *Manager) delSandboxRules(sb *sandbox, veth string) error {
	if !tableExists(m.nft, m.cfg.Table) {
		m.log.Warn("nftables table is gone; no sandbox rules to remove", "table", m.cfg.Table)
		return nil
	}
	return m.apply("remove sandbox rules", func(c *nftables.Conn) error { return m.rules.delSandbox(c, sb, veth) })
}

// SetMode changes a live sandbox's mode. Between egress and allow (or two allow lists) the
// change is one atomic batch, after which connections the sandbox opened are cut (their
// conntrack entries are deleted) so they are judged again. To none, the veth is removed (exposed ports
// stay recorded but stop working); from none, the veth is created again in the namespace it
// was attached with, with the same address, and exposed ports work again.
func (m *Manager) SetMode(id string, mode Mode, allow []netip.Prefix) error {
	if err := checkMode(mode, allow); err != nil {
		return fmt.Errorf("%w: sandbox %q: %w", ErrInvalid, id, err)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	prev := m.st.Sandboxes[id]
	if prev == nil || !prev.attached() {
		return fmt.Errorf("%w: sandbox %q has no network", ErrNotFound, id)
	}
	next := *prev
	next.Mode, next.Allow = mode, normalizeAllow(allow)
	if next.Mode == prev.Mode && slices.Equal(next.Allow, prev.Allow) {
		return nil
	}
	if err := m.switchMode(id, prev, &next); err != nil {
		return err
	}
	if err := m.commit(id, &next, prev); err != nil {
		// Put the kernel back to the recorded mode, so state and rules agree.
		return errors.Join(err, m.switchMode(id, &next, prev))
	}
	switch {
	case !prev.networked():
		return nil
	case !next.networked():
		return m.cutFlows(id, flowsOf(prev.Addr)...)
	}
	return m.cutFlows(id, flowsFrom(prev.Addr))
}

func (m *Manager) switchMode(id string, prev, next *sandbox) error {
	switch {
	case !prev.networked():
		ns, err := reopenNetns(next.Netns, next.NetnsID)
		if err != nil {
			return fmt.Errorf("%w: sandbox %q: %w", ErrConflict, id, err)
		}
		defer ns.Close()
		return m.connect(id, next, ns, nil)
	case !next.networked():
		return m.disconnect(id, prev)
	}
	veth := hostVethName(m.cfg.Table, id)
	err := m.apply("change mode", func(c *nftables.Conn) error {
		if err := m.rules.delMode(c, prev, veth); err != nil {
			return err
		}
		return m.rules.addMode(c, next, veth)
	})
	if err != nil {
		return fmt.Errorf("sandbox %q: %w", id, err)
	}
	return nil
}

// Suspend takes a sandbox's network off its namespace, whose container is going away for a
// while (hibernation): its veth is deleted (in the background), while its address, its rules
// and its exposed ports stay, so that Reattach gives a new namespace the same network. A
// sandbox without network state is not an error.
func (m *Manager) Suspend(id string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	sb := m.st.Sandboxes[id]
	if sb == nil || !sb.attached() {
		return nil
	}
	if sb.networked() {
		m.deleting.start(hostVethName(m.cfg.Table, id), m.log)
	}
	next := *sb
	next.Netns, next.NetnsID = "", nsID{}
	return m.commit(id, &next, sb)
}

// Reattach gives a suspended sandbox's network (Suspend) to the network namespace at
// netnsPath: in modes egress and allow a new veth pair with the same address; its rules and
// exposed ports are still in place.
func (m *Manager) Reattach(id, netnsPath string) (*Attachment, error) {
	ns, nsid, err := openNetns(netnsPath)
	if err != nil {
		return nil, err
	}
	defer ns.Close()
	m.mu.Lock()
	defer m.mu.Unlock()
	prev := m.st.Sandboxes[id]
	if prev == nil || !prev.attached() {
		return nil, fmt.Errorf("%w: sandbox %q has no network to reattach", ErrNotFound, id)
	}
	next := *prev
	next.Netns, next.NetnsID = netnsPath, nsid
	if next.networked() {
		if err := m.createVeth(id, hostVethName(m.cfg.Table, id), next.Addr, ns, nil); err != nil {
			return nil, fmt.Errorf("sandbox %q: %w", id, err)
		}
	}
	if err := m.commit(id, &next, prev); err != nil {
		if next.networked() {
			err = errors.Join(err, deleteVeth(hostVethName(m.cfg.Table, id)))
		}
		return nil, err
	}
	return m.attachment(id, &next), nil
}

// Detach removes a sandbox's network: rules, exposed ports, conntrack entries, its address
// reservation and, in the background, its veth. It works when the sandbox's namespace is already gone, and a
// sandbox without network state is not an error.
func (m *Manager) Detach(id string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	sb := m.st.Sandboxes[id]
	if sb == nil {
		return nil
	}
	if sb.networked() {
		// Rules first; the veth goes in the background (see vethDeletions).
		veth := hostVethName(m.cfg.Table, id)
		if err := m.delSandboxRules(sb, veth); err != nil {
			return fmt.Errorf("sandbox %q: %w", id, err)
		}
		m.deleting.start(veth, m.log)
	}
	for _, p := range sb.Ports {
		m.release(p)
	}
	delete(m.st.Sandboxes, id)
	if err := m.st.save(m.cfg.StatePath); err != nil {
		return err
	}
	if !sb.networked() {
		return nil
	}
	return m.flushFlows(id, sandboxFlows(sb.Addr, sb.Ports), flowsOf(sb.Addr)...)
}

// Sandboxes lists the ids of every sandbox with network state, e.g. to find those whose
// sandbox is gone after a daemon restart.
func (m *Manager) Sandboxes() []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return slices.Sorted(maps.Keys(m.st.Sandboxes))
}

// Lookup returns a sandbox's network, if it has any state (an address reserved or attached).
func (m *Manager) Lookup(id string) (*Attachment, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	sb := m.st.Sandboxes[id]
	if sb == nil {
		return nil, false
	}
	return m.attachment(id, sb), true
}

func (m *Manager) attachment(id string, sb *sandbox) *Attachment {
	a := &Attachment{ID: id, Mode: sb.Mode, Allow: slices.Clone(sb.Allow), Addr: sb.Addr, Gateway: m.cfg.gateway()}
	if sb.networked() {
		a.HostVeth = hostVethName(m.cfg.Table, id)
	}
	return a
}

// Cleanup removes everything a Manager with this Config created: the table, every veth of
// this table or named in the state (and with them the host's addresses and routes towards
// sandboxes), the conntrack entries of the subnet, the forwarding it turned on, and the state
// file. It is for `nsbox daemon --cleanup`, with no
// Manager open; sandboxes' own namespaces are not touched.
func Cleanup(cfg Config) error {
	if err := cfg.validate(); err != nil {
		return fmt.Errorf("%w: network config: %w", ErrInvalid, err)
	}
	st, err := loadState(cfg.StatePath)
	if err != nil {
		slog.Warn("network state unreadable; cleaning up by names only", "err", err)
		st = &state{Sandboxes: map[string]*sandbox{}}
	}
	var errs []error
	errs = append(errs, deleteTable(cfg.Table))
	errs = append(errs, deleteVeths(cfg.Table, st)...)
	errs = append(errs, forgetSubnetFlows(cfg.Subnet))
	for _, u := range st.Forwarding {
		if err := setIPv4Conf(u, "forwarding", "0"); err != nil && !isNotFound(err) {
			errs = append(errs, err)
		}
	}
	errs = append(errs, removeState(cfg.StatePath))
	return errors.Join(errs...)
}

// tableExists reports whether nsbox's inet table of that name exists.
func tableExists(c *nftables.Conn, name string) bool {
	_, err := c.ListTableOfFamily(name, nftables.TableFamilyINet)
	return err == nil
}

func forgetSubnetFlows(subnet netip.Prefix) error {
	h, err := newConntrackHandle()
	if err != nil {
		return err
	}
	defer h.Close()
	return forgetFlows(h, flowsOfNet(subnet)...)
}

func deleteTable(name string) error {
	c, err := nftables.New()
	if err != nil {
		return fmt.Errorf("nftables: %w", err)
	}
	if !tableExists(c, name) {
		return nil
	}
	c.DelTable(&nftables.Table{Name: name, Family: nftables.TableFamilyINet})
	if err := c.Flush(); err != nil {
		return fmt.Errorf("nftables: delete table %s: %w", name, err)
	}
	return nil
}

// deleteVeths removes the veths named in the state and any other veth marked as this table's.
func deleteVeths(table string, st *state) []error {
	var errs []error
	for id := range st.Sandboxes {
		errs = append(errs, deleteVeth(hostVethName(table, id)))
	}
	own, err := ownVeths(table)
	if err != nil {
		return append(errs, err)
	}
	for _, veth := range own {
		errs = append(errs, deleteVeth(veth))
	}
	return errs
}
