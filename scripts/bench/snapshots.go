package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/nsbox/nsbox/api"
	"github.com/nsbox/nsbox/client"
)

// snapshotFiles and snapshotFileKB are the writable layer the snapshots section forks: that
// many files of random bytes.
const (
	snapshotFiles  = 1000
	snapshotFileKB = 16
)

// snapshotsMaxRuns bounds the measured runs of the snapshots section: a fork of 10 makes and
// removes 10 sandboxes each time.
const snapshotsMaxRuns = 10

// snapshotsSection times a snapshot of a busybox sandbox with a session and a 16 MiB writable
// layer, forks of 1 and 10 sandboxes from it, against `cp -a` of its upper dir; and a create
// from a snapshot against a plain create.
func (b *bench) snapshotsSection(ctx context.Context, n int) (err error) {
	n = min(n, snapshotsMaxRuns)
	d, err := b.daemon(ctx, "nsbox", true, "")
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, d.removeAllSandboxes()) }()
	src, err := d.client.CreateSandbox(ctx, api.CreateSandboxRequest{Image: image})
	if err != nil {
		return fmt.Errorf("create sandbox: %w", err)
	}
	fill := fmt.Sprintf("mkdir /root/data && i=0; while [ $i -lt %d ]; do head -c %d /dev/urandom > /root/data/f$i; i=$((i+1)); done; cd /root && export MARK=1",
		snapshotFiles, snapshotFileKB<<10)
	if _, err := execOK(ctx, d, src.ID, api.ExecRequest{Command: fill}); err != nil {
		return err
	}
	upper, err := upperOf(d)
	if err != nil {
		return err
	}
	copyDir := filepath.Join(b.tmpDir, "upper-copy")
	base, err := d.client.CreateSnapshot(ctx, src.ID, api.CreateSnapshotRequest{})
	if err != nil {
		return fmt.Errorf("snapshot: %w", err)
	}
	var made *api.ForkResult // what the last fork made, for its after
	fork := func(count int) func(context.Context) error {
		return func(ctx context.Context) (err error) {
			made, err = d.client.ForkSandbox(ctx, src.ID, api.ForkRequest{Count: count})
			return err
		}
	}
	unfork := func(ctx context.Context) error {
		var errs []error
		for _, sb := range made.Sandboxes {
			errs = append(errs, d.client.RemoveSandbox(ctx, sb.ID, client.RemoveOptions{Force: true}))
		}
		return errors.Join(append(errs, d.client.DeleteSnapshot(ctx, made.Snapshot.ID))...)
	}
	var snap *api.Snapshot
	var created *api.Sandbox
	removeCreated := func(ctx context.Context) error {
		return d.client.RemoveSandbox(ctx, created.ID, client.RemoveOptions{Force: true})
	}
	cases := []benchCase{
		{name: "snapshot", ref: "cp -a of the upper dir", run: func(ctx context.Context) (err error) {
			snap, err = d.client.CreateSnapshot(ctx, src.ID, api.CreateSnapshotRequest{})
			return err
		}, after: func(ctx context.Context) error { return d.client.DeleteSnapshot(ctx, snap.ID) }},
		{name: "fork of 1", ref: "cp -a of the upper dir", run: fork(1), after: unfork},
		{name: "fork of 10", ref: "cp -a of the upper dir", run: fork(10), after: unfork},
		{name: "cp -a of the upper dir", run: func(context.Context) error { return runCommand("cp", "-a", upper, copyDir) },
			after: func(context.Context) error { return os.RemoveAll(copyDir) }},
		{name: "create from a snapshot", ref: "create (busybox)", run: func(ctx context.Context) (err error) {
			created, err = d.client.CreateSandbox(ctx, api.CreateSandboxRequest{FromSnapshot: base.ID})
			return err
		}, after: removeCreated},
		{name: "create (busybox)", run: func(ctx context.Context) (err error) {
			created, err = d.client.CreateSandbox(ctx, api.CreateSandboxRequest{Image: image})
			return err
		}, after: removeCreated},
	}
	fmt.Printf("snapshots: a busybox sandbox with one session and %d files of %d KiB in its writable layer; %d warm-ups, then %d measured runs of each, interleaved in random order\n",
		snapshotFiles, snapshotFileKB, warmups, n)
	samples, err := timeCases(ctx, cases, warmups, n)
	if err != nil {
		return err
	}
	printTable(cases, samples)
	fmt.Printf("snapshot layer: %d bytes (tar stream)\n\n", base.SizeBytes)
	return d.client.DeleteSnapshot(ctx, base.ID)
}

// upperOf finds the upper dir of the daemon's one sandbox: on its disk, or in its data dir
// when it has none.
func upperOf(d *daemon) (string, error) {
	for _, pattern := range []string{filepath.Join(d.runDir, "sandboxes", "*", "disk", "upper"), filepath.Join(d.dataDir, "sandboxes", "*", "upper")} {
		if found, _ := filepath.Glob(pattern); len(found) == 1 {
			return found[0], nil
		}
	}
	return "", errors.New("found no single sandbox upper dir")
}
