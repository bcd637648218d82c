package nsbox

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nsbox/nsbox/api"
)

// TestSnapshotsAndForks checks, on the fake backend, the snapshot's state rules (a paused
// sandbox stays frozen, a failed one is refused), that a sandbox made from a snapshot stacks
// its layer, inherits its settings and gets the sessions restored, that a snapshot in use is
// not removed, and that a fork that cannot make all its sandboxes leaves nothing behind.
func TestSnapshotsAndForks(t *testing.T) {
	c := newTestCore(t, 0)
	ctx := context.Background()
	c.create(api.CreateSandboxRequest{ID: "box", Env: map[string]string{"A": "1"}, Labels: map[string]string{"l": "x"},
		Limits: api.Limits{MemoryMB: 32}, Cwd: "/tmp"})
	s, _ := c.lookup("box")
	upper := filepath.Join(c.sandboxDataDir(s.snapshot().container()), "upper") // the real backend's overlay makes it
	if err := os.MkdirAll(upper, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(upper, "made"), []byte("in box"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Pause("box"); err != nil {
		t.Fatal(err)
	}
	snap, err := c.CreateSnapshot(ctx, "box", api.CreateSnapshotRequest{Name: "one"})
	if err != nil {
		t.Fatal(err)
	}
	inst := c.backend.get(s.snapshot().container())
	if sb, _ := c.Get("box"); sb.Status != api.StatusPaused || !inst.isFrozen() {
		t.Errorf("a paused sandbox after its snapshot: %s, frozen %v", sb.Status, inst.isFrozen())
	}
	if snap.Sessions != 1 || snap.Name != "one" || !strings.HasPrefix(snap.Layer, "sha256:") {
		t.Errorf("snapshot: %+v", snap)
	}
	if _, err := c.CreateSnapshot(ctx, "box", api.CreateSnapshotRequest{Name: "bad\nname"}); !api.IsCode(err, api.CodeInvalidArgument) {
		t.Errorf("a name with a newline: %v", err)
	}

	// A snapshot's name is not its id: the error says which id has that name.
	if _, err := c.Create(ctx, api.CreateSandboxRequest{ID: "byname", FromSnapshot: "one"}); !api.IsCode(err, api.CodeNotFound) || !strings.Contains(err.Error(), snap.ID) {
		t.Errorf("a create from the snapshot's name: %v; want not found, naming %s", err, snap.ID)
	}
	made := c.create(api.CreateSandboxRequest{ID: "copy", FromSnapshot: snap.ID, Labels: map[string]string{"l": "y"}})
	if made.Env["A"] != "1" || made.Labels["l"] != "y" || made.Limits.MemoryMB != 32 || made.Cwd != "/tmp" || made.FromSnapshot != snap.ID {
		t.Errorf("made from the snapshot: %+v", made)
	}
	ms, _ := c.lookup("copy")
	minst := c.backend.get(ms.snapshot().container())
	if layers := minst.spec.Layers; len(layers) < 2 || layers[0] != c.images.Layers().Dir(snap.Layer) {
		t.Errorf("its lowers %v do not start with the snapshot's layer", layers)
	}
	if data, err := os.ReadFile(filepath.Join(c.images.Layers().Dir(snap.Layer), "made")); err != nil || string(data) != "in box" {
		t.Errorf("the snapshot's layer: %q %v", data, err)
	}
	if len(minst.restored.Sessions) != 1 || minst.restored.Sessions[0].Script != "cd /tmp" {
		t.Errorf("restored in it: %+v", minst.restored)
	}
	if err := c.DeleteSnapshot(snap.ID); !api.IsCode(err, api.CodeConflict) || !strings.Contains(err.Error(), "copy") {
		t.Errorf("delete of a snapshot in use: %v", err)
	}

	// A fork whose second sandbox cannot be made (the id is taken) removes what it made.
	c.create(api.CreateSandboxRequest{ID: "f-2"})
	if _, err := c.Fork(ctx, "box", api.ForkRequest{Count: 3, Prefix: "f"}); !api.IsCode(err, api.CodeConflict) {
		t.Errorf("fork onto a taken id: %v", err)
	}
	for _, id := range []string{"f-1", "f-3"} {
		if left := c.leftovers(id); len(left) > 0 {
			t.Errorf("the failed fork left %s: %v", id, left)
		}
	}
	if list, _ := c.Snapshots(); len(list) != 1 {
		t.Errorf("the failed fork's snapshot is left: %+v", list)
	}
	for _, req := range []api.ForkRequest{{Count: api.MaxFork + 1}, {Count: -1}, {Prefix: "Bad"}} {
		if _, err := c.Fork(ctx, "box", req); !api.IsCode(err, api.CodeInvalidArgument) {
			t.Errorf("fork %+v: %v", req, err)
		}
	}
	res, err := c.Fork(ctx, "box", api.ForkRequest{})
	if err != nil || len(res.Sandboxes) != 1 || res.Sandboxes[0].FromSnapshot != res.Snapshot.ID {
		t.Fatalf("fork of 1 by default: %+v %v", res, err)
	}

	// A failed sandbox cannot be snapshotted.
	inst.exit()
	for deadline := 0; deadline < 1000; deadline++ {
		if sb, _ := c.Get("box"); sb.Status == api.StatusFailed {
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	if _, err := c.CreateSnapshot(ctx, "box", api.CreateSnapshotRequest{}); !api.IsCode(err, api.CodeConflict) || !strings.Contains(err.Error(), "failed") {
		t.Errorf("snapshot of a failed sandbox: %v", err)
	}

	for _, id := range []string{"copy", res.Sandboxes[0].ID} {
		if err := c.Remove(id, true); err != nil {
			t.Fatal(err)
		}
	}
	for _, id := range []string{snap.ID, res.Snapshot.ID} {
		if err := c.DeleteSnapshot(id); err != nil {
			t.Fatal(err)
		}
	}
	if c.images.Layers().Has(snap.Layer) {
		t.Error("the removed snapshots' layer is still stored")
	}
	if err := c.DeleteSnapshot(snap.ID); !api.IsCode(err, api.CodeNotFound) {
		t.Errorf("delete of a removed snapshot: %v", err)
	}
}
