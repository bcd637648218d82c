package agent

import (
	"net/http"
	"testing"

	"github.com/nsbox/nsbox/api"
)

// TestWatchStream: the watch stream starts with the counts, then says after each start and
// end how many sessions are open and processes run, and which ended and how.
func TestWatchStream(t *testing.T) {
	_, srv := rootAgent(t)
	events := openStream(t, srv, http.MethodGet, "/v1/watch", "")
	next := func() api.AgentNotice {
		t.Helper()
		var n api.AgentNotice
		name, err := events.NextJSON(&n)
		if err != nil || name != api.AgentNoticeEvent {
			t.Fatalf("next notice: %q, %v", name, err)
		}
		return n
	}
	if n := next(); n != (api.AgentNotice{}) {
		t.Errorf("first notice of a new agent: %+v", n)
	}
	callJSON(t, srv, http.MethodPost, "/v1/sessions", `{"id":"s1","shell":"sh"}`, http.StatusCreated, nil)
	if n := next(); n.Sessions != 1 || n.SessionEnded != nil {
		t.Errorf("after a session started: %+v", n)
	}
	callJSON(t, srv, http.MethodPost, "/v1/sessions", `{"id":"s2","shell":"sh"}`, http.StatusCreated, nil)
	next()
	call(t, srv, http.MethodPost, "/v1/sessions/s1/exec", `{"command":"exit 5"}`)
	if n := next(); n.Sessions != 1 || n.SessionEnded == nil || *n.SessionEnded != (api.SessionEnd{ID: "s1", Reason: api.SessionShellExited}) {
		t.Errorf("after s1's shell exited: %+v", n)
	}
	call(t, srv, http.MethodDelete, "/v1/sessions/s2", "")
	if n := next(); n.Sessions != 0 || n.SessionEnded == nil || *n.SessionEnded != (api.SessionEnd{ID: "s2", Reason: api.SessionDeleted}) {
		t.Errorf("after s2 was deleted: %+v", n)
	}
	callJSON(t, srv, http.MethodPost, "/v1/processes", `{"id":"p","argv":["sh","-c","exit 3"]}`, http.StatusCreated, nil)
	started, ended := next(), next()
	if started.Processes > 1 || started.ProcessExited != nil {
		t.Errorf("after a process started: %+v", started)
	}
	if p := ended.ProcessExited; ended.Processes != 0 || p == nil || p.ID != "p" || p.Status != api.ProcessExited || p.ExitCode != 3 {
		t.Errorf("after the process exited: %+v (%+v)", ended, p)
	}
}
