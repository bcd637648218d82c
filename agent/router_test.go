package agent

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// TestRouterMatchesServeMux checks the agent's router against an http.ServeMux with the same
// patterns: the same route (or 404, or 405 with the same Allow) and the same path values.
func TestRouterMatchesServeMux(t *testing.T) {
	mux := http.NewServeMux()
	for _, route := range agentRoutes {
		pattern := route.method + " " + route.pattern
		mux.HandleFunc(pattern, func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Route", pattern)
			w.Header().Set("Values", r.PathValue("sid")+"|"+r.PathValue("cid")+"|"+r.PathValue("pid"))
		})
	}
	// The router, with each table entry's handler replaced by one that says which it is.
	saved := agentRoutes
	defer func() { agentRoutes = saved }()
	agentRoutes = nil
	for _, route := range saved {
		pattern := route.method + " " + route.pattern
		route.handle = func(_ *Agent, w http.ResponseWriter, r *http.Request) error {
			w.Header().Set("Route", pattern)
			w.Header().Set("Values", r.PathValue("sid")+"|"+r.PathValue("cid")+"|"+r.PathValue("pid"))
			return nil
		}
		agentRoutes = append(agentRoutes, route)
	}
	rt := router{&Agent{}}
	var requests []string
	for _, route := range saved {
		path := strings.NewReplacer("{sid}", "s-1", "{cid}", "c.2", "{pid}", "42").Replace(route.pattern)
		for _, method := range []string{"GET", "HEAD", "POST", "PUT", "DELETE"} {
			requests = append(requests, method+" "+path, method+" "+path+"/x")
		}
	}
	requests = append(requests, "GET /", "GET /v1", "GET /v1/sessions/", "GET /v1/sessions/a%20b", "POST /v1/processes/kill",
		"GET /v1/processes/kill", "DELETE /v1/processes/kill", "GET /v2/health", "GET /v1/health/")
	for _, req := range requests {
		method, target, _ := strings.Cut(req, " ")
		want, got := httptest.NewRecorder(), httptest.NewRecorder()
		mux.ServeHTTP(want, httptest.NewRequest(method, target, nil))
		rt.ServeHTTP(got, httptest.NewRequest(method, target, nil))
		for _, h := range []string{"Route", "Values", "Allow"} {
			if g, w := got.Header().Get(h), want.Header().Get(h); g != w {
				t.Errorf("%s: %s %q, want %q", req, h, g, w)
			}
		}
		if got.Code != want.Code {
			t.Errorf("%s: status %d, want %d", req, got.Code, want.Code)
		}
	}
}
