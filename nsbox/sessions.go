package nsbox

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"

	"github.com/nsbox/nsbox/api"
)

// maxExecOutput bounds what an exec answered as one JSON document keeps of each stream;
// streamed (SSE) execs have no bound.
const maxExecOutput = 64 << 20

// handleSessionCall forwards a session request to the sandbox's agent and relays its answer.
func (r *Runtime) handleSessionCall(w http.ResponseWriter, req *http.Request) {
	var body any
	if req.Method == http.MethodPost && strings.HasSuffix(req.URL.Path, "/sessions") {
		var create api.CreateSessionRequest
		if err := decodeBody(w, req, &create); err != nil {
			api.WriteError(w, err)
			return
		}
		body = create
	}
	id := req.PathValue("id")
	agent, rec, err := r.runningAgent(id)
	if err != nil {
		r.writeError(w, err)
		return
	}
	agentPath := "/v1" + strings.TrimPrefix(req.URL.Path, "/v1/sandboxes/"+id)
	resp, err := agent.do(req.Context(), req.Method, agentPath, body)
	if err != nil {
		r.writeError(w, r.agentFailure(req.Context(), rec, err))
		return
	}
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); ct != "" {
		w.Header().Set("Content-Type", ct)
	}
	w.WriteHeader(resp.StatusCode)
	_, _ = io.Copy(w, resp.Body)
}

// handleExec runs a command in a session: the one named in the path, in the body, or the
// sandbox's default session. With Accept: text/event-stream the events stream as SSE as the
// output is produced; otherwise the answer is one ExecResult when the command has finished.
func (r *Runtime) handleExec(w http.ResponseWriter, req *http.Request) {
	var body api.ExecRequest
	if err := decodeBody(w, req, &body); err != nil {
		api.WriteError(w, err)
		return
	}
	sid := req.PathValue("sid")
	switch {
	case sid == "" && body.SessionID == "":
		sid = "default"
	case sid == "":
		sid = body.SessionID
	case body.SessionID != "" && body.SessionID != sid:
		api.WriteError(w, api.Errorf(api.CodeInvalidArgument, "sessionId %q in the body does not match the path's session %q", body.SessionID, sid))
		return
	}
	if body.TimeoutMs < 0 {
		api.WriteError(w, api.Errorf(api.CodeInvalidArgument, "timeoutMs must not be negative"))
		return
	}
	if _, err := body.StdinBytes(); err != nil {
		api.WriteError(w, err)
		return
	}
	agent, rec, err := r.runningAgent(req.PathValue("id"))
	if err != nil {
		r.writeError(w, err)
		return
	}
	resp, err := agent.do(req.Context(), http.MethodPost, "/v1/sessions/"+sid+"/exec", body)
	if err != nil {
		r.writeError(w, r.agentFailure(req.Context(), rec, err))
		return
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		r.writeError(w, api.ReadError(resp))
		return
	}
	events := newEventReader(resp.Body)
	if strings.Contains(req.Header.Get("Accept"), "text/event-stream") {
		relaySSE(w, events)
		return
	}
	res, err := collectResult(events)
	if err != nil {
		r.writeError(w, r.agentFailure(req.Context(), rec, err))
		return
	}
	api.WriteJSON(w, http.StatusOK, res)
}

// eventReader reads the agent's stream of JSON-line events.
type eventReader struct{ dec *json.Decoder }

func newEventReader(rd io.Reader) *eventReader {
	return &eventReader{dec: json.NewDecoder(bufio.NewReaderSize(rd, 64<<10))}
}

// next returns the next event; a stream that ends before the exit event is an error.
func (e *eventReader) next() (*api.ExecEvent, error) {
	var ev api.ExecEvent
	if err := e.dec.Decode(&ev); err != nil {
		return nil, api.Errorf(api.CodeUnavailable, "the sandbox's agent stopped answering mid-command: %v", err)
	}
	return &ev, nil
}

// collectResult gathers a whole exec into one result.
func collectResult(events *eventReader) (*api.ExecResult, error) {
	var stdout, stderr []byte
	truncated := false
	for {
		ev, err := events.next()
		if err != nil {
			return nil, err
		}
		switch ev.Type {
		case api.EventStdout, api.EventStderr:
			data, err := ev.Bytes()
			if err != nil {
				return nil, fmt.Errorf("decode %s event: %w", ev.Type, err)
			}
			buf := &stdout
			if ev.Type == api.EventStderr {
				buf = &stderr
			}
			if room := maxExecOutput - len(*buf); len(data) > room {
				data, truncated = data[:room], true
			}
			*buf = append(*buf, data...)
		case api.EventExit:
			if ev.Result == nil {
				return nil, fmt.Errorf("exit event without a result")
			}
			res := api.NewExecResult(ev.Result.ExitCode, stdout, stderr)
			res.TimedOut, res.Canceled, res.DurationMs = ev.Result.TimedOut, ev.Result.Canceled, ev.Result.DurationMs
			res.SessionID, res.SessionEnded, res.SessionReset = ev.Result.SessionID, ev.Result.SessionEnded, ev.Result.SessionReset
			res.Truncated = truncated
			return &res, nil
		}
	}
}

// relaySSE streams the events to the client as Server-Sent Events, each flushed at once.
func relaySSE(w http.ResponseWriter, events *eventReader) {
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-cache")
	w.WriteHeader(http.StatusOK)
	flusher := http.NewResponseController(w)
	for {
		ev, err := events.next()
		if err != nil {
			writeSSE(w, "error", api.ErrorBody{Error: &api.Error{Code: api.CodeUnavailable, Message: err.Error()}})
			_ = flusher.Flush()
			return
		}
		if writeSSE(w, ev.Type, ev) != nil || flusher.Flush() != nil {
			return // the client went away; the agent decides what happens to the command
		}
		if ev.Type == api.EventExit {
			return
		}
	}
}

func writeSSE(w io.Writer, event string, v any) error {
	data, err := json.Marshal(v)
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(w, "event: %s\ndata: %s\n\n", event, data)
	return err
}
