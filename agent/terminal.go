package agent

import (
	"errors"
	"fmt"
	"io"
	"strconv"

	"github.com/nsbox/nsbox/agent/httpd"
	"github.com/nsbox/nsbox/api"
	"github.com/nsbox/nsbox/session"
)

// maxTerminalInput bounds one input request (typed keys, a paste).
const maxTerminalInput = 1 << 20

func terminalError(err error) error {
	if errors.Is(err, session.ErrNoTerminal) {
		return api.Errorf(api.CodeConflict, "%v", err)
	}
	return sessionError(err)
}

// handleTerminalOutput streams a session's terminal as Server-Sent Events (the event name is
// the TerminalEvent's type, its data the whole TerminalEvent): first what the scrollback ring
// holds after ?cursor= (default: all it holds), then output as it comes, until the session ends
// or the client goes away. The 200 goes out at once, before there is any output. The replayed
// part (what the ring held when the client attached) goes without the sequences that would
// make the client's terminal answer (session.Replay), and ends with a "live" event; the cursors
// still count the ring's bytes.
func (a *Agent) handleTerminalOutput(w *httpd.ResponseWriter, r *httpd.Request) error {
	s, err := a.session(r.PathValue("sid"))
	if err == nil && !s.HasTerminal() {
		err = session.ErrNoTerminal
	}
	if err != nil {
		return terminalError(err)
	}
	var cursor int64
	explicit := r.Query().Has("cursor")
	if explicit {
		if cursor, err = strconv.ParseInt(r.Query().Get("cursor"), 10, 64); err != nil || cursor < 0 {
			return api.Errorf(api.CodeInvalidArgument, "cursor must be a byte offset ≥ 0")
		}
	}
	events := openEventStream(w)
	send := func(ev api.TerminalEvent) bool { return events.Send(ev.Type, ev) == nil }
	for replay := true; ; replay = false {
		data, skipped, next, changed := s.Terminal.ReadFrom(cursor)
		if skipped > 0 && explicit && !send(api.TerminalEvent{Type: api.TerminalSkipped, Skipped: skipped, Cursor: cursor + skipped}) {
			return nil
		}
		if replay {
			// What was written before this client attached is shown, never answered.
			data = session.Replay(data)
		}
		if len(data) > 0 && !send(terminalOutput(data, next)) {
			return nil
		}
		if replay && !send(api.TerminalEvent{Type: api.TerminalLive, Cursor: next}) {
			return nil
		}
		cursor, explicit = next, true
		select {
		case <-changed:
		case <-s.Done():
			if data, _, next, _ := s.Terminal.ReadFrom(cursor); len(data) > 0 {
				send(terminalOutput(data, next))
			}
			send(api.TerminalEvent{Type: api.TerminalEnded, Cursor: next})
			return nil
		case <-r.Context().Done():
			return nil
		}
	}
}

func terminalOutput(b []byte, cursor int64) api.TerminalEvent {
	data, encoding := api.EncodeData(b)
	return api.TerminalEvent{Type: api.TerminalOutput, Data: data, Encoding: encoding, Cursor: cursor}
}

// handleTerminalInput types the request body into the session's terminal.
func (a *Agent) handleTerminalInput(w *httpd.ResponseWriter, r *httpd.Request) error {
	data, err := io.ReadAll(io.LimitReader(r.Body, maxTerminalInput+1))
	if err != nil {
		return api.Errorf(api.CodeInvalidArgument, "read terminal input: %v", err)
	}
	if len(data) > maxTerminalInput {
		return api.Errorf(api.CodeTooLarge, "terminal input larger than %d bytes", maxTerminalInput)
	}
	s, err := a.writableSession(r.PathValue("sid"))
	if err != nil {
		return err
	}
	if err := s.TerminalInput(data); err != nil {
		return fmt.Errorf("type into session %q's terminal: %w", r.PathValue("sid"), terminalError(err))
	}
	w.WriteHeader(httpd.StatusNoContent)
	return nil
}

// handleTerminalResize sets the terminal's size.
func (a *Agent) handleTerminalResize(w *httpd.ResponseWriter, r *httpd.Request) error {
	var req api.TerminalControl
	if err := api.DecodeBody(r.Body, &req, false); err != nil {
		return err
	}
	s, err := a.writableSession(r.PathValue("sid"))
	if err != nil {
		return err
	}
	if err := s.Resize(req.Cols, req.Rows); err != nil {
		return fmt.Errorf("resize session %q's terminal: %w", r.PathValue("sid"), terminalError(err))
	}
	w.WriteHeader(httpd.StatusNoContent)
	return nil
}
