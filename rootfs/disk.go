package rootfs

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// A disk is a sparse ext4 image file on a loop device: the volume that holds a disk-limited
// sandbox's writable layers, so they cannot grow beyond its size. The loop device is attached
// with LO_FLAGS_AUTOCLEAR: it detaches itself once its file system is no longer mounted
// anywhere (the host's mount and the sandbox's overlays), so a crash at any point leaves no
// loop device bound for good. A device the kernel made for a disk (LOOP_CTL_GET_FREE adds
// one when none is free) is removed once released: free devices add up otherwise, a
// thousand after a thousand sandboxes, and every one is a line in /proc/diskstats, which
// LXCFS reads whole whenever a sandbox's view of it is looked at: runc does, in each create;
// with 1,333 free devices a cold create a second after the last took 6–13 ms longer (0.3 s
// after, no longer: docs/benchmarks.md).

// mkfsArgs make the image quick to create: no reserved blocks (the whole size is the
// sandbox's), inode tables and journal initialised lazily (mounted with noinit_itable, so the
// kernel never writes them out: a fresh sparse file reads as zeroes anyway), no discard, and no
// blocks reserved for growing the file system (resize_inode: 1,024 group descriptor blocks,
// 4 MB of zeroes of a 10 GB disk's 4.2 MB of data, written by mkfs and by every copy of a
// template; nsbox never grows a disk).
var mkfsArgs = []string{"-q", "-F", "-t", "ext4", "-m", "0", "-O", "^resize_inode", "-E", "lazy_itable_init=1,lazy_journal_init=1,nodiscard"}

// DiskDir is a directory a new disk's file system is made with, at its root, root's.
type DiskDir struct {
	Name string
	Mode os.FileMode
}

// MakeDisk creates a sparse ext4 image of sizeMB MiB at image (which must not exist), whose
// file system holds dirs: made by mkfs (-d), they cost nothing when the disk is mounted, where a
// mkdir on a fresh file system takes ~0.5 ms here (its first inode in a group, and a journal
// transaction).
func MakeDisk(image string, sizeMB int64, dirs []DiskDir) error {
	args := mkfsArgs
	if len(dirs) > 0 {
		// The root is as mkfs makes it without -d: 0755.
		skeleton := image + ".dirs"
		_ = os.RemoveAll(skeleton) // a crash's
		defer os.RemoveAll(skeleton)
		for _, d := range append([]DiskDir{{"", 0o755}}, dirs...) {
			// Mkdir's mode is masked by the umask: Chmod sets it.
			path := filepath.Join(skeleton, d.Name)
			err := os.Mkdir(path, d.Mode)
			if err == nil {
				err = os.Chmod(path, d.Mode)
			}
			if err != nil {
				return fmt.Errorf("make disk's directories: %w", err)
			}
		}
		args = append(slices.Clip(args), "-d", skeleton)
	}
	f, err := os.OpenFile(image, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("create disk image: %w", err)
	}
	err = f.Truncate(sizeMB << 20)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("size disk image: %w", err)
	}
	out, err := exec.Command("mkfs.ext4", append(args, image)...).CombinedOutput()
	if err != nil {
		if hostFull(filepath.Dir(image)) {
			// mkfs says so only in its output: the caller sees ENOSPC, as from a write of its own.
			return fmt.Errorf("mkfs.ext4 %s: %w (%v: %s)", image, unix.ENOSPC, err, bytes.TrimSpace(out))
		}
		return fmt.Errorf("mkfs.ext4 %s (is e2fsprogs installed?): %v: %s", image, err, bytes.TrimSpace(out))
	}
	return nil
}

// hostFull reports whether the file system of dir has less room left than a new disk's
// metadata takes (~170 KB): a failed mkfs there ran out of it.
func hostFull(dir string) bool {
	var st unix.Statfs_t
	return unix.Statfs(dir, &st) == nil && st.Bavail*uint64(st.Bsize) < 1<<20
}

// CopyDisk makes image (which must not exist) a copy of the disk image template with its holes
// kept: of a freshly made ext4 that is its ~4 MB of metadata. It copies past the page cache
// (O_DIRECT, where the file system has it), through one kept buffer: through the page cache
// each copy filled ~1,000 new pages, 4.5 ms of CPU alone and ~11 ms among 1,000 sandboxes on a
// VM where the first write to a page costs ~10 µs, against 2.2 ms direct (docs/benchmarks.md,
// "Session 18"). The copy is on disk when it returns.
func CopyDisk(template, image string) (err error) {
	src, err := openMaybeDirect(template, os.O_RDONLY, 0)
	if err != nil {
		return fmt.Errorf("open disk template: %w", err)
	}
	defer src.Close()
	fi, err := src.Stat()
	if err != nil {
		return fmt.Errorf("stat disk template: %w", err)
	}
	if fi.Size()%diskCopyAlign != 0 {
		return fmt.Errorf("disk template %s: %d bytes, not whole blocks of %d", template, fi.Size(), diskCopyAlign)
	}
	dst, err := openMaybeDirect(image, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("create disk image: %w", err)
	}
	defer func() {
		if cerr := dst.Close(); err == nil && cerr != nil {
			err = fmt.Errorf("close disk image: %w", cerr)
		}
	}()
	diskCopyBuffer.Lock()
	defer diskCopyBuffer.Unlock()
	if diskCopyBuffer.buf == nil {
		b := make([]byte, diskCopyBufferSize+diskCopyAlign)
		skip := (diskCopyAlign - int(uintptr(unsafe.Pointer(&b[0]))%diskCopyAlign)) % diskCopyAlign
		diskCopyBuffer.buf = b[skip : skip+diskCopyBufferSize]
	}
	for off := int64(0); ; {
		data, err := unix.Seek(int(src.Fd()), off, unix.SEEK_DATA)
		if errors.Is(err, unix.ENXIO) {
			break // no data after off
		}
		if err != nil {
			return fmt.Errorf("find data in disk template: %w", err)
		}
		hole, err := unix.Seek(int(src.Fd()), data, unix.SEEK_HOLE)
		if err != nil {
			return fmt.Errorf("find a hole in disk template: %w", err)
		}
		// Data and holes are in whole blocks of the file system, and the size too.
		for at := data; at < hole; {
			chunk := diskCopyBuffer.buf[:min(int64(len(diskCopyBuffer.buf)), hole-at)]
			if _, err := src.ReadAt(chunk, at); err != nil {
				return fmt.Errorf("read disk template at %d: %w", at, err)
			}
			if _, err := dst.WriteAt(chunk, at); err != nil {
				return fmt.Errorf("write disk image at %d: %w", at, err)
			}
			at += int64(len(chunk))
		}
		off = hole
	}
	if err := dst.Truncate(fi.Size()); err != nil {
		return fmt.Errorf("size disk image: %w", err)
	}
	if err := dst.Sync(); err != nil {
		return fmt.Errorf("sync disk image: %w", err)
	}
	return nil
}

// CopyDisk's buffer, kept: a new one would be new pages to write on every copy. Its address
// and every offset and length CopyDisk reads or writes are multiples of diskCopyAlign, as
// O_DIRECT needs.
var diskCopyBuffer struct {
	sync.Mutex
	buf []byte
}

const (
	diskCopyAlign      = 4096
	diskCopyBufferSize = 256 << 10
)

// openMaybeDirect opens name, then makes its I/O direct (O_DIRECT) unless its file system
// refuses. (Opened with O_DIRECT, a file the open creates is made before the refusal.)
func openMaybeDirect(name string, flag int, perm os.FileMode) (*os.File, error) {
	f, err := os.OpenFile(name, flag, perm)
	if err != nil {
		return nil, err
	}
	fl, err := unix.FcntlInt(f.Fd(), unix.F_GETFL, 0)
	if err == nil {
		_, err = unix.FcntlInt(f.Fd(), unix.F_SETFL, fl|unix.O_DIRECT)
	}
	if err != nil && !errors.Is(err, unix.EINVAL) {
		f.Close()
		return nil, fmt.Errorf("direct I/O on %s: %w", name, err)
	}
	return f, nil
}

// MountDisk attaches image to a free loop device and mounts its ext4 at target (private,
// nosuid and nodev: it holds what the sandbox writes).
func MountDisk(image, target string) error {
	m, err := OpenDiskMount(image)
	if err != nil {
		return err
	}
	return m.Attach(target)
}

// DiskMount is a disk's file system mounted but attached to no path (the mount API's
// fsmount), so that mounting it somewhere later (Attach) is a move of the mount, not the ~1.5
// ms of a loop device and an ext4 mount. Closed without being attached, it is unmounted (the
// kernel dissolves a detached mount with its last descriptor, a crash's too) and its loop
// device clears itself.
type DiskMount struct {
	image string
	fd    int // -1 once closed
}

// diskMountFlags are the ext4 options a disk is mounted with: no inode tables written out
// (mkfsArgs), and no block bitmaps read ahead of their use (by default ext4's lazyinit thread
// reads every group's at mount: ~320 KB of page cache a 10 GB disk, and 1 % of the CPU while
// sandboxes with disks were created, docs/benchmarks.md "Session 20").
var diskMountFlags = []string{"noinit_itable", "no_prefetch_block_bitmaps"}

// OpenDiskMount attaches image to a free loop device and mounts its ext4, nowhere.
func OpenDiskMount(image string) (*DiskMount, error) {
	dev, err := attachLoop(image)
	if err != nil {
		return nil, err
	}
	defer dev.Close() // the mount holds the device from here on
	fs, err := unix.Fsopen("ext4", unix.FSOPEN_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("mount %s: open an ext4 context: %w", image, err)
	}
	defer unix.Close(fs)
	err = unix.FsconfigSetString(fs, "source", dev.Name())
	for _, flag := range diskMountFlags {
		if err == nil {
			err = unix.FsconfigSetFlag(fs, flag)
		}
	}
	if err == nil {
		err = unix.FsconfigCreate(fs)
	}
	if err != nil {
		return nil, fmt.Errorf("mount %s (%s): %w", image, dev.Name(), err)
	}
	fd, err := unix.Fsmount(fs, unix.FSMOUNT_CLOEXEC, unix.MOUNT_ATTR_NOSUID|unix.MOUNT_ATTR_NODEV)
	if err != nil {
		return nil, fmt.Errorf("mount %s (%s): %w", image, dev.Name(), err)
	}
	return &DiskMount{image: image, fd: fd}, nil
}

// Warm makes the file system's first metadata writes, on its directories dirs (chowned to root,
// whose they are): a disk's first costs ~0.1 ms each (its journal's first transaction, its
// inode table read through the loop device) where the same after costs ~0.02 ms, so a spare
// warmed in the background leaves less to a create's own (its ids' chowns). A directory that
// is not there is left.
func (m *DiskMount) Warm(dirs []DiskDir) error {
	for _, d := range dirs {
		err := unix.Fchownat(m.fd, d.Name, 0, 0, unix.AT_SYMLINK_NOFOLLOW)
		if err != nil && !errors.Is(err, unix.ENOENT) {
			return fmt.Errorf("warm the file system of %s: %w", m.image, err)
		}
	}
	return nil
}

// Attach attaches the file system at target (made if missing), private, and closes m: if the
// attach fails, the file system is unmounted.
func (m *DiskMount) Attach(target string) error {
	defer m.Close()
	if err := os.MkdirAll(target, 0o700); err != nil {
		return fmt.Errorf("make %s: %w", target, err)
	}
	if err := unix.MoveMount(m.fd, "", unix.AT_FDCWD, target, unix.MOVE_MOUNT_F_EMPTY_PATH); err != nil {
		return fmt.Errorf("mount %s at %s: %w", m.image, target, err)
	}
	if err := unix.Mount("", target, "", unix.MS_PRIVATE, ""); err != nil {
		_ = unix.Unmount(target, unix.MNT_DETACH)
		return fmt.Errorf("make %s private: %w", target, err)
	}
	return nil
}

// Close unmounts a file system not attached (and only forgets one that was).
func (m *DiskMount) Close() {
	if m.fd >= 0 {
		unix.Close(m.fd)
		m.fd = -1
	}
}

// attachLoop binds image to a free loop device and returns the open device. Another process
// may take the free device first; then it tries the next one.
func attachLoop(image string) (*os.File, error) {
	backing, err := os.OpenFile(image, os.O_RDWR, 0)
	if err != nil {
		return nil, fmt.Errorf("open disk image: %w", err)
	}
	defer backing.Close()
	ctl, err := os.OpenFile("/dev/loop-control", os.O_RDWR, 0)
	if err != nil {
		return nil, fmt.Errorf("open loop control: %w", err)
	}
	defer ctl.Close()
	var lastErr error
	for attempt := 0; attempt < 50; attempt++ {
		n, err := unix.IoctlRetInt(int(ctl.Fd()), unix.LOOP_CTL_GET_FREE)
		if err != nil {
			return nil, fmt.Errorf("find a free loop device: %w", err)
		}
		dev, err := os.OpenFile(fmt.Sprintf("/dev/loop%d", n), os.O_RDWR, 0)
		// Its node is not there yet, or the device is being removed (removeLoops).
		if errors.Is(err, os.ErrNotExist) || errors.Is(err, unix.ENXIO) {
			lastErr = err
			time.Sleep(time.Millisecond)
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("open loop device: %w", err)
		}
		cfg := unix.LoopConfig{Fd: uint32(backing.Fd())}
		cfg.Info.Flags = unix.LO_FLAGS_AUTOCLEAR
		copy(cfg.Info.File_name[:unix.LO_NAME_SIZE-1], image)
		err = unix.IoctlLoopConfigure(int(dev.Fd()), &cfg)
		if err == nil {
			return dev, nil
		}
		dev.Close()
		if !errors.Is(err, unix.EBUSY) {
			return nil, fmt.Errorf("attach %s to %s: %w", image, dev.Name(), err)
		}
		lastErr = err // taken by someone else meanwhile
	}
	return nil, fmt.Errorf("attach %s to a loop device: %w", image, lastErr)
}

// ReleaseDisk unmounts target and waits until no loop device is bound to image any more (the
// device clears itself once the last mount of its file system is gone; a sandbox's overlays
// go with its mount namespace). Neither being there is not an error.
func ReleaseDisk(image, target string, wait time.Duration) error {
	// When target is mounted it watches the device it is mounted from alone: that is the one
	// device nsbox bound to image (MountDisk's attach is undone by the kernel when the
	// attaching process dies before the mount, LO_FLAGS_AUTOCLEAR). Only when target is not
	// mounted (a crash left the disk half released) does it look at every loop device, of
	// which there can be thousands (a sysfs read each).
	var watch []string
	if dev, ok := loopDeviceOf(target); ok && len(boundTo(image, []string{dev})) > 0 {
		watch = []string{dev}
	}
	if err := unix.Unmount(target, 0); errors.Is(err, unix.EBUSY) {
		err = unix.Unmount(target, unix.MNT_DETACH)
		if err != nil {
			return fmt.Errorf("unmount %s: %w", target, err)
		}
	} else if err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("unmount %s: %w", target, err)
	}
	if _, err := os.Stat(image); errors.Is(err, os.ErrNotExist) {
		return nil // no disk (the image is deleted only after its loop device is gone)
	}
	deadline := time.Now().Add(wait)
	released := watch
	for {
		var devs []string
		if watch != nil {
			devs = boundTo(image, watch)
		} else {
			devs = LoopDevices(image)
			if released == nil {
				released = devs
			}
		}
		if len(devs) == 0 {
			// In the background: it is mostly waiting, and what the caller does next
			// (deleting the image, say) would otherwise come 35 ms later, over whatever the
			// host does then (in the bench, the next create: +10 ms).
			go removeLoops(released)
			return nil
		}
		if time.Now().After(deadline) {
			// Detach by force; a device still in use clears itself when released.
			for _, d := range devs {
				if f, err := os.OpenFile(d, os.O_RDWR, 0); err == nil {
					_ = unix.IoctlSetInt(int(f.Fd()), unix.LOOP_CLR_FD, 0)
					f.Close()
				}
			}
			if devs = LoopDevices(image); len(devs) > 0 {
				return fmt.Errorf("loop device %s still holds %s (its file system is still in use)", strings.Join(devs, ", "), image)
			}
			return nil
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// removeLoops removes the loop devices devs (/dev/loopN), which a released disk was bound
// to; it is run as a goroutine of its own. The kernel refuses one that is bound or open again
// (another disk took it meanwhile: EBUSY), or that is gone already. Removing one takes ~35 ms
// of waiting here, so it runs on a thread that ends with it: a thread blocked that long makes
// the Go runtime start another, which it would otherwise keep (a burst of removes would leave
// the daemon with a thread per sandbox).
func removeLoops(devs []string) {
	runtime.LockOSThread() // never unlocked: the thread ends with the goroutine
	if len(devs) == 0 {
		return
	}
	ctl, err := os.OpenFile("/dev/loop-control", os.O_RDWR, 0)
	if err != nil {
		return
	}
	defer ctl.Close()
	for _, d := range devs {
		if n, err := strconv.Atoi(strings.TrimPrefix(d, "/dev/loop")); err == nil {
			_ = unix.IoctlSetInt(int(ctl.Fd()), unix.LOOP_CTL_REMOVE, n)
		}
	}
}

// loopDeviceOf is the loop device (/dev/loopN) the file system mounted at target is on.
func loopDeviceOf(target string) (string, bool) {
	var st unix.Stat_t
	if err := unix.Stat(target, &st); err != nil || unix.Major(st.Dev) != loopMajor {
		return "", false
	}
	link, err := os.Readlink(fmt.Sprintf("/sys/dev/block/%d:%d", unix.Major(st.Dev), unix.Minor(st.Dev)))
	if err != nil {
		return "", false
	}
	return "/dev/" + filepath.Base(link), true
}

// loopMajor is the block device major number of loop devices.
const loopMajor = 7

// LoopDevices lists the loop devices (/dev/loopN) whose backing file is image.
func LoopDevices(image string) []string {
	entries, _ := os.ReadDir("/sys/block")
	var devs []string
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), "loop") {
			devs = append(devs, "/dev/"+e.Name())
		}
	}
	return boundTo(image, devs)
}

// boundTo are those of the loop devices devs (/dev/loopN) whose backing file is image. It
// reads each one's backing_file in sysfs, which only a bound device has.
func boundTo(image string, devs []string) []string {
	if real, err := filepath.EvalSymlinks(image); err == nil {
		image = real
	}
	var out []string
	for _, d := range devs {
		data, err := os.ReadFile(filepath.Join("/sys/block", filepath.Base(d), "loop/backing_file"))
		if err != nil {
			continue
		}
		if strings.TrimSuffix(strings.TrimSpace(string(data)), " (deleted)") == image {
			out = append(out, d)
		}
	}
	return out
}
