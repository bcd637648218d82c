package rootfs

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestUserNSCopiesNothingOnWrite makes a user namespace and checks its owner, that the helper
// is gone, and that making it did not fork the process: after a fork every page the process
// writes takes a fault (copy on write, or the write-protect fault of a page no longer shared),
// which with a big daemon cost more than the sandbox's start.
func TestUserNSCopiesNothingOnWrite(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	written := make([]byte, 16<<20) // 4,096 pages
	writeAll := func() {
		for i := 0; i < len(written); i += os.Getpagesize() {
			written[i]++
		}
	}
	writeAll()
	m := IDMap{Host: 3_900_000_000 + uint32(os.Getpid()%1000)*IDsPerSandbox, Size: IDsPerSandbox}
	before := minorFaults(t)
	ns, err := UserNS(m)
	if err != nil {
		t.Fatal(err)
	}
	writeAll()
	if faults := minorFaults(t) - before; faults > 1000 {
		t.Errorf("writing 4,096 pages after UserNS took %d page faults: the process was forked", faults)
	}
	owner, err := unix.IoctlGetUint32(int(ns.Fd()), unix.NS_GET_OWNER_UID)
	if err != nil || owner != m.Host {
		t.Errorf("the namespace's owner: %d (%v), want %d", owner, err, m.Host)
	}
	if again, err := UserNS(m); err != nil || again != ns {
		t.Errorf("UserNS again: %v %v, want the same namespace", again, err)
	}
	if children := childrenOf(t, os.Getpid()); len(children) > 0 {
		t.Errorf("processes left behind: %v", children)
	}
}

// TestUserNSFailsCleanly asks for a mapping the kernel refuses (past the last id): a clear
// error, and no helper left behind.
func TestUserNSFailsCleanly(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	_, err := UserNS(IDMap{Host: 4_294_967_295 - 10, Size: IDsPerSandbox})
	if err == nil || !strings.Contains(err.Error(), "uid_map") {
		t.Errorf("a mapping past the last id: %v, want an error writing uid_map", err)
	}
	if children := childrenOf(t, os.Getpid()); len(children) > 0 {
		t.Errorf("processes left behind: %v", children)
	}
}

func minorFaults(t *testing.T) int64 {
	t.Helper()
	var ru unix.Rusage
	if err := unix.Getrusage(unix.RUSAGE_SELF, &ru); err != nil {
		t.Fatal(err)
	}
	return ru.Minflt
}

// childrenOf lists the processes whose parent is pid.
func childrenOf(t *testing.T, pid int) []string {
	t.Helper()
	entries, err := os.ReadDir("/proc")
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range entries {
		if _, err := strconv.Atoi(e.Name()); err != nil {
			continue
		}
		stat, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		// pid (comm) state ppid …
		rest := strings.Fields(string(stat[strings.LastIndexByte(string(stat), ')')+1:]))
		if len(rest) > 1 && rest[1] == strconv.Itoa(pid) {
			out = append(out, fmt.Sprintf("%s %s", e.Name(), rest[0]))
		}
	}
	return out
}

// TestWaitStopped: the wait for the helper tells its stop from its exit, whose status is the
// errno of its unshare, and from a signal.
func TestWaitStopped(t *testing.T) {
	for _, tc := range []struct {
		script, want string
		reaped       bool
	}{
		{"kill -STOP $$", "", false},
		{"exit 1", "unshare(CLONE_NEWUSER): operation not permitted", true},
		{"kill -KILL $$", "ended before making one (killed)", true},
	} {
		proc, err := os.StartProcess("/bin/sh", []string{"sh", "-c", tc.script}, &os.ProcAttr{})
		if err != nil {
			t.Fatal(err)
		}
		reaped, err := waitStopped(proc.Pid)
		if reaped != tc.reaped || (tc.want == "") != (err == nil) || err != nil && !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: reaped %v, %v; want reaped %v and %q", tc.script, reaped, err, tc.reaped, tc.want)
		}
		if reaped {
			_ = proc.Release()
		} else {
			_ = proc.Kill()
			_, _ = proc.Wait()
		}
	}
}

// TestUserNSHelperDiesWithItsDaemon: a daemon that dies (kill -9) while its user namespace
// helper is stopped, waiting for it, leaves no helper behind. The exec of the helper clears the
// parent-death signal the daemon set (the thread that execs it has another effective uid than
// its real one); the helper sets it again. The daemon is this test binary run again as a
// spawner, which starts a helper as UserNS does, says its pid, and waits to be killed.
func TestUserNSHelperDiesWithItsDaemon(t *testing.T) {
	if os.Getenv("NSBOX_TEST_USERNS_SPAWNER") != "" {
		_, err := onThreadAs(1_999_000_000, func() (*os.File, error) {
			helper, err := startUserNSHelper()
			if err == nil {
				_, err = waitStopped(helper.Pid)
			}
			if err == nil {
				fmt.Println(helper.Pid)
				select {}
			}
			return nil, err
		})
		fmt.Println("error:", err)
		os.Exit(1)
	}
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	spawner := exec.Command(os.Args[0], "-test.run=^TestUserNSHelperDiesWithItsDaemon$")
	spawner.Env = append(os.Environ(), "NSBOX_TEST_USERNS_SPAWNER=1")
	out, err := spawner.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := spawner.Start(); err != nil {
		t.Fatal(err)
	}
	line, err := bufio.NewReader(out).ReadString('\n')
	pid, perr := strconv.Atoi(strings.TrimSpace(line))
	if err != nil || perr != nil {
		_ = spawner.Process.Kill()
		_ = spawner.Wait()
		t.Fatalf("the spawner said %q (%v)", line, err)
	}
	alive := func() bool {
		data, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		return err == nil && strings.HasPrefix(string(data), usernsHelperName)
	}
	t.Cleanup(func() {
		if alive() {
			_ = unix.Kill(pid, unix.SIGKILL)
		}
	})
	if !alive() {
		t.Fatalf("the helper %d is not there while its daemon lives", pid)
	}
	_ = spawner.Process.Kill()
	_ = spawner.Wait()
	for deadline := time.Now().Add(5 * time.Second); alive(); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("the helper %d outlived its daemon by 5s", pid)
		}
	}
}
