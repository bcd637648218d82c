package rootfs

import (
	"archive/tar"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"slices"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/nsbox/nsbox/api"
)

// An overlay's upper directory records what changed against its lower one (mounted with
// redirect_dir and metacopy off, so there are only three kinds of marks):
//   - an entry present in upper was created, or copied up because it was written or its
//     metadata changed;
//   - a whiteout (a character device 0/0) deletes the lower entry of that name;
//   - a directory with the xattr trusted.overlay.opaque=y hides everything the lower one had
//     (a directory removed and made again).
// Diff turns these into a list of changes against the lower directory, and Export into a tar.

// WhiteoutPrefix marks a deletion in an exported tar, as in OCI image layers: an empty file
// ".wh.NAME" means NAME was deleted.
const WhiteoutPrefix = ".wh."

// OverlayOptions are the options every overlay nsbox mounts is given, so that its upper dir
// holds nothing but the marks Diff reads.
const OverlayOptions = "redirect_dir=off,metacopy=off,index=off"

// Diff lists what the overlay with the given upper dir changed against lower, sorted by path
// (deletions inside a directory first). Paths are relative to the overlay's root.
func Diff(upper, lower string) ([]api.WorkspaceChange, error) {
	d, err := openDiffer(upper, lower)
	if err != nil {
		return nil, err
	}
	defer d.close()
	if err := d.dir(".", d.opaque(".")); err != nil {
		return nil, err
	}
	return d.out, nil
}

type differ struct {
	upper, lower *os.Root
	out          []api.WorkspaceChange
}

func openDiffer(upper, lower string) (*differ, error) {
	u, l, err := openRoots(upper, "upper dir", lower, "lower dir")
	if err != nil {
		return nil, err
	}
	return &differ{upper: u, lower: l}, nil
}

// openRoots opens the directories a and b as roots, naming them in its errors.
func openRoots(a, aName, b, bName string) (*os.Root, *os.Root, error) {
	ra, err := os.OpenRoot(a)
	if err != nil {
		return nil, nil, fmt.Errorf("open %s: %w", aName, err)
	}
	rb, err := os.OpenRoot(b)
	if err != nil {
		ra.Close()
		return nil, nil, fmt.Errorf("open %s: %w", bName, err)
	}
	return ra, rb, nil
}

func (d *differ) close() {
	d.upper.Close()
	d.lower.Close()
}

func (d *differ) add(p, kind string, fi fs.FileInfo) {
	c := api.WorkspaceChange{Path: p, Kind: kind, Type: FileType(fi.Mode())}
	if kind != api.ChangeDeleted && !fi.IsDir() {
		c.Size = fi.Size()
	}
	d.out = append(d.out, c)
}

// dir lists the changes under rel, a directory of upper. opaque means the lower directory's
// own entries are hidden: those upper does not have are deleted.
func (d *differ) dir(rel string, opaque bool) error {
	names, err := readNames(d.upper, rel)
	if err != nil {
		return err
	}
	if opaque {
		lowerNames, _ := readNames(d.lower, rel) // a lower that is not a directory has none
		for _, name := range lowerNames {
			if _, found := slices.BinarySearch(names, name); !found {
				if fi, err := d.lower.Lstat(path.Join(rel, name)); err == nil {
					d.add(path.Join(rel, name), api.ChangeDeleted, fi)
				}
			}
		}
	}
	for _, name := range names {
		p := path.Join(rel, name)
		fi, err := d.upper.Lstat(p)
		if errors.Is(err, fs.ErrNotExist) {
			continue // removed meanwhile
		}
		if err != nil {
			return fmt.Errorf("diff %s: %w", p, err)
		}
		lfi, lerr := d.lower.Lstat(p)
		onHost := lerr == nil
		if isWhiteout(fi) {
			if onHost {
				d.add(p, api.ChangeDeleted, lfi)
			}
			continue
		}
		// A changed type is a deletion and an addition.
		if onHost && lfi.IsDir() != fi.IsDir() {
			d.add(p, api.ChangeDeleted, lfi)
			onHost = false
		}
		switch {
		case fi.IsDir():
			if !onHost {
				d.add(p, api.ChangeAdded, fi)
			}
			if err := d.dir(p, onHost && (opaque || d.opaque(p))); err != nil {
				return err
			}
		case onHost:
			d.add(p, api.ChangeModified, fi)
		default:
			d.add(p, api.ChangeAdded, fi)
		}
	}
	return nil
}

// opaque reports whether the upper directory rel hides its lower counterpart.
func (d *differ) opaque(rel string) bool {
	f, err := openDir(d.upper, rel)
	if err != nil {
		return false
	}
	defer f.Close()
	buf := make([]byte, 8)
	n, err := unix.Fgetxattr(int(f.Fd()), "trusted.overlay.opaque", buf)
	return err == nil && string(buf[:n]) == "y"
}

// openDir opens a directory of the tree without following a symlink and without blocking: the
// sandbox can swap a FIFO in at any moment, and an open of a FIFO waits for a writer.
func openDir(root *os.Root, rel string) (*os.File, error) {
	return root.OpenFile(rel, os.O_RDONLY|unix.O_NONBLOCK|unix.O_DIRECTORY|unix.O_NOFOLLOW, 0)
}

func readNames(root *os.Root, rel string) ([]string, error) {
	f, err := openDir(root, rel)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", rel, err)
	}
	defer f.Close()
	names, err := f.Readdirnames(-1)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", rel, err)
	}
	slices.Sort(names)
	return names, nil
}

func isWhiteout(fi fs.FileInfo) bool {
	st, ok := fi.Sys().(*syscall.Stat_t)
	return fi.Mode()&fs.ModeCharDevice != 0 && ok && st.Rdev == 0
}

// FileType names a file's type as the API does: file, dir, symlink or other.
func FileType(m fs.FileMode) string {
	switch {
	case m.IsRegular():
		return "file"
	case m.IsDir():
		return "dir"
	case m&fs.ModeSymlink != 0:
		return "symlink"
	}
	return "other"
}

// Export writes the overlay's changes against lower as a tar stream: added and modified
// entries with their content, owner, mode and mtime; each deletion as an empty ".wh.NAME"
// file (the OCI layer convention). A directory that only holds changes is not an entry
// itself. Sockets cannot be put in a tar and are left out. Entries that vanish while the
// tar is written are left out too. Files lose setuid and setgid. Owners are the sandbox's ids: the upper dir belongs to
// the sandbox's root (MountOverlay), whose host id starts its user namespace's range.
func Export(w io.Writer, upper, lower string) error {
	changes, err := Diff(upper, lower)
	if err != nil {
		return err
	}
	root, err := os.OpenRoot(upper)
	if err != nil {
		return fmt.Errorf("open upper dir: %w", err)
	}
	defer root.Close()
	var ids IDMap
	if fi, err := root.Stat("."); err == nil {
		if st, ok := fi.Sys().(*syscall.Stat_t); ok && st.Uid != 0 {
			ids = IDMap{Host: st.Uid, Size: IDsPerSandbox}
		}
	}
	tw := tar.NewWriter(w)
	for _, c := range changes {
		if err := exportOne(tw, root, c, ids); err != nil {
			return err
		}
	}
	return tw.Close()
}

func exportOne(tw *tar.Writer, root *os.Root, c api.WorkspaceChange, ids IDMap) error {
	if c.Kind == api.ChangeDeleted {
		dir, name := path.Split(c.Path)
		return tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: dir + WhiteoutPrefix + name, Mode: 0o644, ModTime: time.Now()})
	}
	fi, err := root.Lstat(c.Path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("export %s: %w", c.Path, err)
	}
	var link string
	if fi.Mode()&fs.ModeSymlink != 0 {
		if link, err = root.Readlink(c.Path); err != nil {
			return fmt.Errorf("export %s: %w", c.Path, err)
		}
	}
	if fi.Mode()&fs.ModeSocket != 0 {
		return nil
	}
	hdr, err := tar.FileInfoHeader(fi, link)
	if err != nil {
		return fmt.Errorf("export %s: %w", c.Path, err)
	}
	hdr.Name, hdr.Uname, hdr.Gname = c.Path, "", ""
	if fi.IsDir() {
		hdr.Name += "/"
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		hdr.Uid, hdr.Gid = int(ids.Inside(st.Uid)), int(ids.Inside(st.Gid))
	}
	if !fi.Mode().IsRegular() {
		return tw.WriteHeader(hdr)
	}
	// A file a sandbox made must not run with the rights of whoever extracts the tar.
	hdr.Mode &^= 0o6000
	// Non-blocking: the sandbox may have swapped a FIFO in since the diff.
	f, err := root.OpenFile(c.Path, os.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK, 0)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("export %s: %w", c.Path, err)
	}
	defer f.Close()
	if now, err := f.Stat(); err != nil || !now.Mode().IsRegular() || now.Size() != fi.Size() {
		return fmt.Errorf("export %s: it changed while being exported", c.Path)
	}
	if err := tw.WriteHeader(hdr); err != nil {
		return err
	}
	// The header promised hdr.Size bytes: a file that shrank meanwhile is padded with zeroes,
	// one that grew is cut, so the tar stays well-formed.
	n, err := io.Copy(tw, io.LimitReader(f, hdr.Size))
	if err != nil {
		return fmt.Errorf("export %s: %w", c.Path, err)
	}
	if n < hdr.Size {
		if _, err := io.CopyN(tw, zeroReader{}, hdr.Size-n); err != nil {
			return fmt.Errorf("export %s: %w", c.Path, err)
		}
	}
	return nil
}

type zeroReader struct{}

func (zeroReader) Read(p []byte) (int, error) {
	clear(p)
	return len(p), nil
}
