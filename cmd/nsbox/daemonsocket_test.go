package main

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestDaemonRefusesTakeover is the attack of issue 11 item 5: a second daemon with a run
// dir of its own, started on the socket of a running one (its default socket, in its run
// dir), or on a socket where something else answers, must refuse to start and leave the
// socket alone.
func TestDaemonRefusesTakeover(t *testing.T) {
	d := startDaemon(t)
	if d.socket != filepath.Join(d.runDir, "nsbox.sock") {
		t.Fatalf("the harness expects the default socket in the run dir, not %s", d.socket)
	}
	net2 := newTestNetwork(t, daemonSeq.Add(1))
	second := func(socket string) string {
		t.Helper()
		runDir := filepath.Join(reachableTempDir(t), "run")
		cgroupParent := fmt.Sprintf("nsbox-test-%d-takeover", os.Getpid())
		args := append([]string{"--socket", socket, "daemon", "--data-dir", t.TempDir(), "--run-dir", runDir,
			"--cgroup-parent", cgroupParent, "--warm-pool", ""}, net2.daemonArgs()...)
		cmd := exec.Command(nsboxBin, args...)
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		exited := make(chan error, 1)
		go func() { exited <- cmd.Wait() }()
		select {
		case err := <-exited:
			if err == nil {
				t.Fatalf("a second daemon on %s exited 0: %s", socket, out.String())
			}
			return out.String()
		case <-time.After(time.Minute): // a deadlock guard: it should exit at once
		}
		// It started: stop it and remove what it made before failing.
		_ = cmd.Process.Signal(syscall.SIGTERM)
		<-exited
		cleanup := append([]string{"daemon", "--run-dir", runDir, "--cleanup"}, net2.daemonArgs()...)
		if out, err := execNsbox(cleanup...); err != nil {
			t.Errorf("cleanup of the second daemon: %v %s", err, out)
		}
		dirs, _ := filepath.Glob("/sys/fs/cgroup/*/" + cgroupParent)
		for _, dir := range dirs {
			_ = os.Remove(dir)
		}
		t.Fatalf("a second daemon started on %s: %s", socket, out.String())
		return ""
	}
	if out := second(d.socket); !strings.Contains(out, "another nsbox daemon serves") {
		t.Fatalf("second daemon on a live daemon's socket: %q", out)
	}
	if _, err := d.client.Version(context.Background()); err != nil {
		t.Fatalf("the first daemon lost its socket: %v", err)
	}
	foreign := filepath.Join(t.TempDir(), "foreign.sock")
	ln, err := net.Listen("unix", foreign)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	if out := second(foreign); !strings.Contains(out, "something answers on") {
		t.Fatalf("daemon on a socket something answers on: %q", out)
	}
	if _, err := os.Stat(foreign); err != nil {
		t.Fatalf("the daemon removed a live socket: %v", err)
	}
	// A stale socket (nothing listens) does not stop a restart.
	d.kill9()
	d.start()
}
