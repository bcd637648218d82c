package proxy

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"sync"
)

// routeID names one exposed port.
type routeID struct {
	sandbox string
	port    int
}

// conns dials the proxy's backend connections and keeps track of them by address, so
// that Forget can close those of one sandbox port. The shared transport pools connections
// by address, so a route's connections are exactly those to its address.
type conns struct {
	dialer *net.Dialer

	mu     sync.Mutex
	routes map[routeID]netip.AddrPort // the address each route last resolved to
	owner  map[netip.AddrPort]routeID // and back: a sandbox address belongs to one route
	open   map[netip.AddrPort]map[*trackedConn]struct{}
}

func newConns(d *net.Dialer) *conns {
	return &conns{
		dialer: d,
		routes: map[routeID]netip.AddrPort{},
		owner:  map[netip.AddrPort]routeID{},
		open:   map[netip.AddrPort]map[*trackedConn]struct{}{},
	}
}

// dial is the transport's DialContext.
func (cs *conns) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	ap, err := netip.ParseAddrPort(addr)
	if err != nil {
		return nil, fmt.Errorf("proxy: backend address %q: %w", addr, err)
	}
	c, err := cs.dialer.DialContext(ctx, network, addr)
	if err != nil {
		return nil, err
	}
	tc := &trackedConn{Conn: c, owner: cs, addr: unmap(ap)}
	cs.mu.Lock()
	set := cs.open[tc.addr]
	if set == nil {
		set = map[*trackedConn]struct{}{}
		cs.open[tc.addr] = set
	}
	set[tc] = struct{}{}
	cs.mu.Unlock()
	return tc, nil
}

// remember records that a route resolved to addr. An address that last belonged to
// another route (a removed sandbox's address given to a new one) now belongs to this one.
func (cs *conns) remember(sandbox string, port int, addr netip.AddrPort) {
	id, addr := routeID{sandbox, port}, unmap(addr)
	cs.mu.Lock()
	defer cs.mu.Unlock()
	old, known := cs.routes[id]
	if known && old == addr {
		return
	}
	if known && cs.owner[old] == id {
		delete(cs.owner, old)
	}
	if prev, taken := cs.owner[addr]; taken {
		delete(cs.routes, prev)
	}
	cs.routes[id] = addr
	cs.owner[addr] = id
}

// forget closes the connections to a sandbox's port (port 0: all its ports) and drops
// their routes.
func (cs *conns) forget(sandbox string, port int) {
	var doomed []*trackedConn
	cs.mu.Lock()
	for id, addr := range cs.routes {
		if id.sandbox != sandbox || port != 0 && id.port != port {
			continue
		}
		delete(cs.routes, id)
		delete(cs.owner, addr)
		for c := range cs.open[addr] {
			doomed = append(doomed, c)
		}
	}
	cs.mu.Unlock()
	closeConns(doomed)
}

// closeAll closes every backend connection.
func (cs *conns) closeAll() {
	var doomed []*trackedConn
	cs.mu.Lock()
	for _, set := range cs.open {
		for c := range set {
			doomed = append(doomed, c)
		}
	}
	cs.mu.Unlock()
	closeConns(doomed)
}

func closeConns(cs []*trackedConn) {
	for _, c := range cs {
		_ = c.Close()
	}
}

// trackedConn is a backend connection that leaves its set when closed.
type trackedConn struct {
	net.Conn
	owner *conns
	addr  netip.AddrPort
	once  sync.Once
}

func (c *trackedConn) Close() error {
	c.once.Do(func() {
		c.owner.mu.Lock()
		defer c.owner.mu.Unlock()
		set := c.owner.open[c.addr]
		delete(set, c)
		if len(set) == 0 {
			delete(c.owner.open, c.addr)
		}
	})
	return c.Conn.Close()
}

func unmap(ap netip.AddrPort) netip.AddrPort {
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
}
