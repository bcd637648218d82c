package agent

import (
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strconv"

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

// handleTerminalOutput streams a session's terminal as JSON lines: first what the scrollback
// ring holds after ?cursor= (default: all it holds), then output as it comes, until the session
// ends or the client goes away.
func (a *Agent) handleTerminalOutput(w http.ResponseWriter, r *http.Request) {
	s, err := a.session(r.PathValue("sid"))
	if err == nil && !s.HasTerminal() {
		err = session.ErrNoTerminal
	}
	if err != nil {
		api.WriteError(w, terminalError(err))
		return
	}
	var cursor int64
	explicit := r.URL.Query().Has("cursor")
	if explicit {
		if cursor, err = strconv.ParseInt(r.URL.Query().Get("cursor"), 10, 64); err != nil || cursor < 0 {
			api.WriteError(w, api.Errorf(api.CodeInvalidArgument, "cursor must be a byte offset ≥ 0"))
			return
		}
	}
	w.Header().Set("Content-Type", "application/x-ndjson")
	w.WriteHeader(http.StatusOK)
	enc, flush := json.NewEncoder(w), http.NewResponseController(w)
	send := func(ev api.TerminalEvent) bool {
		return enc.Encode(ev) == nil && flush.Flush() == nil
	}
	for {
		data, skipped, next, changed := s.Terminal.ReadFrom(cursor)
		if skipped > 0 && explicit && !send(api.TerminalEvent{Type: api.TerminalSkipped, Skipped: skipped, Cursor: cursor + skipped}) {
			return
		}
		if len(data) > 0 && !send(terminalOutput(data, next)) {
			return
		}
		cursor, explicit = next, true
		select {
		case <-changed:
		case <-s.Done():
			if data, _, next, _ := s.Terminal.ReadFrom(cursor); len(data) > 0 {
				send(terminalOutput(data, next))
			}
			send(api.TerminalEvent{Type: api.TerminalEnded, Cursor: next})
			return
		case <-r.Context().Done():
			return
		}
	}
}

func terminalOutput(b []byte, cursor int64) api.TerminalEvent {
	data, encoding := api.EncodeData(b)
	return api.TerminalEvent{Type: api.TerminalOutput, Data: data, Encoding: encoding, Cursor: cursor}
}

// handleTerminalInput types the request body into the session's terminal.
func (a *Agent) handleTerminalInput(w http.ResponseWriter, r *http.Request) {
	data, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxTerminalInput))
	if err != nil {
		api.WriteError(w, api.Errorf(api.CodeTooLarge, "terminal input larger than %d bytes", maxTerminalInput))
		return
	}
	s, err := a.session(r.PathValue("sid"))
	if err == nil {
		err = s.TerminalInput(data)
	}
	if err != nil {
		api.WriteError(w, terminalError(err))
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// handleTerminalResize sets the terminal's size.
func (a *Agent) handleTerminalResize(w http.ResponseWriter, r *http.Request) {
	var req api.TerminalControl
	if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
		api.WriteError(w, api.Errorf(api.CodeInvalidArgument, "malformed resize request: %v", err))
		return
	}
	s, err := a.session(r.PathValue("sid"))
	if err == nil {
		err = s.Resize(req.Cols, req.Rows)
	}
	if err != nil {
		api.WriteError(w, terminalError(err))
		return
	}
	w.WriteHeader(http.StatusNoContent)
}
