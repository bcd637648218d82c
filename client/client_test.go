package client

import (
	"context"
	"errors"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nsbox/nsbox/api"
)

// TestCanceledCallSaysSo: a call whose context ends reports the context's error, not an
// unreachable daemon.
func TestCanceledCallSaysSo(t *testing.T) {
	socket := filepath.Join(t.TempDir(), "d.sock")
	ln, err := net.Listen("unix", socket)
	if err != nil {
		t.Fatal(err)
	}
	release := make(chan struct{})
	srv := &http.Server{Handler: http.HandlerFunc(func(http.ResponseWriter, *http.Request) { <-release })}
	go func() { _ = srv.Serve(ln) }()
	defer srv.Close()
	defer close(release)
	c := New(socket)
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	_, err = c.Version(ctx)
	if !errors.Is(err, context.DeadlineExceeded) || strings.Contains(err.Error(), "cannot reach") {
		t.Errorf("a call whose context ended: %v", err)
	}
	ctx, cancel = context.WithCancel(context.Background())
	cancel()
	if _, err := c.Version(ctx); !errors.Is(err, context.Canceled) {
		t.Errorf("a canceled call: %v", err)
	}
	if _, err := New(filepath.Join(t.TempDir(), "none.sock")).Version(context.Background()); err == nil || !strings.Contains(err.Error(), "cannot reach the nsbox daemon") {
		t.Errorf("no daemon: %v", err)
	}
}

// TestExecFromADaemonWithoutFrames: a daemon that answers an exec with one JSON document (it
// predates frames) still gives Exec its result and ExecTo its output.
func TestExecFromADaemonWithoutFrames(t *testing.T) {
	socket := filepath.Join(t.TempDir(), "d.sock")
	ln, err := net.Listen("unix", socket)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"exitCode":3,"stdout":"aGkK","stdoutEncoding":"base64","stderr":"oops\n","stderrEncoding":"utf-8","sessionId":"default"}`))
	})}
	go func() { _ = srv.Serve(ln) }()
	defer srv.Close()
	c := New(socket)
	res, err := c.Exec(context.Background(), "box", api.ExecRequest{Command: "x"})
	if err != nil {
		t.Fatal(err)
	}
	if out, errOut, err := res.Output(); err != nil || string(out) != "hi\n" || string(errOut) != "oops\n" || res.ExitCode != 3 {
		t.Fatalf("Exec: %+v → %q %q %v", res, out, errOut, err)
	}
	var stdout, stderr strings.Builder
	res, err = c.ExecTo(context.Background(), "box", api.ExecRequest{Command: "x"}, &stdout, &stderr)
	if err != nil || stdout.String() != "hi\n" || stderr.String() != "oops\n" || res.ExitCode != 3 || res.Stdout != "" {
		t.Fatalf("ExecTo: %+v %v; wrote %q %q", res, err, stdout.String(), stderr.String())
	}
}
