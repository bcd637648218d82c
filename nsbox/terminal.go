package nsbox

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"

	"golang.org/x/net/websocket"

	"github.com/nsbox/nsbox/api"
	"github.com/nsbox/nsbox/api/httpapi"
)

// WebSocket close codes (RFC 6455 7.4.1) the terminal sends.
const (
	closeNormal    = 1000
	closeGoingAway = 1001 // the daemon is stopping
	closeNoStatus  = 1005 // a close frame without a code; never sent back
	closeTooBig    = 1009
)

// handleTerminal upgrades to a WebSocket attached to a bash session's terminal. The client
// first receives a "readonly" notice when it may only watch, then the recent scrollback (or
// what came after ?cursor=), then output as it is produced, as binary frames; "skipped" and
// "ended" notices come as text frames (api.TerminalEvent). The client sends typed input as
// binary frames and resizes as text frames ({"type":"resize","cols":…,"rows":…}). Several
// clients may attach at once; their input interleaves. A client that may only watch gets an
// "error" notice for input; its resizes are ignored. A client's close frame is answered with
// its own code; the end of the session closes with 1000 after the "ended" notice, the
// daemon's stop with 1001 after an "error" notice (unavailable: the session goes on, a client
// reattaches to the next daemon).
func (r *Runtime) handleTerminal(w http.ResponseWriter, req *http.Request) error {
	sid := req.PathValue("sid")
	l, err := r.running(req.PathValue("id"))
	if err != nil {
		return err
	}
	// Open the output stream first: a missing session or one without a terminal is a plain
	// HTTP error, before any upgrade.
	ctx, cancelCause := context.WithCancelCause(context.WithoutCancel(req.Context()))
	cancel := func() { cancelCause(nil) }
	defer cancel()
	output, err := l.agent.terminalOutput(ctx, sid, req.URL.Query().Get("cursor"))
	if err != nil {
		return l.failure(req.Context(), err)
	}
	defer output.Close()
	readOnly := ""
	if api.ReadOnly(ctx) {
		readOnly = "this terminal is read-only (a read token): you may watch it, not type"
	} else if s, err := l.agent.getSession(ctx, sid); err != nil {
		return l.failure(req.Context(), err)
	} else if s.Permission == api.PermissionRead {
		readOnly = fmt.Sprintf("session %q is read-only: you may watch its terminal, not type", sid)
	}
	websocket.Server{
		// The Origin header carries no authority here: the socket is root-only, and a TCP caller
		// is authorized by its token (a header or a subprotocol, never a cookie), which another
		// site's page does not have.
		Handshake: func(cfg *websocket.Config, _ *http.Request) error {
			cfg.Protocol = terminalProtocol(cfg.Protocol)
			return nil
		},
		Handler: func(ws *websocket.Conn) {
			defer cancel()
			if readOnly != "" && sendNotice(ws, api.TerminalEvent{Type: api.TerminalReadOnly, Data: readOnly}) != nil {
				return
			}
			// A hijacked connection is not the HTTP server's to end at the stop: it would be cut.
			defer context.AfterFunc(r.stopping, func() { cancelCause(errDaemonStopping) })()
			go func() {
				defer cancel()
				terminalInput(ctx, ws, l.agent, sid, readOnly)
			}()
			if !relayTerminalOutput(ctx, ws, output) && errors.Is(context.Cause(ctx), errDaemonStopping) {
				_ = sendNotice(ws, api.TerminalEvent{Type: "error", Data: errDaemonStopping.Error()})
				_ = ws.WriteClose(closeGoingAway)
			}
		},
	}.ServeHTTP(w, req)
	return nil
}

// terminalProtocol is the subprotocol the server answers with, from those the client offered:
// api.TerminalProtocol when offered, else the first one (a browser that offered only its token
// protocol, api.TerminalTokenProtocol+token, must see one of its own echoed).
func terminalProtocol(offered []string) []string {
	if len(offered) == 0 || slices.Contains(offered, api.TerminalProtocol) {
		return slices.DeleteFunc(offered, func(p string) bool { return p != api.TerminalProtocol })
	}
	return offered[:1]
}

// terminalInput forwards the client's frames to the agent until the client goes away.
func terminalInput(ctx context.Context, ws *websocket.Conn, agent *agentClient, sid, readOnly string) {
	for {
		f, err := receiveFrame(ws)
		if err != nil {
			return
		}
		switch {
		case readOnly != "" && f.Binary:
			err = api.Errorf(api.CodePermissionDenied, "%s", readOnly)
		case readOnly != "":
			continue // a watcher's window size is not the terminal's: its writers set that
		case f.Binary:
			err = agent.terminalInput(ctx, sid, f.Data)
		default:
			var ctl api.TerminalControl
			if jerr := json.Unmarshal(f.Data, &ctl); jerr != nil || ctl.Type != api.TerminalResize {
				sendNotice(ws, api.TerminalEvent{Type: "error", Data: fmt.Sprintf("unknown control message %q; send input as binary frames", f.Data)})
				continue
			}
			err = agent.terminalResize(ctx, sid, ctl)
		}
		if api.IsCode(err, api.CodeUnavailable) {
			return
		}
		if err != nil {
			sendNotice(ws, api.TerminalEvent{Type: "error", Data: err.Error()})
		}
	}
}

// receiveFrame reads the client's next text or binary frame (answering pings). A close frame
// is answered with a close frame of the same code, as RFC 6455 5.5.1 asks, and ends the
// connection (io.EOF). x/net/websocket's own readers swallow close frames and their codes, so
// this reads frames through the frame reader its Conn exposes.
func receiveFrame(ws *websocket.Conn) (httpapi.TerminalFrame, error) {
	for {
		fr, err := ws.NewFrameReader()
		if err != nil {
			return httpapi.TerminalFrame{}, err
		}
		if fr.PayloadType() == websocket.CloseFrame {
			payload, _ := io.ReadAll(io.LimitReader(fr, 125))
			code := closeNormal
			if len(payload) >= 2 && binary.BigEndian.Uint16(payload) != closeNoStatus {
				code = int(binary.BigEndian.Uint16(payload))
			}
			_ = ws.WriteClose(code)
			return httpapi.TerminalFrame{}, io.EOF
		}
		frame, err := ws.HandleFrame(fr) // masking, pings and pongs
		if err != nil {
			return httpapi.TerminalFrame{}, err
		}
		if frame == nil {
			continue
		}
		data, err := io.ReadAll(io.LimitReader(frame, websocket.DefaultMaxPayloadBytes+1))
		if err != nil {
			return httpapi.TerminalFrame{}, err
		}
		if len(data) > websocket.DefaultMaxPayloadBytes {
			_ = ws.WriteClose(closeTooBig)
			return httpapi.TerminalFrame{}, fmt.Errorf("a frame larger than %d bytes", websocket.DefaultMaxPayloadBytes)
		}
		return httpapi.TerminalFrame{Data: data, Binary: frame.PayloadType() == websocket.BinaryFrame}, nil
	}
}

// relayTerminalOutput sends terminal output to the client until the stream or the client ends;
// the end of the session closes the WebSocket normally. It says whether it sent a close frame.
func relayTerminalOutput(ctx context.Context, ws *websocket.Conn, events *eventStream) (closed bool) {
	for {
		var ev api.TerminalEvent
		if _, err := events.NextJSON(&ev); err != nil {
			return false
		}
		if ev.Type != api.TerminalOutput {
			if sendNotice(ws, ev) != nil {
				return false
			}
			if ev.Type == api.TerminalEnded {
				if ctx.Err() == nil {
					_ = ws.WriteClose(closeNormal)
					return true
				}
				return false
			}
			continue
		}
		data, err := ev.Bytes()
		if err != nil || httpapi.TerminalCodec.Send(ws, httpapi.TerminalFrame{Data: data, Binary: true}) != nil {
			return false
		}
	}
}

func sendNotice(ws *websocket.Conn, ev api.TerminalEvent) error {
	data, err := json.Marshal(ev)
	if err != nil {
		return err
	}
	return httpapi.TerminalCodec.Send(ws, httpapi.TerminalFrame{Data: data})
}
