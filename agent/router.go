package agent

import (
	"net/url"
	"slices"
	"strings"

	"github.com/nsbox/nsbox/agent/httpd"
	"github.com/nsbox/nsbox/api"
)

// agentRoutes are the agent's endpoints, tried in order: the first whose pattern matches the
// path and whose method is the request's serves it (a literal segment is listed before a
// wildcard in the same place, as http.ServeMux would prefer it). A pattern's segments are
// literal or one {name} wildcard, which the handler reads with PathValue.
//
// A table matched segment by segment instead of an http.ServeMux: the mux's routing tree for
// these patterns took ~29 kB of heap, kept resident for the life of an agent (which never
// collects: an idle sandbox's agent allocates less than its first GC's goal); this table is
// static data.
var agentRoutes = []struct {
	method, pattern string
	handle          func(*Agent, *httpd.ResponseWriter, *httpd.Request) error
}{
	{"GET", "/v1/health", (*Agent).handleHealth},
	{"PUT", "/v1/config", (*Agent).handleConfig},
	{"POST", "/v1/shutdown", (*Agent).handleShutdown},
	{"GET", "/v1/watch", (*Agent).handleWatch},
	{"PUT", "/v1/env", (*Agent).handlePutEnv},
	{"GET", "/v1/env", (*Agent).handleGetEnv},
	{"POST", "/v1/state/save", (*Agent).handleSaveState},
	{"POST", "/v1/state/restore", (*Agent).handleRestoreState},
	{"POST", "/v1/state/continue", (*Agent).handleContinue},

	{"POST", "/v1/sessions", (*Agent).handleCreateSession},
	{"GET", "/v1/sessions", (*Agent).handleListSessions},
	{"GET", "/v1/sessions/{sid}", (*Agent).handleGetSession},
	{"DELETE", "/v1/sessions/{sid}", (*Agent).handleDeleteSession},
	{"POST", "/v1/sessions/{sid}/exec", (*Agent).handleExec},
	{"POST", "/v1/sessions/{sid}/cancel", (*Agent).handleCancel},
	{"GET", "/v1/sessions/{sid}/terminal", (*Agent).handleTerminalOutput},
	{"POST", "/v1/sessions/{sid}/terminal/input", (*Agent).handleTerminalInput},
	{"POST", "/v1/sessions/{sid}/terminal/resize", (*Agent).handleTerminalResize},

	{"POST", "/v1/contexts", (*Agent).handleCreateContext},
	{"GET", "/v1/contexts", (*Agent).handleListContexts},
	{"DELETE", "/v1/contexts/{cid}", (*Agent).handleDeleteContext},
	{"POST", "/v1/contexts/{cid}/run", (*Agent).handleRunCode},

	{"POST", "/v1/git/checkout", (*Agent).handleGitCheckout},

	{"POST", "/v1/processes", (*Agent).handleStartProcess},
	{"GET", "/v1/processes", (*Agent).handleListProcesses},
	{"DELETE", "/v1/processes", (*Agent).handleRemoveFinished},
	{"POST", "/v1/processes/kill", (*Agent).handleKillAll},
	{"GET", "/v1/processes/{pid}", (*Agent).handleGetProcess},
	{"DELETE", "/v1/processes/{pid}", (*Agent).handleRemoveProcess},
	{"POST", "/v1/processes/{pid}/kill", (*Agent).handleKillProcess},
	{"GET", "/v1/processes/{pid}/logs", (*Agent).handleProcessLogs},
	{"POST", "/v1/processes/{pid}/stdin", (*Agent).handleProcessStdin},
	{"DELETE", "/v1/processes/{pid}/stdin", (*Agent).handleProcessStdin},
	{"POST", "/v1/processes/{pid}/wait", (*Agent).handleWaitProcess},
}

// serve is the agent's HTTP handler: it serves agentRoutes as http.ServeMux would, a GET route
// serving HEAD too; 404 for a path no pattern matches, 405 (with Allow) for one that only
// patterns of other methods match.
func (a *Agent) serve(w *httpd.ResponseWriter, r *httpd.Request) {
	var allow []string
	for _, route := range agentRoutes {
		name, value, ok := match(route.pattern, r.Path)
		if !ok {
			continue
		}
		if route.method != r.Method && (route.method != httpd.MethodGet || r.Method != httpd.MethodHead) {
			allow = append(allow, route.method)
			if route.method == httpd.MethodGet {
				allow = append(allow, httpd.MethodHead)
			}
			continue
		}
		if name != "" {
			r.SetPathValue(name, value)
		}
		if err := route.handle(a, w, r); err != nil {
			api.ServeError(a.log, w, err)
		}
		return
	}
	if len(allow) > 0 {
		slices.Sort(allow)
		w.SetHeader("Allow", strings.Join(slices.Compact(allow), ", "))
		plainError(w, httpd.StatusMethodNotAllowed, "Method Not Allowed")
		return
	}
	plainError(w, httpd.StatusNotFound, "404 page not found")
}

// plainError answers status with msg as text, as net/http's Error does.
func plainError(w *httpd.ResponseWriter, status int, msg string) {
	w.SetHeader("Content-Type", "text/plain; charset=utf-8")
	w.SetHeader("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	_, _ = w.Write([]byte(msg + "\n"))
}

// match reports whether the escaped path matches pattern, and returns the name of the
// pattern's wildcard, if it has one, and the segment it matched, unescaped.
func match(pattern, path string) (name, value string, ok bool) {
	for {
		p, pRest, pMore := strings.Cut(pattern, "/")
		s, sRest, sMore := strings.Cut(path, "/")
		if len(p) > 2 && p[0] == '{' && p[len(p)-1] == '}' {
			v, err := url.PathUnescape(s)
			if s == "" || err != nil {
				return "", "", false
			}
			name, value = p[1:len(p)-1], v
		} else if p != s {
			return "", "", false
		}
		if pMore != sMore {
			return "", "", false
		}
		if !pMore {
			return name, value, true
		}
		pattern, path = pRest, sRest
	}
}
