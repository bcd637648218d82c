package proxy

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/netip"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/net/websocket"
)

// Every backend is an httptest server on 127.0.0.1; the resolver is a table.

// guard bounds waits that would otherwise hang the test when the proxy buffers what it
// should stream. It is a deadlock guard, not a timing assertion.
const guard = 60 * time.Second

type fakeResolver struct {
	mu      sync.Mutex
	routes  map[routeID]Target
	stopped map[string]bool
	err     error
}

func newResolver() *fakeResolver {
	return &fakeResolver{routes: map[routeID]Target{}, stopped: map[string]bool{}}
}

func (f *fakeResolver) Resolve(sandbox string, port int) (Target, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.err != nil {
		return Target{}, f.err
	}
	if f.stopped[sandbox] {
		return Target{}, fmt.Errorf("sandbox %q: %w", sandbox, ErrStopped)
	}
	t, ok := f.routes[routeID{sandbox, port}]
	if !ok {
		return Target{}, fmt.Errorf("sandbox %q port %d: %w", sandbox, port, ErrNotFound)
	}
	return t, nil
}

func (f *fakeResolver) set(sandbox string, port int, t Target) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.routes[routeID{sandbox, port}] = t
}

func newToken(t testing.TB) string {
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

// backend starts a loopback HTTP server and returns it with its address.
func backend(t testing.TB, h http.Handler) (*httptest.Server, netip.AddrPort) {
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return srv, netip.MustParseAddrPort(srv.Listener.Addr().String())
}

// front starts the proxy on a loopback listener.
func front(t testing.TB, r Resolver) (*Proxy, *httptest.Server) {
	p, err := New(Config{Domain: "Example.Test."}, r)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(p)
	t.Cleanup(func() {
		srv.Close()
		p.Close()
	})
	return p, srv
}

// do sends a request to the proxy with the given Host, never following redirects.
func do(t testing.TB, fr *httptest.Server, method, host, target string, body io.Reader, hdr http.Header) *http.Response {
	t.Helper()
	req, err := http.NewRequest(method, fr.URL+target, body)
	if err != nil {
		t.Fatal(err)
	}
	req.Host = host
	for k, v := range hdr {
		req.Header[k] = v
	}
	c := &http.Client{
		Transport:     fr.Client().Transport,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s %s (Host %s): %v", method, target, host, err)
	}
	return resp
}

// get returns a response's status and body.
func get(t testing.TB, fr *httptest.Server, host, target string, hdr http.Header) (int, string, *http.Response) {
	t.Helper()
	resp := do(t, fr, http.MethodGet, host, target, nil, hdr)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(b), resp
}

// named answers with its name and the request's path and query.
func named(name string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "%s %s", name, r.URL.RequestURI())
	})
}

func TestNew(t *testing.T) {
	r := newResolver()
	for _, d := range []string{"", ".", "exa mple.test", "a..b", "example.test:80"} {
		if _, err := New(Config{Domain: d}, r); err == nil {
			t.Errorf("New(domain %q) accepted", d)
		}
	}
	if _, err := New(Config{Domain: "example.test"}, nil); err == nil {
		t.Error("New without a resolver accepted")
	}
}

func TestRouting(t *testing.T) {
	r := newResolver()
	tok := newToken(t)
	long := strings.Repeat("long-", 12) + "box" // 63 chars, the longest id
	hexID := "web-" + newToken(t)               // an id that ends like a token
	for _, name := range []string{"box", "my-box-2", long, hexID, "api", "api-" + tok} {
		_, addr := backend(t, named(name))
		r.set(name, 3000, Target{Addr: addr, Public: true})
	}
	_, addr := backend(t, named("box:8080"))
	r.set("box", 8080, Target{Addr: addr, Public: true})
	_, fr := front(t, r)

	for host, want := range map[string]string{
		"3000-box.example.test":                       "box /p?q=1",
		"8080-box.example.test":                       "box:8080 /p?q=1",
		"3000-my-box-2.example.test":                  "my-box-2 /p?q=1",
		"3000-" + long + ".example.test":              long + " /p?q=1",
		"3000-BOX.Example.TEST:8443":                  "box /p?q=1",
		"3000-box.example.test.":                      "box /p?q=1",
		"3000-" + hexID + ".example.test":             hexID + " /p?q=1", // no sandbox "web": read as one id
		"3000-api-" + tok + ".example.test":           "api /p?q=1",      // both exist: tokened reading first
		"3000-box-" + newToken(t) + ".example.test":   "box /p?q=1",      // public: any token is ignored
		"3000-my-box-2-" + tok + ".example.test:8080": "my-box-2 /p?q=1",
	} {
		code, body, _ := get(t, fr, host, "/p?q=1", nil)
		if code != http.StatusOK || body != want {
			t.Errorf("Host %s: %d %q; want 200 %q", host, code, body, want)
		}
	}
}

func TestTokens(t *testing.T) {
	r := newResolver()
	tok := newToken(t)
	_, addr := backend(t, named("box"))
	r.set("box", 3000, Target{Addr: addr, Token: tok})
	r.set("pub", 3000, Target{Addr: addr, Public: true})
	r.set("broken", 3000, Target{Addr: addr})   // not public and no token: opens for nobody
	long := strings.Repeat("long-", 12) + "box" // 63 chars: too long for a tokened DNS label
	r.set(long, 3000, Target{Addr: addr, Token: tok})
	_, fr := front(t, r)
	host := "3000-box.example.test"
	wrong := newToken(t)
	hdr := func(kv ...string) http.Header {
		h := http.Header{}
		for i := 0; i < len(kv); i += 2 {
			h.Add(kv[i], kv[i+1])
		}
		return h
	}
	cookie := func(v string) string { return "nsbox_token_3000=" + v }

	for _, c := range []struct {
		what   string
		host   string
		target string
		hdr    http.Header
		code   int
	}{
		{"no token", host, "/", nil, http.StatusUnauthorized},
		{"header", host, "/", hdr(TokenHeader, tok), http.StatusOK},
		{"wrong header", host, "/", hdr(TokenHeader, wrong), http.StatusForbidden},
		{"token in host", "3000-box-" + tok + ".example.test", "/", nil, http.StatusOK},
		{"token in host, uppercase", "3000-BOX-" + strings.ToUpper(tok) + ".EXAMPLE.test:80", "/", nil, http.StatusOK},
		{"wrong token in host", "3000-box-" + wrong + ".example.test", "/", nil, http.StatusForbidden},
		{"cookie", host, "/", hdr("Cookie", cookie(tok)), http.StatusOK},
		{"wrong cookie", host, "/", hdr("Cookie", cookie(wrong)), http.StatusForbidden},
		{"cookie of another port", host, "/", hdr("Cookie", "nsbox_token_8080="+tok), http.StatusUnauthorized},
		{"stale cookie, right header", host, "/", hdr("Cookie", cookie(wrong), TokenHeader, tok), http.StatusOK},
		{"right cookie, wrong header", host, "/", hdr("Cookie", cookie(tok), TokenHeader, wrong), http.StatusForbidden},
		{"wrong query", host, "/?nsbox_token=" + wrong, nil, http.StatusForbidden},
		{"wrong query, right cookie", host, "/?nsbox_token=" + wrong, hdr("Cookie", cookie(tok)), http.StatusForbidden},
		{"token of another port's length", host, "/", hdr(TokenHeader, tok[:31]), http.StatusForbidden},
		{"long id, header", "3000-" + long + ".example.test", "/", hdr(TokenHeader, tok), http.StatusOK},
		{"long id, cookie", "3000-" + long + ".example.test", "/", hdr("Cookie", cookie(tok)), http.StatusOK},
		{"long id, no token", "3000-" + long + ".example.test", "/", nil, http.StatusUnauthorized},
		{"public", "3000-pub.example.test", "/", nil, http.StatusOK},
		{"public, wrong token", "3000-pub.example.test", "/?nsbox_token=" + wrong, hdr(TokenHeader, wrong), http.StatusOK},
		{"no token configured", "3000-broken.example.test", "/", hdr(TokenHeader, ""), http.StatusUnauthorized},
		{"no token configured, some token", "3000-broken.example.test", "/", hdr(TokenHeader, tok), http.StatusForbidden},
	} {
		code, body, _ := get(t, fr, c.host, c.target, c.hdr)
		if code != c.code {
			t.Errorf("%s: %d %q; want %d", c.what, code, body, c.code)
		}
		if code == http.StatusUnauthorized || code == http.StatusForbidden {
			for _, s := range []string{TokenHeader, "?nsbox_token=", "3000-box-{token}.example.test"} {
				if c.host == host && !strings.Contains(body, s) {
					t.Errorf("%s: page %q does not say %q", c.what, body, s)
				}
			}
		}
	}

	// A token in the query is answered with a redirect to the same address without it,
	// and a cookie for this host; the cookie then opens the port.
	resp := do(t, fr, http.MethodGet, host, "/a/b?x=1&nsbox_token="+tok+"&y=%20", nil, nil)
	resp.Body.Close()
	if resp.StatusCode != http.StatusFound || resp.Header.Get("Location") != "/a/b?x=1&y=%20" {
		t.Fatalf("query token: %d Location %q; want 302 to /a/b?x=1&y=%%20", resp.StatusCode, resp.Header.Get("Location"))
	}
	cookies := resp.Cookies()
	if len(cookies) != 1 {
		t.Fatalf("query token: cookies %v; want one", cookies)
	}
	if c := cookies[0]; c.Name != "nsbox_token_3000" || c.Value != tok || c.Path != "/" || !c.HttpOnly ||
		c.SameSite != http.SameSiteLaxMode || c.Domain != "" {
		t.Errorf("query token: cookie %+v; want nsbox_token_3000, host-only, path /, HttpOnly, SameSite=Lax", c)
	}
	code, body, _ := get(t, fr, host, resp.Header.Get("Location"), hdr("Cookie", cookies[0].String()))
	if code != http.StatusOK || body != "box /a/b?x=1&y=%20" {
		t.Errorf("after the redirect: %d %q", code, body)
	}

	// A path that looks like another host stays on this one.
	resp = do(t, fr, http.MethodGet, host, "//evil.test/x?nsbox_token="+tok, nil, nil)
	resp.Body.Close()
	if loc := resp.Header.Get("Location"); resp.StatusCode != http.StatusFound || loc != "/evil.test/x" {
		t.Errorf("redirect for //evil.test/x: %d %q", resp.StatusCode, loc)
	}

	// A POST or a WebSocket handshake cannot follow a redirect: the token is taken and
	// the request goes on without it.
	resp = do(t, fr, http.MethodPost, host, "/form?nsbox_token="+tok+"&k=v", strings.NewReader("x"), nil)
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || string(b) != "box /form?k=v" {
		t.Errorf("POST with query token: %d %q", resp.StatusCode, b)
	}
}

func TestTokenNeverReachesBackend(t *testing.T) {
	dumps := make(chan string, 1)
	_, addr := backend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		d, err := httputil.DumpRequest(r, true)
		if err != nil {
			t.Error(err)
		}
		dumps <- string(d)
	}))
	r := newResolver()
	tok := newToken(t)
	r.set("box", 3000, Target{Addr: addr, Token: tok})
	r.set("pub", 3000, Target{Addr: addr, Public: true})
	_, fr := front(t, r)

	other := newToken(t) // a token given to a public port is kept back too
	for _, c := range []struct {
		host, target string
		hdr          http.Header
		want         []string // what the backend must see
	}{
		{"3000-box-" + tok + ".example.test:8080", "/x?nsbox_token=" + tok + "&a=1", http.Header{
			TokenHeader: {tok},
			"Cookie":    {"theme=dark; nsbox_token_3000=" + tok + "; sid=1", "nsbox_token_9=" + tok},
			"Origin":    {"http://3000-box-" + tok + ".example.test:8080"},
			"Referer":   {"http://3000-box-" + tok + ".example.test:8080/page"},
		}, []string{
			"POST /x?a=1 ", "Cookie: theme=dark; sid=1\r\n", "Origin: http://3000-box.example.test:8080\r\n",
			"Referer: http://3000-box.example.test:8080/page\r\n", "X-Forwarded-Host: 3000-box.example.test:8080\r\n",
			"X-Forwarded-Proto: http\r\n", "X-Forwarded-For: 127.0.0.1\r\n", "Host: " + addr.String() + "\r\n",
		}},
		{"3000-box.example.test", "/y", http.Header{
			"Cookie":  {"nsbox_token_3000=" + tok},
			"Referer": {"http://3000-box.example.test/?nsbox_token=" + tok},
		}, []string{"POST /y ", "X-Forwarded-Host: 3000-box.example.test\r\n"}},
		// A page of another sandbox's preview calls this one: its tokened origin must not
		// reach this sandbox either.
		{"3000-pub.example.test", "/w", http.Header{
			"Origin":  {"http://8080-other-" + other + ".example.test"},
			"Referer": {"http://8080-other-" + other + ".example.test/app"},
		}, []string{"POST /w ", "Origin: http://8080-other.example.test\r\n", "Referer: http://8080-other.example.test/app\r\n"}},
		{"3000-pub-" + other + ".example.test", "/z?nsbox_token=" + other, http.Header{
			TokenHeader: {other},
			"Origin":    {"http://3000-pub-" + other + ".example.test"},
		}, []string{"POST /z ", "Origin: http://3000-pub.example.test\r\n", "X-Forwarded-Host: 3000-pub.example.test\r\n"}},
	} {
		resp := do(t, fr, http.MethodPost, c.host, c.target, strings.NewReader("body"), c.hdr)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("Host %s: %d", c.host, resp.StatusCode)
		}
		d := <-dumps
		for _, secret := range []string{tok, other, "nsbox_token", TokenHeader} {
			if strings.Contains(strings.ToLower(d), strings.ToLower(secret)) {
				t.Errorf("the backend saw %q:\n%s", secret, d)
			}
		}
		for _, s := range c.want {
			if !strings.Contains(d, s) {
				t.Errorf("the backend did not see %q:\n%s", s, d)
			}
		}
	}
}

func TestErrorPages(t *testing.T) {
	r := newResolver()
	_, addr := backend(t, named("box"))
	r.set("box", 3000, Target{Addr: addr, Public: true})
	r.set("off", 3000, Target{Addr: addr, Public: true})
	r.stopped["off"] = true
	// A port nothing listens on: a listener the test opens and closes.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := netip.MustParseAddrPort(l.Addr().String())
	l.Close()
	r.set("down", 3000, Target{Addr: closed, Public: true})
	// A server that closes every connection without answering.
	l, err = net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	r.set("rude", 3000, Target{Addr: netip.MustParseAddrPort(l.Addr().String()), Public: true})
	_, fr := front(t, r)

	for _, c := range []struct {
		host string
		code int
		says string
	}{
		{"example.test", http.StatusNotFound, "http://{port}-{sandbox}.example.test/"},
		{"www.example.test", http.StatusNotFound, "not a sandbox preview"},
		{"3000-box.other.test", http.StatusNotFound, "not a sandbox preview"},
		{"127.0.0.1:8080", http.StatusNotFound, "not a sandbox preview"},
		{"3000-nobox.example.test", http.StatusNotFound, `no sandbox "nobox" with port 3000 exposed`},
		{"4000-box.example.test", http.StatusNotFound, `no sandbox "box" with port 4000 exposed`},
		{"4000-box-" + newToken(t) + ".example.test", http.StatusNotFound, `no sandbox "box" with port 4000 exposed`},
		{"3000-off.example.test", http.StatusServiceUnavailable, `Sandbox "off" is not running`},
		{"3000-down.example.test", http.StatusBadGateway, `Nothing answered on port 3000 in sandbox "down"`},
		{"3000-rude.example.test", http.StatusBadGateway, `Nothing answered on port 3000 in sandbox "rude"`},
	} {
		code, body, resp := get(t, fr, c.host, "/", nil)
		if code != c.code || !strings.Contains(body, c.says) || resp.Header.Get("X-Nsbox-Proxy-Error") == "" ||
			!strings.HasPrefix(resp.Header.Get("Content-Type"), "text/plain") {
			t.Errorf("Host %s: %d %q (%v); want %d, text saying %q", c.host, code, body, resp.Header, c.code, c.says)
		}
		// Browsers get the same as a small HTML page.
		code, body, resp = get(t, fr, c.host, "/", http.Header{"Accept": {"text/html,*/*"}})
		if code != c.code || !strings.Contains(body, "<h1>") || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/html") {
			t.Errorf("Host %s, HTML: %d %q", c.host, code, body)
		}
	}

	r.mu.Lock()
	r.err = errors.New("database on fire")
	r.mu.Unlock()
	code, body, _ := get(t, fr, "3000-box.example.test", "/", nil)
	if code != http.StatusInternalServerError || strings.Contains(body, "fire") {
		t.Errorf("resolver failure: %d %q; want 500 without the internal error", code, body)
	}
}

func TestStreamedBodies(t *testing.T) {
	const chunk = 1 << 20
	firstIn := make(chan struct{})
	gotPart1 := make(chan struct{})
	_, addr := backend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/upload":
			// Reads the first megabyte while the client is still sending.
			h := sha256.New()
			if _, err := io.CopyN(h, r.Body, chunk); err != nil {
				t.Error(err)
				return
			}
			close(firstIn)
			n, err := io.Copy(h, r.Body)
			if err != nil {
				t.Error(err)
			}
			fmt.Fprintf(w, "%d %x", n+chunk, h.Sum(nil))
		case "/download":
			fmt.Fprint(w, "part1;")
			w.(http.Flusher).Flush()
			select {
			case <-gotPart1:
			case <-time.After(guard):
				t.Error("the client never saw part 1 before the response ended")
			}
			fmt.Fprint(w, "part2")
		}
	}))
	r := newResolver()
	r.set("box", 3000, Target{Addr: addr, Public: true})
	_, fr := front(t, r)

	// Upload: 1 MiB, then wait until the backend has it, then 15 more.
	pr, pw := io.Pipe()
	want := sha256.New()
	go func() {
		buf := make([]byte, chunk)
		write := func() bool {
			if _, err := rand.Read(buf); err != nil {
				pw.CloseWithError(err)
				return false
			}
			want.Write(buf)
			if _, err := pw.Write(buf); err != nil {
				return false
			}
			return true
		}
		if !write() {
			return
		}
		select {
		case <-firstIn:
		case <-time.After(guard):
			pw.CloseWithError(errors.New("the backend never got the first megabyte while the upload went on"))
			return
		}
		for range 15 {
			if !write() {
				return
			}
		}
		pw.Close()
	}()
	resp := do(t, fr, http.MethodPut, "3000-box.example.test", "/upload", pr, nil)
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if w := fmt.Sprintf("%d %x", 16*chunk, want.Sum(nil)); resp.StatusCode != http.StatusOK || string(b) != w {
		t.Errorf("upload: %d %q; want %q", resp.StatusCode, b, w)
	}

	// Download: part 1 arrives while the backend still holds part 2.
	resp = do(t, fr, http.MethodGet, "3000-box.example.test", "/download", nil, nil)
	defer resp.Body.Close()
	if resp.ContentLength != -1 {
		t.Errorf("download: Content-Length %d; want chunked", resp.ContentLength)
	}
	got := make([]byte, len("part1;"))
	if _, err := io.ReadFull(resp.Body, got); err != nil || string(got) != "part1;" {
		t.Fatalf("download: %q, %v", got, err)
	}
	close(gotPart1)
	rest, err := io.ReadAll(resp.Body)
	if err != nil || string(rest) != "part2" {
		t.Errorf("download rest: %q, %v", rest, err)
	}
}

func TestServerSentEvents(t *testing.T) {
	acks := make(chan struct{})
	_, addr := backend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		w.Header().Set("Content-Length", "1000") // a length must not make the proxy hold events back
		for i := range 3 {
			fmt.Fprintf(w, "id: %d\ndata: event %d\n\n", i, i)
			w.(http.Flusher).Flush()
			select {
			case <-acks:
			case <-time.After(guard):
				t.Errorf("event %d never reached the client", i)
				return
			}
		}
	}))
	r := newResolver()
	tok := newToken(t)
	r.set("box", 3000, Target{Addr: addr, Token: tok})
	_, fr := front(t, r)

	resp := do(t, fr, http.MethodGet, "3000-box.example.test", "/events", nil, http.Header{TokenHeader: {tok}})
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "text/event-stream" {
		t.Fatalf("events: %d %v", resp.StatusCode, resp.Header)
	}
	br := bufio.NewReader(resp.Body)
	for i := range 3 {
		var ev strings.Builder
		for {
			line, err := br.ReadString('\n')
			if err != nil {
				t.Fatalf("event %d: %q, %v", i, ev.String(), err)
			}
			if line == "\n" {
				break
			}
			ev.WriteString(line)
		}
		if w := fmt.Sprintf("id: %d\ndata: event %d\n", i, i); ev.String() != w {
			t.Errorf("event %d: %q; want %q", i, ev.String(), w)
		}
		acks <- struct{}{}
	}
}

// dialWS opens a WebSocket through the proxy to the given preview host.
func dialWS(t testing.TB, fr *httptest.Server, host string, hdr http.Header) *websocket.Conn {
	t.Helper()
	cfg, err := websocket.NewConfig("ws://"+host+"/echo", "http://"+host)
	if err != nil {
		t.Fatal(err)
	}
	cfg.Header = hdr
	c, err := net.Dial("tcp", fr.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	ws, err := websocket.NewClient(cfg, c)
	if err != nil {
		c.Close()
		t.Fatalf("WebSocket to %s: %v", host, err)
	}
	t.Cleanup(func() { ws.Close() })
	return ws
}

func TestWebSocket(t *testing.T) {
	var (
		mu   sync.Mutex
		seen []string
	)
	_, addr := backend(t, websocket.Handler(func(ws *websocket.Conn) {
		d, _ := httputil.DumpRequest(ws.Request(), false)
		mu.Lock()
		seen = append(seen, string(d))
		mu.Unlock()
		for {
			var msg string
			if websocket.Message.Receive(ws, &msg) != nil || websocket.Message.Send(ws, msg) != nil {
				return
			}
		}
	}))
	r := newResolver()
	tok := newToken(t)
	r.set("box", 3000, Target{Addr: addr, Token: tok})
	p, fr := front(t, r)

	// Without a token the handshake is refused.
	cfg, _ := websocket.NewConfig("ws://3000-box.example.test/echo", "http://3000-box.example.test")
	c, err := net.Dial("tcp", fr.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	if ws, err := websocket.NewClient(cfg, c); err == nil {
		ws.Close()
		t.Error("WebSocket without a token was accepted")
	}
	c.Close()

	for _, ws := range []*websocket.Conn{
		dialWS(t, fr, "3000-box.example.test", http.Header{TokenHeader: {tok}}),
		dialWS(t, fr, "3000-box-"+tok+".example.test:8080", nil),
	} {
		for i := range 3 {
			msg := fmt.Sprintf("hello %d %s", i, strings.Repeat("x", i*70000))
			if err := websocket.Message.Send(ws, msg); err != nil {
				t.Fatal(err)
			}
			var got string
			if err := websocket.Message.Receive(ws, &got); err != nil || got != msg {
				t.Fatalf("echo %d: %d bytes, %v; want %d bytes", i, len(got), err, len(msg))
			}
		}
	}
	mu.Lock()
	for _, d := range seen {
		if strings.Contains(d, tok) {
			t.Errorf("the backend saw the token in the handshake:\n%s", d)
		}
	}
	mu.Unlock()

	// Forget cuts a WebSocket that is open through the proxy.
	ws := dialWS(t, fr, "3000-box.example.test", http.Header{TokenHeader: {tok}})
	if err := websocket.Message.Send(ws, "ping"); err != nil {
		t.Fatal(err)
	}
	var got string
	if err := websocket.Message.Receive(ws, &got); err != nil {
		t.Fatal(err)
	}
	p.Forget("box", 3000)
	_ = ws.SetReadDeadline(time.Now().Add(guard))
	err = websocket.Message.Receive(ws, &got)
	var ne net.Error
	if err == nil || errors.As(err, &ne) && ne.Timeout() {
		t.Errorf("WebSocket after Forget: %q, %v; want it closed", got, err)
	}
}

func TestForget(t *testing.T) {
	var (
		mu           sync.Mutex
		opened       int
		closedSignal = make(chan struct{}, 16)
	)
	srv := httptest.NewUnstartedServer(named("box"))
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		switch s {
		case http.StateNew:
			mu.Lock()
			opened++
			mu.Unlock()
		case http.StateClosed:
			closedSignal <- struct{}{}
		}
	}
	srv.Start()
	t.Cleanup(srv.Close)
	addr := netip.MustParseAddrPort(srv.Listener.Addr().String())
	r := newResolver()
	r.set("box", 3000, Target{Addr: addr, Public: true})
	r.set("box", 3001, Target{Addr: addr, Public: true}) // the same address: the test's one backend
	_, other := backend(t, named("other"))
	r.set("other", 3000, Target{Addr: other, Public: true})
	p, fr := front(t, r)

	conns := func() int {
		mu.Lock()
		defer mu.Unlock()
		return opened
	}
	hit := func() {
		t.Helper()
		if code, body, _ := get(t, fr, "3000-box.example.test", "/", nil); code != http.StatusOK || body != "box /" {
			t.Fatalf("%d %q", code, body)
		}
	}
	hit()
	hit()
	if n := conns(); n != 1 {
		t.Fatalf("two requests opened %d backend connections; want 1 kept alive", n)
	}
	get(t, fr, "3000-other.example.test", "/", nil)
	p.Forget("other", 0)
	p.Forget("nobox", 3000)
	hit()
	if n := conns(); n != 1 {
		t.Fatalf("forgetting other sandboxes closed this one's connection (%d opened)", n)
	}
	p.Forget("box", 0)
	select {
	case <-closedSignal:
	case <-time.After(guard):
		t.Fatal("Forget did not close the idle backend connection")
	}
	hit()
	if n := conns(); n != 2 {
		t.Fatalf("after Forget: %d connections opened; want a new one", n)
	}
}

func TestConcurrentRequests(t *testing.T) {
	r := newResolver()
	tok := newToken(t)
	names := []string{"a", "b-1", "c-2-3"}
	for _, n := range names {
		_, addr := backend(t, http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
			body, _ := io.ReadAll(req.Body)
			fmt.Fprintf(w, "%s %s %s", n, req.URL.Path, body)
		}))
		r.set(n, 3000, Target{Addr: addr, Token: tok})
	}
	_, fr := front(t, r)

	var wg sync.WaitGroup
	errs := make(chan error, 64*10)
	for g := range 64 {
		wg.Go(func() {
			n := names[g%len(names)]
			for i := range 10 {
				req, _ := http.NewRequest(http.MethodPost, fmt.Sprintf("%s/%d/%d", fr.URL, g, i), strings.NewReader(n))
				req.Host = "3000-" + n + ".example.test"
				req.Header.Set(TokenHeader, tok)
				resp, err := fr.Client().Do(req)
				if err != nil {
					errs <- err
					continue
				}
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if w := fmt.Sprintf("%s /%d/%d %s", n, g, i, n); string(b) != w {
					errs <- fmt.Errorf("%d %q; want %q", resp.StatusCode, b, w)
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

// BenchmarkProxy compares small GET requests through the proxy with the same requests sent
// straight to the backend, both over keep-alive loopback connections.
func BenchmarkProxy(b *testing.B) {
	body := bytes.Repeat([]byte("x"), 1024)
	_, addr := backend(b, http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write(body) }))
	r := newResolver()
	tok := newToken(b)
	r.set("box", 3000, Target{Addr: addr, Token: tok})
	_, fr := front(b, r)
	run := func(b *testing.B, u *url.URL, host string, hdr http.Header) {
		tr := &http.Transport{MaxIdleConnsPerHost: 64}
		defer tr.CloseIdleConnections()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				req := &http.Request{Method: http.MethodGet, URL: u, Host: host, Header: hdr}
				resp, err := tr.RoundTrip(req)
				if err != nil {
					b.Error(err)
					return
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != http.StatusOK {
					b.Errorf("status %d", resp.StatusCode)
					return
				}
			}
		})
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "req/s")
	}
	b.Run("direct", func(b *testing.B) {
		run(b, &url.URL{Scheme: "http", Host: addr.String(), Path: "/"}, addr.String(), http.Header{})
	})
	b.Run("proxy", func(b *testing.B) {
		u, _ := url.Parse(fr.URL + "/")
		run(b, u, "3000-box.example.test", http.Header{TokenHeader: {tok}})
	})
}

// TestCookieIsNotACrossOriginCredential: every preview is on one site, so a page of one
// sandbox could send requests with the browser's cookie to another's; the cookie only counts
// for requests from its own origin and top-level navigations.
func TestCookieIsNotACrossOriginCredential(t *testing.T) {
	_, addr := backend(t, named("box"))
	r := newResolver()
	tok := newToken(t)
	r.set("box", 3000, Target{Addr: addr, Token: tok})
	_, fr := front(t, r)
	cookie := "nsbox_token_3000=" + tok
	for _, c := range []struct {
		hdr  http.Header
		want int
	}{
		{http.Header{"Cookie": {cookie}}, http.StatusOK},
		{http.Header{"Cookie": {cookie}, "Sec-Fetch-Site": {"none"}}, http.StatusOK},
		{http.Header{"Cookie": {cookie}, "Sec-Fetch-Site": {"same-origin"}, "Origin": {"http://3000-box.example.test"}}, http.StatusOK},
		{http.Header{"Cookie": {cookie}, "Sec-Fetch-Site": {"same-site"}}, http.StatusUnauthorized},
		{http.Header{"Cookie": {cookie}, "Origin": {"http://8080-evil.example.test"}}, http.StatusUnauthorized},
		{http.Header{"Cookie": {cookie}, "Origin": {"null"}}, http.StatusUnauthorized},
		// An explicit token is still a token, from anywhere.
		{http.Header{TokenHeader: {tok}, "Origin": {"http://8080-evil.example.test"}}, http.StatusOK},
	} {
		if code, _, _ := get(t, fr, "3000-box.example.test", "/", c.hdr); code != c.want {
			t.Errorf("%v: %d, want %d", c.hdr, code, c.want)
		}
	}
}
