// Package layers is a content-addressed store of unpacked filesystem layers. Each layer is a
// directory named by the digest of its uncompressed tar stream (an OCI layer's diff ID),
// unpacked once, in overlayfs' form (whiteouts as 0/0 character devices, opaque directories
// marked with trusted.overlay.opaque), so that overlay mounts can stack layers as lower dirs.
// A layer becomes visible only once it is complete and verified, so an interrupted put never
// leaves a half layer behind. OCI images and sandbox snapshots share the store.
package layers

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"golang.org/x/sys/unix"
)

// ErrDigestMismatch is returned when a layer's content does not hash to its digest.
var ErrDigestMismatch = errors.New("layer content does not match its digest")

// Store is a directory of layers: <dir>/sha256/<hex> are complete layers, <dir>/tmp holds
// layers being unpacked or removed.
type Store struct {
	dir string

	mu      sync.Mutex
	flights map[string]*flight // layers being put, by digest
	holds   map[string]int     // layers GC must keep, by digest
}

// flight is one put of a layer that concurrent puts of the same digest wait for.
type flight struct {
	done chan struct{}
	err  error
}

// Open opens the store under dir, making it if needed, and removes what an interrupted put
// or removal left in its temporary directory.
func Open(dir string) (*Store, error) {
	for _, d := range []string{filepath.Join(dir, "sha256"), filepath.Join(dir, "tmp")} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return nil, fmt.Errorf("make layer store dir: %w", err)
		}
	}
	s := &Store{dir: dir, flights: map[string]*flight{}, holds: map[string]int{}}
	leftovers, err := os.ReadDir(s.tmpDir())
	if err != nil {
		return nil, fmt.Errorf("read layer store: %w", err)
	}
	for _, e := range leftovers {
		if err := os.RemoveAll(filepath.Join(s.tmpDir(), e.Name())); err != nil {
			return nil, fmt.Errorf("remove interrupted layer: %w", err)
		}
	}
	return s, nil
}

func (s *Store) tmpDir() string { return filepath.Join(s.dir, "tmp") }

// tempLayer makes an empty directory for a layer being made, in the store's temporary dir.
func (s *Store) tempLayer(prefix string) (string, error) {
	tmp, err := os.MkdirTemp(s.tmpDir(), prefix)
	if err != nil {
		return "", fmt.Errorf("make layer dir: %w", err)
	}
	if err := os.Chmod(tmp, 0o755); err != nil {
		return "", errors.Join(fmt.Errorf("chmod layer dir: %w", err), os.RemoveAll(tmp))
	}
	return tmp, nil
}

// checkDigest reports whether digest is a well-formed "sha256:<hex>" layer digest.
func checkDigest(digest string) error {
	if digits, ok := strings.CutPrefix(digest, "sha256:"); !ok || len(digits) != 64 || !LowerHex(digits) {
		return fmt.Errorf("invalid layer digest %q: want sha256:<64 hex digits>", digest)
	}
	return nil
}

// Dir is the directory of the layer with that digest (which may not exist).
func (s *Store) Dir(digest string) string {
	return filepath.Join(s.dir, "sha256", strings.TrimPrefix(digest, "sha256:"))
}

// Has reports whether the layer is stored.
func (s *Store) Has(digest string) bool {
	_, err := os.Lstat(s.Dir(digest))
	return err == nil
}

// Put stores the layer with that digest unless it is stored already: open gives its
// uncompressed tar stream, which is unpacked into a temporary directory, verified against
// the digest and then renamed into place. Concurrent puts of one digest unpack it once (the
// others wait, and open is called only by the one that unpacks). On success the layer is
// held: GC keeps it until Release, so the caller can record what references it first.
func (s *Store) Put(ctx context.Context, digest string, open func() (io.ReadCloser, error)) error {
	if err := checkDigest(digest); err != nil {
		return err
	}
	for {
		s.mu.Lock()
		s.holds[digest]++
		if s.Has(digest) {
			s.mu.Unlock()
			return nil
		}
		f, waiting := s.flights[digest]
		if !waiting {
			f = &flight{done: make(chan struct{})}
			s.flights[digest] = f
		}
		s.mu.Unlock()
		if !waiting {
			f.err = s.put(ctx, digest, open)
			s.mu.Lock()
			delete(s.flights, digest)
			s.mu.Unlock()
			close(f.done)
			if f.err != nil {
				s.Release(digest)
			}
			return f.err
		}
		select {
		case <-f.done:
		case <-ctx.Done():
			s.Release(digest)
			return fmt.Errorf("wait for layer %s: %w", digest, ctx.Err())
		}
		if f.err == nil {
			return nil
		}
		// The put we waited for failed (its caller may have gone away): try again ourselves.
		s.Release(digest)
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("put layer %s: %w", digest, err)
		}
	}
}

func (s *Store) put(ctx context.Context, digest string, open func() (io.ReadCloser, error)) error {
	tmp, err := s.tempLayer("put-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp) // nothing left once renamed
	rc, err := open()
	if err != nil {
		return fmt.Errorf("open layer %s: %w", digest, err)
	}
	defer rc.Close()
	h := sha256.New()
	r := io.TeeReader(rc, h)
	if err := unpackTar(ctx, tmp, r); err != nil {
		return fmt.Errorf("unpack layer %s: %w", digest, err)
	}
	// The tar may end with padding after its end-of-archive marker; the digest covers it.
	if _, err := io.Copy(io.Discard, r); err != nil {
		return fmt.Errorf("read layer %s: %w", digest, err)
	}
	if got := "sha256:" + hex.EncodeToString(h.Sum(nil)); got != digest {
		return fmt.Errorf("%w: %s hashes to %s", ErrDigestMismatch, digest, got)
	}
	if err := syncFS(tmp); err != nil {
		return err
	}
	if err := os.Rename(tmp, s.Dir(digest)); err != nil {
		return fmt.Errorf("install layer %s: %w", digest, err)
	}
	return nil
}

// syncFS flushes the filesystem of dir, so that a layer is on disk before it becomes visible.
func syncFS(dir string) error {
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("open %s: %w", dir, err)
	}
	defer unix.Close(fd)
	if err := unix.Syncfs(fd); err != nil {
		return fmt.Errorf("sync layer: %w", err)
	}
	return nil
}

// Release ends a hold Put took on each of the layers.
func (s *Store) Release(digests ...string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, d := range digests {
		if s.holds[d]--; s.holds[d] <= 0 {
			delete(s.holds, d)
		}
	}
}

// List returns the digests of the stored layers.
func (s *Store) List() ([]string, error) {
	entries, err := os.ReadDir(filepath.Join(s.dir, "sha256"))
	if err != nil {
		return nil, fmt.Errorf("list layers: %w", err)
	}
	out := make([]string, 0, len(entries))
	for _, e := range entries {
		out = append(out, "sha256:"+e.Name())
	}
	return out, nil
}

// GC removes every stored layer that keep does not want and no put holds, and returns their
// digests. The caller must keep its references from changing while GC runs. Each layer is
// first renamed away, so it disappears at once even if its removal is interrupted.
func (s *Store) GC(keep func(digest string) bool) ([]string, error) {
	all, err := s.List()
	if err != nil {
		return nil, err
	}
	var removed []string
	for _, d := range all {
		s.mu.Lock()
		if keep(d) || s.holds[d] > 0 {
			s.mu.Unlock()
			continue
		}
		doomed, err := os.MkdirTemp(s.tmpDir(), "gc-")
		if err == nil {
			err = os.Rename(s.Dir(d), filepath.Join(doomed, "layer"))
		}
		s.mu.Unlock()
		if err != nil {
			return removed, fmt.Errorf("remove layer %s: %w", d, err)
		}
		if err := os.RemoveAll(doomed); err != nil {
			return removed, fmt.Errorf("remove layer %s: %w", d, err)
		}
		removed = append(removed, d)
	}
	return removed, nil
}

// Add stores the layer whose tar stream write writes, and returns its digest and the size of
// that stream: the stream is unpacked as it is written (nothing else holds a copy of it), and
// the layer becomes visible under its digest once it is complete and on disk; when a layer
// with that digest is stored already, the new copy is dropped. done, when not nil, is called
// as soon as the whole stream is written, before the layer is flushed to disk (a caller that
// holds something still for the write lets it go there). On success the layer is held, as by
// Put.
func (s *Store) Add(ctx context.Context, write func(io.Writer) error, done func()) (digest string, size int64, err error) {
	tmp, err := s.tempLayer("add-")
	if err != nil {
		return "", 0, err
	}
	defer os.RemoveAll(tmp) // nothing left once renamed
	h := sha256.New()
	counted := &countingWriter{}
	pr, pw := io.Pipe()
	written := make(chan error, 1)
	go func() {
		err := write(io.MultiWriter(h, counted, pw))
		pw.CloseWithError(err)
		written <- err
	}()
	err = unpackTar(ctx, tmp, pr)
	if err == nil {
		_, err = io.Copy(io.Discard, pr) // padding after the end-of-archive marker
	}
	pr.CloseWithError(errors.New("layer unpack ended")) // a writer still at work stops
	if werr := <-written; werr != nil {
		err = werr
	}
	if done != nil {
		done()
	}
	if err != nil {
		return "", 0, fmt.Errorf("add layer: %w", err)
	}
	digest = "sha256:" + hex.EncodeToString(h.Sum(nil))
	if err := s.install(tmp, digest); err != nil {
		return "", 0, err
	}
	return digest, counted.n, nil
}

// AddDir stores the layer that fill makes, in overlayfs' form, in an empty directory of the
// store, named by the digest of the tar stream that write writes of that directory (its
// size is returned with the digest); when a layer with that digest is stored already, the new
// one is dropped. On success the layer is held, as by Put. (Add unpacks a stream as it comes;
// AddDir lets a caller make the files in place, in several passes.)
func (s *Store) AddDir(fill func(dir string) error, write func(dir string, w io.Writer) error) (digest string, size int64, err error) {
	tmp, err := s.tempLayer("add-")
	if err != nil {
		return "", 0, err
	}
	defer os.RemoveAll(tmp) // nothing left once renamed
	if err := fill(tmp); err != nil {
		return "", 0, fmt.Errorf("add layer: %w", err)
	}
	h := sha256.New()
	counted := &countingWriter{}
	if err := write(tmp, io.MultiWriter(h, counted)); err != nil {
		return "", 0, fmt.Errorf("add layer: hash it: %w", err)
	}
	digest = "sha256:" + hex.EncodeToString(h.Sum(nil))
	if err := s.install(tmp, digest); err != nil {
		return "", 0, err
	}
	return digest, counted.n, nil
}

// install flushes the complete layer dir tmp to disk and makes it the layer digest (unless
// that is stored already), held.
func (s *Store) install(tmp, digest string) error {
	if err := syncFS(tmp); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.Has(digest) {
		if err := os.Rename(tmp, s.Dir(digest)); err != nil && !s.Has(digest) {
			return fmt.Errorf("install layer %s: %w", digest, err)
		}
	}
	s.holds[digest]++
	return nil
}

// countingWriter counts what is written through it.
type countingWriter struct{ n int64 }

func (c *countingWriter) Write(p []byte) (int, error) {
	c.n += int64(len(p))
	return len(p), nil
}

// LowerHex reports whether s is all lowercase hexadecimal digits. Digests are checked with it,
// not with regular expressions: a counted repeat such as `{64}` compiles to a program of one
// state per repeat, kept on the heap for the process's life.
func LowerHex(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return false
		}
	}
	return true
}
