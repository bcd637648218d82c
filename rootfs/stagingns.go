package rootfs

import (
	"fmt"
	"os"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"

	"golang.org/x/sys/unix"
)

// An overlay is made in a mount namespace other than the host's (mountStagedOverlay): its
// layers are put under a staging tmpfs there, which the host never shows. Each overlay used to
// get a namespace of its own, unshared by its thread: a copy of the host's mount table, which
// holds a mount per sandbox (its disk), made private, then freed with the thread — three walks over every sandbox's mounts, so that each create cost the daemon more
// the more sandboxes there were (docs/benchmarks.md, "Session 19"). They now share one
// namespace, made once, whose only mount is a tmpfs, its root: each staging attaches its tmpfs
// at a directory of its own there and detaches it when the overlay is made.
var staging struct {
	once sync.Once
	ns   *os.File // the namespace (its nsfs file)
	err  error
	seq  atomic.Uint64 // names the stagings' directories
}

// stagingNamespace is the shared staging mount namespace, made at its first use.
func stagingNamespace() (*os.File, error) {
	staging.once.Do(func() {
		type result struct {
			ns  *os.File
			err error
		}
		done := make(chan result, 1)
		go func() {
			runtime.LockOSThread() // never unlocked: the thread leaves the host's mount namespace
			ns, err := makeStagingNamespace()
			done <- result{ns, err}
		}()
		res := <-done
		staging.ns, staging.err = res.ns, res.err
	})
	return staging.ns, staging.err
}

// makeStagingNamespace is stagingNamespace's work on a locked thread: a copy of the host's
// mount namespace, private, whose root becomes a tmpfs of its own and nothing else.
func makeStagingNamespace() (*os.File, error) {
	if err := unix.Unshare(unix.CLONE_FS | unix.CLONE_NEWNS); err != nil {
		return nil, fmt.Errorf("staging mount namespace: %w", err)
	}
	ns, err := os.Open("/proc/thread-self/ns/mnt")
	if err != nil {
		return nil, fmt.Errorf("staging mount namespace: %w", err)
	}
	err = func() error {
		// Nothing done here may reach the host's namespace.
		if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
			return fmt.Errorf("make the staging mount namespace private: %w", err)
		}
		root, err := stagingTmpfs("1m", "700", unix.MOUNT_ATTR_NOSUID|unix.MOUNT_ATTR_NODEV|unix.MOUNT_ATTR_NOEXEC)
		if err != nil {
			return err
		}
		defer unix.Close(root)
		// Attached over /proc (in this copy only: it exists on every host), entered, and made
		// the root, the host's tree stacked under it and detached.
		if err := unix.MoveMount(root, "", unix.AT_FDCWD, "/proc", unix.MOVE_MOUNT_F_EMPTY_PATH); err != nil {
			return fmt.Errorf("attach the staging namespace's root: %w", err)
		}
		if err := unix.Chdir("/proc"); err != nil {
			return fmt.Errorf("enter the staging namespace's root: %w", err)
		}
		if err := unix.PivotRoot(".", "."); err != nil {
			return fmt.Errorf("make the staging namespace's root: %w", err)
		}
		if err := unix.Unmount(".", unix.MNT_DETACH); err != nil {
			return fmt.Errorf("detach the host's tree from the staging namespace: %w", err)
		}
		return nil
	}()
	if err != nil {
		ns.Close()
		return nil, err
	}
	return ns, nil
}

// enterStaging moves the calling thread, locked for good, into the staging namespace, and
// attaches the detached mount tree there at a directory of its own; done detaches it again.
func enterStaging(tree int) (done func(), err error) {
	ns, err := stagingNamespace()
	if err != nil {
		return nil, err
	}
	if err := unix.Unshare(unix.CLONE_FS); err != nil {
		return nil, fmt.Errorf("unshare file system context: %w", err)
	}
	if err := unix.Setns(int(ns.Fd()), unix.CLONE_NEWNS); err != nil {
		return nil, fmt.Errorf("enter the staging mount namespace: %w", err)
	}
	dir := "/" + strconv.FormatUint(staging.seq.Add(1), 10)
	if err := unix.Mkdir(dir, 0o700); err != nil {
		return nil, fmt.Errorf("make staging directory: %w", err)
	}
	if err := unix.MoveMount(tree, "", unix.AT_FDCWD, dir, unix.MOVE_MOUNT_F_EMPTY_PATH); err != nil {
		unix.Rmdir(dir)
		return nil, fmt.Errorf("attach the staging tmpfs: %w", err)
	}
	return func() {
		_ = unix.Unmount(dir, unix.MNT_DETACH)
		_ = unix.Rmdir(dir)
	}, nil
}
