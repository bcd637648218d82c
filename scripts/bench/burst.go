package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"regexp"
	"strconv"
	"strings"
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
	return b.poolBursts(ctx, subnet)
}

// poolBursts sends two bursts of 50 creates, each after 30 s of rest, to a daemon with a warm pool of
// 2 that follows demand (--warm-pool-memory 256), and reports how many creates of each took a
// warm container and how large the pool grew between them.
func (b *bench) poolBursts(ctx context.Context, subnet netip.Prefix) (err error) {
	d, err := b.daemon(ctx, "nsbox-burst-pool", true, image+"=2", "--subnet", subnet.String(), "--warm-pool-memory", "256")
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, d.removeAllSandboxes()) }()
	fmt.Println("burst with a warm pool: --warm-pool busybox=2 --warm-pool-memory 256; two bursts of 50 at once, each after 30 s of rest")
	w := newTable()
	fmt.Fprintln(w, "burst\twarm before\thits\tmisses\thit rate\twall s\tp50 ms\tp99 ms\ttarget after\t")
	const n = 50
	for round := 1; round <= 2; round++ {
		if err := d.waitWarm(ctx); err != nil {
			return err
		}
		time.Sleep(time.Minute / 2) // the refill catches up with the target
		warm, err := d.warmCount(ctx)
		if err != nil {
			return err
		}
		hits0, misses0, err := poolTakes(d)
		if err != nil {
			return err
		}
		start := time.Now()
		latencies, err := inParallel(ctx, n, func(ctx context.Context, i int) error {
			_, err := d.client.CreateSandbox(ctx, api.CreateSandboxRequest{ID: fmt.Sprintf("pool-%d-%03d", round, i), Image: image})
			return err
		})
		wall := time.Since(start)
		if err != nil {
			return fmt.Errorf("burst %d with a pool: %w", round, err)
		}
		hits1, misses1, err := poolTakes(d)
		if err != nil {
			return err
		}
		if _, err := inParallel(ctx, n, func(ctx context.Context, i int) error {
			return d.client.RemoveSandbox(ctx, fmt.Sprintf("pool-%d-%03d", round, i), client.RemoveOptions{Force: true})
		}); err != nil {
			return fmt.Errorf("remove burst %d: %w", round, err)
		}
		target, err := scrapeValue(d, `nsbox_warm_pool_target{image="`+image+`"}`)
		if err != nil {
			return err
		}
		hits, misses := hits1-hits0, misses1-misses0
		s := summarize(latencies)
		fmt.Fprintf(w, "%d\t%d\t%.0f\t%.0f\t%.0f%%\t%.2f\t%s\t%s\t%.0f\t\n", round, warm, hits, misses, 100*hits/(hits+misses),
			wall.Seconds(), ms(s.median), ms(s.p99), target)
	}
	w.Flush()
	fmt.Println()
	return nil
}

// poolTakes reads the daemon's counts of creates that took a warm container and that found
// the pool empty.
func poolTakes(d *daemon) (hits, misses float64, err error) {
	if hits, err = scrapeValue(d, `nsbox_warm_pool_takes_total{image="`+image+`",result="hit"}`); err != nil {
		return 0, 0, err
	}
	misses, err = scrapeValue(d, `nsbox_warm_pool_takes_total{image="`+image+`",result="miss"}`)
	return hits, misses, err
}

// scrapeValue reads one series from the daemon's /metrics (0 when it has none yet).
func scrapeValue(d *daemon, series string) (float64, error) {
	resp, err := httpOverSocket(d).Get("http://nsbox/metrics")
	if err != nil {
		return 0, fmt.Errorf("scrape: %w", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return 0, fmt.Errorf("scrape: %w", err)
	}
	for line := range strings.Lines(string(body)) {
		if value, ok := strings.CutPrefix(strings.TrimSpace(line), series+" "); ok {
			return strconv.ParseFloat(value, 64)
		}
	}
	return 0, nil
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
