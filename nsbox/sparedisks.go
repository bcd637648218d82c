package nsbox

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"

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
// Each spare is kept mounted nowhere (rootfs.DiskMount) once made, or found at start: the take
// attaches it where the sandbox's disk goes, its loop device and mount (~1.5 ms) done already.
// Those mounts live as long as the daemon's descriptors: a daemon that ends, even by a crash,
// leaves only the files.
type spareDisks struct {
	dir    string
	sizeMB int64         // 0: no spares (no default disk)
	delay  time.Duration // spareRefillDelay but in tests

	mu      sync.Mutex
	ready   []spare  // complete spares
	found   []string // spares a previous daemon left, not mounted yet (the refill mounts them)
	filling bool
	// elsewhere: the sandboxes' disks are on another file system, where no spare can move
	// (a rename fails with EXDEV); spares are no longer made or mounted.
	elsewhere bool
	lastTake  time.Time
	taken     chan struct{} // a take, for a refill that waits
	next      int           // numbers new spares' names
	ctx       context.Context
	stop      context.CancelFunc
	wg        sync.WaitGroup
	log       func(msg string, args ...any)
}

// spare is a complete spare disk image, and its file system mounted nowhere (nil when it
// could not be mounted: it is mounted where it goes when taken, as any disk).
type spare struct {
	path  string
	mount *rootfs.DiskMount
}

// spareDiskCount is how many spares the daemon keeps: enough for two creates at once.
const spareDiskCount = 2

// openSpareDisks finds the spares a previous daemon left in dir and removes the rest.
func openSpareDisks(dir string, sizeMB int64, logError func(msg string, args ...any)) (*spareDisks, error) {
	ctx, cancel := context.WithCancel(context.Background())
	s := &spareDisks{dir: dir, sizeMB: sizeMB, delay: spareRefillDelay, taken: make(chan struct{}, 1), ctx: ctx, stop: cancel, log: logError}
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
			s.found = append(s.found, path)
			s.next = max(s.next, num+1)
			continue
		}
		if err := os.RemoveAll(path); err != nil { // a directory: a crashed mkfs's (rootfs.MakeDisk)
			return nil, fmt.Errorf("remove stale spare disk: %w", err)
		}
	}
	return s, nil
}

// take moves a spare to image and reports whether it had one of sizeMB, and whether its file
// system is mounted at target now (else the caller mounts it).
func (s *spareDisks) take(image, target string, sizeMB int64) (taken, mounted bool) {
	if sizeMB != s.sizeMB || sizeMB == 0 {
		return false, false
	}
	defer s.refill()
	defer func() {
		select {
		case s.taken <- struct{}{}:
		default: // the refill has a take to look at already
		}
	}()
	s.mu.Lock()
	defer s.mu.Unlock()
	s.lastTake = time.Now()
	for !s.elsewhere {
		sp, ok := s.pop()
		if !ok {
			return false, false
		}
		if err := os.Rename(sp.path, image); err != nil {
			if sp.mount != nil {
				sp.mount.Close()
			}
			if errors.Is(err, unix.EXDEV) {
				s.giveUp(filepath.Dir(image))
				return false, false
			}
			s.log("spare disk unusable; making one", "spare", sp.path, "err", err)
			_ = os.Remove(sp.path)
			continue
		}
		if sp.mount == nil {
			return true, false
		}
		if err := sp.mount.Attach(target); err != nil {
			s.log("spare disk's mount unusable; mounting the disk", "spare", sp.path, "err", err)
			return true, false
		}
		return true, true
	}
	return false, false
}

// giveUp stops using spares once one could not move to dir, on another file system: their
// mounts are closed and no more are made, and creates copy the template (makeOwn). The
// spares' files stay, for a daemon whose sandboxes are on their file system. s.mu must be held.
func (s *spareDisks) giveUp(dir string) {
	s.log("the sandboxes' disks are on another file system than the spare disks; creates copy the disk template instead (put both under one file system to use spares)",
		"sandboxes", dir, "spares", s.dir)
	s.elsewhere = true
	for _, sp := range s.ready {
		if sp.mount != nil {
			sp.mount.Close()
		}
	}
	s.ready, s.found = nil, nil
}

// pop takes a spare off the lists, a mounted one if there is one. s.mu must be held.
func (s *spareDisks) pop() (spare, bool) {
	i := slices.IndexFunc(s.ready, func(sp spare) bool { return sp.mount != nil })
	if i < 0 {
		i = len(s.ready) - 1
	}
	if i >= 0 {
		sp := s.ready[i]
		s.ready = slices.Delete(s.ready, i, i+1)
		return sp, true
	}
	if n := len(s.found); n > 0 {
		path := s.found[n-1]
		s.found = s.found[:n-1]
		return spare{path: path}, true
	}
	return spare{}, false
}

// mount mounts the spare at path nowhere, its first metadata writes made (rootfs.DiskMount's
// Warm); a spare that cannot be mounted is mounted when taken.
func (s *spareDisks) mount(path string) spare {
	m, err := rootfs.OpenDiskMount(path)
	if err == nil {
		if err = m.Warm(diskDirs); err != nil {
			m.Close()
			m = nil
		}
	}
	if err != nil {
		s.log("mount a spare disk ahead", "spare", path, "err", err)
	}
	return spare{path: path, mount: m}
}

// refill makes spares in the background, one at a time, until spareDiskCount are ready: while
// one is still ready, only once spareRefillDelay has passed since the last take, else at once.
func (s *spareDisks) refill() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.sizeMB == 0 || s.elsewhere || s.filling || (len(s.found) == 0 && len(s.ready) >= spareDiskCount) || s.ctx.Err() != nil {
		return
	}
	s.filling = true
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		for {
			s.mu.Lock()
			if n := len(s.found); n > 0 && s.ctx.Err() == nil {
				path := s.found[n-1]
				s.found = s.found[:n-1]
				s.mu.Unlock()
				sp := s.mount(path)
				s.mu.Lock()
				s.add(sp)
				s.mu.Unlock()
				continue
			}
			if len(s.ready) >= spareDiskCount || s.elsewhere || s.ctx.Err() != nil {
				s.filling = false
				s.mu.Unlock()
				return
			}
			if wait := s.delay - time.Since(s.lastTake); wait > 0 && len(s.ready) > 0 {
				s.mu.Unlock()
				select {
				case <-s.ctx.Done():
				case <-s.taken: // perhaps the last spare
				case <-time.After(wait):
				}
				continue
			}
			name := fmt.Sprintf("%d-%d.img", s.sizeMB, s.next)
			s.next++
			s.mu.Unlock()
			path, err := s.make(name)
			if err != nil {
				s.mu.Lock()
				s.filling = false
				s.mu.Unlock()
				s.log("make a spare disk", "err", err)
				return
			}
			sp := s.mount(path)
			s.mu.Lock()
			s.add(sp)
			s.mu.Unlock()
		}
	}()
}

// add makes sp ready, unless spares are no longer used (giveUp). s.mu must be held.
func (s *spareDisks) add(sp spare) {
	if s.elsewhere {
		if sp.mount != nil {
			sp.mount.Close()
		}
		return
	}
	s.ready = append(s.ready, sp)
}

// spareRefillDelay is how long after a take the refill waits while a spare is still ready. A
// spare's copy and mount are ~10 ms of I/O and system calls (an fsync, a loop device, an ext4
// mount) that slow whatever runs meanwhile, the more so what writes to the same file system (the
// daemon's records, a disk's unmount): 50 ms after a take (the warm pool's refillDelay) they
// landed on a cold create's first exec and remove. 200 ms after, on a sandbox's first commands
// at most; not much later, or creates a second apart would take the last spare every other time
// (docs/benchmarks.md, "Session 20"). A take of the last spare has the next made at once: a
// create without one copies its own (makeOwn).
const spareRefillDelay = 200 * time.Millisecond

// template is the path of the formatted image every spare is copied from. Its name changes
// with what it holds (diskDirs since "template2", no resize_inode since "template3"): an older
// daemon's template is removed at start, as one of another size is (its spares are used: a
// disk without the directories has them made when it is mounted).
func (s *spareDisks) template() string {
	return filepath.Join(s.dir, fmt.Sprintf("template3-%d.img", s.sizeMB))
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
	path := filepath.Join(s.dir, name)
	return path, s.whole(path, func(tmp string) error { return rootfs.CopyDisk(s.template(), tmp) })
}

// makeTemplate formats the template at tmp and syncs it: every spare is copied from it, so a
// host crash must not leave a template whose blocks never reached the disk.
func (s *spareDisks) makeTemplate(tmp string) error {
	if err := rootfs.MakeDisk(tmp, s.sizeMB, diskDirs); err != nil {
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

// close stops the refill and unmounts the spares; their files stay for the next daemon.
func (s *spareDisks) close() {
	s.mu.Lock()
	s.stop()
	s.mu.Unlock()
	s.wg.Wait()
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, sp := range s.ready {
		if sp.mount != nil {
			sp.mount.Close()
		}
	}
}

// makeDisk gives a container its disk image: a spare when one of the size is ready, else a
// new one (makeOwn).
func (r *Runtime) makeDisk(image, target string, sizeMB int64) (mounted bool, err error) {
	if taken, mounted := r.spares.take(image, target, sizeMB); taken {
		return mounted, nil
	}
	return false, r.spares.makeOwn(image, sizeMB)
}

// makeOwn makes image a disk of sizeMB for a create that found no spare: a copy of the
// spares' template when it is of the size and made (~5 ms), else a new file system (mkfs,
// ~20 ms).
func (s *spareDisks) makeOwn(image string, sizeMB int64) error {
	if sizeMB == s.sizeMB && sizeMB > 0 {
		if _, err := os.Stat(s.template()); err == nil {
			return rootfs.CopyDisk(s.template(), image)
		}
	}
	return rootfs.MakeDisk(image, sizeMB, diskDirs)
}
