package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"strings"

	"golang.org/x/net/websocket"

	"github.com/nsbox/nsbox/api"
)

// Terminal is an attached session terminal.
type Terminal struct {
	ws *websocket.Conn
}

// AttachTerminal attaches to a bash session's terminal. Reads start with the recent scrollback
// (everything after cursor when cursor ≥ 0).
func (c *Client) AttachTerminal(ctx context.Context, id, sid string, cursor int64) (*Terminal, error) {
	if c.dial == nil {
		return nil, errors.New("this client cannot open WebSockets (made with NewWithHTTPClient)")
	}
	conn, err := c.dial(ctx)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrUnreachable, err)
	}
	u := "ws" + strings.TrimPrefix(c.base, "http") + sessionsPath(id, sid) + "/terminal"
	if cursor >= 0 {
		u += fmt.Sprintf("?cursor=%d", cursor)
	}
	cfg, err := websocket.NewConfig(u, "http://localhost")
	if err != nil {
		conn.Close()
		return nil, err
	}
	c.authorize(cfg.Header)
	ws, err := websocket.NewClient(cfg, conn)
	if err != nil {
		conn.Close()
		var de *websocket.DialError
		if errors.As(err, &de) {
			err = de.Err
		}
		return nil, fmt.Errorf("attach to %s/%s: %w (does the session exist, and is it a bash session?)", id, url.PathEscape(sid), err)
	}
	return &Terminal{ws: ws}, nil
}

// Read returns the next terminal output (notice nil) or notice (output nil).
func (t *Terminal) Read() (output []byte, notice *api.TerminalEvent, err error) {
	var f api.TerminalFrame
	if err := api.TerminalCodec.Receive(t.ws, &f); err != nil {
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
	return api.TerminalCodec.Send(t.ws, api.TerminalFrame{Data: data, Binary: true})
}

// Resize sets the terminal's size.
func (t *Terminal) Resize(cols, rows uint16) error {
	msg, err := json.Marshal(api.TerminalControl{Type: api.TerminalResize, Cols: cols, Rows: rows})
	if err != nil {
		return err
	}
	return api.TerminalCodec.Send(t.ws, api.TerminalFrame{Data: msg})
}

// Close detaches.
func (t *Terminal) Close() error { return t.ws.Close() }
