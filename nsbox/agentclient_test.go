package nsbox

import (
	"context"
	"net"
	"net/http"
	"path/filepath"
	"testing"

	"github.com/nsbox/nsbox/api"
	"github.com/nsbox/nsbox/api/httpapi"
)

// A watch stream on its own connection: its notices are read, and a stream that is still open
// (here after a notice that is not JSON) is closed at once, not read to its end first.
func TestWatchStreamOwnConnection(t *testing.T) {
	ln, err := net.Listen("unix", filepath.Join(t.TempDir(), "agent.sock"))
	if err != nil {
		t.Fatal(err)
	}
	gone := make(chan struct{})
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/v1/watch" || r.Header.Get("Accept") != api.EventStream {
			http.Error(w, "unexpected request", http.StatusBadRequest)
			return
		}
		events := httpapi.NewSSEWriter(w)
		_ = events.Send(api.AgentNoticeEvent, api.AgentNotice{Sessions: 2, Processes: 1})
		_, _ = w.Write([]byte("event: notice\ndata: {not json\n\n"))
		w.(http.Flusher).Flush()
		<-r.Context().Done() // the stream stays open until the daemon goes
		close(gone)
	})}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })

	c := &agentClient{dial: func(ctx context.Context) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", ln.Addr().String())
	}}
	events, err := c.watch(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	var n api.AgentNotice
	if _, err := events.NextJSON(&n); err != nil || n.Sessions != 2 || n.Processes != 1 {
		t.Fatalf("first notice: %+v, %v", n, err)
	}
	if _, err := events.NextJSON(&n); err == nil {
		t.Fatal("a notice that is not JSON was read")
	}
	// Before, Close read the open stream to its end: it hung here (until the test's timeout).
	_ = events.Close()
	<-gone // the agent's side saw the stream closed
}
