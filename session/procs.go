package session

import (
	"bytes"
	"fmt"
	"maps"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// descendants returns every process below pid (children, their children, …). Every exec
// takes this list before its command runs, so it reads /proc with bare system calls: os's
// files register with the runtime's poller (four fcntls and an epoll_ctl more per file), and
// a directory listing of each thread's /proc entry (what a glob of task/*/children reads)
// is fifty entries long.
func descendants(pid int) map[int]bool {
	out := map[int]bool{}
	queue := []int{pid}
	buf := make([]byte, 4096)
	for len(queue) > 0 {
		p := queue[0]
		queue = queue[1:]
		for _, task := range tasks(p, buf) {
			data, err := readSmall("/proc/"+strconv.Itoa(p)+"/task/"+task+"/children", buf)
			if err != nil {
				continue
			}
			for f := range strings.FieldsSeq(string(data)) {
				if c, err := strconv.Atoi(f); err == nil && !out[c] {
					out[c] = true
					queue = append(queue, c)
				}
			}
		}
	}
	return out
}

// tasks lists the thread ids of process pid (none when it is gone), reading /proc/pid/task
// into buf.
func tasks(pid int, buf []byte) []string {
	fd, err := unix.Open("/proc/"+strconv.Itoa(pid)+"/task", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil
	}
	defer unix.Close(fd)
	var names []string
	for {
		n, err := unix.Getdents(fd, buf)
		if err != nil || n <= 0 {
			return names
		}
		_, _, names = unix.ParseDirent(buf[:n], -1, names)
	}
}

// readSmall reads a small file (a /proc file) with bare system calls, without the runtime's
// poller, into buf, or a larger buffer if buf does not hold it.
func readSmall(path string, buf []byte) ([]byte, error) {
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	defer unix.Close(fd)
	n := 0
	for {
		if n == len(buf) {
			buf = append(buf, make([]byte, max(len(buf), 512))...)
		}
		m, err := unix.Read(fd, buf[n:])
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return nil, err
		}
		if m == 0 {
			break
		}
		n += m
	}
	return buf[:n], nil
}

// killNew kills the processes below pid that were not there before, until none is left
// (they may be forking while we look).
func killNew(pid int, before map[int]bool) {
	for range 10 {
		found := false
		for p := range descendants(pid) {
			if !before[p] {
				_ = unix.Kill(p, unix.SIGKILL)
				found = true
			}
		}
		if !found {
			return
		}
	}
}

// procSet is a set of processes, each known by pid and start time, so that a pid reused by a
// later process is never mistaken for it.
type procSet map[int]string

// newProcs returns the processes below pid that were not there before.
func newProcs(pid int, before map[int]bool) procSet {
	out := procSet{}
	for p := range descendants(pid) {
		if !before[p] {
			out[p] = startTime(p)
		}
	}
	return out
}

// kill sends SIGKILL to the processes of the set that still exist.
func (ps procSet) kill() {
	for p, started := range ps {
		if started != "" && startTime(p) == started {
			_ = unix.Kill(p, unix.SIGKILL)
		}
	}
}

// startTime is a process's start time (field 22 of /proc/pid/stat), or "" if it is gone.
func startTime(pid int) string {
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return ""
	}
	fields := strings.Fields(string(stat[bytes.LastIndexByte(stat, ')')+1:]))
	if len(fields) < 20 {
		return ""
	}
	return fields[19]
}

// killTree kills pid and everything below it.
func killTree(pid int) {
	for range 10 {
		procs := descendants(pid)
		if len(procs) == 0 {
			break
		}
		for p := range procs {
			_ = unix.Kill(p, unix.SIGKILL)
		}
	}
	_ = unix.Kill(pid, unix.SIGKILL)
}

// killMarked kills every process whose environment carries the session's marker: processes a
// session started that left its tree (setsid, double fork) still belong to it.
func killMarked(marker string) {
	want := []byte(marker)
	procs, _ := filepath.Glob("/proc/[0-9]*/environ")
	for _, p := range procs {
		env, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		for _, kv := range bytes.Split(env, []byte{0}) {
			if bytes.Equal(kv, want) {
				if pid, err := strconv.Atoi(filepath.Base(filepath.Dir(p))); err == nil && pid != 1 {
					_ = unix.Kill(pid, unix.SIGKILL)
				}
				break
			}
		}
	}
}

// credential is who a session's shell runs as.
type credential struct {
	uid, gid   int
	name, home string
}

// lookupUser resolves a user spec from the sandbox's /etc/passwd and /etc/group, in the forms
// an OCI image's User takes: "name", "uid", "uid:gid", "name:group" (either side a name or a
// number); "" is root. Without a group the user's primary group is used.
func lookupUser(spec string) (credential, error) {
	userSpec, groupSpec, withGroup := strings.Cut(spec, ":")
	if userSpec == "" {
		userSpec = "0"
	}
	var c credential
	u, err := user.LookupId(userSpec)
	if err != nil {
		u, err = user.Lookup(userSpec)
	}
	switch uid, convErr := strconv.Atoi(userSpec); {
	case err == nil:
		c.uid, _ = strconv.Atoi(u.Uid)
		c.gid, _ = strconv.Atoi(u.Gid)
		c.name, c.home = u.Username, u.HomeDir
	case convErr == nil && uid >= 0:
		// A bare uid without a passwd entry is fine: it runs with gid = uid and home /.
		c = credential{uid: uid, gid: uid, name: userSpec, home: "/"}
	default:
		return credential{}, fmt.Errorf("%w: user %q does not exist in this sandbox (its /etc/passwd has no such name); give a uid, or a user the image has", ErrInvalid, userSpec)
	}
	if !withGroup {
		return c, nil
	}
	g, err := user.LookupGroupId(groupSpec)
	if err != nil {
		g, err = user.LookupGroup(groupSpec)
	}
	switch gid, convErr := strconv.Atoi(groupSpec); {
	case err == nil:
		c.gid, _ = strconv.Atoi(g.Gid)
	case convErr == nil && gid >= 0:
		c.gid = gid
	default:
		return credential{}, fmt.Errorf("%w: group %q of user %q does not exist in this sandbox (its /etc/group has no such name); give a gid, or a group the image has", ErrInvalid, groupSpec, spec)
	}
	return c, nil
}

// LookupUser resolves a user spec ("name", "uid", "uid:gid", "name:group"; "" is root) from
// the sandbox's /etc/passwd and /etc/group as sessions do; a bare uid without a passwd entry
// runs with gid = uid and home /.
func LookupUser(spec string) (uid, gid int, name, home string, err error) {
	c, err := lookupUser(spec)
	return c.uid, c.gid, c.name, c.home, err
}

// env is a session shell's environment: the sandbox's (SandboxEnv.Effective), the user's
// identity, the session's own variables, and the session marker.
func (c credential) env(opts Options, sandbox map[string]string) []string {
	vars := maps.Clone(sandbox)
	vars["HOME"], vars["USER"], vars["LOGNAME"] = c.home, c.name, c.name
	for k, v := range opts.Env {
		vars[k] = v
	}
	vars["NSBOX_SESSION"] = opts.ID
	out := make([]string, 0, len(vars))
	for k, v := range vars {
		out = append(out, k+"="+v)
	}
	return out
}
