package nsbox

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"

	"golang.org/x/net/websocket"

	"github.com/nsbox/nsbox/api"
)

// handleTerminal upgrades to a WebSocket attached to a bash session's terminal. The client
// first receives the recent scrollback (or what came after ?cursor=), then output as it is
// produced, as binary frames; "skipped" and "ended" notices come as text frames
// (api.TerminalEvent). The client sends typed input as binary frames and resizes as text
// frames ({"type":"resize","cols":…,"rows":…}). Several clients may attach at once; their
// input interleaves.
func (r *Runtime) handleTerminal(w http.ResponseWriter, req *http.Request) {
	id, sid := req.PathValue("id"), req.PathValue("sid")
	agent, _, err := r.runningAgent(id)
	if err != nil {
		r.writeError(w, err)
		return
	}
	base := "/v1/sessions/" + url.PathEscape(sid) + "/terminal"
	// Open the output stream first: a missing session or one without a terminal is a plain
	// HTTP error, before any upgrade.
	ctx, cancel := context.WithCancel(context.WithoutCancel(req.Context()))
	defer cancel()
	outputPath := base
	if c := req.URL.Query().Get("cursor"); c != "" {
		outputPath += "?cursor=" + url.QueryEscape(c)
	}
	output, err := agent.do(ctx, http.MethodGet, outputPath, nil)
	if err != nil {
		r.writeError(w, err)
		return
	}
	defer output.Body.Close()
	if output.StatusCode != http.StatusOK {
		r.writeError(w, api.ReadError(output))
		return
	}
	websocket.Server{
		// Browsers reach the daemon only through a proxy that authorizes them; the socket itself
		// is root-only, so the Origin header carries no authority here.
		Handshake: func(*websocket.Config, *http.Request) error { return nil },
		Handler: func(ws *websocket.Conn) {
			defer cancel()
			go func() {
				defer cancel()
				r.terminalInput(ctx, ws, agent, base)
			}()
			relayTerminalOutput(ws, newTerminalReader(output))
		},
	}.ServeHTTP(w, req)
}

// terminalInput forwards the client's frames to the agent until the client goes away.
func (r *Runtime) terminalInput(ctx context.Context, ws *websocket.Conn, agent *agentClient, base string) {
	for {
		var f api.TerminalFrame
		if err := api.TerminalCodec.Receive(ws, &f); err != nil {
			return
		}
		path, body := base+"/input", f.Data
		if !f.Binary {
			var ctl api.TerminalControl
			if err := json.Unmarshal(f.Data, &ctl); err != nil || ctl.Type != api.TerminalResize {
				sendNotice(ws, api.TerminalEvent{Type: "error", Data: fmt.Sprintf("unknown control message %q; send input as binary frames", f.Data)})
				continue
			}
			path = base + "/resize"
		}
		resp, err := agent.doRaw(ctx, http.MethodPost, path, bytes.NewReader(body))
		if err != nil {
			return
		}
		if resp.StatusCode/100 != 2 {
			sendNotice(ws, api.TerminalEvent{Type: "error", Data: api.ReadError(resp).Message})
		}
		resp.Body.Close()
	}
}

// terminalReader reads the agent's terminal event stream.
type terminalReader struct{ dec *json.Decoder }

func newTerminalReader(resp *http.Response) *terminalReader {
	return &terminalReader{dec: json.NewDecoder(resp.Body)}
}

// relayTerminalOutput sends terminal output to the client until the stream or the client ends.
func relayTerminalOutput(ws *websocket.Conn, events *terminalReader) {
	for {
		var ev api.TerminalEvent
		if err := events.dec.Decode(&ev); err != nil {
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
