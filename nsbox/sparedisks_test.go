package nsbox

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/nsbox/nsbox/rootfs"
)

// TestSpareDisks: spares are made in the background and mounted nowhere, a take moves one into
// place as a whole ext4 image with its file system mounted where it goes, and the refill makes
// another; closed, the spares leave no mount or loop device; a new daemon keeps complete spares
// of its size and their template, mounts them, and removes temporary files and spares and
// templates of another size.
func TestSpareDisks(t *testing.T) {
	dir := t.TempDir()
	spares := filepath.Join(dir, "disks")
	target := filepath.Join(dir, "mnt")
	t.Cleanup(func() { _ = rootfs.ReleaseDisk(filepath.Join(dir, "disk.img"), target, 5*time.Second) })
	s, err := openSpareDisks(spares, minDiskMB, t.Logf)
	if err != nil {
		t.Fatal(err)
	}
	waitSpares := func(s *spareDisks, n int) {
		t.Helper()
		for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(5 * time.Millisecond) {
			s.mu.Lock()
			ready, filling := len(s.ready), s.filling
			s.mu.Unlock()
			if ready == n && !filling {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%d spares ready (filling %v), want %d", ready, filling, n)
			}
		}
	}
	s.refill()
	waitSpares(s, spareDiskCount)
	if taken, _ := s.take(filepath.Join(dir, "other.img"), target, minDiskMB*2); taken {
		t.Fatal("took a spare of another size")
	}
	if bound := loopsBoundUnder(spares); len(bound) != spareDiskCount {
		t.Fatalf("the ready spares are bound to loop devices %v, want %d", bound, spareDiskCount)
	}
	image := filepath.Join(dir, "disk.img")
	if taken, mounted := s.take(image, target, minDiskMB); !taken || !mounted {
		t.Fatalf("with spares ready: taken %v, mounted %v", taken, mounted)
	}
	var fs unix.Statfs_t
	if err := unix.Statfs(target, &fs); err != nil || fs.Type != unix.EXT4_SUPER_MAGIC {
		t.Fatalf("the taken spare is not mounted at %s: statfs %+v, %v", target, fs, err)
	}
	if err := os.WriteFile(filepath.Join(target, "written"), []byte("x"), 0o600); err != nil {
		t.Fatalf("write on the taken spare: %v", err)
	}
	if err := rootfs.ReleaseDisk(image, target, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(image)
	if err != nil {
		t.Fatal(err)
	}
	magic := make([]byte, 2)
	_, err = f.ReadAt(magic, 1024+0x38)
	f.Close()
	if err != nil || !bytes.Equal(magic, []byte{0x53, 0xef}) {
		t.Fatalf("the taken spare is no ext4 image: magic %x, %v", magic, err)
	}
	if fi, err := os.Stat(image); err != nil || fi.Size() != minDiskMB<<20 {
		t.Fatalf("the taken spare: %v, %v", fi, err)
	}
	waitSpares(s, spareDiskCount) // refilled
	s.close()
	if bound := loopsBoundUnder(dir); len(bound) > 0 {
		t.Fatalf("closed spares left loop devices bound: %v", bound)
	}

	// A crash mid-make leaves a temporary file: the next daemon removes it, keeps the spares.
	if err := os.WriteFile(filepath.Join(spares, ".tmp-16-9.img"), []byte("half"), 0o600); err != nil {
		t.Fatal(err)
	}
	s, err = openSpareDisks(spares, minDiskMB, t.Logf)
	if err != nil {
		t.Fatal(err)
	}
	if names := dirNames(t, spares); len(names) != spareDiskCount+1 || slices.Contains(names, ".tmp-16-9.img") || !slices.Contains(names, "template3-16.img") {
		t.Fatalf("after a restart the spares dir holds %v", names)
	}
	if taken, mounted := s.take(filepath.Join(dir, "again.img"), target, minDiskMB); !taken || mounted {
		t.Fatalf("a restarted daemon's take before its refill: taken %v, mounted %v (want a found spare, not mounted yet)", taken, mounted)
	}
	s.refill()
	waitSpares(s, spareDiskCount) // the other found one mounted, one made
	if taken, mounted := s.take(filepath.Join(dir, "again2.img"), target, minDiskMB); !taken || !mounted {
		t.Fatalf("a restarted daemon's take after its refill: taken %v, mounted %v", taken, mounted)
	}
	if err := rootfs.ReleaseDisk(filepath.Join(dir, "again2.img"), target, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	s.close()
	if bound := loopsBoundUnder(dir); len(bound) > 0 {
		t.Fatalf("closed spares left loop devices bound: %v", bound)
	}
	// Another default size: the old spares go; no default disk: none are made.
	if _, err = openSpareDisks(spares, 0, t.Logf); err != nil {
		t.Fatal(err)
	}
	if names := dirNames(t, spares); len(names) != 0 {
		t.Fatalf("with no default disk the spares dir holds %v", names)
	}
}

// TestSpareDisksRefill: while a spare is still ready the refill waits (here for good), once
// the last is taken it makes one at once; a create that finds none copies the template (its
// file system's UUID is the template's), or formats a disk of another size.
func TestSpareDisksRefill(t *testing.T) {
	dir := t.TempDir()
	s, err := openSpareDisks(filepath.Join(dir, "disks"), minDiskMB, t.Logf)
	if err != nil {
		t.Fatal(err)
	}
	s.delay = time.Hour
	t.Cleanup(func() {
		s.close()
		if bound := loopsBoundUnder(dir); len(bound) > 0 {
			t.Errorf("closed spares left loop devices bound: %v", bound)
		}
	})
	s.refill()
	waitReadySpares(t, s, spareDiskCount) // no take yet: no wait
	take := func(name string) {
		t.Helper()
		image, target := filepath.Join(dir, name+".img"), filepath.Join(dir, name)
		if taken, mounted := s.take(image, target, minDiskMB); !taken || !mounted {
			t.Fatalf("take %s: taken %v, mounted %v", name, taken, mounted)
		}
		t.Cleanup(func() {
			if err := rootfs.ReleaseDisk(image, target, 5*time.Second); err != nil {
				t.Error(err)
			}
		})
	}
	for i := range spareDiskCount - 1 {
		take(fmt.Sprint("a", i))
	}
	time.Sleep(300 * time.Millisecond)
	if n := readySpares(s); n != 1 {
		t.Fatalf("with a spare still ready the refill made one at once: %d ready", n)
	}
	take("last")
	waitReadySpares(t, s, 1)
	time.Sleep(300 * time.Millisecond)
	if n := readySpares(s); n != 1 {
		t.Fatalf("after the last spare was taken the refill made %d, want 1 before it waits again", n)
	}

	uuid := func(image string) []byte {
		t.Helper()
		f, err := os.Open(image)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		id := make([]byte, 16)
		if _, err := f.ReadAt(id, 1024+0x68); err != nil { // the superblock's s_uuid
			t.Fatal(err)
		}
		return id
	}
	copied := filepath.Join(dir, "own.img")
	if err := s.makeOwn(copied, minDiskMB); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(uuid(copied), uuid(s.template())) {
		t.Error("a disk of the spares' size made without a spare is not a copy of their template")
	}
	formatted := filepath.Join(dir, "other.img")
	if err := s.makeOwn(formatted, minDiskMB*2); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(formatted); err != nil || fi.Size() != minDiskMB*2<<20 || bytes.Equal(uuid(formatted), uuid(s.template())) {
		t.Errorf("a disk of another size: %v, %v (want a new file system of %d MiB)", fi, err, minDiskMB*2)
	}
}

// TestSpareDisksOnAnotherFileSystem: when the sandboxes' disks are on another file system than
// the spares (a rename fails with EXDEV), a take gives up on spares for good: it takes none,
// their mounts and loop devices are released, their files kept, and none are made again.
func TestSpareDisksOnAnotherFileSystem(t *testing.T) {
	dir := t.TempDir()
	spares := filepath.Join(dir, "disks")
	s, err := openSpareDisks(spares, minDiskMB, t.Logf)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.close)
	s.refill()
	waitReadySpares(t, s, spareDiskCount)
	other := filepath.Join(dir, "sandboxes")
	if err := os.Mkdir(other, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount("nsbox-test-other", other, "tmpfs", 0, "size=64m"); err != nil {
		t.Fatalf("mount a tmpfs for the sandboxes: %v", err)
	}
	t.Cleanup(func() {
		if err := unix.Unmount(other, 0); err != nil {
			t.Errorf("unmount %s: %v", other, err)
		}
	})
	for i := range 2 {
		image, target := filepath.Join(other, fmt.Sprint(i, ".img")), filepath.Join(other, fmt.Sprint(i))
		if taken, _ := s.take(image, target, minDiskMB); taken {
			t.Fatalf("take %d onto another file system: taken", i)
		}
	}
	time.Sleep(300 * time.Millisecond) // a refill would have begun
	s.mu.Lock()
	ready, filling := len(s.ready), s.filling
	s.mu.Unlock()
	if ready != 0 || filling {
		t.Errorf("spares after giving up: %d ready, filling %v", ready, filling)
	}
	for deadline := time.Now().Add(10 * time.Second); len(loopsBoundUnder(spares)) > 0; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("the spares' loop devices are still bound: %v", loopsBoundUnder(spares))
		}
	}
	if imgs, _ := filepath.Glob(filepath.Join(spares, fmt.Sprintf("%d-*.img", minDiskMB))); len(imgs) != spareDiskCount {
		t.Errorf("the spares' files: %v, want %d kept", imgs, spareDiskCount)
	}
	if err := s.makeOwn(filepath.Join(other, "own.img"), minDiskMB); err != nil {
		t.Errorf("a disk made without a spare on the other file system: %v", err)
	}
}

// readySpares is how many spares are ready.
func readySpares(s *spareDisks) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.ready)
}

// waitReadySpares waits until n spares are ready.
func waitReadySpares(t *testing.T, s *spareDisks, n int) {
	t.Helper()
	for deadline := time.Now().Add(30 * time.Second); readySpares(s) != n; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%d spares ready, want %d", readySpares(s), n)
		}
	}
}

// loopsBoundUnder lists the loop devices bound to files under dir.
func loopsBoundUnder(dir string) []string {
	var out []string
	files, _ := filepath.Glob("/sys/block/loop*/loop/backing_file")
	for _, f := range files {
		if data, err := os.ReadFile(f); err == nil && strings.HasPrefix(string(data), dir+"/") {
			out = append(out, strings.TrimSpace(string(data)))
		}
	}
	return out
}

func dirNames(t *testing.T, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	return names
}
