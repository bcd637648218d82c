package main

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nsbox/nsbox/api"
	"github.com/nsbox/nsbox/client"
)

// densitySection creates count idle busybox sandboxes (each with its default session running),
// checks that every one of them works, and reports the time to create and remove them, the
// memory each costs (PSS, as the memory section counts it, and the drop in the host's
// MemAvailable, which includes kernel objects), the daemon's RSS, and the API's latency while
// they idle, against the same requests with one sandbox (and the CPU the kernel's DAMON used
// meanwhile and while the sandboxes were created, where it runs), and the session exec against one to a sandbox that idled first
// (2 s alone, a minute among 30). Without disk, the sandboxes
// write to the data dir's file system (--default-disk 0).
func (b *bench) densitySection(ctx context.Context, count int, disk bool) (err error) {
	var args []string
	with := "the default disk"
	if !disk {
		args, with = []string{"--default-disk", "0"}, "no disk"
	}
	d, err := b.daemon(ctx, "nsbox-density", true, "", args...)
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, d.removeAllSandboxes()) }()
	fmt.Printf("density: %d idle %s sandboxes, network none, %s, each with its default session\n", count, image, with)
	id := func(i int) string { return fmt.Sprintf("dense-%04d", i) }
	create := func(i int) error {
		_, err := d.client.CreateSandbox(ctx, api.CreateSandboxRequest{ID: id(i), Image: image, Network: &api.NetworkSpec{Mode: api.NetworkNone}})
		if err != nil {
			return fmt.Errorf("create sandbox %d: %w", i, err)
		}
		_, err = execOK(ctx, d, id(i), api.ExecRequest{Command: "true"}) // the session is up
		return err
	}
	// One sandbox alone first: the reference latencies.
	if err := create(0); err != nil {
		return err
	}
	var alone, crowd map[string][]time.Duration
	damonAlone, err := damonShareDuring(func() (err error) { alone, err = densityLatencies(ctx, d, 1, id); return err })
	if err != nil {
		return err
	}
	idleShort, err := idleExecLatencies(ctx, d, []string{id(0)}, shortIdle, 30)
	if err != nil {
		return err
	}
	touched, err := pagesTouchedPerExec(ctx, d, id(0), 30)
	if err != nil {
		return err
	}
	availBefore := memAvailableKB()
	before, err := footprintOf(d.cmd.Process.Pid)
	if err != nil {
		return err
	}
	// A few sandboxes first, each exec'd once after they all idled a minute: the crowd's
	// execs go to sandboxes that idled longer still.
	few := min(count, 30)
	start := time.Now()
	if err := onWorkers(2, few-1, func(i int) error { return create(i + 1) }); err != nil {
		return err
	}
	created := time.Since(start)
	var fewIDs []string
	for i := range few {
		fewIDs = append(fewIDs, id(i))
	}
	idleLong, err := idleExecLatencies(ctx, d, fewIDs, longIdle, 1)
	if err != nil {
		return err
	}
	start = time.Now()
	damonCreating, err := damonShareDuring(func() error { return onWorkers(2, count-few, func(i int) error { return create(i + few) }) })
	if err != nil {
		return err
	}
	created += time.Since(start)
	time.Sleep(5 * time.Second) // let the agents and shells settle
	idleCPU, err := idleDaemonCPU(d.cmd.Process.Pid, 20*time.Second)
	if err != nil {
		return err
	}
	availAfter := memAvailableKB()
	after, err := footprintOf(d.cmd.Process.Pid)
	if err != nil {
		return err
	}
	damonCrowd, err := damonShareDuring(func() (err error) { crowd, err = densityLatencies(ctx, d, count, id); return err })
	if err != nil {
		return err
	}
	// Every one works.
	if err := onWorkers(2, count, func(i int) error {
		res, err := execOK(ctx, d, id(i), api.ExecRequest{Command: "echo ok"})
		if err == nil && string(res.Stdout) != "ok\n" {
			err = fmt.Errorf("sandbox %s answered %q", id(i), res.Stdout)
		}
		return err
	}); err != nil {
		return err
	}
	var sandboxes []*api.Sandbox
	list, err := d.client.ListSandboxes(ctx)
	if err != nil {
		return err
	}
	for i := range list {
		sandboxes = append(sandboxes, &list[i])
	}
	m, err := measureMemory(d, sandboxes)
	if err != nil {
		return err
	}
	start = time.Now()
	if err := onWorkers(2, count, func(i int) error { return d.client.RemoveSandbox(ctx, id(i), client.RemoveOptions{Force: true}) }); err != nil {
		return err
	}
	removed := time.Since(start)

	mb := func(kb float64) float64 { return kb / 1024 }
	w := newTable()
	fmt.Fprintf(w, "created\t%.1f s (%.0f per second, 2 at a time)\t\n", created.Seconds(), float64(count-1)/created.Seconds())
	fmt.Fprintf(w, "removed\t%.1f s (%.0f per second, 2 at a time)\t\n", removed.Seconds(), float64(count)/removed.Seconds())
	fmt.Fprintf(w, "PSS per sandbox\t%.2f MB (its processes, and the daemon's share)\t\n", mb(m.sandboxKB+m.daemonKB)/float64(count))
	fmt.Fprintf(w, "MemAvailable drop per sandbox\t%.2f MB (kernel objects included)\t\n", mb(float64(availBefore-availAfter))/float64(count-1))
	fmt.Fprintf(w, "daemon RSS\t%.0f MB with 1 sandbox, %.0f MB with %d\t\n", before.rssMB, after.rssMB, count)
	fmt.Fprintf(w, "daemon CPU while they idle\t%.2f%% of one CPU (over %s)\t\n", idleCPU.share*100, idleCPU.over)
	if len(damonThreads()) > 0 {
		fmt.Fprintf(w, "the kernel's DAMON (kdamond)\t%.1f%% of one CPU while they were created; while the API was timed %.1f%% with 1 sandbox, %.1f%% with %d\t\n", damonCreating*100, damonAlone*100, damonCrowd*100, count)
	}
	for _, req := range []string{"GET /v1/sandboxes/{id}", "session exec `true`", "the same exec again at once"} {
		a, c := summarize(alone[req]), summarize(crowd[req])
		fmt.Fprintf(w, "%s p50/p99\t%s/%s ms with 1 sandbox, %s/%s ms with %d (p50 %.2f×)\t\n", req,
			ms(a.median), ms(a.p99), ms(c.median), ms(c.p99), count, float64(c.median)/float64(a.median))
	}
	fmt.Fprintf(w, "what an exec touches in the sandbox\t%.0f KB of its agent's memory, %.0f KB of its shell's (pages referenced after their accessed bits were cleared)\t\n", touched.agentKB, touched.shellKB)
	fmt.Fprintf(w, "session exec `true` p50 with 1 sandbox\t%s ms after its processes' accessed bits were cleared (as DAMON does), %s ms right after\t\n", ms(summarize(touched.cleared).median), ms(summarize(touched.hot).median))
	short, long := summarize(idleShort), summarize(idleLong)
	fmt.Fprintf(w, "session exec `true` after idling %s p50/p99\t%s/%s ms with 1 sandbox\t\n", shortIdle, ms(short.median), ms(short.p99))
	fmt.Fprintf(w, "session exec `true` after idling %s p50/p99\t%s/%s ms with %d sandboxes\t\n", longIdle, ms(long.median), ms(long.p99), few)
	w.Flush()
	crowdExec := float64(summarize(crowd["session exec `true`"]).median)
	ratio := crowdExec / float64(summarize(alone["session exec `true`"]).median)
	fmt.Printf("target: session exec p50 at %d sandboxes ≤ 1.5× one sandbox's: %s (%.2f×)\n", count, verdict(ratio <= 1.5), ratio)
	// Every exec of the crowd's goes to a sandbox that idled since it was last picked (since
	// its creation, most of them): against execs after as long an idle among a few
	// sandboxes, what is left is what the other sandboxes cost.
	fmt.Printf("the same p50 against %d sandboxes' after idling %s: %.2f×\n\n", few, longIdle, crowdExec/float64(long.median))
	return nil
}

// How long sandboxes idle before the execs of idleExecLatencies: an exec after idling a
// second or more costs about twice the CPU of one at once, in every process on its way, and
// more the longer it idled (docs/benchmarks.md, "Density, session 7").
const (
	shortIdle = 2 * time.Second
	longIdle  = time.Minute
)

// idleExecLatencies times rounds × len(sandboxes) session execs: in each round, once every
// one of the sandboxes has idled for idle, one exec to each, in a random order.
func idleExecLatencies(ctx context.Context, d *daemon, sandboxes []string, idle time.Duration, rounds int) ([]time.Duration, error) {
	var out []time.Duration
	for range rounds {
		time.Sleep(idle)
		for _, i := range rand.Perm(len(sandboxes)) {
			began := time.Now()
			if _, err := execOK(ctx, d, sandboxes[i], api.ExecRequest{Command: "true"}); err != nil {
				return nil, err
			}
			out = append(out, time.Since(began))
		}
	}
	return out, nil
}

// densityLatencies times 300 GETs of a sandbox and 300 session execs, each on a random one of
// the first n sandboxes, one at a time, and each exec again right after it (a sandbox whose
// agent and shell were just used: what idling costs the first exec).
func densityLatencies(ctx context.Context, d *daemon, n int, id func(int) string) (map[string][]time.Duration, error) {
	out := map[string][]time.Duration{}
	for range 300 {
		sb := id(rand.IntN(n))
		began := time.Now()
		if _, err := d.client.GetSandbox(ctx, sb); err != nil {
			return nil, err
		}
		out["GET /v1/sandboxes/{id}"] = append(out["GET /v1/sandboxes/{id}"], time.Since(began))
		began = time.Now()
		if _, err := execOK(ctx, d, sb, api.ExecRequest{Command: "true"}); err != nil {
			return nil, err
		}
		out["session exec `true`"] = append(out["session exec `true`"], time.Since(began))
		began = time.Now()
		if _, err := execOK(ctx, d, sb, api.ExecRequest{Command: "true"}); err != nil {
			return nil, err
		}
		out["the same exec again at once"] = append(out["the same exec again at once"], time.Since(began))
	}
	return out, nil
}

// onWorkers runs do(0..n-1) on workers goroutines and returns the errors (it stops handing
// out work after the first).
func onWorkers(workers, n int, do func(int) error) error {
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		next int
		errs []error
	)
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				mu.Lock()
				i := next
				next++
				failed := len(errs) > 0
				mu.Unlock()
				if i >= n || failed {
					return
				}
				if err := do(i); err != nil {
					mu.Lock()
					errs = append(errs, err)
					mu.Unlock()
				}
			}
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

var memAvailableLine = regexp.MustCompile(`(?m)^MemAvailable:\s+(\d+) kB$`)

// memAvailableKB is the host's MemAvailable (0 if it cannot be read).
func memAvailableKB() int64 {
	data, _ := os.ReadFile("/proc/meminfo")
	m := memAvailableLine.FindSubmatch(data)
	if m == nil {
		return 0
	}
	n, _ := strconv.ParseInt(string(m[1]), 10, 64)
	return n
}

// damonShareDuring runs f and returns the share of one CPU the kernel's DAMON threads used
// meanwhile: their sampling of pages that every sandbox maps walks every mapping.
func damonShareDuring(f func() error) (float64, error) {
	damonCPU := func() time.Duration {
		var total time.Duration
		for _, pid := range damonThreads() {
			t, _ := cpuTime(pid) // 0 for a thread that just ended
			total += t
		}
		return total
	}
	before, began := damonCPU(), time.Now()
	err := f()
	return float64(damonCPU()-before) / float64(time.Since(began)), err
}

// idleCPU is the share of one CPU a process used over a while.
type idleCPU struct {
	share float64
	over  time.Duration
}

// idleDaemonCPU measures the daemon's CPU (user + system) over d while nobody asks it
// anything: its own background work for every sandbox.
func idleDaemonCPU(pid int, d time.Duration) (idleCPU, error) {
	before, err := cpuTime(pid)
	if err != nil {
		return idleCPU{}, err
	}
	time.Sleep(d)
	after, err := cpuTime(pid)
	if err != nil {
		return idleCPU{}, err
	}
	return idleCPU{share: float64(after-before) / float64(d), over: d}, nil
}

// touchedPages is what pagesTouchedPerExec measured.
type touchedPages struct {
	agentKB, shellKB float64         // memory referenced per exec, averaged
	cleared, hot     []time.Duration // the execs after the bits were cleared, and the same again
}

// pagesTouchedPerExec measures what an exec touches in a sandbox's agent and shell: rounds
// times, it clears the accessed bits of their pages (/proc/PID/clear_refs, as DAMON's
// sampling clears them in a sandbox that idles), times an exec, reads how much of their memory
// was referenced since (smaps_rollup), and times the same exec again. Where touching a page
// whose bit was cleared is slow (a shadow-paged VM), this is density's exec in one sandbox.
func pagesTouchedPerExec(ctx context.Context, d *daemon, id string, rounds int) (touchedPages, error) {
	var out touchedPages
	sb, err := d.client.GetSandbox(ctx, id)
	if err != nil {
		return out, err
	}
	shells := childrenOf(sb.PID)
	if len(shells) != 1 {
		return out, fmt.Errorf("sandbox %s: its agent (pid %d) has %d children, want its default session's shell", id, sb.PID, len(shells))
	}
	pids := []int{sb.PID, shells[0]}
	for range rounds {
		for _, pid := range pids {
			if err := os.WriteFile(fmt.Sprintf("/proc/%d/clear_refs", pid), []byte("1"), 0); err != nil {
				return out, fmt.Errorf("clear the accessed bits of pid %d: %w", pid, err)
			}
		}
		cleared, err := timedExec(ctx, d, id)
		if err != nil {
			return out, err
		}
		for i, kb := range []*float64{&out.agentKB, &out.shellKB} {
			n, err := rollupKB(pids[i], "Referenced")
			if err != nil {
				return out, err
			}
			*kb += n / float64(rounds)
		}
		hot, err := timedExec(ctx, d, id)
		if err != nil {
			return out, err
		}
		out.cleared, out.hot = append(out.cleared, cleared), append(out.hot, hot)
	}
	return out, nil
}

// timedExec times one session exec of `true` in sandbox id.
func timedExec(ctx context.Context, d *daemon, id string) (time.Duration, error) {
	began := time.Now()
	_, err := execOK(ctx, d, id, api.ExecRequest{Command: "true"})
	return time.Since(began), err
}

// childrenOf lists the children of process pid.
func childrenOf(pid int) []int {
	data, _ := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", pid, pid))
	var out []int
	for _, f := range strings.Fields(string(data)) {
		if n, err := strconv.Atoi(f); err == nil {
			out = append(out, n)
		}
	}
	return out
}
