// Package lxcfs runs LXCFS, the FUSE file system that shows each container its own limits in
// /proc/meminfo, /proc/cpuinfo, /proc/stat and the other files in Files, for the daemon.
// Containers bind those files from its mount, so it must outlive the daemon: it runs
// detached (its own session, not the daemon's child once the daemon is gone), with its mount
// point, pid file and log in one directory of the daemon's run dir, where the next daemon
// finds it again. A mount whose LXCFS died gives ENOTCONN to every read: Start notices one,
// detaches it and starts LXCFS again, and Watch does the same when LXCFS dies while the
// daemon runs; the containers then need their binds made again from the new mount.
package lxcfs

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/nsbox/nsbox/internal/pidwait"
)

// ErrNotInstalled is what Start returns on a host without the lxcfs program.
var ErrNotInstalled = errors.New("lxcfs is not installed")

// Files are the files a container shows from an LXCFS mount, in place of its /proc's: memory
// and swap as the cgroup limits them, as many CPUs as the CPU quota (and cpuset) gives
// (--enable-cfs), the container's own uptime and CPU and disk counters. /proc/slabinfo is left
// out (nsbox masks it) and so is /proc/loadavg (its view needs a thread that walks every
// cgroup). So is /sys/devices/system/cpu/online: LXCFS 5.0.3's is one FUSE inode for every
// container, and a read could come back cut at the size another container's view had ("0-"
// for "0-1"); the daemon writes each container's own (nsbox/libcontainer, cpuset.go).
var Files = []string{
	"/proc/cpuinfo", "/proc/diskstats", "/proc/meminfo", "/proc/stat", "/proc/swaps", "/proc/uptime",
}

// startTimeout bounds how long a new LXCFS may take to answer on its mount.
const startTimeout = 10 * time.Second

// Server is one LXCFS process and its mount.
type Server struct {
	dir string
	log *slog.Logger
	pid int
	// child is set when this process started LXCFS: it must reap it.
	child *exec.Cmd
	// Fresh is true when Start started LXCFS rather than finding one running: containers
	// bound to an earlier one (now dead) need their binds made again.
	Fresh bool
}

// New is the LXCFS whose mount point, pid files and log are in dir; Start finds or starts it.
func New(dir string, log *slog.Logger) *Server {
	return &Server{dir: dir, log: log}
}

// Start finds the LXCFS of its dir running, or starts one; ErrNotInstalled without the program.
func (s *Server) Start() error {
	s.child, s.Fresh = nil, false
	if pid, ok := s.running(); ok {
		s.pid = pid
		return nil
	}
	bin, err := exec.LookPath("lxcfs")
	if err != nil {
		return ErrNotInstalled
	}
	if err := s.Stop(); err != nil { // a dead mount, a hung process
		return err
	}
	if err := os.MkdirAll(s.Mount(), 0o755); err != nil {
		return fmt.Errorf("make lxcfs mount point: %w", err)
	}
	// The directory is traversable: a container's root (in a user namespace, an unprivileged
	// host id) reaches the files through it when runc binds them.
	if err := os.Chmod(s.dir, 0o711); err != nil {
		return fmt.Errorf("lxcfs dir: %w", err)
	}
	logFile, err := os.OpenFile(filepath.Join(s.dir, "lxcfs.log"), os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return fmt.Errorf("open lxcfs log: %w", err)
	}
	defer logFile.Close()
	// --enable-cfs: CPU views from the CPU quota, not only the cpuset; --enable-pidfd: LXCFS
	// follows containers' init processes by pidfd (no pid reuse). Foreground: the pid is ours
	// to record; its own session keeps it out of the daemon's signals.
	cmd := exec.Command(bin, "--foreground", "--enable-cfs", "--enable-pidfd", "--pidfile", s.pidFile(), s.Mount())
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start lxcfs: %w", err)
	}
	s.pid, s.child, s.Fresh = cmd.Process.Pid, cmd, true
	// LXCFS writes its own pid file too, but only once it has mounted: this one is for Stop.
	if err := os.WriteFile(s.ownPidFile(), []byte(strconv.Itoa(s.pid)), 0o600); err != nil {
		s.kill()
		return fmt.Errorf("write lxcfs pid: %w", err)
	}
	deadline := time.Now().Add(startTimeout)
	for !s.answers() {
		if !processAlive(s.pid) || time.Now().After(deadline) {
			s.kill()
			return fmt.Errorf("lxcfs did not mount %s; its log: %q", s.Mount(), tail(filepath.Join(s.dir, "lxcfs.log")))
		}
		time.Sleep(10 * time.Millisecond)
	}
	return nil
}

// Mount is where the LXCFS file system is mounted.
func (s *Server) Mount() string { return filepath.Join(s.dir, "mnt") }

// PID is the LXCFS process's.
func (s *Server) PID() int { return s.pid }

func (s *Server) pidFile() string    { return filepath.Join(s.dir, "lxcfs.pid") }
func (s *Server) ownPidFile() string { return filepath.Join(s.dir, "pid") }

// running reports the pid of a live LXCFS of dir whose mount answers.
func (s *Server) running() (int, bool) {
	data, err := os.ReadFile(s.ownPidFile())
	if err != nil {
		return 0, false
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(data)))
	if err != nil || !isLXCFS(pid, s.Mount()) || !s.answers() {
		return 0, false
	}
	return pid, true
}

// answers reports whether the mount is a live LXCFS (a dead one fails with ENOTCONN).
func (s *Server) answers() bool {
	var st unix.Statfs_t
	if err := unix.Statfs(s.Mount(), &st); err != nil || st.Type != unix.FUSE_SUPER_MAGIC {
		return false
	}
	_, err := os.Stat(filepath.Join(s.Mount(), "proc", "meminfo"))
	return err == nil
}

// Stop ends the LXCFS of dir, if any, and removes its mount: on a daemon's exit with no
// containers left, on `daemon --cleanup`, and before a new one is started.
func (s *Server) Stop() error {
	if data, err := os.ReadFile(s.ownPidFile()); err == nil {
		if pid, err := strconv.Atoi(strings.TrimSpace(string(data))); err == nil && isLXCFS(pid, s.Mount()) {
			s.pid = pid
			s.kill()
		}
	}
	if err := unix.Unmount(s.Mount(), unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("unmount %s: %w", s.Mount(), err)
	}
	for _, f := range []string{s.ownPidFile(), s.pidFile()} {
		if err := os.Remove(f); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("remove lxcfs pid file: %w", err)
		}
	}
	return nil
}

// kill kills the LXCFS process and waits until it is gone.
func (s *Server) kill() {
	pidfd, err := unix.PidfdOpen(s.pid, 0)
	if err != nil {
		return
	}
	defer unix.Close(pidfd)
	_ = unix.PidfdSendSignal(pidfd, unix.SIGKILL, nil, 0)
	if s.child != nil {
		_ = s.child.Wait()
		return
	}
	_, _ = pidwait.Wait(pidfd, 10*time.Second)
}

// Watch calls died once the LXCFS process has exited (after reaping it when it is this
// process's child), unless ctx ended first.
func (s *Server) Watch(ctx context.Context, died func()) {
	pidfd, err := unix.PidfdOpen(s.pid, unix.PIDFD_NONBLOCK)
	if err != nil {
		s.log.Warn("cannot watch lxcfs", "pid", s.pid, "err", err)
		return
	}
	f := os.NewFile(uintptr(pidfd), "lxcfs-pidfd")
	conn, err := f.SyscallConn()
	if err != nil {
		f.Close()
		return
	}
	go func() {
		<-ctx.Done()
		f.Close() // ends the read below
	}()
	go func() {
		defer f.Close()
		exited := false
		_ = conn.Read(func(fd uintptr) bool {
			exited = pidwait.Exited(int(fd))
			return exited
		})
		if !exited || ctx.Err() != nil {
			return
		}
		if s.child != nil {
			_ = s.child.Wait()
		}
		died()
	}()
}

// isLXCFS reports whether pid is an lxcfs process serving mount.
func isLXCFS(pid int, mount string) bool {
	cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil {
		return false
	}
	args := strings.Split(strings.TrimRight(string(cmdline), "\x00"), "\x00")
	return len(args) > 1 && filepath.Base(args[0]) == "lxcfs" && args[len(args)-1] == mount
}

func processAlive(pid int) bool {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	// The state follows the command name in parentheses; a zombie has exited.
	_, rest, _ := strings.Cut(string(data), ") ")
	return !strings.HasPrefix(rest, "Z")
}

// tail is the end of a log, for error messages.
func tail(path string) string {
	data, _ := os.ReadFile(path)
	if len(data) > 2048 {
		data = data[len(data)-2048:]
	}
	return strings.TrimSpace(string(data))
}
