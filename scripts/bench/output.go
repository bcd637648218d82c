package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"time"

	"golang.org/x/sys/unix"

	"github.com/nsbox/nsbox/api"
)

// outputSection measures 100 MiB of a command's output through the exec API — answered as raw
// frames (nothing encoded or spooled) and kept whole (the Go SDK's Exec) or written to
// io.Discard as it comes (ExecTo, as cat writes to /dev/null), answered as one JSON document
// (what curl gets: the daemon spools it, then encodes it; decoded by encoding/json) and
// streamed as Server-Sent Events — against `cat` of the same file inside the sandbox, into /dev/null and through a
// pipe into another cat, timed there by bash's $EPOCHREALTIME. Text (base64 lines, plain JSON
// strings) and random bytes (base64 in JSON) are measured apart. The daemon's resident memory
// is read before, after and at its peak (VmHWM, reset before the measured runs).
func (b *bench) outputSection(ctx context.Context, n int) (err error) {
	d, err := b.daemon(ctx, "nsbox", true, "")
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, d.removeAllSandboxes()) }()
	sb, err := roomyHostSandbox(ctx, d)
	if err != nil {
		return err
	}
	const size = 100 << 20
	files := []struct{ name, path, make string }{
		{"text", "/workspace/out.txt", fmt.Sprintf("base64 -w 76 /dev/urandom | head -c %d > /workspace/out.txt", size)},
		{"binary", "/workspace/out.bin", fmt.Sprintf("head -c %d /dev/urandom > /workspace/out.bin", size)},
	}
	pid := d.cmd.Process.Pid
	before, err := statusKB(pid, "VmRSS")
	if err != nil {
		return err
	}
	if err := os.WriteFile(fmt.Sprintf("/proc/%d/clear_refs", pid), []byte("5"), 0); err != nil {
		return fmt.Errorf("reset the daemon's peak RSS: %w", err)
	}
	rounds := min(n, 5)
	for _, f := range files {
		if _, err := execOK(ctx, d, sb.ID, api.ExecRequest{Command: f.make}); err != nil {
			return fmt.Errorf("make %s: %w", f.path, err)
		}
		fmt.Printf("output %s, 100 MiB: 1 warm-up, then %d measured rounds, each case once per round in random order\n", f.name, rounds)
		samples := map[string][]time.Duration{}
		// CPU time of the client (this process), the daemon and the agent, per case.
		cpu := map[string][][3]time.Duration{}
		for i := range 1 + rounds {
			order := []int{0, 1, 2, 3, 4, 5}
			rand.Shuffle(len(order), func(a, b int) { order[a], order[b] = order[b], order[a] })
			for _, k := range order {
				before := cpuTimes(sb.PID, pid)
				took, err := outputCase(ctx, d, sb.ID, k, f.path, size)
				if err != nil {
					return fmt.Errorf("%s %s (round %d): %w", f.name, outputCases[k].name, i+1, err)
				}
				after := cpuTimes(sb.PID, pid)
				if i > 0 {
					samples[outputCases[k].name] = append(samples[outputCases[k].name], took)
					cpu[outputCases[k].name] = append(cpu[outputCases[k].name], [3]time.Duration{after[0] - before[0], after[1] - before[1], after[2] - before[2]})
				}
			}
		}
		w := newTable()
		fmt.Fprintln(w, "name\tmedian MB/s\tmin MB/s\tmax MB/s\tCPU s client/daemon/agent (mean)\tmedian ÷ peer's\t")
		for _, c := range outputCases {
			s := summarize(samples[c.name])
			rate := func(d time.Duration) string { return fmt.Sprintf("%.0f", size/d.Seconds()/1e6) }
			vs := ""
			for _, peer := range c.peers { // throughput ratios: the peer's median time ÷ this case's
				vs += fmt.Sprintf("%.2f× %s  ", float64(median(samples[peer]))/float64(s.median), peer)
			}
			var sum [3]time.Duration
			for _, t := range cpu[c.name] {
				sum[0], sum[1], sum[2] = sum[0]+t[0], sum[1]+t[1], sum[2]+t[2]
			}
			n := time.Duration(len(cpu[c.name]))
			cpuCol := fmt.Sprintf("%.2f / %.2f / %.2f", (sum[0] / n).Seconds(), (sum[1] / n).Seconds(), (sum[2] / n).Seconds())
			fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\t\n", c.name, rate(s.median), rate(s.max), rate(s.min), cpuCol, vs)
		}
		w.Flush()
		fmt.Println()
	}
	after, err := statusKB(pid, "VmRSS")
	if err != nil {
		return err
	}
	peak, err := statusKB(pid, "VmHWM")
	if err != nil {
		return err
	}
	fmt.Printf("daemon RSS: %.1f MiB before, %.1f MiB after, peak %.1f MiB during the runs\n\n", before/1024, after/1024, peak/1024)
	_, err = d.client.Exec(ctx, sb.ID, api.ExecRequest{Command: "rm -f /workspace/out.txt /workspace/out.bin"})
	return err
}

// outputCases are the API cases, then the peers they are compared with.
var outputCases = []struct {
	name  string
	peers []string
}{
	{"exec, frames, kept (Exec)", []string{"cat > /dev/null", "cat | cat > /dev/null"}},
	{"exec, frames to io.Discard (ExecTo)", []string{"cat > /dev/null", "cat | cat > /dev/null"}},
	{"exec, one JSON answer", []string{"cat > /dev/null", "cat | cat > /dev/null"}},
	{"exec, streamed (SSE)", []string{"cat > /dev/null", "cat | cat > /dev/null"}},
	{"cat > /dev/null", nil},
	{"cat | cat > /dev/null", nil},
}

// outputCase runs case k of outputCases on the file at path, of size bytes.
func outputCase(ctx context.Context, d *daemon, id string, k int, path string, size int) (time.Duration, error) {
	c := d.client
	req := api.ExecRequest{Argv: []string{"cat", path}}
	start := time.Now()
	got := 0
	switch k {
	case 0, 2:
		// Timed until the bytes are in hand: Stdout as it is from frames (raw bytes), decoded
		// from JSON.
		var res *api.ExecResult
		var err error
		if k == 0 {
			if res, err = c.Exec(ctx, id, req); err == nil {
				got = len(res.Stdout)
			}
		} else if res, err = d.execJSON(ctx, id, req); err == nil {
			var stdout []byte
			stdout, _, err = res.Output()
			got = len(stdout)
		}
		took := time.Since(start)
		if err == nil && (got != size || res.Truncated) {
			err = fmt.Errorf("got %d bytes (truncated %v), want %d", got, res.Truncated, size)
		}
		return took, err
	case 1:
		var w countingWriter
		res, err := c.ExecTo(ctx, id, req, &w, &w)
		took := time.Since(start)
		if err == nil && (int(w) != size || res.Truncated) {
			err = fmt.Errorf("got %d bytes (truncated %v), want %d", w, res.Truncated, size)
		}
		return took, err
	case 3:
		_, err := c.ExecStream(ctx, id, req, func(ev api.ExecEvent) error {
			if ev.Type != api.EventStdout {
				return nil
			}
			b, err := ev.Bytes()
			got += len(b)
			return err
		})
		took := time.Since(start)
		if err == nil && got != size {
			err = fmt.Errorf("got %d bytes, want %d", got, size)
		}
		return took, err
	case 4:
		return timedInside(ctx, c, id, "cat "+path+" > /dev/null")
	}
	return timedInside(ctx, c, id, "cat "+path+" | cat > /dev/null")
}

// countingWriter counts what is written to it, and drops it (io.Discard that counts).
type countingWriter int

func (w *countingWriter) Write(p []byte) (int, error) {
	*w += countingWriter(len(p))
	return len(p), nil
}

// execJSON runs an exec answered as one JSON document, as curl gets it (no Accept header),
// decoded by encoding/json.
func (d *daemon) execJSON(ctx context.Context, id string, req api.ExecRequest) (*api.ExecResult, error) {
	body, err := json.Marshal(req)
	if err != nil {
		return nil, fmt.Errorf("encode exec request: %w", err)
	}
	hreq, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://nsbox/v1/sandboxes/"+id+"/exec", bytes.NewReader(body))
	if err != nil {
		return nil, fmt.Errorf("build exec request: %w", err)
	}
	socket := filepath.Join(d.runDir, "nsbox.sock")
	hc := http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var dialer net.Dialer
		return dialer.DialContext(ctx, "unix", socket)
	}}}
	resp, err := hc.Do(hreq)
	if err != nil {
		return nil, fmt.Errorf("exec: %w", err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("exec: %d %.300s (%v)", resp.StatusCode, data, err)
	}
	var res api.ExecResult
	if err := json.Unmarshal(data, &res); err != nil {
		return nil, fmt.Errorf("decode exec answer: %w", err)
	}
	return &res, nil
}

var statusLine = regexp.MustCompile(`(?m)^(Vm\w+):\s+(\d+) kB$`)

// statusKB reads a Vm… field of /proc/<pid>/status, in KiB.
func statusKB(pid int, field string) (float64, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, fmt.Errorf("read status of pid %d: %w", pid, err)
	}
	for _, m := range statusLine.FindAllSubmatch(data, -1) {
		if string(m[1]) == field {
			return strconv.ParseFloat(string(m[2]), 64)
		}
	}
	return 0, fmt.Errorf("no %s in /proc/%d/status", field, pid)
}

// cpuTimes is the CPU time (user + system) used so far by this process, the daemon and the
// agent (whose children, the commands, are not counted).
func cpuTimes(agent, daemon int) [3]time.Duration {
	var self unix.Rusage
	_ = unix.Getrusage(unix.RUSAGE_SELF, &self)
	daemonCPU, _ := cpuTime(daemon) // 0 when it cannot be read
	agentCPU, _ := cpuTime(agent)
	return [3]time.Duration{time.Duration(self.Utime.Nano() + self.Stime.Nano()), daemonCPU, agentCPU}
}
