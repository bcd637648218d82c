package net

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"

	"github.com/google/nftables"
	"golang.org/x/sys/unix"
)

// Protocols of exposed ports.
const (
	TCP = "tcp"
	UDP = "udp"
)

// Port is a sandbox port exposed on a host port.
type Port struct {
	Port     int    `json:"port"`     // in the sandbox
	Protocol string `json:"protocol"` // TCP or UDP
	// HostPort is the port on the host; 0 in a request means: choose one from the range.
	HostPort int `json:"hostPort"`
	// HostIP restricts the exposure to one host address (127.0.0.1 for the host alone); the
	// zero Addr (or 0.0.0.0 in a request) means every host address.
	HostIP netip.Addr `json:"hostIP,omitzero"`
	// Token and Public are the preview proxy's: kept with the exposure, not used here. A
	// request that names an existing exposure gets the existing one back, with its own.
	Token  string `json:"token,omitempty"`
	Public bool   `json:"public,omitempty"`
}

func (p Port) hostSide() string {
	ip := "*"
	if p.HostIP.IsValid() {
		ip = p.HostIP.String()
	}
	return fmt.Sprintf("%s:%d/%s", ip, p.HostPort, p.Protocol)
}

// hostPortKey identifies a host port claim.
type hostPortKey struct {
	protocol string
	ip       netip.Addr
	port     int
}

func (p Port) key() hostPortKey { return hostPortKey{p.Protocol, p.HostIP, p.HostPort} }

// overlaps reports whether two exposures claim the same host port on a common address.
func (p Port) overlaps(q Port) bool {
	return p.Protocol == q.Protocol && p.HostPort == q.HostPort &&
		(!p.HostIP.IsValid() || !q.HostIP.IsValid() || p.HostIP == q.HostIP)
}

func protoNumber(protocol string) byte {
	if protocol == UDP {
		return unix.IPPROTO_UDP
	}
	return unix.IPPROTO_TCP
}

// normalizePort checks a request and fills in the defaults: protocol tcp, and 0.0.0.0 as
// "every address".
func normalizePort(p Port) (Port, error) {
	if p.Protocol == "" {
		p.Protocol = TCP
	}
	if p.Protocol != TCP && p.Protocol != UDP {
		return p, fmt.Errorf("%w: protocol %q: must be tcp or udp", ErrInvalid, p.Protocol)
	}
	if p.Port < 1 || p.Port > 65535 {
		return p, fmt.Errorf("%w: port %d: must be 1-65535", ErrInvalid, p.Port)
	}
	if p.HostPort < 0 || p.HostPort > 65535 {
		return p, fmt.Errorf("%w: host port %d: must be 1-65535, or 0 to choose one", ErrInvalid, p.HostPort)
	}
	if p.HostIP.IsValid() {
		p.HostIP = p.HostIP.Unmap()
		if !p.HostIP.Is4() {
			return p, fmt.Errorf("%w: host IP %s: only IPv4 is supported", ErrInvalid, p.HostIP)
		}
		if p.HostIP.IsUnspecified() {
			p.HostIP = netip.Addr{}
		}
	}
	return p, nil
}

// Expose forwards a host port to a port of the sandbox, for TCP or UDP, from other machines,
// from the host itself (127.0.0.1 included) and from sandboxes. The host port is chosen from
// the configured range when want.HostPort is 0. A host port already exposed, or bound by a
// host process, is refused with ErrConflict; the Manager then keeps it bound itself, so host
// processes cannot take it while it is exposed. Exposing the same port again returns the
// existing exposure when the request agrees with it.
func (m *Manager) Expose(id string, want Port) (Port, error) {
	p, err := normalizePort(want)
	if err != nil {
		return Port{}, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	sb := m.st.Sandboxes[id]
	if sb == nil || !sb.attached() {
		return Port{}, fmt.Errorf("%w: sandbox %q has no network", ErrNotFound, id)
	}
	if !sb.networked() {
		return Port{}, fmt.Errorf("%w: sandbox %q has network mode none", ErrConflict, id)
	}
	if i := findPort(sb.Ports, p.Port, p.Protocol); i >= 0 {
		have := sb.Ports[i]
		if (p.HostPort == 0 || p.HostPort == have.HostPort) && p.HostIP == have.HostIP {
			return have, nil
		}
		return Port{}, fmt.Errorf("%w: port %d/%s of sandbox %q is already exposed on %s", ErrConflict, p.Port, p.Protocol, id, have.hostSide())
	}
	fd, err := m.claimHostPort(&p)
	if err != nil {
		return Port{}, fmt.Errorf("sandbox %q: %w", id, err)
	}
	if err := m.forward(p, sb.Addr); err != nil {
		releasePort(fd)
		return Port{}, fmt.Errorf("sandbox %q: %w", id, err)
	}
	next := *sb
	next.Ports = append(slices.Clone(sb.Ports), p)
	if err := m.commit(id, &next, sb); err != nil {
		releasePort(fd)
		return Port{}, errors.Join(err, m.unforward(p))
	}
	m.holds[p.key()] = fd
	return p, nil
}

// Unexpose stops forwarding the host port of a sandbox port and then deletes the port's
// conntrack entries, so connections already open through it stop too. If only that last step
// fails, the port is unexposed all the same and the error says so.
func (m *Manager) Unexpose(id string, port int, protocol string) error {
	if protocol == "" {
		protocol = TCP
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	sb := m.st.Sandboxes[id]
	if sb == nil {
		return fmt.Errorf("%w: sandbox %q has no network", ErrNotFound, id)
	}
	i := findPort(sb.Ports, port, protocol)
	if i < 0 {
		return fmt.Errorf("%w: port %d/%s of sandbox %q is not exposed", ErrNotFound, port, protocol, id)
	}
	p := sb.Ports[i]
	if sb.networked() {
		if err := m.unforward(p); err != nil {
			return fmt.Errorf("sandbox %q: %w", id, err)
		}
	}
	next := *sb
	next.Ports = slices.Delete(slices.Clone(sb.Ports), i, i+1)
	if err := m.commit(id, &next, sb); err != nil {
		if sb.networked() {
			err = errors.Join(err, m.forward(p, sb.Addr))
		}
		return err
	}
	m.release(p)
	if !sb.networked() {
		return nil
	}
	return m.flushFlows(id, []origMatch{portFlows(p)}, flowsToPort(p, sb.Addr))
}

// forward adds a port's forwarding rule as one batch.
func (m *Manager) forward(p Port, target netip.Addr) error {
	return m.apply("expose "+p.hostSide(), func(c *nftables.Conn) error { return m.rules.addPort(c, target, p) })
}

// unforward removes a port's forwarding rule as one batch.
func (m *Manager) unforward(p Port) error {
	return m.apply("unexpose "+p.hostSide(), func(c *nftables.Conn) error { return m.rules.delPort(c, p) })
}

// Ports lists the sandbox's exposed ports.
func (m *Manager) Ports(id string) []Port {
	m.mu.Lock()
	defer m.mu.Unlock()
	if sb := m.st.Sandboxes[id]; sb != nil {
		return slices.Clone(sb.Ports)
	}
	return nil
}

func findPort(ports []Port, port int, protocol string) int {
	return slices.IndexFunc(ports, func(p Port) bool { return p.Port == port && p.Protocol == protocol })
}

// claimHostPort binds the requested host port, or the first free one of the range, and
// returns the bound socket. A port is free if no other exposure claims it and binding it
// succeeds (no host process has it).
func (m *Manager) claimHostPort(p *Port) (int, error) {
	if p.HostPort != 0 {
		if !m.cfg.hostPortAllowed(p.HostPort) {
			return -1, fmt.Errorf("%w: host port %d is outside the daemon's host port range %d-%d and not allowed explicitly", ErrInvalid, p.HostPort, m.cfg.HostPortMin, m.cfg.HostPortMax)
		}
		if owner := m.hostPortOwner(*p); owner != "" {
			return -1, fmt.Errorf("%w: host port %s is already exposed for sandbox %q", ErrConflict, p.hostSide(), owner)
		}
		fd, err := holdPort(*p)
		if err != nil {
			return -1, bindError(*p, err)
		}
		return fd, nil
	}
	lo, hi := m.cfg.HostPortMin, m.cfg.HostPortMax
	for range hi - lo + 1 {
		p.HostPort = m.nextPort
		m.nextPort++
		if m.nextPort > hi {
			m.nextPort = lo
		}
		if m.hostPortOwner(*p) != "" {
			continue
		}
		fd, err := holdPort(*p)
		if errors.Is(err, unix.EADDRINUSE) {
			continue
		}
		if err != nil {
			return -1, bindError(*p, err)
		}
		return fd, nil
	}
	p.HostPort = 0
	return -1, fmt.Errorf("%w: no free %s host port in %d-%d", ErrConflict, p.Protocol, lo, hi)
}

func bindError(p Port, err error) error {
	switch {
	case errors.Is(err, unix.EADDRINUSE):
		return fmt.Errorf("%w: host port %s is in use by a host process", ErrConflict, p.hostSide())
	case errors.Is(err, unix.EADDRNOTAVAIL):
		return fmt.Errorf("%w: host IP %s is not an address of this host", ErrInvalid, p.HostIP)
	}
	return fmt.Errorf("bind host port %s: %w", p.hostSide(), err)
}

func (m *Manager) hostPortOwner(p Port) string {
	for id, sb := range m.st.Sandboxes {
		for _, q := range sb.Ports {
			if q.overlaps(p) {
				return id
			}
		}
	}
	return ""
}

// holdPort binds (without SO_REUSEADDR, and without listening) the host port of an exposure:
// it fails if a host socket has the port, and while it is held no host process can bind it.
// Connections never reach the socket: the rules forward them before local delivery.
func holdPort(p Port) (int, error) {
	typ := unix.SOCK_STREAM
	if p.Protocol == UDP {
		typ = unix.SOCK_DGRAM
	}
	fd, err := unix.Socket(unix.AF_INET, typ|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return -1, fmt.Errorf("socket: %w", err)
	}
	sa := &unix.SockaddrInet4{Port: p.HostPort}
	if p.HostIP.IsValid() {
		sa.Addr = p.HostIP.As4()
	}
	if err := unix.Bind(fd, sa); err != nil {
		unix.Close(fd)
		return -1, err
	}
	return fd, nil
}

func releasePort(fd int) {
	unix.Close(fd)
}

// release closes the socket holding an exposure's host port, if any.
func (m *Manager) release(p Port) {
	if fd, ok := m.holds[p.key()]; ok {
		releasePort(fd)
		delete(m.holds, p.key())
	}
}
