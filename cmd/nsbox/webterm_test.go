package main

import (
	"bufio"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/net/websocket"

	"github.com/nsbox/nsbox/api"
)

// The web terminal (issue 14 item 6) in headless Chromium (Debian's chromium, installed by
// scripts/install-deps.sh), driven over the DevTools protocol from Go: the protocol is JSON over
// a WebSocket, which golang.org/x/net/websocket (already a dependency) speaks.

// chrome is a headless Chromium with one page, driven over the DevTools protocol.
type chrome struct {
	t       *testing.T
	cmd     *exec.Cmd
	ws      *websocket.Conn
	session string // the page's DevTools session

	mu      sync.Mutex
	nextID  int
	replies map[int]chan cdpMessage
}

type cdpMessage struct {
	ID     int             `json:"id,omitempty"`
	Method string          `json:"method,omitempty"`
	Result json.RawMessage `json:"result,omitempty"`
	Error  *struct {
		Message string `json:"message"`
	} `json:"error,omitempty"`
}

// startChrome starts Chromium with a fresh profile and opens a blank page; the test's cleanup
// ends it (its whole process group).
func startChrome(t *testing.T) *chrome {
	t.Helper()
	bin, err := exec.LookPath("chromium")
	if err != nil {
		t.Fatalf("the web terminal's test needs Debian's chromium (scripts/install-deps.sh): %v", err)
	}
	cmd := exec.Command(bin, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
		"--disable-background-networking", "--disable-component-update", "--disable-sync",
		"--user-data-dir="+t.TempDir(), "--remote-debugging-port=0", "--remote-allow-origins=http://127.0.0.1",
		"--ignore-certificate-errors", // the daemon's certificate is signed by the test's own CA
		"about:blank")
	// Its singleton socket and cookie go to a directory of TMPDIR, which the test removes.
	cmd.Env = append(os.Environ(), "TMPDIR="+t.TempDir())
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start chromium: %v", err)
	}
	c := &chrome{t: t, cmd: cmd, replies: map[int]chan cdpMessage{}}
	t.Cleanup(func() {
		if c.ws != nil {
			c.ws.Close()
		}
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		_ = cmd.Wait()
	})
	var lines []string
	lineCh := bufio.NewScanner(stderr)
	endpoint := ""
	for endpoint == "" && lineCh.Scan() {
		line := lineCh.Text()
		lines = append(lines, line)
		if rest, ok := strings.CutPrefix(line, "DevTools listening on "); ok {
			endpoint = strings.TrimSpace(rest)
		}
	}
	if endpoint == "" {
		t.Fatalf("chromium did not open its DevTools endpoint:\n%s", strings.Join(lines, "\n"))
	}
	go func() { // keep draining its log
		for lineCh.Scan() {
		}
	}()
	if c.ws, err = websocket.Dial(endpoint, "", "http://127.0.0.1"); err != nil {
		t.Fatalf("connect to chromium's DevTools: %v", err)
	}
	c.ws.MaxPayloadBytes = 64 << 20
	go c.read()
	var target struct {
		TargetID string `json:"targetId"`
	}
	c.call("", "Target.createTarget", map[string]any{"url": "about:blank"}, &target)
	var attached struct {
		SessionID string `json:"sessionId"`
	}
	c.call("", "Target.attachToTarget", map[string]any{"targetId": target.TargetID, "flatten": true}, &attached)
	c.session = attached.SessionID
	c.call(c.session, "Page.enable", nil, nil)
	// A headless page is not focused by itself: the terminal's keyboard input needs focus.
	c.call(c.session, "Emulation.setFocusEmulationEnabled", map[string]any{"enabled": true}, nil)
	return c
}

// read dispatches the browser's replies; events are not used.
func (c *chrome) read() {
	for {
		var m cdpMessage
		if err := websocket.JSON.Receive(c.ws, &m); err != nil {
			c.mu.Lock()
			for id, ch := range c.replies {
				close(ch)
				delete(c.replies, id)
			}
			c.mu.Unlock()
			return
		}
		if m.ID == 0 {
			continue
		}
		c.mu.Lock()
		ch := c.replies[m.ID]
		delete(c.replies, m.ID)
		c.mu.Unlock()
		if ch != nil {
			ch <- m
		}
	}
}

// call sends one DevTools command (to the browser when session is "") and decodes its result.
func (c *chrome) call(session, method string, params, result any) {
	c.t.Helper()
	c.mu.Lock()
	c.nextID++
	id := c.nextID
	ch := make(chan cdpMessage, 1)
	c.replies[id] = ch
	c.mu.Unlock()
	msg := map[string]any{"id": id, "method": method}
	if params != nil {
		msg["params"] = params
	}
	if session != "" {
		msg["sessionId"] = session
	}
	if err := websocket.JSON.Send(c.ws, msg); err != nil {
		c.t.Fatalf("DevTools %s: %v", method, err)
	}
	m, ok := <-ch
	if !ok {
		c.t.Fatalf("DevTools %s: the browser went away", method)
	}
	if m.Error != nil {
		c.t.Fatalf("DevTools %s: %s", method, m.Error.Message)
	}
	if result != nil {
		if err := json.Unmarshal(m.Result, result); err != nil {
			c.t.Fatalf("DevTools %s: decode %s: %v", method, m.Result, err)
		}
	}
}

// eval evaluates a JavaScript expression in the page (awaiting a promise) into out.
func (c *chrome) eval(expr string, out any) {
	c.t.Helper()
	var r struct {
		Result struct {
			Value json.RawMessage `json:"value"`
		} `json:"result"`
		Exception *struct {
			Text      string `json:"text"`
			Exception struct {
				Description string `json:"description"`
			} `json:"exception"`
		} `json:"exceptionDetails"`
	}
	c.call(c.session, "Runtime.evaluate", map[string]any{"expression": expr, "returnByValue": true, "awaitPromise": true}, &r)
	if r.Exception != nil {
		c.t.Fatalf("evaluate %s: %s %s", expr, r.Exception.Text, r.Exception.Exception.Description)
	}
	if out != nil && len(r.Result.Value) > 0 {
		if err := json.Unmarshal(r.Result.Value, out); err != nil {
			c.t.Fatalf("evaluate %s: decode %s: %v", expr, r.Result.Value, err)
		}
	}
}

func (c *chrome) navigate(url string) {
	c.t.Helper()
	c.call(c.session, "Page.navigate", map[string]any{"url": url}, nil)
}

// typeLine types text and Enter into the focused page, as a keyboard would.
func (c *chrome) typeLine(text string) {
	c.t.Helper()
	c.call(c.session, "Input.insertText", map[string]any{"text": text}, nil)
	for _, typ := range []string{"keyDown", "keyUp"} {
		c.call(c.session, "Input.dispatchKeyEvent", map[string]any{"type": typ, "key": "Enter", "code": "Enter", "windowsVirtualKeyCode": 13, "text": "\r"}, nil)
	}
}

// termState is what the page tells about its terminal (window.nsboxTerminal), and its text.
type termState struct {
	Connected bool   `json:"connected"` // attached, and the scrollback drawn
	ReadOnly  bool   `json:"readOnly"`
	Mode      string `json:"mode"`
	Status    string `json:"status"`
	Rows      int    `json:"rows"`
	Cols      int    `json:"cols"`
	Sent      int    `json:"sent"`
	Alternate bool   `json:"alternate"` // a full-screen program's screen is shown
	Text      string `json:"text"`
}

const termStateJS = `(() => {
	const s = window.nsboxTerminal;
	if (!s) return {status: document.getElementById('status')?.textContent ?? document.readyState};
	const b = s.term.buffer.active, lines = [];
	for (let i = 0; i < b.length; i++) lines.push(b.getLine(i).translateToString(true));
	return {connected: s.connected && !s.replaying, readOnly: s.readOnly, mode: document.getElementById('mode').textContent,
		status: document.getElementById('status').textContent, rows: s.term.rows, cols: s.term.cols,
		sent: window.sentFrames ?? 0, alternate: b.type === 'alternate', text: lines.join('\n')};
})()`

// waitFor polls the page until cond holds; the deadline is a guard against a hang, not a timing
// assertion.
func (c *chrome) waitFor(what string, cond func(termState) bool) termState {
	c.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		var s termState
		c.eval(termStateJS, &s)
		if cond(s) {
			return s
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("the web terminal never showed %s; its state: %+v", what, s)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestWebTerminal(t *testing.T) {
	pki := newTestPKI(t)
	adminFile := filepath.Join(t.TempDir(), "admin-tokens")
	const admin = "web-admin-0123456789"
	if err := os.WriteFile(adminFile, []byte(admin+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	port := freeLoopbackPort(t)
	d := startDaemon(t, "--listen", fmt.Sprintf("tcp://127.0.0.1:%d", port), "--tls-cert", pki.certFile, "--tls-key", pki.keyFile, "--auth-tokens", adminFile)
	r := newRemote(t, fmt.Sprintf("https://127.0.0.1:%d", port), &tls.Config{RootCAs: pki.pool})
	r.expect(admin, "POST", "/v1/sandboxes", api.CreateSandboxRequest{ID: "web"}, http.StatusCreated, `"web"`)
	r.expect(admin, "POST", "/v1/sandboxes/web/sessions", api.CreateSessionRequest{ID: "rw"}, http.StatusCreated, `"permission":"write"`)
	r.expect(admin, "POST", "/v1/sandboxes/web/sessions", api.CreateSessionRequest{ID: "ro", Permission: api.PermissionRead}, http.StatusCreated, `"permission":"read"`)
	mint := func(sid string) api.SessionToken {
		var st api.SessionToken
		if err := json.Unmarshal(r.expect(admin, "POST", "/v1/sandboxes/web/sessions/"+sid+"/tokens", struct{}{}, http.StatusCreated, `"page"`), &st); err != nil {
			t.Fatal(err)
		}
		want := fmt.Sprintf("https://127.0.0.1:%d/ui/terminal?sandbox=web&session=%s#token=%s", port, sid, st.Secret)
		if st.Page != want {
			t.Fatalf("page URL %q, want %q", st.Page, want)
		}
		return st
	}

	// The page is not an API operation (not in the spec): fetched without the spec check.
	plain := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pki.pool}}}
	for path, want := range map[string]string{"/ui/terminal": "terminal.js", "/ui/vendor/xterm.mjs": "Terminal", "/ui/nosuch.js": "no such file"} {
		resp, err := plain.Get(r.base + path)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if !strings.Contains(string(body), want) || (resp.StatusCode == http.StatusOK) != (path != "/ui/nosuch.js") {
			t.Fatalf("GET %s without a token: %d %.200s", path, resp.StatusCode, body)
		}
	}

	c := startChrome(t)
	// Count the input (binary) frames the page sends, from before its own script runs.
	c.call(c.session, "Page.addScriptToEvaluateOnNewDocument", map[string]any{"source": `window.sentFrames = 0;
		const send = WebSocket.prototype.send;
		WebSocket.prototype.send = function (d) { if (typeof d !== 'string') window.sentFrames++; return send.call(this, d); };`}, nil)

	rw := mint("rw")
	c.navigate(rw.Page)
	s := c.waitFor("a connected, writable terminal", func(s termState) bool { return s.Connected })
	if s.ReadOnly || s.Mode != "" {
		t.Fatalf("a write session's page shows read-only: %+v", s)
	}
	var href string
	c.eval("location.href", &href)
	if href != rw.Page {
		t.Fatalf("the page moved to %q", href)
	}

	t.Run("type a command and see its output", func(t *testing.T) {
		c.t = t
		c.typeLine("echo $((6*7))web")
		c.waitFor("the command's output", func(s termState) bool { return strings.Contains(s.Text, "\n42web") })
	})

	t.Run("resizes with the window", func(t *testing.T) {
		c.t = t
		c.call(c.session, "Emulation.setDeviceMetricsOverride", map[string]any{"width": 640, "height": 360, "deviceScaleFactor": 1, "mobile": false}, nil)
		c.waitFor("a smaller terminal", func(n termState) bool { return n.Cols < s.Cols && n.Rows < s.Rows })
		// The page may settle in more than one step (a scrollbar coming and going changes its
		// width): the shell is asked its size again until it answers the page's last one.
		var asked time.Time
		c.waitFor("the shell's size, the page's", func(n termState) bool {
			if strings.Contains(n.Text, fmt.Sprintf("\n%d %d", n.Rows, n.Cols)) {
				return true
			}
			if time.Since(asked) > time.Second {
				c.typeLine("stty size")
				asked = time.Now()
			}
			return false
		})
		c.call(c.session, "Emulation.clearDeviceMetricsOverride", nil, nil)
	})

	t.Run("reload replays the scrollback", func(t *testing.T) {
		c.t = t
		c.call(c.session, "Page.reload", nil, nil)
		c.waitFor("the scrollback after a reload", func(s termState) bool { return s.Connected && strings.Contains(s.Text, "\n42web") })
	})

	t.Run("re-attaching after vim and top types nothing", func(t *testing.T) {
		c.t = t
		// vim asks the terminal for its version, cursor position, background color and
		// capabilities; run live, the page's xterm.js answers it, as it should.
		c.typeLine("TERM=xterm-256color vim -u NONE -N /tmp/vimfile")
		c.waitFor("vim's screen", func(s termState) bool { return s.Alternate && strings.Contains(s.Text, `"/tmp/vimfile" [New]`) })
		c.typeLine(":q!")
		c.waitFor("vim to quit", func(s termState) bool { return !s.Alternate })
		c.typeLine("TERM=xterm-256color top -n 1; head -n 1 > /tmp/typed; echo read-$((1+1))")
		c.waitFor("top's output", func(s termState) bool { return strings.Contains(s.Text, "Tasks:") })
		// Re-attach: the replay holds vim's queries; had the page answered them, the answers
		// would be typed into head, ahead of our line.
		c.call(c.session, "Page.reload", nil, nil)
		c.waitFor("the re-attached terminal", func(s termState) bool { return s.Connected && strings.Contains(s.Text, "Tasks:") })
		c.typeLine("END")
		c.waitFor("head to finish", func(s termState) bool { return strings.Contains(s.Text, "\nread-2") })
		if got := d.sh("web", "cat /tmp/typed"); got != "END\n" {
			t.Fatalf("the shell got %q as input after re-attaching, want only the typed END", got)
		}
	})

	t.Run("a read-only session cannot type", func(t *testing.T) {
		c.t = t
		ro := mint("ro")
		c.navigate(ro.Page)
		s := c.waitFor("a read-only terminal", func(s termState) bool { return s.Connected && s.ReadOnly })
		if s.Mode != "read-only" {
			t.Fatalf("the page does not say read-only: %+v", s)
		}
		c.typeLine("echo typed-in-ro")
		if s := c.waitFor("the page after typing", func(termState) bool { return true }); s.Sent != 0 || strings.Contains(s.Text, "typed-in-ro") {
			t.Fatalf("a read-only page sent %d frames: %+v", s.Sent, s)
		}
	})

	t.Run("a close frame's code comes back", func(t *testing.T) {
		c.t = t
		var closed struct {
			Code  int  `json:"code"`
			Clean bool `json:"clean"`
		}
		c.eval(`new Promise((resolve) => {
			const ws = new WebSocket(location.origin.replace('http', 'ws') + '/v1/sandboxes/web/sessions/ro/terminal',
				['nsbox.terminal', 'nsbox.token.' + new URLSearchParams(location.hash.slice(1)).get('token')]);
			ws.onopen = () => ws.close(4001, 'bye');
			ws.onclose = (e) => resolve({code: e.code, clean: e.wasClean});
		})`, &closed)
		if closed.Code != 4001 || !closed.Clean {
			t.Fatalf("closed with %+v, want 4001, clean", closed)
		}
	})
}
