package nsbox

import (
	"fmt"
	"net/http"
	"net/url"

	"github.com/nsbox/nsbox/api"
	"github.com/nsbox/nsbox/api/httpapi"
)

// Code contexts live in the sandbox's agent (package agent/code); the daemon relays the calls,
// so contexts and their state outlive a daemon restart.

func contextPath(cid string, rest ...string) string {
	p := "/v1/contexts"
	if cid != "" {
		p += "/" + url.PathEscape(cid)
	}
	for _, r := range rest {
		p += "/" + r
	}
	return p
}

func (r *Runtime) handleCreateContext(w http.ResponseWriter, req *http.Request) error {
	var body api.CreateCodeContextRequest
	if err := httpapi.DecodeJSON(req, &body, false); err != nil {
		return err
	}
	if err := r.refuseConfined(req.PathValue("id"), body.SessionID, "code contexts"); err != nil {
		return err
	}
	return r.processCall(w, req, http.StatusCreated, func(a *agentClient) (any, error) {
		var c api.CodeContext
		return &c, a.call(req.Context(), http.MethodPost, contextPath(""), body, &c)
	})
}

func (r *Runtime) handleListContexts(w http.ResponseWriter, req *http.Request) error {
	return r.processCall(w, req, http.StatusOK, func(a *agentClient) (any, error) {
		return callSlice[api.CodeContext](req.Context(), a, http.MethodGet, contextPath(""), nil)
	})
}

func (r *Runtime) handleDeleteContext(w http.ResponseWriter, req *http.Request) error {
	return r.processCall(w, req, http.StatusNoContent, func(a *agentClient) (any, error) {
		return nil, a.call(req.Context(), http.MethodDelete, contextPath(req.PathValue("cid")), nil, nil)
	})
}

// handleRunCode runs code in a context: streamed as Server-Sent Events when asked, else
// answered as one RunCodeResult once the run has ended (its output spooled until then and
// each stream kept up to the default cap, as for an exec: output.go).
func (r *Runtime) handleRunCode(w http.ResponseWriter, req *http.Request) error {
	var body api.RunCodeRequest
	if err := httpapi.DecodeJSON(req, &body, false); err != nil {
		return err
	}
	run := func(a *agentClient) (*eventStream, error) {
		return a.stream(req.Context(), http.MethodPost, contextPath(req.PathValue("cid"), "run"), jsonBody(body))
	}
	if httpapi.WantsEventStream(req) {
		return r.relayStream(w, req, api.EventEnd, run)
	}
	limit, err := r.outputCap(0)
	if err != nil {
		return err
	}
	l, err := r.running(req.PathValue("id"))
	if err != nil {
		return err
	}
	events, err := run(l.agent)
	if err != nil {
		return l.failure(req.Context(), err)
	}
	defer events.Close()
	out := r.newOutput(limit)
	defer out.close()
	res, err := collectRun(events, out)
	if err != nil {
		return l.failure(req.Context(), err)
	}
	return r.writeAnswer(w, res, out, res.StdoutEncoding, res.StderrEncoding)
}

// collectRun gathers a whole run: its output into out, and its result, whose Stdout and
// Stderr stay empty; each stream gets its own encoding.
func collectRun(events *eventStream, out *output) (*api.RunCodeResult, error) {
	for {
		var ev api.CodeEvent
		if _, err := events.NextJSON(&ev); err != nil {
			return nil, streamError(err)
		}
		switch ev.Type {
		case api.EventStdout, api.EventStderr:
			if err := out.add(ev.Type, ev.Data, ev.Encoding); err != nil {
				return nil, err
			}
		case api.EventEnd:
			if ev.End == nil {
				return nil, fmt.Errorf("end event without a result")
			}
			res := *ev.End
			res.Stdout, res.Stderr = "", ""
			res.StdoutEncoding, res.StderrEncoding = out.stdout.encoding(), out.stderr.encoding()
			res.Truncated = out.stdout.limit.Truncated || out.stderr.limit.Truncated
			return &res, nil
		}
	}
}

// handleGitCheckout clones or updates a repository in the sandbox (the agent runs the image's
// git); with Accept: text/event-stream git's progress streams as it comes.
func (r *Runtime) handleGitCheckout(w http.ResponseWriter, req *http.Request) error {
	var body api.GitCheckoutRequest
	if err := httpapi.DecodeJSON(req, &body, false); err != nil {
		return err
	}
	if !httpapi.WantsEventStream(req) {
		return r.processCall(w, req, http.StatusOK, func(a *agentClient) (any, error) {
			var res api.GitCheckoutResult
			return &res, a.call(req.Context(), http.MethodPost, "/v1/git/checkout", body, &res)
		})
	}
	return r.relayStream(w, req, api.EventDone, func(a *agentClient) (*eventStream, error) {
		return a.stream(req.Context(), http.MethodPost, "/v1/git/checkout", jsonBody(body))
	})
}
