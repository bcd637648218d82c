// Command bench measures nsbox against its peers on this machine, side by side in one run:
//
//   - cycle: create a busybox sandbox, exec `true` in it and remove it, through the Go client
//     against private nsbox daemons (one with a warm pool; without one, with and without the
//     seccomp profile), versus `runc run`
//     of the same rootfs and `bwrap … true`;
//   - session: a command's round trip through the API in a warm session and the creation of a
//     session, on the busybox image (sh on a pipe) and the host image (bash on a PTY), versus
//     `runc exec` and `nsenter -a` into a running runc container of the same busybox rootfs;
//   - process: a process started through the processes API until it has exited, versus
//     `runc exec` into a running runc container of the same busybox rootfs;
//   - code: a trivial run in a Python code context versus python3 -c through the processes API;
//   - memory: the proportional set size (PSS) of many idle busybox sandboxes;
//   - lifecycle: pause/resume versus the cgroup freezer by hand, hibernate/resume versus
//     stopping and starting a runc container (lifecycle.go);
//   - snapshots: a snapshot and forks of 1 and 10 versus `cp -a` of the upper dir, and a
//     create from a snapshot versus a plain create (snapshots.go);
//   - storage: what a workspace and a disk limit add to a sandbox's create and remove.
//   - permissions: find, find + cat and tar over a 10,000-file workspace without and with
//     per-path rules (permissions.go);
//   - files: the file API's write and read throughput for 1 MiB and 1 GiB files, versus
//     `head -c` and `cat` of the same sizes inside the sandbox (files.go).
//   - output: 100 MiB of a command's output through the exec API (raw frames kept whole and
//     written out as they come, one JSON answer, and streamed) versus `cat` of the same file
//     inside the sandbox, and the daemon's RSS (output.go).
//   - network: exposing and unexposing a port, create with a network versus mode none, and
//     HTTP requests per second through an exposed host port versus straight to the sandbox,
//     and the API's p99 without and with 10,000 idle connections to the preview proxy (proxyload.go).
//   - images: pull + unpack of a Debian image from a loopback registry versus `skopeo copy` +
//     `umoci raw unpack` or tar, and create from that image versus from busybox (images.go).
//   - burst: 50 and 200 creates at once: throughput, latencies, and the daemon's threads and RSS
//     before, during and after (burst.go).
//   - stats: what reading every sandbox's resource use (GET /v1/stats, a /metrics scrape) costs
//     the daemon with -stats-n sandboxes running (stats.go).
//   - restart: a daemon holding -restart sandboxes (100, then 500), each with a web server on an
//     exposed port, ended by kill -9 and by SIGTERM and started again: the time until its API
//     answers, and a check of every sandbox (restart.go).
//   - density: 1,000 idle sandboxes with a session each: time to create and remove them, memory
//     per sandbox, the daemon's RSS, and the API's latency while they idle (density.go).
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
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/nsbox/nsbox/api"
	"github.com/nsbox/nsbox/client"
)

const (
	warmups             = 3
	image               = "busybox"
	warmCycleTarget     = 1.5 // the warm-pool cycle as a fraction of bwrap's (issue 20)
	coldCycleTarget     = 1.0 // the cycle without a pool as a fraction of runc's (issue 20)
	execTarget          = 1.0 // a command in a warm session as a fraction of `nsenter -a true`
	createSessionTarget = 0.2 // a session's creation as a fraction of `runc exec true`
	memTargetMB         = 1.5 // PSS per idle sandbox, the daemon's share included (issue 20)
)

type options struct {
	nsbox, cpuProfile string
	n, idle, density  int
	statsN            int
	restart           []int
	densityDisk       bool
	sections          map[string]bool
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
	flag.IntVar(&o.n, "n", 50, "measured iterations of each case, after 3 warm-ups")
	flag.IntVar(&o.idle, "idle", 100, "idle sandboxes for the memory measurement")
	flag.IntVar(&o.density, "density", 1000, "idle sandboxes for the density measurement")
	flag.BoolVar(&o.densityDisk, "density-disk", true, "give the density measurement's sandboxes the daemon's default disk (false: --default-disk 0, which creates a thousand ~1.2× as fast)")
	flag.IntVar(&o.statsN, "stats-n", 1000, "running sandboxes for the stats measurement")
	flag.StringVar(&o.cpuProfile, "cpuprofile", "", "write the CPU profile of the benchmark itself (the client side: the Go SDK) to this file, for go tool pprof")
	restart := flag.String("restart", "100,500", "comma-separated, increasing sandbox counts the restart section restarts a daemon with")
	only := flag.String("only", strings.Join(sections, ","), "comma-separated sections to run: "+strings.Join(sections, ", "))
	flag.Parse()
	if !filepath.IsAbs(o.nsbox) || o.n < 1 || o.idle < 1 || o.density < 2 || o.statsN < 1 || o.statsN > 2000 {
		return o, errors.New("-nsbox must be an absolute path; -n and -idle at least 1, -density at least 2, -stats-n from 1 to 2000")
	}
	var err error
	if o.restart, err = parseSizes(*restart); err != nil {
		return o, fmt.Errorf("-restart: %w", err)
	}
	for _, s := range strings.Split(*only, ",") {
		if s = strings.TrimSpace(s); !slices.Contains(sections, s) {
			return o, fmt.Errorf("-only: unknown section %q (want %s)", s, strings.Join(sections, ", "))
		}
		o.sections[s] = true
	}
	return o, nil
}

// sections are the parts of the benchmark, in the order they run.
var sections = []string{"cycle", "session", "process", "code", "memory", "lifecycle", "snapshots", "storage", "permissions", "files", "output", "network", "images", "burst", "stats", "restart", "density"}

func run(ctx context.Context, o options) (err error) {
	if os.Geteuid() != 0 {
		return errors.New("run as root: the benchmark starts nsbox daemons and runc containers")
	}
	b, err := newBench(o.nsbox)
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, b.cleanup()) }()
	if o.cpuProfile != "" {
		f, err := os.Create(o.cpuProfile)
		if err != nil {
			return fmt.Errorf("cpu profile: %w", err)
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return fmt.Errorf("cpu profile: %w", err)
		}
		defer pprof.StopCPUProfile()
	}
	var u unix.Utsname
	_ = unix.Uname(&u)
	fmt.Printf("machine: %d CPUs, kernel %s, cgroup %s, %s\n\n", runtime.NumCPU(), unix.ByteSliceToString(u.Release[:]), cgroupVersion(), damonDescription())
	if o.sections["cycle"] {
		if err := b.cycleSection(ctx, o.n); err != nil {
			return fmt.Errorf("cycle: %w", err)
		}
	}
	if o.sections["session"] {
		if err := b.sessionSection(ctx, o.n); err != nil {
			return fmt.Errorf("session: %w", err)
		}
	}
	if o.sections["process"] {
		if err := b.processSection(ctx, o.n); err != nil {
			return fmt.Errorf("process: %w", err)
		}
	}
	if o.sections["code"] {
		if err := b.codeSection(ctx, o.n); err != nil {
			return fmt.Errorf("code: %w", err)
		}
	}
	if o.sections["memory"] {
		if err := b.memorySection(ctx, o.idle); err != nil {
			return fmt.Errorf("memory: %w", err)
		}
	}
	if o.sections["lifecycle"] {
		if err := b.lifecycleSection(ctx, o.n); err != nil {
			return fmt.Errorf("lifecycle: %w", err)
		}
	}
	if o.sections["snapshots"] {
		if err := b.snapshotsSection(ctx, o.n); err != nil {
			return fmt.Errorf("snapshots: %w", err)
		}
	}
	if o.sections["storage"] {
		if err := b.storageSection(ctx, o.n); err != nil {
			return fmt.Errorf("storage: %w", err)
		}
	}
	if o.sections["permissions"] {
		if err := b.permissionsSection(ctx, o.n); err != nil {
			return fmt.Errorf("permissions: %w", err)
		}
	}
	if o.sections["files"] {
		if err := b.filesSection(ctx, o.n); err != nil {
			return fmt.Errorf("files: %w", err)
		}
	}
	if o.sections["output"] {
		if err := b.outputSection(ctx, o.n); err != nil {
			return fmt.Errorf("output: %w", err)
		}
	}
	if o.sections["network"] {
		if err := b.networkSection(ctx, o.n); err != nil {
			return fmt.Errorf("network: %w", err)
		}
	}
	if o.sections["images"] {
		if err := b.imagesSection(ctx, o.n); err != nil {
			return fmt.Errorf("images: %w", err)
		}
	}
	if o.sections["burst"] {
		if err := b.burstSection(ctx); err != nil {
			return fmt.Errorf("burst: %w", err)
		}
	}
	if o.sections["stats"] {
		if err := b.statsSection(ctx, o.statsN, min(o.n, 10)); err != nil {
			return fmt.Errorf("stats: %w", err)
		}
	}
	if o.sections["restart"] {
		if err := b.restartSection(ctx, o.restart); err != nil {
			return fmt.Errorf("restart: %w", err)
		}
	}
	if o.sections["density"] {
		if err := b.densitySection(ctx, o.density, o.densityDisk); err != nil {
			return fmt.Errorf("density: %w", err)
		}
	}
	return nil
}

// cycleSection times nsbox's create → exec `true` → remove cycle, with and without seccomp,
// against runc and bwrap running `true` in the same busybox rootfs.
func (b *bench) cycleSection(ctx context.Context, n int) error {
	warm, err := b.daemon(ctx, "nsbox-warm", true, image+"=1")
	if err != nil {
		return err
	}
	withSeccomp, err := b.daemon(ctx, "nsbox", true, "")
	if err != nil {
		return err
	}
	noSeccomp, err := b.daemon(ctx, "nsbox-noseccomp", false, "")
	if err != nil {
		return err
	}
	noUserns, err := b.daemon(ctx, "nsbox-nouserns", true, "", "--userns=false")
	if err != nil {
		return err
	}
	warmNoUserns, err := b.daemon(ctx, "nsbox-warm-nouserns", true, image+"=1", "--userns=false")
	if err != nil {
		return err
	}
	noDisk, err := b.daemon(ctx, "nsbox-nodisk", true, "", "--default-disk=0")
	if err != nil {
		return err
	}
	warmNoDisk, err := b.daemon(ctx, "nsbox-warm-nodisk", true, image+"=1", "--default-disk=0")
	if err != nil {
		return err
	}
	bundle, err := b.makeRuncBundle(withSeccomp, "bundle-true", "true")
	if err != nil {
		return err
	}
	phases, warmPhases, gracefulPhases := map[string][]time.Duration{}, map[string][]time.Duration{}, map[string][]time.Duration{}
	runcID := 0
	cases := []benchCase{
		// Untimed after each run: wait until the pool has its container again and the daemon
		// its spare disks, so that the next run finds them and no refill competes with the
		// other cases for the CPUs and the disk.
		{name: "nsbox warm pool", run: nsboxCycle(warm, warmPhases, forced), after: warm.refilled},
		// What a client gets without force (the API's default): SIGTERM and an answer once
		// the sandbox's processes have exited.
		{name: "nsbox warm, graceful rm", run: nsboxCycle(warm, gracefulPhases, graceful), after: warm.refilled},
		{name: "nsbox", run: nsboxCycle(withSeccomp, phases, forced), after: withSeccomp.refilled},
		{name: "nsbox --seccomp=false", run: nsboxCycle(noSeccomp, nil, forced), after: noSeccomp.refilled},
		{name: "nsbox --userns=false", run: nsboxCycle(noUserns, nil, forced), after: noUserns.refilled},
		{name: "nsbox warm --userns=false", run: nsboxCycle(warmNoUserns, nil, forced), after: warmNoUserns.refilled},
		{name: "nsbox --default-disk=0", run: nsboxCycle(noDisk, nil, forced), after: noDisk.refilled},
		{name: "nsbox warm --default-disk=0", run: nsboxCycle(warmNoDisk, nil, forced), after: warmNoDisk.refilled},
		{name: "runc run", run: func(context.Context) error {
			runcID++
			return runCommand("runc", "--root", b.runcRoot(), "run", "--bundle", bundle, fmt.Sprintf("bench-%d", runcID))
		}},
		{name: "bwrap", run: func(context.Context) error {
			return runCommand("bwrap", "--unshare-all", "--ro-bind", filepath.Join(bundle, "rootfs"), "/", "--proc", "/proc", "--dev", "/dev", "true")
		}},
	}
	for i := range cases {
		cases[i].ref = "runc run"
		cases[i].after = thenIdle(cases[i].after)
	}
	fmt.Printf("cycle: %d warm-ups, then %d measured runs of each, interleaved in random order, each once the CPUs are idle\n", warmups, n)
	samples, err := timeCases(ctx, cases, warmups, n)
	if err != nil {
		return err
	}
	printTable(cases, samples)
	printTarget("nsbox cycle from the warm pool ÷ bwrap", medianRatio(samples, "nsbox warm pool", "bwrap"), warmCycleTarget)
	printTarget("nsbox cycle without a pool ÷ runc run", medianRatio(samples, "nsbox", "runc run"), coldCycleTarget)
	on, off := median(samples["nsbox"]), median(samples["nsbox --seccomp=false"])
	fmt.Printf("seccomp profile: %+.1f ms on the median cycle (%s ms with, %s ms without)\n", float64(on-off)/1e6, ms(on), ms(off))
	fmt.Printf("user namespaces: cold cycle %.2f×, warm-pool cycle %.2f× of the same without\n",
		medianRatio(samples, "nsbox", "nsbox --userns=false"), medianRatio(samples, "nsbox warm pool", "nsbox warm --userns=false"))
	fmt.Printf("default disk quota: cold cycle %.2f×, warm-pool cycle %.2f× of the same without (--default-disk=0)\n",
		medianRatio(samples, "nsbox", "nsbox --default-disk=0"), medianRatio(samples, "nsbox warm pool", "nsbox warm --default-disk=0"))
	printPhases("nsbox warm pool", warmPhases)
	printPhases("nsbox warm pool, graceful rm", gracefulPhases)
	printPhases("nsbox", phases)
	fmt.Println()
	return nil
}

func printPhases(name string, phases map[string][]time.Duration) {
	fmt.Printf("%s cycle phases (median ms): create %s, exec %s, remove %s\n", name,
		ms(median(phases["create"][warmups:])), ms(median(phases["exec"][warmups:])), ms(median(phases["remove"][warmups:])))
}

// How a cycle removes its sandbox: forced (SIGKILL at once) or graceful (SIGTERM first).
const (
	forced   = true
	graceful = false
)

// nsboxCycle is one create → exec `true` → remove cycle through the Go client, removing as
// force says; with a non-nil phases it records how long each step took.
func nsboxCycle(d *daemon, phases map[string][]time.Duration, force bool) func(context.Context) error {
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
		_, execErr := execOK(ctx, d, sb.ID, api.ExecRequest{Argv: []string{"true"}})
		lap("exec", start)
		start = time.Now()
		if err := d.client.RemoveSandbox(ctx, sb.ID, client.RemoveOptions{Force: force}); err != nil {
			return errors.Join(execErr, fmt.Errorf("remove sandbox %s: %w", sb.ID, err))
		}
		lap("remove", start)
		if execErr != nil {
			return fmt.Errorf("exec true in %s: %w", sb.ID, execErr)
		}
		return nil
	}
}

// execOK runs a command in a sandbox and fails unless it exits 0.
func execOK(ctx context.Context, d *daemon, id string, req api.ExecRequest) (*api.ExecResult, error) {
	res, err := d.client.Exec(ctx, id, req)
	if err == nil && res.ExitCode != 0 {
		err = fmt.Errorf("exit code %d: %s", res.ExitCode, res.Stderr)
	}
	return res, err
}

// sessionSection times a command in a warm session and the creation of a session, in a
// busybox and a host sandbox, against `runc exec` and `nsenter -a` into a running runc
// container of the same busybox rootfs.
func (b *bench) sessionSection(ctx context.Context, n int) (err error) {
	d, err := b.daemon(ctx, "nsbox", true, "")
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, d.removeAllSandboxes()) }()
	var cases []benchCase
	inAgent := map[string][]time.Duration{} // durationMs of each exec, as the agent measured it
	for _, img := range []string{image, "host"} {
		sb, err := d.client.CreateSandbox(ctx, api.CreateSandboxRequest{Image: img})
		if err != nil {
			return fmt.Errorf("create %s sandbox: %w", img, err)
		}
		cases = append(cases, sessionCases(d, sb.ID, img, inAgent)...)
	}
	bundle, err := b.makeRuncBundle(d, "bundle-sleep", "sleep", "100000")
	if err != nil {
		return err
	}
	pid, stopRunc, err := b.runDetached(bundle, "bench-sleep")
	defer func() { err = errors.Join(err, stopRunc()) }()
	if err != nil {
		return err
	}
	cases = append(cases,
		benchCase{name: "runc exec", run: func(context.Context) error {
			return runCommand("runc", "--root", b.runcRoot(), "exec", "bench-sleep", "/bin/true")
		}},
		benchCase{name: "nsenter -a", run: func(context.Context) error {
			return runCommand("nsenter", "-a", "-t", strconv.Itoa(pid), "/bin/true")
		}},
	)
	fmt.Printf("session: %d warm-ups, then %d measured runs of each, interleaved in random order\n", warmups, n)
	samples, err := timeCases(ctx, cases, warmups, n)
	if err != nil {
		return err
	}
	printTable(cases, samples)
	for _, img := range []string{image, "host"} {
		printTarget(img+" exec command ÷ nsenter -a", medianRatio(samples, img+" exec command", "nsenter -a"), execTarget)
		printTarget(img+" exec argv ÷ nsenter -a", medianRatio(samples, img+" exec argv", "nsenter -a"), execTarget)
		printTarget(img+" create session ÷ runc exec", medianRatio(samples, img+" create session", "runc exec"), createSessionTarget)
	}
	// The agent reports durationMs truncated to whole ms: its mean is about 0.5 ms low.
	fmt.Println("mean round trip = mean time in the agent (its durationMs + 0.5) + client → daemon → agent hops, ms:")
	for _, c := range cases {
		if durations := inAgent[c.name]; len(durations) > warmups {
			total, agent := mean(samples[c.name]), mean(durations[warmups:])+time.Millisecond/2
			fmt.Printf("  %s: %s = %s + %s\n", c.name, ms(total), ms(agent), ms(total-agent))
		}
	}
	fmt.Println()
	return nil
}

// sessionCases are a command's round trip in sandbox id's default session, as shell source and
// as argv, and the creation of a session (deleted again, untimed).
func sessionCases(d *daemon, id, img string, inAgent map[string][]time.Duration) []benchCase {
	exec := func(name string, req api.ExecRequest) benchCase {
		return benchCase{name: name, ref: "nsenter -a", run: func(ctx context.Context) error {
			res, err := execOK(ctx, d, id, req)
			if err == nil {
				inAgent[name] = append(inAgent[name], time.Duration(res.DurationMs)*time.Millisecond)
			}
			return err
		}}
	}
	var session string
	return []benchCase{
		exec(img+" exec command", api.ExecRequest{Command: "true"}),
		exec(img+" exec argv", api.ExecRequest{Argv: []string{"true"}}),
		{name: img + " create session", ref: "runc exec", run: func(ctx context.Context) error {
			s, err := d.client.CreateSession(ctx, id, api.CreateSessionRequest{})
			if err == nil {
				session = s.ID
			}
			return err
		}, after: func(ctx context.Context) error {
			return d.client.DeleteSession(ctx, id, session)
		}},
	}
}

// memorySection creates idle busybox sandboxes and reports their PSS plus the daemon's. They
// have network mode none: a bench daemon's subnet is a /26, and a veth's memory is the
// kernel's, which PSS does not count either way.
func (b *bench) memorySection(ctx context.Context, count int) (err error) {
	d, err := b.daemon(ctx, "nsbox", true, "")
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, d.removeAllSandboxes()) }()
	fmt.Printf("memory: %d idle %s sandboxes\n", count, image)
	start := time.Now()
	var sandboxes []*api.Sandbox
	for i := range count {
		sb, err := d.client.CreateSandbox(ctx, api.CreateSandboxRequest{ID: fmt.Sprintf("idle-%03d", i), Image: image,
			Network: &api.NetworkSpec{Mode: api.NetworkNone}})
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
	fmt.Printf("target: ≤ %.1f MB per idle sandbox: %s\n\n", memTargetMB, verdict(each <= memTargetMB))
	return nil
}

func verdict(met bool) string {
	if met {
		return "met"
	}
	return "NOT met"
}
