package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/nsbox/nsbox/api"
	"github.com/nsbox/nsbox/client"
)

// statsBatch is how many sandboxes the stats section creates or removes at once.
const statsBatch = 25

// statsSection measures what reading resource use costs the daemon with n busybox sandboxes
// (network egress: each has a veth) running: GET /v1/stats (cgroups, veths, and the session
// and process counts the agents told the daemon), a Prometheus scrape of GET /metrics (cgroups and veths only), one
// sandbox's GET /v1/sandboxes/{id}/stats, and the daemon's CPU while nobody asks (its idle
// work: the lifecycle check, the Go runtime). Each figure is the call's wall time and the
// daemon's CPU time (user + system) for it, less the idle share of the time it took. GET /v1/stats
// is read once a second for 20 s, as a dashboard would.
func (b *bench) statsSection(ctx context.Context, n, reps int) (err error) {
	// A /21 of its own: n up to 2,000 sandboxes, each with an address.
	subnet := netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(224 + b.net.pid>>8&15), byte(b.net.pid & 31 << 3), 0}), 21)
	d, err := b.daemon(ctx, "nsbox-stats", true, "", "--subnet", subnet.String(), "--default-memory", "64")
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, d.removeAllSandboxes()) }()
	start := time.Now()
	for done := 0; done < n; done += statsBatch {
		if _, err := inParallel(ctx, min(statsBatch, n-done), func(ctx context.Context, i int) error {
			_, err := d.client.CreateSandbox(ctx, api.CreateSandboxRequest{ID: fmt.Sprintf("stats-%04d", done+i), Image: image})
			return err
		}); err != nil {
			return fmt.Errorf("create %d sandboxes: %w", n, err)
		}
	}
	fmt.Printf("stats: %d busybox sandboxes (egress, each a veth), created in %.1f s; %d readings of each kind\n", n, time.Since(start).Seconds(), reps)
	time.Sleep(3 * time.Second) // let the agents settle
	pid := d.cmd.Process.Pid
	if kb, err := statusKB(pid, "VmRSS"); err == nil {
		fmt.Printf("daemon RSS with %d sandboxes: %.1f MB\n", n, float64(kb)/1024)
	}
	idle, err := idleDaemonCPU(pid, 10*time.Second)
	if err != nil {
		return err
	}
	idleShare := idle.share // CPU seconds a second
	fmt.Printf("daemon CPU while nobody asks: %.2f%% of one CPU (over %s)\n", idleShare*100, idle.over)
	w := newTable()
	fmt.Fprintln(w, "reading\tcalls\twall ms p50\twall ms max\tdaemon CPU ms each\tper sandbox µs CPU\tdaemon CPU at 1/s\t")
	row := func(name string, sandboxes, calls int, pace time.Duration, call func() error) error {
		var walls []time.Duration
		start := time.Now()
		cpu0, err := cpuTime(pid)
		if err != nil {
			return err
		}
		for i := range calls {
			if wait := time.Until(start.Add(time.Duration(i) * pace)); wait > 0 {
				time.Sleep(wait)
			}
			t := time.Now()
			if err := call(); err != nil {
				return fmt.Errorf("%s: %w", name, err)
			}
			walls = append(walls, time.Since(t))
		}
		cpu1, err := cpuTime(pid)
		if err != nil {
			return err
		}
		took := time.Since(start)
		each := (cpu1 - cpu0 - time.Duration(idleShare*float64(took))) / time.Duration(calls)
		s := summarize(walls)
		fmt.Fprintf(w, "%s\t%d\t%s\t%s\t%s\t%.0f\t%.1f%%\t\n", name, calls, ms(s.median), ms(s.max), ms(each),
			float64(each.Microseconds())/float64(sandboxes), float64(each)/float64(time.Second)*100)
		return nil
	}
	if err := row("GET /v1/stats (all), 1/s", n, 20, time.Second, func() error {
		all, err := d.client.AllStats(ctx)
		if err == nil && len(all) != n {
			err = fmt.Errorf("%d sandboxes in the answer, want %d", len(all), n)
		}
		return err
	}); err != nil {
		return err
	}
	socket := httpOverSocket(d)
	if err := row("GET /metrics", n, reps, 0, func() error {
		resp, err := socket.Get("http://nsbox/metrics")
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		if err == nil && strings.Count(string(body), "nsbox_sandbox_cpu_seconds_total{") != n {
			err = fmt.Errorf("the scrape does not have %d sandboxes", n)
		}
		return err
	}); err != nil {
		return err
	}
	if err := row("GET /v1/sandboxes/{id}/stats", 1, reps, 0, func() error {
		_, err := d.client.SandboxStats(ctx, "stats-0000")
		return err
	}); err != nil {
		return err
	}
	w.Flush()
	start = time.Now()
	for done := 0; done < n; done += statsBatch {
		if _, err := inParallel(ctx, min(statsBatch, n-done), func(ctx context.Context, i int) error {
			return d.client.RemoveSandbox(ctx, fmt.Sprintf("stats-%04d", done+i), client.RemoveOptions{Force: true})
		}); err != nil {
			return fmt.Errorf("remove the sandboxes: %w", err)
		}
	}
	fmt.Printf("removed in %.1f s\n\n", time.Since(start).Seconds())
	return nil
}

// cpuTime is the CPU time (user + system) a process has used, from /proc/<pid>/stat.
func cpuTime(pid int) (time.Duration, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, fmt.Errorf("read CPU time of %d: %w", pid, err)
	}
	// The fields after the command (in parentheses, which may hold spaces): utime and stime
	// are the 14th and 15th of the line, in clock ticks (100 a second on Linux).
	fields := strings.Fields(string(data[strings.LastIndexByte(string(data), ')')+1:]))
	if len(fields) < 13 {
		return 0, fmt.Errorf("read CPU time of %d: a short /proc/%d/stat", pid, pid)
	}
	utime, err1 := strconv.ParseInt(fields[11], 10, 64)
	stime, err2 := strconv.ParseInt(fields[12], 10, 64)
	if err := errors.Join(err1, err2); err != nil {
		return 0, fmt.Errorf("read CPU time of %d: %w", pid, err)
	}
	return time.Duration(utime+stime) * 10 * time.Millisecond, nil
}

// httpOverSocket is a plain HTTP client of a daemon's API socket.
func httpOverSocket(d *daemon) *http.Client {
	return &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var dialer net.Dialer
		return dialer.DialContext(ctx, "unix", filepath.Join(d.runDir, "nsbox.sock"))
	}}}
}
