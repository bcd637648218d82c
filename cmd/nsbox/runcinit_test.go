package main

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/nsbox/nsbox/api"
	"github.com/nsbox/nsbox/internal/atomicfile"
)

// TestInitHandsOver runs `nsbox init` as libcontainer does, with a stand-in for nsbox-init
// (a copy of echo, which prints its arguments) at fd 4: a new container's init executes it in
// place of itself; a join of a running container's ("setns"), or a file of another name, does
// not, and nsbox runs libcontainer's init itself (which fails here, having no parent to talk
// to). Then a daemon: it has its nsbox-init on disk (unless a plain go build embedded none)
// and its containers start.
func TestInitHandsOver(t *testing.T) {
	echo, err := exec.LookPath("echo")
	if err != nil {
		t.Skip("no echo")
	}
	dir := t.TempDir()
	src, err := os.Open(echo)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	for _, name := range []string{"nsbox-init-test", "other-init"} {
		if _, err := src.Seek(0, 0); err != nil {
			t.Fatal(err)
		}
		if err := atomicfile.WriteFrom(filepath.Join(dir, name), src, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	run := func(initType, name string) (string, int) {
		t.Helper()
		bin, err := os.OpenFile(filepath.Join(dir, name), unix.O_PATH|unix.O_CLOEXEC, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer bin.Close()
		devNull, err := os.Open(os.DevNull)
		if err != nil {
			t.Fatal(err)
		}
		defer devNull.Close()
		cmd := exec.Command(nsboxBin, "init")
		cmd.Env = []string{"_LIBCONTAINER_INITTYPE=" + initType}
		cmd.ExtraFiles = []*os.File{devNull, bin} // fds 3 and 4
		var out bytes.Buffer
		cmd.Stdout = &out
		err = cmd.Run()
		var exit *exec.ExitError
		if err != nil && !errors.As(err, &exit) {
			t.Fatal(err)
		}
		return out.String(), cmd.ProcessState.ExitCode()
	}
	if out, code := run("standard", "nsbox-init-test"); out != "init\n" || code != 0 {
		t.Errorf("a new container's init: printed %q, exit %d; want the stand-in's \"init\\n\", 0", out, code)
	}
	for _, c := range []struct{ initType, name string }{{"setns", "nsbox-init-test"}, {"standard", "other-init"}} {
		if out, code := run(c.initType, c.name); out != "" || code != 255 {
			t.Errorf("init type %s with %s at fd 4: printed %q, exit %d; want nsbox's own init (nothing, 255)", c.initType, c.name, out, code)
		}
	}

	d := startDaemon(t)
	if inits, _ := filepath.Glob(filepath.Join(d.dataDir, "agent", "nsbox-init-*")); len(inits) != 1 {
		if agents, _ := filepath.Glob(filepath.Join(d.dataDir, "agent", "nsbox-agent-*")); len(agents) == 1 {
			t.Errorf("a build with an embedded agent has no nsbox-init on disk: %v", inits)
		}
	}
	d.create(api.CreateSandboxRequest{ID: "box"})
	if out := d.sh("box", "echo ok"); out != "ok\n" {
		t.Errorf("a sandbox set up by nsbox-init: %q", out)
	}
}
