package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/nsbox/nsbox/api"
)

// lifecycleSection times pausing a sandbox and resuming it, against freezing and thawing its
// cgroup by hand (v1: FROZEN and THAWED to freezer.state; v2: 1 and 0 to cgroup.freeze, each
// until the cgroup says it is done); hibernating a sandbox (a session with state and a sleeping process)
// and resuming it (until its agent answers and its session is restored), against removing a
// runc container of the same busybox rootfs (`runc delete --force`) and starting one
// (`runc run --detach`); and shows the memory a hibernation frees (the PSS of the sandbox's
// processes before; after it has none).
func (b *bench) lifecycleSection(ctx context.Context, n int) (err error) {
	d, err := b.daemon(ctx, "nsbox", true, "")
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, d.removeAllSandboxes()) }()
	sb, err := d.client.CreateSandbox(ctx, api.CreateSandboxRequest{Image: image})
	if err != nil {
		return fmt.Errorf("create sandbox: %w", err)
	}
	if _, err := d.client.Exec(ctx, sb.ID, api.ExecRequest{Command: "cd /tmp && export MARK=1"}); err != nil {
		return fmt.Errorf("exec: %w", err)
	}
	if _, err := d.client.StartProcess(ctx, sb.ID, api.StartProcessRequest{Argv: []string{"sleep", "100000"}}); err != nil {
		return fmt.Errorf("start process: %w", err)
	}
	running, err := d.client.GetSandbox(ctx, sb.ID)
	if err != nil {
		return err
	}
	before, err := measureMemory(d, []*api.Sandbox{running})
	if err != nil {
		return err
	}
	bundle, err := b.makeRuncBundle(d, "bundle-sleep-lifecycle", "sleep", "100000")
	if err != nil {
		return err
	}
	const runcID = "bench-lifecycle"
	hibernate := func(ctx context.Context) error {
		_, err := d.client.HibernateSandbox(ctx, sb.ID, api.HibernateRequest{})
		return err
	}
	resume := func(ctx context.Context) error {
		_, err := d.client.ResumeSandbox(ctx, sb.ID)
		return err
	}
	runcRun := func(context.Context) error { _, _, err := b.runDetached(bundle, runcID); return err }
	runcDelete := func(context.Context) error {
		return runCommand("runc", "--root", b.runcRoot(), "delete", "--force", runcID)
	}
	pause := func(ctx context.Context) error { _, err := d.client.PauseSandbox(ctx, sb.ID); return err }
	freezer := &handFreezer{}
	locate := func(ctx context.Context) error { return freezer.locate(ctx, d, sb.ID) }
	cases := []benchCase{
		{name: "pause", ref: "freeze by hand", run: pause, after: resume},
		{name: "resume", ref: "thaw by hand", before: pause, run: resume},
		{name: "freeze by hand", before: locate, run: freezer.freeze, after: freezer.thaw},
		{name: "thaw by hand", before: func(ctx context.Context) error { return errors.Join(locate(ctx), freezer.freeze(ctx)) }, run: freezer.thaw},
		{name: "hibernate", ref: "runc delete --force", run: hibernate, after: resume},
		{name: "resume from hibernation", ref: "runc run --detach", before: hibernate, run: resume},
		{name: "runc delete --force", before: runcRun, run: runcDelete},
		{name: "runc run --detach", run: runcRun, after: runcDelete},
	}
	fmt.Printf("lifecycle: pause and resume a sandbox (against the %s cgroup freezer by hand), hibernate and resume it (one session with state, one sleeping process); %d warm-ups, then %d measured runs of each, interleaved in random order\n", cgroupVersion(), warmups, n)
	samples, err := timeCases(ctx, cases, warmups, n)
	if err != nil {
		return err
	}
	printTable(cases, samples)
	if err := hibernate(ctx); err != nil {
		return err
	}
	hibernated, err := d.client.GetSandbox(ctx, sb.ID)
	if err != nil {
		return err
	}
	fmt.Printf("memory: %.0f KiB PSS in %d processes before hibernation; status %s after, pid %d: no process, no cgroup\n\n",
		before.sandboxKB, before.procs, hibernated.Status, hibernated.PID)
	return nil
}

// handFreezer freezes and thaws a sandbox's cgroup by hand, as a shell script would.
type handFreezer struct {
	dir string // the sandbox's freezer cgroup (the unified one on v2)
}

// locate finds the freezer cgroup of the sandbox's container.
func (f *handFreezer) locate(ctx context.Context, d *daemon, id string) error {
	sb, err := d.client.GetSandbox(ctx, id)
	if err != nil {
		return err
	}
	f.dir, err = cgroupOf(sb.PID, "freezer")
	return err
}

// watch measures how long the cgroup is frozen or freezing until the function it returns is
// called, reading its state every 100 µs.
func (f *handFreezer) watch() func() (time.Duration, error) {
	stop := make(chan struct{})
	type result struct {
		frozen time.Duration
		err    error
	}
	done := make(chan result)
	file, thawed := "freezer.state", "THAWED"
	if cgroupVersion() == "v2" {
		file, thawed = "cgroup.freeze", "0"
	}
	go func() {
		var total time.Duration
		var since time.Time
		for {
			select {
			case <-stop:
				if !since.IsZero() {
					total += time.Since(since)
				}
				done <- result{frozen: total}
				return
			default:
			}
			state, err := os.ReadFile(filepath.Join(f.dir, file))
			if err != nil {
				<-stop
				done <- result{err: err}
				return
			}
			frozen := strings.TrimSpace(string(state)) != thawed
			switch {
			case frozen && since.IsZero():
				since = time.Now()
			case !frozen && !since.IsZero():
				total += time.Since(since)
				since = time.Time{}
			}
			time.Sleep(100 * time.Microsecond)
		}
	}()
	return func() (time.Duration, error) {
		close(stop)
		r := <-done
		return r.frozen, r.err
	}
}

func (f *handFreezer) freeze(context.Context) error { return f.set(true) }
func (f *handFreezer) thaw(context.Context) error   { return f.set(false) }

// set writes the freezer's state and reads it back until the kernel is done.
func (f *handFreezer) set(frozen bool) error {
	file, value, done := "freezer.state", "THAWED", "THAWED"
	if frozen {
		value, done = "FROZEN", "FROZEN"
	}
	if cgroupVersion() == "v2" {
		file, value, done = "cgroup.freeze", "0", "frozen 0"
		if frozen {
			value, done = "1", "frozen 1"
		}
	}
	if err := os.WriteFile(filepath.Join(f.dir, file), []byte(value), 0o644); err != nil {
		return fmt.Errorf("write %s to %s: %w", value, file, err)
	}
	if file == "cgroup.freeze" {
		file = "cgroup.events"
	}
	for {
		state, err := os.ReadFile(filepath.Join(f.dir, file))
		if err != nil {
			return err
		}
		if strings.Contains(string(state), done) {
			return nil
		}
		time.Sleep(100 * time.Microsecond)
	}
}
