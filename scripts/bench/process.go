package main

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nsbox/nsbox/api"
)

// processSection times a process started through the processes API until it has exited (start
// `true`, wait for its end; removing it afterwards is untimed), as argv and through /bin/sh -c,
// against `runc exec` of `true` into a running runc container of the same busybox rootfs.
func (b *bench) processSection(ctx context.Context, n int) (err error) {
	d, err := b.daemon(ctx, "nsbox", true, "")
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, d.removeAllSandboxes()) }()
	sb, err := d.client.CreateSandbox(ctx, api.CreateSandboxRequest{Image: image})
	if err != nil {
		return fmt.Errorf("create sandbox: %w", err)
	}
	bundle, err := b.makeRuncBundle(d, "bundle-sleep-process", "sleep", "100000")
	if err != nil {
		return err
	}
	_, stopRunc, err := b.runDetached(bundle, "bench-sleep-process")
	defer func() { err = errors.Join(err, stopRunc()) }()
	if err != nil {
		return err
	}
	startAndWait := func(name string, req api.StartProcessRequest) benchCase {
		var pid string
		return benchCase{name: name, ref: "runc exec", run: func(ctx context.Context) error {
			p, err := d.client.StartProcess(ctx, sb.ID, req)
			if err != nil {
				return err
			}
			pid = p.ID
			res, err := d.client.WaitProcess(ctx, sb.ID, p.ID, api.WaitProcessRequest{})
			if err == nil && (!res.Met || res.Process.Status != api.ProcessExited || res.Process.ExitCode != 0) {
				err = fmt.Errorf("process %s: %+v", p.ID, res)
			}
			return err
		}, after: func(ctx context.Context) error {
			return d.client.RemoveProcess(ctx, sb.ID, pid)
		}}
	}
	cases := []benchCase{
		startAndWait("process argv true", api.StartProcessRequest{Argv: []string{"true"}}),
		startAndWait("process command true", api.StartProcessRequest{Command: "true"}),
		{name: "runc exec", run: func(context.Context) error {
			return runCommand("runc", "--root", b.runcRoot(), "exec", "bench-sleep-process", "/bin/true")
		}},
	}
	fmt.Printf("process: start `true` and wait for its exit; %d warm-ups, then %d measured runs of each, interleaved in random order\n", warmups, n)
	samples, err := timeCases(ctx, cases, warmups, n)
	if err != nil {
		return err
	}
	printTable(cases, samples)
	fmt.Printf("process argv ÷ runc exec: %.3f; process command ÷ runc exec: %.3f\n",
		medianRatio(samples, "process argv true", "runc exec"), medianRatio(samples, "process command true", "runc exec"))
	// The same start in a sandbox idle a second, as a platform's agent starts one now and then:
	// what the kernel and the agent keep warm between starts is gone (session 23: a start
	// waited for an RCU grace period when nothing else had moved a process between cgroups
	// within the last one).
	argv := startAndWait("", api.StartProcessRequest{Argv: []string{"true"}})
	var idle []time.Duration
	for range 10 {
		time.Sleep(time.Second)
		start := time.Now()
		if err := argv.run(ctx); err != nil {
			return err
		}
		idle = append(idle, time.Since(start))
		if err := argv.after(ctx); err != nil {
			return err
		}
	}
	fmt.Printf("process argv true after 1 s idle: %s ms (median of %d)\n\n", ms(median(idle)), len(idle))
	return nil
}
