package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nsbox/nsbox/api"
)

// freeLoopbackPort returns a TCP port that was free on 127.0.0.1 a moment ago.
func freeLoopbackPort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// previewGet sends a GET for host to the preview proxy on 127.0.0.1:port.
func previewGet(t *testing.T, port int, host, path string, header http.Header) (int, string) {
	t.Helper()
	req, err := http.NewRequest("GET", fmt.Sprintf("http://127.0.0.1:%d%s", port, path), nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Host = host
	for k, v := range header {
		req.Header[k] = v
	}
	c := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	var resp *http.Response
	for range 50 { // the server in the sandbox may still be starting
		if resp, err = c.Do(req); err == nil && resp.StatusCode != http.StatusBadGateway {
			break
		}
		if err == nil {
			resp.Body.Close()
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err != nil {
		t.Fatalf("GET %s via the proxy: %v", host, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, strings.TrimSpace(string(b))
}

func TestPreviewProxy(t *testing.T) {
	port := freeLoopbackPort(t)
	d := startDaemon(t, "--proxy-listen", fmt.Sprintf("127.0.0.1:%d", port), "--proxy-domain", "preview.test")
	d.create(api.CreateSandboxRequest{ID: "app", Image: "busybox"})
	startWeb(d, "app", "8080", "through-the-proxy")
	startWeb(d, "app", "127.0.0.1:8081", "local-public")
	private := d.expose("app", api.ExposePortRequest{Port: 8080})
	public := d.expose("app", api.ExposePortRequest{Port: 8081, Public: true})
	if want := fmt.Sprintf("http://8080-app-%s.preview.test:%d", private.Token, port); private.URL != want {
		t.Fatalf("url %q, want %q", private.URL, want)
	}
	host := func(label string) string { return label + ".preview.test" }

	// The token in the host name, in a header, in the query (a redirect that sets a cookie).
	if code, body := previewGet(t, port, host("8080-app-"+private.Token), "/", nil); code != 200 || body != "through-the-proxy" {
		t.Errorf("tokened host: %d %q", code, body)
	}
	if code, body := previewGet(t, port, host("8080-app"), "/", http.Header{"X-Nsbox-Token": {private.Token}}); code != 200 || body != "through-the-proxy" {
		t.Errorf("token header: %d %q", code, body)
	}
	if code, _ := previewGet(t, port, host("8080-app"), "/?nsbox_token="+private.Token, nil); code != http.StatusFound {
		t.Errorf("query token: %d, want a redirect that sets the cookie", code)
	}
	if code, _ := previewGet(t, port, host("8080-app"), "/", nil); code != http.StatusUnauthorized {
		t.Errorf("no token: %d", code)
	}
	if code, _ := previewGet(t, port, host("8080-app-"+strings.Repeat("0", 32)), "/", nil); code != http.StatusForbidden {
		t.Errorf("wrong token: %d", code)
	}
	// A public port needs no token, and a server on the sandbox's loopback only is reachable
	// through its exposed port (the sandbox delivers exposed ports to its loopback).
	if public.Token != "" {
		t.Errorf("a public port has a token: %+v", public)
	}
	if code, body := previewGet(t, port, host("8081-app"), "/", nil); code != 200 || body != "local-public" {
		t.Errorf("public port of a loopback-only server: %d %q", code, body)
	}

	// Unknown sandbox or port: 404.
	if code, _ := previewGet(t, port, host("8080-nope"), "/", nil); code != http.StatusNotFound {
		t.Errorf("unknown sandbox: %d", code)
	}
	if code, _ := previewGet(t, port, host("9999-app"), "/", nil); code != http.StatusNotFound {
		t.Errorf("port not exposed: %d", code)
	}

	// A WebSocket-style upgrade is carried both ways: the server in the sandbox answers 101 and
	// then echoes bytes.
	d.sh("app", `printf '%s\n' '#!/bin/sh' 'while read -r l; do l=$(printf %s "$l" | tr -d "\r"); [ -z "$l" ] && break; done' \
		'printf "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"' 'exec cat' > /ws.sh && chmod +x /ws.sh && (nc -l -p 9000 -e /ws.sh >/dev/null 2>&1 &)`)
	ws := d.expose("app", api.ExposePortRequest{Port: 9000})
	conn := dialUpgrade(t, port, host("9000-app-"+ws.Token))
	defer conn.Close()
	if _, err := conn.Write([]byte("ping\n")); err != nil {
		t.Fatal(err)
	}
	line, err := conn.reader.ReadString('\n')
	if err != nil || line != "ping\n" {
		t.Fatalf("echo through the upgraded connection: %q %v", line, err)
	}

	// Unexposing cuts the open upgraded connection; the port is then unknown.
	if err := d.client.UnexposePort(context.Background(), "app", 9000, ""); err != nil {
		t.Fatal(err)
	}
	_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, _ = conn.Write([]byte("after\n"))
	if got, err := conn.reader.ReadString('\n'); err == nil || isTimeout(err) {
		t.Errorf("the upgraded connection survived the unexpose: %q %v", got, err)
	}
	if code, _ := previewGet(t, port, host("9000-app-"+ws.Token), "/", nil); code != http.StatusNotFound {
		t.Errorf("after unexpose: %d", code)
	}

	// A sandbox that has stopped: 503.
	if err := syscall.Kill(d.agentPID("app"), syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	waitStatus(t, d, "app", api.StatusFailed)
	if code, _ := previewGet(t, port, host("8080-app-"+private.Token), "/", nil); code != http.StatusServiceUnavailable {
		t.Errorf("stopped sandbox: %d", code)
	}
}

// upgraded is a connection through the proxy after a 101 answer.
type upgraded struct {
	net.Conn
	reader *bufio.Reader
}

// dialUpgrade sends a WebSocket handshake for host to the proxy and returns the connection
// once the answer is 101.
func dialUpgrade(t *testing.T, port int, host string) *upgraded {
	t.Helper()
	var conn net.Conn
	var err error
	for range 50 { // nc in the sandbox may still be starting
		conn, err = net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", port), 3*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(conn, "GET / HTTP/1.1\r\nHost: %s\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"+
			"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n", host)
		r := bufio.NewReader(conn)
		resp, rerr := http.ReadResponse(r, nil)
		if rerr == nil && resp.StatusCode == http.StatusSwitchingProtocols {
			return &upgraded{Conn: conn, reader: r}
		}
		conn.Close()
		err = fmt.Errorf("answer %v %v", resp, rerr)
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("upgrade through the proxy: %v", err)
	return nil
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// waitStatus waits until a sandbox has the status.
func waitStatus(t *testing.T, d *testDaemon, id, status string) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		sb, err := d.client.GetSandbox(context.Background(), id)
		if err == nil && sb.Status == status {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("sandbox %s: %+v %v, want status %s", id, sb, err, status)
		}
	}
}
