// Package oci keeps OCI images: it pulls them from registries and imports `docker save` and
// OCI-layout archives (both through github.com/google/go-containerregistry), unpacks their
// layers into a layers.Store, and records each image by name and digest with its config.
package oci

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"

	"github.com/google/go-containerregistry/pkg/name"

	"github.com/nsbox/nsbox/api"
	"github.com/nsbox/nsbox/internal/atomicfile"
	"github.com/nsbox/nsbox/rootfs/layers"
)

var (
	// ErrNotFound is returned for an image, tag or repository that does not exist.
	ErrNotFound = errors.New("image not found")
	// ErrInUse is returned when removing an image a sandbox uses.
	ErrInUse = errors.New("image is in use")
	// ErrInvalid is returned for a malformed reference or archive.
	ErrInvalid = errors.New("invalid image")
	// ErrUnauthorized is returned when a registry refuses the credentials (or their absence).
	ErrUnauthorized = errors.New("registry refused access")
)

// InUse reports whether a sandbox uses the image.
type InUse func(img *api.ImageInfo) bool

// Store is the set of OCI images recorded under one directory, with their layers in a
// layers.Store.
type Store struct {
	dir    string // images.json, and tmp/ for archives being imported
	layers *layers.Store
	reg    Registries
	pulls  flights

	// mu guards images and images.json; layer GC runs under it so that no record appears
	// or disappears meanwhile.
	mu     sync.Mutex
	images []*api.ImageInfo
	// keep tells the layers something else than an image references (snapshots'), which GC
	// keeps too; nil: none.
	keep func(digest string) bool
}

// Open opens the image records under dir, with layers stored in ls.
func Open(dir string, ls *layers.Store, reg Registries) (*Store, error) {
	if err := os.RemoveAll(filepath.Join(dir, "tmp")); err != nil {
		return nil, fmt.Errorf("remove interrupted imports: %w", err)
	}
	if err := os.MkdirAll(filepath.Join(dir, "tmp"), 0o700); err != nil {
		return nil, fmt.Errorf("make image dir: %w", err)
	}
	s := &Store{dir: dir, layers: ls, reg: reg, pulls: flights{m: map[string]*pullFlight{}}}
	data, err := os.ReadFile(s.recordsPath())
	switch {
	case errors.Is(err, os.ErrNotExist):
	case err != nil:
		return nil, fmt.Errorf("read image records: %w", err)
	default:
		if err := json.Unmarshal(data, &s.images); err != nil {
			return nil, fmt.Errorf("read image records %s: %w", s.recordsPath(), err)
		}
	}
	return s, nil
}

func (s *Store) recordsPath() string { return filepath.Join(s.dir, "images.json") }

// save writes the records (under s.mu): to a temporary file, synced, then renamed over.
func (s *Store) save() error {
	data, err := json.MarshalIndent(s.images, "", "  ")
	if err != nil {
		return fmt.Errorf("encode image records: %w", err)
	}
	if err := atomicfile.Write(s.recordsPath(), data); err != nil {
		return fmt.Errorf("save image records: %w", err)
	}
	return nil
}

// LayerDir is the directory of a layer of an image (a digest from ImageInfo.Layers).
func (s *Store) LayerDir(digest string) string { return s.layers.Dir(digest) }

// List returns the images, sorted by their first name (dangling ones last, by ID).
func (s *Store) List() []*api.ImageInfo {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]*api.ImageInfo, len(s.images))
	for i, img := range s.images {
		out[i] = clone(img)
	}
	sort.Slice(out, func(i, j int) bool { return sortKey(out[i]) < sortKey(out[j]) })
	return out
}

func sortKey(img *api.ImageInfo) string {
	if len(img.Names) > 0 {
		return img.Names[0]
	}
	return "~" + img.ID
}

func clone(img *api.ImageInfo) *api.ImageInfo {
	c := *img
	c.Names = slices.Clone(img.Names)
	c.RepoDigests = slices.Clone(img.RepoDigests)
	c.Layers = slices.Clone(img.Layers)
	return &c
}

// Get finds an image by one of its names (tag references, normalized as in Canonical:
// "alpine" is docker.io/library/alpine:latest), repo digests, its manifest digest or ID
// ("sha256:…"), or an unambiguous prefix of 12 or more hex digits of either.
func (s *Store) Get(ref string) (*api.ImageInfo, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	img, err := s.find(ref)
	if err != nil {
		return nil, err
	}
	return clone(img), nil
}

func (s *Store) find(ref string) (*api.ImageInfo, error) {
	want := ref
	if c, err := Canonical(ref); err == nil {
		want = c
	}
	for _, img := range s.images {
		if slices.Contains(img.Names, want) || slices.Contains(img.RepoDigests, want) || img.ID == ref || (ref != "" && img.Digest == ref) {
			return img, nil
		}
	}
	if digits := strings.TrimPrefix(ref, "sha256:"); len(digits) >= 12 && len(digits) <= 64 && layers.LowerHex(digits) { // an id's prefix
		prefix := "sha256:" + digits
		var found *api.ImageInfo
		for _, img := range s.images {
			if strings.HasPrefix(img.ID, prefix) || strings.HasPrefix(img.Digest, prefix) {
				if found != nil && found != img {
					return nil, fmt.Errorf("%w: %q matches more than one image", ErrInvalid, ref)
				}
				found = img
			}
		}
		if found != nil {
			return found, nil
		}
	}
	return nil, fmt.Errorf("%w: %q", ErrNotFound, ref)
}

// Canonical is the full form of an image reference: registry, repository and tag or digest,
// with Docker Hub's defaults filled in (alpine → docker.io/library/alpine:latest).
func Canonical(ref string) (string, error) {
	r, err := name.ParseReference(ref)
	if err != nil {
		return "", fmt.Errorf("%w: reference %q: %v", ErrInvalid, ref, err)
	}
	return canonical(r), nil
}

func canonical(r name.Reference) string {
	repo := repoName(r.Context())
	if d, ok := r.(name.Digest); ok {
		return repo + "@" + d.DigestStr()
	}
	return repo + ":" + r.Identifier()
}

// repoName is a repository's full name, with Docker Hub called docker.io.
func repoName(repo name.Repository) string {
	reg := repo.RegistryStr()
	if reg == name.DefaultRegistry {
		reg = "docker.io"
	}
	return reg + "/" + repo.RepositoryStr()
}

// commit records img (under its ID, merging names with a record of the same ID); its names
// move to it from any image that had them.
func (s *Store) commit(img *api.ImageInfo) (*api.ImageInfo, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var rec *api.ImageInfo
	for _, other := range s.images {
		if other.ID == img.ID {
			rec = other
			continue
		}
		other.Names = slices.DeleteFunc(other.Names, func(n string) bool { return slices.Contains(img.Names, n) })
	}
	if rec == nil {
		rec = clone(img)
		rec.Names, rec.RepoDigests = nil, nil
		s.images = append(s.images, rec)
	}
	rec.Stored = img.Stored
	if img.Digest != "" {
		rec.Digest = img.Digest
	}
	rec.Names = union(rec.Names, img.Names)
	rec.RepoDigests = union(rec.RepoDigests, img.RepoDigests)
	if err := s.save(); err != nil {
		return nil, err
	}
	return clone(rec), nil
}

func union(a, b []string) []string {
	for _, x := range b {
		if !slices.Contains(a, x) {
			a = append(a, x)
		}
	}
	if a == nil {
		return []string{}
	}
	return a
}

// Remove removes ref. When ref is one of several names of an image, only that name goes.
// Otherwise the image goes (with its layers no other image has) unless inUse says a
// sandbox uses it: then it is refused with ErrInUse, or with force only its names go and
// the image stays, dangling, until a prune finds it unused. It returns the image as it was.
func (s *Store) Remove(ref string, force bool, inUse InUse) (*api.ImageInfo, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	img, err := s.find(ref)
	if err != nil {
		return nil, err
	}
	before := clone(img)
	canon, _ := Canonical(ref)
	if slices.Contains(img.Names, canon) && len(img.Names) > 1 {
		img.Names = slices.DeleteFunc(img.Names, func(n string) bool { return n == canon })
		return before, s.save()
	}
	if inUse(img) {
		if !force {
			return nil, fmt.Errorf("%w: %s (%s) is used by a sandbox; remove the sandbox first, or force", ErrInUse, ref, img.ID)
		}
		img.Names = []string{}
		return before, s.save()
	}
	s.images = slices.DeleteFunc(s.images, func(i *api.ImageInfo) bool { return i == img })
	if err := s.save(); err != nil {
		return nil, err
	}
	_, err = s.gc()
	return before, err
}

// Prune removes the dangling images (with all, every image) that no sandbox uses, then
// every layer no image references. It returns the IDs of the images and the digests of the
// layers removed.
func (s *Store) Prune(all bool, inUse InUse) (images, removedLayers []string, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	images = []string{}
	s.images = slices.DeleteFunc(s.images, func(img *api.ImageInfo) bool {
		if (all || len(img.Names) == 0) && !inUse(img) {
			images = append(images, img.ID)
			return true
		}
		return false
	})
	if len(images) > 0 {
		if err := s.save(); err != nil {
			return nil, nil, err
		}
	}
	removedLayers, err = s.gc()
	return images, removedLayers, err
}

// KeepLayers tells GC of the layers other records reference (a snapshot's): keep is asked
// for each layer no image references, and must not change its answer while GC runs.
func (s *Store) KeepLayers(keep func(digest string) bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.keep = keep
}

// GC removes the layers that neither an image nor KeepLayers' function references, and
// returns their digests.
func (s *Store) GC() ([]string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.gc()
}

// gc removes the layers no record references (under s.mu).
func (s *Store) gc() ([]string, error) {
	used := map[string]bool{}
	for _, img := range s.images {
		for _, l := range img.Layers {
			used[l] = true
		}
	}
	removed, err := s.layers.GC(func(d string) bool { return used[d] || (s.keep != nil && s.keep(d)) })
	if err != nil {
		return removed, fmt.Errorf("remove unused layers: %w", err)
	}
	if removed == nil {
		removed = []string{}
	}
	return removed, nil
}
