package main

import (
	"context"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"strings"
	"testing"

	"golang.org/x/net/websocket"

	"github.com/nsbox/nsbox/api"
	"github.com/nsbox/nsbox/client"
)

// dialTerminal opens a raw WebSocket to a session's terminal over the daemon's socket.
func dialTerminal(t *testing.T, d *testDaemon, id, sid string) *websocket.Conn {
	t.Helper()
	conn, err := net.Dial("unix", d.socket)
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := websocket.NewConfig("ws://nsbox/v1/sandboxes/"+id+"/sessions/"+sid+"/terminal", "http://localhost")
	if err != nil {
		t.Fatal(err)
	}
	ws, err := websocket.NewClient(cfg, conn)
	if err != nil {
		conn.Close()
		t.Fatalf("attach to %s/%s: %v", id, sid, err)
	}
	return ws
}

// closeCode reads frames until the server's close frame and returns its code.
func closeCode(t *testing.T, ws *websocket.Conn) int {
	t.Helper()
	for {
		fr, err := ws.NewFrameReader()
		if err != nil {
			t.Fatalf("the connection ended without a close frame: %v", err)
		}
		payload, err := io.ReadAll(fr)
		if err != nil {
			t.Fatal(err)
		}
		if fr.PayloadType() == websocket.CloseFrame {
			if len(payload) < 2 {
				t.Fatalf("a close frame without a code: %q", payload)
			}
			return int(binary.BigEndian.Uint16(payload))
		}
	}
}

// TestTerminalErrorsAndClose (issue 17 item 7): a refused attach is the daemon's typed error,
// in the SDK and the CLI; a client's close code comes back; the end of a session closes 1000.
func TestTerminalErrorsAndClose(t *testing.T) {
	d := startDaemon(t)
	d.create(api.CreateSandboxRequest{ID: "tt"})
	d.sh("tt", "true")
	ctx := context.Background()
	if _, err := d.client.CreateSession(ctx, "tt", api.CreateSessionRequest{ID: "plain", Shell: "sh"}); err != nil {
		t.Fatal(err)
	}
	sdk := client.New(d.socket)
	for _, c := range []struct{ id, sid, code, msg string }{
		{"nosuch", "default", api.CodeNotFound, `sandbox "nosuch"`},
		{"tt", "nosuch", api.CodeNotFound, `"nosuch"`},
		{"tt", "plain", api.CodeConflict, "terminal"},
	} {
		_, err := sdk.AttachTerminal(ctx, c.id, c.sid, client.TerminalOptions{})
		var apiErr *api.Error
		if !errors.As(err, &apiErr) || apiErr.Code != c.code || !strings.Contains(apiErr.Message, c.msg) {
			t.Errorf("AttachTerminal(%s, %s) = %v, want an *api.Error %s with %q", c.id, c.sid, err, c.code, c.msg)
		}
		_, stderr, code := d.cli("", "attach", "-s", c.sid, c.id)
		if code == 0 || !strings.Contains(stderr, apiErr.Message) || strings.Contains(stderr, "bad status") {
			t.Errorf("nsbox attach -s %s %s: exit %d, stderr %q; want the daemon's message %q", c.sid, c.id, code, stderr, apiErr.Message)
		}
	}

	ws := dialTerminal(t, d, "tt", "default")
	if err := ws.WriteClose(4001); err != nil {
		t.Fatal(err)
	}
	if got := closeCode(t, ws); got != 4001 {
		t.Errorf("closed with 4001, the server answered %d", got)
	}
	ws.Close()

	if _, err := d.client.CreateSession(ctx, "tt", api.CreateSessionRequest{ID: "short"}); err != nil {
		t.Fatal(err)
	}
	ws = dialTerminal(t, d, "tt", "short")
	defer ws.Close()
	if err := d.client.DeleteSession(ctx, "tt", "short"); err != nil {
		t.Fatal(err)
	}
	if got := closeCode(t, ws); got != 1000 {
		t.Errorf("the session ended; the server closed with %d, want 1000", got)
	}
}

// TestTerminalReplayAsksNothing (issue 17 item 2): vim asks the terminal it runs on for its
// version, cursor position and colors; re-attaching after it, the replay carries none of those
// queries (a terminal would answer them into the shell), while the live output had them.
func TestTerminalReplayAsksNothing(t *testing.T) {
	d := startDaemon(t)
	d.create(api.CreateSandboxRequest{ID: "vim"})
	d.sh("vim", "true")
	ctx := context.Background()
	sdk := client.New(d.socket)
	live, err := sdk.AttachTerminal(ctx, "vim", "default", client.TerminalOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer live.Close()
	if err := live.Input([]byte("TERM=xterm-256color vim -u NONE -N /tmp/f\r")); err != nil {
		t.Fatal(err)
	}
	seen := readTerminalUntil(t, live, `"/tmp/f" [New]`)
	if err := live.Input([]byte(":q!\r")); err != nil {
		t.Fatal(err)
	}
	seen += readTerminalUntil(t, live, "\x1b[?1049l") // vim left its screen
	queries := []string{"\x1b[>c", "\x1b[6n", "\x1b]11;?"}
	for _, q := range queries[:2] {
		if !strings.Contains(seen, q) {
			t.Fatalf("vim did not ask %q live; the test shows nothing: %q", q, seen)
		}
	}

	again, err := sdk.AttachTerminal(ctx, "vim", "default", client.TerminalOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer again.Close()
	var replay strings.Builder
	for {
		out, notice, err := again.Read()
		if err != nil {
			t.Fatalf("read the replay: %v", err)
		}
		if notice != nil && notice.Type == api.TerminalLive {
			break
		}
		replay.Write(out)
	}
	if !strings.Contains(replay.String(), "vim -u NONE") || !strings.Contains(replay.String(), "\x1b[?1049h") {
		t.Fatalf("the replay lacks vim's run: %q", replay.String())
	}
	for _, q := range queries {
		if strings.Contains(replay.String(), q) {
			t.Errorf("the replay asks the terminal %q: %q", q, replay.String())
		}
	}
}
