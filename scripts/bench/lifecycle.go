package main

import (
	"context"
	"errors"
	"fmt"

	"github.com/nsbox/nsbox/api"
)

// lifecycleSection times hibernating a sandbox (a session with state and a sleeping process)
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
	cases := []benchCase{
		{name: "hibernate", ref: "runc delete --force", run: hibernate, after: resume},
		{name: "resume from hibernation", ref: "runc run --detach", before: hibernate, run: resume},
		{name: "runc delete --force", before: runcRun, run: runcDelete},
		{name: "runc run --detach", run: runcRun, after: runcDelete},
	}
	fmt.Printf("lifecycle: hibernate and resume a sandbox (one session with state, one sleeping process); %d warm-ups, then %d measured runs of each, interleaved in random order\n", warmups, n)
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
