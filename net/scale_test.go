package net

import (
	"fmt"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"
)

// scaleBox is one sandbox of a large testNet, with an HTTP server on port 8080 that answers
// its name, exposed on a host port.
type scaleBox struct {
	name  string
	ns    *testNS
	allow bool
	port  Port
}

// newScaleNet makes a testNet with a /22 subnet and n sandboxes, every fifth in allow mode
// with three prefixes, the others in egress mode allowing the outside host's (private)
// networks, each with port 8080 exposed.
func newScaleNet(t testing.TB, n int) (*testNet, []scaleBox) {
	t.Helper()
	tn := newTestNet(t, func(cfg *Config, seq int) {
		cfg.Subnet = netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 224 + byte(seq%8), 0, 0}), 22)
		cfg.HostPortMin, cfg.HostPortMax = 30000, 30000+2*n
	})
	allow := []netip.Prefix{netip.PrefixFrom(tn.allowed, 32), netip.MustParsePrefix("192.0.2.0/24"), netip.MustParsePrefix("198.51.100.0/24")}
	outside := []netip.Prefix{netip.PrefixFrom(tn.allowed, 24).Masked(), netip.PrefixFrom(tn.other, 24).Masked()}
	boxes := make([]scaleBox, n)
	for i := range boxes {
		b := &boxes[i]
		b.name, b.allow = fmt.Sprintf("s%d", i), i%5 == 0
		if b.allow {
			b.ns, _ = tn.sandbox(b.name, ModeAllow, allow...)
		} else {
			b.ns, _ = tn.sandbox(b.name, ModeEgress, outside...)
		}
		b.ns.serveHTTP(t, "0.0.0.0:8080", b.name)
		p, err := tn.m.Expose(tn.id(b.name), Port{Port: 8080})
		if err != nil {
			t.Fatalf("Expose %s: %v", b.name, err)
		}
		b.port = p
	}
	return tn, boxes
}

// TestReopenAtScale restarts a Manager holding 500 sandboxes with a port each and checks every
// one afterwards. Open rebuilds the whole table in one batch; at this size the batch used to
// overflow the netlink socket's buffers (ENOBUFS for its acknowledgements, EMSGSIZE for the
// batch itself) and Open failed.
func TestReopenAtScale(t *testing.T) {
	tn, boxes := newScaleNet(t, 500)
	tn.m.Close()
	tn.m = tn.open()

	// Every exposed port answers from the host, and every sandbox's mode holds.
	var wg sync.WaitGroup
	errs := make(chan error, 2*len(boxes)) // two checks may fail per sandbox
	sem := make(chan struct{}, 16)
	var host *testNS
	for i := range boxes {
		b := &boxes[i]
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			if body, err := host.get(hostPort(localhost, b.port.HostPort)); err != nil || !strings.HasPrefix(body, b.name+" ") {
				errs <- fmt.Errorf("sandbox %s: GET its host port %d = %q, %v", b.name, b.port.HostPort, body, err)
				return
			}
			if _, err := b.ns.get(hostPort(tn.allowed, 80)); err != nil {
				errs <- fmt.Errorf("sandbox %s: GET %s (allowed in both modes): %v", b.name, tn.allowed, err)
			}
			c, err := b.ns.dial("tcp4", hostPort(tn.other, 80), 2*time.Second, nil)
			switch {
			case err == nil && b.allow:
				errs <- fmt.Errorf("sandbox %s in allow mode reached %s", b.name, tn.other)
			case err != nil && !b.allow:
				errs <- fmt.Errorf("sandbox %s in egress mode: dial %s: %v", b.name, tn.other, err)
			}
			if err == nil {
				c.Close()
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}
