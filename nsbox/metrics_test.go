package nsbox

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/nsbox/nsbox/api"
)

// TestMetricsScrape scrapes the fake core's /metrics: the sandbox's own series while it
// exists, none once it is removed; requests by route and code; creates counted.
func TestMetricsScrape(t *testing.T) {
	c := newTestCore(t, 0)
	h := c.Handler(nil)
	scrape := func() string {
		w := httptest.NewRecorder()
		h.ServeHTTP(w, httptest.NewRequest(http.MethodGet, "/metrics", nil))
		if w.Code != http.StatusOK || w.Header().Get(api.RequestIDHeader) == "" {
			t.Fatalf("scrape: %d, request id %q", w.Code, w.Header().Get(api.RequestIDHeader))
		}
		parser := expfmt.NewTextParser(model.UTF8Validation)
		if _, err := parser.TextToMetricFamilies(strings.NewReader(w.Body.String())); err != nil {
			t.Fatalf("scrape does not parse: %v", err)
		}
		return w.Body.String()
	}
	w := httptest.NewRecorder()
	h.ServeHTTP(w, httptest.NewRequest(http.MethodPost, "/v1/sandboxes", strings.NewReader(`{"id":"box"}`)))
	if w.Code != http.StatusCreated {
		t.Fatalf("create: %d %s", w.Code, w.Body)
	}
	body := scrape()
	for _, want := range []string{
		`nsbox_sandbox_cpu_seconds_total{image="host",sandbox="box"} 1`,
		`nsbox_sandbox_memory_limit_bytes{image="host",sandbox="box"} 6.7108864e+07`,
		`nsbox_sandboxes{image="host",status="running"} 1`,
		`nsbox_api_requests_total{code="201",method="POST",route="/v1/sandboxes"} 1`,
		`nsbox_create_duration_seconds_count 1`,
		`nsbox_warm_pool_takes_total{image="host",result="miss"} 1`,
		`go_goroutines`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("the scrape has no %s", want)
		}
	}
	if err := c.Remove("box", true); err != nil {
		t.Fatal(err)
	}
	if body := scrape(); strings.Contains(body, `sandbox="box"`) || strings.Contains(body, "nsbox_sandboxes{") {
		t.Errorf("a removed sandbox's series are still there")
	}
}
