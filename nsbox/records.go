package nsbox

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/nsbox/nsbox/api"
	"github.com/nsbox/nsbox/rootfs"
)

var (
	sandboxesBucket = []byte("sandboxes")
	snapshotsBucket = []byte("snapshots")
)

// record is what the daemon persists about a sandbox: what the API shows, plus the container
// that runs it.
type record struct {
	api.Sandbox
	// Container is the backend's id of the sandbox's container, which also names its run
	// and data dirs, its agent socket and its cgroup. Containers are started before they are
	// given to a sandbox (pool.go), so it is not the sandbox id; records from before the pool
	// have none, and there the two were the same.
	Container string `json:"container,omitempty"`
	// ImageID is the id (config digest) of the OCI image it was made from, which keeps the
	// image's layers from being removed while it lives; empty for built-in images.
	ImageID string `json:"imageId,omitempty"`
	// HeldIDs are the user namespace ids of a hibernated sandbox's container: its writable
	// layer belongs to them, so they stay its own until it resumes on them or is removed.
	HeldIDs *rootfs.IDMap `json:"heldIds,omitempty"`
	// SessionPermissions are the rules of its sessions created with their own (permissions.go).
	SessionPermissions map[string][]api.PermissionRule `json:"sessionPermissions,omitempty"`
	// SnapshotLayers are the digests of the snapshot layers (topmost first) between its
	// image's layers and its writable layer, when it was made from a snapshot.
	SnapshotLayers []string `json:"snapshotLayers,omitempty"`
}

// exists reports whether the API shows the sandbox: a create has recorded it, and it has not
// been removed (a request that found it before its remove ended may hold it still).
func (rec *record) exists() bool { return rec.Status != "" && rec.Status != stateRemoved }

// container returns the id of the record's container.
func (r record) container() string {
	if r.Container != "" {
		return r.Container
	}
	return r.ID
}

// records keeps sandbox records in a bbolt database.
type records struct {
	db *bolt.DB
}

// openRecords opens (creating if needed) the metadata database at path. Only one daemon can
// hold it; a second one fails after a second with a clear error.
func openRecords(path string) (*records, error) {
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: time.Second, NoFreelistSync: true})
	if errors.Is(err, bolt.ErrTimeout) {
		return nil, fmt.Errorf("open metadata %s: another nsbox daemon is using it", path)
	}
	if err != nil {
		return nil, fmt.Errorf("open metadata %s: %w", path, err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		for _, b := range [][]byte{sandboxesBucket, snapshotsBucket} {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("init metadata: %w", err)
	}
	return &records{db: db}, nil
}

// Close closes the database.
func (s *records) Close() error { return s.db.Close() }

// Insert stores a new record; it fails with a conflict when the id is taken.
func (s *records) Insert(r *record) error {
	return s.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(sandboxesBucket)
		if b.Get([]byte(r.ID)) != nil {
			return api.Errorf(api.CodeConflict, "sandbox %q already exists", r.ID)
		}
		return putRecord(b, r)
	})
}

// Put stores a record, replacing any with the same id.
func (s *records) Put(r *record) error {
	return s.db.Update(func(tx *bolt.Tx) error { return putRecord(tx.Bucket(sandboxesBucket), r) })
}

func putRecord(b *bolt.Bucket, r *record) error {
	data, err := json.Marshal(r)
	if err != nil {
		return fmt.Errorf("encode sandbox %s: %w", r.ID, err)
	}
	return b.Put([]byte(r.ID), data)
}

// List returns every record, ordered by id.
func (s *records) List() ([]*record, error) {
	var out []*record
	err := s.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(sandboxesBucket).ForEach(func(k, v []byte) error {
			r := &record{}
			if err := json.Unmarshal(v, r); err != nil {
				return fmt.Errorf("decode sandbox %s: %w", k, err)
			}
			out = append(out, r)
			return nil
		})
	})
	return out, err
}

// Delete removes the record with the id; a missing record is not an error.
func (s *records) Delete(id string) error {
	return s.db.Update(func(tx *bolt.Tx) error { return tx.Bucket(sandboxesBucket).Delete([]byte(id)) })
}

// PutSnapshot stores a snapshot's record.
func (s *records) PutSnapshot(snap *snapshotRecord) error {
	data, err := json.Marshal(snap)
	if err != nil {
		return fmt.Errorf("encode snapshot %s: %w", snap.ID, err)
	}
	return s.db.Update(func(tx *bolt.Tx) error { return tx.Bucket(snapshotsBucket).Put([]byte(snap.ID), data) })
}

// Snapshots returns every snapshot's record, ordered by id.
func (s *records) Snapshots() ([]*snapshotRecord, error) {
	var out []*snapshotRecord
	err := s.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(snapshotsBucket).ForEach(func(k, v []byte) error {
			snap := &snapshotRecord{}
			if err := json.Unmarshal(v, snap); err != nil {
				return fmt.Errorf("decode snapshot %s: %w", k, err)
			}
			out = append(out, snap)
			return nil
		})
	})
	return out, err
}

// Snapshot returns the record of the snapshot with the id, or a not-found error (which names
// the snapshots whose name is id: `snapshot ls` shows both).
func (s *records) Snapshot(id string) (*snapshotRecord, error) {
	snap := &snapshotRecord{}
	err := s.db.View(func(tx *bolt.Tx) error {
		data := tx.Bucket(snapshotsBucket).Get([]byte(id))
		if data == nil {
			return snapshotNotFound(tx, id)
		}
		if err := json.Unmarshal(data, snap); err != nil {
			return fmt.Errorf("decode snapshot %s: %w", id, err)
		}
		return nil
	})
	return snap, err
}

// snapshotNotFound is the error for a snapshot id that none has; when snapshots are named id,
// it gives their ids.
func snapshotNotFound(tx *bolt.Tx, id string) error {
	var named []string
	_ = tx.Bucket(snapshotsBucket).ForEach(func(k, v []byte) error {
		var snap api.Snapshot
		if json.Unmarshal(v, &snap) == nil && snap.Name == id {
			named = append(named, string(k))
		}
		return nil
	})
	if len(named) == 0 {
		return api.Errorf(api.CodeNotFound, "snapshot %q not found", id)
	}
	return api.Errorf(api.CodeNotFound, "snapshot %q not found: it is the name of %s; snapshots are given by id", id, strings.Join(named, ", "))
}

// DeleteSnapshot removes the record of the snapshot with the id.
func (s *records) DeleteSnapshot(id string) error {
	return s.db.Update(func(tx *bolt.Tx) error { return tx.Bucket(snapshotsBucket).Delete([]byte(id)) })
}
