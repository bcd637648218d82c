package nsbox

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nsbox/nsbox/rootfs"
)

// spareDisks keeps a few disk images of the default size formatted ahead of time in
// <data>/disks, so that a create with the default disk renames one into place instead of
// running mkfs.ext4 on its critical path (a fifth of a cold create here; docs/benchmarks.md).
// mkfs.ext4 runs once, for a template of the size; each spare is a sparse copy of it (a tenth
// of the CPU, which the refill after a take would otherwise share with the creates that follow).
// Spares and the template are made under a temporary name and renamed when complete, so a
// crash leaves either a whole file, which the next daemon uses, or a temporary file, which it
// removes; spares and templates of another size (the default changed) are removed at start too.
type spareDisks struct {
	dir    string
	sizeMB int64 // 0: no spares (no default disk)

	mu       sync.Mutex
	ready    []string // paths of complete spares
	filling  bool
	lastTake time.Time
	next     int // numbers new spares' names
	ctx      context.Context
	stop     context.CancelFunc
	wg       sync.WaitGroup
	log      func(msg string, args ...any)
}

// spareDiskCount is how many spares the daemon keeps: enough for two creates at once.
const spareDiskCount = 2

// openSpareDisks finds the spares a previous daemon left in dir and removes the rest.
func openSpareDisks(dir string, sizeMB int64, logError func(msg string, args ...any)) (*spareDisks, error) {
	ctx, cancel := context.WithCancel(context.Background())
	s := &spareDisks{dir: dir, sizeMB: sizeMB, ctx: ctx, stop: cancel, log: logError}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("make spare disks dir: %w", err)
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("read spare disks dir: %w", err)
	}
	prefix := strconv.FormatInt(sizeMB, 10) + "-"
	for _, e := range entries {
		path := filepath.Join(dir, e.Name())
		if sizeMB > 0 && path == s.template() {
			continue
		}
		n, ofSize := strings.CutPrefix(e.Name(), prefix)
		num, err := strconv.Atoi(strings.TrimSuffix(n, ".img"))
		if sizeMB > 0 && ofSize && strings.HasSuffix(n, ".img") && err == nil {
			s.ready = append(s.ready, path)
			s.next = max(s.next, num+1)
			continue
		}
		if err := os.Remove(path); err != nil {
			return nil, fmt.Errorf("remove stale spare disk: %w", err)
		}
	}
	return s, nil
}

// take moves a spare to image and reports whether it had one of sizeMB.
func (s *spareDisks) take(image string, sizeMB int64) bool {
	if sizeMB != s.sizeMB || sizeMB == 0 {
		return false
	}
	defer s.refill()
	s.mu.Lock()
	defer s.mu.Unlock()
	s.lastTake = time.Now()
	for len(s.ready) > 0 {
		spare := s.ready[len(s.ready)-1]
		s.ready = s.ready[:len(s.ready)-1]
		err := os.Rename(spare, image)
		if err == nil {
			return true
		}
		s.log("spare disk unusable; making one", "spare", spare, "err", err)
		_ = os.Remove(spare)
	}
	return false
}

// refill makes spares in the background, one at a time, until spareDiskCount are ready, each
// only refillDelay after the last take (as the warm pool's refill: an mkfs is CPU the create
// that took a spare would otherwise share while its first commands run).
func (s *spareDisks) refill() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.sizeMB == 0 || s.filling || len(s.ready) >= spareDiskCount || s.ctx.Err() != nil {
		return
	}
	s.filling = true
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		for {
			s.mu.Lock()
			if len(s.ready) >= spareDiskCount || s.ctx.Err() != nil {
				s.filling = false
				s.mu.Unlock()
				return
			}
			if wait := refillDelay - time.Since(s.lastTake); wait > 0 {
				s.mu.Unlock()
				select {
				case <-s.ctx.Done():
				case <-time.After(wait):
				}
				continue
			}
			name := fmt.Sprintf("%d-%d.img", s.sizeMB, s.next)
			s.next++
			s.mu.Unlock()
			spare, err := s.make(name)
			s.mu.Lock()
			if err != nil {
				s.filling = false
				s.mu.Unlock()
				s.log("make a spare disk", "err", err)
				return
			}
			s.ready = append(s.ready, spare)
			s.mu.Unlock()
		}
	}()
}

// template is the path of the formatted image every spare is copied from.
func (s *spareDisks) template() string {
	return filepath.Join(s.dir, fmt.Sprintf("template-%d.img", s.sizeMB))
}

// make copies the template (formatting it first if there is none) to a spare under a
// temporary name, and renames it to name once complete.
func (s *spareDisks) make(name string) (string, error) {
	if _, err := os.Stat(s.template()); errors.Is(err, os.ErrNotExist) {
		if err := s.whole(s.template(), s.makeTemplate); err != nil {
			return "", fmt.Errorf("make the spare disks' template: %w", err)
		}
	} else if err != nil {
		return "", fmt.Errorf("the spare disks' template: %w", err)
	}
	spare := filepath.Join(s.dir, name)
	return spare, s.whole(spare, func(tmp string) error { return rootfs.CopyDisk(s.template(), tmp) })
}

// makeTemplate formats the template at tmp and syncs it: every spare is copied from it, so a
// host crash must not leave a template whose blocks never reached the disk.
func (s *spareDisks) makeTemplate(tmp string) error {
	if err := rootfs.MakeDisk(tmp, s.sizeMB); err != nil {
		return err
	}
	f, err := os.Open(tmp)
	if err != nil {
		return fmt.Errorf("open the template to sync it: %w", err)
	}
	defer f.Close()
	if err := f.Sync(); err != nil {
		return fmt.Errorf("sync the template: %w", err)
	}
	return nil
}

// whole makes the file path with build under a temporary name, and renames it to path once
// complete.
func (s *spareDisks) whole(path string, build func(tmp string) error) error {
	tmp := filepath.Join(s.dir, ".tmp-"+filepath.Base(path))
	_ = os.Remove(tmp)
	if err := build(tmp); err != nil {
		_ = os.Remove(tmp)
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		_ = os.Remove(tmp)
		return fmt.Errorf("keep %s: %w", filepath.Base(path), err)
	}
	return nil
}

// close stops the refill; the spares stay for the next daemon.
func (s *spareDisks) close() {
	s.mu.Lock()
	s.stop()
	s.mu.Unlock()
	s.wg.Wait()
}

// makeDisk gives a container its disk image: a spare when one of the size is ready, else a
// new one.
func (r *Runtime) makeDisk(image string, sizeMB int64) error {
	if r.spares.take(image, sizeMB) {
		return nil
	}
	return rootfs.MakeDisk(image, sizeMB)
}
