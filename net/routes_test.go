package sandboxnet

import (
	"errors"
	"fmt"
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
