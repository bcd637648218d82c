package nsbox

import (
	"bufio"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/nsbox/nsbox/api"
	"github.com/nsbox/nsbox/api/httpapi"
)

// Route is one endpoint of the API.
type Route struct {
	Method, Pattern string
	// Access is what the endpoint asks of a caller with a token, and Session where it names
	// the session it works for (package auth holds tokens to them; the socket may do all).
	Access  api.Access
	Session api.SessionFrom
	handle  func(*Runtime, http.ResponseWriter, *http.Request) error
}

// Routes are the daemon's API endpoints; api/openapi.json describes the same set.
var Routes = []Route{
	{"GET", "/v1/version", api.AccessAny, api.SessionNone, (*Runtime).handleVersion},
	{"GET", "/metrics", api.AccessAdmin, api.SessionNone, (*Runtime).handleMetrics},
	{"GET", "/v1/events", api.AccessAdmin, api.SessionNone, (*Runtime).handleEvents},
	{"GET", "/v1/stats", api.AccessAdmin, api.SessionNone, (*Runtime).handleAllStats},
	{"GET", "/v1/images", api.AccessAdmin, api.SessionNone, (*Runtime).handleImages},
	{"POST", "/v1/images/pull", api.AccessAdmin, api.SessionNone, (*Runtime).handlePullImage},
	{"POST", "/v1/images/import", api.AccessAdmin, api.SessionNone, (*Runtime).handleImportImages},
	{"POST", "/v1/images/prune", api.AccessAdmin, api.SessionNone, (*Runtime).handlePruneImages},
	{"GET", "/v1/images/{name}", api.AccessAdmin, api.SessionNone, (*Runtime).handleGetImage},
	{"DELETE", "/v1/images/{name}", api.AccessAdmin, api.SessionNone, (*Runtime).handleRemoveImage},
	{"POST", "/v1/sandboxes", api.AccessAdmin, api.SessionNone, (*Runtime).handleCreate},
	{"GET", "/v1/sandboxes", api.AccessAdmin, api.SessionNone, (*Runtime).handleList},
	{"GET", "/v1/sandboxes/{id}", api.AccessRead, api.SessionNone, (*Runtime).handleGet},
	{"GET", "/v1/sandboxes/{id}/stats", api.AccessRead, api.SessionNone, (*Runtime).handleStats},
	{"DELETE", "/v1/sandboxes/{id}", api.AccessAdmin, api.SessionNone, (*Runtime).handleRemove},
	{"POST", "/v1/sandboxes/{id}/pause", api.AccessAdmin, api.SessionNone, (*Runtime).handlePause},
	{"POST", "/v1/sandboxes/{id}/resume", api.AccessAdmin, api.SessionNone, (*Runtime).handleResume},
	{"POST", "/v1/sandboxes/{id}/hibernate", api.AccessAdmin, api.SessionNone, (*Runtime).handleHibernate},
	{"POST", "/v1/sandboxes/{id}/snapshots", api.AccessAdmin, api.SessionNone, (*Runtime).handleCreateSnapshot},
	{"POST", "/v1/sandboxes/{id}/fork", api.AccessAdmin, api.SessionNone, (*Runtime).handleFork},
	{"GET", "/v1/snapshots", api.AccessAdmin, api.SessionNone, (*Runtime).handleListSnapshots},
	{"GET", "/v1/snapshots/{id}", api.AccessAdmin, api.SessionNone, (*Runtime).handleGetSnapshot},
	{"DELETE", "/v1/snapshots/{id}", api.AccessAdmin, api.SessionNone, (*Runtime).handleDeleteSnapshot},
	{"POST", "/v1/sandboxes/{id}/exec", api.AccessSessionWrite, api.SessionBody, (*Runtime).handleExec},
	{"POST", "/v1/sandboxes/{id}/sessions", api.AccessSandboxWrite, api.SessionNone, (*Runtime).handleCreateSession},
	{"GET", "/v1/sandboxes/{id}/sessions", api.AccessRead, api.SessionNone, (*Runtime).handleListSessions},
	{"GET", "/v1/sandboxes/{id}/sessions/{sid}", api.AccessRead, api.SessionPath, (*Runtime).handleGetSession},
	{"DELETE", "/v1/sandboxes/{id}/sessions/{sid}", api.AccessSandboxWrite, api.SessionPath, (*Runtime).handleDeleteSession},
	{"POST", "/v1/sandboxes/{id}/sessions/{sid}/exec", api.AccessSessionWrite, api.SessionPath, (*Runtime).handleExec},
	{"POST", "/v1/sandboxes/{id}/sessions/{sid}/cancel", api.AccessSessionWrite, api.SessionPath, (*Runtime).handleCancelSession},
	{"GET", "/v1/sandboxes/{id}/sessions/{sid}/terminal", api.AccessRead, api.SessionPath, (*Runtime).handleTerminal},
	{"GET", "/v1/sandboxes/{id}/files", api.AccessRead, api.SessionQuery, (*Runtime).handleReadFile},
	{"PUT", "/v1/sandboxes/{id}/files", api.AccessSessionWrite, api.SessionQuery, (*Runtime).handleWriteFile},
	{"DELETE", "/v1/sandboxes/{id}/files", api.AccessSessionWrite, api.SessionQuery, (*Runtime).handleRemoveFile},
	{"GET", "/v1/sandboxes/{id}/files/stat", api.AccessRead, api.SessionQuery, (*Runtime).handleStatFile},
	{"GET", "/v1/sandboxes/{id}/files/list", api.AccessRead, api.SessionQuery, (*Runtime).handleListFiles},
	{"POST", "/v1/sandboxes/{id}/files/mkdir", api.AccessSessionWrite, api.SessionQuery, (*Runtime).handleMkdir},
	{"POST", "/v1/sandboxes/{id}/files/move", api.AccessSessionWrite, api.SessionQuery, (*Runtime).handleMove},
	{"GET", "/v1/sandboxes/{id}/files/watch", api.AccessRead, api.SessionQuery, (*Runtime).handleWatchFiles},
	{"GET", "/v1/sandboxes/{id}/workspace/diff", api.AccessRead, api.SessionNone, (*Runtime).handleWorkspaceDiff},
	{"GET", "/v1/sandboxes/{id}/workspace/export", api.AccessRead, api.SessionNone, (*Runtime).handleWorkspaceExport},
	{"PATCH", "/v1/sandboxes/{id}/env", api.AccessSandboxWrite, api.SessionNone, (*Runtime).handlePatchEnv},
	{"PATCH", "/v1/sandboxes/{id}/permissions", api.AccessSandboxWrite, api.SessionNone, (*Runtime).handleSetPermissions},
	{"PATCH", "/v1/sandboxes/{id}/network", api.AccessSandboxWrite, api.SessionNone, (*Runtime).handleSetNetwork},
	{"POST", "/v1/sandboxes/{id}/ports", api.AccessSandboxWrite, api.SessionNone, (*Runtime).handleExposePort},
	{"GET", "/v1/sandboxes/{id}/ports", api.AccessRead, api.SessionNone, (*Runtime).handleListPorts},
	{"DELETE", "/v1/sandboxes/{id}/ports/{port}", api.AccessSandboxWrite, api.SessionNone, (*Runtime).handleUnexposePort},
	{"POST", "/v1/sandboxes/{id}/git/checkout", api.AccessSessionWrite, api.SessionBody, (*Runtime).handleGitCheckout},
	{"POST", "/v1/sandboxes/{id}/contexts", api.AccessSandboxWrite, api.SessionBody, (*Runtime).handleCreateContext},
	{"GET", "/v1/sandboxes/{id}/contexts", api.AccessRead, api.SessionNone, (*Runtime).handleListContexts},
	{"DELETE", "/v1/sandboxes/{id}/contexts/{cid}", api.AccessSandboxWrite, api.SessionNone, (*Runtime).handleDeleteContext},
	{"POST", "/v1/sandboxes/{id}/contexts/{cid}/run", api.AccessSandboxWrite, api.SessionNone, (*Runtime).handleRunCode},
	{"POST", "/v1/sandboxes/{id}/processes", api.AccessSandboxWrite, api.SessionNone, (*Runtime).handleStartProcess},
	{"GET", "/v1/sandboxes/{id}/processes", api.AccessRead, api.SessionNone, (*Runtime).handleListProcesses},
	{"DELETE", "/v1/sandboxes/{id}/processes", api.AccessSandboxWrite, api.SessionNone, (*Runtime).handleRemoveFinished},
	{"POST", "/v1/sandboxes/{id}/processes/kill", api.AccessSandboxWrite, api.SessionNone, (*Runtime).handleKillProcess},
	{"GET", "/v1/sandboxes/{id}/processes/{pid}", api.AccessRead, api.SessionNone, (*Runtime).handleGetProcess},
	{"DELETE", "/v1/sandboxes/{id}/processes/{pid}", api.AccessSandboxWrite, api.SessionNone, (*Runtime).handleRemoveProcess},
	{"POST", "/v1/sandboxes/{id}/processes/{pid}/kill", api.AccessSandboxWrite, api.SessionNone, (*Runtime).handleKillProcess},
	{"GET", "/v1/sandboxes/{id}/processes/{pid}/logs", api.AccessRead, api.SessionNone, (*Runtime).handleProcessLogs},
	{"POST", "/v1/sandboxes/{id}/processes/{pid}/stdin", api.AccessSandboxWrite, api.SessionNone, (*Runtime).handleProcessStdin},
	{"DELETE", "/v1/sandboxes/{id}/processes/{pid}/stdin", api.AccessSandboxWrite, api.SessionNone, (*Runtime).handleProcessStdin},
	{"POST", "/v1/sandboxes/{id}/processes/{pid}/wait", api.AccessRead, api.SessionNone, (*Runtime).handleWaitProcess},
}

// isActivity reports whether requests to an endpoint count as use of their sandbox (idle.go):
// everything that works in it, but not reading its record, its ports or its contexts' list,
// its stats, nor pausing, resuming, snapshotting, forking or removing it — a dashboard that
// polls must not keep it awake.
func isActivity(method, pattern string) bool {
	rest, ok := strings.CutPrefix(pattern, "/v1/sandboxes/{id}/")
	switch {
	case !ok, rest == "pause", rest == "resume", rest == "hibernate", rest == "snapshots", rest == "fork":
		return false
	case method == http.MethodGet && (rest == "ports" || rest == "contexts" || rest == "sessions" || rest == "stats"):
		return false
	}
	return true
}

// Handler returns the daemon's HTTP API: the core's Routes and the extra endpoints (package
// auth's tokens API). check, when not nil, decides before each endpoint's handler (its path
// values set) whether its caller may use it; without it every caller may do everything (the
// unix socket).
func (r *Runtime) Handler(check httpapi.Check, extra ...httpapi.Endpoint) http.Handler {
	endpoints := make([]httpapi.Endpoint, 0, len(Routes)+len(extra))
	for _, rt := range Routes {
		endpoints = append(endpoints, httpapi.Endpoint{Method: rt.Method, Pattern: rt.Pattern, Access: rt.Access, Session: rt.Session,
			Handle: func(w http.ResponseWriter, req *http.Request) error { return rt.handle(r, w, req) }})
	}
	mux := http.NewServeMux()
	for _, e := range append(endpoints, extra...) {
		mux.HandleFunc(e.Method+" "+e.Pattern, r.ops.metrics.instrument(e.Method, e.Pattern, httpapi.Handle(r.log, func(w http.ResponseWriter, req *http.Request) error {
			if check != nil {
				var err error
				if req, err = check(req, e.Access, e.Session); err != nil {
					return err
				}
			}
			if isActivity(e.Method, e.Pattern) {
				defer r.busy(req.PathValue("id"))() // a request in progress is activity (idle.go)
			}
			if e.Method == http.MethodGet {
				return r.endStreamAtStop(w, req, e.Handle)
			}
			return e.Handle(w, req)
		})))
	}
	mux.HandleFunc("/", httpapi.Handle(r.log, func(_ http.ResponseWriter, req *http.Request) error {
		return api.Errorf(api.CodeNotFound, "no such endpoint: %s %s", req.Method, req.URL.Path)
	}))
	return r.logRequests(mux)
}

func (r *Runtime) handleVersion(w http.ResponseWriter, _ *http.Request) error {
	httpapi.WriteJSON(w, http.StatusOK, api.Version{Version: r.cfg.Version, Checkpoint: r.cfg.Checkpoint})
	return nil
}

func (r *Runtime) handleImages(w http.ResponseWriter, _ *http.Request) error {
	httpapi.WriteJSON(w, http.StatusOK, r.Images())
	return nil
}

// logRequests gives every API call a request id (the caller's X-Request-Id when it is a
// valid one, else a new one), answers it in the same header and logs the call with it.
func (r *Runtime) logRequests(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		start := time.Now()
		id := req.Header.Get(api.RequestIDHeader)
		if !api.ValidRequestID(id) {
			id = randomHex(8)
		}
		w.Header().Set(api.RequestIDHeader, id)
		sw := &statusWriter{ResponseWriter: w, status: http.StatusOK}
		next.ServeHTTP(sw, req)
		level := slog.LevelDebug
		if sw.status >= http.StatusInternalServerError {
			level = slog.LevelWarn
		}
		r.log.Log(req.Context(), level, "api", "request_id", id, "method", req.Method, "path", req.URL.Path, "sandbox", req.PathValue("id"),
			"status", sw.status, "duration", time.Since(start))
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
	if err := httpapi.DecodeJSON(req, &body, false); err != nil {
		return err
	}
	began := time.Now()
	sb, err := r.Create(req.Context(), body)
	observe(r.ops.metrics.create, began, err)
	if err != nil {
		return err
	}
	httpapi.WriteJSON(w, http.StatusCreated, sb)
	return nil
}

func (r *Runtime) handleList(w http.ResponseWriter, _ *http.Request) error {
	httpapi.WriteJSON(w, http.StatusOK, r.List())
	return nil
}

func (r *Runtime) handleGet(w http.ResponseWriter, req *http.Request) error {
	sb, err := r.Get(req.PathValue("id"))
	if err != nil {
		return err
	}
	httpapi.WriteJSON(w, http.StatusOK, sb)
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
	began := time.Now()
	err := r.Remove(req.PathValue("id"), force)
	observe(r.ops.metrics.remove, began, err)
	if err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}
