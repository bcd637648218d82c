package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nsbox/nsbox/api"
)

// TestPreviewProxyStarvation is the attack of issue 11 item 2: idle keep-alive connections
// to the preview proxy, one 404 request each, as many as the daemon may open files. The API
// must keep working, and the proxy must hold no more than its share.
func TestPreviewProxyStarvation(t *testing.T) {
	const nofile = 600 // the proxy's share: (600/2 - 256 backend idle conns) / 2 = 22 clients
	port := freeLoopbackPort(t)
	d := startDaemonLimited(t, nofile, "--proxy-listen", fmt.Sprintf("127.0.0.1:%d", port), "--proxy-domain", "preview.test")
	d.create(api.CreateSandboxRequest{ID: "app", Image: "busybox"})

	conns := make([]net.Conn, nofile)
	defer func() {
		for _, c := range conns {
			if c != nil {
				c.Close()
			}
		}
	}()
	for i := range conns {
		// Spread over three client addresses, so the total cap is what is reached.
		dialer := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, byte(1+i%3))}}
		c, err := dialer.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", port))
		if err != nil {
			t.Fatalf("connection %d: %v", i, err)
		}
		conns[i] = c
		// A refused connection may already be closed: its write can fail.
		_, _ = io.WriteString(c, "GET / HTTP/1.1\r\nHost: 1-nosuch.preview.test\r\n\r\n")
	}
	// Each connection is answered (and then left idle) or closed.
	var answered atomic.Int64
	var wg sync.WaitGroup
	for _, c := range conns {
		wg.Go(func() {
			_ = c.SetReadDeadline(time.Now().Add(time.Minute)) // a deadlock guard
			if resp, err := http.ReadResponse(bufio.NewReader(c), nil); err == nil {
				resp.Body.Close()
				if resp.StatusCode == http.StatusNotFound {
					answered.Add(1)
				}
			}
		})
	}
	wg.Wait()
	if n := answered.Load(); n == 0 || n >= nofile/2 {
		t.Errorf("the proxy answered %d of %d connections; want some, within its share of the file limit", n, nofile)
	}
	// With the idle connections still open, the API works.
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute) // a deadlock guard
	defer cancel()
	if _, err := d.client.ListSandboxes(ctx); err != nil {
		t.Fatalf("list sandboxes while the proxy is full: %v", err)
	}
	if res, err := d.client.Exec(ctx, "app", api.ExecRequest{Command: "echo alive"}); err != nil || string(res.Stdout) != "alive\n" {
		t.Fatalf("exec while the proxy is full: %+v %v", res, err)
	}
	if _, err := d.client.CreateSandbox(ctx, api.CreateSandboxRequest{ID: "more", Image: "busybox"}); err != nil {
		t.Fatalf("create while the proxy is full: %v", err)
	}
}
