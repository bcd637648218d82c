package main

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/nsbox/nsbox/api"
)

// benchCase is one thing to time, from start to finish.
type benchCase struct {
	name   string
	run    func(context.Context) error
	before func(context.Context) error // optional: runs before each run, untimed (makes what run needs)
	after  func(context.Context) error // optional: runs after each run, untimed (undoes what run made)
	ref    string                      // optional: the case whose median the table compares this one's with
}

// timeCases runs every case warm times unmeasured, then n measured times. Each round runs
// every case once, in a new random order, so that drift on the machine and work a case
// leaves to the kernel (namespace and cgroup teardown) weigh on all cases alike.
func timeCases(ctx context.Context, cases []benchCase, warm, n int) (map[string][]time.Duration, error) {
	samples := map[string][]time.Duration{}
	order := slices.Clone(cases)
	for i := range warm + n {
		rand.Shuffle(len(order), func(a, b int) { order[a], order[b] = order[b], order[a] })
		for _, c := range order {
			if err := ctx.Err(); err != nil {
				return nil, err
			}
			if c.before != nil {
				if err := c.before(ctx); err != nil {
					return nil, fmt.Errorf("%s (before run %d): %w", c.name, i+1, err)
				}
			}
			start := time.Now()
			err := c.run(ctx)
			took := time.Since(start)
			if err == nil && c.after != nil {
				err = c.after(ctx)
			}
			if err != nil {
				return nil, fmt.Errorf("%s (run %d): %w", c.name, i+1, err)
			}
			if i >= warm {
				samples[c.name] = append(samples[c.name], took)
			}
		}
	}
	return samples, nil
}

type summary struct{ median, min, max, p99 time.Duration }

func summarize(d []time.Duration) summary {
	s := slices.Sorted(slices.Values(d))
	n := len(s)
	return summary{median: median(s), min: s[0], max: s[n-1], p99: s[(99*n+99)/100-1]} // p99 by nearest rank
}

func median(d []time.Duration) time.Duration {
	s := slices.Sorted(slices.Values(d))
	if n := len(s); n%2 == 0 {
		return (s[n/2-1] + s[n/2]) / 2
	}
	return s[len(s)/2]
}

// printTable prints each case's median, min, max and p99, and its median ÷ its reference's.
func printTable(cases []benchCase, samples map[string][]time.Duration) {
	w := newTable()
	fmt.Fprintln(w, "name\tmedian ms\tmin ms\tmax ms\tp99 ms\tmedian ÷ reference's\t")
	for _, c := range cases {
		s, vs := summarize(samples[c.name]), ""
		if c.ref != "" {
			vs = fmt.Sprintf("%.2f× %s", medianRatio(samples, c.name, c.ref), c.ref)
		}
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\t\n", c.name, ms(s.median), ms(s.min), ms(s.max), ms(s.p99), vs)
	}
	w.Flush()
}

// medianRatio is case a's median ÷ case b's.
func medianRatio(samples map[string][]time.Duration, a, b string) float64 {
	return float64(median(samples[a])) / float64(median(samples[b]))
}

// printTarget prints whether a median ratio is within its target.
func printTarget(what string, ratio, target float64) {
	fmt.Printf("target: %s ≤ %.1f×: %s (%.2f×)\n", what, target, verdict(ratio <= target), ratio)
}

func mean(d []time.Duration) time.Duration {
	var sum time.Duration
	for _, x := range d {
		sum += x
	}
	return sum / time.Duration(len(d))
}

func ms(d time.Duration) string { return fmt.Sprintf("%.1f", float64(d)/1e6) }

func newTable() *tabwriter.Writer { return tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', 0) }

func cgroupVersion() string {
	if _, err := os.Stat("/sys/fs/cgroup/cgroup.controllers"); err == nil {
		return "v2"
	}
	return "v1 (hybrid)"
}

// damonThreads are the pids of the kernel's DAMON threads (kdamond.N) running now. DAMON
// finds cold memory by clearing the accessed bits of sampled pages, in every process that maps
// them; on this VM an idle process then pays 5–15 µs for each such page it touches again, and
// kdamond's walks over the pages a thousand sandboxes share cost it up to ~10 % of a CPU
// (docs/benchmarks.md, "Session 18").
func damonThreads() []int {
	entries, _ := os.ReadDir("/proc")
	var pids []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if comm, err := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid)); err == nil && strings.HasPrefix(string(comm), "kdamond.") {
			pids = append(pids, pid)
		}
	}
	return pids
}

// damonDescription says, for the machine line, whether the kernel's DAMON runs and, for the
// contexts started through its sysfs interface, what it monitors and how often it samples.
func damonDescription() string {
	n := len(damonThreads())
	if n == 0 {
		return "DAMON not running"
	}
	var contexts []string
	dirs, _ := filepath.Glob("/sys/kernel/mm/damon/admin/kdamonds/*/contexts/*")
	for _, dir := range dirs {
		state, _ := os.ReadFile(filepath.Join(dir, "../../state"))
		ops, _ := os.ReadFile(filepath.Join(dir, "operations"))
		sampleUS, _ := os.ReadFile(filepath.Join(dir, "monitoring_attrs/intervals/sample_us"))
		us, err := strconv.Atoi(strings.TrimSpace(string(sampleUS)))
		if strings.TrimSpace(string(state)) != "on" || err != nil {
			continue
		}
		contexts = append(contexts, fmt.Sprintf("%s, a sample every %s", strings.TrimSpace(string(ops)), time.Duration(us)*time.Microsecond))
	}
	if len(contexts) == 0 {
		return fmt.Sprintf("DAMON running (%d kdamond)", n)
	}
	return fmt.Sprintf("DAMON running (%d kdamond: %s)", n, strings.Join(contexts, "; "))
}

// memory is the PSS, in kB, of a set of sandboxes and of their daemon.
type memory struct {
	sandboxKB, daemonKB float64
	procs               int
}

// measureMemory adds up the PSS of every process of the sandboxes (the agent, and whatever
// else is in the sandbox's cgroup) and the daemon's own.
func measureMemory(d *daemon, sandboxes []*api.Sandbox) (memory, error) {
	var m memory
	for _, sb := range sandboxes {
		dir, err := cgroupOf(sb.PID, "memory")
		if err != nil {
			return m, fmt.Errorf("sandbox %s: %w", sb.ID, err)
		}
		pids := slices.Compact(slices.Sorted(slices.Values(append(cgroupProcs(dir), sb.PID))))
		for _, pid := range pids {
			kb, err := rollupKB(pid, "Pss")
			if err != nil {
				return m, fmt.Errorf("sandbox %s: %w", sb.ID, err)
			}
			m.sandboxKB += kb
			m.procs++
		}
	}
	var err error
	m.daemonKB, err = rollupKB(d.cmd.Process.Pid, "Pss")
	return m, err
}

// cgroupOf is the directory of a process's cgroup of a controller (the unified one on v2).
// The daemon names a sandbox's cgroup after its container, not after the sandbox.
func cgroupOf(pid int, controller string) (string, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", pid))
	if err != nil {
		return "", fmt.Errorf("read cgroup of pid %d: %w", pid, err)
	}
	v2 := cgroupVersion() == "v2"
	for _, line := range strings.Split(string(data), "\n") {
		parts := strings.SplitN(line, ":", 3)
		if len(parts) != 3 {
			continue
		}
		if v2 && parts[0] == "0" {
			return filepath.Join("/sys/fs/cgroup", parts[2]), nil
		}
		if !v2 && slices.Contains(strings.Split(parts[1], ","), controller) {
			return filepath.Join("/sys/fs/cgroup", controller, parts[2]), nil
		}
	}
	return "", fmt.Errorf("pid %d has no %s cgroup", pid, controller)
}

// rollupKB reads one field of /proc/<pid>/smaps_rollup (Pss, Referenced, …), in kB.
func rollupKB(pid int, field string) (float64, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/smaps_rollup", pid))
	if err != nil {
		return 0, fmt.Errorf("read the memory of pid %d: %w", pid, err)
	}
	for line := range strings.Lines(string(data)) {
		if rest, ok := strings.CutPrefix(line, field+":"); ok {
			return strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 64)
		}
	}
	return 0, fmt.Errorf("no %s line in /proc/%d/smaps_rollup", field, pid)
}

// thenIdle is an after for a case whose work goes on in the background once it has answered
// (a remove's teardown, a pool's refill, the kernel's namespace cleanup): it runs after, if
// any, and then waits until the machine is idle, so that none of that lands on the next case.
func thenIdle(after func(context.Context) error) func(context.Context) error {
	return func(ctx context.Context) error {
		if after != nil {
			if err := after(ctx); err != nil {
				return err
			}
		}
		return waitIdle(ctx)
	}
}

// waitIdle waits until the CPUs were idle at least 90 % of a 50 ms window (by /proc/stat's
// ticks), at most 2 s (a machine busy with others' work).
func waitIdle(ctx context.Context) error {
	const window = 50 * time.Millisecond
	busy, total, err := cpuTicks()
	for deadline := time.Now().Add(2 * time.Second); err == nil && time.Now().Before(deadline); {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(window):
		}
		var b, t uint64
		if b, t, err = cpuTicks(); err == nil && t > total && (b-busy)*10 <= t-total {
			return nil
		}
		busy, total = b, t
	}
	return err
}

// cpuTicks reads the ticks all CPUs spent busy and in all from /proc/stat's "cpu" line
// (idle and iowait are not busy).
func cpuTicks() (busy, total uint64, err error) {
	data, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, 0, fmt.Errorf("read /proc/stat: %w", err)
	}
	line, _, _ := strings.Cut(string(data), "\n")
	fields := strings.Fields(line)
	if len(fields) < 6 || fields[0] != "cpu" {
		return 0, 0, fmt.Errorf("/proc/stat begins with %q, not the cpu line", line)
	}
	for i, f := range fields[1:] {
		n, err := strconv.ParseUint(f, 10, 64)
		if err != nil {
			return 0, 0, fmt.Errorf("/proc/stat's cpu line %q: %w", line, err)
		}
		total += n
		if i != 3 && i != 4 { // idle, iowait
			busy += n
		}
	}
	return busy, total, nil
}
