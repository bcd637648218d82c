package net

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestOpenRefusesOverlappingSubnets: a subnet over one of the host's networks, or over
// another daemon's sandboxes, is refused (issue 11 item 5); the same table's own sandbox
// routes, left for a restart, are not in the way.
func TestOpenRefusesOverlappingSubnets(t *testing.T) {
	tn := newTestNet(t)
	_, a := tn.sandbox("a", ModeEgress)
	for name, subnet := range map[string]netip.Prefix{
		"the outside network":      netip.PrefixFrom(tn.hostOut, 24).Masked(),
		"part of it":               netip.PrefixFrom(tn.allowed, 28).Masked(),
		"another daemon's sandbox": netip.PrefixFrom(a.Addr, 29).Masked(),
	} {
		cfg := tn.cfg
		cfg.Subnet = subnet
		cfg.Table = fmt.Sprintf("nsbox_test_%d_%d_other", os.Getpid(), tn.n)
		cfg.StatePath = filepath.Join(t.TempDir(), "network.json")
		m, err := Open(cfg)
		if err == nil {
			m.Close()
			t.Fatalf("Open over %s (%s) was accepted", name, subnet)
		}
		if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "overlaps") {
			t.Fatalf("Open over %s: %v", name, err)
		}
	}
	// A restart of the same daemon, with its sandbox's route in place.
	tn.m.Close()
	tn.m = tn.open()
}

// TestExposeRefusesHostPortsOutsideTheRange: a host port asked for by number must be in the
// configured range or allowed explicitly (issue 11: exposing on host :22 was accepted).
func TestExposeRefusesHostPortsOutsideTheRange(t *testing.T) {
	tn := newTestNet(t)
	tn.sandbox("a", ModeEgress)
	id := tn.id("a")
	for _, port := range []int{22, tn.cfg.HostPortMin - 1, tn.cfg.HostPortMax + 1} {
		if _, err := tn.m.Expose(id, Port{Port: 80, HostPort: port}); !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "outside") {
			t.Fatalf("Expose on host port %d: %v, want ErrInvalid", port, err)
		}
	}
	// Allowed explicitly: a port outside the range that was free a moment ago.
	l, err := net.Listen("tcp4", hostPort(localhost, 0))
	if err != nil {
		t.Fatal(err)
	}
	extra := l.Addr().(*net.TCPAddr).Port
	l.Close()
	tn.m.Close()
	tn.cfg.ExtraHostPorts = []int{extra}
	tn.m = tn.open()
	p, err := tn.m.Expose(id, Port{Port: 80, HostPort: extra})
	if err != nil || p.HostPort != extra {
		t.Fatalf("Expose on the allowed host port %d: %+v %v", extra, p, err)
	}
	if err := tn.m.Unexpose(id, 80, TCP); err != nil {
		t.Fatal(err)
	}
}
