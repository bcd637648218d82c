package main

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"regexp"
	"strconv"
	"sync"
	"time"

	"github.com/nsbox/nsbox/api"
	"github.com/nsbox/nsbox/client"
)

// burstSizes are the bursts of concurrent creates the burst section times.
var burstSizes = []int{50, 200}

// burstSettle is how long the burst section lets a daemon rest after a burst's sandboxes are
// removed before it reads the daemon's footprint again.
const burstSettle = 10 * time.Second

// burstSection starts bursts of concurrent creates (busybox, network egress) against a daemon
// without a warm pool and reports their wall time, throughput and per-create latencies, and
// the daemon's threads and RSS before, at the end of the burst, and once the sandboxes are
// removed and the daemon has rested.
func (b *bench) burstSection(ctx context.Context) (err error) {
	// A /24 of its own: a burst of 200 needs more addresses than the other daemons' /26.
	subnet := netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(208 + b.net.pid>>8&15), byte(b.net.pid), 0}), 24)
	d, err := b.daemon(ctx, "nsbox-burst", true, "", "--subnet", subnet.String())
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, d.removeAllSandboxes()) }()
	fmt.Println("burst: N creates at once (busybox, egress), no warm pool; then all removed at once")
	w := newTable()
	fmt.Fprintln(w, "N\twall s\tcreates/s\tp50 ms\tp99 ms\tmax ms\tremove wall s\tthreads idle → burst → rested\tRSS MB idle → burst → rested\t")
	for _, n := range burstSizes {
		time.Sleep(burstSettle / 2)
		idle, err := footprintOf(d.cmd.Process.Pid)
		if err != nil {
			return err
		}
		start := time.Now()
		latencies, err := inParallel(ctx, n, func(ctx context.Context, i int) error {
			_, err := d.client.CreateSandbox(ctx, api.CreateSandboxRequest{ID: fmt.Sprintf("burst-%d-%03d", n, i), Image: image})
			return err
		})
		wall := time.Since(start)
		if err != nil {
			return fmt.Errorf("burst of %d: %w", n, err)
		}
		peak, err := footprintOf(d.cmd.Process.Pid)
		if err != nil {
			return err
		}
		start = time.Now()
		if _, err := inParallel(ctx, n, func(ctx context.Context, i int) error {
			return d.client.RemoveSandbox(ctx, fmt.Sprintf("burst-%d-%03d", n, i), client.RemoveOptions{Force: true})
		}); err != nil {
			return fmt.Errorf("remove the burst of %d: %w", n, err)
		}
		removed := time.Since(start)
		time.Sleep(burstSettle)
		rested, err := footprintOf(d.cmd.Process.Pid)
		if err != nil {
			return err
		}
		s := summarize(latencies)
		fmt.Fprintf(w, "%d\t%.2f\t%.1f\t%s\t%s\t%s\t%.2f\t%d → %d → %d\t%.1f → %.1f → %.1f\t\n", n, wall.Seconds(), float64(n)/wall.Seconds(),
			ms(s.median), ms(s.p99), ms(s.max), removed.Seconds(), idle.threads, peak.threads, rested.threads, idle.rssMB, peak.rssMB, rested.rssMB)
	}
	w.Flush()
	fmt.Println()
	return nil
}

// inParallel runs fn(0) … fn(n-1) at once and returns how long each took.
func inParallel(ctx context.Context, n int, fn func(ctx context.Context, i int) error) ([]time.Duration, error) {
	took := make([]time.Duration, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			start := time.Now()
			errs[i] = fn(ctx, i)
			took[i] = time.Since(start)
		}()
	}
	wg.Wait()
	return took, errors.Join(errs...)
}

// footprint is a process's thread count and resident set size.
type footprint struct {
	threads int
	rssMB   float64
}

var threadsLine = regexp.MustCompile(`(?m)^Threads:\s+(\d+)$`)

// footprintOf reads a process's threads and RSS from /proc/<pid>/status.
func footprintOf(pid int) (footprint, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return footprint{}, fmt.Errorf("read status of pid %d: %w", pid, err)
	}
	threads := threadsLine.FindSubmatch(data)
	if threads == nil {
		return footprint{}, fmt.Errorf("no Threads in /proc/%d/status", pid)
	}
	var f footprint
	f.threads, _ = strconv.Atoi(string(threads[1]))
	kb, err := statusKB(pid, "VmRSS")
	f.rssMB = kb / 1024
	return f, err
}
