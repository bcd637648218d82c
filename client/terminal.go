package client

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"

	"golang.org/x/net/websocket"

	"github.com/nsbox/nsbox/api"
	"github.com/nsbox/nsbox/api/httpapi"
)

// Terminal is an attached session terminal.
type Terminal struct {
	ws *websocket.Conn
}

// TerminalOptions are where an attached terminal's reads start.
type TerminalOptions struct {
	// Cursor: the scrollback after this cursor (a cursor the terminal gave earlier); nil: the
	// recent scrollback.
	Cursor *int64
}

// AttachTerminal attaches to a bash session's terminal. Reads start with the scrollback that
// opts names. A refused attach comes back as the daemon's
// *api.Error: not found (no such sandbox or session), conflict (the session has no terminal:
// an sh session), permission denied, and so on.
func (c *Client) AttachTerminal(ctx context.Context, id, sid string, opts TerminalOptions) (*Terminal, error) {
	if c.dial == nil {
		return nil, errors.New("this client cannot open WebSockets (made with NewWithHTTPClient)")
	}
	raw, err := c.dial(ctx)
	if err != nil {
		if ctx.Err() != nil {
			return nil, fmt.Errorf("attach to %s/%s: %w", id, sid, ctx.Err())
		}
		return nil, fmt.Errorf("%w: %w", ErrUnreachable, err)
	}
	u := "ws" + strings.TrimPrefix(c.base, "http") + sessionsPath(id, sid) + "/terminal"
	if opts.Cursor != nil {
		u += fmt.Sprintf("?cursor=%d", *opts.Cursor)
	}
	cfg, err := websocket.NewConfig(u, "http://localhost")
	if err != nil {
		raw.Close()
		return nil, fmt.Errorf("attach to %s/%s: %w", id, sid, err)
	}
	c.authorize(cfg.Header)
	conn := &handshakeConn{Conn: raw, recording: true}
	stop := context.AfterFunc(ctx, func() { raw.Close() })
	ws, err := websocket.NewClient(cfg, conn)
	canceled := !stop()
	conn.recording = false
	if err == nil && !canceled {
		return &Terminal{ws: ws}, nil
	}
	defer raw.Close()
	if canceled {
		return nil, fmt.Errorf("attach to %s/%s: %w", id, sid, ctx.Err())
	}
	if errors.Is(err, websocket.ErrBadStatus) {
		// x/net/websocket says only "bad status": read the daemon's answer again, with its body.
		if resp, rerr := http.ReadResponse(bufio.NewReader(io.MultiReader(&conn.read, raw)), nil); rerr == nil {
			defer resp.Body.Close()
			return nil, fmt.Errorf("attach to %s/%s: %w", id, sid, httpapi.ReadError(resp))
		}
	}
	return nil, fmt.Errorf("attach to %s/%s: %w", id, sid, err)
}

// handshakeConn keeps what a WebSocket handshake reads while recording.
type handshakeConn struct {
	net.Conn
	recording bool
	read      bytes.Buffer
}

func (c *handshakeConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if c.recording {
		c.read.Write(p[:n])
	}
	return n, err
}

// Read returns the next terminal output (notice nil) or notice (output nil).
func (t *Terminal) Read() (output []byte, notice *api.TerminalEvent, err error) {
	var f httpapi.TerminalFrame
	if err := httpapi.TerminalCodec.Receive(t.ws, &f); err != nil {
		return nil, nil, err
	}
	if f.Binary {
		return f.Data, nil, nil
	}
	var ev api.TerminalEvent
	if err := json.Unmarshal(f.Data, &ev); err != nil {
		return nil, nil, fmt.Errorf("decode terminal notice: %w", err)
	}
	return nil, &ev, nil
}

// Input types data into the terminal.
func (t *Terminal) Input(data []byte) error {
	return httpapi.TerminalCodec.Send(t.ws, httpapi.TerminalFrame{Data: data, Binary: true})
}

// Resize sets the terminal's size.
func (t *Terminal) Resize(cols, rows uint16) error {
	msg, err := json.Marshal(api.TerminalControl{Type: api.TerminalResize, Cols: cols, Rows: rows})
	if err != nil {
		return err
	}
	return httpapi.TerminalCodec.Send(t.ws, httpapi.TerminalFrame{Data: msg})
}

// Close detaches (a normal close, code 1000).
func (t *Terminal) Close() error { return t.ws.Close() }
