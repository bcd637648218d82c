package main

import (
	"context"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nsbox/nsbox/api"
	"github.com/nsbox/nsbox/client"
)

// TestExecReusesConnections runs execs one after another through the Go SDK and checks that
// neither hop dials again: the SDK keeps its one connection to the daemon, and the daemon the
// connection to the sandbox's agent that the create's health check made (its debug log says, for every exec, whether the
// connection it got was one used before). An exec's answer is a chunked stream of frames: a
// reader that closes it after the exit frame, before the chunked end, loses its connection.
func TestExecReusesConnections(t *testing.T) {
	d := startDaemon(t)
	for _, sh := range shells {
		t.Run(sh.name, func(t *testing.T) {
			id := "reuse-" + sh.name
			d.create(api.CreateSandboxRequest{ID: id, Image: sh.image})
			var dials atomic.Int32
			sdk := client.NewWithHTTPClient(&http.Client{Transport: &http.Transport{
				DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
					dials.Add(1)
					var dialer net.Dialer
					return dialer.DialContext(ctx, "unix", d.socket)
				},
			}})
			const execs = 8
			for i := range execs {
				res, err := sdk.Exec(context.Background(), id, api.ExecRequest{Command: "echo $((40+2))"})
				if err != nil || res.ExitCode != 0 || res.Stdout != "42\n" {
					t.Fatalf("exec %d: %+v, %v", i, res, err)
				}
			}
			if n := dials.Load(); n != 1 {
				t.Errorf("the SDK dialed the daemon %d times for %d execs, want once", n, execs)
			}
			// The log comes through a pipe: its last lines may lag the answers.
			var timed []string
			for deadline := time.Now().Add(10 * time.Second); len(timed) < execs; time.Sleep(20 * time.Millisecond) { // a guard, not a timing assertion
				if time.Now().After(deadline) {
					t.Fatalf("the daemon's log timed %d execs of %s, want %d", len(timed), id, execs)
				}
				timed = timed[:0]
				for _, line := range strings.Split(d.log.String(), "\n") {
					if strings.Contains(line, "msg=\"exec timed\"") && strings.Contains(line, "sandbox="+id+" ") {
						timed = append(timed, line)
					}
				}
			}
			// The first exec too: the create's health check left its connection idle for it
			// (the watch stream dials one of its own).
			for i, line := range timed {
				if !strings.Contains(line, "reused=true") {
					t.Errorf("exec %d dialed the agent: %s", i, line)
				}
			}
		})
	}
}
