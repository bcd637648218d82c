package httpd

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptrace"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// serve serves h on a unix socket of the test's own and returns a net/http client of it (the
// daemon's side is net/http) and the socket's path.
func serve(t *testing.T, h Handler) (*http.Client, string) {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "httpd.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- Serve(ln, h, slog.New(slog.NewTextHandler(io.Discard, nil))) }()
	tr := &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", sock)
	}}
	t.Cleanup(func() {
		ln.Close()
		if err := <-served; err == nil {
			t.Error("Serve returned no error after its listener closed")
		}
		tr.CloseIdleConnections()
	})
	return &http.Client{Transport: tr}, sock
}

// do sends a request and returns its answer and body.
func do(t *testing.T, c *http.Client, method, path string, body io.Reader) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequest(method, "http://agent"+path, body)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: read the answer: %v", method, path, err)
	}
	return resp, string(b)
}

// TestAnswers checks an answer's status, headers and body as net/http reads them: a short
// body with its Content-Length, a long one chunked, none for HEAD and 204.
func TestAnswers(t *testing.T) {
	long := strings.Repeat("0123456789", 2000)
	c, _ := serve(t, func(w *ResponseWriter, r *Request) {
		switch r.Path {
		case "/short":
			w.SetHeader("Content-Type", "application/json")
			w.SetHeader("content-type", "text/plain") // replaces it
			w.WriteHeader(StatusCreated)
			w.WriteHeader(StatusAccepted) // the first counts
			fmt.Fprintf(w, "short %s %s", r.Method, r.Query().Get("q"))
		case "/long":
			for i := 0; i < len(long); i += 1000 {
				_, _ = w.Write([]byte(long[i : i+1000]))
			}
		case "/empty":
			w.WriteHeader(StatusNoContent)
			if _, err := w.Write([]byte("x")); err != ErrBodyNotAllowed {
				t.Errorf("a body after 204: %v, want ErrBodyNotAllowed", err)
			}
		case "/nothing":
		}
	})
	resp, body := do(t, c, "GET", "/short?q=a%20b", nil)
	if resp.StatusCode != StatusCreated || body != "short GET a b" || resp.ContentLength != int64(len(body)) ||
		resp.Header.Get("Content-Type") != "text/plain" {
		t.Errorf("short: %d %q, length %d, type %q", resp.StatusCode, body, resp.ContentLength, resp.Header.Get("Content-Type"))
	}
	resp, body = do(t, c, "GET", "/long", nil)
	if resp.StatusCode != StatusOK || body != long || resp.ContentLength != -1 || len(resp.TransferEncoding) != 1 {
		t.Errorf("long: %d, %d bytes, length %d, encoding %q", resp.StatusCode, len(body), resp.ContentLength, resp.TransferEncoding)
	}
	resp, body = do(t, c, "HEAD", "/short", nil)
	if resp.StatusCode != StatusCreated || body != "" {
		t.Errorf("HEAD: %d %q", resp.StatusCode, body)
	}
	resp, body = do(t, c, "DELETE", "/empty", nil)
	if resp.StatusCode != StatusNoContent || body != "" {
		t.Errorf("204: %d %q", resp.StatusCode, body)
	}
	resp, body = do(t, c, "GET", "/nothing", nil)
	if resp.StatusCode != StatusOK || body != "" || resp.ContentLength != 0 {
		t.Errorf("nothing written: %d %q, length %d", resp.StatusCode, body, resp.ContentLength)
	}
}

// TestFlush checks that what is flushed reaches the client while the handler still runs, and
// that writes from other goroutines and after the handler's return are safe.
func TestFlush(t *testing.T) {
	proceed := make(chan struct{})
	late := make(chan error, 1)
	c, _ := serve(t, func(w *ResponseWriter, r *Request) {
		w.SetHeader("Content-Type", "text/event-stream")
		if err := w.Flush(); err != nil {
			t.Errorf("flush the head: %v", err)
		}
		var wg sync.WaitGroup
		for i := range 4 {
			wg.Go(func() {
				fmt.Fprintf(w, "line %d\n", i)
				_ = w.Flush()
			})
		}
		wg.Wait()
		<-proceed
		_, _ = w.Write([]byte("end\n"))
		go func() {
			time.Sleep(10 * time.Millisecond)
			_, err := w.Write([]byte("too late"))
			late <- err
		}()
	})
	resp, err := c.Get("http://agent/stream")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.Header.Get("Content-Type") != "text/event-stream" {
		t.Errorf("Content-Type %q", resp.Header.Get("Content-Type"))
	}
	lines := bufio.NewScanner(resp.Body)
	for range 4 {
		if !lines.Scan() || !strings.HasPrefix(lines.Text(), "line ") {
			t.Fatalf("a flushed line did not come before the handler went on: %q, %v", lines.Text(), lines.Err())
		}
	}
	close(proceed)
	if !lines.Scan() || lines.Text() != "end" || lines.Scan() {
		t.Errorf("the stream's end: %q, %v", lines.Text(), lines.Err())
	}
	if err := <-late; err != ErrHandlerDone {
		t.Errorf("a write after the handler returned: %v, want ErrHandlerDone", err)
	}
}

// TestRequestBodies checks bodies with a Content-Length and chunked ones, longer than the
// connection's buffer, and that a body the handler leaves unread does not stop the
// connection from serving the next request.
func TestRequestBodies(t *testing.T) {
	c, _ := serve(t, func(w *ResponseWriter, r *Request) {
		if r.Path == "/ignore" {
			return
		}
		h := sha256.New()
		n, err := io.Copy(h, r.Body)
		fmt.Fprintf(w, "%d %x %v", n, h.Sum(nil), err)
	})
	data := bytes.Repeat([]byte("nsbox agent body "), 20000)
	want := fmt.Sprintf("%d %x <nil>", len(data), sha256.Sum256(data))
	if _, body := do(t, c, "POST", "/sum", bytes.NewReader(data)); body != want {
		t.Errorf("Content-Length body: %q, want %q", body, want)
	}
	pr, pw := io.Pipe() // no length: net/http sends it chunked
	go func() {
		for i := 0; i < len(data); i += 3000 {
			_, _ = pw.Write(data[i:min(i+3000, len(data))])
		}
		pw.Close()
	}()
	if _, body := do(t, c, "POST", "/sum", pr); body != want {
		t.Errorf("chunked body: %q, want %q", body, want)
	}
	if _, body := do(t, c, "POST", "/sum", nil); body != "0 "+fmt.Sprintf("%x", sha256.Sum256(nil))+" <nil>" {
		t.Errorf("no body: %q", body)
	}

	reused := 0
	ctx := httptrace.WithClientTrace(context.Background(), &httptrace.ClientTrace{GotConn: func(i httptrace.GotConnInfo) {
		if i.Reused {
			reused++
		}
	}})
	for _, size := range []int{10, 100 << 10} {
		req, _ := http.NewRequestWithContext(ctx, "POST", "http://agent/ignore", bytes.NewReader(make([]byte, size)))
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		req, _ = http.NewRequestWithContext(ctx, "POST", "http://agent/sum", strings.NewReader("after"))
		resp, err = c.Do(req)
		if err != nil {
			t.Fatalf("the request after an unread body of %d bytes: %v", size, err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if !strings.HasPrefix(string(b), "5 ") {
			t.Errorf("the request after an unread body of %d bytes: %q", size, b)
		}
	}
	if reused < 3 {
		t.Errorf("%d of 4 requests reused a connection: it is not kept between requests", reused)
	}
}

// TestContextEndsWhenClientGoes checks that a request's context is done once its client has
// gone away, and not before: not while the client waits, nor between requests.
func TestContextEndsWhenClientGoes(t *testing.T) {
	ended := make(chan string, 1)
	c, _ := serve(t, func(w *ResponseWriter, r *Request) {
		switch r.Path {
		case "/slow":
			_, _ = io.ReadAll(r.Body)
			select {
			case <-r.Context().Done():
				t.Error("the context of a request whose client waits was cancelled")
			case <-time.After(100 * time.Millisecond):
			}
			_, _ = w.Write([]byte("done"))
		case "/wait":
			select {
			case <-r.Context().Done():
				ended <- "cancelled"
			case <-time.After(10 * time.Second):
				ended <- "not cancelled within 10 s"
			}
		}
	})
	for range 2 { // the second on the same connection: the watch of the first has ended
		if _, body := do(t, c, "POST", "/slow", strings.NewReader("body")); body != "done" {
			t.Errorf("slow: %q", body)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, "GET", "http://agent/wait", nil)
	go func() {
		time.Sleep(50 * time.Millisecond)
		cancel() // closes the connection
	}()
	if _, err := c.Do(req); err == nil {
		t.Error("a cancelled request succeeded")
	}
	if got := <-ended; got != "cancelled" {
		t.Errorf("a request whose client went away: %s", got)
	}
}

// TestBadRequests checks the answers to requests the server refuses itself, each closing
// its connection, and 100 Continue.
func TestBadRequests(t *testing.T) {
	_, sock := serve(t, func(w *ResponseWriter, r *Request) {
		if r.Path == "/ignore" {
			return
		}
		b, err := io.ReadAll(r.Body)
		fmt.Fprintf(w, "%s %v", b, err)
	})
	for _, tc := range []struct{ request, want string }{
		{"GARBAGE\r\n\r\n", "HTTP/1.1 400 "},
		{"GET / HTTP/2.0\r\n\r\n", "HTTP/1.1 505 "},
		{"GET /x HTTP/1.1\r\nno colon\r\n\r\n", "HTTP/1.1 400 "},
		{"POST /x HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n", "HTTP/1.1 501 "},
		{"POST /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\nabc", "HTTP/1.1 400 "},
		{"POST /x HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab", "HTTP/1.1 400 "},
		{"POST /x HTTP/1.1\r\nContent-Length: -1\r\n\r\n", "HTTP/1.1 400 "},
		{"POST /x HTTP/1.1\r\nConnection: close\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\nab", "HTTP/1.1 200 OK\r\nContent-Length: 8\r\nConnection: close\r\n\r\nab <nil>"},
		{"GET /x HTTP/1.1\r\nX: " + strings.Repeat("a", maxLine) + "\r\n\r\n", "HTTP/1.1 431 "},
		{"POST /x HTTP/1.1\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n1;ext=1\r\nd\r\n0\r\nTrailer: x\r\n\r\n", "HTTP/1.1 200 OK\r\nContent-Length: 10\r\nConnection: close\r\n\r\nabcd <nil>"},
		{"POST /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", "HTTP/1.1 200 OK\r\nContent-Length: 46\r\nConnection: close\r\n\r\n read request body: malformed chunked encoding"},
		{"GET /x HTTP/1.1\r\n" + strings.Repeat("a: b\r\n", maxHeaderLines+1) + "\r\n", "HTTP/1.1 431 "},
		// The client waits for a 100 Continue the handler never asked for (it did not read):
		// the connection cannot carry another request.
		{"POST /ignore HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n", "HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"},
		{"POST /x HTTP/1.0\r\nContent-Length: 2\r\n\r\nhi", "HTTP/1.1 200 OK\r\nContent-Length: 8\r\nConnection: close\r\n\r\nhi <nil>"},
	} {
		conn, err := net.Dial("unix", sock)
		if err != nil {
			t.Fatal(err)
		}
		_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
		if _, err := io.WriteString(conn, tc.request); err != nil {
			t.Fatal(err)
		}
		got, err := io.ReadAll(conn) // to the connection's close
		conn.Close()
		if err != nil || !strings.HasPrefix(string(got), tc.want) {
			t.Errorf("%.60q: got %.120q (%v), want %q…", tc.request, got, err, tc.want)
		}
	}

	conn, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	br := bufio.NewReader(conn)
	fmt.Fprint(conn, "POST /x HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n")
	if line, err := br.ReadString('\n'); line != "HTTP/1.1 100 Continue\r\n" {
		t.Fatalf("Expect: 100-continue: %q %v", line, err)
	}
	_, _ = br.ReadString('\n')
	fmt.Fprint(conn, "hello")
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	if b, _ := io.ReadAll(resp.Body); string(b) != "hello <nil>" {
		t.Errorf("after 100 Continue: %q", b)
	}
}

// TestPanicEndsItsConnectionOnly checks that a handler's panic closes its connection and
// leaves the server serving.
func TestPanicEndsItsConnectionOnly(t *testing.T) {
	c, _ := serve(t, func(w *ResponseWriter, r *Request) {
		if r.Path == "/panic" {
			panic("handler bug")
		}
		_, _ = w.Write([]byte("fine"))
	})
	if _, err := c.Get("http://agent/panic"); err == nil {
		t.Error("a request whose handler panicked succeeded")
	}
	if _, body := do(t, c, "GET", "/other", nil); body != "fine" {
		t.Errorf("after a panic: %q", body)
	}
}

// TestUnreadBodies checks answers to requests whose handler leaves a long body unread (a
// stdin for a process that has none, say): the client gets the answer, not a write error
// from a connection closed under its body, and the head says the connection closes.
func TestUnreadBodies(t *testing.T) {
	c, _ := serve(t, func(w *ResponseWriter, r *Request) {
		w.WriteHeader(409)
		_, _ = w.Write([]byte("no stdin"))
	})
	body := make([]byte, 4<<20)
	for i := range 100 {
		resp, got := do(t, c, "POST", "/stdin", bytes.NewReader(body))
		if resp.StatusCode != 409 || got != "no stdin" || !resp.Close {
			t.Fatalf("request %d: %d %q, close %v", i, resp.StatusCode, got, resp.Close)
		}
	}
}

// TestContextEndsWhenBodyBreaks checks that a request's context is done when its client goes
// away in the middle of its body, and when it has sent all of its body's bytes but the
// handler read no further than those.
func TestContextEndsWhenBodyBreaks(t *testing.T) {
	ended := make(chan string, 1)
	_, sock := serve(t, func(w *ResponseWriter, r *Request) {
		var b [5]byte
		_, err := io.ReadFull(r.Body, b[:])
		if r.Path == "/whole" && err != nil {
			ended <- fmt.Sprintf("the body's bytes: %v", err)
			return
		}
		select {
		case <-r.Context().Done():
			ended <- "cancelled"
		case <-time.After(10 * time.Second):
			ended <- "not cancelled within 10 s"
		}
	})
	for _, request := range []string{
		"POST /cut HTTP/1.1\r\nContent-Length: 100\r\n\r\nabc",
		"POST /cut HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n64\r\nabc",
		"POST /whole HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
	} {
		conn, err := net.Dial("unix", sock)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := io.WriteString(conn, request); err != nil {
			t.Fatal(err)
		}
		time.Sleep(50 * time.Millisecond)
		conn.Close()
		if got := <-ended; got != "cancelled" {
			t.Errorf("%.50q, the client gone: %s", request, got)
		}
	}
}
