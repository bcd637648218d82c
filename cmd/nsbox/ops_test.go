package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/nsbox/nsbox/api"
	"github.com/nsbox/nsbox/client"
	"github.com/nsbox/nsbox/rootfs/oci/ocitest"
)

// eventWatch collects the daemon's events from one GET /v1/events stream.
type eventWatch struct {
	t      *testing.T
	events chan api.Event
	stop   context.CancelFunc
	done   chan struct{}
}

func (d *testDaemon) watchEvents(opts client.EventsOptions) *eventWatch {
	ctx, cancel := context.WithCancel(context.Background())
	w := &eventWatch{t: d.t, events: make(chan api.Event, 1024), stop: cancel, done: make(chan struct{})}
	go func() {
		defer close(w.done)
		err := d.client.FollowEvents(ctx, opts, func(ev api.Event) error {
			w.events <- ev
			return nil
		})
		if err != nil {
			d.t.Errorf("follow events: %v", err)
		}
	}()
	d.t.Cleanup(w.close)
	return w
}

func (w *eventWatch) close() {
	w.stop()
	<-w.done
}

// next waits for the next event of type typ about sandbox, skipping others, and fails the test
// if none comes within a minute (a bound for a broken daemon, not a speed check).
func (w *eventWatch) next(typ, sandbox string) api.Event {
	w.t.Helper()
	deadline := time.After(time.Minute)
	for {
		select {
		case ev := <-w.events:
			if ev.Type == typ && ev.Sandbox == sandbox {
				return ev
			}
		case <-deadline:
			w.t.Fatalf("no %s event for %s", typ, sandbox)
		}
	}
}

// scrape reads metrics in Prometheus's text format, checking that they parse.
func scrape(t *testing.T, get func() (*http.Response, error)) map[string]*dto.MetricFamily {
	t.Helper()
	resp, err := get()
	if err != nil {
		t.Fatalf("scrape: %v", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("scrape: %d %v: %s", resp.StatusCode, err, body)
	}
	if !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/plain") {
		t.Errorf("scrape: Content-Type %q", resp.Header.Get("Content-Type"))
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(bytes.NewReader(body))
	if err != nil {
		t.Fatalf("scrape does not parse: %v\n%s", err, body)
	}
	if promtool, err := exec.LookPath("promtool"); err == nil {
		check := exec.Command(promtool, "check", "metrics")
		check.Stdin = bytes.NewReader(body)
		if out, err := check.CombinedOutput(); err != nil {
			t.Errorf("promtool check metrics: %v\n%s", err, out)
		}
	}
	return families
}

// metricValue is the value of the series of family whose labels include want; ok is false
// when there is none.
func metricValue(families map[string]*dto.MetricFamily, family string, want map[string]string) (float64, bool) {
	f := families[family]
	if f == nil {
		return 0, false
	}
next:
	for _, m := range f.Metric {
		labels := map[string]string{}
		for _, l := range m.Label {
			labels[l.GetName()] = l.GetValue()
		}
		for k, v := range want {
			if labels[k] != v {
				continue next
			}
		}
		switch {
		case m.Counter != nil:
			return m.Counter.GetValue(), true
		case m.Gauge != nil:
			return m.Gauge.GetValue(), true
		case m.Untyped != nil:
			return m.Untyped.GetValue(), true
		case m.Histogram != nil:
			return float64(m.Histogram.GetSampleCount()), true
		}
	}
	return 0, false
}

// freePort is a loopback TCP port free now.
func freePort(t *testing.T) int {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// TestOperations covers stats, metrics and events of one sandbox's life: create, CPU burnt,
// traffic, a session, a process, a port, pause and resume, an OOM kill, remove; the request
// id; the JSON log.
func TestOperations(t *testing.T) {
	port := freePort(t)
	d := startDaemon(t, "--log-format", "json", "--metrics-listen", fmt.Sprintf(":%d", port))
	ctx := context.Background()
	// From the daemon's first event: nothing can be missed between the stream's open and the create.
	events := d.watchEvents(client.EventsOptions{Replay: true})
	sb := d.create(api.CreateSandboxRequest{ID: "ops", Limits: api.Limits{MemoryMB: 64}})
	created := events.next(api.EventSandboxCreated, "ops")
	if created.Details["image"] != "host" || created.Seq == 0 {
		t.Errorf("created event %+v", created)
	}
	events.next(api.EventSandboxStarted, "ops")

	st, err := d.client.SandboxStats(ctx, "ops")
	if err != nil {
		t.Fatal(err)
	}
	if st.Status != api.StatusRunning || st.MemoryLimitBytes != 64<<20 || st.MemoryBytes == 0 || st.Pids == 0 ||
		st.Sessions == nil || st.Processes == nil || *st.Processes != 0 {
		t.Errorf("stats of a new sandbox: %+v", st)
	}

	// CPU burnt in the sandbox moves its stats and its metric.
	metricsURL := fmt.Sprintf("http://127.0.0.1:%d/metrics", port)
	before := scrape(t, func() (*http.Response, error) { return http.Get(metricsURL) })
	cpuBefore, ok := metricValue(before, "nsbox_sandbox_cpu_seconds_total", map[string]string{"sandbox": "ops", "image": "host"})
	if !ok {
		t.Fatalf("no nsbox_sandbox_cpu_seconds_total for ops")
	}
	d.sh("ops", "i=0; while [ $i -lt 300000 ]; do i=$((i+1)); done")
	after := scrape(t, func() (*http.Response, error) {
		return d.http.Get("http://nsbox/metrics") // the unix socket's
	})
	cpuAfter, _ := metricValue(after, "nsbox_sandbox_cpu_seconds_total", map[string]string{"sandbox": "ops"})
	if cpuAfter <= cpuBefore {
		t.Errorf("nsbox_sandbox_cpu_seconds_total did not move: %v then %v", cpuBefore, cpuAfter)
	}
	st2, _ := d.client.SandboxStats(ctx, "ops")
	if st2.CPUSeconds <= st.CPUSeconds || st2.CPUPercent <= 0 {
		t.Errorf("CPU stats did not move: %+v then %+v", st, st2)
	}
	for family, labels := range map[string]map[string]string{
		"nsbox_sandboxes":                  {"status": "running", "image": "host"},
		"nsbox_sandbox_memory_bytes":       {"sandbox": "ops"},
		"nsbox_sandbox_memory_limit_bytes": {"sandbox": "ops"},
		"nsbox_api_requests_total":         {"method": "POST", "route": "/v1/sandboxes", "code": "201"},
		"nsbox_create_duration_seconds":    nil,
		"nsbox_exec_duration_seconds":      nil,
		"nsbox_warm_pool_takes_total":      {"image": "host", "result": "miss"},
		"nsbox_nft_rules":                  nil,
		"go_goroutines":                    nil,
	} {
		if v, ok := metricValue(after, family, labels); !ok || (family != "nsbox_nft_rules" && v == 0) {
			t.Errorf("metric %s%v: %v, found %t", family, labels, v, ok)
		}
	}

	// Traffic to the host's address of the sandbox network (the daemon's gateway) counts.
	gateway := d.net.subnet.Addr().Next()
	d.sh("ops", fmt.Sprintf("python3 -c 'import socket\ntry: socket.create_connection((\"%s\", 9), 2)\nexcept OSError: pass'", gateway))
	st3, _ := d.client.SandboxStats(ctx, "ops")
	if st3.Network.TxPackets == 0 || st3.Network.TxBytes == 0 || st3.Network.RxPackets == 0 {
		t.Errorf("no traffic counted: %+v", st3.Network)
	}

	// A session, a process, a port.
	if _, err := d.client.CreateSession(ctx, "ops", api.CreateSessionRequest{ID: "s1"}); err != nil {
		t.Fatal(err)
	}
	events.next(api.EventSessionCreated, "ops")
	if err := d.client.DeleteSession(ctx, "ops", "s1"); err != nil {
		t.Fatal(err)
	}
	if ev := events.next(api.EventSessionEnded, "ops"); ev.Details["session"] != "s1" {
		t.Errorf("session ended event %+v", ev)
	}
	if _, err := d.client.StartProcess(ctx, "ops", api.StartProcessRequest{ID: "three", Command: "exit 3"}); err != nil {
		t.Fatal(err)
	}
	if ev := events.next(api.EventProcessExited, "ops"); ev.Details["process"] != "three" || ev.Details["exitCode"] != "3" || ev.Details["status"] != api.ProcessExited {
		t.Errorf("process exited event %+v", ev)
	}
	p, err := d.client.ExposePort(ctx, "ops", api.ExposePortRequest{Port: 8000})
	if err != nil {
		t.Fatal(err)
	}
	if ev := events.next(api.EventPortExposed, "ops"); ev.Details["port"] != "8000" || ev.Details["hostPort"] != fmt.Sprint(p.HostPort) {
		t.Errorf("port exposed event %+v", ev)
	}
	if err := d.client.UnexposePort(ctx, "ops", 8000, ""); err != nil {
		t.Fatal(err)
	}
	events.next(api.EventPortUnexposed, "ops")

	// Paused: stats without the agent's counts, and not activity.
	if _, err := d.client.PauseSandbox(ctx, "ops"); err != nil {
		t.Fatal(err)
	}
	events.next(api.EventSandboxPaused, "ops")
	if st, err := d.client.SandboxStats(ctx, "ops"); err != nil || st.Status != api.StatusPaused || st.Sessions != nil || st.MemoryBytes == 0 {
		t.Errorf("stats of a paused sandbox: %+v, %v", st, err)
	}
	if _, err := d.client.ResumeSandbox(ctx, "ops"); err != nil {
		t.Fatal(err)
	}
	events.next(api.EventSandboxResumed, "ops")

	// An OOM kill: more than its 64 MB.
	d.exec("ops", api.ExecRequest{Argv: []string{"python3", "-c", "x = bytearray(256 << 20)"}})
	if ev := events.next(api.EventSandboxOOMKilled, "ops"); ev.Details["count"] == "" {
		t.Errorf("OOM event %+v", ev)
	}
	if st, _ := d.client.SandboxStats(ctx, "ops"); st.OOMKills == 0 {
		t.Errorf("stats count no OOM kill: %+v", st)
	}

	// A request id is answered, the caller's when it gives one.
	req, _ := http.NewRequest(http.MethodGet, "http://nsbox/v1/sandboxes/ops/stats", nil)
	req.Header.Set(api.RequestIDHeader, "req-42")
	resp, err := d.http.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if got := resp.Header.Get(api.RequestIDHeader); got != "req-42" {
		t.Errorf("request id answered %q, want req-42", got)
	}
	if status, _ := d.call("GET", "/v1/version", nil); status != http.StatusOK {
		t.Fatal(status)
	}

	if err := d.client.RemoveSandbox(ctx, sb.ID, client.RemoveOptions{Force: true}); err != nil {
		t.Fatal(err)
	}
	events.next(api.EventSandboxStopping, "ops")
	removed := events.next(api.EventSandboxRemoved, "ops")

	// Replay: everything kept, in order; the events after one; a since past the last.
	var replayed []api.Event
	rctx, cancel := context.WithCancel(ctx)
	err = d.client.FollowEvents(rctx, client.EventsOptions{Replay: true, Since: created.Seq - 1}, func(ev api.Event) error {
		replayed = append(replayed, ev)
		if ev.Seq == removed.Seq {
			cancel()
		}
		return nil
	})
	cancel()
	if err != nil || len(replayed) == 0 || replayed[0].Seq != created.Seq || replayed[len(replayed)-1].Seq != removed.Seq {
		t.Errorf("replay from %d: %v, %d events", created.Seq-1, err, len(replayed))
	}
	for i := 1; i < len(replayed); i++ {
		if replayed[i].Seq != replayed[i-1].Seq+1 {
			t.Errorf("replay skips from %d to %d", replayed[i-1].Seq, replayed[i].Seq)
		}
	}
	d.expectError("GET", fmt.Sprintf("/v1/events?since=%d", removed.Seq+100), nil, http.StatusConflict, api.CodeConflict)
	d.expectError("GET", "/v1/events?since=x", nil, http.StatusBadRequest, api.CodeInvalidArgument)
	d.expectError("GET", "/v1/sandboxes/ops/stats", nil, http.StatusNotFound, api.CodeNotFound)
	d.expectError("GET", "/v1/stats?stream=maybe", nil, http.StatusBadRequest, api.CodeInvalidArgument)

	// The log is JSON lines; those about a sandbox carry its id.
	events.close()
	d.stop()
	sawCreate := false
	for _, line := range strings.Split(strings.TrimSpace(d.log.String()), "\n") {
		var rec map[string]any
		if err := json.Unmarshal([]byte(line), &rec); err != nil {
			t.Errorf("log line is not JSON: %q", line)
			continue
		}
		if rec["msg"] == "sandbox created" {
			sawCreate = rec["sandbox"] == "ops"
		}
		if rec["msg"] == "api" && rec["request_id"] == nil {
			t.Errorf("api log line without request_id: %q", line)
		}
	}
	if !sawCreate {
		t.Errorf("no JSON log line of the create with sandbox=ops")
	}
}

// TestOOMEventsAfterRestart: OOM kills are events from the kernel's notification, which a
// restarted daemon registers again for the sandboxes it finds; the kills counted before it
// started are not news.
func TestOOMEventsAfterRestart(t *testing.T) {
	d := startDaemon(t)
	events := d.watchEvents(client.EventsOptions{Replay: true})
	d.create(api.CreateSandboxRequest{ID: "oom", Image: "busybox", Limits: api.Limits{MemoryMB: 32}})
	exhaust := api.ExecRequest{Argv: []string{"tail", "/dev/zero"}}
	if res := d.exec("oom", exhaust); !res.OOMKilled {
		t.Fatalf("tail /dev/zero in 32 MB: %+v", res)
	}
	if ev := events.next(api.EventSandboxOOMKilled, "oom"); ev.Details["count"] != "1" || ev.Details["total"] != "1" {
		t.Errorf("the first OOM kill's event: %+v", ev)
	}
	events.close()
	d.stop()
	d.start()
	events = d.watchEvents(client.EventsOptions{Replay: true})
	if res := d.exec("oom", exhaust); !res.OOMKilled {
		t.Fatalf("tail /dev/zero in 32 MB after the restart: %+v", res)
	}
	if ev := events.next(api.EventSandboxOOMKilled, "oom"); ev.Details["count"] != "1" || ev.Details["total"] != "2" {
		t.Errorf("the OOM kill after the restart: %+v, want count 1 of 2", ev)
	}
	// The notification is the daemon's one eventfd for the sandbox (cgroup v1): gone once the
	// remove has answered (its processes are killed).
	eventfds := func() (n int) {
		fds, _ := filepath.Glob(fmt.Sprintf("/proc/%d/fd/*", d.cmd.Process.Pid))
		for _, fd := range fds {
			if target, _ := os.Readlink(fd); target == "anon_inode:[eventfd]" {
				n++
			}
		}
		return n
	}
	with := eventfds()
	if err := d.client.RemoveSandbox(context.Background(), "oom", client.RemoveOptions{Force: true}); err != nil {
		t.Fatal(err)
	}
	_, err := os.Stat("/sys/fs/cgroup/memory/memory.oom_control")
	if without := eventfds(); err == nil && without != with-1 {
		t.Errorf("the daemon holds %d eventfds with the sandbox, %d after its remove", with, without)
	}
}

// TestStatsStreamAndCLI covers the stats streams, `nsbox stats` and `nsbox events`.
func TestStatsStreamAndCLI(t *testing.T) {
	d := startDaemon(t)
	ctx := context.Background()
	d.create(api.CreateSandboxRequest{ID: "st1"})

	// Two readings of a stream, then the stream ends with not-found when the sandbox goes.
	n := 0
	err := d.client.StreamSandboxStats(ctx, "st1", func(s api.SandboxStats) error {
		if s.ID != "st1" || s.Status != api.StatusRunning {
			t.Errorf("streamed stats %+v", s)
		}
		if n++; n == 2 {
			return io.EOF
		}
		return nil
	})
	if err != io.EOF || n != 2 {
		t.Errorf("stream: %v after %d readings", err, n)
	}
	all := 0
	err = d.client.StreamAllStats(ctx, func(list []api.SandboxStats) error {
		if len(list) != 1 || list[0].ID != "st1" {
			t.Errorf("streamed all stats %+v", list)
		}
		all++
		return io.EOF
	})
	if err != io.EOF || all != 1 {
		t.Errorf("stream of all: %v", err)
	}

	out, stderr, code := d.cli("", "stats", "--no-stream", "--json", "st1")
	var list []api.SandboxStats
	if code != 0 || json.Unmarshal([]byte(out), &list) != nil || len(list) != 1 || list[0].ID != "st1" {
		t.Errorf("nsbox stats --no-stream --json: %d %q %q", code, out, stderr)
	}
	out, _, code = d.cli("", "stats", "--no-stream")
	if code != 0 || !strings.Contains(out, "MEM USAGE / LIMIT") || !strings.Contains(out, "st1") {
		t.Errorf("nsbox stats --no-stream: %d %q", code, out)
	}
	if _, stderr, code := d.cli("", "stats", "--no-stream", "nope"); code == 0 || !strings.Contains(stderr, "not found") {
		t.Errorf("nsbox stats of a missing sandbox: %d %q", code, stderr)
	}

	// nsbox events prints a create and a remove as they happen.
	// --since 0: from the daemon's first event, so that nothing is missed before the stream is open.
	cmd := exec.Command(nsboxBin, "--socket", d.socket, "events", "--since", "0")
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
	lines := bufio.NewScanner(stdout)
	d.create(api.CreateSandboxRequest{ID: "st2"})
	if err := d.client.RemoveSandbox(ctx, "st2", client.RemoveOptions{Force: true}); err != nil {
		t.Fatal(err)
	}
	want := []string{api.EventSandboxCreated + "  st2", api.EventSandboxRemoved + "  st2"}
	// A bound for a broken daemon or CLI, not a speed check: the scan ends when it is killed.
	kill := time.AfterFunc(time.Minute, func() { _ = cmd.Process.Kill() })
	defer kill.Stop()
	for len(want) > 0 && lines.Scan() {
		if strings.Contains(lines.Text(), want[0]) {
			want = want[1:]
		}
	}
	if len(want) > 0 {
		t.Errorf("nsbox events did not print %q", want)
	}
}

// waitCounts waits until GET /v1/stats answers the sandbox's open sessions and running
// processes as want, and fails the test if it does not within a minute (a bound for a broken
// daemon, not a speed check: the agent tells the daemon of each change as it happens).
func (d *testDaemon) waitCounts(id string, sessions, processes int) {
	d.t.Helper()
	deadline := time.Now().Add(time.Minute)
	for {
		all, err := d.client.AllStats(context.Background())
		if err != nil {
			d.t.Fatal(err)
		}
		var got api.SandboxStats
		for _, st := range all {
			if st.ID == id {
				got = st
			}
		}
		if got.Sessions != nil && got.Processes != nil && *got.Sessions == sessions && *got.Processes == processes {
			return
		}
		if time.Now().After(deadline) {
			d.t.Fatalf("stats of %s: sessions %v, processes %v; want %d and %d", id, ptrValue(got.Sessions), ptrValue(got.Processes), sessions, processes)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func ptrValue(p *int) any {
	if p == nil {
		return nil
	}
	return *p
}

// truthCounts are a sandbox's open sessions and running processes as its agent lists them.
func (d *testDaemon) truthCounts(id string) (sessions, processes int) {
	d.t.Helper()
	ctx := context.Background()
	list, err := d.client.ListSessions(ctx, id)
	if err != nil {
		d.t.Fatal(err)
	}
	for _, s := range list {
		if s.Status != api.SessionEnded {
			sessions++
		}
	}
	procs, err := d.client.ListProcesses(ctx, id, api.ProcessRunning, "")
	if err != nil {
		d.t.Fatal(err)
	}
	return sessions, len(procs)
}

// TestStatsCountsFollowEnds checks the sessions and processes that stats count (the daemon
// keeps them, told by each agent's watch stream) after they end by themselves: a shell's
// exit during a JSON exec and during a streamed one, a process that exits, one killed from
// inside; across a daemon restart (whose events say which sandboxes it loaded, in which
// state, and which go on to publish the exits of processes started before it); and after a
// hibernated sandbox comes back with a new agent. Each end is an event.
func TestStatsCountsFollowEnds(t *testing.T) {
	d := startDaemon(t)
	ctx := context.Background()
	events := d.watchEvents(client.EventsOptions{Replay: true})
	d.create(api.CreateSandboxRequest{ID: "cnt"})
	d.sh("cnt", "true") // the default session (started in the background by the create)
	d.waitCounts("cnt", 1, 0)

	// A shell that exits in a JSON exec, then one in a streamed exec.
	if _, err := d.client.CreateSession(ctx, "cnt", api.CreateSessionRequest{ID: "s1"}); err != nil {
		t.Fatal(err)
	}
	d.waitCounts("cnt", 2, 0)
	if res := d.exec("cnt", api.ExecRequest{SessionID: "s1", Command: "exit 3"}); !res.SessionEnded {
		t.Errorf("exit in s1: %+v", res)
	}
	if ev := events.next(api.EventSessionEnded, "cnt"); ev.Details["session"] != "s1" || ev.Details["reason"] != api.SessionShellExited {
		t.Errorf("session ended event of s1: %+v", ev)
	}
	d.waitCounts("cnt", 1, 0)
	if _, err := d.client.CreateSession(ctx, "cnt", api.CreateSessionRequest{ID: "s2"}); err != nil {
		t.Fatal(err)
	}
	d.waitCounts("cnt", 2, 0)
	res, err := d.client.ExecStream(ctx, "cnt", api.ExecRequest{SessionID: "s2", Command: "exit 4"}, func(api.ExecEvent) error { return nil })
	if err != nil || !res.SessionEnded {
		t.Errorf("exit in s2, streamed: %+v, %v", res, err)
	}
	if ev := events.next(api.EventSessionEnded, "cnt"); ev.Details["session"] != "s2" || ev.Details["reason"] != api.SessionShellExited {
		t.Errorf("session ended event of s2: %+v", ev)
	}
	d.waitCounts("cnt", 1, 0)

	// A process that exits, and one killed from inside the sandbox.
	d.startProc("cnt", api.StartProcessRequest{ID: "seven", Command: "exit 7"})
	if ev := events.next(api.EventProcessExited, "cnt"); ev.Details["process"] != "seven" || ev.Details["exitCode"] != "7" {
		t.Errorf("process exited event of seven: %+v", ev)
	}
	sleeper := d.startProc("cnt", api.StartProcessRequest{ID: "sleeper", Argv: []string{"sleep", "1000"}})
	d.waitCounts("cnt", 1, 1)
	d.sh("cnt", fmt.Sprintf("kill %d", sleeper.PID))
	if ev := events.next(api.EventProcessExited, "cnt"); ev.Details["process"] != "sleeper" || ev.Details["signal"] != "SIGTERM" {
		t.Errorf("process exited event of sleeper: %+v", ev)
	}
	d.waitCounts("cnt", 1, 0)

	// A daemon restart: a process and a session from before it, and a hibernated sandbox whose
	// process restarts on resume.
	late := d.startProc("cnt", api.StartProcessRequest{ID: "late", Argv: []string{"sleep", "1000"}})
	if _, err := d.client.CreateSession(ctx, "cnt", api.CreateSessionRequest{ID: "s3"}); err != nil {
		t.Fatal(err)
	}
	d.waitCounts("cnt", 2, 1)
	d.create(api.CreateSandboxRequest{ID: "hib"})
	d.startProc("hib", api.StartProcessRequest{ID: "srv", Argv: []string{"sleep", "1000"}, Restart: api.RestartOnResume})
	if sessions, processes := d.truthCounts("hib"); processes != 1 {
		t.Errorf("hib runs %d processes, want its srv", processes)
	} else {
		d.waitCounts("hib", sessions, processes)
	}
	if _, err := d.client.HibernateSandbox(ctx, "hib", api.HibernateRequest{}); err != nil {
		t.Fatal(err)
	}
	events.close()
	d.stop()
	d.start()
	events = d.watchEvents(client.EventsOptions{Replay: true})
	loaded := map[string]string{}
	for len(loaded) < 2 {
		ev := <-events.events
		if ev.Type == api.EventSandboxLoaded {
			loaded[ev.Sandbox] = ev.Details["status"]
		}
	}
	if loaded["cnt"] != api.StatusRunning || loaded["hib"] != api.StatusHibernated {
		t.Errorf("loaded events: %v", loaded)
	}
	d.waitCounts("cnt", 2, 1)
	d.sh("cnt", fmt.Sprintf("kill %d", late.PID))
	if ev := events.next(api.EventProcessExited, "cnt"); ev.Details["process"] != "late" {
		t.Errorf("process exited event of late, after a daemon restart: %+v", ev)
	}
	if res := d.exec("cnt", api.ExecRequest{SessionID: "s3", Command: "exit"}); !res.SessionEnded {
		t.Errorf("exit in s3: %+v", res)
	}
	if ev := events.next(api.EventSessionEnded, "cnt"); ev.Details["session"] != "s3" {
		t.Errorf("session ended event of s3, after a daemon restart: %+v", ev)
	}
	d.waitCounts("cnt", 1, 0)

	// A new agent: the hibernated sandbox resumed.
	if _, err := d.client.ResumeSandbox(ctx, "hib"); err != nil {
		t.Fatal(err)
	}
	sessions, processes := d.truthCounts("hib")
	if processes != 1 {
		t.Errorf("hib runs %d processes after resume, want its srv", processes)
	}
	d.waitCounts("hib", sessions, processes)
	if err := d.client.RemoveSandbox(ctx, "hib", client.RemoveOptions{Force: true}); err != nil {
		t.Fatal(err)
	}
}

// TestEntrypointExitEvent: the entrypoint process's exit is an event, as any process's is,
// however soon it exits after the create.
func TestEntrypointExitEvent(t *testing.T) {
	d := startDaemon(t)
	ref := d.importImage("test/entrypoint:v1", ocitest.BusyboxImage(t)) // sh -c 'echo hi'
	events := d.watchEvents(client.EventsOptions{})
	sb := d.create(api.CreateSandboxRequest{Image: ref, RunEntrypoint: true})
	if ev := events.next(api.EventProcessExited, sb.ID); ev.Details["process"] != api.EntrypointProcess || ev.Details["status"] != api.ProcessExited || ev.Details["exitCode"] != "0" {
		t.Errorf("the entrypoint's exit event: %+v", ev)
	}
	d.waitCounts(sb.ID, 1, 0) // the default session
}

// TestOldAgentBinariesPruned: at its start the daemon removes the agent binaries of earlier
// builds (and a temporary file a write cut short left) and keeps its own; a sandbox running
// since before, on an earlier build's agent, goes on working, and so does one hibernated
// before, which resumes with the current agent.
func TestOldAgentBinariesPruned(t *testing.T) {
	d := startDaemon(t)
	dir := filepath.Join(d.dataDir, "agent")
	current, err := filepath.Glob(filepath.Join(dir, "nsbox-agent-*"))
	if err != nil || len(current) != 1 {
		t.Skipf("no embedded agent binary in %s (%v, %v): a plain go build", dir, current, err)
	}
	d.create(api.CreateSandboxRequest{ID: "old"})
	d.create(api.CreateSandboxRequest{ID: "hib"})
	if _, err := d.client.HibernateSandbox(context.Background(), "hib", api.HibernateRequest{}); err != nil {
		t.Fatal(err)
	}
	d.stop()
	// The sandboxes' agent binary becomes an earlier build's: another name, the same file.
	earlier := filepath.Join(dir, "nsbox-agent-0000000000000001")
	partial := filepath.Join(dir, ".nsbox-agent-0000000000000001-123456")
	earlierInit := filepath.Join(dir, "nsbox-init-0000000000000001")
	other := filepath.Join(dir, "README")
	if err := os.Rename(current[0], earlier); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{partial, earlierInit, other} {
		if err := os.WriteFile(f, []byte("x"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	d.start()
	exists := func(path string) bool {
		_, err := os.Stat(path)
		return err == nil
	}
	if !exists(current[0]) || exists(earlier) || exists(partial) || exists(earlierInit) || !exists(other) {
		t.Errorf("after a start: current %t, earlier %t, partial %t, an earlier init %t, another file %t (want true, false, false, false, true)",
			exists(current[0]), exists(earlier), exists(partial), exists(earlierInit), exists(other))
	}
	if inits, _ := filepath.Glob(filepath.Join(dir, "nsbox-init-*")); len(inits) != 1 {
		t.Errorf("init binaries after a start: %v, want the current one", inits)
	}
	for _, id := range []string{"old", "hib"} {
		if out := d.sh(id, "echo ok"); out != "ok\n" {
			t.Errorf("%s after its agent binary was removed: %q", id, out)
		}
	}
}
