// Command bench measures nsbox against its peers on this machine, side by side in one run:
//
//   - cycle: create a busybox sandbox, exec `true` in it and remove it, through the Go client
//     against private nsbox daemons with and without the seccomp profile, versus `runc run`
//     of the same rootfs and `bwrap … true`;
//   - memory: the proportional set size (PSS) of many idle busybox sandboxes.
//
// It starts its own daemons with private data, run and cgroup directories and removes
// everything it made when it ends, also on SIGINT or SIGTERM. Run it as root:
//
//	go run -tags "seccomp netgo osusergo" ./scripts/bench -nsbox /abs/path/bin/nsbox
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/nsbox/nsbox/api"
)

const (
	warmups     = 3
	image       = "busybox"
	cycleTarget = 0.5 // nsbox's median cycle as a fraction of runc's
	memTargetMB = 4.0 // PSS per idle sandbox, the daemon's share included
)

type options struct {
	nsbox    string
	n, idle  int
	sections map[string]bool
}

func main() {
	opts, err := parseFlags()
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(2)
	}
	// The signals stay caught until run returns, so a second Ctrl-C cannot cut the cleanup short.
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	err = run(ctx, opts)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

func parseFlags() (options, error) {
	o := options{sections: map[string]bool{}}
	flag.StringVar(&o.nsbox, "nsbox", "", "absolute path of the nsbox binary (required)")
	flag.IntVar(&o.n, "n", 50, "measured iterations of each cycle, after 3 warm-ups")
	flag.IntVar(&o.idle, "idle", 100, "idle sandboxes for the memory measurement")
	only := flag.String("only", "cycle,memory", "comma-separated sections to run: cycle, memory")
	flag.Parse()
	if !filepath.IsAbs(o.nsbox) || o.n < 1 || o.idle < 1 {
		return o, errors.New("-nsbox must be an absolute path; -n and -idle at least 1")
	}
	for _, s := range strings.Split(*only, ",") {
		if s = strings.TrimSpace(s); s != "cycle" && s != "memory" {
			return o, fmt.Errorf("-only: unknown section %q (want cycle, memory)", s)
		}
		o.sections[s] = true
	}
	return o, nil
}

func run(ctx context.Context, o options) (err error) {
	if os.Geteuid() != 0 {
		return errors.New("run as root: the benchmark starts nsbox daemons and runc containers")
	}
	b, err := newBench(o.nsbox)
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, b.cleanup()) }()
	var u unix.Utsname
	_ = unix.Uname(&u)
	fmt.Printf("machine: %d CPUs, kernel %s, cgroup %s\n\n", runtime.NumCPU(), unix.ByteSliceToString(u.Release[:]), cgroupVersion())
	if o.sections["cycle"] {
		if err := b.cycleSection(ctx, o.n); err != nil {
			return fmt.Errorf("cycle: %w", err)
		}
	}
	if o.sections["memory"] {
		if err := b.memorySection(ctx, o.idle); err != nil {
			return fmt.Errorf("memory: %w", err)
		}
	}
	return nil
}

// cycleSection times nsbox's create → exec `true` → remove cycle, with and without seccomp,
// against runc and bwrap running `true` in the same busybox rootfs.
func (b *bench) cycleSection(ctx context.Context, n int) error {
	withSeccomp, err := b.daemon(ctx, "nsbox", true)
	if err != nil {
		return err
	}
	noSeccomp, err := b.daemon(ctx, "nsbox-noseccomp", false)
	if err != nil {
		return err
	}
	bundle, err := b.makeRuncBundle(withSeccomp)
	if err != nil {
		return err
	}
	phases := map[string][]time.Duration{}
	runcID := 0
	cases := []benchCase{
		{"nsbox", nsboxCycle(withSeccomp, phases)},
		{"nsbox --seccomp=false", nsboxCycle(noSeccomp, nil)},
		{"runc run", func(context.Context) error {
			runcID++
			return runCommand("runc", "--root", b.runcRoot(), "run", "--bundle", bundle, fmt.Sprintf("bench-%d", runcID))
		}},
		{"bwrap", func(context.Context) error {
			return runCommand("bwrap", "--unshare-all", "--ro-bind", filepath.Join(bundle, "rootfs"), "/", "--proc", "/proc", "--dev", "/dev", "true")
		}},
	}
	fmt.Printf("cycle: %d warm-ups, then %d measured runs of each, interleaved in random order\n", warmups, n)
	samples, err := timeCases(ctx, cases, warmups, n)
	if err != nil {
		return err
	}
	printCycleTable(cases, samples)
	fmt.Printf("nsbox cycle phases (median ms): create %s, exec %s, remove %s\n\n",
		ms(median(phases["create"][warmups:])), ms(median(phases["exec"][warmups:])), ms(median(phases["remove"][warmups:])))
	return nil
}

// nsboxCycle is one create → exec `true` → remove cycle through the Go client; with a
// non-nil phases it records how long each step took.
func nsboxCycle(d *daemon, phases map[string][]time.Duration) func(context.Context) error {
	lap := func(phase string, start time.Time) {
		if phases != nil {
			phases[phase] = append(phases[phase], time.Since(start))
		}
	}
	return func(ctx context.Context) error {
		start := time.Now()
		sb, err := d.client.CreateSandbox(ctx, api.CreateSandboxRequest{Image: image})
		if err != nil {
			return fmt.Errorf("create sandbox: %w", err)
		}
		lap("create", start)
		start = time.Now()
		res, execErr := d.client.Exec(ctx, sb.ID, api.ExecRequest{Argv: []string{"true"}})
		if execErr == nil && res.ExitCode != 0 {
			execErr = fmt.Errorf("exit code %d: %s", res.ExitCode, res.Stderr)
		}
		lap("exec", start)
		start = time.Now()
		if err := d.client.RemoveSandbox(ctx, sb.ID, true); err != nil {
			return errors.Join(execErr, fmt.Errorf("remove sandbox %s: %w", sb.ID, err))
		}
		lap("remove", start)
		if execErr != nil {
			return fmt.Errorf("exec true in %s: %w", sb.ID, execErr)
		}
		return nil
	}
}

func printCycleTable(cases []benchCase, samples map[string][]time.Duration) {
	runcMedian := median(samples["runc run"])
	w := newTable()
	fmt.Fprintln(w, "name\tmedian ms\tmin ms\tmax ms\tp99 ms\tmedian / runc's\t")
	for _, c := range cases {
		s := summarize(samples[c.name])
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%.2f\t\n", c.name, ms(s.median), ms(s.min), ms(s.max), ms(s.p99), float64(s.median)/float64(runcMedian))
	}
	w.Flush()
	on, off := median(samples["nsbox"]), median(samples["nsbox --seccomp=false"])
	ratio := float64(on) / float64(runcMedian)
	fmt.Printf("target: nsbox cycle ≤ %.1f× runc's median: %s (%.2f×)\n", cycleTarget, verdict(ratio <= cycleTarget), ratio)
	fmt.Printf("seccomp profile: %+.1f ms on the median cycle (%s ms with, %s ms without)\n", float64(on-off)/1e6, ms(on), ms(off))
}

// memorySection creates idle busybox sandboxes and reports their PSS plus the daemon's.
func (b *bench) memorySection(ctx context.Context, count int) (err error) {
	d, err := b.daemon(ctx, "nsbox", true)
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, d.removeAllSandboxes()) }()
	fmt.Printf("memory: %d idle %s sandboxes\n", count, image)
	start := time.Now()
	var sandboxes []*api.Sandbox
	for i := range count {
		sb, err := d.client.CreateSandbox(ctx, api.CreateSandboxRequest{ID: fmt.Sprintf("idle-%03d", i), Image: image})
		if err != nil {
			return fmt.Errorf("create idle sandbox %d: %w", i, err)
		}
		sandboxes = append(sandboxes, sb)
	}
	created := time.Since(start)
	time.Sleep(2 * time.Second) // let the agents settle
	m, err := measureMemory(d, sandboxes)
	if err != nil {
		return err
	}
	mb := func(kb float64) float64 { return kb / 1024 }
	each := mb(m.sandboxKB+m.daemonKB) / float64(count)
	w := newTable()
	fmt.Fprintf(w, "created in\t%.1f s (%.0f ms each, one after another)\t\n", created.Seconds(), float64(created.Milliseconds())/float64(count))
	fmt.Fprintf(w, "sandbox processes\t%d (%d besides the agents)\t\n", m.procs, m.procs-count)
	fmt.Fprintf(w, "PSS of sandboxes\t%.1f MB (%.2f MB each)\t\n", mb(m.sandboxKB), mb(m.sandboxKB)/float64(count))
	fmt.Fprintf(w, "PSS of daemon\t%.1f MB (%.2f MB per sandbox)\t\n", mb(m.daemonKB), mb(m.daemonKB)/float64(count))
	fmt.Fprintf(w, "total\t%.1f MB = %.2f MB per sandbox\t\n", mb(m.sandboxKB+m.daemonKB), each)
	w.Flush()
	fmt.Printf("target: ≤ %.0f MB per idle sandbox: %s\n\n", memTargetMB, verdict(each <= memTargetMB))
	return nil
}

func verdict(met bool) string {
	if met {
		return "met"
	}
	return "NOT met"
}
