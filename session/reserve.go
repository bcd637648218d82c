package session

import (
	"errors"
	"os"
	"sync"

	"golang.org/x/sys/unix"
)

// reserveSize is the space the agent's tmpfs keeps for session control files (scripts, the
// files a command's stdin comes from): 32 pages, a command of up to ~120 KB with its run file,
// or a few small ones at once — what it takes to run the command that frees the space. Its
// pages are the sandbox's memory for as long as it lives (shared memory, in no process's PSS):
// 1 MiB until session 20, a third of what a sandbox took from the host's MemAvailable.
const reserveSize = 128 << 10

// reserve is space held in the session directory's file system (the agent's tmpfs, writable by
// the sandbox's root) for when something in the sandbox fills it: a command that cannot write
// its files gets the reserve's room and runs — typically the one that frees the space — and
// the reserve is taken back once there is room again. Only then does a full tmpfs fail
// commands (ErrNoSpace from the caller's view: ENOSPC).
type reserve struct {
	path string
	mu   sync.Mutex
	held bool
}

// newReserve is a reserve at path, held from its first refill (Manager.HoldReserve): the
// agent takes it once it has answered its first health check, since allocating its pages is
// ~0.7 ms of the sandbox's one CPU that a create would otherwise wait for.
func newReserve(path string) *reserve {
	return &reserve{path: path}
}

// refill takes the reserve back if it is not held and there is room for it now.
func (r *reserve) refill() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.held {
		return
	}
	f, err := os.OpenFile(r.path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return
	}
	err = unix.Fallocate(int(f.Fd()), 0, 0, reserveSize)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		_ = os.Remove(r.path)
		return
	}
	r.held = true
}

// release frees the reserve's room. It reports whether there was any to free.
func (r *reserve) release() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.held {
		return false
	}
	r.held = false
	return os.Remove(r.path) == nil
}

// noSpace reports whether err says the file system is full.
func noSpace(err error) bool {
	return errors.Is(err, unix.ENOSPC) || errors.Is(err, unix.EDQUOT)
}
