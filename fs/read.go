package fs

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"sort"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/nsbox/nsbox/api"
	"github.com/nsbox/nsbox/rootfs"
)

// Types of Info.Type.
const (
	TypeFile    = "file"
	TypeDir     = "dir"
	TypeSymlink = "symlink"
	TypeOther   = "other" // device, FIFO, socket
)

// Info describes one file as the sandbox sees it; it is the file API's wire type.
type Info = api.FileInfo

// Stat describes the file at p without following a symlink in its last component (like
// lstat; earlier components are followed inside the root).
func (r *Root) Stat(p string) (*Info, error) {
	p = clean(p)
	fd, err := r.open(p, unix.O_PATH|unix.O_NOFOLLOW)
	if err != nil {
		return nil, pathErr("stat", p, err)
	}
	defer unix.Close(fd)
	return r.describe(fd, p, "stat")
}

// describe is what lstatAt says of the descriptor fd, at the in-sandbox path p, with the
// owner's names; op names the operation in errors.
func (r *Root) describe(fd int, p, op string) (*Info, error) {
	info, err := lstatAt(fd, "", p)
	if err != nil {
		return nil, pathErr(op, p, err)
	}
	r.loadNames().fill(&info)
	return &info, nil
}

// List describes what is in the directory p (a symlink to a directory is followed), in a
// stable order: sorted by name, each directory followed by its own entries down to depth
// levels (1 = direct children). Names starting with "." and what is below them are left
// out unless hidden is set. Symlinks are listed, never followed. One descriptor per level
// is held during the walk. With max > 0 the walk stops as soon as it has found more than max
// entries, and the listing fails with payload_too_large.
func (r *Root) List(p string, depth int, hidden bool, max int) ([]Info, error) {
	p = clean(p)
	if depth < 1 {
		return nil, api.Errorf(api.CodeInvalidArgument, "list %s: depth must be at least 1, got %d", p, depth)
	}
	fd, err := r.open(p, unix.O_RDONLY|unix.O_DIRECTORY)
	if err != nil {
		return nil, pathErr("list", p, err)
	}
	defer unix.Close(fd)
	l := lister{names: r.loadNames(), hidden: hidden, max: max}
	switch err := l.walk(fd, p, depth); {
	case err == errTooMany:
		return nil, api.Errorf(api.CodeTooLarge, "list %s: more than %d entries at depth %d; list with a smaller depth, or list subdirectories one by one", p, max, depth)
	case err != nil:
		return nil, err
	}
	return l.out, nil
}

type lister struct {
	names  idNames
	hidden bool
	max    int // 0: no limit
	out    []Info
}

// errTooMany stops a walk that found more entries than the lister's max.
var errTooMany = errors.New("too many entries")

// walk appends the entries of the directory open as fd (at p) and, depth permitting,
// those of its subdirectories, opened from fd without following symlinks.
func (l *lister) walk(fd int, p string, depth int) error {
	entries, err := readNames(fd)
	if err != nil {
		return pathErr("list", p, err)
	}
	sort.Strings(entries)
	for _, name := range entries {
		if !l.hidden && strings.HasPrefix(name, ".") {
			continue
		}
		child := path.Join(p, name)
		info, err := lstatAt(fd, name, child)
		if err == unix.ENOENT { // removed meanwhile
			continue
		}
		if err != nil {
			return pathErr("list", child, err)
		}
		l.names.fill(&info)
		l.out = append(l.out, info)
		if l.max > 0 && len(l.out) > l.max {
			return errTooMany
		}
		if info.Type == TypeDir && depth > 1 {
			if err := l.walkChild(fd, name, child, depth-1); err != nil {
				return err
			}
		}
	}
	return nil
}

func (l *lister) walkChild(parent int, name, p string, depth int) error {
	fd, err := openDirAt(parent, name)
	if err == unix.ENOENT || err == unix.ENOTDIR || err == unix.ELOOP { // replaced meanwhile
		return nil
	}
	if err != nil {
		return pathErr("list", p, err)
	}
	defer unix.Close(fd)
	return l.walk(fd, p, depth)
}

// openDirAt opens the directory name in parent for reading its entries; a symlink or a
// non-directory fails (ELOOP, ENOTDIR) without being opened.
func openDirAt(parent int, name string) (int, error) {
	return unix.Openat(parent, name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
}

// readNames returns the names in the directory open as fd, without "." and "..".
func readNames(fd int) ([]string, error) {
	buf := make([]byte, 32<<10)
	var names []string
	for {
		n, err := unix.Getdents(fd, buf)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return nil, err
		}
		if n <= 0 {
			return names, nil
		}
		_, _, names = unix.ParseDirent(buf[:n], -1, names)
	}
}

// lstatAt describes name in the directory dirfd (or dirfd itself when name is empty)
// without following a symlink; p is its in-sandbox path.
func lstatAt(dirfd int, name, p string) (Info, error) {
	var st unix.Stat_t
	if err := unix.Fstatat(dirfd, name, &st, unix.AT_SYMLINK_NOFOLLOW|unix.AT_EMPTY_PATH); err != nil {
		return Info{}, err
	}
	info := Info{
		Name:  path.Base(p),
		Path:  p,
		Type:  fileType(st.Mode),
		Size:  st.Size,
		Mode:  fmt.Sprintf("%04o", st.Mode&0o7777),
		UID:   st.Uid,
		GID:   st.Gid,
		MTime: time.Unix(st.Mtim.Unix()),
	}
	if info.Type == TypeSymlink {
		buf := make([]byte, unix.PathMax)
		n, err := unix.Readlinkat(dirfd, name, buf)
		if err != nil {
			return Info{}, err
		}
		info.LinkTarget = string(buf[:n])
	}
	return info, nil
}

func fileType(mode uint32) string {
	switch mode & unix.S_IFMT {
	case unix.S_IFREG:
		return TypeFile
	case unix.S_IFDIR:
		return TypeDir
	case unix.S_IFLNK:
		return TypeSymlink
	}
	return TypeOther
}

// Open opens the regular file at p (symlinks followed inside the root) for reading and
// describes it. A directory, device, FIFO or socket is refused without being opened, and
// so are the files of /proc and /sys, which the daemon would read with more privilege
// than the sandbox has. The caller reads ranges with ReadAt or io.NewSectionReader and
// closes the file.
func (r *Root) Open(p string) (*os.File, *Info, error) {
	p = clean(p)
	f, err := r.openRegular(p)
	if err != nil {
		return nil, nil, err
	}
	info, err := r.describe(int(f.Fd()), p, "open")
	if err != nil {
		f.Close()
		return nil, nil, err
	}
	return f, info, nil
}

// openRegular opens the regular file at p read-only: it checks what an O_PATH descriptor
// refers to, then reopens that same inode through /proc/self/fd.
func (r *Root) openRegular(p string) (*os.File, error) {
	pfd, err := r.open(p, unix.O_PATH)
	if err != nil {
		return nil, pathErr("open", p, err)
	}
	defer unix.Close(pfd)
	if err := checkReadable(pfd, p); err != nil {
		return nil, err
	}
	fd, err := unix.Open(fmt.Sprintf("/proc/self/fd/%d", pfd), unix.O_RDONLY|unix.O_NOCTTY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, pathErr("open", p, err)
	}
	return os.NewFile(uintptr(fd), p), nil
}

// checkReadable refuses what openRegular must not open: anything but a regular file, and
// files of procfs and sysfs.
func checkReadable(fd int, p string) error {
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return pathErr("open", p, err)
	}
	switch fileType(st.Mode) {
	case TypeDir:
		return pathErr("open", p, unix.EISDIR)
	case TypeOther:
		return api.Errorf(api.CodeInvalidArgument, "open %s: not a regular file", p)
	}
	var fs unix.Statfs_t
	if err := unix.Fstatfs(fd, &fs); err != nil {
		return pathErr("open", p, err)
	}
	if fs.Type == unix.PROC_SUPER_MAGIC || fs.Type == unix.SYSFS_MAGIC {
		return api.Errorf(api.CodePermissionDenied, "open %s: files of /proc and /sys cannot be read through the files API; use exec", p)
	}
	return nil
}

// idNames turns the host's ids of files into the sandbox's, and those into names from the
// sandbox's /etc/passwd and /etc/group.
type idNames struct {
	ids           rootfs.IDMap
	users, groups map[uint32]string
}

// loadNames reads the sandbox's user and group names. They are a courtesy: a missing or
// unreadable file just leaves names out.
func (r *Root) loadNames() idNames {
	return idNames{ids: r.ids, users: r.readIDFile("/etc/passwd"), groups: r.readIDFile("/etc/group")}
}

// maxIDFile bounds how much of /etc/passwd or /etc/group is read.
const maxIDFile = 4 << 20

// readIDFile parses the "name:x:id:…" lines of a passwd or group file; the first name of
// an id wins, as with getpwuid.
func (r *Root) readIDFile(p string) map[uint32]string {
	f, err := r.openRegular(p)
	if err != nil {
		return nil
	}
	defer f.Close()
	ids := map[uint32]string{}
	sc := bufio.NewScanner(io.LimitReader(f, maxIDFile))
	for sc.Scan() {
		fields := strings.SplitN(sc.Text(), ":", 4)
		if len(fields) < 4 {
			continue
		}
		id, err := strconv.ParseUint(fields[2], 10, 32)
		if _, seen := ids[uint32(id)]; err == nil && !seen {
			ids[uint32(id)] = fields[0]
		}
	}
	return ids
}

// fill gives info the sandbox's ids for the host's and their names.
func (n idNames) fill(info *Info) {
	info.UID, info.GID = n.ids.Inside(info.UID), n.ids.Inside(info.GID)
	info.Owner = n.users[info.UID]
	info.Group = n.groups[info.GID]
}
