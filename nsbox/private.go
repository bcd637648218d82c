package nsbox

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/nsbox/nsbox/api"
	"github.com/nsbox/nsbox/rootfs"
)

// Each session's private folder (~/.private, issue 14) is a directory of its container's
// private store: a host directory next to the writable layer (on the sandbox's disk when it
// has one), which the agent gets at its start as an open directory at the root of a mount of
// its own that is attached nowhere (backend.Spec.PrivateStore), so that no path in the
// sandbox leads there: the agent hands each session's directory to that session's processes only (agent/,
// session/private.go). The store is made empty at every start and emptied when the container
// is shelved: private folders are kept neither across a hibernation nor a restart.

// privateStore is the private store of a container whose disk limit is diskMB.
func (r *Runtime) privateStore(container string, diskMB int64) string {
	return filepath.Join(r.layerDir(container, diskMB), "private")
}

// preparePrivate makes the container's store, empty and owned by the sandbox's root, and
// returns its path. A new disk has it already (diskDirs), empty; a kept container's is emptied.
func (r *Runtime) preparePrivate(container string, diskMB int64, ids rootfs.IDMap) (string, error) {
	dir := r.privateStore(container, diskMB)
	if fi, err := os.Lstat(dir); err == nil && fi.IsDir() && fi.Mode().Perm() == 0o700 {
		entries, err := os.ReadDir(dir)
		if err != nil {
			return "", fmt.Errorf("read private store: %w", err)
		}
		for _, e := range entries {
			if err := os.RemoveAll(filepath.Join(dir, e.Name())); err != nil {
				return "", fmt.Errorf("empty private store: %w", err)
			}
		}
	} else {
		if err := os.RemoveAll(dir); err != nil {
			return "", fmt.Errorf("empty private store: %w", err)
		}
		if err := os.Mkdir(dir, 0o700); err != nil {
			return "", fmt.Errorf("make private store: %w", err)
		}
	}
	if ids.Enabled() {
		if err := os.Chown(dir, int(ids.Host), int(ids.Host)); err != nil {
			return "", fmt.Errorf("chown private store: %w", err)
		}
	}
	return dir, nil
}

// removePrivate removes a container's private store, wherever its disk limit put it (on its
// disk, or in its data dir).
func (r *Runtime) removePrivate(container string) error {
	return errors.Join(os.RemoveAll(r.privateStore(container, 0)), os.RemoveAll(r.privateStore(container, 1)))
}

// sessionPrivate is the host directory of a session's private folder, and where the session
// sees it ("" when it has none).
func (r *Runtime) sessionPrivate(rec *record, s *api.Session) (host, path string) {
	if s.PrivateDir == "" {
		return "", ""
	}
	return filepath.Join(r.privateStore(rec.container(), rec.Limits.DiskMB), s.ID), s.PrivateDir
}
