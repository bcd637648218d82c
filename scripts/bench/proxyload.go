package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"time"
)

const (
	idleProxyConns = 10000            // the issue 11 attack: idle keep-alive connections to the proxy
	idleClients    = 200              // client addresses they come from (127.0.0.2…), under the per-client cap
	apiLoadTarget  = time.Millisecond // how much worse the API's p99 may get with them
)

// proxyStarvation measures the API's latency (p99) without and with idleProxyConns idle
// keep-alive connections to the preview proxy at proxyAddr, each after one request for a
// preview that does not exist, as the attack of issue 11 did. The calls are cheap, so each
// is timed 10n times, for a p99 that is not just the maximum.
func proxyStarvation(ctx context.Context, d *daemon, proxyAddr string, n int) error {
	n *= 10
	cases := []benchCase{
		{name: "version (API)", run: func(ctx context.Context) error { _, err := d.client.Version(ctx); return err }},
		{name: "list sandboxes (API)", run: func(ctx context.Context) error { _, err := d.client.ListSandboxes(ctx); return err }},
	}
	before, err := timeCases(ctx, cases, warmups, n)
	if err != nil {
		return err
	}
	conns, answered, err := idleConns(ctx, proxyAddr)
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	if err != nil {
		return err
	}
	fds, _ := os.ReadDir(fmt.Sprintf("/proc/%d/fd", d.cmd.Process.Pid))
	during, err := timeCases(ctx, cases, warmups, n)
	if err != nil {
		return err
	}
	fmt.Printf("preview proxy under %d idle keep-alive connections from %d addresses: %d answered and held, %d refused; the daemon has %d open files\n",
		idleProxyConns, idleClients, answered, idleProxyConns-answered, len(fds))
	w := newTable()
	fmt.Fprintln(w, "API call\tp99 ms without\tp99 ms with\tmedian ms without\tmedian ms with\t")
	var worst time.Duration
	for _, c := range cases {
		b, a := summarize(before[c.name]), summarize(during[c.name])
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t\n", c.name, ms(b.p99), ms(a.p99), ms(b.median), ms(a.median))
		worst = max(worst, a.p99-b.p99)
	}
	w.Flush()
	fmt.Printf("target: API p99 unchanged (at most %s ms worse) with the idle connections: %s (%+.2f ms, the worse call)\n",
		ms(apiLoadTarget), verdict(worst <= apiLoadTarget), float64(worst)/1e6)
	return nil
}

// idleConns opens idleProxyConns connections to the proxy, sends one request on each and
// reads its answer; it returns the connections, left open, and how many were answered (the
// rest the proxy closed: over its caps).
func idleConns(ctx context.Context, proxyAddr string) ([]net.Conn, int, error) {
	var conns []net.Conn
	answered := 0
	for i := range idleProxyConns {
		if err := ctx.Err(); err != nil {
			return conns, answered, err
		}
		dialer := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, byte(2+i%idleClients))}}
		c, err := dialer.DialContext(ctx, "tcp", proxyAddr)
		if err != nil {
			return conns, answered, fmt.Errorf("idle connection %d to the proxy: %w", i, err)
		}
		conns = append(conns, c)
		if ok, err := answers404(c); err != nil {
			return conns, answered, fmt.Errorf("idle connection %d to the proxy: %w", i, err)
		} else if ok {
			answered++
		}
	}
	return conns, answered, nil
}

// answers404 sends a request for a preview that does not exist and reports whether the
// proxy answered it (false: it closed the connection).
func answers404(c net.Conn) (bool, error) {
	_ = c.SetDeadline(time.Now().Add(30 * time.Second))
	if _, err := fmt.Fprintf(c, "GET / HTTP/1.1\r\nHost: 1-nosuch.%s\r\n\r\n", benchProxyDomain); err != nil {
		return false, nil // closed at once: refused
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	var ne net.Error
	switch {
	case errors.As(err, &ne) && ne.Timeout():
		return false, errors.New("the proxy neither answered nor closed the connection")
	case err != nil:
		return false, nil
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound {
		return false, fmt.Errorf("the proxy answered %s, want 404", resp.Status)
	}
	return true, nil
}
