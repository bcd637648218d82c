// Package permfs is the FUSE layer that enforces a sandbox's per-path permissions (package
// perms) on its workspace: a loopback of the workspace's directory whose every operation is
// checked against the rules first, so that what the rules hide, protect or fence holds for
// every process in the sandbox — shells, compilers, git, find — and for the daemon's file
// API, which reaches the workspace through the same mount.
//
// It runs as its own process (nsbox permfs), one per started sandbox with rules, so that it
// outlives a daemon that dies. It serves from a mount namespace of its own that holds only the
// workspace and /proc, chrooted into the workspace: it acts as the host's root, and a symlink
// the sandbox swaps in under it can then lead nowhere but into the workspace. It ends when the
// last mount of its file system goes (the sandbox's mount namespace with its container), or
// when the daemon kills it.
package permfs

import (
	"context"
	"io/fs"
	"maps"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"

	"github.com/nsbox/nsbox/perms"
)

// IDs translate owners between the served directory and the sandbox, for a workspace the
// sandbox writes as the directory's owner (a read-write workspace in a user namespace): the
// directory's RootUID/RootGID are the sandbox's root (host id Host), its other ids n below
// Size are the sandbox's n (host id Host+n), its 0 is nobody. Zero Size: no translation.
type IDs struct {
	RootUID, RootGID, Host, Size uint32
}

// overflow is the owner the kernel shows for an id with no mapping (nobody).
const overflow = 65534

func (m IDs) toSandbox(id, root uint32) uint32 {
	switch {
	case m.Size == 0:
		return id
	case id == root:
		return m.Host
	case id == 0 || id >= m.Size:
		return overflow
	}
	return m.Host + id
}

func (m IDs) toDisk(id, root uint32) (uint32, bool) {
	switch {
	case m.Size == 0:
		return id, true
	case id == m.Host:
		return root, true
	case id > m.Host && id < m.Host+m.Size && id-m.Host != root:
		return id - m.Host, true
	}
	return 0, false
}

// FS is the permission layer over one directory.
type FS struct {
	rules atomic.Pointer[perms.Set]
	// sessions are the narrower rules of sessions, by the name of the cgroup (in the
	// cgroup v2 hierarchy) their processes are in: a process cannot leave its cgroup (the
	// sandbox cannot write the hierarchy), and its children start in it.
	sessions atomic.Pointer[map[string]*perms.Set]
	// callers are threads of the daemon acting for a session (file calls on its behalf),
	// by thread id, with the name of the session's cgroup.
	callers atomic.Pointer[map[uint32]string]
	ids     IDs
	at      string // where the layer is in the sandbox (/workspace, /etc…): rules name paths there
	// hidden are paths (in the sandbox) that are none whatever the rules: those the image
	// masks, which a mount over the layer's file would hide only until the kernel drops it.
	hidden []string
	// kept are paths (in the sandbox) nsbox mounts files over (which rules cannot reach): a
	// change of rules leaves their cached names alone, since dropping a name the kernel has
	// a mount on detaches that mount.
	kept []string
	// cache is how long the kernel keeps names and attributes (serve.go); past a second the
	// directory changes through the layer only, and the kernel keeps file pages too.
	cache time.Duration
	root  *node
	// proc is /proc, opened before the chroot, to find the cgroup of a caller.
	proc int
}

// New makes the layer over the directory dir (which must not be left for another directory
// by symlinks: the process is expected to have chrooted into it, and to pass "/"), mounted at
// the path at in the sandbox, with rules.
func New(dir, at string, rules *perms.Set, ids IDs, proc int, hidden, kept []string) (*FS, error) {
	var st syscall.Stat_t
	if err := syscall.Stat(dir, &st); err != nil {
		return nil, &os.PathError{Op: "stat", Path: dir, Err: err}
	}
	f := &FS{ids: ids, at: at, proc: proc, hidden: hidden, kept: kept}
	f.rules.Store(rules)
	f.sessions.Store(&map[string]*perms.Set{})
	f.callers.Store(&map[uint32]string{})
	lr := &gofs.LoopbackRoot{Path: dir, Dev: st.Dev}
	lr.NewNode = func(r *gofs.LoopbackRoot, _ *gofs.Inode, _ string, _ *syscall.Stat_t) gofs.InodeEmbedder {
		return &node{LoopbackNode: gofs.LoopbackNode{RootData: r}, fs: f}
	}
	f.root = &node{LoopbackNode: gofs.LoopbackNode{RootData: lr}, fs: f}
	lr.RootNode = f.root
	return f, nil
}

// Root is the layer's root node, to mount.
func (f *FS) Root() gofs.InodeEmbedder { return f.root }

// SetRules replaces the rules and has the kernel forget every name it has cached, so that the
// next lookup of each is checked against the new rules. Files already open stay open with
// what they were opened for.
func (f *FS) SetRules(rules *perms.Set) {
	f.rules.Store(rules)
	f.forget(f.root.EmbeddedInode(), f.at)
}

// SetSession gives the processes in the cgroup named name their own rules (nil: none any
// more), which narrow the sandbox's.
func (f *FS) SetSession(name string, rules *perms.Set) {
	swap(&f.sessions, name, rules, rules == nil)
	f.forget(f.root.EmbeddedInode(), f.at)
}

// ActFor has the thread tid (of the daemon) act for the processes in the cgroup named name
// ("": no more).
func (f *FS) ActFor(tid uint32, name string) { swap(&f.callers, tid, name, name == "") }

// swap sets or (del) deletes m's key k.
func swap[K comparable, V any](m *atomic.Pointer[map[K]V], k K, v V, del bool) {
	for {
		old := m.Load()
		next := maps.Clone(*old)
		if del {
			delete(next, k)
		} else {
			next[k] = v
		}
		if m.CompareAndSwap(old, &next) {
			return
		}
	}
}

// forget has the kernel drop the names it has cached under dir (the sandbox's path p) but
// the kept ones.
func (f *FS) forget(dir *gofs.Inode, p string) {
	for name, child := range dir.Children() {
		cp := path.Join(p, name)
		f.forget(child, cp)
		if !slices.Contains(f.kept, cp) {
			dir.NotifyEntry(name)
		}
	}
}

// level is the level of the path rel (relative to the layer's root) for the caller of ctx:
// the sandbox's, lowered by its session's rules when it is in a session that has some.
func (f *FS) level(ctx context.Context, rel string) perms.Level {
	p := path.Join(f.at, rel)
	if slices.ContainsFunc(f.hidden, func(h string) bool { return perms.Within(p, h) }) {
		return perms.None
	}
	lvl := f.rules.Load().Level(p)
	if s := f.session(ctx); s != nil {
		lvl = min(lvl, s.Level(p))
	}
	return lvl
}

// session is the rules of the session the caller of ctx is in, or nil.
func (f *FS) session(ctx context.Context) *perms.Set {
	sessions := *f.sessions.Load()
	if len(sessions) == 0 {
		return nil
	}
	caller, ok := fuse.FromContext(ctx)
	if !ok {
		return nil
	}
	if name, ok := (*f.callers.Load())[caller.Pid]; ok {
		return sessions[name]
	}
	name, err := cgroupOf(f.proc, caller.Pid)
	if err != nil {
		return nil
	}
	return sessions[name]
}

// cgroupOf is the name (last component) of the cgroup v2 cgroup of the process pid.
func cgroupOf(proc int, pid uint32) (string, error) {
	fd, err := unix.Openat(proc, strconv.FormatUint(uint64(pid), 10)+"/cgroup", unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return "", err
	}
	defer unix.Close(fd)
	var buf [4096]byte
	n, err := unix.Read(fd, buf[:])
	if err != nil {
		return "", err
	}
	for _, line := range strings.Split(string(buf[:n]), "\n") {
		if p, ok := strings.CutPrefix(line, "0::"); ok {
			return path.Base(p), nil
		}
	}
	return "", os.ErrNotExist
}

// entryOut shows a new entry's owners as the sandbox's and says how long the kernel may keep
// its name: f.cache, or not at all while sessions have rules of their own, since a name one
// caller may see another may not.
func (f *FS) entryOut(out *fuse.EntryOut) {
	f.attrOut(&out.Attr)
	if len(*f.sessions.Load()) == 0 {
		out.SetEntryTimeout(f.cache)
	}
}

// node is a loopback node whose operations are checked against the rules.
type node struct {
	gofs.LoopbackNode
	fs *FS
}

// level is the level of the node's child name ("": of the node). A node no longer in the
// tree (removed while open) is at none.
func (n *node) level(ctx context.Context, name string) perms.Level {
	var parts []string
	for p := n.EmbeddedInode(); p != n.fs.root.EmbeddedInode(); {
		nm, parent := p.Parent()
		if parent == nil {
			return perms.None
		}
		parts, p = append(parts, nm), parent
	}
	slices.Reverse(parts)
	return n.fs.level(ctx, path.Join(path.Join(parts...), name))
}

// rel is the node's path relative to the layer's root, or that of its child name.
func (n *node) rel(name string) string { return path.Join(n.Path(nil), name) }

// underlying is the path, in the served directory, of the node's child name.
func (n *node) underlying(name string) string {
	return filepath.Join(n.RootData.Path, n.Path(nil), name)
}

// creatable checks that a new name may be made at the node's child name: only at write.
func (n *node) creatable(ctx context.Context, name string) syscall.Errno {
	if n.level(ctx, name) < perms.Write {
		return syscall.EACCES
	}
	return 0
}

func (n *node) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	if n.level(ctx, name) == perms.None {
		return nil, syscall.ENOENT
	}
	ch, errno := n.LoopbackNode.Lookup(ctx, name, out)
	n.fs.entryOut(out)
	return ch, errno
}

func (n *node) OpendirHandle(ctx context.Context, flags uint32) (gofs.FileHandle, uint32, syscall.Errno) {
	ds, errno := gofs.NewLoopbackDirStream(n.underlying(""))
	if errno != 0 {
		return nil, 0, errno
	}
	defer ds.Close()
	var keep []fuse.DirEntry
	for ds.HasNext() {
		e, errno := ds.Next()
		if errno != 0 {
			return nil, 0, errno
		}
		if e.Name == "." || e.Name == ".." || n.level(ctx, e.Name) > perms.None {
			keep = append(keep, e)
		}
	}
	return gofs.NewListDirStream(keep).(gofs.FileHandle), 0, 0
}

func (n *node) Open(ctx context.Context, flags uint32) (gofs.FileHandle, uint32, syscall.Errno) {
	lvl := n.level(ctx, "")
	if lvl < perms.Read || (lvl < perms.Write && flags&(syscall.O_WRONLY|syscall.O_RDWR|syscall.O_TRUNC) != 0) {
		return nil, 0, syscall.EACCES
	}
	fh, fflags, errno := n.LoopbackNode.Open(ctx, flags)
	if n.fs.cache > sharedCache {
		fflags |= fuse.FOPEN_KEEP_CACHE
	}
	return fh, fflags, errno
}

func (n *node) Getattr(ctx context.Context, f gofs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	errno := n.LoopbackNode.Getattr(ctx, f, out)
	n.fs.attrOut(&out.Attr)
	return errno
}

func (n *node) Setattr(ctx context.Context, f gofs.FileHandle, in *fuse.SetAttrIn, out *fuse.AttrOut) syscall.Errno {
	if n.level(ctx, "") < perms.Write {
		return syscall.EACCES
	}
	if uid, ok := in.GetUID(); ok {
		if in.Owner.Uid, ok = n.fs.ids.toDisk(uid, n.fs.ids.RootUID); !ok {
			return syscall.EINVAL
		}
	}
	if gid, ok := in.GetGID(); ok {
		if in.Owner.Gid, ok = n.fs.ids.toDisk(gid, n.fs.ids.RootGID); !ok {
			return syscall.EINVAL
		}
	}
	errno := n.LoopbackNode.Setattr(ctx, f, in, out)
	n.fs.attrOut(&out.Attr)
	return errno
}

// Setxattr and Removexattr change user.* attributes only: the layer acts as the host's root,
// and the other namespaces (trusted.*, security.*, system.* ACLs) would let the sandbox do
// as root what it may not do itself.
func (n *node) Setxattr(ctx context.Context, attr string, data []byte, flags uint32) syscall.Errno {
	if errno := n.xattrChange(ctx, attr); errno != 0 {
		return errno
	}
	return n.LoopbackNode.Setxattr(ctx, attr, data, flags)
}

func (n *node) Removexattr(ctx context.Context, attr string) syscall.Errno {
	if errno := n.xattrChange(ctx, attr); errno != 0 {
		return errno
	}
	return n.LoopbackNode.Removexattr(ctx, attr)
}

func (n *node) xattrChange(ctx context.Context, attr string) syscall.Errno {
	switch {
	case !strings.HasPrefix(attr, "user."):
		return syscall.EPERM
	case n.level(ctx, "") < perms.Write:
		return syscall.EACCES
	}
	return 0
}

// Ioctl refuses every ioctl: the layer would run them as the host's root on the workspace's
// files.
func (n *node) Ioctl(context.Context, gofs.FileHandle, uint32, uint64, []byte, []byte) (int32, syscall.Errno) {
	return 0, syscall.ENOTTY
}

func (n *node) Create(ctx context.Context, name string, flags, mode uint32, out *fuse.EntryOut) (*gofs.Inode, gofs.FileHandle, uint32, syscall.Errno) {
	if errno := n.creatable(ctx, name); errno != 0 {
		return nil, nil, 0, errno
	}
	ch, fh, ff, errno := n.LoopbackNode.Create(ctx, name, flags, mode, out)
	n.fs.owned(ctx, n.underlying(name), out, errno)
	return ch, fh, ff, errno
}

func (n *node) Mkdir(ctx context.Context, name string, mode uint32, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	if errno := n.creatable(ctx, name); errno != 0 {
		return nil, errno
	}
	ch, errno := n.LoopbackNode.Mkdir(ctx, name, mode, out)
	n.fs.owned(ctx, n.underlying(name), out, errno)
	return ch, errno
}

func (n *node) Mknod(ctx context.Context, name string, mode, rdev uint32, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	if errno := n.creatable(ctx, name); errno != 0 {
		return nil, errno
	}
	ch, errno := n.LoopbackNode.Mknod(ctx, name, mode, rdev, out)
	n.fs.owned(ctx, n.underlying(name), out, errno)
	return ch, errno
}

func (n *node) Symlink(ctx context.Context, target, name string, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	if errno := n.creatable(ctx, name); errno != 0 {
		return nil, errno
	}
	ch, errno := n.LoopbackNode.Symlink(ctx, target, name, out)
	n.fs.owned(ctx, n.underlying(name), out, errno)
	return ch, errno
}

// Link makes a second name for a file: both names must be at write, or the link would show
// (or let change) the file's content at a level its first name does not allow.
func (n *node) Link(ctx context.Context, target gofs.InodeEmbedder, name string, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	if errno := n.creatable(ctx, name); errno != 0 {
		return nil, errno
	}
	if t, ok := target.(*node); !ok || t.level(ctx, "") < perms.Write {
		return nil, syscall.EACCES
	}
	ch, errno := n.LoopbackNode.Link(ctx, target, name, out)
	n.fs.entryOut(out)
	return ch, errno
}

func (n *node) Tmpfile(ctx context.Context, flags, mode uint32, out *fuse.EntryOut) (*gofs.Inode, gofs.FileHandle, uint32, syscall.Errno) {
	if n.level(ctx, "") < perms.Write {
		return nil, nil, 0, syscall.EACCES
	}
	return n.LoopbackNode.Tmpfile(ctx, flags, mode, out)
}

func (n *node) Unlink(ctx context.Context, name string) syscall.Errno {
	if errno := n.removable(ctx, name); errno != 0 {
		return errno
	}
	return n.LoopbackNode.Unlink(ctx, name)
}

func (n *node) Rmdir(ctx context.Context, name string) syscall.Errno {
	if errno := n.removable(ctx, name); errno != 0 {
		return errno
	}
	return n.LoopbackNode.Rmdir(ctx, name)
}

// removable checks that the child name may go: only at write (a hidden one does not exist).
func (n *node) removable(ctx context.Context, name string) syscall.Errno {
	switch n.level(ctx, name) {
	case perms.None:
		return syscall.ENOENT
	case perms.Write:
		return 0
	}
	return syscall.EACCES
}

// Rename moves a name at write to a name at write. A directory moves everything under it:
// nothing in it may end up at a level above the one it has now (a file kept read-only in a
// writable tree must not become writable by moving the tree), or the rename is refused.
func (n *node) Rename(ctx context.Context, name string, newParent gofs.InodeEmbedder, newName string, flags uint32) syscall.Errno {
	np, ok := newParent.(*node)
	if !ok {
		return syscall.EXDEV
	}
	if errno := n.removable(ctx, name); errno != 0 {
		return errno
	}
	if errno := np.creatable(ctx, newName); errno != 0 {
		return errno
	}
	from, to := n.rel(name), np.rel(newName)
	if !n.fs.keepsLevels(ctx, n.underlying(name), from, to) {
		return syscall.EACCES
	}
	if flags&unix.RENAME_EXCHANGE != 0 && !n.fs.keepsLevels(ctx, np.underlying(newName), to, from) {
		return syscall.EACCES
	}
	return n.LoopbackNode.Rename(ctx, name, newParent, newName, flags)
}

// keepsLevels reports whether moving the tree at the served path p from the path from to to
// (relative to the layer's root) raises the level of nothing in it.
func (f *FS) keepsLevels(ctx context.Context, p, from, to string) bool {
	ok := true
	filepath.WalkDir(p, func(sub string, _ fs.DirEntry, err error) error {
		if err != nil {
			return nil // gone meanwhile: nothing of it moves
		}
		rest, _ := filepath.Rel(p, sub)
		if f.level(ctx, path.Join(to, rest)) > f.level(ctx, path.Join(from, rest)) {
			ok = false
			return filepath.SkipAll
		}
		return nil
	})
	return ok
}

// attrOut shows the owners of an entry as the sandbox's.
func (f *FS) attrOut(a *fuse.Attr) {
	a.Uid = f.ids.toSandbox(a.Uid, f.ids.RootUID)
	a.Gid = f.ids.toSandbox(a.Gid, f.ids.RootGID)
}

// owned gives what the caller created (the loopback made it the caller's host ids) the
// directory's owners for those ids, and shows them as the sandbox's.
func (f *FS) owned(ctx context.Context, p string, out *fuse.EntryOut, errno syscall.Errno) {
	if errno != 0 {
		return
	}
	if f.ids.Size != 0 {
		if caller, ok := fuse.FromContext(ctx); ok {
			uid, uok := f.ids.toDisk(caller.Uid, f.ids.RootUID)
			gid, gok := f.ids.toDisk(caller.Gid, f.ids.RootGID)
			if uok && gok {
				os.Lchown(p, int(uid), int(gid))
				out.Attr.Uid, out.Attr.Gid = uid, gid
			}
		}
	}
	f.entryOut(out)
}
