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
	"time"

	"github.com/nsbox/nsbox/api"
	"github.com/nsbox/nsbox/client"
)

// TestBurstKeepsFewThreads: a burst of creates does not leave the daemon with a thread per
// create it ran at once, nor one per running sandbox (starts run on threads that end with them,
// at most two per CPU at a time; agents are reaped through their pidfds, not a wait4 each), and
// once the burst's sandboxes are removed the daemon returns to its idle footprint: its threads,
// and its RSS within a few MB (what the first use of code paths and grown maps keep).
func TestBurstKeepsFewThreads(t *testing.T) {
	d := startDaemon(t)
	// Idle, as after a first sandbox: its code paths are paged in.
	d.create(api.CreateSandboxRequest{ID: "first", Image: "busybox"})
	if err := d.client.RemoveSandbox(context.Background(), "first", client.RemoveOptions{Force: true}); err != nil {
		t.Fatal(err)
	}
	for _, leak := range d.leaks() {
		t.Fatalf("after the first sandbox: %s", leak)
	}
	idle, idleRSS := d.threads(), d.rssKB()
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
	burstThreads, burstRSS := d.threads(), d.rssKB()
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := d.client.RemoveSandbox(context.Background(), fmt.Sprintf("b%d", i), client.RemoveOptions{Force: true}); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	for _, leak := range d.leaks() { // the teardowns are done
		t.Fatalf("after the burst's removes: %s", leak)
	}
	// The daemon returns freed memory 2 s after the last create or remove (trimDelay); the
	// threads its starts and teardowns blocked it ends at once (onOwnThread). Go never ends an
	// idle thread, and a burst on N CPUs may leave a few more than the first sandbox did (ones
	// that ran goroutines beside a system call, found idle at "idle" by chance): up to N + 2,
	// against one per sandbox (20) without onOwnThread.
	const rssSlackKB = 4 << 10
	threadLimit := idle + runtime.NumCPU() + 2
	threads, rss := d.threads(), d.rssKB()
	for deadline := time.Now().Add(20 * time.Second); (threads > threadLimit || rss > idleRSS+rssSlackKB) && time.Now().Before(deadline); {
		time.Sleep(100 * time.Millisecond)
		threads, rss = d.threads(), d.rssKB()
	}
	t.Logf("threads %d → %d → %d, RSS %d → %d → %d kB (idle → %d sandboxes → removed)", idle, burstThreads, threads, idleRSS, burstRSS, rss, n)
	if threads > threadLimit {
		t.Errorf("the daemon kept %d threads after the burst's sandboxes were removed (%d idle, at most %d expected)", threads, idle, threadLimit)
	}
	if rss > idleRSS+rssSlackKB {
		t.Errorf("the daemon kept %d kB RSS after the burst's sandboxes were removed (%d kB idle, at most %d more expected)", rss, idleRSS, rssSlackKB)
	}
}

var threadsLine = regexp.MustCompile(`(?m)^Threads:\s+(\d+)$`)

// threads is how many threads the daemon has.
func (d *testDaemon) threads() int {
	d.t.Helper()
	return d.statusField(threadsLine)
}

var rssLine = regexp.MustCompile(`(?m)^VmRSS:\s+(\d+) kB$`)

// rssKB is the daemon's resident set size.
func (d *testDaemon) rssKB() int {
	d.t.Helper()
	return d.statusField(rssLine)
}

// statusField is the number line matches (its first group) in the daemon's /proc/<pid>/status.
func (d *testDaemon) statusField(line *regexp.Regexp) int {
	d.t.Helper()
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", d.cmd.Process.Pid))
	m := line.FindSubmatch(data)
	if err != nil || m == nil {
		d.t.Fatalf("%s of the daemon: %v", line, err)
	}
	n, _ := strconv.Atoi(string(m[1]))
	return n
}
