package httpapi

import (
	"bufio"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/nsbox/nsbox/api"
)

// TestAdaptersOverNetHTTP serves api's idiom through the adapters on a real net/http server:
// a handler's error answered with its status and envelope (and read back by ReadError), an
// error that is not the API's answered as internal, a strict body decode, and an event that
// reaches the client while its handler still runs (the adapter's Flush).
func TestAdaptersOverNetHTTP(t *testing.T) {
	release := make(chan struct{})
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	mux := http.NewServeMux()
	mux.Handle("GET /missing", Handle(log, func(http.ResponseWriter, *http.Request) error {
		return api.Errorf(api.CodeNotFound, "no sandbox %q", "x")
	}))
	mux.Handle("GET /broken", Handle(log, func(http.ResponseWriter, *http.Request) error {
		return errors.New("disk on fire")
	}))
	mux.Handle("POST /decode", Handle(log, func(w http.ResponseWriter, r *http.Request) error {
		var v struct{ Name string }
		if err := DecodeJSON(r, &v, false); err != nil {
			return err
		}
		WriteJSON(w, http.StatusCreated, v)
		return nil
	}))
	mux.Handle("GET /events", Handle(log, func(w http.ResponseWriter, r *http.Request) error {
		if !WantsEventStream(r) {
			return api.Errorf(api.CodeInvalidArgument, "ask for events")
		}
		events := NewSSEWriter(w)
		if err := events.Send("tick", map[string]int{"n": 1}); err != nil {
			return err
		}
		<-release // the client must have the event before the handler ends
		return nil
	}))
	srv := httptest.NewServer(mux)
	defer srv.Close()
	defer close(release)

	for path, want := range map[string]struct {
		status int
		code   string
	}{"/missing": {404, api.CodeNotFound}, "/broken": {500, api.CodeInternal}} {
		resp, err := http.Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		e := ReadError(resp)
		resp.Body.Close()
		if resp.StatusCode != want.status || e.Code != want.code || (path == "/missing" && e.Message != `no sandbox "x"`) {
			t.Errorf("%s: %d %+v, want %d %s", path, resp.StatusCode, e, want.status, want.code)
		}
	}

	for body, want := range map[string]int{`{"Name":"a"}`: 201, `{"Name":"a","Other":1}`: 400, ``: 400, `{"Name":`: 400} {
		resp, err := http.Post(srv.URL+"/decode", "application/json", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		got, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != want || (want == 201 && strings.TrimSpace(string(got)) != `{"Name":"a"}`) {
			t.Errorf("decode %q: %d %s, want %d", body, resp.StatusCode, got, want)
		}
	}

	req, _ := http.NewRequest("GET", srv.URL+"/events", nil)
	req.Header.Set("Accept", api.EventStream)
	client := &http.Client{Timeout: 10 * time.Second} // an event held back until the handler ends never comes
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	event, data, err := api.NewSSEReader(bufio.NewReader(resp.Body)).Next()
	if err != nil || event != "tick" || strings.TrimSpace(string(data)) != `{"n":1}` {
		t.Errorf("event before the handler ended: %q %q %v", event, data, err)
	}
}
