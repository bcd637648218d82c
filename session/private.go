package session

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// A session's private folder is a directory of the private store (the root of a mount the
// daemon cloned from the host's directory and handed to the agent as an open directory: no
// path in the sandbox leads to it, and ".." of its root is itself) that only
// the session's processes hold open, at descriptor PrivateFD. ~/.private is a symbolic link to
// /proc/self/fd/PrivateFD, so it is the folder of whichever session's process follows it,
// and nothing for any other process. The agent's per-process Landlock domains (agent/
// landlock.go) close the rest: the store's root (the folder's "..") and the other folders in
// it, and other sessions' processes' descriptors, root and cwd in /proc.

// PrivateFD is the descriptor at which a session's processes hold its private folder: 999, or
// half the agent's open-file limit when that is below 1024 (the sandbox's limit is the
// daemon's): a process cannot be given a descriptor at or above the limit. The folder is not
// in the started process's list of files (a list up to PrivateFD is ~24 kB of allocations per
// start, which an agent that never collects keeps): the StartFunc gets it apart.
var PrivateFD = privateFD()

func privateFD() int {
	var lim unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &lim); err == nil && lim.Cur < 1024 {
		return int(lim.Cur) / 2
	}
	return 999
}

// PrivateName is the name of the private folder's link in the session user's home.
const PrivateName = ".private"

// privateTarget is what ~/.private links to.
var privateTarget = "/proc/self/fd/" + strconv.Itoa(PrivateFD)

// makePrivate makes the directory id in the store (anew: what an earlier session of the id
// left is removed), owned by the user c, and opens it.
func makePrivate(store *os.File, id string, c credential) (*os.File, error) {
	if err := removePrivate(store, id); err != nil {
		return nil, err
	}
	dirfd := int(store.Fd())
	if err := unix.Mkdirat(dirfd, id, 0o700); err != nil {
		return nil, fmt.Errorf("make private folder: %w", err)
	}
	if err := unix.Fchownat(dirfd, id, c.uid, c.gid, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return nil, fmt.Errorf("chown private folder: %w", err)
	}
	fd, err := unix.Openat(dirfd, id, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open private folder: %w", err)
	}
	return os.NewFile(uintptr(fd), "private/"+id), nil
}

// removePrivate removes the private folder id from the store, with everything in it.
func removePrivate(store *os.File, id string) error {
	if err := os.RemoveAll(filepath.Join("/proc/self/fd", strconv.Itoa(int(store.Fd())), id)); err != nil {
		return fmt.Errorf("remove private folder: %w", err)
	}
	return nil
}

// linkPrivate makes ~/.private of the user c the link to the private folder, unless it is
// already; it returns the link's path, or "" when something else has that name (left alone)
// or the home does not exist. Sessions of one user started at once (the default session, which
// starts with the agent, and one a restore or a request creates) may both find the link
// missing: the one whose symlink finds it made meanwhile looks at it again.
func linkPrivate(c credential) (string, error) {
	link, err := linkPrivateOnce(c)
	if errors.Is(err, fs.ErrExist) {
		link, err = linkPrivateOnce(c)
	}
	return link, err
}

// linkPrivateOnce is linkPrivate's one look and make.
func linkPrivateOnce(c credential) (string, error) {
	link := filepath.Join(c.home, PrivateName)
	target, err := os.Readlink(link)
	if err == nil {
		if target == privateTarget {
			return link, nil
		}
		return "", nil // a link of the user's own
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return "", nil // a file or directory of that name (EINVAL), or a home that cannot be read
	}
	if err := os.Symlink(privateTarget, link); errors.Is(err, fs.ErrNotExist) {
		return "", nil // no home directory
	} else if err != nil {
		return "", fmt.Errorf("link %s: %w", link, err) // fs.ErrExist: made meanwhile
	}
	if err := os.Lchown(link, c.uid, c.gid); err != nil {
		return "", fmt.Errorf("chown %s: %w", link, err)
	}
	return link, nil
}

// makePrivate gives the session its private folder and ~/.private, when there is a store.
func (s *Session) makePrivate() error {
	if s.store == nil {
		return nil
	}
	var err error
	if s.private, err = makePrivate(s.store, s.opts.ID, s.cred); err != nil {
		return err
	}
	var st unix.Statx_t
	if err := unix.Statx(int(s.private.Fd()), "", unix.AT_EMPTY_PATH, unix.STATX_MNT_ID, &st); err != nil {
		return fmt.Errorf("statx private folder: %w", err)
	}
	s.privateMnt = st.Mnt_id
	s.privateLink, err = linkPrivate(s.cred)
	return err
}

// cwd is the current directory of the session's shell pid ("" when it cannot be read), as
// the session's processes name it: in the private folder, the kernel shows the path on the
// detached store (/<id>/…), which becomes ~/.private/….
func (s *Session) cwd(pid int) string {
	cwd, mnt, err := shellCwd(pid, s.cred)
	switch {
	case err != nil:
		return ""
	case s.private == nil || mnt != s.privateMnt:
		return cwd
	case s.privateLink == "":
		return privateTarget + strings.TrimPrefix(cwd, "/"+s.opts.ID)
	}
	return s.privateLink + strings.TrimPrefix(cwd, "/"+s.opts.ID)
}

// ChdirPath is the path a new process of the session whose private folder is dir, linked at
// link, changes to for p: p itself, or for a p in the private folder the same directory
// through the descriptor the starting agent has of it (a process changes directory before
// its descriptors are set up, so ~/.private is not there yet).
func ChdirPath(p, link string, dir *os.File) string {
	if dir == nil || link == "" || (p != link && !strings.HasPrefix(p, link+"/")) {
		return p
	}
	return "/proc/self/fd/" + strconv.Itoa(int(dir.Fd())) + strings.TrimPrefix(p, link)
}

// removePrivate closes and removes the session's private folder (the link stays: it is
// every session's ~/.private).
func (s *Session) removePrivate() {
	if s.private == nil {
		return
	}
	s.private.Close()
	_ = removePrivate(s.store, s.opts.ID)
}

// Private is the session's private folder, open, or nil when it has none; processes started
// for the session get it at PrivateFD (StartFunc).
func (s *Session) Private() *os.File { return s.private }
