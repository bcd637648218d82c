package oci

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"hash"
	"io"
	"runtime"
	"sync"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/partial"
	"golang.org/x/sync/errgroup"

	"github.com/nsbox/nsbox/api"
	"github.com/nsbox/nsbox/rootfs/layers"
)

// Progress receives the state of each layer of a pull. A pull's waiters get it one event at a
// time.
type Progress func(api.ImageProgress)

// parallelLayers is how many layers of one image are fetched and unpacked at once.
const parallelLayers = 3

// progressInterval is how often a layer being read reports its bytes.
const progressInterval = 100 * time.Millisecond

// source is an image to store, from a registry or an archive.
type source struct {
	img         v1.Image
	names       []string // canonical tag references
	repoDigests []string
	// asStored: the image's manifest and compressed layers are what the registry or archive
	// holds, so progress counts their bytes. Images of `docker save` archives have neither
	// (go-containerregistry would compress each layer to make them up): their layers are
	// read uncompressed, and their digest and size are left out.
	asStored bool
}

// store unpacks the source's layers into the layer store and records the image.
func (s *Store) store(ctx context.Context, src source, progress Progress) (*api.ImageInfo, error) {
	cf, err := src.img.ConfigFile()
	if err != nil {
		return nil, fmt.Errorf("read image config: %w", err)
	}
	if err := checkPlatform(cf); err != nil {
		return nil, err
	}
	id, err := src.img.ConfigName()
	if err != nil {
		return nil, fmt.Errorf("read image config: %w", err)
	}
	imgLayers, err := src.img.Layers()
	if err != nil {
		return nil, fmt.Errorf("read image layers: %w", err)
	}
	info := &api.ImageInfo{
		Names: src.names, RepoDigests: src.repoDigests, ID: id.String(),
		Platform: cf.Platform().String(), Created: cf.Created.UTC(), Stored: time.Now().UTC(),
		Config: api.ImageConfig{Env: cf.Config.Env, WorkingDir: cf.Config.WorkingDir, User: cf.Config.User,
			Entrypoint: cf.Config.Entrypoint, Cmd: cf.Config.Cmd},
		Layers: make([]string, len(imgLayers)),
	}
	if src.asStored {
		digest, err := src.img.Digest()
		if err != nil {
			return nil, fmt.Errorf("read image manifest: %w", err)
		}
		info.Digest = digest.String()
	}
	sizes := make([]int64, len(imgLayers))
	held := make([]string, 0, len(imgLayers))
	var heldMu sync.Mutex
	defer func() { s.layers.Release(held...) }() // once recorded (or failed)
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(parallelLayers)
	for i, l := range imgLayers {
		g.Go(func() error {
			diffID, size, err := s.putLayer(gctx, l, src.asStored, progress)
			if err != nil {
				return err
			}
			heldMu.Lock()
			held = append(held, diffID)
			heldMu.Unlock()
			info.Layers[i], sizes[i] = diffID, size
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}
	for _, n := range sizes {
		info.Size += n
	}
	return s.commit(info)
}

// checkPlatform refuses an image made for another OS or architecture than this host's.
func checkPlatform(cf *v1.ConfigFile) error {
	if (cf.OS != "" && cf.OS != runtime.GOOS) || (cf.Architecture != "" && cf.Architecture != runtime.GOARCH) {
		return fmt.Errorf("%w: it is for %s, this host is %s/%s", ErrInvalid, cf.Platform(), runtime.GOOS, runtime.GOARCH)
	}
	return nil
}

// putLayer stores one layer (held until store releases it) and returns its diff ID and, for
// a layer read as stored, its stored size.
func (s *Store) putLayer(ctx context.Context, l v1.Layer, asStored bool, progress Progress) (string, int64, error) {
	diffID, err := l.DiffID()
	if err != nil {
		return "", 0, fmt.Errorf("read layer diff ID: %w", err)
	}
	p := api.ImageProgress{Layer: diffID.String()}
	if asStored {
		digest, err := l.Digest()
		if err != nil {
			return "", 0, fmt.Errorf("read layer digest: %w", err)
		}
		if p.Total, err = l.Size(); err != nil {
			return "", 0, fmt.Errorf("read layer size: %w", err)
		}
		p.Layer = digest.String()
	}
	report := func(status string, current int64) {
		if progress != nil {
			p.Status, p.Current = status, current
			progress(p)
		}
	}
	opened := false
	var blob *blobReader
	open := func() (io.ReadCloser, error) {
		opened = true
		report(api.LayerDownloading, 0)
		if !asStored {
			rc, err := l.Uncompressed()
			if err != nil {
				return nil, err
			}
			return &countingReader{ReadCloser: rc, report: report}, nil
		}
		ul, err := partial.CompressedToLayer(countedLayer{Layer: l, opened: func(b *blobReader) { blob = b }, report: report})
		if err != nil {
			return nil, err
		}
		return ul.Uncompressed()
	}
	err = s.layers.Put(ctx, diffID.String(), open)
	if blob != nil {
		if err != nil {
			err = blob.explain(p.Layer, err)
		}
		blob.rc.Close()
	}
	if err != nil {
		return "", 0, fmt.Errorf("layer %s: %w", p.Layer, err)
	}
	if opened {
		report(api.LayerDone, p.Total)
	} else {
		report(api.LayerExists, p.Total)
	}
	return diffID.String(), p.Total, nil
}

// countedLayer is a layer whose compressed stream is read through a blobReader.
type countedLayer struct {
	v1.Layer
	opened func(*blobReader)
	report func(status string, current int64)
}

func (c countedLayer) Compressed() (io.ReadCloser, error) {
	rc, err := c.Layer.Compressed()
	if err != nil {
		return nil, err
	}
	b := &blobReader{rc: rc, hash: sha256.New()}
	b.countingReader = countingReader{ReadCloser: io.NopCloser(io.TeeReader(rc, b.hash)), report: c.report}
	c.opened(b)
	return b, nil
}

// blobReader reads a layer's blob as stored, hashing it. Its Close does nothing: the blob
// is closed by putLayer, after explain could read the rest.
type blobReader struct {
	countingReader
	rc   io.ReadCloser
	hash hash.Hash
}

// explain reads what the failed unpacking left of the blob and checks it against its digest:
// a corrupt blob is reported as a digest mismatch, not as whatever decompressing it made of it.
func (b *blobReader) explain(digest string, err error) error {
	_, _ = io.Copy(io.Discard, b) // a read error only cuts the check short
	if got := "sha256:" + hex.EncodeToString(b.hash.Sum(nil)); got != digest && b.n > 0 {
		return fmt.Errorf("%w: the blob hashes to %s after %d bytes (%v); nothing was stored", layers.ErrDigestMismatch, got, b.n, err)
	}
	return err
}

// countingReader reports the bytes read so far, at most every progressInterval.
type countingReader struct {
	io.ReadCloser
	report func(status string, current int64)
	n      int64
	last   time.Time
}

func (r *countingReader) Read(p []byte) (int, error) {
	n, err := r.ReadCloser.Read(p)
	r.n += int64(n)
	if now := time.Now(); now.Sub(r.last) >= progressInterval {
		r.last = now
		r.report(api.LayerDownloading, r.n)
	}
	return n, err
}
