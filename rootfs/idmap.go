package rootfs

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"
)

// IDMap maps the ids 0..Size-1 of a sandbox's user namespace to Host..Host+Size-1 on the host,
// for uids and gids alike. A zero IDMap is no user namespace: ids are the host's.
type IDMap struct {
	Host, Size uint32
}

// IDsPerSandbox is the size of a sandbox's user namespace: ids 0-65535, as on a usual host.
const IDsPerSandbox = 1 << 16

// overflowID is what a user namespace shows for an id it does not map (nobody).
const overflowID = 65534

// Enabled reports whether m is a user namespace's mapping.
func (m IDMap) Enabled() bool { return m.Size > 0 }

// Maps reports whether the host's id host is an id of the namespace (every id is, without a
// user namespace).
func (m IDMap) Maps(host uint32) bool {
	return !m.Enabled() || (host >= m.Host && host-m.Host < m.Size)
}

// Inside is the namespace's id for the host's id host: itself without a user namespace,
// nobody (65534) when the namespace does not map it.
func (m IDMap) Inside(host uint32) uint32 {
	if !m.Maps(host) {
		return overflowID
	}
	return host - m.Host
}

// usernsCache holds one user namespace per mapping, for the process's life: a namespace only
// lends its mapping to the mounts made with it, so every container that is given the same
// block of ids can share it, and making one costs a process.
var usernsCache = struct {
	sync.Mutex
	m map[IDMap]*os.File
}{m: map[IDMap]*os.File{}}

// UserNS returns a descriptor of a user namespace with the mapping m, for id-mapped mounts and
// for the container to join (the caller must not close it). The namespace is owned by m's
// first host id, the sandbox's root, not by the host's root: the kernel charges the per-user
// counts (inotify instances and watches, fanotify groups, namespaces…) of everything in a
// user namespace to its owner in the parent namespace too, and a namespace owned by root
// would let a sandbox use up the host root's. The first call for a mapping starts a helper
// process that makes the namespace and stops, only long enough to write its maps and open
// /proc/<pid>/ns/user.
func UserNS(m IDMap) (*os.File, error) {
	usernsCache.Lock()
	defer usernsCache.Unlock()
	if f := usernsCache.m[m]; f != nil {
		return f, nil
	}
	f, err := onThreadAs(m.Host, func() (*os.File, error) {
		return makeUserNS(m)
	})
	if err != nil {
		return nil, fmt.Errorf("make a user namespace for ids %d-%d: %w", m.Host, m.Host+m.Size-1, err)
	}
	usernsCache.m[m] = f
	return f, nil
}

// makeUserNS is UserNS's work, on a thread whose effective uid is m's first host id: a new
// user namespace's owner is the effective uid of the thread that makes it. The helper execs
// this binary as that uid (with the daemon's capabilities: the binary need not be executable
// by others), and its constructor makes the namespace and stops (userns_helper.go).
func makeUserNS(m IDMap) (*os.File, error) {
	proc, err := startUserNSHelper()
	if err != nil {
		return nil, fmt.Errorf("start the user namespace helper as uid %d: %w", m.Host, err)
	}
	reaped := false
	defer func() {
		if reaped {
			_ = proc.Release()
			return
		}
		_ = proc.Kill()
		_, _ = proc.Wait()
	}()
	if reaped, err = waitStopped(proc.Pid); err != nil {
		return nil, err
	}
	mapping := fmt.Sprintf("0 %d %d\n", m.Host, m.Size)
	for _, file := range []string{"uid_map", "gid_map"} {
		if err := os.WriteFile(fmt.Sprintf("/proc/%d/%s", proc.Pid, file), []byte(mapping), 0); err != nil {
			return nil, fmt.Errorf("write the helper's %s: %w", file, err)
		}
	}
	f, err := os.Open(fmt.Sprintf("/proc/%d/ns/user", proc.Pid))
	if err != nil {
		return nil, fmt.Errorf("open user namespace: %w", err)
	}
	return f, nil
}

// startUserNSHelper starts the helper, which dies with the thread that starts it (its
// constructor sets the parent-death signal again after the exec, which clears it).
func startUserNSHelper() (*os.Process, error) {
	return os.StartProcess("/proc/self/exe", []string{usernsHelperName}, &os.ProcAttr{
		Env: []string{usernsParentEnv + strconv.Itoa(os.Getpid())},
		Sys: &syscall.SysProcAttr{Pdeathsig: unix.SIGKILL},
	})
}

// waitStopped waits until the user namespace helper pid has stopped itself in its new
// namespace, and says why it did not if it ended (reaped: the wait took its exit).
func waitStopped(pid int) (reaped bool, err error) {
	var status unix.WaitStatus
	for {
		_, err := unix.Wait4(pid, &status, unix.WUNTRACED, nil)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return false, fmt.Errorf("wait for the user namespace helper: %w", err)
		}
		break
	}
	switch {
	case status.Stopped():
		return false, nil
	case status.Exited():
		return true, fmt.Errorf("the user namespace helper could not make one: unshare(CLONE_NEWUSER): %w", syscall.Errno(status.ExitStatus()))
	}
	return true, fmt.Errorf("the user namespace helper ended before making one (%v)", status.Signal())
}

// onThreadAs runs f on a locked OS thread of its own whose effective (and file system) uid is
// uid, with the daemon's capabilities kept (SECBIT_NO_SETUID_FIXUP: a host that lets only the
// privileged make user namespaces still lets it), and returns what f returns. The uid is set by
// a raw syscall (syscall.Setresuid would change every thread of the daemon); the thread is
// never unlocked, so it ends with f, and Go starts new threads from a template thread, never
// from a locked one: no other thread gets its credentials.
func onThreadAs(uid uint32, f func() (*os.File, error)) (*os.File, error) {
	type result struct {
		file *os.File
		err  error
	}
	done := make(chan result, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread's credentials are not the process's
		if err := unix.Prctl(unix.PR_SET_SECUREBITS, secbitNoSetuidFixup, 0, 0, 0); err != nil {
			done <- result{nil, fmt.Errorf("keep capabilities across setresuid: %w", err)}
			return
		}
		keep := ^uintptr(0) // (uid_t)-1: unchanged
		if _, _, errno := unix.RawSyscall(unix.SYS_SETRESUID, keep, uintptr(uid), keep); errno != 0 {
			done <- result{nil, fmt.Errorf("take the effective uid %d: %w", uid, errno)}
			return
		}
		file, err := f()
		done <- result{file, err}
	}()
	res := <-done
	return res.file, res.err
}

// secbitNoSetuidFixup keeps a thread's capabilities when its effective uid leaves 0.
const secbitNoSetuidFixup = 1 << 2

// lowerTree makes a detached, read-only copy of the mount tree at dir whose ids are mapped
// through the user namespace userns (unless it is nil), and returns its descriptor.
func lowerTree(dir string, userns *os.File) (int, error) {
	fd, err := unix.OpenTree(unix.AT_FDCWD, dir, unix.OPEN_TREE_CLONE|unix.OPEN_TREE_CLOEXEC)
	if err != nil {
		return -1, fmt.Errorf("clone mount of %s: %w", dir, err)
	}
	attr := &unix.MountAttr{Attr_set: unix.MOUNT_ATTR_RDONLY}
	if userns != nil {
		attr.Attr_set |= unix.MOUNT_ATTR_IDMAP
		attr.Userns_fd = uint64(userns.Fd())
	}
	if err := unix.MountSetattr(fd, "", unix.AT_EMPTY_PATH, attr); err != nil {
		unix.Close(fd)
		return -1, fmt.Errorf("make a read-only (id-mapped: its file system must support id-mapped mounts) mount of %s: %w", dir, err)
	}
	return fd, nil
}

// mountStagedOverlay mounts overlay(lower = layers, each id-mapped through userns unless it is
// nil, upper) at target. overlayfs takes its layers by path from the mount namespace of the
// one who mounts it, so the (mapped) lowers are put under a staging tmpfs in the staging mount
// namespace (stagingns.go), on a thread that enters it and goes with it: the host never shows
// them. The overlay is made there, and attached at target in the host's.
func mountStagedOverlay(layers []string, upper, work, target string, userns *os.File, attrs int) error {
	type result struct {
		fd  int
		err error
	}
	done := make(chan result, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread leaves the host's mount namespace
		fd, err := makeStagedOverlay(layers, upper, work, userns, attrs)
		done <- result{fd, err}
	}()
	res := <-done
	if res.err != nil {
		return res.err
	}
	defer unix.Close(res.fd)
	if err := unix.MoveMount(res.fd, "", unix.AT_FDCWD, target, unix.MOVE_MOUNT_F_EMPTY_PATH); err != nil {
		return fmt.Errorf("attach overlay at %s: %w", target, err)
	}
	return nil
}

// makeStagedOverlay is mountStagedOverlay's work on its locked thread: it returns the overlay
// as a detached mount.
func makeStagedOverlay(layers []string, upper, work string, userns *os.File, attrs int) (int, error) {
	// The overlay's options show in the sandbox's mountinfo: it reaches its layers by short
	// relative names in a staging tmpfs (the thread's cwd), never by host paths. The layers and
	// the directory of upper and work are cloned here, in the host's namespace; the staging
	// tmpfs with the clones in it is attached in the staging namespace (overlayfs needs its
	// upper attached in the mounter's namespace) until the overlay is made; the overlay keeps
	// its layers.
	rw := filepath.Dir(upper)
	if filepath.Dir(work) != rw {
		return -1, fmt.Errorf("upper %s and work %s must be in one directory", upper, work)
	}
	clones := map[string]int{}
	defer func() {
		for _, fd := range clones {
			unix.Close(fd)
		}
	}()
	var params []string
	for i, layer := range layers {
		fd, err := lowerTree(layer, userns)
		if err != nil {
			return -1, err
		}
		name := strconv.Itoa(i)
		clones[name] = fd
		// One "lowerdir+" a layer, top first (Linux 6.8+): "lowerdir" with a ':' list is
		// refused through fsconfig, and one option per layer has no page-size limit on the list.
		params = append(params, "lowerdir+="+name)
	}
	fd, err := unix.OpenTree(unix.AT_FDCWD, rw, unix.OPEN_TREE_CLONE|unix.OPEN_TREE_CLOEXEC)
	if err != nil {
		return -1, fmt.Errorf("clone mount of %s: %w", rw, err)
	}
	clones["rw"] = fd
	params = append(params, "upperdir=rw/"+filepath.Base(upper), "workdir=rw/"+filepath.Base(work))
	stage, err := stagingTmpfs("64k", "755", unix.MOUNT_ATTR_NOSUID|unix.MOUNT_ATTR_NODEV|unix.MOUNT_ATTR_NOEXEC)
	if err != nil {
		return -1, err
	}
	defer unix.Close(stage)
	detach, err := enterStaging(stage)
	if err != nil {
		return -1, err
	}
	defer detach()
	for name, fd := range clones {
		if err := unix.Mkdirat(stage, name, 0o755); err != nil {
			return -1, fmt.Errorf("stage %s: %w", name, err)
		}
		if err := unix.MoveMount(fd, "", stage, name, unix.MOVE_MOUNT_F_EMPTY_PATH); err != nil {
			return -1, fmt.Errorf("stage %s: %w", name, err)
		}
	}
	if err := unix.Fchdir(stage); err != nil {
		return -1, fmt.Errorf("enter the staging directory: %w", err)
	}
	fsfd, err := unix.Fsopen("overlay", unix.FSOPEN_CLOEXEC)
	if err != nil {
		return -1, fmt.Errorf("open overlay file system: %w", err)
	}
	defer unix.Close(fsfd)
	for _, p := range append(params, strings.Split(OverlayOptions, ",")...) {
		key, value, _ := strings.Cut(p, "=")
		if err := unix.FsconfigSetString(fsfd, key, value); err != nil {
			return -1, fmt.Errorf("overlay option %s: %w", p, err)
		}
	}
	if err := unix.FsconfigCreate(fsfd); err != nil {
		return -1, fmt.Errorf("create overlay over %s: %w", upper, err)
	}
	mfd, err := unix.Fsmount(fsfd, unix.FSMOUNT_CLOEXEC, attrs)
	if err != nil {
		return -1, fmt.Errorf("mount overlay over %s: %w", upper, err)
	}
	return mfd, nil
}

// stagingTmpfs makes a detached tmpfs of at most size bytes ("64k") whose root has the mode
// (octal, "711"), with the mount attributes attrs, and returns its root's descriptor.
func stagingTmpfs(size, mode string, attrs int) (int, error) {
	fsfd, err := unix.Fsopen("tmpfs", unix.FSOPEN_CLOEXEC)
	if err != nil {
		return -1, fmt.Errorf("open staging tmpfs: %w", err)
	}
	defer unix.Close(fsfd)
	for key, value := range map[string]string{"size": size, "mode": mode} {
		if err := unix.FsconfigSetString(fsfd, key, value); err != nil {
			return -1, fmt.Errorf("staging tmpfs option %s=%s: %w", key, value, err)
		}
	}
	if err := unix.FsconfigCreate(fsfd); err != nil {
		return -1, fmt.Errorf("create staging tmpfs: %w", err)
	}
	mfd, err := unix.Fsmount(fsfd, unix.FSMOUNT_CLOEXEC, attrs)
	if err != nil {
		return -1, fmt.Errorf("mount staging tmpfs: %w", err)
	}
	return mfd, nil
}

// CheckIDMappedOverlay tells whether this host can give sandboxes user namespaces: an
// overlay over an id-mapped lower in dir (scratch space, removed after), or why not.
func CheckIDMappedOverlay(dir string) error {
	tmp, err := os.MkdirTemp(dir, "userns-check-")
	if err != nil {
		return fmt.Errorf("make scratch dir: %w", err)
	}
	defer os.RemoveAll(tmp)
	m := IDMap{Host: 1 << 31, Size: 1}
	lower := tmp + "/lower"
	if err := os.Mkdir(lower, 0o755); err != nil {
		return fmt.Errorf("make scratch dir: %w", err)
	}
	target := tmp + "/merged"
	if err := MountOverlay([]string{lower}, tmp+"/upper", tmp+"/work", target, m); err != nil {
		return err
	}
	return Detach(target)
}
