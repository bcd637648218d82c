package rootfs

import (
	"archive/tar"
	"bytes"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// mk makes files (content) and directories (a path ending in /) under dir.
func mk(t *testing.T, dir string, paths map[string]string) {
	t.Helper()
	for p, content := range paths {
		full := filepath.Join(dir, p)
		if p[len(p)-1] == '/' {
			if err := os.MkdirAll(full, 0o755); err != nil {
				t.Fatal(err)
			}
			continue
		}
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(full, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

func whiteout(t *testing.T, path string) {
	t.Helper()
	if err := unix.Mknod(path, unix.S_IFCHR|0o000, 0); err != nil {
		t.Fatal(err)
	}
}

func opaque(t *testing.T, dir string) {
	t.Helper()
	if err := unix.Setxattr(dir, "trusted.overlay.opaque", []byte("y"), 0); err != nil {
		t.Fatal(err)
	}
}

// TestDiffReadsOverlayMarks builds an upper dir by hand, with the marks overlayfs makes, and
// checks every rule of Diff and Export, including an opaque directory nested in another.
func TestDiffReadsOverlayMarks(t *testing.T) {
	lower, upper := t.TempDir(), t.TempDir()
	mk(t, lower, map[string]string{
		"keep": "k", "del": "d", "mod": "m", "deldir/x": "x", "o/a": "a", "o/b": "b", "o/in/c": "c", "o/in/d": "d",
		"f2d": "f", "d2f/x": "x", "sub/y": "y", "sub/z": "z",
	})
	mk(t, upper, map[string]string{
		"new": "new", "mod": "m2", "o/a": "a2", "o/in/c": "c2", "f2d/inside": "i", "d2f": "now a file",
		"sub/y": "y2", "newdir/deep/f": "f",
	})
	whiteout(t, filepath.Join(upper, "del"))
	whiteout(t, filepath.Join(upper, "deldir"))
	whiteout(t, filepath.Join(upper, "sub", "z"))
	whiteout(t, filepath.Join(upper, "ghost")) // nothing below: nothing to report
	opaque(t, filepath.Join(upper, "o"))
	opaque(t, filepath.Join(upper, "f2d"))
	if err := os.Symlink("keep", filepath.Join(upper, "link")); err != nil {
		t.Fatal(err)
	}
	changes, err := Diff(upper, lower)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, c := range changes {
		got = append(got, c.Kind+" "+c.Type+" "+c.Path)
	}
	want := []string{
		"deleted file del", "deleted dir deldir",
		"deleted dir d2f", "added file d2f",
		"deleted file f2d", "added dir f2d", "added file f2d/inside",
		"added symlink link", "modified file mod", "added file new",
		"added dir newdir", "added dir newdir/deep", "added file newdir/deep/f",
		// o is opaque: b is gone; in inherits it: d is gone, c was replaced.
		"deleted file o/b", "modified file o/a", "deleted file o/in/d", "modified file o/in/c",
		"modified file sub/y", "deleted file sub/z",
	}
	slices.Sort(got)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Fatalf("diff:\ngot  %q\nwant %q", got, want)
	}

	var buf bytes.Buffer
	if err := Export(&buf, upper, lower); err != nil {
		t.Fatal(err)
	}
	entries := map[string]string{}
	tr := tar.NewReader(&buf)
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		data, _ := io.ReadAll(tr)
		entries[hdr.Name] = string(hdr.Typeflag) + ":" + string(data) + hdr.Linkname
	}
	wantTar := map[string]string{
		".wh.del": "0:", ".wh.deldir": "0:", ".wh.d2f": "0:", "d2f": "0:now a file", ".wh.f2d": "0:", "f2d/": "5:",
		"f2d/inside": "0:i", "link": "2:keep", "mod": "0:m2", "new": "0:new", "newdir/": "5:", "newdir/deep/": "5:",
		"newdir/deep/f": "0:f", "o/.wh.b": "0:", "o/a": "0:a2", "o/in/.wh.d": "0:", "o/in/c": "0:c2", "sub/y": "0:y2",
		"sub/.wh.z": "0:",
	}
	if len(entries) != len(wantTar) {
		t.Fatalf("export has %d entries, want %d: %q", len(entries), len(wantTar), entries)
	}
	for name, v := range wantTar {
		if entries[name] != v {
			t.Errorf("export %s = %q, want %q", name, entries[name], v)
		}
	}
}

// TestDiskLifecycle makes, mounts and releases a disk, made by mkfs.ext4 (with directories)
// or copied from one that was: it holds its directories, with their modes, and data up to its
// size, and leaves no loop device behind.
func TestDiskLifecycle(t *testing.T) {
	dir := t.TempDir()
	template := filepath.Join(dir, "template.img")
	if err := MakeDisk(template, 16, diskDirs); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(template + ".dirs"); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("MakeDisk left its directories' source: %v", err)
	}
	t.Run("made", func(t *testing.T) { diskLifecycle(t, template) })
	copied := filepath.Join(dir, "copy.img")
	if err := CopyDisk(template, copied); err != nil {
		t.Fatal(err)
	}
	var tst, cst unix.Stat_t
	if err := unix.Stat(template, &tst); err != nil {
		t.Fatal(err)
	}
	if err := unix.Stat(copied, &cst); err != nil {
		t.Fatal(err)
	}
	if cst.Size != tst.Size || cst.Blocks > tst.Blocks || cst.Blocks == 0 {
		t.Fatalf("the copy: %d bytes in %d blocks; the template %d in %d: holes lost or data missing", cst.Size, cst.Blocks, tst.Size, tst.Blocks)
	}
	// The copy went past the page cache: on a file system that caches, none of it is there.
	var fs unix.Statfs_t
	if err := unix.Statfs(dir, &fs); err != nil {
		t.Fatal(err)
	}
	if fs.Type != unix.TMPFS_MAGIC {
		if cached := cachedPages(t, copied); cached > 0 {
			t.Errorf("%d pages of the copy are in the page cache: it was not copied past it", cached)
		}
	}
	if err := CopyDisk(template, copied); err == nil {
		t.Error("CopyDisk over an existing image succeeded")
	}
	t.Run("copied", func(t *testing.T) { diskLifecycle(t, copied) })
}

// TestDiskOfTheDefaultSizeIsSmall: a new 10 GiB disk (the default size) holds well under a
// MiB of data, which is what every spare disk copies and writes: with the blocks ext4 reserves
// for growing by default (resize_inode), 4.2 MB.
func TestDiskOfTheDefaultSizeIsSmall(t *testing.T) {
	image := filepath.Join(t.TempDir(), "disk.img")
	if err := MakeDisk(image, 10<<10, diskDirs); err != nil {
		t.Fatal(err)
	}
	var st unix.Stat_t
	if err := unix.Stat(image, &st); err != nil {
		t.Fatal(err)
	}
	if data := st.Blocks * 512; data > 512<<10 {
		t.Errorf("a new 10 GiB disk holds %d KiB of data; want under 512 KiB", data>>10)
	}
}

// TestDiskOnAFullHostDisk: making or copying a disk where the host's file system is full
// fails with ENOSPC, which the daemon answers as the host's lack of room; mkfs says so only in
// its output.
func TestDiskOnAFullHostDisk(t *testing.T) {
	template := filepath.Join(t.TempDir(), "template.img")
	if err := MakeDisk(template, 16, diskDirs); err != nil {
		t.Fatal(err)
	}
	full := t.TempDir()
	if err := unix.Mount("nsbox-test-full", full, "tmpfs", 0, "size=1m"); err != nil {
		t.Fatalf("mount a small tmpfs: %v", err)
	}
	defer func() {
		if err := unix.Unmount(full, 0); err != nil {
			t.Errorf("unmount %s: %v", full, err)
		}
	}()
	if err := os.WriteFile(filepath.Join(full, "filler"), make([]byte, 2<<20), 0o600); !errors.Is(err, unix.ENOSPC) {
		t.Fatalf("filling the tmpfs: %v", err)
	}
	if err := MakeDisk(filepath.Join(full, "made.img"), 16, diskDirs); !errors.Is(err, unix.ENOSPC) {
		t.Errorf("MakeDisk on a full file system: %v, want ENOSPC", err)
	}
	if err := CopyDisk(template, filepath.Join(full, "copied.img")); !errors.Is(err, unix.ENOSPC) {
		t.Errorf("CopyDisk on a full file system: %v, want ENOSPC", err)
	}
}

// TestDiskMountWarm: a disk mounted nowhere and warmed (a spare's) is attached with its
// directories as they were made, root's; a directory the disk does not have is left.
func TestDiskMountWarm(t *testing.T) {
	dir := t.TempDir()
	image := filepath.Join(dir, "disk.img")
	if err := MakeDisk(image, 16, diskDirs); err != nil {
		t.Fatal(err)
	}
	m, err := OpenDiskMount(image)
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Warm(append(diskDirs, DiskDir{"missing", 0o755})); err != nil {
		m.Close()
		t.Fatal(err)
	}
	target := filepath.Join(dir, "mnt")
	if err := m.Attach(target); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ReleaseDisk(image, target, 5e9) })
	for _, d := range diskDirs {
		var st unix.Stat_t
		if err := unix.Stat(filepath.Join(target, d.Name), &st); err != nil || os.FileMode(st.Mode&0o7777) != d.Mode || st.Uid != 0 || st.Gid != 0 {
			t.Errorf("the warmed disk's %q: mode %o, owner %d:%d, %v", d.Name, st.Mode, st.Uid, st.Gid, err)
		}
	}
}

// diskDirs are what TestDiskLifecycle's disks are made with.
var diskDirs = []DiskDir{{"upper", 0o755}, {"private", 0o700}}

func diskLifecycle(t *testing.T, image string) {
	target := filepath.Join(t.TempDir(), "mnt")
	if err := MountDisk(image, target); err != nil {
		t.Fatal(err)
	}
	for _, d := range append([]DiskDir{{"", 0o755}}, diskDirs...) {
		var st unix.Stat_t
		if err := unix.Stat(filepath.Join(target, d.Name), &st); err != nil || st.Mode&unix.S_IFMT != unix.S_IFDIR || os.FileMode(st.Mode&0o7777) != d.Mode || st.Uid != 0 {
			t.Errorf("the disk's %q: mode %o, uid %d, %v; want a directory of mode %o, root's", d.Name, st.Mode, st.Uid, err, d.Mode)
		}
	}
	mountinfo, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	mounted := false
	for _, line := range strings.Split(string(mountinfo), "\n") {
		if fields := strings.Fields(line); len(fields) > 4 && fields[4] == target {
			mounted = true
			superOptions := strings.Split(fields[len(fields)-1], ",")
			for _, flag := range diskMountFlags {
				if !slices.Contains(superOptions, flag) {
					t.Errorf("the disk is mounted without %s: %s", flag, line)
				}
			}
		}
	}
	if !mounted {
		t.Errorf("%s is not in the mount table", target)
	}
	devs := LoopDevices(image)
	if len(devs) != 1 {
		t.Fatalf("loop devices on the image: %v", devs)
	}
	if dev, ok := loopDeviceOf(target); !ok || dev != devs[0] {
		t.Errorf("the device of the mount = %q, %v; want %s", dev, ok, devs[0])
	}
	err = os.WriteFile(filepath.Join(target, "big"), make([]byte, 32<<20), 0o644)
	if !errors.Is(err, unix.ENOSPC) {
		t.Errorf("writing 32 MiB to a 16 MiB disk: %v", err)
	}
	if err := ReleaseDisk(image, target, 5e9); err != nil {
		t.Fatal(err)
	}
	if devs := LoopDevices(image); len(devs) != 0 {
		t.Fatalf("loop devices left: %v", devs)
	}
	loopRemoved(t, devs[0])
	if err := ReleaseDisk(image, target, 5e9); err != nil {
		t.Fatalf("releasing twice: %v", err)
	}
	if err := MakeDisk(image, 16, diskDirs); err == nil {
		t.Error("MakeDisk over an existing image succeeded")
	}
	if out, err := exec.Command("e2fsck", "-fn", image).CombinedOutput(); err != nil {
		t.Errorf("e2fsck of the released disk: %v\n%s", err, out)
	}
}

// loopRemoved fails t unless the released loop device dev is gone, or bound again (another
// test's disk took it before it could go), within a second.
func loopRemoved(t *testing.T, dev string) {
	t.Helper()
	backing := filepath.Join("/sys/block", filepath.Base(dev), "loop/backing_file")
	for deadline := time.Now().Add(time.Second); ; time.Sleep(10 * time.Millisecond) {
		_, err := os.Stat(filepath.Join("/sys/block", filepath.Base(dev)))
		if errors.Is(err, os.ErrNotExist) {
			return
		}
		if _, err := os.Stat(backing); err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the released loop device %s is still there, bound to nothing", dev)
		}
	}
}

// cachedPages counts the pages of the file at path that are in the page cache.
func cachedPages(t *testing.T, path string) int {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		t.Fatal(err)
	}
	mem, err := unix.Mmap(int(f.Fd()), 0, int(fi.Size()), unix.PROT_READ, unix.MAP_SHARED)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Munmap(mem)
	pages := make([]byte, (len(mem)+os.Getpagesize()-1)/os.Getpagesize())
	if _, _, errno := unix.Syscall(unix.SYS_MINCORE, uintptr(unsafe.Pointer(&mem[0])), uintptr(len(mem)), uintptr(unsafe.Pointer(&pages[0]))); errno != 0 {
		t.Fatal(errno)
	}
	n := 0
	for _, p := range pages {
		n += int(p & 1)
	}
	return n
}
