// Package pidwait tells, through a process's pidfd, whether it has exited, and waits for it,
// through the signals that interrupt poll(2): Go's preemption sends its threads SIGURG, and a
// poll is never restarted after a handler, not even one that does not wait (EINTR).
package pidwait

import (
	"errors"
	"time"

	"golang.org/x/sys/unix"
)

// Exited reports whether the process of pidfd has exited, or pidfd cannot be polled.
func Exited(pidfd int) bool {
	for {
		n, err := unix.Poll([]unix.PollFd{{Fd: int32(pidfd), Events: unix.POLLIN}}, 0)
		if !errors.Is(err, unix.EINTR) {
			return err != nil || n > 0
		}
	}
}

// Wait waits until the process of pidfd has exited, for at most timeout (a negative one: for
// as long as it takes), and reports whether it did; err is why pidfd could not be polled.
func Wait(pidfd int, timeout time.Duration) (exited bool, err error) {
	deadline := time.Now().Add(timeout)
	for {
		ms := -1
		if timeout >= 0 {
			left := time.Until(deadline)
			if left <= 0 {
				return false, nil
			}
			ms = int(left.Milliseconds()) + 1
		}
		n, err := unix.Poll([]unix.PollFd{{Fd: int32(pidfd), Events: unix.POLLIN}}, ms)
		switch {
		case errors.Is(err, unix.EINTR):
		case err != nil:
			return false, err
		case n > 0:
			return true, nil
		}
	}
}
