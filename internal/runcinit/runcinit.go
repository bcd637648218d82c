// Package runcinit runs libcontainer's init (a binary started as "BINARY init", the process
// that sets a new container up from inside and then executes its first process) while the
// binary's packages initialise: those it does not import have not yet, which is as early as
// Go allows. nsbox and nsbox-init import it.
package runcinit

import (
	"os"
	"strconv"

	"github.com/opencontainers/runc/libcontainer"
	"golang.org/x/sys/unix"
)

// TimerSlackEnv names the variable in which nsbox's hand-over to the init (cmd/nsbox/
// runcinit.go) passes on the timer slack the init had before it gave it a larger one.
const TimerSlackEnv = "_NSBOX_TIMER_SLACK_NS"

func init() {
	if len(os.Args) > 1 && os.Args[1] == "init" {
		restoreTimerSlack()
		libcontainer.Init() // never returns
	}
}

// restoreTimerSlack gives the calling thread the timer slack the hand-over passed on. The
// larger one stays with the threads the Go runtime has made by now (sysmon's above all, the
// point of it); this one, the main thread, which libcontainer locks and which executes the
// container's first process, passes it on to the agent and everything the agent starts.
func restoreTimerSlack() {
	slack, err := strconv.ParseUint(os.Getenv(TimerSlackEnv), 10, 64)
	if err != nil || slack == 0 {
		return // not handed over by nsbox: the slack was not changed
	}
	_ = unix.Prctl(unix.PR_SET_TIMERSLACK, uintptr(slack), 0, 0, 0)
}
