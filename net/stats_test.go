package net

import "testing"

// TestInterfaceCounters reads the loopback's counters both ways: what lo sends it receives.
func TestInterfaceCounters(t *testing.T) {
	all, err := AllVethCounters()
	if err != nil {
		t.Fatal(err)
	}
	lo, ok := all["lo"]
	if !ok {
		t.Fatalf("no lo in %v", all)
	}
	if lo.RxBytes != lo.TxBytes || lo.RxPackets != lo.TxPackets {
		t.Errorf("lo from /proc/net/dev: %+v", lo)
	}
	one, err := VethCounters("lo")
	if err != nil {
		t.Fatal(err)
	}
	if one.RxPackets < lo.RxPackets || one.RxBytes < lo.RxBytes {
		t.Errorf("lo from sysfs %+v is behind /proc/net/dev's earlier %+v", one, lo)
	}
	if _, err := VethCounters("nsbox-no-such-if"); err == nil {
		t.Error("counters of a missing interface")
	}
}
