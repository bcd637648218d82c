package fs

import (
	"golang.org/x/sys/unix"

	"github.com/nsbox/nsbox/api"
)

// The daemon works on a sandbox's files from outside its mount namespace, where the kernel
// does not refuse to unlink or rename over the sandbox's mount points (EBUSY applies only to
// mount points of the caller's own namespace): a rename over one detaches the mount inside
// the sandbox. So the file API checks before every change that the entry it replaces,
// moves or removes is not the root of a mount (the agent binary at /.nsbox/nsbox, /dev,
// /proc, /run/nsbox, bind mounts, the workspace), and that the directory it changes is not
// on one of nsbox's own mounts (guardedMounts): those are the agent's and the sandbox's
// devices, and nothing there is the sandbox's to change through the API.

// guardedMounts are the in-sandbox paths whose mounts the file API never changes anything on.
var guardedMounts = []string{"/.nsbox", "/run/nsbox", "/dev"}

// mountOf describes name in dir (or dir itself for ""), without following a symlink: its
// mount's id and whether it is that mount's root.
func mountOf(dir int, name string) (id uint64, root bool, err error) {
	flags := unix.AT_SYMLINK_NOFOLLOW
	if name == "" {
		flags |= unix.AT_EMPTY_PATH
	}
	var stx unix.Statx_t
	if err := unix.Statx(dir, name, flags, unix.STATX_TYPE|unix.STATX_MNT_ID, &stx); err != nil {
		return 0, false, err
	}
	return stx.Mnt_id, stx.Attributes&unix.STATX_ATTR_MOUNT_ROOT != 0, nil
}

// guard refuses an operation op at p that changes the entry name in dir: permission_denied
// when dir is on a guarded mount, conflict when the entry is a mount's root (guardEntry).
func (r *Root) guard(op, p string, dir int, name string) error {
	mnt, _, err := mountOf(dir, "")
	if err != nil {
		return pathErr(op, p, err)
	}
	for _, g := range guardedMounts {
		fd, err := r.open(g, unix.O_PATH|unix.O_DIRECTORY)
		if err != nil {
			continue // the sandbox has no such directory: nothing to guard
		}
		id, root, err := mountOf(fd, "")
		unix.Close(fd)
		if err == nil && root && id == mnt {
			return api.Errorf(api.CodePermissionDenied, "%s %s: %s is nsbox's or the sandbox's devices' and is not changed through the file API", op, p, g)
		}
	}
	return guardEntry(op, p, dir, name)
}

// guardEntry refuses (conflict, as EBUSY would) to change the entry name in dir (at p) when
// it is the root of a mount. A missing entry is fine.
func guardEntry(op, p string, dir int, name string) error {
	_, root, err := mountOf(dir, name)
	switch {
	case err == unix.ENOENT:
		return nil
	case err != nil:
		return pathErr(op, p, err)
	case root:
		return api.Errorf(api.CodeConflict, "%s %s: device or resource busy (a mount point: the file API does not replace, move or remove mount points)", op, p)
	}
	return nil
}
