package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/nsbox/nsbox/api"
	"github.com/nsbox/nsbox/client"
)

// filesSection measures the file API's throughput: a PUT of a file of zeros from the Go SDK
// and a GET of it back, for a 1 MiB and a 1 GiB file, next to the same bytes written and read
// by tools inside the sandbox (`dd bs=1M` and `head -c` from /dev/zero into a file, `cat f >
// /dev/null`), timed inside the sandbox by bash's $EPOCHREALTIME so that the exec round trip
// is not counted. Both sides write into the sandbox's /workspace (its overlay's upper dir)
// without fsync and read a file that is in the page cache: the sandbox gets the host's CPUs
// and 4 GiB of memory, so its cgroup can keep its 1 GiB file cached as the daemon does.
func (b *bench) filesSection(ctx context.Context, n int) (err error) {
	d, err := b.daemon(ctx, "nsbox", true, "")
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, d.removeAllSandboxes()) }()
	sb, err := roomyHostSandbox(ctx, d)
	if err != nil {
		return err
	}
	for _, size := range []struct {
		name         string
		bytes        int64
		warm, rounds int
	}{
		{"1 MiB", 1 << 20, warmups, n},
		{"1 GiB", 1 << 30, 1, min(n, 3)},
	} {
		fmt.Printf("files %s: %d warm-ups, then %d measured rounds, each case once per round in random order\n", size.name, size.warm, size.rounds)
		samples, err := fileRounds(ctx, d.client, sb.ID, size.bytes, size.warm, size.rounds)
		if err != nil {
			return fmt.Errorf("files %s: %w", size.name, err)
		}
		w := newTable()
		fmt.Fprintln(w, "name\tmedian MB/s\tmin MB/s\tmax MB/s\tmedian ÷ peer's\t")
		for _, c := range fileCases {
			s := summarize(samples[c.name])
			rate := func(d time.Duration) string { return fmt.Sprintf("%.0f", float64(size.bytes)/d.Seconds()/1e6) }
			vs := ""
			if c.peer != "" { // a throughput ratio: the peer's median time ÷ this case's
				vs = fmt.Sprintf("%.2f× %s", float64(median(samples[c.peer]))/float64(s.median), c.peer)
			}
			fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t\n", c.name, rate(s.median), rate(s.max), rate(s.min), vs)
		}
		w.Flush()
		fmt.Println()
	}
	return nil
}

// fileCases are the writes, then the reads; a case with a peer is compared with it.
var fileCases = []struct{ name, peer string }{
	{"API write (PUT)", "dd bs=1M > file"},
	{"dd bs=1M > file", ""},
	{"head -c > file", ""},
	{"API read (GET)", "cat file > /dev/null"},
	{"cat file > /dev/null", ""},
}

// fileRounds runs the four cases warm+rounds times, shuffled in each round, and returns the
// measured durations by case name. Each round's reads read what that round wrote.
func fileRounds(ctx context.Context, c *client.Client, id string, size int64, warm, rounds int) (map[string][]time.Duration, error) {
	samples := map[string][]time.Duration{}
	apiPath, peerPath := "/workspace/bench-api", "/workspace/bench-peer"
	for i := range warm + rounds {
		// Writes come before reads in a round (each read reads what the round wrote); the
		// writes, and the reads, run in random order.
		writes, reads := []int{0, 1, 2}, []int{3, 4}
		rand.Shuffle(len(writes), func(a, b int) { writes[a], writes[b] = writes[b], writes[a] })
		rand.Shuffle(len(reads), func(a, b int) { reads[a], reads[b] = reads[b], reads[a] })
		for _, k := range append(writes, reads...) {
			var took time.Duration
			var err error
			switch k {
			case 0:
				start := time.Now()
				_, err = c.WriteFile(ctx, id, apiPath, io.LimitReader(zeros{}, size), client.WriteFileOptions{Size: size})
				took = time.Since(start)
			case 1:
				took, err = timedInside(ctx, c, id, fmt.Sprintf("dd if=/dev/zero of=%s bs=1M count=%d status=none", peerPath, size>>20))
			case 2:
				took, err = timedInside(ctx, c, id, fmt.Sprintf("head -c %d /dev/zero > %s", size, peerPath))
			case 3:
				start := time.Now()
				err = readExactly(ctx, c, id, apiPath, size)
				took = time.Since(start)
			case 4:
				took, err = timedInside(ctx, c, id, "cat "+peerPath+" > /dev/null")
			}
			if err != nil {
				return nil, fmt.Errorf("%s (round %d): %w", fileCases[k].name, i+1, err)
			}
			if i >= warm {
				samples[fileCases[k].name] = append(samples[fileCases[k].name], took)
			}
		}
	}
	_, err := c.Exec(ctx, id, api.ExecRequest{Command: "rm -f " + apiPath + " " + peerPath})
	return samples, err
}

type zeros struct{}

func (zeros) Read(p []byte) (int, error) {
	clear(p)
	return len(p), nil
}

// readExactly reads a whole file through the API into nothing and checks its size.
func readExactly(ctx context.Context, c *client.Client, id, path string, size int64) error {
	rd, err := c.ReadFile(ctx, id, path)
	if err != nil {
		return err
	}
	defer rd.Close()
	got, err := io.Copy(io.Discard, rd)
	if err == nil && got != size {
		err = fmt.Errorf("read %d bytes of %s, want %d", got, path, size)
	}
	return err
}

// timedInside runs a command in the sandbox's default (bash) session and returns how long it
// took as the shell measured it.
func timedInside(ctx context.Context, c *client.Client, id, command string) (time.Duration, error) {
	res, err := c.Exec(ctx, id, api.ExecRequest{Command: "s=$EPOCHREALTIME; " + command + "; e=$EPOCHREALTIME; echo $s $e"})
	if err != nil {
		return 0, err
	}
	if res.ExitCode != 0 {
		return 0, fmt.Errorf("%q: exit code %d: %s", command, res.ExitCode, res.Stderr)
	}
	f := strings.Fields(res.Stdout)
	if len(f) != 2 {
		return 0, fmt.Errorf("%q: unexpected timing output %q", command, res.Stdout)
	}
	var t [2]float64
	for i, s := range f {
		if t[i], err = strconv.ParseFloat(s, 64); err != nil {
			return 0, fmt.Errorf("%q: timing %q: %w", command, s, err)
		}
	}
	return time.Duration((t[1] - t[0]) * float64(time.Second)), nil
}

// roomyHostSandbox is a host sandbox (bash, for $EPOCHREALTIME) with the host's CPUs and
// 4 GiB of memory, so that what it reads and writes stays in its page cache.
func roomyHostSandbox(ctx context.Context, d *daemon) (*api.Sandbox, error) {
	sb, err := d.client.CreateSandbox(ctx, api.CreateSandboxRequest{Image: "host",
		Limits: api.Limits{CPUs: float64(runtime.NumCPU()), MemoryMB: 4096}})
	if err != nil {
		return nil, fmt.Errorf("create host sandbox: %w", err)
	}
	return sb, nil
}
