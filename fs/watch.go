package fs

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/nsbox/nsbox/api"
)

// Types of Event.Type.
const (
	EventCreate = "create"
	EventModify = "modify"
	EventDelete = "delete"
	EventMove   = "move"
	EventAttrib = "attrib"
	// EventOverflow means events were lost: the kernel's queue overflowed, or (Path set) a
	// new directory could not be watched.
	EventOverflow = "overflow"
)

// Event is a change under a watched directory; it is the file API's wire type.
type Event = api.FileEvent

const (
	watchMask = unix.IN_CREATE | unix.IN_MODIFY | unix.IN_DELETE | unix.IN_ATTRIB |
		unix.IN_MOVED_FROM | unix.IN_MOVED_TO | unix.IN_DELETE_SELF | unix.IN_ONLYDIR
	// moveWindow is how long a rename's first half waits for its second half before it
	// counts as a move out of the tree.
	moveWindow = 20 * time.Millisecond
	eventQueue = 64
)

// Watch reports changes in the directory p (a symlink to one is followed) until ctx ends,
// then closes the channel and releases everything. With recursive, changes in all
// directories below p too, including directories created later; what a new directory
// already holds when its watch starts is reported as "create" events (so an entry may be
// reported twice). Consecutive "modify" events of a file read together are merged. A
// consumer that falls behind makes the kernel drop events ("overflow"). The channel also
// closes when p itself is removed, after a "delete" event for it. Closing r does not end
// the watch.
func (r *Root) Watch(ctx context.Context, p string, recursive bool) (<-chan Event, error) {
	p = clean(p)
	w, err := r.newWatcher(recursive)
	if err != nil {
		return nil, pathErr("watch", p, err)
	}
	fd, err := w.root.open(p, unix.O_RDONLY|unix.O_DIRECTORY)
	if err == nil {
		w.top, err = w.watchTree(fd, p, nil)
		unix.Close(fd)
	}
	if err != nil {
		w.close()
		return nil, pathErr("watch", p, err)
	}
	go w.run(ctx)
	return w.out, nil
}

// newWatcher makes a watcher with its own inotify instance and its own reference to the
// root, so that closing r does not pull the root from under a running watch.
func (r *Root) newWatcher(recursive bool) (*watcher, error) {
	rootfd, err := unix.FcntlInt(uintptr(r.fd), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	ifd, err := unix.InotifyInit1(unix.IN_NONBLOCK | unix.IN_CLOEXEC)
	if err != nil {
		unix.Close(rootfd)
		return nil, err
	}
	return &watcher{
		root: &Root{fd: rootfd}, file: os.NewFile(uintptr(ifd), "inotify"),
		recursive: recursive, dirs: map[int]string{}, out: make(chan Event, eventQueue),
	}, nil
}

func (w *watcher) close() {
	w.file.Close()
	w.root.Close()
}

type watcher struct {
	root      *Root
	file      *os.File // the inotify descriptor
	recursive bool
	dirs      map[int]string // watch descriptor → directory path in the sandbox
	top       int
	pending   *pendingMove
	batch     []Event // events of the current read, to send
	out       chan Event
}

// pendingMove is the IN_MOVED_FROM half of a rename.
type pendingMove struct {
	ev     Event
	cookie uint32
}

// watchTree watches the directory open as fd (at p) and, when recursive, the directories
// below it. When found is not nil, what is below is appended to it as create events.
func (w *watcher) watchTree(fd int, p string, found *[]Event) (int, error) {
	var wd int
	err := w.inotify(func(ifd int) (err error) {
		wd, err = unix.InotifyAddWatch(ifd, fmt.Sprintf("/proc/self/fd/%d", fd), watchMask)
		return err
	})
	if err == unix.ENOSPC {
		return -1, api.Errorf(api.CodeUnavailable, "watch %s: the host's inotify watch limit is reached", p)
	}
	if err != nil {
		return -1, err
	}
	w.dirs[wd] = p
	if !w.recursive {
		return wd, nil
	}
	names, err := readNames(fd)
	if err != nil {
		return -1, err
	}
	for _, name := range names {
		child := path.Join(p, name)
		sub, err := openDirAt(fd, name)
		if found != nil {
			*found = append(*found, Event{Type: EventCreate, Path: child, IsDir: err == nil})
		}
		if err != nil || !w.recursive {
			continue // not a directory (or gone)
		}
		_, err = w.watchTree(sub, child, found)
		unix.Close(sub)
		if err != nil {
			return -1, err
		}
	}
	return wd, nil
}

// run reads inotify events and sends them until ctx ends or the watched directory goes.
func (w *watcher) run(ctx context.Context) {
	defer close(w.out)
	defer w.close()
	stop := context.AfterFunc(ctx, func() { w.file.Close() })
	defer stop()
	buf := make([]byte, 64<<10)
	for {
		n, err := w.file.Read(buf)
		switch {
		case errors.Is(err, os.ErrDeadlineExceeded):
			w.flushMove()
		case err != nil:
			return // closed by ctx, or the descriptor failed
		default:
			w.parse(buf[:n])
		}
		for _, ev := range w.batch {
			select {
			case w.out <- ev:
			case <-ctx.Done():
				return
			}
		}
		w.batch = w.batch[:0]
		if _, ok := w.dirs[w.top]; !ok {
			return
		}
		deadline := time.Time{}
		if w.pending != nil {
			deadline = time.Now().Add(moveWindow)
		}
		w.file.SetReadDeadline(deadline)
	}
}

// parse handles the raw inotify events in buf.
func (w *watcher) parse(buf []byte) {
	for len(buf) >= unix.SizeofInotifyEvent {
		wd := int(int32(binary.NativeEndian.Uint32(buf[0:])))
		mask := binary.NativeEndian.Uint32(buf[4:])
		cookie := binary.NativeEndian.Uint32(buf[8:])
		size := unix.SizeofInotifyEvent + int(binary.NativeEndian.Uint32(buf[12:]))
		name := strings.TrimRight(string(buf[unix.SizeofInotifyEvent:size]), "\x00")
		buf = buf[size:]
		w.handle(wd, mask, cookie, name)
	}
}

// handle turns one inotify event into events to send and keeps the watches up to date.
func (w *watcher) handle(wd int, mask, cookie uint32, name string) {
	if mask&unix.IN_Q_OVERFLOW != 0 {
		w.emit(Event{Type: EventOverflow})
		return
	}
	dir, ok := w.dirs[wd]
	if !ok {
		return
	}
	if mask&unix.IN_IGNORED != 0 { // the directory is gone
		delete(w.dirs, wd)
		return
	}
	ev := Event{Path: path.Join(dir, name), IsDir: mask&unix.IN_ISDIR != 0}
	if w.pending != nil && (mask&unix.IN_MOVED_TO == 0 || cookie != w.pending.cookie) {
		w.flushMove()
	}
	switch {
	case mask&unix.IN_DELETE_SELF != 0:
		if wd == w.top {
			w.emit(Event{Type: EventDelete, Path: dir, IsDir: true})
		}
	case mask&unix.IN_CREATE != 0:
		ev.Type = EventCreate
		w.emit(ev)
		w.watchNew(ev)
	case mask&unix.IN_MOVED_FROM != 0:
		ev.Type = EventMove
		w.pending = &pendingMove{ev: ev, cookie: cookie}
	case mask&unix.IN_MOVED_TO != 0:
		w.movedTo(ev)
	case mask&unix.IN_DELETE != 0:
		ev.Type = EventDelete
		w.emit(ev)
	case mask&unix.IN_MODIFY != 0:
		ev.Type = EventModify
		w.emit(ev)
	case mask&unix.IN_ATTRIB != 0:
		ev.Type = EventAttrib
		w.emit(ev)
	}
}

// movedTo completes a rename: with its first half pending, a move inside the tree;
// otherwise something came in from outside.
func (w *watcher) movedTo(ev Event) {
	if w.pending == nil {
		ev.Type = EventCreate
		w.emit(ev)
		w.watchNew(ev)
		return
	}
	ev.Type, ev.OldPath = EventMove, w.pending.ev.Path
	w.pending = nil
	w.emit(ev)
	if ev.IsDir {
		w.renameDirs(ev.OldPath, ev.Path)
	}
}

// flushMove reports a pending rename whose second half did not come: the entry left the
// tree, so it is a delete, and watches below it are dropped.
func (w *watcher) flushMove() {
	if w.pending == nil {
		return
	}
	ev := w.pending.ev
	w.pending = nil
	ev.Type = EventDelete
	w.emit(ev)
	if ev.IsDir {
		for wd, dir := range w.dirs {
			if isUnder(dir, ev.Path) {
				w.inotify(func(ifd int) error {
					_, err := unix.InotifyRmWatch(ifd, uint32(wd))
					return err
				})
				delete(w.dirs, wd)
			}
		}
	}
}

// watchNew watches a directory that appeared in the tree, when recursive, and reports
// what it already holds.
func (w *watcher) watchNew(ev Event) {
	if !w.recursive || !ev.IsDir {
		return
	}
	fd, err := w.root.open(ev.Path, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW)
	if err == nil {
		_, err = w.watchTree(fd, ev.Path, &w.batch)
		unix.Close(fd)
	}
	if err != nil && err != unix.ENOENT {
		w.emit(Event{Type: EventOverflow, Path: ev.Path, IsDir: true})
	}
}

// renameDirs updates the paths of watched directories after a directory moved.
func (w *watcher) renameDirs(from, to string) {
	for wd, dir := range w.dirs {
		if isUnder(dir, from) {
			w.dirs[wd] = to + strings.TrimPrefix(dir, from)
		}
	}
}

// inotify calls f with the inotify descriptor, which a concurrent Close (when ctx ends)
// cannot release, and its number be reused, during the call.
func (w *watcher) inotify(f func(ifd int) error) error {
	rc, err := w.file.SyscallConn()
	if err != nil {
		return err
	}
	var ferr error
	if err := rc.Control(func(fd uintptr) { ferr = f(int(fd)) }); err != nil {
		return err
	}
	return ferr
}

// emit queues ev, merging it into the previous event when both modify the same file.
func (w *watcher) emit(ev Event) {
	if n := len(w.batch); ev.Type == EventModify && n > 0 && w.batch[n-1] == ev {
		return
	}
	w.batch = append(w.batch, ev)
}

// isUnder reports whether p is dir or below it.
func isUnder(p, dir string) bool {
	return p == dir || strings.HasPrefix(p, dir+"/")
}
