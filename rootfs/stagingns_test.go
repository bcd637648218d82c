package rootfs

import (
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// TestStagingNamespaceStaysEmpty: overlays are staged in one namespace whose only mount is its
// own root, whatever the host has mounted, and each staging takes its tmpfs and directory away
// again.
func TestStagingNamespaceStaysEmpty(t *testing.T) {
	dir, lower := overlayTestDirs(t)
	for _, name := range []string{"a", "b", "c"} {
		merged := filepath.Join(dir, name, "merged")
		if err := MountOverlay([]string{lower}, filepath.Join(dir, name, "upper"), filepath.Join(dir, name, "work"), merged, IDMap{}); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = Detach(merged) })
		if err := os.WriteFile(filepath.Join(merged, "f"), []byte(name), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	// A thread that enters the namespace shows its mount table and root to the test (its
	// /proc/<pid>/task/<tid> files, read from here: /proc is not mounted there).
	type inside struct {
		tid int
		err error
	}
	entered, leave := make(chan inside, 1), make(chan struct{})
	go func() {
		runtime.LockOSThread() // never unlocked: the thread enters the staging namespace
		ns, err := stagingNamespace()
		if err == nil {
			err = unix.Unshare(unix.CLONE_FS)
		}
		if err == nil {
			err = unix.Setns(int(ns.Fd()), unix.CLONE_NEWNS)
		}
		entered <- inside{unix.Gettid(), err}
		<-leave
	}()
	in := <-entered
	defer close(leave)
	if in.err != nil {
		t.Fatal(in.err)
	}
	task := filepath.Join("/proc", strconv.Itoa(os.Getpid()), "task", strconv.Itoa(in.tid))
	mountinfo, err := os.ReadFile(filepath.Join(task, "mountinfo"))
	if err != nil {
		t.Fatal(err)
	}
	mounts := strings.Split(strings.TrimSpace(string(mountinfo)), "\n")
	if len(mounts) != 1 || !strings.Contains(mounts[0], " - tmpfs ") {
		t.Errorf("the staging namespace has %d mounts, want its root tmpfs alone:\n%s", len(mounts), mountinfo)
	}
	entries, err := os.ReadDir(filepath.Join(task, "root"))
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 0 {
		t.Errorf("the staging namespace's root holds %d entries (%s…), want none", len(entries), entries[0].Name())
	}
}
