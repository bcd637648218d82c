package main

// libcontainer starts a container's init as this binary ("nsbox init"), whose Go runtime and
// ~190 packages take ~20 ms of CPU to start before the init does anything. The backend hands
// the init the small nsbox-init binary as an O_PATH descriptor (nsbox/libcontainer:
// InitBinFD); this constructor, which runs before libcontainer's own (nsenter's, of default
// priority) and so before the process has done anything, executes it in place: same pid,
// arguments, environment and descriptors, the hand-over descriptor closed by the exec. Only
// for a new container's init (type standard), whose container has no other process that
// could reach the binary through /proc; anything else, or a failed exec, goes on as nsbox.
//
// It also gives the init a timer slack of INIT_TIMER_SLACK_NS. libcontainer's init runs at
// GOMAXPROCS(1), and while its one P is busy the Go runtime's sysmon sleeps 20 µs at a time:
// through the init's ~30 mounts it woke ~120 times on the sandbox's one CPU, each wake two
// context switches (and some a P retaken from a mount longer than a tick, handed to another
// thread). The slack lets each of those sleeps run up to a millisecond longer. sysmon and the init's first threads are made with it (the runtime starts them
// before any package initialises); internal/runcinit then gives the init's main thread, which
// executes the container's first process, the slack this process had back (passed on in
// TIMER_SLACK_ENV: nsexec's clones in between make the larger one each new process's
// default), so that neither the agent nor anything in the sandbox inherits it
// (docs/benchmarks.md, "Session 17").

/*
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdlib.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

// nsbox/libcontainer's InitBinFD and InitBinPrefix (checkInitHandOver).
#define INIT_BIN_FD 4
#define INIT_BIN_PREFIX "nsbox-init-"
#define INIT_TIMER_SLACK_NS 1000000UL
// internal/runcinit's TimerSlackEnv.
#define TIMER_SLACK_ENV "_NSBOX_TIMER_SLACK_NS"

__attribute__((constructor(200))) static void nsbox_runc_init(int argc, char **argv, char **envp) {
	const char *type = getenv("_LIBCONTAINER_INITTYPE");
	if (argc < 2 || strcmp(argv[1], "init") != 0 || type == NULL || strcmp(type, "standard") != 0)
		return;
	char link[32], target[PATH_MAX];
	snprintf(link, sizeof link, "/proc/self/fd/%d", INIT_BIN_FD);
	ssize_t n = readlink(link, target, sizeof target - 1);
	if (n < 0)
		return;
	target[n] = '\0';
	const char *base = strrchr(target, '/');
	if (base == NULL || strncmp(base + 1, INIT_BIN_PREFIX, strlen(INIT_BIN_PREFIX)) != 0)
		return;
	// Closed by the exec; if the exec fails, by the exec of the container's first process.
	if (fcntl(INIT_BIN_FD, F_SETFD, FD_CLOEXEC) < 0)
		return;
	char slack[32];
	snprintf(slack, sizeof slack, "%ld", (long)prctl(PR_GET_TIMERSLACK, 0, 0, 0, 0));
	if (setenv(TIMER_SLACK_ENV, slack, 1) == 0) {
		prctl(PR_SET_TIMERSLACK, INIT_TIMER_SLACK_NS, 0, 0, 0);
		envp = environ;
	}
	syscall(SYS_execveat, INIT_BIN_FD, "", argv, envp, AT_EMPTY_PATH);
}
*/
import "C"

import (
	"fmt"

	"github.com/nsbox/nsbox/internal/runcinit"
	"github.com/nsbox/nsbox/nsbox/libcontainer"
)

// checkInitHandOver refuses a build whose constructor above looks for the init binary at
// another descriptor, or under another name, than the backend hands it over with: every start
// would then run the init as the whole nsbox binary, ~20 ms slower, and nothing would say so.
func checkInitHandOver() error {
	if C.INIT_BIN_FD != libcontainer.InitBinFD || C.INIT_BIN_PREFIX != libcontainer.InitBinPrefix {
		return fmt.Errorf("this nsbox was built with its init hand-over out of step: fd %d and prefix %q in cmd/nsbox/runcinit.go, fd %d and prefix %q in nsbox/libcontainer",
			C.INIT_BIN_FD, C.INIT_BIN_PREFIX, libcontainer.InitBinFD, libcontainer.InitBinPrefix)
	}
	if C.TIMER_SLACK_ENV != runcinit.TimerSlackEnv {
		return fmt.Errorf("this nsbox was built with its init's timer slack variable out of step: %q in cmd/nsbox/runcinit.go, %q in internal/runcinit",
			C.TIMER_SLACK_ENV, runcinit.TimerSlackEnv)
	}
	return nil
}
