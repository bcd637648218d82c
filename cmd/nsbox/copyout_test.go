package main

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/nsbox/nsbox/api"
)

// TestCopyOutSymlinkAttack is the attack of issue 11 item 1: the sandbox plants symlinks
// that a first `nsbox cp` recreates on the host, then swaps them for a setuid file and a
// directory, hoping the second copy writes through them to host paths of its choosing.
func TestCopyOutSymlinkAttack(t *testing.T) {
	d := startDaemon(t)
	d.create(api.CreateSandboxRequest{ID: "c", Image: "busybox"})
	host := t.TempDir()
	victim := filepath.Join(host, "victim")
	victimDir := filepath.Join(host, "victimdir")
	if err := os.WriteFile(victim, []byte("precious\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(victimDir, 0o755); err != nil {
		t.Fatal(err)
	}
	dst := filepath.Join(host, "dst")
	if err := os.Mkdir(dst, 0o755); err != nil {
		t.Fatal(err)
	}
	d.sh("c", "mkdir -p /workspace/out && cd /workspace/out && ln -s "+victim+" f && ln -s "+victimDir+" d && ln -s "+victimDir+" top")
	if _, errOut, code := d.cli("", "cp", "c:/workspace/out", dst); code != 0 {
		t.Fatalf("first cp out: %q", errOut)
	}
	if target, err := os.Readlink(filepath.Join(dst, "out", "f")); err != nil || target != victim {
		t.Fatalf("the first copy recreates symlinks: %q %v", target, err)
	}
	// The swap: a setuid file where f was, a directory with a file where d was.
	d.sh("c", "cd /workspace/out && rm f d top && printf evil > f && chmod 4777 f && mkdir d && printf evil > d/x && printf evil > top")
	_, errOut, code := d.cli("", "cp", "c:/workspace/out", dst)
	checkVictims := func() {
		t.Helper()
		if got, err := os.ReadFile(victim); err != nil || string(got) != "precious\n" {
			t.Fatalf("the copy wrote through a planted symlink into %s: %q %v", victim, got, err)
		}
		if entries, _ := os.ReadDir(victimDir); len(entries) != 0 {
			t.Fatalf("the copy wrote through a planted symlink into %s: %v", victimDir, entries)
		}
	}
	checkVictims()
	if code != 0 {
		t.Fatalf("second cp out: %q", errOut)
	}
	if got, err := os.ReadFile(filepath.Join(dst, "out", "d", "x")); err != nil || string(got) != "evil" {
		t.Fatalf("the directory that replaced a symlink: %q %v", got, err)
	}
	// A file copied to a name that an earlier copy made a symlink to a directory replaces
	// the symlink instead of going into the directory.
	if err := os.Symlink(victimDir, filepath.Join(host, "link")); err != nil {
		t.Fatal(err)
	}
	if _, errOut, code := d.cli("", "cp", "c:/workspace/out/top", filepath.Join(host, "link")); code != 0 {
		t.Fatalf("cp out over a symlink: %q", errOut)
	}
	if fi, err := os.Lstat(filepath.Join(host, "link")); err != nil || !fi.Mode().IsRegular() {
		t.Fatalf("cp out to a symlink: want it replaced by a file, got %v %v", fi, err)
	}
	checkVictims()
	for name, want := range map[string]os.FileMode{"f": 0o777, "top": 0o644} {
		fi, err := os.Lstat(filepath.Join(dst, "out", name))
		if err != nil || !fi.Mode().IsRegular() || fi.Mode()&(os.ModePerm|os.ModeSetuid|os.ModeSetgid|os.ModeSticky) != want {
			t.Fatalf("%s after the swap: want a regular file of mode %v in place of the symlink, got %v %v", name, want, fi, err)
		}
	}
	if leftovers, _ := filepath.Glob(filepath.Join(dst, "out", ".nsbox-cp-*")); len(leftovers) != 0 {
		t.Fatalf("temporary files left: %v", leftovers)
	}
	// Setuid is kept only when asked for.
	if _, errOut, code := d.cli("", "cp", "--keep-special", "c:/workspace/out/f", filepath.Join(host, "kept")); code != 0 {
		t.Fatalf("cp out --keep-special: %q", errOut)
	}
	if fi, err := os.Stat(filepath.Join(host, "kept")); err != nil || fi.Mode()&os.ModeSetuid == 0 {
		t.Fatalf("--keep-special dropped setuid: %v %v", fi, err)
	}
}

// TestCopyOutSparseAndCap: a 64 MiB file that is almost all hole stays a hole on the host,
// and --max-bytes stops a copy beyond it without leaving a partial file.
func TestCopyOutSparseAndCap(t *testing.T) {
	d := startDaemon(t)
	d.create(api.CreateSandboxRequest{ID: "c", Image: "busybox"})
	d.sh("c", "truncate -s 64M /workspace/sparse && printf data | dd of=/workspace/sparse bs=1 seek=1048576 conv=notrunc 2>/dev/null")
	host := t.TempDir()
	got := filepath.Join(host, "sparse")
	if _, errOut, code := d.cli("", "cp", "c:/workspace/sparse", got); code != 0 {
		t.Fatalf("cp out: %q", errOut)
	}
	var st syscall.Stat_t
	if err := syscall.Stat(got, &st); err != nil || st.Size != 64<<20 || st.Blocks*512 > 1<<20 {
		t.Fatalf("sparse copy: size %d, %d bytes allocated (%v)", st.Size, st.Blocks*512, err)
	}
	f, err := os.Open(got)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, 6)
	if _, err := f.ReadAt(buf, 1048575); err != nil || !bytes.Equal(buf, []byte("\x00data\x00")) {
		t.Fatalf("sparse copy content: %q %v", buf, err)
	}
	_, errOut, code := d.cli("", "cp", "--max-bytes", "1000000", "c:/workspace/sparse", filepath.Join(host, "capped"))
	if code == 0 || !strings.Contains(errOut, "--max-bytes") {
		t.Fatalf("cp out beyond --max-bytes: %d %q", code, errOut)
	}
	if entries, _ := os.ReadDir(host); len(entries) != 1 {
		t.Fatalf("a capped copy left files: %v", entries)
	}
}

// TestCopyOutInterrupted: a copy out stopped by SIGINT leaves no temporary file behind.
func TestCopyOutInterrupted(t *testing.T) {
	d := startDaemon(t)
	d.create(api.CreateSandboxRequest{ID: "c", Image: "busybox"})
	d.sh("c", "truncate -s 8G /big") // sparse inside; copied out as 8 GiB of zeros, slowly
	host := t.TempDir()
	cmd := exec.Command(nsboxBin, "--socket", d.socket, "cp", "c:/big", filepath.Join(host, "big"))
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	temps := func() []string {
		m, _ := filepath.Glob(filepath.Join(host, ".nsbox-cp-*"))
		return m
	}
	deadline := time.Now().Add(30 * time.Second)
	for len(temps()) == 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if len(temps()) == 0 {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		t.Fatalf("the copy made no temporary file; stderr %q", stderr.String())
	}
	if err := cmd.Process.Signal(unix.SIGINT); err != nil {
		t.Fatal(err)
	}
	err := cmd.Wait()
	if err == nil {
		t.Fatal("an interrupted copy succeeded")
	}
	if left := temps(); len(left) != 0 {
		t.Errorf("left behind: %v", left)
	}
	if _, err := os.Lstat(filepath.Join(host, "big")); !os.IsNotExist(err) {
		t.Errorf("the destination exists after an interrupted copy: %v", err)
	}
}
