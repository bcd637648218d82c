package rootfs

// The helper process that makes a user namespace (makeUserNS) is this binary executed as
// "nsbox-userns": the constructor below, which runs before the Go runtime starts (and so
// while the process has one thread, as unshare(CLONE_NEWUSER) requires), makes the namespace,
// stops itself so that the daemon can write its maps and open it, and never returns to Go.
// Every binary that links this package has it, so /proc/self/exe is always a helper.
//
// The daemon used to clone the helper straight into a new namespace (CLONE_NEWUSER), which
// Go's os.StartProcess can only do with a full fork: the daemon's memory was copied on write,
// a fork that took 8 ms with 80 MB of heap here, and every page the daemon wrote afterwards
// took a write fault (20,480 pages: 290 ms) — once for every new sandbox with a block of ids
// of its own (docs/benchmarks.md, "Session 18"). Executed by the thread that starts it (vfork),
// the helper shares nothing copy-on-write.

/*
#define _GNU_SOURCE
#include <errno.h>
#include <linux/capability.h>
#include <sched.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#define USERNS_HELPER_NAME "nsbox-userns"
#define USERNS_PARENT_ENV "NSBOX_USERNS_PARENT="

__attribute__((constructor(201))) static void nsbox_userns_helper(int argc, char **argv, char **envp) {
	if (argc != 1 || strcmp(argv[0], USERNS_HELPER_NAME) != 0)
		return;
	// The exec cleared the parent-death signal the daemon set (its effective uid is not its real
	// one): set again, it kills the helper if the daemon dies (a crash, kill -9) before it kills
	// the helper, which would otherwise stay stopped for good. A daemon gone already: no one
	// waits for it.
	prctl(PR_SET_PDEATHSIG, SIGKILL);
	long parent = 0;
	for (char **e = envp; *e != NULL; e++)
		if (strncmp(*e, USERNS_PARENT_ENV, strlen(USERNS_PARENT_ENV)) == 0)
			parent = strtol(*e + strlen(USERNS_PARENT_ENV), NULL, 10);
	if (getppid() != parent)
		_exit(ESRCH);
	// The thread that started the helper kept the daemon's capabilities as uid <Host> (its real
	// uid is root's, so the exec left them permitted, not effective): a host that lets only the
	// privileged make user namespaces still lets it.
	struct __user_cap_header_struct header = {_LINUX_CAPABILITY_VERSION_3, 0};
	struct __user_cap_data_struct data[_LINUX_CAPABILITY_U32S_3];
	if (syscall(SYS_capget, &header, data) == 0) {
		for (int i = 0; i < _LINUX_CAPABILITY_U32S_3; i++)
			data[i].effective = data[i].permitted;
		syscall(SYS_capset, &header, data);
	}
	// The namespace's owner is the effective uid: <Host>.
	if (unshare(CLONE_NEWUSER) != 0)
		_exit(errno);
	raise(SIGSTOP); // until the daemon has what it needs and kills it
	_exit(0);
}
*/
import "C"

// usernsHelperName is the helper's argv[0], which the constructor above looks for, and
// usernsParentEnv what its environment names the daemon's pid with.
const (
	usernsHelperName = C.USERNS_HELPER_NAME
	usernsParentEnv  = C.USERNS_PARENT_ENV
)
