package rootfs

import (
	"archive/tar"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// ErrLayerTooLarge is ExportLayer's error for files beyond its bound.
var ErrLayerTooLarge = errors.New("the files hold more than the disk's size")

// ExportLayer writes an overlay's upper dir as an OCI layer's tar stream: the layer that, put
// over the same lowers, gives the same tree (a snapshot of a sandbox). Unlike Export it needs
// no lower and keeps the upper's own marks: a whiteout becomes ".wh.NAME", an opaque directory
// a ".wh..wh..opq" entry in it. Owners are shifted back through ids (host id − ids.Host: the
// sandbox's own ids; ids outside it become nobody), so that the layer can be id-mapped for any
// other sandbox as image layers are. Hard links stay hard links. Kept: modes without setuid
// and setgid (sandboxes' roots are nosuid anyway), times, symlinks, FIFOs, and user.* xattrs;
// left out: sockets, device nodes other than whiteouts, and the other xattrs (overlayfs' own,
// file capabilities and ACLs, which name host ids). The upper must not change meanwhile (its
// sandbox frozen). maxBytes, when not 0, bounds the files' content: a sparse file counts at
// its full size, and a disk of N bytes cannot hold more than N bytes of anything else.
func ExportLayer(w io.Writer, upper string, ids IDMap, maxBytes int64) error {
	root, err := os.OpenRoot(upper)
	if err != nil {
		return fmt.Errorf("open upper dir: %w", err)
	}
	defer root.Close()
	e := &layerExporter{root: root, tw: tar.NewWriter(w), ids: ids, links: map[[2]uint64]string{}, left: maxBytes, bounded: maxBytes > 0}
	if err := e.walk("."); err != nil {
		return err
	}
	return e.tw.Close()
}

type layerExporter struct {
	root  *os.Root
	tw    *tar.Writer
	ids   IDMap
	links map[[2]uint64]string // the first path of each file with several links, by device and inode
	// left is how many bytes of content may still be written, when bounded.
	left    int64
	bounded bool
}

// walk writes the entry rel and, for a directory, everything under it (sorted, so that the
// same tree gives the same stream and digest).
func (e *layerExporter) walk(rel string) error {
	fi, err := e.root.Lstat(rel)
	if err != nil {
		return fmt.Errorf("export %s: %w", rel, err)
	}
	if !fi.IsDir() {
		return e.entry(rel, fi)
	}
	f, err := openDir(e.root, rel)
	if err != nil {
		return fmt.Errorf("export %s: %w", rel, err)
	}
	defer f.Close()
	hdr, err := e.header(rel, fi, "")
	if err != nil {
		return err
	}
	hdr.Name += "/"
	if err := e.xattrs(hdr, int(f.Fd())); err != nil {
		return fmt.Errorf("export %s: %w", rel, err)
	}
	if err := e.tw.WriteHeader(hdr); err != nil {
		return fmt.Errorf("export %s: %w", rel, err)
	}
	buf := make([]byte, 8)
	if n, err := unix.Fgetxattr(int(f.Fd()), "trusted.overlay.opaque", buf); err == nil && string(buf[:n]) == "y" {
		if err := e.tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: path.Join(rel, WhiteoutPrefix+WhiteoutPrefix+".opq"),
			Mode: 0o644, ModTime: fi.ModTime()}); err != nil {
			return fmt.Errorf("export %s: %w", rel, err)
		}
	}
	names, err := readNames(e.root, rel)
	if err != nil {
		return err
	}
	for _, name := range names {
		if err := e.walk(path.Join(rel, name)); err != nil {
			return err
		}
	}
	return nil
}

// entry writes one entry that is not a directory.
func (e *layerExporter) entry(rel string, fi fs.FileInfo) error {
	st, _ := fi.Sys().(*syscall.Stat_t)
	switch {
	case isWhiteout(fi):
		dir, name := path.Split(rel)
		return e.write(rel, &tar.Header{Typeflag: tar.TypeReg, Name: dir + WhiteoutPrefix + name, Mode: 0o644, ModTime: fi.ModTime()})
	case fi.Mode()&(fs.ModeSocket|fs.ModeDevice|fs.ModeCharDevice) != 0:
		return nil
	case fi.Mode()&fs.ModeSymlink != 0:
		link, err := e.root.Readlink(rel)
		if err != nil {
			return fmt.Errorf("export %s: %w", rel, err)
		}
		hdr, err := e.header(rel, fi, link)
		if err != nil {
			return err
		}
		return e.write(rel, hdr)
	case fi.Mode()&fs.ModeNamedPipe != 0:
		hdr, err := e.header(rel, fi, "")
		if err != nil {
			return err
		}
		return e.write(rel, hdr)
	}
	if st != nil && st.Nlink > 1 {
		key := [2]uint64{st.Dev, st.Ino}
		if first, ok := e.links[key]; ok {
			return e.write(rel, &tar.Header{Typeflag: tar.TypeLink, Name: rel, Linkname: first, ModTime: fi.ModTime()})
		}
		e.links[key] = rel
	}
	if e.left -= fi.Size(); e.bounded && e.left < 0 {
		return fmt.Errorf("export %s: %w (a sparse file counts at its full size of %d bytes)", rel, ErrLayerTooLarge, fi.Size())
	}
	f, err := e.root.OpenFile(rel, os.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK, 0)
	if err != nil {
		return fmt.Errorf("export %s: %w", rel, err)
	}
	defer f.Close()
	hdr, err := e.header(rel, fi, "")
	if err != nil {
		return err
	}
	if err := e.xattrs(hdr, int(f.Fd())); err != nil {
		return fmt.Errorf("export %s: %w", rel, err)
	}
	if err := e.write(rel, hdr); err != nil {
		return err
	}
	if n, err := io.Copy(e.tw, f); err != nil || n != hdr.Size {
		return fmt.Errorf("export %s: wrote %d of %d bytes: %w", rel, n, hdr.Size, errors.Join(err, errors.New("it changed while being exported")))
	}
	return nil
}

// header is rel's tar header, its owner shifted back into the sandbox's ids.
func (e *layerExporter) header(rel string, fi fs.FileInfo, link string) (*tar.Header, error) {
	hdr, err := tar.FileInfoHeader(fi, link)
	if err != nil {
		return nil, fmt.Errorf("export %s: %w", rel, err)
	}
	hdr.Name, hdr.Uname, hdr.Gname = rel, "", ""
	// Reading a file may change its atime, and ctime changes with any chown: only the mtime
	// is kept, so that the same tree is the same stream.
	hdr.AccessTime, hdr.ChangeTime = time.Time{}, time.Time{}
	if fi.Mode().IsRegular() {
		hdr.Mode &^= 0o6000
	}
	hdr.Format = tar.FormatPAX // sub-second times and xattrs
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		hdr.Uid, hdr.Gid = int(e.ids.Inside(st.Uid)), int(e.ids.Inside(st.Gid))
	}
	return hdr, nil
}

// xattrs adds the user.* xattrs of the open file fd to hdr.
func (e *layerExporter) xattrs(hdr *tar.Header, fd int) error {
	attrs, err := userXattrs(fd)
	if err != nil {
		return err
	}
	for name, value := range attrs {
		if hdr.PAXRecords == nil {
			hdr.PAXRecords = map[string]string{}
		}
		hdr.PAXRecords["SCHILY.xattr."+name] = value
	}
	return nil
}

func (e *layerExporter) write(rel string, hdr *tar.Header) error {
	if hdr.Format == tar.FormatUnknown {
		hdr.Format = tar.FormatPAX
	}
	if err := e.tw.WriteHeader(hdr); err != nil {
		return fmt.Errorf("export %s: %w", rel, err)
	}
	return nil
}
