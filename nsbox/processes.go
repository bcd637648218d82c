package nsbox

import (
	"net/http"
	"strconv"

	"github.com/nsbox/nsbox/api"
	"github.com/nsbox/nsbox/api/httpapi"
)

// Processes live in the sandbox's agent (package agent/process); the daemon checks request
// bodies and relays the calls, so processes and their output outlive a daemon restart. Their
// exits come through the agent's watch stream (agentwatch.go).

// processCall runs call with the agent of the running sandbox the request names, and answers
// what it returns as JSON with status (or no body, with 204, when it returns nil).
func (r *Runtime) processCall(w http.ResponseWriter, req *http.Request, status int, call func(*agentClient) (any, error)) error {
	l, err := r.running(req.PathValue("id"))
	if err != nil {
		return err
	}
	out, err := call(l.agent)
	if err != nil {
		return l.failure(req.Context(), err)
	}
	if out == nil {
		w.WriteHeader(http.StatusNoContent)
		return nil
	}
	httpapi.WriteJSON(w, status, out)
	return nil
}

// handleStartProcess starts a process in a sandbox.
func (r *Runtime) handleStartProcess(w http.ResponseWriter, req *http.Request) error {
	var body api.StartProcessRequest
	if err := httpapi.DecodeJSON(req, &body, false); err != nil {
		return err
	}
	id := req.PathValue("id")
	if err := r.refuseConfined(id, body.SessionID, "processes"); err != nil {
		return err
	}
	return r.processCall(w, req, http.StatusCreated, func(a *agentClient) (any, error) {
		return a.startProcess(req.Context(), body)
	})
}

func (r *Runtime) handleListProcesses(w http.ResponseWriter, req *http.Request) error {
	return r.processCall(w, req, http.StatusOK, func(a *agentClient) (any, error) {
		return a.listProcesses(req.Context(), req.URL.Query())
	})
}

func (r *Runtime) handleRemoveFinished(w http.ResponseWriter, req *http.Request) error {
	return r.processCall(w, req, http.StatusOK, func(a *agentClient) (any, error) {
		return a.removeFinished(req.Context())
	})
}

func (r *Runtime) handleGetProcess(w http.ResponseWriter, req *http.Request) error {
	return r.processCall(w, req, http.StatusOK, func(a *agentClient) (any, error) {
		return a.getProcess(req.Context(), req.PathValue("pid"))
	})
}

func (r *Runtime) handleRemoveProcess(w http.ResponseWriter, req *http.Request) error {
	return r.processCall(w, req, http.StatusNoContent, func(a *agentClient) (any, error) {
		return nil, a.removeProcess(req.Context(), req.PathValue("pid"))
	})
}

// handleKillProcess kills one process, or with no pid in the path all of them; the body may
// be empty.
func (r *Runtime) handleKillProcess(w http.ResponseWriter, req *http.Request) error {
	var body api.KillProcessRequest
	if err := httpapi.DecodeJSON(req, &body, true); err != nil {
		return err
	}
	pid := req.PathValue("pid")
	return r.processCall(w, req, http.StatusOK, func(a *agentClient) (any, error) {
		if pid == "" {
			return a.killAll(req.Context(), body)
		}
		return a.killProcess(req.Context(), pid, body)
	})
}

// handleWaitProcess waits for a process; the body may be empty (wait for the end).
func (r *Runtime) handleWaitProcess(w http.ResponseWriter, req *http.Request) error {
	var body api.WaitProcessRequest
	if err := httpapi.DecodeJSON(req, &body, true); err != nil {
		return err
	}
	return r.processCall(w, req, http.StatusOK, func(a *agentClient) (any, error) {
		return a.waitProcess(req.Context(), req.PathValue("pid"), body)
	})
}

// handleProcessStdin streams the raw request body to the process's stdin (POST), or closes it
// (DELETE).
func (r *Runtime) handleProcessStdin(w http.ResponseWriter, req *http.Request) error {
	pid := req.PathValue("pid")
	return r.processCall(w, req, http.StatusNoContent, func(a *agentClient) (any, error) {
		if req.Method == http.MethodDelete {
			return nil, a.closeStdin(req.Context(), pid)
		}
		return nil, a.writeStdin(req.Context(), pid, req.Body, req.URL.Query())
	})
}

// handleProcessLogs answers a process's log; with follow it streams it as Server-Sent Events.
func (r *Runtime) handleProcessLogs(w http.ResponseWriter, req *http.Request) error {
	pid := req.PathValue("pid")
	if follow, _ := strconv.ParseBool(req.URL.Query().Get("follow")); !follow {
		return r.processCall(w, req, http.StatusOK, func(a *agentClient) (any, error) {
			return a.processLogs(req.Context(), pid, req.URL.Query())
		})
	}
	return r.relayStream(w, req, api.EventExit, func(a *agentClient) (*eventStream, error) {
		return a.followLogs(req.Context(), pid, req.URL.Query())
	})
}
