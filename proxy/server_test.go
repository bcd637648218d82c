package proxy

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/websocket"
)

// short is every timeout of the servers under test: waits in these tests are for something
// to happen (a connection closed), never assertions on how long it took.
const short = 20 * time.Millisecond

// serve starts a Server of h on a loopback listener and returns its address.
func serve(t *testing.T, h http.Handler, cfg ServerConfig) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := NewServer(h, cfg)
	done := make(chan error, 1)
	go func() { done <- s.Serve(ln) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), guard)
		defer cancel()
		if err := s.Shutdown(ctx); err != nil {
			t.Errorf("shutdown: %v", err)
		}
		if err := <-done; !errors.Is(err, http.ErrServerClosed) {
			t.Errorf("serve: %v", err)
		}
	})
	return ln.Addr().String()
}

// dialFrom connects to addr from the loopback address from (port chosen by the kernel).
func dialFrom(t *testing.T, from, addr string) net.Conn {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(from)}}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// roundTrip sends a GET on c and reads its answer.
func roundTrip(c net.Conn, br *bufio.Reader) (int, error) {
	if _, err := io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
		return 0, err
	}
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	_, err = io.Copy(io.Discard, resp.Body)
	return resp.StatusCode, err
}

// waitClosed reads c until the server closes it and returns what it read; it fails the
// test if the server keeps it open.
func waitClosed(t *testing.T, c net.Conn, why string) string {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(guard))
	data, err := io.ReadAll(c)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		t.Fatalf("%s: the server kept the connection open", why)
	}
	return string(data)
}

var answerOK = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, "ok") })

// TestServerTimeouts: connections that send nothing, stay idle after a request, or stop
// sending mid-body are closed (issue 11: idle keep-alive connections starved the daemon).
func TestServerTimeouts(t *testing.T) {
	ignoresBody := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { http.NotFound(w, r) })
	readsBody := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if _, err := io.ReadAll(r.Body); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
		}
	})
	cfg := ServerConfig{HeaderTimeout: short, IdleTimeout: short, BodyTimeout: short}
	silent := dialFrom(t, "127.0.0.1", serve(t, answerOK, cfg))
	waitClosed(t, silent, "a connection that sends nothing")

	idle := dialFrom(t, "127.0.0.1", serve(t, answerOK, cfg))
	if code, err := roundTrip(idle, bufio.NewReader(idle)); err != nil || code != http.StatusOK {
		t.Fatalf("request: %d %v", code, err)
	}
	waitClosed(t, idle, "an idle keep-alive connection")

	for name, h := range map[string]http.Handler{"read": readsBody, "ignored": ignoresBody} {
		c := dialFrom(t, "127.0.0.1", serve(t, h, cfg))
		if _, err := io.WriteString(c, "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\n\r\n0123456789"); err != nil {
			t.Fatal(err)
		}
		waitClosed(t, c, "a request body that stalls ("+name+" by the handler)")
	}
}

// TestServerCaps: connections beyond the total cap or the per-client cap are closed at
// once; a place given back can be taken again.
func TestServerCaps(t *testing.T) {
	addr := serve(t, answerOK, ServerConfig{MaxConns: 2, MaxConnsPerClient: 1})
	kept := func(from string) net.Conn {
		c := dialFrom(t, from, addr)
		if code, err := roundTrip(c, bufio.NewReader(c)); err != nil || code != http.StatusOK {
			t.Fatalf("request from %s: %d %v", from, code, err)
		}
		return c
	}
	first := kept("127.0.0.1")
	if got := waitClosed(t, dialFrom(t, "127.0.0.1", addr), "a second connection from one client"); got != "" {
		t.Fatalf("a connection over the per-client cap was answered: %q", got)
	}
	kept("127.0.0.2")
	if got := waitClosed(t, dialFrom(t, "127.0.0.3", addr), "a connection over the total cap"); got != "" {
		t.Fatalf("a connection over the total cap was answered: %q", got)
	}
	first.Close()
	// The server gives the place back once it sees the close; until then, new connections
	// from that client are refused.
	for deadline := time.Now().Add(guard); ; {
		c := dialFrom(t, "127.0.0.1", addr)
		if code, err := roundTrip(c, bufio.NewReader(c)); err == nil && code == http.StatusOK {
			break
		}
		c.Close()
		if time.Now().After(deadline) {
			t.Fatal("a closed connection's place was never given back")
		}
		time.Sleep(time.Millisecond)
	}
}

func TestDefaultMaxConns(t *testing.T) {
	if got := DefaultMaxConns(20000); got != (10000-defaultMaxIdleConns)/2 {
		t.Errorf("DefaultMaxConns(20000) = %d", got)
	}
	if got := DefaultMaxConns(64); got != 1 {
		t.Errorf("DefaultMaxConns(64) = %d", got)
	}
}

// TestServerStreamsOutliveTimeouts: an event stream and a WebSocket through the proxy stay
// open across pauses many times the server's timeouts.
func TestServerStreamsOutliveTimeouts(t *testing.T) {
	mux := http.NewServeMux()
	mux.Handle("/echo", websocket.Handler(func(ws *websocket.Conn) { _, _ = io.Copy(ws, ws) }))
	mux.HandleFunc("/events", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		for i := range 2 {
			fmt.Fprintf(w, "data: %d\n\n", i)
			w.(http.Flusher).Flush()
			time.Sleep(10 * short)
		}
	})
	_, backendAddr := backend(t, mux)
	r := newResolver()
	r.set("box", 3000, Target{Addr: backendAddr, Public: true})
	p, err := New(Config{Domain: "example.test"}, r)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Close)
	addr := serve(t, p, ServerConfig{HeaderTimeout: short, IdleTimeout: short, BodyTimeout: short})

	c := dialFrom(t, "127.0.0.1", addr)
	if _, err := io.WriteString(c, "GET /events HTTP/1.1\r\nHost: 3000-box.example.test\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	body, err := io.ReadAll(resp.Body)
	if err != nil || string(body) != "data: 0\n\ndata: 1\n\n" {
		t.Fatalf("event stream: %q %v", body, err)
	}

	cfg, err := websocket.NewConfig("ws://3000-box.example.test/echo", "http://3000-box.example.test")
	if err != nil {
		t.Fatal(err)
	}
	ws, err := websocket.NewClient(cfg, dialFrom(t, "127.0.0.1", addr))
	if err != nil {
		t.Fatal(err)
	}
	for i := range 2 {
		time.Sleep(10 * short)
		msg := strings.Repeat("x", i+1)
		var got string
		if err := websocket.Message.Send(ws, msg); err != nil {
			t.Fatalf("send after a pause: %v", err)
		}
		if err := websocket.Message.Receive(ws, &got); err != nil || got != msg {
			t.Fatalf("echo after a pause: %q %v", got, err)
		}
	}
}
