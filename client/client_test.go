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
