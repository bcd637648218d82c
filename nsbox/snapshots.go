package nsbox

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode"

	"golang.org/x/sys/unix"

	"github.com/nsbox/nsbox/api"
	"github.com/nsbox/nsbox/api/httpapi"
	"github.com/nsbox/nsbox/nsbox/backend"
	"github.com/nsbox/nsbox/rootfs"
)

// Snapshots and forks. A snapshot is a sandbox's writable layer (its overlay upper dir) at
// one moment, stored as an immutable layer in the layer store the OCI images use (by the
// digest of its tar stream, so equal snapshots share one layer), with the state of its
// sessions (the agent's, as hibernation saves it) and what a sandbox made from it inherits:
// image, env, labels, limits, cwd, user and network policy. Its record is in bbolt.
//
// Taking one: the agent saves the sessions' state; the upper dir is copied into a new
// directory of the layer store in the layers' form (owners shifted back to the sandbox's own
// ids, so that the layer can be id-mapped for any sandbox) while the sandbox runs; then the
// sandbox is frozen (cgroup freezer) only while a second pass copies what changed since and
// removes what went (rootfs.LayerCopy), and thawed; the layer is then hashed (the digest of
// its tar stream, ExportLayer) and flushed to disk. A paused sandbox is thawed only for the
// agent's save, and one pass copies its files.
//
// A sandbox made from a snapshot stacks overlay(lower = the snapshot's layers + its image's
// layers, upper = its own new writable layer on its own disk), gets its own network, and its
// agent restores the saved sessions. A snapshot of such a sandbox adds its layer over the
// ones it came from, so snapshots chain without copying. A fork is a snapshot plus count
// creates from it. A snapshot cannot be removed while a sandbox made from it exists (or is
// being made); removing a sandbox keeps its snapshots; a removed snapshot's layers go unless
// another snapshot or an image has them.

// snapshotRecord is what the daemon keeps about a snapshot.
type snapshotRecord struct {
	api.Snapshot
	// Layers are the digests of its layers, topmost (its own) first: the layers of the
	// snapshot its sandbox was made from follow.
	Layers  []string          `json:"layers"`
	ImageID string            `json:"imageId,omitempty"` // OCI image id; "" for built-in images
	Env     map[string]string `json:"env,omitempty"`
	Labels  map[string]string `json:"labels,omitempty"`
	Limits  api.Limits        `json:"limits"`
	Cwd     string            `json:"cwd"`
	User    string            `json:"user,omitempty"`
	Network api.NetworkSpec   `json:"network"`
	// State is the sessions' saved state.
	State api.SandboxState `json:"state"`
}

// snapshotUse guards the use of snapshots: a create from one marks it used until its record
// names it (or the create failed), and a removal checks under it that no sandbox uses it.
type snapshotUse struct {
	mu       sync.Mutex
	creating map[string]int // creates from the snapshot at work, by snapshot id
}

// maxSnapshotName bounds a snapshot's name.
const maxSnapshotName = 128

// forkParallel is how many of a fork's sandboxes are made at once.
const forkParallel = 4

// CreateSnapshot takes a snapshot of a running or paused sandbox.
func (r *Runtime) CreateSnapshot(ctx context.Context, id string, req api.CreateSnapshotRequest) (*api.Snapshot, error) {
	if err := checkSnapshotName(req.Name); err != nil {
		return nil, err
	}
	sb, err := r.lookup(id)
	if err != nil {
		return nil, err
	}
	sb.mu.Lock()
	defer sb.mu.Unlock()
	snap, err := r.snapshotSandbox(ctx, sb, req.Name)
	if err != nil {
		return nil, err
	}
	return &snap.Snapshot, nil
}

func checkSnapshotName(name string) error {
	if len(name) > maxSnapshotName || strings.IndexFunc(name, unicode.IsControl) >= 0 {
		return api.Errorf(api.CodeInvalidArgument, "snapshot name must be at most %d characters without control characters", maxSnapshotName)
	}
	return nil
}

// snapshotSandbox takes and records a snapshot of sb (see the top of this file). sb.mu must
// be held.
func (r *Runtime) snapshotSandbox(ctx context.Context, sb *sandbox, name string) (*snapshotRecord, error) {
	paused := sb.rec.Status == api.StatusPaused
	if sb.rec.Status != api.StatusRunning && !paused {
		return nil, stateError(sb.id, sb.rec.Status, "only a running or paused sandbox can be snapshotted")
	}
	began := time.Now()
	rec, inst := sb.rec, sb.inst
	if paused { // its agent must answer
		if err := inst.Thaw(); err != nil {
			return nil, fmt.Errorf("snapshot sandbox %s: thaw it for its agent: %w", sb.id, err)
		}
	}
	st, err := sb.agent.saveState(ctx, api.SaveStateRequest{Sessions: true})
	if err != nil {
		if paused {
			err = errors.Join(err, inst.Freeze())
		}
		return nil, fmt.Errorf("snapshot sandbox %s: save its sessions' state: %w", sb.id, err)
	}
	if paused { // paused again: one pass copies its files
		if err := inst.Freeze(); err != nil {
			return nil, fmt.Errorf("snapshot sandbox %s: %w", sb.id, err)
		}
	}
	upper := filepath.Join(r.layerDir(rec.container(), rec.Limits.DiskMB), "upper")
	ids := inst.IDs()
	maxBytes := rec.Limits.DiskMB << 20 // 0: no disk, no bound
	var frozenFor time.Duration
	var first, last rootfs.CopyStats
	fill := func(dir string) error {
		cp, err := rootfs.NewLayerCopy(dir, upper, ids, maxBytes)
		if err != nil {
			return err
		}
		defer cp.Close()
		if !paused { // a first pass while it runs, then it is frozen for the second
			if first, err = cp.Pass(ctx, false); err != nil {
				return err
			}
		}
		frozen := time.Now()
		if !paused {
			if err := inst.Freeze(); err != nil {
				return errors.Join(err, inst.Thaw())
			}
			mapped, err := mappedForWrite(inst)
			if err != nil {
				return errors.Join(err, inst.Thaw())
			}
			cp.Forget(mapped...)
		}
		last, err = cp.Pass(ctx, true)
		if !paused {
			if terr := inst.Thaw(); terr != nil {
				err = errors.Join(err, fmt.Errorf("thaw it: %w", terr))
			}
		}
		frozenFor = time.Since(frozen)
		return err
	}
	digest, size, err := r.images.Layers().AddDir(fill, func(dir string, w io.Writer) error {
		return rootfs.ExportLayer(w, dir, rootfs.IDMap{}, 0)
	})
	if errors.Is(err, rootfs.ErrLayerTooLarge) {
		return nil, api.Errorf(api.CodeConflict, "sandbox %q cannot be snapshotted: %v", sb.id, err)
	}
	if err != nil {
		return nil, fmt.Errorf("snapshot sandbox %s: %w", sb.id, err)
	}
	defer r.images.Layers().Release(digest) // recorded (or failed) by then
	snap := &snapshotRecord{
		Snapshot: api.Snapshot{ID: "snap-" + randomHex(6), Sandbox: sb.id, Name: name, Image: rec.Image, Layer: digest,
			SizeBytes: size, Sessions: len(st.Sessions), CreatedAt: time.Now().UTC().Truncate(time.Millisecond)},
		Layers:  append([]string{digest}, rec.SnapshotLayers...),
		ImageID: rec.ImageID, Env: rec.Env, Labels: rec.Labels, Limits: rec.Limits, Cwd: rec.Cwd, User: rec.User,
		Network: api.NetworkSpec{Mode: rec.Network.Mode, Allow: rec.Network.Allow},
		State:   api.SandboxState{Sessions: st.Sessions},
	}
	if err := r.records.PutSnapshot(snap); err != nil {
		return nil, fmt.Errorf("record snapshot of %s: %w", sb.id, err)
	}
	r.log.Info("snapshot taken", "sandbox", sb.id, "snapshot", snap.ID, "layer", digest, "bytes", size,
		"sessions", len(st.Sessions), "frozen", frozenFor, "entries", last.Entries, "copied", first.Copied, "copiedFrozen", last.Copied,
		"bytesFrozen", last.Bytes, "duration", time.Since(began))
	return snap, nil
}

// mappedForWrite lists the files the processes of a (frozen) container map shared and
// writable, as paths in its root: writes through such a mapping need not stamp the file's
// times (rootfs.LayerCopy), so a snapshot copies them again while frozen. A path named
// " (deleted)" by the kernel, or with a newline (shown as \012), is given both ways.
func mappedForWrite(inst backend.Instance) ([]string, error) {
	pids, err := inst.Processes()
	if err != nil {
		return nil, err
	}
	var out []string
	for _, pid := range pids {
		maps, err := os.ReadFile(fmt.Sprintf("/proc/%d/maps", pid))
		if errors.Is(err, fs.ErrNotExist) || errors.Is(err, unix.ESRCH) {
			continue // gone
		}
		if err != nil {
			return nil, fmt.Errorf("read the mappings of process %d: %w", pid, err)
		}
		for line := range strings.Lines(string(maps)) {
			f := strings.Fields(line)
			i := strings.IndexByte(line, '/')
			if len(f) < 6 || i < 0 || len(f[1]) < 4 || f[1][1] != 'w' || f[1][3] != 's' {
				continue
			}
			p := strings.TrimSuffix(line[i:], "\n")
			out = append(out, p)
			if q := strings.TrimSuffix(p, " (deleted)"); q != p {
				out = append(out, q)
			}
			if q := strings.ReplaceAll(p, `\012`, "\n"); q != p {
				out = append(out, q)
			}
		}
	}
	return out, nil
}

// Snapshots lists the snapshots, oldest first.
func (r *Runtime) Snapshots() ([]api.Snapshot, error) {
	recs, err := r.records.Snapshots()
	if err != nil {
		return nil, err
	}
	out := make([]api.Snapshot, 0, len(recs))
	for _, s := range recs {
		out = append(out, s.Snapshot)
	}
	slices.SortFunc(out, func(a, b api.Snapshot) int {
		if c := a.CreatedAt.Compare(b.CreatedAt); c != 0 {
			return c
		}
		return strings.Compare(a.ID, b.ID)
	})
	return out, nil
}

// Snapshot returns one snapshot.
func (r *Runtime) Snapshot(id string) (*api.Snapshot, error) {
	s, err := r.records.Snapshot(id)
	if err != nil {
		return nil, err
	}
	return &s.Snapshot, nil
}

// DeleteSnapshot removes a snapshot that no sandbox uses, and its layers that nothing else
// has.
func (r *Runtime) DeleteSnapshot(id string) error {
	r.snapUse.mu.Lock()
	if _, err := r.records.Snapshot(id); err != nil {
		r.snapUse.mu.Unlock()
		return err
	}
	var users []string
	for _, rec := range r.snapshots() {
		if rec.FromSnapshot == id && rec.exists() {
			users = append(users, rec.ID)
		}
	}
	switch {
	case len(users) > 0:
		r.snapUse.mu.Unlock()
		slices.Sort(users)
		return api.Errorf(api.CodeConflict, "snapshot %q is in use by sandboxes %s; remove them first", id, strings.Join(users, ", "))
	case r.snapUse.creating[id] > 0:
		r.snapUse.mu.Unlock()
		return api.Errorf(api.CodeConflict, "snapshot %q is in use by a create at work; try again when it has answered", id)
	}
	err := r.records.DeleteSnapshot(id)
	r.snapUse.mu.Unlock()
	if err != nil {
		return fmt.Errorf("remove snapshot %s: %w", id, err)
	}
	removed, err := r.images.OCI().GC()
	if err != nil {
		return fmt.Errorf("remove snapshot %s's layers: %w", id, err)
	}
	r.log.Info("snapshot removed", "snapshot", id, "layers", removed)
	return nil
}

// useSnapshot makes a create from a snapshot: req's image is the snapshot's, and what it
// leaves unset is the snapshot's. The snapshot counts as used until release.
func (r *Runtime) useSnapshot(req *api.CreateSandboxRequest) (*snapshotRecord, func(), error) {
	if req.Image != "" || req.Pull != "" {
		return nil, nil, api.Errorf(api.CodeInvalidArgument, "fromSnapshot takes the snapshot's image: give no image or pull")
	}
	r.snapUse.mu.Lock()
	defer r.snapUse.mu.Unlock()
	snap, err := r.records.Snapshot(req.FromSnapshot)
	if err != nil {
		return nil, nil, err
	}
	r.snapUse.creating[snap.ID]++
	release := func() {
		r.snapUse.mu.Lock()
		defer r.snapUse.mu.Unlock()
		if r.snapUse.creating[snap.ID]--; r.snapUse.creating[snap.ID] <= 0 {
			delete(r.snapUse.creating, snap.ID)
		}
	}
	req.Image = snap.Image
	if snap.ImageID != "" { // its name may have moved to another image since
		if info, err := r.images.OCI().Get(snap.Image); err != nil || info.ID != snap.ImageID {
			req.Image = snap.ImageID
		}
	}
	if req.Env == nil {
		req.Env = snap.Env
	}
	if req.Labels == nil {
		req.Labels = snap.Labels
	}
	lim := &req.Limits
	if lim.CPUs == 0 {
		lim.CPUs = snap.Limits.CPUs
	}
	if lim.MemoryMB == 0 {
		lim.MemoryMB = snap.Limits.MemoryMB
	}
	if lim.Pids == 0 {
		lim.Pids = snap.Limits.Pids
	}
	if lim.DiskMB == 0 {
		lim.DiskMB = snap.Limits.DiskMB
	}
	if req.Cwd == "" {
		req.Cwd = snap.Cwd
	}
	if req.User == "" {
		req.User = snap.User
	}
	if req.Network == nil {
		req.Network = &api.NetworkSpec{Mode: snap.Network.Mode, Allow: slices.Clone(snap.Network.Allow)}
	}
	return snap, release, nil
}

// Fork snapshots a running or paused sandbox and makes count sandboxes from the snapshot. If
// any of them cannot be made, those made are removed and the snapshot too.
func (r *Runtime) Fork(ctx context.Context, id string, req api.ForkRequest) (*api.ForkResult, error) {
	if req.Count == 0 {
		req.Count = 1
	}
	if req.Count < 1 || req.Count > api.MaxFork {
		return nil, api.Errorf(api.CodeInvalidArgument, "count must be between 1 and %d, got %d", api.MaxFork, req.Count)
	}
	ids := make([]string, req.Count)
	for i := range ids {
		ids[i] = newID()
		if req.Prefix != "" {
			ids[i] = req.Prefix + "-" + strconv.Itoa(i+1)
		}
		if !api.ValidSandboxID(ids[i]) {
			return nil, api.Errorf(api.CodeInvalidArgument, "prefix %q makes the invalid sandbox id %q: use a-z, 0-9 and '-', starting with a letter or digit, up to 63 characters in all", req.Prefix, ids[i])
		}
	}
	if err := checkSnapshotName(req.Name); err != nil {
		return nil, err
	}
	sb, err := r.lookup(id)
	if err != nil {
		return nil, err
	}
	sb.mu.Lock()
	snap, err := r.snapshotSandbox(ctx, sb, req.Name)
	sb.mu.Unlock()
	if err != nil {
		return nil, err
	}
	out := &api.ForkResult{Snapshot: snap.Snapshot, Sandboxes: make([]api.Sandbox, len(ids))}
	errs := make([]error, len(ids))
	var wg sync.WaitGroup
	slots := make(chan struct{}, forkParallel)
	for i, fid := range ids {
		wg.Add(1)
		go func() {
			defer wg.Done()
			slots <- struct{}{}
			defer func() { <-slots }()
			made, err := r.Create(ctx, api.CreateSandboxRequest{ID: fid, FromSnapshot: snap.ID})
			if err != nil {
				errs[i] = fmt.Errorf("fork %s: %w", fid, err)
				return
			}
			out.Sandboxes[i] = *made
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		var cleanup []error
		for i, made := range out.Sandboxes {
			if errs[i] == nil {
				cleanup = append(cleanup, r.Remove(made.ID, true))
			}
		}
		cleanup = append(cleanup, r.DeleteSnapshot(snap.ID))
		if cerr := errors.Join(cleanup...); cerr != nil {
			r.log.Error("clean up after a failed fork", "sandbox", id, "snapshot", snap.ID, "err", cerr)
		}
		return nil, err
	}
	r.log.Info("sandbox forked", "sandbox", id, "snapshot", snap.ID, "count", len(ids))
	return out, nil
}

func (r *Runtime) handleCreateSnapshot(w http.ResponseWriter, req *http.Request) error {
	var body api.CreateSnapshotRequest
	if err := httpapi.DecodeJSON(req, &body, true); err != nil {
		return err
	}
	snap, err := r.CreateSnapshot(req.Context(), req.PathValue("id"), body)
	if err != nil {
		return err
	}
	httpapi.WriteJSON(w, http.StatusCreated, snap)
	return nil
}

func (r *Runtime) handleListSnapshots(w http.ResponseWriter, _ *http.Request) error {
	list, err := r.Snapshots()
	if err != nil {
		return err
	}
	httpapi.WriteJSON(w, http.StatusOK, list)
	return nil
}

func (r *Runtime) handleGetSnapshot(w http.ResponseWriter, req *http.Request) error {
	snap, err := r.Snapshot(req.PathValue("id"))
	if err != nil {
		return err
	}
	httpapi.WriteJSON(w, http.StatusOK, snap)
	return nil
}

func (r *Runtime) handleDeleteSnapshot(w http.ResponseWriter, req *http.Request) error {
	if err := r.DeleteSnapshot(req.PathValue("id")); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

func (r *Runtime) handleFork(w http.ResponseWriter, req *http.Request) error {
	var body api.ForkRequest
	if err := httpapi.DecodeJSON(req, &body, true); err != nil {
		return err
	}
	res, err := r.Fork(req.Context(), req.PathValue("id"), body)
	if err != nil {
		return err
	}
	httpapi.WriteJSON(w, http.StatusCreated, res)
	return nil
}

// snapshotLayer tells the layer store's GC whether a snapshot has the layer; when the records
// cannot be read, every layer is kept.
func (r *Runtime) snapshotLayer(digest string) bool {
	snaps, err := r.records.Snapshots()
	if err != nil {
		r.log.Error("read snapshots for layer GC; keeping every layer", "err", err)
		return true
	}
	for _, s := range snaps {
		if slices.Contains(s.Layers, digest) {
			return true
		}
	}
	return false
}
