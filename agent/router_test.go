package agent

import (
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/nsbox/nsbox/agent/httpd"
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
		route.handle = func(_ *Agent, w *httpd.ResponseWriter, r *httpd.Request) error {
			w.SetHeader("Route", pattern)
			w.SetHeader("Values", r.PathValue("sid")+"|"+r.PathValue("cid")+"|"+r.PathValue("pid"))
			return nil
		}
		agentRoutes = append(agentRoutes, route)
	}
	// Both served over HTTP, the router by package httpd as the agent serves it.
	rt := serveAgent(t, &Agent{log: slog.Default()})
	ref := httptest.NewServer(mux)
	defer ref.Close()
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
		want, got := send(t, ref.Client(), method, ref.URL+target), send(t, rt.Client(), method, rt.URL+target)
		for _, h := range []string{"Route", "Values", "Allow"} {
			if g, w := got.Header.Get(h), want.Header.Get(h); g != w {
				t.Errorf("%s: %s %q, want %q", req, h, g, w)
			}
		}
		if got.StatusCode != want.StatusCode {
			t.Errorf("%s: status %d, want %d", req, got.StatusCode, want.StatusCode)
		}
	}
}

// send makes a request without a body and returns its answer, read to its end.
func send(t *testing.T, c *http.Client, method, url string) *http.Response {
	t.Helper()
	req, err := http.NewRequest(method, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp
}
