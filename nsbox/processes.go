package nsbox

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strconv"
	"strings"

	"github.com/nsbox/nsbox/api"
)

// Processes live in the sandbox's agent (package agent/process); the daemon checks request
// bodies and relays the calls, so processes and their output outlive a daemon restart.

// handleStartProcess starts a process in a sandbox.
func (r *Runtime) handleStartProcess(w http.ResponseWriter, req *http.Request) {
	var body api.StartProcessRequest
	if err := decodeBody(w, req, &body); err != nil {
		api.WriteError(w, err)
		return
	}
	r.relayProcessCall(w, req, jsonBody(body))
}

// handleProcessCall relays a process call without a body.
func (r *Runtime) handleProcessCall(w http.ResponseWriter, req *http.Request) {
	r.relayProcessCall(w, req, nil)
}

// handleKillProcess relays a kill of one process or of all, whose body may be empty.
func (r *Runtime) handleKillProcess(w http.ResponseWriter, req *http.Request) {
	var body api.KillProcessRequest
	if err := decodeOptionalBody(w, req, &body); err != nil {
		api.WriteError(w, err)
		return
	}
	r.relayProcessCall(w, req, jsonBody(body))
}

// handleWaitProcess relays a wait, whose body may be empty (wait for the end).
func (r *Runtime) handleWaitProcess(w http.ResponseWriter, req *http.Request) {
	var body api.WaitProcessRequest
	if err := decodeOptionalBody(w, req, &body); err != nil {
		api.WriteError(w, err)
		return
	}
	r.relayProcessCall(w, req, jsonBody(body))
}

// handleProcessStdin streams the raw request body to the process's stdin.
func (r *Runtime) handleProcessStdin(w http.ResponseWriter, req *http.Request) {
	r.relayProcessCall(w, req, req.Body)
}

// handleProcessLogs answers a process's log; with follow it streams it as Server-Sent Events.
func (r *Runtime) handleProcessLogs(w http.ResponseWriter, req *http.Request) {
	follow, _ := strconv.ParseBool(req.URL.Query().Get("follow"))
	if !follow {
		r.relayProcessCall(w, req, nil)
		return
	}
	resp, ok := r.callProcessAgent(w, req, nil)
	if !ok {
		return
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		r.writeError(w, api.ReadError(resp))
		return
	}
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-cache")
	w.WriteHeader(http.StatusOK)
	flusher := http.NewResponseController(w)
	dec := json.NewDecoder(resp.Body)
	for {
		var ev api.ProcessEvent
		if err := dec.Decode(&ev); err != nil {
			if req.Context().Err() == nil {
				writeSSE(w, "error", api.ErrorBody{Error: api.Errorf(api.CodeUnavailable, "the sandbox's agent stopped answering mid-stream: %v", err)})
				_ = flusher.Flush()
			}
			return
		}
		if writeSSE(w, ev.Type, ev) != nil || flusher.Flush() != nil || ev.Type == api.EventExit {
			return
		}
	}
}

func jsonBody(v any) io.Reader {
	data, _ := json.Marshal(v) // request types always marshal
	return bytes.NewReader(data)
}

// decodeOptionalBody is decodeBody for bodies that may be left out.
func decodeOptionalBody(w http.ResponseWriter, req *http.Request, v any) error {
	data, err := io.ReadAll(http.MaxBytesReader(w, req.Body, maxRequestBody))
	if err != nil {
		var tooLarge *http.MaxBytesError
		if errors.As(err, &tooLarge) {
			return api.Errorf(api.CodeTooLarge, "request body is larger than %d bytes", maxRequestBody)
		}
		return api.Errorf(api.CodeInvalidArgument, "read request body: %v", err)
	}
	if len(bytes.TrimSpace(data)) == 0 {
		return nil
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return api.Errorf(api.CodeInvalidArgument, "malformed JSON body: %v", err)
	}
	if dec.More() {
		return api.Errorf(api.CodeInvalidArgument, "malformed JSON body: data after the object")
	}
	return nil
}

// callProcessAgent sends the request, under the agent's path, to the sandbox's agent.
func (r *Runtime) callProcessAgent(w http.ResponseWriter, req *http.Request, body io.Reader) (*http.Response, bool) {
	id := req.PathValue("id")
	agent, rec, err := r.runningAgent(id)
	if err != nil {
		r.writeError(w, err)
		return nil, false
	}
	path := "/v1" + strings.TrimPrefix(req.URL.Path, "/v1/sandboxes/"+id)
	if req.URL.RawQuery != "" {
		path += "?" + req.URL.RawQuery
	}
	if body == nil {
		body = http.NoBody
	}
	resp, err := agent.doRaw(req.Context(), req.Method, path, body)
	if err != nil {
		r.writeError(w, r.agentFailure(req.Context(), rec, err))
		return nil, false
	}
	return resp, true
}

// relayProcessCall sends the request to the agent and relays its answer as it is.
func (r *Runtime) relayProcessCall(w http.ResponseWriter, req *http.Request, body io.Reader) {
	resp, ok := r.callProcessAgent(w, req, body)
	if !ok {
		return
	}
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); ct != "" {
		w.Header().Set("Content-Type", ct)
	}
	w.WriteHeader(resp.StatusCode)
	_, _ = io.Copy(w, resp.Body)
}
