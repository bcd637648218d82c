package nsbox

import (
	"bufio"
	"net"
	"net/http"
	"strconv"
	"time"

	"github.com/nsbox/nsbox/api"
)

// Route is one endpoint of the API.
type Route struct {
	Method, Pattern string
	handle          func(*Runtime, http.ResponseWriter, *http.Request) error
}

// Routes are the daemon's API endpoints; api/openapi.json describes the same set.
var Routes = []Route{
	{"GET", "/v1/version", (*Runtime).handleVersion},
	{"GET", "/v1/images", (*Runtime).handleImages},
	{"POST", "/v1/images/pull", (*Runtime).handlePullImage},
	{"POST", "/v1/images/import", (*Runtime).handleImportImages},
	{"POST", "/v1/images/prune", (*Runtime).handlePruneImages},
	{"GET", "/v1/images/{name}", (*Runtime).handleGetImage},
	{"DELETE", "/v1/images/{name}", (*Runtime).handleRemoveImage},
	{"POST", "/v1/sandboxes", (*Runtime).handleCreate},
	{"GET", "/v1/sandboxes", (*Runtime).handleList},
	{"GET", "/v1/sandboxes/{id}", (*Runtime).handleGet},
	{"DELETE", "/v1/sandboxes/{id}", (*Runtime).handleRemove},
	{"POST", "/v1/sandboxes/{id}/pause", (*Runtime).handlePause},
	{"POST", "/v1/sandboxes/{id}/resume", (*Runtime).handleResume},
	{"POST", "/v1/sandboxes/{id}/exec", (*Runtime).handleExec},
	{"POST", "/v1/sandboxes/{id}/sessions", (*Runtime).handleCreateSession},
	{"GET", "/v1/sandboxes/{id}/sessions", (*Runtime).handleListSessions},
	{"GET", "/v1/sandboxes/{id}/sessions/{sid}", (*Runtime).handleGetSession},
	{"DELETE", "/v1/sandboxes/{id}/sessions/{sid}", (*Runtime).handleDeleteSession},
	{"POST", "/v1/sandboxes/{id}/sessions/{sid}/exec", (*Runtime).handleExec},
	{"POST", "/v1/sandboxes/{id}/sessions/{sid}/cancel", (*Runtime).handleCancelSession},
	{"GET", "/v1/sandboxes/{id}/sessions/{sid}/terminal", (*Runtime).handleTerminal},
	{"GET", "/v1/sandboxes/{id}/files", (*Runtime).handleReadFile},
	{"PUT", "/v1/sandboxes/{id}/files", (*Runtime).handleWriteFile},
	{"DELETE", "/v1/sandboxes/{id}/files", (*Runtime).handleRemoveFile},
	{"GET", "/v1/sandboxes/{id}/files/stat", (*Runtime).handleStatFile},
	{"GET", "/v1/sandboxes/{id}/files/list", (*Runtime).handleListFiles},
	{"POST", "/v1/sandboxes/{id}/files/mkdir", (*Runtime).handleMkdir},
	{"POST", "/v1/sandboxes/{id}/files/move", (*Runtime).handleMove},
	{"GET", "/v1/sandboxes/{id}/files/watch", (*Runtime).handleWatchFiles},
	{"GET", "/v1/sandboxes/{id}/workspace/diff", (*Runtime).handleWorkspaceDiff},
	{"GET", "/v1/sandboxes/{id}/workspace/export", (*Runtime).handleWorkspaceExport},
	{"PATCH", "/v1/sandboxes/{id}/env", (*Runtime).handlePatchEnv},
	{"PATCH", "/v1/sandboxes/{id}/network", (*Runtime).handleSetNetwork},
	{"POST", "/v1/sandboxes/{id}/ports", (*Runtime).handleExposePort},
	{"GET", "/v1/sandboxes/{id}/ports", (*Runtime).handleListPorts},
	{"DELETE", "/v1/sandboxes/{id}/ports/{port}", (*Runtime).handleUnexposePort},
	{"POST", "/v1/sandboxes/{id}/processes", (*Runtime).handleStartProcess},
	{"GET", "/v1/sandboxes/{id}/processes", (*Runtime).handleListProcesses},
	{"DELETE", "/v1/sandboxes/{id}/processes", (*Runtime).handleRemoveFinished},
	{"POST", "/v1/sandboxes/{id}/processes/kill", (*Runtime).handleKillProcess},
	{"GET", "/v1/sandboxes/{id}/processes/{pid}", (*Runtime).handleGetProcess},
	{"DELETE", "/v1/sandboxes/{id}/processes/{pid}", (*Runtime).handleRemoveProcess},
	{"POST", "/v1/sandboxes/{id}/processes/{pid}/kill", (*Runtime).handleKillProcess},
	{"GET", "/v1/sandboxes/{id}/processes/{pid}/logs", (*Runtime).handleProcessLogs},
	{"POST", "/v1/sandboxes/{id}/processes/{pid}/stdin", (*Runtime).handleProcessStdin},
	{"DELETE", "/v1/sandboxes/{id}/processes/{pid}/stdin", (*Runtime).handleProcessStdin},
	{"POST", "/v1/sandboxes/{id}/processes/{pid}/wait", (*Runtime).handleWaitProcess},
}

// Handler returns the daemon's HTTP API.
func (r *Runtime) Handler() http.Handler {
	mux := http.NewServeMux()
	for _, rt := range Routes {
		mux.HandleFunc(rt.Method+" "+rt.Pattern, api.Handle(r.log, func(w http.ResponseWriter, req *http.Request) error {
			return rt.handle(r, w, req)
		}))
	}
	mux.HandleFunc("/", api.Handle(r.log, func(_ http.ResponseWriter, req *http.Request) error {
		return api.Errorf(api.CodeNotFound, "no such endpoint: %s %s", req.Method, req.URL.Path)
	}))
	return r.logRequests(mux)
}

func (r *Runtime) handleVersion(w http.ResponseWriter, _ *http.Request) error {
	api.WriteJSON(w, http.StatusOK, api.Version{Version: r.cfg.Version})
	return nil
}

func (r *Runtime) handleImages(w http.ResponseWriter, _ *http.Request) error {
	api.WriteJSON(w, http.StatusOK, r.Images())
	return nil
}

func (r *Runtime) logRequests(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		start := time.Now()
		sw := &statusWriter{ResponseWriter: w, status: http.StatusOK}
		next.ServeHTTP(sw, req)
		r.log.Debug("api", "method", req.Method, "path", req.URL.Path, "status", sw.status, "duration", time.Since(start))
	})
}

type statusWriter struct {
	http.ResponseWriter
	status int
}

// Hijack hands the connection to a WebSocket upgrade.
func (w *statusWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	w.status = http.StatusSwitchingProtocols
	return http.NewResponseController(w.ResponseWriter).Hijack()
}

// Unwrap lets http.ResponseController reach the real writer (to flush streams).
func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

func (w *statusWriter) WriteHeader(code int) {
	w.status = code
	w.ResponseWriter.WriteHeader(code)
}

func (r *Runtime) handleCreate(w http.ResponseWriter, req *http.Request) error {
	var body api.CreateSandboxRequest
	if err := api.DecodeJSON(w, req, &body, false); err != nil {
		return err
	}
	sb, err := r.Create(req.Context(), body)
	if err != nil {
		return err
	}
	api.WriteJSON(w, http.StatusCreated, sb)
	return nil
}

func (r *Runtime) handleList(w http.ResponseWriter, _ *http.Request) error {
	api.WriteJSON(w, http.StatusOK, r.List())
	return nil
}

func (r *Runtime) handleGet(w http.ResponseWriter, req *http.Request) error {
	sb, err := r.Get(req.PathValue("id"))
	if err != nil {
		return err
	}
	api.WriteJSON(w, http.StatusOK, sb)
	return nil
}

func (r *Runtime) handleRemove(w http.ResponseWriter, req *http.Request) error {
	force := false
	if v := req.URL.Query().Get("force"); v != "" {
		var err error
		if force, err = strconv.ParseBool(v); err != nil {
			return api.Errorf(api.CodeInvalidArgument, "force must be true or false, got %q", v)
		}
	}
	if err := r.Remove(req.PathValue("id"), force); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}
