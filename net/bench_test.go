package net

import (
	"fmt"
	"net"
	"testing"
	"time"
)

// BenchmarkExposeUnexpose measures exposing a port of a live sandbox and unexposing it again,
// each as one nftables batch (plus, for Unexpose, the conntrack cleanup and for both the
// state file write), and reports the two halves separately.
func BenchmarkExposeUnexpose(b *testing.B) {
	tn := newTestNet(b)
	tn.sandbox("bench", ModeEgress)
	id := tn.id("bench")
	var expose, unexpose time.Duration
	b.ResetTimer()
	for b.Loop() {
		start := time.Now()
		if _, err := tn.m.Expose(id, Port{Port: 8080}); err != nil {
			b.Fatal(err)
		}
		mid := time.Now()
		if err := tn.m.Unexpose(id, 8080, TCP); err != nil {
			b.Fatal(err)
		}
		expose += mid.Sub(start)
		unexpose += time.Since(mid)
	}
	b.ReportMetric(float64(expose.Microseconds())/float64(b.N), "µs/expose")
	b.ReportMetric(float64(unexpose.Microseconds())/float64(b.N), "µs/unexpose")
}

// BenchmarkAttachDetach measures giving a sandbox (an existing network namespace) its network
// and taking it away again; making the namespace is not timed.
func BenchmarkAttachDetach(b *testing.B) {
	tn := newTestNet(b)
	var attach, detach time.Duration
	for i := 0; b.Loop(); i++ {
		b.StopTimer()
		ns := newNetns(b)
		id := tn.id(fmt.Sprintf("bench%d", i))
		b.StartTimer()
		start := time.Now()
		if _, err := tn.m.Attach(id, ns.path, ModeEgress, nil); err != nil {
			b.Fatal(err)
		}
		mid := time.Now()
		if err := tn.m.Detach(id); err != nil {
			b.Fatal(err)
		}
		attach += mid.Sub(start)
		detach += time.Since(mid)
		b.StopTimer()
		ns.h.Close()
		b.StartTimer()
	}
	b.ReportMetric(float64(attach.Microseconds())/float64(b.N), "µs/attach")
	b.ReportMetric(float64(detach.Microseconds())/float64(b.N), "µs/detach")
}

// BenchmarkCutPortFlows compares the two ways of deleting one exposed port's conntrack
// entries, the kernel-side filtered flush Unexpose uses and a dump of the whole table filtered
// in user space (what the netlink package offers, and the fallback on older kernels), with more and more other entries in the
// host's table (UDP packets to closed ports of 127.0.0.1; an empty table is not walked).
func BenchmarkCutPortFlows(b *testing.B) {
	tn := newTestNet(b)
	_, a := tn.sandbox("bench", ModeEgress)
	p := Port{Port: 8080, Protocol: TCP, HostPort: tn.cfg.HostPortMin}
	c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	next := 40000
	for _, entries := range []int{0, 1000, 5000} {
		for ; next < 40000+entries; next++ {
			_, _ = c.WriteToUDP([]byte("x"), &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: next})
		}
		b.Run(fmt.Sprintf("kernel-filter/%d-entries", entries), func(b *testing.B) {
			for b.Loop() {
				if err := tn.m.flusher.flush(portFlows(p)); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(fmt.Sprintf("dump/%d-entries", entries), func(b *testing.B) {
			for b.Loop() {
				if err := forgetFlows(tn.m.ct, flowsToPort(p, a.Addr)); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkReopen measures a daemon restart's share of networking: closing the Manager and
// opening it again on the same state, which rebuilds the whole table (one batch) and binds
// every exposed host port again, with 100 and 500 sandboxes that each expose a port.
func BenchmarkReopen(b *testing.B) {
	for _, n := range []int{100, 500} {
		b.Run(fmt.Sprintf("%d-sandboxes", n), func(b *testing.B) {
			tn, _ := newScaleNet(b, n)
			for b.Loop() {
				tn.m.Close()
				tn.m = tn.open()
			}
		})
	}
}
