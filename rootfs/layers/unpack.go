package layers

import (
	"archive/tar"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// The OCI layer conventions for deletions: an empty ".wh.NAME" deletes NAME from the layers
// below, and ".wh..wh..opq" in a directory hides everything the layers below have in it.
const (
	whiteoutPrefix = ".wh."
	opaqueWhiteout = ".wh..wh..opq"
	opaqueXattr    = "trusted.overlay.opaque"
	paxXattrPrefix = "SCHILY.xattr."
)

// Resolution flags for every path walked while unpacking: stay beneath the layer's root and
// never follow a symlink, so that a symlink made by an earlier entry cannot redirect a later one.
const resolveFlags = unix.RESOLVE_BENEATH | unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_NO_MAGICLINKS | unix.RESOLVE_NO_XDEV

// unpacker writes one layer's tar entries into its root directory.
type unpacker struct {
	root    int      // fd of the layer's root directory
	osRoot  *os.Root // the same directory, for removing trees
	dirTime []dirTime
}

// dirTime is a directory's times, set once all its entries are written.
type dirTime struct {
	rel          string
	atime, mtime time.Time
}

// unpackTar extracts the tar stream r into the empty directory dir in overlayfs' form:
// whiteouts become 0/0 character devices and opaque markers the trusted.overlay.opaque
// xattr; owners, modes, times, hard links, symlinks and xattrs (file capabilities included)
// are kept; device nodes are skipped. A path with a ".." element, a path through a symlink
// and a hard link to a file outside the layer are errors.
func unpackTar(ctx context.Context, dir string, r io.Reader) error {
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("open %s: %w", dir, err)
	}
	defer unix.Close(fd)
	osRoot, err := os.OpenRoot(dir)
	if err != nil {
		return fmt.Errorf("open %s: %w", dir, err)
	}
	defer osRoot.Close()
	u := &unpacker{root: fd, osRoot: osRoot}
	tr := tar.NewReader(r)
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return fmt.Errorf("read tar: %w", err)
		}
		if err := u.entry(hdr, tr); err != nil {
			return fmt.Errorf("%s: %w", hdr.Name, err)
		}
	}
	// Last, so that writing their entries did not change them; deepest first.
	for i := len(u.dirTime) - 1; i >= 0; i-- {
		d := u.dirTime[i]
		if err := u.setTimes(d.rel, d.atime, d.mtime); err != nil {
			return fmt.Errorf("%s: %w", d.rel, err)
		}
	}
	return nil
}

// cleanPath turns a tar entry name into a path relative to the layer's root ("" is the root
// itself). Absolute names are taken as relative to the root; a ".." element is an error.
func cleanPath(name string) (string, error) {
	for _, elem := range strings.Split(name, "/") {
		if elem == ".." {
			return "", fmt.Errorf("path %q escapes the layer", name)
		}
	}
	return strings.Trim(path.Clean("/"+name), "/"), nil
}

func (u *unpacker) entry(hdr *tar.Header, content io.Reader) error {
	rel, err := cleanPath(hdr.Name)
	if err != nil {
		return err
	}
	if rel == "" && hdr.Typeflag != tar.TypeDir {
		return errors.New("the layer's root must be a directory")
	}
	dir, base := path.Split(rel)
	dir = strings.TrimSuffix(dir, "/")
	switch {
	case base == opaqueWhiteout:
		return u.markOpaque(dir)
	case strings.HasPrefix(base, whiteoutPrefix):
		return u.whiteout(dir, strings.TrimPrefix(base, whiteoutPrefix))
	}
	switch hdr.Typeflag {
	case tar.TypeDir:
		return u.dir(rel, dir, base, hdr)
	case tar.TypeReg, tar.TypeRegA: //nolint:staticcheck // old tars still use TypeRegA
		return u.file(rel, dir, base, hdr, content)
	case tar.TypeSymlink:
		return u.inParent(rel, dir, base, func(parent int) error {
			if err := unix.Symlinkat(hdr.Linkname, parent, base); err != nil {
				return fmt.Errorf("make symlink: %w", err)
			}
			return u.setMeta(parent, base, hdr)
		})
	case tar.TypeLink:
		return u.hardLink(rel, dir, base, hdr)
	case tar.TypeFifo:
		return u.inParent(rel, dir, base, func(parent int) error {
			if err := unix.Mknodat(parent, base, unix.S_IFIFO|0o600, 0); err != nil {
				return fmt.Errorf("make fifo: %w", err)
			}
			return u.setMeta(parent, base, hdr)
		})
	case tar.TypeChar, tar.TypeBlock, tar.TypeXGlobalHeader:
		return nil // device nodes are never made from an image; a sandbox gets its own /dev
	}
	return fmt.Errorf("unsupported tar entry type %q", hdr.Typeflag)
}

// openDir opens the directory rel of the layer without following symlinks; with create,
// missing directories on the way are made (mode 0755, owned by root).
func (u *unpacker) openDir(rel string, create bool) (int, error) {
	how := &unix.OpenHow{Flags: unix.O_RDONLY | unix.O_DIRECTORY | unix.O_CLOEXEC, Resolve: resolveFlags}
	if rel == "" {
		rel = "."
	}
	fd, err := unix.Openat2(u.root, rel, how)
	if errors.Is(err, unix.ENOENT) && create {
		fd, err = unix.Openat2(u.root, ".", how)
		for _, elem := range strings.Split(rel, "/") {
			if err != nil {
				break
			}
			if err = unix.Mkdirat(fd, elem, 0o755); err == nil || errors.Is(err, unix.EEXIST) {
				var next int
				next, err = unix.Openat2(fd, elem, how)
				unix.Close(fd)
				fd = next
			}
		}
	}
	switch {
	case errors.Is(err, unix.ELOOP) || errors.Is(err, unix.EXDEV):
		return -1, fmt.Errorf("directory %q is (or goes through) a symlink", rel)
	case errors.Is(err, unix.ENOTDIR):
		return -1, fmt.Errorf("%q is not a directory", rel)
	case err != nil:
		return -1, fmt.Errorf("open directory %q: %w", rel, err)
	}
	return fd, nil
}

// inParent clears the place of a new non-directory entry and calls make with its parent.
func (u *unpacker) inParent(rel, dir, base string, make func(parent int) error) error {
	parent, err := u.openDir(dir, true)
	if err != nil {
		return err
	}
	defer unix.Close(parent)
	if err := u.clear(parent, rel, base); err != nil {
		return err
	}
	return make(parent)
}

// clear removes whatever an earlier entry of this layer put at rel (a later entry wins).
func (u *unpacker) clear(parent int, rel, base string) error {
	err := unix.Unlinkat(parent, base, 0)
	if errors.Is(err, unix.EISDIR) {
		err = u.osRoot.RemoveAll(rel)
	}
	if err != nil && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("replace %q: %w", rel, err)
	}
	return nil
}

func (u *unpacker) dir(rel, dir, base string, hdr *tar.Header) error {
	u.dirTime = append(u.dirTime, dirTime{rel: rel, atime: hdr.AccessTime, mtime: hdr.ModTime})
	if rel == "" {
		return u.setMeta(u.root, "", hdr)
	}
	parent, err := u.openDir(dir, true)
	if err != nil {
		return err
	}
	defer unix.Close(parent)
	var st unix.Stat_t
	if err := unix.Fstatat(parent, base, &st, unix.AT_SYMLINK_NOFOLLOW); err == nil && st.Mode&unix.S_IFMT != unix.S_IFDIR {
		if err := u.clear(parent, rel, base); err != nil {
			return err
		}
	}
	if err := unix.Mkdirat(parent, base, 0o700); err != nil && !errors.Is(err, unix.EEXIST) {
		return fmt.Errorf("make directory: %w", err)
	}
	return u.setMeta(parent, base, hdr)
}

func (u *unpacker) file(rel, dir, base string, hdr *tar.Header, content io.Reader) error {
	return u.inParent(rel, dir, base, func(parent int) error {
		how := &unix.OpenHow{Flags: unix.O_WRONLY | unix.O_CREAT | unix.O_EXCL | unix.O_NOFOLLOW | unix.O_CLOEXEC, Mode: 0o600, Resolve: resolveFlags}
		fd, err := unix.Openat2(parent, base, how)
		if err != nil {
			return fmt.Errorf("create file: %w", err)
		}
		f := os.NewFile(uintptr(fd), rel)
		defer f.Close()
		if _, err := io.Copy(f, content); err != nil {
			return fmt.Errorf("write file: %w", err)
		}
		return u.setMeta(parent, base, hdr)
	})
}

func (u *unpacker) hardLink(rel, dir, base string, hdr *tar.Header) error {
	target, err := cleanPath(hdr.Linkname)
	if err != nil {
		return err
	}
	if target == rel {
		return nil
	}
	tdir, tbase := path.Split(target)
	tparent, err := u.openDir(strings.TrimSuffix(tdir, "/"), false)
	if err != nil {
		return fmt.Errorf("hard link target %q: %w", hdr.Linkname, err)
	}
	defer unix.Close(tparent)
	return u.inParent(rel, dir, base, func(parent int) error {
		// Flags 0: a symlink target is linked itself, never followed.
		if err := unix.Linkat(tparent, tbase, parent, base, 0); err != nil {
			return fmt.Errorf("hard link to %q: %w", hdr.Linkname, err)
		}
		return nil
	})
}

// whiteout records that name is deleted from the layers below: a 0/0 character device.
func (u *unpacker) whiteout(dir, name string) error {
	if name == "" || name == "." || name == ".." {
		return fmt.Errorf("malformed whiteout %q", name)
	}
	return u.inParent(path.Join(dir, name), dir, name, func(parent int) error {
		if err := unix.Mknodat(parent, name, unix.S_IFCHR, 0); err != nil {
			return fmt.Errorf("make whiteout: %w", err)
		}
		return nil
	})
}

// markOpaque records that dir hides what the layers below have in it.
func (u *unpacker) markOpaque(dir string) error {
	fd, err := u.openDir(dir, true)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	if err := unix.Fsetxattr(fd, opaqueXattr, []byte("y"), 0); err != nil {
		return fmt.Errorf("mark opaque: %w", err)
	}
	return nil
}

// setMeta gives the entry base of parent (parent itself if base is "") the header's owner,
// mode, xattrs and (except for directories, done last) times. The owner comes first: chown
// clears setuid bits and file capabilities.
func (u *unpacker) setMeta(parent int, base string, hdr *tar.Header) error {
	flags := unix.AT_SYMLINK_NOFOLLOW
	if base == "" {
		flags |= unix.AT_EMPTY_PATH
	}
	if err := unix.Fchownat(parent, base, hdr.Uid, hdr.Gid, flags); err != nil {
		return fmt.Errorf("chown: %w", err)
	}
	if hdr.Typeflag != tar.TypeSymlink {
		// Through /proc: fchmodat cannot refuse to follow a symlink on every kernel, but this
		// entry was just made here and is not one.
		if err := unix.Chmod(procPath(parent, base), uint32(hdr.Mode)&0o7777); err != nil {
			return fmt.Errorf("chmod: %w", err)
		}
	}
	for key, value := range hdr.PAXRecords {
		name, ok := strings.CutPrefix(key, paxXattrPrefix)
		// overlayfs' own xattrs would change what the layer means: only whiteouts make them.
		if !ok || strings.HasPrefix(name, "trusted.overlay.") {
			continue
		}
		var err error
		if base == "" {
			err = unix.Fsetxattr(parent, name, []byte(value), 0)
		} else {
			err = unix.Lsetxattr(procPath(parent, base), name, []byte(value), 0)
		}
		if err != nil && !errors.Is(err, unix.EOPNOTSUPP) {
			return fmt.Errorf("set xattr %s: %w", name, err)
		}
	}
	if hdr.Typeflag == tar.TypeDir {
		return nil
	}
	return setTimesAt(parent, base, hdr.AccessTime, hdr.ModTime)
}

// procPath names the entry base of the directory fd through /proc/self/fd, for the calls
// that have no *at form: the directory is the one already opened, and the last element is
// not followed by the l* calls.
func procPath(fd int, base string) string {
	return path.Join("/proc/self/fd", strconv.Itoa(fd), base)
}

func (u *unpacker) setTimes(rel string, atime, mtime time.Time) error {
	fd, err := u.openDir(rel, false)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	return setTimesAt(fd, ".", atime, mtime)
}

func setTimesAt(dirfd int, base string, atime, mtime time.Time) error {
	if atime.IsZero() {
		atime = mtime
	}
	ts := []unix.Timespec{unix.NsecToTimespec(atime.UnixNano()), unix.NsecToTimespec(mtime.UnixNano())}
	if err := unix.UtimesNanoAt(dirfd, base, ts, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return fmt.Errorf("set times: %w", err)
	}
	return nil
}
