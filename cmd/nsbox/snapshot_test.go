package main

import (
	"context"
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/nsbox/nsbox/api"
	"github.com/nsbox/nsbox/client"
)

// snapshotSetup gives a sandbox of the host image files of every kind a writable layer
// holds: a new file, an executable (not setuid), a symlink, a deleted image entry (a
// whiteout: /mnt), a replaced image directory (opaque: /var, whose image has subdirectories),
// and a session with a cwd and an export.
const snapshotSetup = `echo from-source > /root/data.txt
mkdir -p /opt/app && printf '#!/bin/sh\necho tool-ran\n' > /opt/app/tool && chmod 755 /opt/app/tool
ln -s /opt/app/tool /root/link
rmdir /mnt
rm -rf /var && mkdir -p /var/only && echo o > /var/only/f
cd /opt/app && export MARK=forked-state`

// snapshotCheck reads back what snapshotSetup made, in the default session.
const snapshotCheck = `pwd; echo "$MARK $FROM_CREATE"; cat /root/data.txt; /root/link; ls -l /opt/app/tool | cut -c1-10
test -e /mnt && echo mnt-exists || echo mnt-gone; echo var: $(ls /var)`

// checkFromSnapshot fails unless sandbox id shows the source's files and session state.
func (d *testDaemon) checkFromSnapshot(id string) {
	d.t.Helper()
	out := d.sh(id, snapshotCheck)
	want := "/opt/app\nforked-state yes\nfrom-source\ntool-ran\n-rwxr-xr-x\nmnt-gone\nvar: only\n"
	if out != want {
		d.t.Errorf("sandbox %s from the snapshot: got %q, want %q", id, out, want)
	}
}

// TestSnapshotFork is the scenario: a sandbox with files and a session's state is
// snapshotted and forked 10 times; each fork shows the source's files and session state with
// its own address, and is independent afterwards; a create from the snapshot does too; a
// snapshot in use cannot be removed; snapshots survive a daemon kill -9 and the removal of
// their source; removed, their layers go.
func TestSnapshotFork(t *testing.T) {
	d := startDaemon(t)
	ctx := context.Background()
	src := d.create(api.CreateSandboxRequest{ID: "src", Env: map[string]string{"FROM_CREATE": "yes"},
		Labels: map[string]string{"team": "a"}, Limits: api.Limits{MemoryMB: 300, Pids: 500}})
	d.sh("src", snapshotSetup)

	out, errOut, code := d.cli("", "snapshot", "--name", "base", "src")
	if code != 0 {
		t.Fatalf("nsbox snapshot: %q %d", errOut, code)
	}
	snapID := strings.TrimSpace(out)
	snap, err := d.client.GetSnapshot(ctx, snapID)
	if err != nil {
		t.Fatal(err)
	}
	if snap.Sandbox != "src" || snap.Name != "base" || snap.Image != "host" || snap.SizeBytes <= 0 || snap.Sessions != 1 {
		t.Errorf("snapshot: %+v", snap)
	}
	if got, err := d.client.GetSandbox(ctx, "src"); err != nil || got.Status != api.StatusRunning {
		t.Errorf("source after its snapshot: %+v %v", got, err)
	}

	d.expectError("POST", "/v1/sandboxes/src/fork", api.ForkRequest{Count: api.MaxFork + 1}, 400, api.CodeInvalidArgument)
	fork, err := d.client.ForkSandbox(ctx, "src", api.ForkRequest{Count: 10, Prefix: "f"})
	if err != nil {
		t.Fatal(err)
	}
	if len(fork.Sandboxes) != 10 || fork.Snapshot.Sandbox != "src" {
		t.Fatalf("fork: %d sandboxes, snapshot %+v", len(fork.Sandboxes), fork.Snapshot)
	}
	ips := map[string]string{src.Network.IP: "src"}
	for i, sb := range fork.Sandboxes {
		if want := fmt.Sprintf("f-%d", i+1); sb.ID != want {
			t.Errorf("fork %d is %s, want %s", i, sb.ID, want)
		}
		if sb.Status != api.StatusRunning || sb.FromSnapshot != fork.Snapshot.ID || sb.Env["FROM_CREATE"] != "yes" || sb.Labels["team"] != "a" ||
			sb.Limits.MemoryMB != 300 || sb.Limits.Pids != 500 {
			t.Errorf("fork %s: %+v", sb.ID, sb)
		}
		if other, taken := ips[sb.Network.IP]; taken || sb.Network.IP == "" {
			t.Errorf("fork %s has address %q, as %s does", sb.ID, sb.Network.IP, other)
		}
		ips[sb.Network.IP] = sb.ID
		d.checkFromSnapshot(sb.ID)
	}
	// Independent: a write in one fork is in no other sandbox, nor one in the source in a fork.
	d.sh("f-1", "echo mine > /root/own")
	d.sh("src", "echo later > /root/later")
	for _, id := range []string{"src", "f-2", "f-10"} {
		if out := d.sh(id, "test -e /root/own && echo present || echo absent"); out != "absent\n" {
			t.Errorf("f-1's write shows in %s", id)
		}
	}
	if out := d.sh("f-1", "test -e /root/later && echo present || echo absent"); out != "absent\n" {
		t.Error("the source's later write shows in f-1")
	}

	out, errOut, code = d.cli("", "create", "--from-snapshot", snapID, "--id", "fs", "--label", "team=b")
	if code != 0 || out != "fs\n" {
		t.Fatalf("nsbox create --from-snapshot: %q %q %d", out, errOut, code)
	}
	if got, err := d.client.GetSandbox(ctx, "fs"); err != nil || got.Labels["team"] != "b" || got.Env["FROM_CREATE"] != "yes" || got.FromSnapshot != snapID {
		t.Errorf("create from snapshot: %+v %v", got, err)
	}
	d.checkFromSnapshot("fs")
	d.expectError("POST", "/v1/sandboxes", api.CreateSandboxRequest{FromSnapshot: snapID, Image: "busybox"}, 400, api.CodeInvalidArgument)
	d.expectError("POST", "/v1/sandboxes", api.CreateSandboxRequest{FromSnapshot: "snap-000000000000"}, 404, api.CodeNotFound)

	if e := d.expectError("DELETE", "/v1/snapshots/"+fork.Snapshot.ID, nil, 409, api.CodeConflict); !strings.Contains(e.Message, "f-10") {
		t.Errorf("delete of a snapshot in use: %q does not name its sandboxes", e.Message)
	}
	if _, errOut, code := d.cli("", "snapshot", "rm", snapID); code == 0 || !strings.Contains(errOut, "fs") {
		t.Errorf("nsbox snapshot rm of a snapshot in use: %q %d", errOut, code)
	}

	d.kill9()
	d.start()
	if out, _, code := d.cli("", "snapshot", "ls", "-q"); code != 0 || out != snapID+"\n"+fork.Snapshot.ID+"\n" {
		t.Errorf("snapshots after a daemon kill -9: %q %d", out, code)
	}
	// Removing the source keeps its snapshots usable.
	if err := d.client.RemoveSandbox(ctx, "src", client.RemoveOptions{Force: true}); err != nil {
		t.Fatal(err)
	}
	d.create(api.CreateSandboxRequest{ID: "fs2", FromSnapshot: snapID})
	d.checkFromSnapshot("fs2")

	// A paused sandbox is snapshotted as it is, and stays paused; a hibernated one is refused.
	if _, err := d.client.PauseSandbox(ctx, "fs2"); err != nil {
		t.Fatal(err)
	}
	chained, err := d.client.CreateSnapshot(ctx, "fs2", api.CreateSnapshotRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if got, err := d.client.GetSandbox(ctx, "fs2"); err != nil || got.Status != api.StatusPaused {
		t.Errorf("after the snapshot of a paused sandbox: %+v %v", got, err)
	}
	d.sh("fs2", "echo on-top > /root/top") // wakes it; not in the snapshot taken before
	d.create(api.CreateSandboxRequest{ID: "chained", FromSnapshot: chained.ID})
	d.checkFromSnapshot("chained")
	if out := d.sh("chained", "test -e /root/top && echo present || echo absent"); out != "absent\n" {
		t.Error("a write after the snapshot shows in a sandbox made from it")
	}
	if _, err := d.client.HibernateSandbox(ctx, "chained", api.HibernateRequest{}); err != nil {
		t.Fatal(err)
	}
	if e := d.expectError("POST", "/v1/sandboxes/chained/snapshots", nil, 409, api.CodeConflict); !strings.Contains(e.Message, "hibernated") {
		t.Errorf("snapshot of a hibernated sandbox: %q does not name the state", e.Message)
	}
	d.checkFromSnapshot("chained") // a sandbox made from a snapshot resumes on its layers

	// Once their sandboxes are gone, snapshots can be removed, and their layers go.
	for _, sb := range append(fork.Sandboxes, api.Sandbox{ID: "fs"}, api.Sandbox{ID: "fs2"}, api.Sandbox{ID: "chained"}) {
		if err := d.client.RemoveSandbox(ctx, sb.ID, client.RemoveOptions{Force: true}); err != nil {
			t.Fatal(err)
		}
	}
	for _, id := range []string{fork.Snapshot.ID, snapID, chained.ID} {
		if err := d.client.DeleteSnapshot(ctx, id); err != nil {
			t.Fatalf("delete snapshot %s: %v", id, err)
		}
	}
	d.expectError("GET", "/v1/snapshots/"+snapID, nil, 404, api.CodeNotFound)
	if left, _ := os.ReadDir(filepath.Join(d.dataDir, "images", "layers", "sha256")); len(left) != 0 {
		t.Errorf("layers left after every snapshot was removed: %v", left)
	}
}

// busyFiles is how many files busyWriter keeps in step.
const busyFiles = 40

// busyWriter rewrites /root/s/f01 … f40 in place, in that order and as fast as it can (shell
// builtins only), each with the loop's count: at any moment they read i+1 down to some file,
// i after it, and the file being written may be empty.
var busyWriter = func() string {
	var files []string
	for k := 1; k <= busyFiles; k++ {
		files = append(files, fmt.Sprintf("/root/s/f%02d", k))
	}
	return "mkdir -p /root/s; i=0; while :; do i=$((i+1)); for f in " + strings.Join(files, " ") + "; do echo $i > $f; done; done"
}()

// TestSnapshotOfBusySandbox snapshots a sandbox while a process in it writes without pause,
// and checks that each snapshot's layer is one moment of it: the writer's files in step (a
// copy made while the sandbox runs, and only its changes copied frozen, must not mix
// moments), no older than what the writer had written before the snapshot, and the writer
// still running after them.
func TestSnapshotOfBusySandbox(t *testing.T) {
	d := startDaemon(t)
	ctx := context.Background()
	d.create(api.CreateSandboxRequest{ID: "busy"})
	d.sh("busy", "mkdir -p /root/bulk && for i in $(seq 200); do head -c 4096 /dev/urandom > /root/bulk/f$i; done")
	if _, err := d.client.StartProcess(ctx, "busy", api.StartProcessRequest{ID: "writer", Command: busyWriter}); err != nil {
		t.Fatal(err)
	}
	last := 0
	for range 5 {
		d.sh("busy", fmt.Sprintf("until [ \"$(cat /root/s/f%02d 2>/dev/null)\" -gt %d ] 2>/dev/null; do sleep 0.01; done", busyFiles, last))
		snap, err := d.client.CreateSnapshot(ctx, "busy", api.CreateSnapshotRequest{})
		if err != nil {
			t.Fatal(err)
		}
		layer := filepath.Join(d.dataDir, "images", "layers", "sha256", strings.TrimPrefix(snap.Layer, "sha256:"), "root")
		var values []int
		partial := 0
		for k := 1; k <= busyFiles; k++ {
			data, err := os.ReadFile(filepath.Join(layer, "s", fmt.Sprintf("f%02d", k)))
			if err != nil {
				t.Fatal(err)
			}
			var v int
			if len(data) == 0 {
				partial++
				continue
			}
			if _, err := fmt.Sscanf(string(data), "%d", &v); err != nil {
				t.Fatalf("snapshot %s: f%02d holds %q", snap.ID, k, data)
			}
			values = append(values, v)
		}
		inStep := partial <= 1 && slices.IsSortedFunc(values, func(a, b int) int { return b - a }) && values[0]-values[len(values)-1] <= 1
		if !inStep {
			t.Errorf("snapshot %s is not one moment: the writer's files hold %v (%d empty)", snap.ID, values, partial)
		}
		if low := values[len(values)-1]; low <= last {
			t.Errorf("snapshot %s is older than the writer's progress before it: %d, %d before", snap.ID, low, last)
		}
		last = values[0]
		if bulk, err := os.ReadDir(filepath.Join(layer, "bulk")); err != nil || len(bulk) != 200 {
			t.Errorf("snapshot %s: %d bulk files (%v), want 200", snap.ID, len(bulk), err)
		}
		if err := d.client.DeleteSnapshot(ctx, snap.ID); err != nil {
			t.Fatal(err)
		}
	}
	p, err := d.client.GetProcess(ctx, "busy", "writer")
	if err != nil || p.Status != api.ProcessRunning {
		t.Errorf("the writer after the snapshots: %+v %v", p, err)
	}
	for _, line := range strings.Split(d.log.String(), "\n") {
		if strings.Contains(line, "snapshot taken") {
			t.Log(line) // how long each froze the sandbox (for reading with -v; make bench measures it)
		}
	}
}

// mappedWriter writes a counter through a shared writable mapping of /root/m and then, with
// pwrite, to /root/n, without pause: at any moment m holds n or n+1. Once its page is dirty,
// the kernel does not stamp m's times for the writes that follow.
const mappedWriter = `import mmap, os, struct
fd = os.open('/root/m', os.O_RDWR | os.O_CREAT, 0o644)
os.ftruncate(fd, 4096)
m = mmap.mmap(fd, 4096, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
n = os.open('/root/n', os.O_RDWR | os.O_CREAT, 0o644)
i = 0
while True:
    i += 1
    v = struct.pack('<Q', i)
    m[0:8] = v
    os.pwrite(n, v, 0)
`

// TestSnapshotOfMappedFile snapshots a sandbox whose process writes a file through a shared
// mapping: the snapshot must hold what the mapping held when it froze, not what a copy made
// while it ran read (the file's times do not change with such writes).
func TestSnapshotOfMappedFile(t *testing.T) {
	d := startDaemon(t)
	ctx := context.Background()
	d.create(api.CreateSandboxRequest{ID: "mapped"})
	if _, err := d.client.StartProcess(ctx, "mapped", api.StartProcessRequest{ID: "writer", Argv: []string{"python3", "-c", mappedWriter}}); err != nil {
		t.Fatal(err)
	}
	read := func(layer, name string) uint64 {
		t.Helper()
		data, err := os.ReadFile(filepath.Join(layer, "root", name))
		if err != nil || len(data) < 8 {
			t.Fatalf("%s: %d bytes, %v", name, len(data), err)
		}
		return binary.LittleEndian.Uint64(data)
	}
	var last uint64
	for range 3 {
		d.sh("mapped", fmt.Sprintf(`until [ "$(od -An -tu8 -N8 /root/n 2>/dev/null | tr -d ' ')" -gt %d ] 2>/dev/null; do sleep 0.01; done`, last+1000))
		snap, err := d.client.CreateSnapshot(ctx, "mapped", api.CreateSnapshotRequest{})
		if err != nil {
			t.Fatal(err)
		}
		layer := filepath.Join(d.dataDir, "images", "layers", "sha256", strings.TrimPrefix(snap.Layer, "sha256:"))
		m, n := read(layer, "m"), read(layer, "n")
		if m != n && m != n+1 {
			t.Errorf("snapshot %s is not one moment: the mapped file holds %d, the written one %d", snap.ID, m, n)
		}
		last = n
		if err := d.client.DeleteSnapshot(ctx, snap.ID); err != nil {
			t.Fatal(err)
		}
	}
}
