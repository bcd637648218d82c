package nsbox

import (
	"bytes"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"
)

// TestSpareDisks: spares are made in the background, a take moves one into place as a whole
// ext4 image and the refill makes another; a new daemon keeps complete spares of its size and
// their template, and removes temporary files and spares and templates of another size.
func TestSpareDisks(t *testing.T) {
	dir := t.TempDir()
	spares := filepath.Join(dir, "disks")
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
	if s.take(filepath.Join(dir, "other.img"), minDiskMB*2) {
		t.Fatal("took a spare of another size")
	}
	image := filepath.Join(dir, "disk.img")
	if !s.take(image, minDiskMB) {
		t.Fatal("no spare taken with spares ready")
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

	// A crash mid-make leaves a temporary file: the next daemon removes it, keeps the spares.
	if err := os.WriteFile(filepath.Join(spares, ".tmp-16-9.img"), []byte("half"), 0o600); err != nil {
		t.Fatal(err)
	}
	s, err = openSpareDisks(spares, minDiskMB, t.Logf)
	if err != nil {
		t.Fatal(err)
	}
	if names := dirNames(t, spares); len(names) != spareDiskCount+1 || slices.Contains(names, ".tmp-16-9.img") || !slices.Contains(names, "template-16.img") {
		t.Fatalf("after a restart the spares dir holds %v", names)
	}
	if !s.take(filepath.Join(dir, "again.img"), minDiskMB) {
		t.Fatal("a restarted daemon did not use the spares it found")
	}
	s.close()
	// Another default size: the old spares go; no default disk: none are made.
	if _, err = openSpareDisks(spares, 0, t.Logf); err != nil {
		t.Fatal(err)
	}
	if names := dirNames(t, spares); len(names) != 0 {
		t.Fatalf("with no default disk the spares dir holds %v", names)
	}
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
