package fs

import (
	"crypto/rand"
	"encoding/hex"
	"io"
	"os"
	"path"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/nsbox/nsbox/api"
)

// WriteOptions tune Write.
type WriteOptions struct {
	// Mode is the file's permission and special bits, as 0o4755 or as Go's flags
	// (os.ModeSetuid…). Zero keeps the mode of the file being replaced, or 0644 for a new one.
	// A writer other than root never leaves a setuid or setgid bit on a file it does not own.
	Mode os.FileMode
	// MakeParents creates missing parent directories (mode 0755, owned by UID and GID).
	MakeParents bool
	// UID and GID are the writer's ids in the sandbox (-1: the sandbox's root): they own a new
	// file. A regular file that is replaced keeps its owner, as it keeps its mode, unless
	// ExplicitUID (ExplicitGID) says that UID (GID) was asked for: then it owns the file
	// whether new or replaced.
	UID, GID                 int
	ExplicitUID, ExplicitGID bool
	// MaxBytes, when positive, refuses a larger upload (payload_too_large).
	MaxBytes int64
}

// defaultFileMode is the mode of a new file written without WriteOptions.Mode.
const defaultFileMode = 0o644

// Write streams src into the file at p and describes the result. The data goes to a
// temporary file in the same directory, which then replaces p atomically: readers see the
// old file or the new one, never a part. A symlink at p is replaced, not followed, and
// hard links to the old file keep the old content. On any failure (no space, too large,
// src failing) the temporary file is removed and p is untouched.
func (r *Root) Write(p string, src io.Reader, opts WriteOptions) (info *Info, err error) {
	err = r.as(opts.UID, opts.GID, func(uid, gid int) error {
		info, err = r.write(clean(p), src, opts, uid, gid)
		return err
	})
	return info, err
}

// write is Write with the owner's host ids.
func (r *Root) write(p string, src io.Reader, opts WriteOptions, uid, gid int) (*Info, error) {
	if opts.MakeParents && p != "/" {
		if err := r.mkdirAll(path.Dir(p), 0o755, uid, gid); err != nil {
			return nil, err
		}
	}
	dir, base, err := r.openParent("write", p)
	if err != nil {
		return nil, err
	}
	defer unix.Close(dir)
	if err := r.guard("write", p, dir, base); err != nil {
		return nil, err
	}
	own, err := r.replacing(dir, base, opts, uid, gid)
	if err != nil {
		return nil, pathErr("write", p, err)
	}
	tmp, err := createTemp(dir)
	if err != nil {
		return nil, pathErr("write", p, err)
	}
	info, err := r.fillTemp(tmp, p, src, opts.MaxBytes, own)
	if err == nil {
		err = unix.Renameat(dir, tmp.Name(), dir, base)
	}
	if err != nil {
		unix.Unlinkat(dir, tmp.Name(), 0)
		return nil, pathErr("write", p, err)
	}
	return info, nil
}

// attrs are the owner (host ids; -1 leaves the creator's) and mode a write gives its file.
type attrs struct {
	uid, gid int
	mode     uint32
}

// replacing is what a write by the writer uid and gid (host ids, -1: the sandbox's root) gives
// the file base in dir: the owner and mode opts asks for, else those of the regular file it
// replaces (an editor's save must not take a file from its owner), else the writer's ids and
// the default mode. An old owner that is no id of the sandbox (a host file that shows as
// nobody) is not kept. When the writer is not root, a file whose uid (gid) is not the writer's
// loses its setuid (setgid) bit, even one opts.Mode asks for, as the kernel clears them when
// such a process writes to a file: a session's user must not make a program that runs as
// another. Writing over a directory fails with EISDIR.
func (r *Root) replacing(dir int, base string, opts WriteOptions, uid, gid int) (attrs, error) {
	a := attrs{uid: uid, gid: gid, mode: defaultFileMode}
	var st unix.Stat_t
	err := unix.Fstatat(dir, base, &st, unix.AT_SYMLINK_NOFOLLOW)
	switch {
	case err == unix.ENOENT:
	case err != nil:
		return attrs{}, err
	case st.Mode&unix.S_IFMT == unix.S_IFDIR:
		return attrs{}, unix.EISDIR
	case st.Mode&unix.S_IFMT == unix.S_IFREG:
		a.mode = st.Mode & 0o7777
		if !opts.ExplicitUID && r.ids.Maps(st.Uid) {
			a.uid = int(st.Uid)
		}
		if !opts.ExplicitGID && r.ids.Maps(st.Gid) {
			a.gid = int(st.Gid)
		}
	}
	if opts.Mode != 0 {
		a.mode = unixMode(opts.Mode)
	}
	if root, _ := r.hostID("uid", 0); uid != -1 && uid != root {
		if a.uid != uid {
			a.mode &^= unix.S_ISUID
		}
		if a.gid != gid {
			a.mode &^= unix.S_ISGID
		}
	}
	return a, nil
}

// createTemp creates a new, empty, private file with a random name in dir; its Name is
// that name.
func createTemp(dir int) (*os.File, error) {
	var b [8]byte
	rand.Read(b[:])
	name := ".nsbox-upload-" + hex.EncodeToString(b[:])
	fd, err := unix.Openat(dir, name, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return nil, err
	}
	return os.NewFile(uintptr(fd), name), nil
}

// fillTemp copies src into tmp (at most maxBytes when positive), gives it its owner and mode,
// describes it as the file at p and closes it.
func (r *Root) fillTemp(tmp *os.File, p string, src io.Reader, maxBytes int64, own attrs) (*Info, error) {
	defer tmp.Close()
	if maxBytes > 0 {
		src = io.LimitReader(src, maxBytes+1)
	}
	n, err := tmp.ReadFrom(src)
	if err != nil {
		return nil, err
	}
	if maxBytes > 0 && n > maxBytes {
		return nil, api.Errorf(api.CodeTooLarge, "write %s: larger than the limit of %d bytes", p, maxBytes)
	}
	fd := int(tmp.Fd())
	if err := setOwnerMode(fd, own.uid, own.gid, own.mode); err != nil {
		return nil, err
	}
	return r.describe(fd, p, "write")
}

// setOwnerMode chowns, then chmods (a chown clears setuid and setgid), the open file fd.
func setOwnerMode(fd, uid, gid int, mode uint32) error {
	if err := unix.Fchown(fd, uid, gid); err != nil {
		return err
	}
	return unix.Fchmod(fd, mode)
}

// unixMode converts m to a mode_t: its low 12 bits as they are (so os.FileMode(0o4755)
// works), plus Go's setuid, setgid and sticky flags.
func unixMode(m os.FileMode) uint32 {
	mode := uint32(m & 0o7777)
	for flag, bit := range map[os.FileMode]uint32{os.ModeSetuid: unix.S_ISUID, os.ModeSetgid: unix.S_ISGID, os.ModeSticky: unix.S_ISVTX} {
		if m&flag != 0 {
			mode |= bit
		}
	}
	return mode
}

// Mkdir creates the directory p with mode (0 means 0755), owned by the sandbox's uid and gid
// (-1 leaves its root). With parents it also creates missing ancestors (with the same mode
// and owner) and succeeds when p already is a directory, like mkdir -p.
func (r *Root) Mkdir(p string, parents bool, mode os.FileMode, uid, gid int) error {
	p = clean(p)
	if mode == 0 {
		mode = 0o755
	}
	return r.as(uid, gid, func(uid, gid int) error {
		if parents {
			return r.mkdirAll(p, unixMode(mode), uid, gid)
		}
		dir, base, err := r.openParent("mkdir", p)
		if err != nil {
			return err
		}
		defer unix.Close(dir)
		if err := r.guard("mkdir", p, dir, base); err != nil {
			return err
		}
		if err := mkdirAt(dir, base, unixMode(mode), uid, gid); err != nil {
			return pathErr("mkdir", p, err)
		}
		return nil
	})
}

// mkdirAll creates what is missing of the directory p, one component at a time: each new
// directory is made relative to a descriptor of its parent, each existing one (a symlink to
// a directory counts) is opened inside the root.
func (r *Root) mkdirAll(p string, mode uint32, uid, gid int) error {
	parent, err := r.open("/", unix.O_PATH|unix.O_DIRECTORY)
	if err != nil {
		return pathErr("mkdir", "/", err)
	}
	defer func() { unix.Close(parent) }()
	cur := "/"
	for _, name := range strings.Split(strings.TrimPrefix(p, "/"), "/") {
		if name == "" {
			continue
		}
		cur = path.Join(cur, name)
		if _, _, err := mountOf(parent, name); err == unix.ENOENT {
			if err := r.guard("mkdir", cur, parent, name); err != nil {
				return err
			}
		}
		if err := mkdirAt(parent, name, mode, uid, gid); err != nil && err != unix.EEXIST {
			return pathErr("mkdir", cur, err)
		}
		next, err := r.open(cur, unix.O_PATH|unix.O_DIRECTORY)
		if err != nil {
			return pathErr("mkdir", cur, err)
		}
		unix.Close(parent)
		parent = next
	}
	return nil
}

// mkdirAt creates the directory name in dir, then sets its owner and its exact mode
// (mkdir's is filtered by the umask).
func mkdirAt(dir int, name string, mode uint32, uid, gid int) error {
	if err := unix.Mkdirat(dir, name, mode); err != nil {
		return err
	}
	fd, err := openDirAt(dir, name)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	return setOwnerMode(fd, uid, gid, mode)
}

// Remove removes the file, symlink or empty directory at p; with recursive, a directory
// and everything below it. A symlink is removed itself, never followed, at any depth, so
// nothing outside p is touched. Removing "/" is refused. A recursive removal stops at the
// first entry it cannot remove; what vanishes meanwhile is fine.
func (r *Root) Remove(p string, recursive bool) error {
	p = clean(p)
	dir, base, err := r.openParent("remove", p)
	if err != nil {
		return err
	}
	defer unix.Close(dir)
	if err := r.guard("remove", p, dir, base); err != nil {
		return err
	}
	return removeAt(dir, base, p, recursive)
}

// removeAt removes name in dir (at p): a directory only when it is empty, or after its
// contents when recursive. It stops at a mount point (see guard).
func removeAt(dir int, name, p string, recursive bool) error {
	if err := guardEntry("remove", p, dir, name); err != nil {
		return err
	}
	err := unix.Unlinkat(dir, name, 0)
	if err == unix.EISDIR {
		if recursive {
			if err := removeContents(dir, name, p); err != nil {
				return err
			}
		}
		err = unix.Unlinkat(dir, name, unix.AT_REMOVEDIR)
	}
	if err != nil {
		return pathErr("remove", p, err)
	}
	return nil
}

// removeContents empties the directory name in dir (at p) through a descriptor opened
// without following symlinks.
func removeContents(dir int, name, p string) error {
	fd, err := openDirAt(dir, name)
	if err != nil {
		return pathErr("remove", p, err)
	}
	defer unix.Close(fd)
	entries, err := readNames(fd)
	if err != nil {
		return pathErr("remove", p, err)
	}
	for _, entry := range entries {
		err := removeAt(fd, entry, path.Join(p, entry), true)
		if err != nil && !api.IsCode(err, api.CodeNotFound) {
			return err
		}
	}
	return nil
}

// Move renames src to dst, both resolved inside the root; dst's parent must exist. Unless
// overwrite, an existing dst is a conflict; with it, dst is replaced atomically (a
// directory only by a directory, and only when empty). src and dst must be on the same
// mount of the sandbox (otherwise invalid_argument, "different mounts").
func (r *Root) Move(src, dst string, overwrite bool) error {
	src, dst = clean(src), clean(dst)
	op := "move " + src + " to"
	sdir, sbase, err := r.openParent("move", src)
	if err != nil {
		return err
	}
	defer unix.Close(sdir)
	ddir, dbase, err := r.openParent(op, dst)
	if err != nil {
		return err
	}
	defer unix.Close(ddir)
	if err := r.guard("move", src, sdir, sbase); err != nil {
		return err
	}
	if err := r.guard(op, dst, ddir, dbase); err != nil {
		return err
	}
	var flags uint
	if !overwrite {
		flags = unix.RENAME_NOREPLACE
	}
	// As the sandbox's root: on an id-mapped mount the host's root may not rename.
	return r.as(-1, -1, func(int, int) error {
		if err := unix.Renameat2(sdir, sbase, ddir, dbase, flags); err != nil {
			return pathErr(op, dst, err)
		}
		return nil
	})
}
