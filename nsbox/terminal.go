package nsbox

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"

	"golang.org/x/net/websocket"

	"github.com/nsbox/nsbox/api"
)

// handleTerminal upgrades to a WebSocket attached to a bash session's terminal. The client
// first receives the recent scrollback (or what came after ?cursor=), then output as it is
// produced, as binary frames; "skipped" and "ended" notices come as text frames
// (api.TerminalEvent). The client sends typed input as binary frames and resizes as text
// frames ({"type":"resize","cols":…,"rows":…}). Several clients may attach at once; their
// input interleaves.
func (r *Runtime) handleTerminal(w http.ResponseWriter, req *http.Request) error {
	sid := req.PathValue("sid")
	l, err := r.running(req.PathValue("id"))
	if err != nil {
		return err
	}
	// Open the output stream first: a missing session or one without a terminal is a plain
	// HTTP error, before any upgrade.
	ctx, cancel := context.WithCancel(context.WithoutCancel(req.Context()))
	defer cancel()
	output, err := l.agent.terminalOutput(ctx, sid, req.URL.Query().Get("cursor"))
	if err != nil {
		return l.failure(req.Context(), err)
	}
	defer output.Close()
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
			go func() {
				defer cancel()
				terminalInput(ctx, ws, l.agent, sid)
			}()
			relayTerminalOutput(ws, output)
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
func terminalInput(ctx context.Context, ws *websocket.Conn, agent *agentClient, sid string) {
	for {
		var f api.TerminalFrame
		if err := api.TerminalCodec.Receive(ws, &f); err != nil {
			return
		}
		var err error
		switch {
		case api.ReadOnly(ctx):
			err = api.Errorf(api.CodePermissionDenied, "this terminal is read-only (a read token): input and resizes are ignored")
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

// relayTerminalOutput sends terminal output to the client until the stream or the client ends.
func relayTerminalOutput(ws *websocket.Conn, events *eventStream) {
	for {
		var ev api.TerminalEvent
		if _, err := events.NextJSON(&ev); err != nil {
			return
		}
		if ev.Type != api.TerminalOutput {
			if sendNotice(ws, ev) != nil || ev.Type == api.TerminalEnded {
				return
			}
			continue
		}
		data, err := ev.Bytes()
		if err != nil || api.TerminalCodec.Send(ws, api.TerminalFrame{Data: data, Binary: true}) != nil {
			return
		}
	}
}

func sendNotice(ws *websocket.Conn, ev api.TerminalEvent) error {
	data, err := json.Marshal(ev)
	if err != nil {
		return err
	}
	return api.TerminalCodec.Send(ws, api.TerminalFrame{Data: data})
}
