package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/nsbox/nsbox/api"
)

// restartBox is what the restart section checks of one of its sandboxes after each restart.
type restartBox struct {
	id, process, url string
}

// restartSection grows a daemon to each of sizes sandboxes (busybox, network egress, no
// default disk), each with a web server started through the processes API and exposed on a
// host port, a variable exported in its default session, and restarts the daemon twice at
// each size: after kill -9 and after a clean stop (SIGTERM). It reports how long the new
// daemon took to answer on its API (it listens once it has reconciled every sandbox and
// rebuilt the whole network table) and the CPU time it used for that, and checks every
// sandbox after every restart: running, its port answering from the host with its name, its
// server still running as the same process, its session's variable still set. Issue 12 item 1:
// the rebuild used to fail from ~65 sandboxes with a port each, and the daemon exited.
func (b *bench) restartSection(ctx context.Context, sizes []int) (err error) {
	// A /23 of its own: 500 sandboxes need more addresses than a /24. Host ports of its own,
	// too: while it is down, the daemon holds none, and another daemon of the machine could
	// take one whose rule this one's table still has (each would then shadow the other).
	subnet := netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(176 + b.net.pid>>8&15), byte(b.net.pid) &^ 1, 0}), 23)
	low := 10000 + b.net.pid%10*1000
	d, err := b.daemon(ctx, "nsbox-restart", true, "", "--subnet", subnet.String(), "--default-disk", "0",
		"--host-ports", fmt.Sprintf("%d-%d", low, low+999))
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, d.removeAllSandboxes()) }()
	fmt.Println("restart: a daemon with N sandboxes (busybox, egress, a web server on an exposed port each) ended and started again;")
	fmt.Println("  API: from the new daemon's exec until its API answers; CPU: the new daemon's CPU time by then; checked: every sandbox afterwards")
	w := newTable()
	fmt.Fprintln(w, "N\tended by\tAPI s\tCPU s\tchecked s\tgrown in s\t")
	var boxes []restartBox
	for _, n := range sizes {
		began := time.Now()
		grown := make([]restartBox, n-len(boxes))
		if err := onWorkers(2, len(grown), func(i int) error {
			box, err := setUpRestartBox(ctx, d, fmt.Sprintf("restart-%03d", len(boxes)+i))
			grown[i] = box
			return err
		}); err != nil {
			return err
		}
		boxes = append(boxes, grown...)
		grownIn := time.Since(began)
		for _, sig := range []syscall.Signal{syscall.SIGKILL, syscall.SIGTERM} {
			wall, cpu, err := d.restart(ctx, b.bin, sig)
			if err != nil {
				return fmt.Errorf("restart with %d sandboxes after %v: %w", n, sig, err)
			}
			began := time.Now()
			if err := onWorkers(8, n, func(i int) error { return checkRestartBox(ctx, d, boxes[i]) }); err != nil {
				return fmt.Errorf("with %d sandboxes, after %v and a start: %w", n, sig, err)
			}
			fmt.Fprintf(w, "%d\t%s\t%.2f\t%.2f\t%.1f\t%.1f\t\n", n, strings.TrimPrefix(unix.SignalName(sig), "SIG"), wall.Seconds(), cpu.Seconds(), time.Since(began).Seconds(), grownIn.Seconds())
		}
	}
	w.Flush()
	fmt.Println()
	return nil
}

// setUpRestartBox makes one sandbox of the restart section.
func setUpRestartBox(ctx context.Context, d *daemon, id string) (restartBox, error) {
	box := restartBox{id: id}
	if _, err := d.client.CreateSandbox(ctx, api.CreateSandboxRequest{ID: id, Image: image}); err != nil {
		return box, fmt.Errorf("create %s: %w", id, err)
	}
	if _, err := execOK(ctx, d, id, api.ExecRequest{Command: "export KEEP=" + id + "; mkdir /www && echo " + id + " > /www/index.html"}); err != nil {
		return box, fmt.Errorf("set up %s: %w", id, err)
	}
	p, err := d.client.StartProcess(ctx, id, api.StartProcessRequest{Argv: []string{"httpd", "-f", "-p", "8080", "-h", "/www"}})
	if err != nil {
		return box, fmt.Errorf("start the web server of %s: %w", id, err)
	}
	port, err := d.client.ExposePort(ctx, id, api.ExposePortRequest{Port: 8080})
	if err != nil {
		return box, fmt.Errorf("expose the port of %s: %w", id, err)
	}
	box.process, box.url = p.ID, port.URL
	// The server answers before the restart: a failure after it is the restart's.
	for try := 0; ; try++ {
		got, err := hostGet(ctx, box.url)
		if err == nil && got == id {
			return box, nil
		}
		if try == 100 {
			return box, fmt.Errorf("GET %s (%s) from the host = %q, %v; want %q", box.url, id, got, err, id)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// checkRestartBox checks a sandbox after a restart: running, its port answering from the host
// with its name at once, its server still running, its session's state kept.
func checkRestartBox(ctx context.Context, d *daemon, box restartBox) error {
	sb, err := d.client.GetSandbox(ctx, box.id)
	if err != nil || sb.Status != api.StatusRunning {
		return fmt.Errorf("sandbox %s: %+v, %v; want running", box.id, sb, err)
	}
	if got, err := hostGet(ctx, box.url); err != nil || got != box.id {
		return fmt.Errorf("sandbox %s: GET %s from the host = %q, %v", box.id, box.url, got, err)
	}
	if p, err := d.client.GetProcess(ctx, box.id, box.process); err != nil || p.Status != api.ProcessRunning {
		return fmt.Errorf("sandbox %s: its web server %+v, %v; want running", box.id, p, err)
	}
	res, err := execOK(ctx, d, box.id, api.ExecRequest{Command: "echo $KEEP"})
	if err != nil || res.Stdout != box.id+"\n" || res.SessionReset {
		return fmt.Errorf("sandbox %s: its session after the restart: %+v, %v", box.id, res, err)
	}
	return nil
}

// parseSizes parses a comma-separated list of increasing sandbox counts.
func parseSizes(s string) ([]int, error) {
	var out []int
	for _, f := range strings.Split(s, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 1 || (len(out) > 0 && n <= out[len(out)-1]) {
			return nil, fmt.Errorf("%q: want increasing counts of at least 1, such as 100,500", s)
		}
		out = append(out, n)
	}
	return out, nil
}

// hostGet fetches url from the host on a connection of its own, within 3 s, and returns the
// body without its surrounding white space.
func hostGet(ctx context.Context, url string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return "", err
	}
	resp, err := (&http.Client{Transport: &http.Transport{DisableKeepAlives: true}}).Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return strings.TrimSpace(string(body)), err
}
