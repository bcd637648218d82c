package rootfs

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"slices"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// LayerCopy copies an overlay's upper dir into a directory in the layer store's form: the
// tree that unpacking ExportLayer's stream of the upper gives (owners shifted back into the
// sandbox's own ids, whiteouts as 0/0 character devices, opaque directories marked, user.*
// xattrs, modes without setuid and setgid, modification times; no sockets or device nodes).
// It copies in passes, so that a snapshot freezes its sandbox only briefly: a first pass
// while the sandbox runs copies everything, and a pass with the sandbox frozen copies again
// only what changed since (and removes what went), which makes the copy exact.
//
// What changed is told by each entry's inode number, type and mode, size, modification and
// change times (any write, chmod, chown, xattr or link changes the change time, which no
// system call sets). A change time is only trusted when it is older than the start of the
// pass that read it by more than a clock tick (ctimeSlack): a file changed within the tick in
// which it was read may keep its change time. Files with several hard links are copied in
// every frozen pass and in no other, so that each link group is copied whole. A write through a shared
// writable mmap stamps the file's times only when it dirties a clean page: so a pass that is
// not frozen first flushes the upper's file system (syncfs, which cleans every page and
// write-protects its mappings), and the caller should Forget the files mapped shared and
// writable when it freezes (a file system without page_mkwrite, tmpfs, never stamps them).
type LayerCopy struct {
	src, dst *os.Root
	ids      IDMap
	maxBytes int64 // 0: no bound

	// seen is what the last pass copied, by path, and trustBefore how old a change time must
	// be to be trusted.
	seen        map[string]stamp
	trustBefore syscall.Timespec

	// One pass's state.
	ctx    context.Context
	frozen bool
	next   map[string]stamp
	links  map[[2]uint64]string // the first path of each file with several links, by device and inode
	left   int64
	stats  CopyStats
}

// CopyStats counts what one pass did.
type CopyStats struct {
	Entries int   // entries of the upper
	Copied  int   // entries copied (the others were kept from the last pass)
	Removed int   // entries gone since the last pass
	Bytes   int64 // content copied
}

// ctimeSlack is more than a coarse clock tick of the kernel's file times.
const ctimeSlack = 100 * time.Millisecond

// stamp is what tells whether an entry changed.
type stamp struct {
	ino          uint64
	mode         uint32
	size         int64
	mtime, ctime syscall.Timespec
}

// errChanged is a file's content changing while it is copied.
var errChanged = errors.New("it changed while being copied")

// NewLayerCopy prepares a copy of the upper dir into the empty directory dst. maxBytes, when
// not 0, bounds the files' content as ExportLayer's does.
func NewLayerCopy(dst, upper string, ids IDMap, maxBytes int64) (*LayerCopy, error) {
	src, d, err := openRoots(upper, "upper dir", dst, "layer dir")
	if err != nil {
		return nil, err
	}
	return &LayerCopy{src: src, dst: d, ids: ids, maxBytes: maxBytes, seen: map[string]stamp{}}, nil
}

// Close releases the copy's directories.
func (c *LayerCopy) Close() error { return errors.Join(c.src.Close(), c.dst.Close()) }

// Pass brings the copy up to date with the upper dir. frozen: the upper does not change
// meanwhile, and the copy is exact when it returns; otherwise entries that change or go while
// they are read are left for the next pass. A canceled ctx ends it.
func (c *LayerCopy) Pass(ctx context.Context, frozen bool) (CopyStats, error) {
	began := time.Now()
	c.ctx, c.frozen, c.next, c.links, c.left, c.stats = ctx, frozen, map[string]stamp{}, map[[2]uint64]string{}, c.maxBytes, CopyStats{}
	sf, err := openDir(c.src, ".")
	if err != nil {
		return c.stats, fmt.Errorf("copy upper dir: %w", err)
	}
	defer sf.Close()
	if !frozen {
		if err := unix.Syncfs(int(sf.Fd())); err != nil {
			return c.stats, fmt.Errorf("copy upper dir: flush its file system: %w", err)
		}
	}
	fi, err := sf.Stat()
	if err != nil {
		return c.stats, fmt.Errorf("copy upper dir: %w", err)
	}
	if err := c.dir(".", fi); err != nil {
		return c.stats, err
	}
	c.seen, c.trustBefore = c.next, syscall.NsecToTimespec(began.Add(-ctimeSlack).UnixNano())
	return c.stats, nil
}

// Forget makes the next pass copy the entries rel (paths relative to the upper dir) again,
// whatever their times say.
func (c *LayerCopy) Forget(rel ...string) {
	for _, p := range rel {
		delete(c.seen, path.Clean("./"+p))
	}
}

// unchanged reports whether the entry rel, now st, is as the last pass copied it.
func (c *LayerCopy) unchanged(rel string, s stamp) bool {
	old, ok := c.seen[rel]
	return ok && old == s && (old.ctime.Sec < c.trustBefore.Sec || old.ctime.Sec == c.trustBefore.Sec && old.ctime.Nsec < c.trustBefore.Nsec)
}

func stampOf(st *syscall.Stat_t) stamp {
	return stamp{ino: st.Ino, mode: st.Mode, size: st.Size, mtime: st.Mtim, ctime: st.Ctim}
}

// vanished reports whether err is an entry changing or going while a pass that is not frozen
// reads it: the next pass copies it.
func (c *LayerCopy) vanished(err error) bool {
	return !c.frozen && (errors.Is(err, fs.ErrNotExist) || errors.Is(err, unix.ENOTDIR) || errors.Is(err, unix.ELOOP) ||
		errors.Is(err, errChanged))
}

// dir copies the directory rel (fi) and what is under it.
func (c *LayerCopy) dir(rel string, fi fs.FileInfo) error {
	if err := c.ctx.Err(); err != nil {
		return fmt.Errorf("copy upper dir: %w", err)
	}
	st := fi.Sys().(*syscall.Stat_t)
	s := stampOf(st)
	c.stats.Entries++
	sf, err := openDir(c.src, rel)
	if err != nil {
		return fmt.Errorf("copy %s: %w", rel, err)
	}
	defer sf.Close()
	if !c.unchanged(rel, s) {
		if rel != "." {
			if err := c.clear(rel); err != nil {
				return err
			}
			if err := c.dst.Mkdir(rel, 0o700); err != nil && !errors.Is(err, fs.ErrExist) {
				return fmt.Errorf("copy %s: %w", rel, err)
			}
		}
		df, err := openDir(c.dst, rel)
		if err != nil {
			return fmt.Errorf("copy %s: %w", rel, err)
		}
		err = c.meta(int(sf.Fd()), int(df.Fd()), st, true)
		df.Close()
		if err != nil {
			return fmt.Errorf("copy %s: %w", rel, err)
		}
		c.stats.Copied++
	}
	c.next[rel] = s
	names, err := sf.Readdirnames(-1)
	if err != nil {
		return fmt.Errorf("copy %s: read it: %w", rel, err)
	}
	slices.Sort(names)
	had, err := readNames(c.dst, rel)
	if err != nil {
		return err
	}
	for _, name := range had {
		if _, ok := slices.BinarySearch(names, name); !ok {
			if err := c.dst.RemoveAll(path.Join(rel, name)); err != nil {
				return fmt.Errorf("copy %s: remove %s: %w", rel, name, err)
			}
			c.stats.Removed++
		}
	}
	for _, name := range names {
		child := path.Join(rel, name)
		fi, err := c.src.Lstat(child)
		switch {
		case c.vanished(err):
			continue
		case err != nil:
			return fmt.Errorf("copy %s: %w", child, err)
		case fi.IsDir():
			err = c.dir(child, fi)
		default:
			err = c.entry(child, fi)
		}
		if err != nil && !c.vanished(err) {
			return err
		}
	}
	// Last: writing its entries changed its times.
	if err := setTimes(c.dst, rel, st); err != nil {
		return fmt.Errorf("copy %s: %w", rel, err)
	}
	return nil
}

// clear removes the copy's entry rel unless it is a directory.
func (c *LayerCopy) clear(rel string) error {
	fi, err := c.dst.Lstat(rel)
	switch {
	case errors.Is(err, fs.ErrNotExist) || err == nil && fi.IsDir():
		return nil
	case err != nil:
		return fmt.Errorf("copy %s: %w", rel, err)
	}
	if err := c.dst.Remove(rel); err != nil {
		return fmt.Errorf("copy %s: replace it: %w", rel, err)
	}
	return nil
}

// entry copies rel (fi), which is not a directory.
func (c *LayerCopy) entry(rel string, fi fs.FileInfo) error {
	st := fi.Sys().(*syscall.Stat_t)
	s := stampOf(st)
	c.stats.Entries++
	linked := fi.Mode().IsRegular() && st.Nlink > 1
	if linked && !c.frozen {
		return nil // copied whole in the frozen pass
	}
	sizeCounted := fi.Mode().IsRegular()
	if linked {
		if _, ok := c.links[[2]uint64{st.Dev, st.Ino}]; ok {
			sizeCounted = false
		}
	}
	if sizeCounted {
		if c.left -= fi.Size(); c.maxBytes > 0 && c.left < 0 {
			return fmt.Errorf("copy %s: %w (a sparse file counts at its full size of %d bytes)", rel, ErrLayerTooLarge, fi.Size())
		}
	}
	if !linked && c.unchanged(rel, s) {
		c.next[rel] = s
		return nil
	}
	if err := c.dst.RemoveAll(rel); err != nil {
		return fmt.Errorf("copy %s: replace it: %w", rel, err)
	}
	if err := c.create(rel, fi, linked); err != nil {
		if rerr := c.dst.RemoveAll(rel); rerr != nil {
			err = errors.Join(err, rerr)
		}
		return err
	}
	c.stats.Copied++
	c.next[rel] = s
	return nil
}

// create makes the copy of rel (fi), which is not a directory and is not in the copy.
func (c *LayerCopy) create(rel string, fi fs.FileInfo, linked bool) error {
	st := fi.Sys().(*syscall.Stat_t)
	switch {
	case isWhiteout(fi):
		return c.mknod(rel, unix.S_IFCHR, st)
	case fi.Mode()&(fs.ModeSocket|fs.ModeDevice|fs.ModeCharDevice) != 0:
		return nil
	case fi.Mode()&fs.ModeNamedPipe != 0:
		return c.mknod(rel, unix.S_IFIFO, st)
	case fi.Mode()&fs.ModeSymlink != 0:
		target, err := c.src.Readlink(rel)
		if err != nil {
			return fmt.Errorf("copy %s: %w", rel, err)
		}
		if err := c.dst.Symlink(target, rel); err != nil {
			return fmt.Errorf("copy %s: %w", rel, err)
		}
		if err := c.dst.Lchown(rel, int(c.ids.Inside(st.Uid)), int(c.ids.Inside(st.Gid))); err != nil {
			return fmt.Errorf("copy %s: %w", rel, err)
		}
		return setTimes(c.dst, rel, st)
	}
	key := [2]uint64{st.Dev, st.Ino}
	if first, ok := c.links[key]; ok && linked {
		if err := c.dst.Link(first, rel); err != nil {
			return fmt.Errorf("copy %s: link it to %s: %w", rel, first, err)
		}
		return nil
	}
	sf, err := c.src.OpenFile(rel, os.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK, 0)
	if err != nil {
		return fmt.Errorf("copy %s: %w", rel, err)
	}
	defer sf.Close()
	df, err := c.dst.OpenFile(rel, os.O_WRONLY|os.O_CREATE|os.O_EXCL|unix.O_NOFOLLOW, 0o600)
	if err != nil {
		return fmt.Errorf("copy %s: %w", rel, err)
	}
	defer df.Close()
	n, err := io.Copy(df, sf)
	if err != nil {
		return fmt.Errorf("copy %s: %w", rel, err)
	}
	c.stats.Bytes += n
	if n != st.Size {
		return fmt.Errorf("copy %s: copied %d of %d bytes: %w", rel, n, st.Size, errChanged)
	}
	if err := c.meta(int(sf.Fd()), int(df.Fd()), st, false); err != nil {
		return fmt.Errorf("copy %s: %w", rel, err)
	}
	if err := setTimes(c.dst, rel, st); err != nil {
		return fmt.Errorf("copy %s: %w", rel, err)
	}
	if linked {
		c.links[key] = rel
	}
	return nil
}

// mknod makes rel a whiteout or a FIFO, with st's owner, permissions and times.
func (c *LayerCopy) mknod(rel string, kind uint32, st *syscall.Stat_t) error {
	dir, base := path.Split(rel)
	df, err := openDir(c.dst, path.Clean("./"+dir))
	if err != nil {
		return fmt.Errorf("copy %s: %w", rel, err)
	}
	defer df.Close()
	if err := unix.Mknodat(int(df.Fd()), base, kind|st.Mode&0o777, 0); err != nil {
		return fmt.Errorf("copy %s: %w", rel, err)
	}
	if err := unix.Fchownat(int(df.Fd()), base, int(c.ids.Inside(st.Uid)), int(c.ids.Inside(st.Gid)), unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return fmt.Errorf("copy %s: %w", rel, err)
	}
	if err := unix.Fchmodat(int(df.Fd()), base, st.Mode&0o777, 0); err != nil {
		return fmt.Errorf("copy %s: %w", rel, err)
	}
	return setTimes(c.dst, rel, st)
}

// meta gives the open copy dst the owner (shifted), permissions (without setuid and setgid for
// files) and user.* xattrs of the open src (st), and, for a directory, its opaque mark;
// xattrs the copy has and src has not are removed.
func (c *LayerCopy) meta(src, dst int, st *syscall.Stat_t, isDir bool) error {
	if err := unix.Fchown(dst, int(c.ids.Inside(st.Uid)), int(c.ids.Inside(st.Gid))); err != nil {
		return fmt.Errorf("chown: %w", err)
	}
	mode := st.Mode & 0o7777
	if !isDir {
		mode &^= 0o6000
	}
	if err := unix.Fchmod(dst, mode); err != nil {
		return fmt.Errorf("chmod: %w", err)
	}
	want, err := userXattrs(src)
	if err != nil {
		return err
	}
	if isDir {
		buf := make([]byte, 8)
		if n, err := unix.Fgetxattr(src, opaqueXattr, buf); err == nil && string(buf[:n]) == "y" {
			want[opaqueXattr] = "y"
		}
	}
	have, err := listXattrs(dst)
	if err != nil {
		return err
	}
	for _, name := range have {
		if _, ok := want[name]; !ok && (strings.HasPrefix(name, "user.") || name == opaqueXattr) {
			if err := unix.Fremovexattr(dst, name); err != nil {
				return fmt.Errorf("remove xattr %s: %w", name, err)
			}
		}
	}
	for name, value := range want {
		if err := unix.Fsetxattr(dst, name, []byte(value), 0); err != nil {
			return fmt.Errorf("set xattr %s: %w", name, err)
		}
	}
	return nil
}

// opaqueXattr marks an overlay directory opaque.
const opaqueXattr = "trusted.overlay.opaque"

// listXattrs lists the xattrs of the open file fd.
func listXattrs(fd int) ([]string, error) {
	buf := make([]byte, 4096)
	n, err := unix.Flistxattr(fd, buf)
	if errors.Is(err, unix.ERANGE) {
		if n, err = unix.Flistxattr(fd, nil); err == nil {
			buf = make([]byte, n)
			n, err = unix.Flistxattr(fd, buf)
		}
	}
	if errors.Is(err, unix.ENOTSUP) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("list xattrs: %w", err)
	}
	var out []string
	for _, name := range strings.Split(string(buf[:n]), "\x00") {
		if name != "" {
			out = append(out, name)
		}
	}
	return out, nil
}

// userXattrs returns the user.* xattrs of the open file fd.
func userXattrs(fd int) (map[string]string, error) {
	names, err := listXattrs(fd)
	if err != nil {
		return nil, err
	}
	out := map[string]string{}
	for _, name := range names {
		if !strings.HasPrefix(name, "user.") {
			continue
		}
		size, err := unix.Fgetxattr(fd, name, nil)
		if err != nil {
			return nil, fmt.Errorf("read xattr %s: %w", name, err)
		}
		value := make([]byte, size)
		if size, err = unix.Fgetxattr(fd, name, value); err != nil {
			return nil, fmt.Errorf("read xattr %s: %w", name, err)
		}
		out[name] = string(value[:size])
	}
	return out, nil
}

// setTimes gives rel in root st's modification time (and as its access time: ExportLayer
// keeps only the modification time, and unpacking gives it to both), not following a
// symlink.
func setTimes(root *os.Root, rel string, st *syscall.Stat_t) error {
	dir, base := path.Split(rel)
	if rel == "." {
		dir, base = ".", "."
	}
	df, err := openDir(root, path.Clean("./"+dir))
	if err != nil {
		return err
	}
	defer df.Close()
	mtime := unix.Timespec{Sec: st.Mtim.Sec, Nsec: st.Mtim.Nsec}
	ts := []unix.Timespec{mtime, mtime}
	if err := unix.UtimesNanoAt(int(df.Fd()), base, ts, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return fmt.Errorf("set times: %w", err)
	}
	return nil
}
