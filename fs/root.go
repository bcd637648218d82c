// Package fs performs file operations inside a sandbox's root exactly as the sandbox
// sees it (its own mount namespace, reached through /proc/<agent pid>/root): stat, list,
// read, atomic streaming write, mkdir, remove, move and inotify watches.
//
// It owns path safety for the files API. Every path is resolved by the kernel with
// openat2(RESOLVE_IN_ROOT|RESOLVE_NO_MAGICLINKS) on a descriptor of the root, so "..",
// absolute symlinks and symlink loops can never reach a host file. Operations on a last
// component (create, unlink, rename, chown) work on a descriptor of its parent directory and
// a single name, and recursive walks go from descriptor to descriptor with O_NOFOLLOW; no
// host path is ever built from strings, so a component swapped for a symlink between a
// check and its use cannot redirect an operation out of the root. Content is only read
// from regular files, reopened from an O_PATH descriptor, so device nodes and FIFOs are
// never opened.
//
// Errors are *api.Error values with precise codes (see pathErr); their messages name
// in-sandbox paths, never host paths.
package fs

import (
	"errors"
	"fmt"
	"path"

	"golang.org/x/sys/unix"

	"github.com/nsbox/nsbox/api"
	"github.com/nsbox/nsbox/rootfs"
)

// Root is a sandbox's root directory. It is safe for concurrent use; Close it when done.
type Root struct {
	fd      int          // O_PATH descriptor of the root directory
	ids     rootfs.IDMap // the sandbox's user namespace (zero: none)
	onClose func()
	// onThread, when set, is called on each thread of its own that an operation starts (as),
	// before the operation, and what it answers when that is done.
	onThread func() (done func(), err error)
}

// OpenRoot opens the directory at the host path dir as a sandbox root, typically
// "/proc/<agent pid>/root". ids is the sandbox's user namespace: ids that go in and out
// (owners given and described) are the sandbox's, and what is created belongs to their host
// ids (zero: no user namespace, the ids are the host's).
func OpenRoot(dir string, ids rootfs.IDMap) (*Root, error) {
	fd, err := unix.Open(dir, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, api.Errorf(api.CodeUnavailable, "sandbox root is not reachable: %v", err)
	}
	return &Root{fd: fd, ids: ids}, nil
}

// OnClose has Close call fn once the descriptor is released.
func (r *Root) OnClose(fn func()) { r.onClose = fn }

// OnThread has every operation that runs on a thread of its own (changes made as another
// owner) call fn on that thread first (an error fails the operation), and what fn answers
// once done. The file calls of a session with rules of its own use it to tell the
// workspace's permission layer that the thread acts for the session.
func (r *Root) OnThread(fn func() (done func(), err error)) { r.onThread = fn }

// Close releases the root's descriptor.
func (r *Root) Close() error {
	if r.onClose != nil {
		defer r.onClose()
	}
	if err := unix.Close(r.fd); err != nil {
		return fmt.Errorf("close sandbox root: %w", err)
	}
	return nil
}

// Resolve makes p an absolute, cleaned in-sandbox path. A relative p is relative to cwd
// (itself taken relative to "/" when not absolute), an empty p is cwd. ".." is applied
// lexically, as a shell's cd does, and never climbs above "/"; symlinks are left to the
// kernel, which resolves them inside the root when the path is used.
func Resolve(cwd, p string) string {
	if path.IsAbs(p) {
		return path.Clean(p)
	}
	return path.Join("/", cwd, p)
}

// maxResolveRetries bounds the retries of openat2, which answers EAGAIN when a concurrent
// rename in the sandbox keeps it from proving that ".." stayed inside the root.
const maxResolveRetries = 64

// open resolves the clean in-sandbox path p inside the root and opens it with flags.
func (r *Root) open(p string, flags int) (int, error) {
	how := unix.OpenHow{
		Flags:   uint64(flags | unix.O_CLOEXEC),
		Resolve: unix.RESOLVE_IN_ROOT | unix.RESOLVE_NO_MAGICLINKS,
	}
	for i := 0; ; i++ {
		fd, err := unix.Openat2(r.fd, p, &how)
		if (err == unix.EAGAIN || err == unix.EINTR) && i < maxResolveRetries {
			continue
		}
		return fd, err
	}
}

// openParent opens the directory that holds the clean path p (which must not be "/") and
// returns it with p's last component. op names the operation in errors.
func (r *Root) openParent(op, p string) (int, string, error) {
	if p == "/" {
		return -1, "", api.Errorf(api.CodeInvalidArgument, "%s /: not allowed on the sandbox's root directory", op)
	}
	fd, err := r.open(path.Dir(p), unix.O_PATH|unix.O_DIRECTORY)
	if err != nil {
		return -1, "", pathErr(op, p, err)
	}
	return fd, path.Base(p), nil
}

// clean makes a method's path argument absolute and clean (relative means relative to "/").
func clean(p string) string {
	return Resolve("/", p)
}

// pathErr turns err from operation op on the in-sandbox path p into an *api.Error whose
// code follows the errno. *api.Error values pass unchanged; errors without an errno (a
// failing upload reader) are wrapped with op and p.
func pathErr(op, p string, err error) error {
	var ae *api.Error
	var errno unix.Errno
	switch {
	case errors.As(err, &ae):
		return err
	case !errors.As(err, &errno):
		return fmt.Errorf("%s %s: %w", op, p, err)
	}
	return api.Errorf(errnoCode(errno), "%s %s: %s%s", op, p, errno.Error(), errnoHint(errno))
}

func errnoCode(errno unix.Errno) string {
	switch errno {
	case unix.ENOENT:
		return api.CodeNotFound
	case unix.EISDIR, unix.ENOTDIR, unix.ELOOP, unix.EXDEV, unix.EINVAL, unix.ENAMETOOLONG:
		return api.CodeInvalidArgument
	case unix.EACCES, unix.EPERM, unix.EROFS, unix.EOVERFLOW:
		return api.CodePermissionDenied
	case unix.ENOSPC, unix.EDQUOT:
		return api.CodeInsufficientStorage
	case unix.EFBIG:
		return api.CodeTooLarge
	case unix.EEXIST, unix.ENOTEMPTY, unix.EBUSY:
		return api.CodeConflict
	case unix.EAGAIN:
		return api.CodeUnavailable
	}
	return api.CodeInternal
}

// errnoHint completes the kernel's wording where it is not enough for an API user.
func errnoHint(errno unix.Errno) string {
	switch errno {
	case unix.ELOOP:
		return " (a symlink loop, or a /proc magic link, which is not followed)"
	case unix.EXDEV:
		return " (source and destination are on different mounts)"
	case unix.EAGAIN:
		return " (the path kept changing while it was resolved; try again)"
	case unix.EOVERFLOW:
		return " (an owner involved is no id of the sandbox's user namespace: in a writable host mount, a file of the host's root)"
	}
	return ""
}
