package nsbox

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/nsbox/nsbox/api"
	"github.com/nsbox/nsbox/nsbox/backend"
	"github.com/nsbox/nsbox/permfs"
	"github.com/nsbox/nsbox/rootfs"
)

// A sandbox's storage: its writable layers, its workspace and its bind mounts.
//
// Without limits.diskMB the writable layers (the root's upper/work dirs, and a copy-on-write
// workspace's under workspace/) live in <data>/sandboxes/<container>. With it they live on the
// sandbox's own disk: a sparse ext4 image <data>/sandboxes/<container>/disk.img on a loop device,
// mounted at <run>/sandboxes/<container>/disk for the sandbox's lifetime (diff and export read the
// workspace's upper dir there). A copy-on-write workspace is an overlay (lower = the host
// directory) mounted on the host only while the container starts, like the root.

const (
	// minDiskMB is the smallest disk: ext4's own metadata needs a few MiB.
	minDiskMB = 16
	// maxMounts bounds the bind mounts of one sandbox.
	maxMounts = 64
	// diskReleaseWait is how long removing a sandbox waits for its loop device to clear itself.
	diskReleaseWait = 10 * time.Second
)

// reservedTargets are paths inside a sandbox that a bind mount may not be, be under, or hide.
var reservedTargets = []string{"/proc", "/sys", "/dev", "/run/nsbox", "/.nsbox"}

func (r *Runtime) diskImage(id string) string { return filepath.Join(r.sandboxDataDir(id), "disk.img") }
func (r *Runtime) diskMount(id string) string { return filepath.Join(r.sandboxRunDir(id), "disk") }
func (r *Runtime) workspaceMount(id string) string {
	return filepath.Join(r.sandboxRunDir(id), "workspace")
}

// extrasSpec is what a container is made with beyond its image and limits: a disk, a
// workspace, bind mounts, extra capabilities. Containers in the warm pool have the default
// disk and nothing else (poolExtras).
type extrasSpec struct {
	DiskMB       int64
	Workspace    *api.Workspace
	Mounts       []api.Mount
	Capabilities []string
	// Permissions are the sandbox's rules (nil: no permission layers).
	Permissions []api.PermissionRule
	// SnapshotLayers are the digests of snapshot layers (topmost first) put over the image's
	// (snapshots.go).
	SnapshotLayers []string
}

// extrasOf is what a (validated) create request asks for beyond its image and limits.
func extrasOf(req *api.CreateSandboxRequest) extrasSpec {
	return extrasSpec{DiskMB: req.Limits.DiskMB, Workspace: req.Workspace, Mounts: req.Mounts, Capabilities: req.Capabilities, Permissions: req.Permissions}
}

// poolExtras is what the warm pool's containers are made with: the default disk and nothing
// else, so that a sandbox asking for no storage of its own can take one.
func (r *Runtime) poolExtras() extrasSpec {
	return extrasSpec{DiskMB: r.cfg.DefaultDiskMB}
}

// pooled reports whether a container made with s can come from the warm pool.
func (r *Runtime) pooled(s extrasSpec) bool {
	return s.DiskMB == r.cfg.DefaultDiskMB && s.Workspace == nil && len(s.Mounts) == 0 && len(s.Capabilities) == 0 &&
		len(s.SnapshotLayers) == 0
}

// layerDir is the directory that holds a container's writable layers.
// diskDirs are the directories of layerDir that every container needs, which a new disk's file
// system is made with (rootfs.MakeDisk): its overlay's upper and work dirs (MountOverlay makes
// them where they are missing) and its private store (preparePrivate).
var diskDirs = []rootfs.DiskDir{{Name: "upper", Mode: 0o755}, {Name: "work", Mode: 0o755}, {Name: "private", Mode: 0o700}}

func (r *Runtime) layerDir(container string, diskMB int64) string {
	if diskMB > 0 {
		return r.diskMount(container)
	}
	return r.sandboxDataDir(container)
}

// workspaceUpper is the upper dir of a sandbox's copy-on-write workspace.
func (r *Runtime) workspaceUpper(rec *record) string {
	return filepath.Join(r.layerDir(rec.container(), rec.Limits.DiskMB), "workspace", "upper")
}

// within reports whether p is dir or inside it.
func within(p, dir string) bool {
	return p == dir || dir == "/" || strings.HasPrefix(p, dir+"/")
}

// validateStorage checks and normalises a create request's workspace, mounts and disk limit.
func (r *Runtime) validateStorage(req *api.CreateSandboxRequest) error {
	if req.Limits.DiskMB == 0 {
		req.Limits.DiskMB = r.cfg.DefaultDiskMB
	}
	if req.Limits.DiskMB != 0 {
		maxMB, what, err := r.maxDiskMB()
		if err != nil {
			return err
		}
		if req.Limits.DiskMB < minDiskMB || req.Limits.DiskMB > maxMB {
			return api.Errorf(api.CodeInvalidArgument, "limits.diskMB must be between %d and %d (%s), got %d", minDiskMB, maxMB, what, req.Limits.DiskMB)
		}
	}
	if ws := req.Workspace; ws != nil {
		if ws.Mode == "" {
			ws.Mode = api.WorkspaceCOW
		}
		if ws.Mode != api.WorkspaceCOW && ws.Mode != api.WorkspaceRW {
			return api.Errorf(api.CodeInvalidArgument, "workspace.mode must be %q or %q, got %q", api.WorkspaceCOW, api.WorkspaceRW, ws.Mode)
		}
		p, fi, err := r.checkHostPath("workspace.hostPath", ws.HostPath)
		if err != nil {
			return err
		}
		if !fi.IsDir() {
			return api.Errorf(api.CodeInvalidArgument, "workspace.hostPath %q is not a directory", ws.HostPath)
		}
		if ws.Mode == api.WorkspaceCOW && strings.ContainsAny(p, ":,\\") {
			return api.Errorf(api.CodeInvalidArgument, "workspace.hostPath %q contains ':', ',' or '\\', which an overlay's lower dir cannot have; use mode rw or another directory", p)
		}
		ws.HostPath = p
		if cwd := filepath.Clean(req.Cwd); req.Cwd != "" && within(cwd, api.WorkspacePath) {
			if fi, err := os.Stat(filepath.Join(p, strings.TrimPrefix(cwd, api.WorkspacePath))); err != nil || !fi.IsDir() {
				return api.Errorf(api.CodeInvalidArgument, "cwd %s is in the workspace but %s has no such directory", cwd, p)
			}
		}
	}
	if len(req.Mounts) > maxMounts {
		return api.Errorf(api.CodeInvalidArgument, "at most %d mounts, got %d", maxMounts, len(req.Mounts))
	}
	targets := map[string]bool{}
	for i := range req.Mounts {
		m := &req.Mounts[i]
		src, _, err := r.checkHostPath(fmt.Sprintf("mounts[%d].source", i), m.Source)
		if err != nil {
			return err
		}
		m.Source = src
		if !filepath.IsAbs(m.Target) {
			return api.Errorf(api.CodeInvalidArgument, "mounts[%d].target must be an absolute path inside the sandbox, got %q", i, m.Target)
		}
		m.Target = filepath.Clean(m.Target)
		if m.Target == "/" {
			return api.Errorf(api.CodeInvalidArgument, "mounts[%d].target must not be / (the sandbox's root)", i)
		}
		for _, res := range reservedTargets {
			if within(m.Target, res) || within(res, m.Target) {
				return api.Errorf(api.CodeInvalidArgument, "mounts[%d].target %s is reserved: it is, is under or would hide %s", i, m.Target, res)
			}
		}
		if req.Workspace != nil && within(api.WorkspacePath, m.Target) {
			return api.Errorf(api.CodeInvalidArgument, "mounts[%d].target %s would hide the workspace at %s", i, m.Target, api.WorkspacePath)
		}
		if targets[m.Target] {
			return api.Errorf(api.CodeInvalidArgument, "mounts[%d].target %s is given twice", i, m.Target)
		}
		targets[m.Target] = true
	}
	if r.ids == nil {
		return nil
	}
	var writable []string
	if ws := req.Workspace; ws != nil && ws.Mode == api.WorkspaceRW {
		writable = append(writable, ws.HostPath)
	}
	for _, m := range req.Mounts {
		if !m.ReadOnly {
			writable = append(writable, m.Source)
		}
	}
	for _, p := range writable {
		if _, err := writableIDs(p); err != nil {
			return err
		}
	}
	return nil
}

// maxDiskMB is the largest disk a create may ask for, and what sets it: the daemon's
// --max-disk, or the size of the file system holding nsbox's data.
func (r *Runtime) maxDiskMB() (int64, string, error) {
	if r.cfg.MaxDiskMB > 0 {
		return r.cfg.MaxDiskMB, "the daemon's --max-disk", nil
	}
	var st unix.Statfs_t
	if err := unix.Statfs(r.cfg.DataDir, &st); err != nil {
		return 0, "", fmt.Errorf("statfs %s: %w", r.cfg.DataDir, err)
	}
	return int64(st.Blocks) * st.Bsize >> 20, "the size of the file system holding nsbox's data", nil
}

// checkDefaultDisk checks the daemon's default disk against the smallest and the largest.
func (r *Runtime) checkDefaultDisk() error {
	if r.cfg.DefaultDiskMB == 0 {
		return nil
	}
	maxMB, what, err := r.maxDiskMB()
	if err != nil {
		return err
	}
	if r.cfg.DefaultDiskMB < minDiskMB || r.cfg.DefaultDiskMB > maxMB {
		return fmt.Errorf("the default disk must be between %d and %d MB (%s), got %d", minDiskMB, maxMB, what, r.cfg.DefaultDiskMB)
	}
	return nil
}

// checkHostPath checks a host path a sandbox is to see: absolute, existing, not the host's
// root, and neither inside nor holding nsbox's own state. It returns the path with symlinks
// resolved (what is mounted).
func (r *Runtime) checkHostPath(field, p string) (string, fs.FileInfo, error) {
	if p == "" {
		return "", nil, api.Errorf(api.CodeInvalidArgument, "%s is required", field)
	}
	if !filepath.IsAbs(p) {
		return "", nil, api.Errorf(api.CodeInvalidArgument, "%s must be an absolute host path, got %q", field, p)
	}
	real, err := filepath.EvalSymlinks(p)
	if errors.Is(err, fs.ErrNotExist) {
		return "", nil, api.Errorf(api.CodeInvalidArgument, "%s %q does not exist on the host", field, p)
	}
	if err != nil {
		return "", nil, api.Errorf(api.CodeInvalidArgument, "%s %q: %v", field, p, err)
	}
	if real == "/" {
		return "", nil, api.Errorf(api.CodeInvalidArgument, "%s must not be the host's root directory /", field)
	}
	for _, dir := range []string{r.cfg.DataDir, r.cfg.RunDir} {
		state, err := filepath.EvalSymlinks(dir)
		if err != nil {
			state = dir
		}
		if within(real, state) || within(state, real) {
			return "", nil, api.Errorf(api.CodeInvalidArgument, "%s %q would expose nsbox's own state (%s); choose a path outside it", field, p, state)
		}
	}
	fi, err := os.Stat(real)
	if err != nil {
		return "", nil, api.Errorf(api.CodeInvalidArgument, "%s %q: %v", field, p, err)
	}
	return real, fi, nil
}

// prepareLayers makes the directory a container's writable layers go in: its disk, made (unless
// kept: it exists) and mounted, when it has a disk limit. It returns that directory.
func (r *Runtime) prepareLayers(id string, st extrasSpec, kept bool) (string, error) {
	if st.DiskMB > 0 {
		mounted := false
		if !kept {
			var err error
			if mounted, err = r.makeDisk(r.diskImage(id), r.diskMount(id), st.DiskMB); err != nil {
				return "", err
			}
		}
		if !mounted {
			if err := rootfs.MountDisk(r.diskImage(id), r.diskMount(id)); err != nil {
				return "", err
			}
		}
	}
	return r.layerDir(id, st.DiskMB), nil
}

// storageMounts mounts a copy-on-write workspace on the host (until detachWorkspace) and
// returns the container mounts of the workspace and the bind mounts, in that order. In a user
// namespace (ids) the copy-on-write workspace's overlay shows the sandbox's ids itself; a
// writable host directory is written as its owner (writableIDs).
func (r *Runtime) storageMounts(id string, st extrasSpec, ids rootfs.IDMap) ([]backend.Mount, error) {
	var out []backend.Mount
	if ws := st.Workspace; ws != nil {
		m := backend.Mount{Source: ws.HostPath, Target: api.WorkspacePath}
		if ws.Mode == api.WorkspaceCOW {
			m.Source, m.IDs.Native = r.workspaceMount(id), true
			dir := filepath.Join(r.layerDir(id, st.DiskMB), "workspace")
			if err := rootfs.MountOverlay([]string{ws.HostPath}, filepath.Join(dir, "upper"), filepath.Join(dir, "work"), m.Source, ids); err != nil {
				return nil, err
			}
		}
		if n := permRoot(st.Permissions, api.WorkspacePath); n >= 0 {
			// The layer shows the sandbox's ids itself: an overlay's are, a host directory's
			// the layer translates as an id-mapped mount would (writableIDs).
			l := permLayer{source: m.Source, at: api.WorkspacePath, shared: ws.Mode != api.WorkspaceCOW}
			if !m.IDs.Native && ids.Enabled() {
				wids, err := writableIDs(m.Source)
				if err != nil {
					return nil, err
				}
				l.ids = permfs.IDs{RootUID: wids.RootUID, RootGID: wids.RootGID, Host: ids.Host, Size: ids.Size}
			}
			var err error
			if m.Source, err = r.startPermFS(id, n, l, st.Permissions); err != nil {
				return nil, err
			}
			m.IDs = backend.MountIDs{Native: true}
		}
		out = append(out, m)
	}
	for _, m := range st.Mounts {
		out = append(out, backend.Mount{Source: m.Source, Target: m.Target, ReadOnly: m.ReadOnly})
	}
	for i := range out {
		if !out[i].ReadOnly && !out[i].IDs.Native && ids.Enabled() {
			var err error
			if out[i].IDs, err = writableIDs(out[i].Source); err != nil {
				return nil, err
			}
		}
	}
	return out, nil
}

// writableIDs is how a sandbox in a user namespace sees a writable host path: its root reads
// and writes it as the path's owner, so that nothing it writes there (a setuid program, say)
// belongs to the host's root. A path owned by the host's root (uid or gid 0) is refused.
func writableIDs(p string) (backend.MountIDs, error) {
	var st unix.Stat_t
	if err := unix.Stat(p, &st); err != nil {
		return backend.MountIDs{}, fmt.Errorf("stat %s: %w", p, err)
	}
	if st.Uid == 0 || st.Gid == 0 {
		return backend.MountIDs{}, api.Errorf(api.CodeInvalidArgument,
			"%s belongs to the host's root (%d:%d): with user namespaces a sandbox writes to a host path as the path's owner, never as root; give it to an unprivileged user and group (chown), mount it read-only, or use a copy-on-write workspace", p, st.Uid, st.Gid)
	}
	return backend.MountIDs{RootUID: st.Uid, RootGID: st.Gid}, nil
}

// detachWorkspace removes the host mounts of a copy-on-write workspace and of a permission
// layer; a started sandbox keeps its own.
func (r *Runtime) detachWorkspace(id string) error {
	return errors.Join(r.detachPermFS(id), rootfs.Detach(r.workspaceMount(id)))
}

// releaseStorage undoes what prepareLayers and storageMounts made on the host: the workspace
// mount, the disk's mount and its loop device. The files go with the sandbox's directories.
func (r *Runtime) releaseStorage(id string) error {
	// The permission layer holds the workspace (its root is the workspace's directory): it goes first.
	if err := r.releasePermFS(id); err != nil {
		return err
	}
	return errors.Join(r.detachWorkspace(id), rootfs.ReleaseDisk(r.diskImage(id), r.diskMount(id), diskReleaseWait))
}

// workspaceDirs returns what diff and export read: the upper and lower dirs of a sandbox's
// copy-on-write workspace, or why it has none.
func (r *Runtime) workspaceDirs(id string) (upper, lower string, err error) {
	sb, err := r.lookup(id)
	if err != nil {
		return "", "", err
	}
	rec := sb.snapshot()
	switch {
	case rec.Status == "" || rec.Status == api.StatusCreating || rec.Status == api.StatusStopping || rec.Status == stateRemoved:
		return "", "", stateError(id, rec.Status, "try again")
	case rec.Workspace == nil:
		return "", "", api.Errorf(api.CodeConflict, "sandbox %q has no workspace (create it with workspace: {hostPath})", id)
	case rec.Workspace.Mode != api.WorkspaceCOW:
		return "", "", api.Errorf(api.CodeConflict, "sandbox %q has a read-write workspace: its changes went straight to %s, there is no diff to show", id, rec.Workspace.HostPath)
	}
	upper = r.workspaceUpper(&rec)
	if _, err := os.Stat(upper); err != nil {
		return "", "", api.Errorf(api.CodeConflict, "sandbox %q: its workspace's changes are not reachable (%v); its disk is gone after a host restart", id, err)
	}
	return upper, rec.Workspace.HostPath, nil
}
