package main

import (
	"context"
	"fmt"
	"os"
	"regexp"
	"runtime"
	"strconv"
	"sync"
	"testing"

	"github.com/nsbox/nsbox/api"
)

// TestBurstKeepsFewThreads: a burst of creates does not leave the daemon with a thread per
// create it ran at once, nor one per running sandbox (starts run on threads that end with them,
// at most two per CPU at a time; agents are reaped through their pidfds, not a wait4 each).
func TestBurstKeepsFewThreads(t *testing.T) {
	d := startDaemon(t)
	idle := d.threads()
	const n = 20
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := d.client.CreateSandbox(context.Background(), api.CreateSandboxRequest{ID: fmt.Sprintf("b%d", i), Image: "busybox"}); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	// The runtime keeps a few threads for the CPUs, its monitor and the poller; 20 more would be
	// one per sandbox or per concurrent start.
	if limit := idle + 2*runtime.NumCPU() + 8; d.threads() > limit {
		t.Errorf("the daemon has %d threads with %d sandboxes made at once (%d before, at most %d expected)", d.threads(), n, idle, limit)
	}
}

var threadsLine = regexp.MustCompile(`(?m)^Threads:\s+(\d+)$`)

// threads is how many threads the daemon has.
func (d *testDaemon) threads() int {
	d.t.Helper()
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", d.cmd.Process.Pid))
	m := threadsLine.FindSubmatch(data)
	if err != nil || m == nil {
		d.t.Fatalf("threads of the daemon: %v", err)
	}
	n, _ := strconv.Atoi(string(m[1]))
	return n
}
