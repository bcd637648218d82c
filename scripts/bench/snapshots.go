package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

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
// layer, forks of 1 and 10 sandboxes from it, against `cp -a` of its upper dir; a snapshot
// of a sandbox whose process rewrites 40 files without pause; and a create from a snapshot
// against a plain create. It shows how long each snapshot froze its sandbox, watching the
// sandbox's freezer cgroup.
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
	var snap *api.Snapshot
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
	// A second sandbox (3.2 MiB of files) whose process rewrites 40 files without pause while
	// it is snapshotted.
	busy, err := d.client.CreateSandbox(ctx, api.CreateSandboxRequest{Image: image})
	if err != nil {
		return fmt.Errorf("create sandbox: %w", err)
	}
	if _, err := execOK(ctx, d, busy.ID, api.ExecRequest{Command: fmt.Sprintf(
		"mkdir /root/data /root/s && i=0; while [ $i -lt %d ]; do head -c %d /dev/urandom > /root/data/f$i; i=$((i+1)); done", snapshotFiles/5, snapshotFileKB<<10)}); err != nil {
		return err
	}
	// The writer runs only while its case does (before, after): the other cases run on a
	// machine it does not load.
	writer := "i=0; while :; do i=$((i+1)); for k in $(seq 40); do echo $i > /root/s/f$k; done; done"
	startWriter := func(ctx context.Context) error {
		_, err := d.client.StartProcess(ctx, busy.ID, api.StartProcessRequest{ID: "writer", Command: writer})
		return err
	}
	stopWriter := func(ctx context.Context) error {
		_, err := d.client.KillProcess(ctx, busy.ID, "writer", api.KillProcessRequest{Signal: "KILL"})
		if err == nil {
			_, err = d.client.WaitProcess(ctx, busy.ID, "writer", api.WaitProcessRequest{})
		}
		return errors.Join(err, d.client.RemoveProcess(ctx, busy.ID, "writer"))
	}
	frozen := map[string][]time.Duration{}
	freezers := map[string]*handFreezer{}
	for _, id := range []string{src.ID, busy.ID} {
		freezers[id] = &handFreezer{}
		if err := freezers[id].locate(ctx, d, id); err != nil {
			return err
		}
	}
	// snapshotOf snapshots a sandbox, watching its freezer cgroup for how long it is frozen.
	snapshotOf := func(id, name string) func(context.Context) error {
		return func(ctx context.Context) error {
			stop := freezers[id].watch()
			var err error
			snap, err = d.client.CreateSnapshot(ctx, id, api.CreateSnapshotRequest{})
			took, werr := stop()
			frozen[name] = append(frozen[name], took)
			return errors.Join(err, werr)
		}
	}
	var created *api.Sandbox
	deleteSnap := func(ctx context.Context) error { return d.client.DeleteSnapshot(ctx, snap.ID) }
	removeCreated := func(ctx context.Context) error {
		return d.client.RemoveSandbox(ctx, created.ID, client.RemoveOptions{Force: true})
	}
	cases := []benchCase{
		{name: "snapshot", ref: "cp -a of the upper dir", run: snapshotOf(src.ID, "snapshot"), after: deleteSnap},
		{name: "snapshot, a writer running", ref: "snapshot", before: startWriter, run: snapshotOf(busy.ID, "snapshot, a writer running"),
			after: func(ctx context.Context) error { return errors.Join(stopWriter(ctx), deleteSnap(ctx)) }},
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
	for _, name := range []string{"snapshot", "snapshot, a writer running"} {
		s := summarize(frozen[name][warmups:])
		fmt.Printf("%s: the sandbox frozen (its freezer cgroup watched) median %s ms, min %s, max %s\n", name, ms(s.median), ms(s.min), ms(s.max))
	}
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
