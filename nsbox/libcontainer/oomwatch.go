package libcontainer

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"
)

// oomWatch holds every container's OOM notification in one epoll set, waited on by one
// goroutine through Go's poller: no thread, no goroutine per container, and no pass over every
// container's cgroup to look for kills (at 1,000 sandboxes a look at each every 2 s cost
// 10-17 ms of CPU a pass, docs/benchmarks.md). On cgroup v1 each container has an eventfd
// registered with its memory cgroup's memory.oom_control (cgroup.event_control): the kernel
// signals it at each OOM in the cgroup, and once more when the cgroup is removed. On v2 its
// memory.events is in the set: the kernel marks it changed (EPOLLPRI) when any of its counts
// moves.
type oomWatch struct {
	once sync.Once
	err  error
	set  *os.File // the epoll set, nonblocking, in Go's poller
	epfd int      // its descriptor (set.Fd would make it blocking)
	// mu guards regs, and every registration's descriptor against its close while it is read.
	mu   sync.Mutex
	regs map[int32]*oomRegistration // by the descriptor in the set
}

// oomRegistration is one container's notification in the set.
type oomRegistration struct {
	fd     int  // the eventfd (v1) or memory.events (v2); -1 once removed
	v2     bool // fd is memory.events
	notify func()
	// killsAtStart is the cgroup's OOM kill count when it was registered.
	killsAtStart uint64
}

// ooms is the daemon's one OOM watch, started by the first registration.
var ooms oomWatch

// start makes the epoll set and starts its goroutine, once.
func (w *oomWatch) start() error {
	w.once.Do(func() {
		fd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
		if err != nil {
			w.err = fmt.Errorf("create the OOM notifications' epoll set: %w", err)
			return
		}
		if err := unix.SetNonblock(fd, true); err != nil {
			unix.Close(fd)
			w.err = fmt.Errorf("make the OOM notifications' epoll set nonblocking: %w", err)
			return
		}
		w.epfd, w.set = fd, os.NewFile(uintptr(fd), "oom-epoll")
		conn, err := w.set.SyscallConn()
		if err != nil {
			w.set.Close()
			w.err = fmt.Errorf("poll the OOM notifications' epoll set: %w", err)
			return
		}
		w.regs = map[int32]*oomRegistration{}
		go w.run(conn)
	})
	return w.err
}

// run hands each notification to its registration for as long as the daemon runs: Go's
// poller wakes it when the set has one ready.
func (w *oomWatch) run(conn syscall.RawConn) {
	events := make([]unix.EpollEvent, 64)
	_ = conn.Read(func(fd uintptr) bool {
		for {
			n, err := unix.EpollWait(int(fd), events, 0)
			if err == unix.EINTR {
				continue
			}
			if n <= 0 {
				return false // none ready: wait for the poller
			}
			for _, ev := range events[:n] {
				w.fire(ev.Fd)
			}
		}
	})
}

// fire takes the notification on fd (so that the set does not report it again) and calls its
// registration's notify in a goroutine of its own (it takes the sandbox's locks; OOM kills are
// rare).
func (w *oomWatch) fire(fd int32) {
	w.mu.Lock()
	defer w.mu.Unlock()
	reg := w.regs[fd]
	if reg == nil {
		return // removed since the set reported it
	}
	var buf [512]byte // an eventfd's count is 8 bytes; memory.events a few short lines
	if reg.v2 {
		_, _ = unix.Pread(reg.fd, buf[:], 0) // a read from its start marks the change seen
	} else {
		_, _ = unix.Read(reg.fd, buf[:8])
	}
	go reg.notify()
}

// add registers the notification of the memory cgroup at dir (v2: the container's unified
// cgroup) to call notify, and reads the cgroup's OOM kill count.
func (w *oomWatch) add(dir string, v2 bool, notify func()) (*oomRegistration, error) {
	if err := w.start(); err != nil {
		return nil, err
	}
	reg := &oomRegistration{fd: -1, v2: v2, notify: notify}
	var events uint32
	var err error
	if v2 {
		reg.fd, err = unix.Open(filepath.Join(dir, "memory.events"), unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			return nil, fmt.Errorf("open %s/memory.events: %w", dir, err)
		}
		// Read now, what it says is not a change.
		if reg.killsAtStart, err = oomKillCount(reg.fd); err != nil {
			unix.Close(reg.fd)
			return nil, err
		}
		events = unix.EPOLLPRI
	} else {
		if reg.fd, reg.killsAtStart, err = eventfdForOOM(dir); err != nil {
			return nil, err
		}
		events = unix.EPOLLIN
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if err := unix.EpollCtl(w.epfd, unix.EPOLL_CTL_ADD, reg.fd, &unix.EpollEvent{Events: events, Fd: int32(reg.fd)}); err != nil {
		unix.Close(reg.fd)
		return nil, fmt.Errorf("add the OOM notification of %s to the epoll set: %w", dir, err)
	}
	w.regs[int32(reg.fd)] = reg
	return reg, nil
}

// eventfdForOOM makes an eventfd the kernel signals at each OOM in the cgroup v1 memory
// cgroup at dir, and reads the cgroup's OOM kill count.
func eventfdForOOM(dir string) (efd int, kills uint64, err error) {
	control, err := unix.Open(filepath.Join(dir, "memory.oom_control"), unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, 0, fmt.Errorf("open %s/memory.oom_control: %w", dir, err)
	}
	defer unix.Close(control) // the registration holds what it needs of it
	if kills, err = oomKillCount(control); err != nil {
		return -1, 0, err
	}
	if efd, err = unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK); err != nil {
		return -1, 0, fmt.Errorf("eventfd for OOM notifications: %w", err)
	}
	line := strconv.Itoa(efd) + " " + strconv.Itoa(control)
	if err := os.WriteFile(filepath.Join(dir, "cgroup.event_control"), []byte(line), 0); err != nil {
		unix.Close(efd)
		return -1, 0, fmt.Errorf("register for OOM notifications in %s: %w", dir, err)
	}
	return efd, kills, nil
}

// oomKillCount reads the OOM kill count of memory.oom_control (v1) or memory.events (v2) at fd.
func oomKillCount(fd int) (uint64, error) {
	var buf [512]byte
	return keyed(fd, buf[:], "oom_kill")
}

// remove takes a registration out of the set and closes its descriptor (on v1 that also
// ends the kernel's registration); no notification is taken for it after (a notify already
// started may still run).
func (w *oomWatch) remove(reg *oomRegistration) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if reg.fd < 0 {
		return
	}
	delete(w.regs, int32(reg.fd))
	_ = unix.EpollCtl(w.epfd, unix.EPOLL_CTL_DEL, reg.fd, nil)
	unix.Close(reg.fd)
	reg.fd = -1
}
