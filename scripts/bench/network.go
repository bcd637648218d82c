package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/nsbox/nsbox/api"
	"github.com/nsbox/nsbox/client"
)

// benchNet gives every daemon of the benchmark a sandbox network of its own: an nftables
// table and a /26 named after the benchmark's pid, and one uplink (a veth pair on the host)
// shared by them, so the benchmark never touches the host's real interfaces.
type benchNet struct {
	pid    int
	uplink *netlink.Veth
}

func newBenchNet() (benchNet, error) {
	pid := os.Getpid()
	attrs := netlink.NewLinkAttrs()
	attrs.Name = fmt.Sprintf("nsbb%d", pid%1000000)
	n := benchNet{pid: pid, uplink: &netlink.Veth{LinkAttrs: attrs, PeerName: attrs.Name + "p"}}
	if err := netlink.LinkAdd(n.uplink); err != nil {
		return n, fmt.Errorf("create uplink %s: %w", attrs.Name, err)
	}
	return n, nil
}

// daemonArgs are the network flags of the benchmark's k-th daemon (k < 4).
func (n benchNet) daemonArgs(k int) []string {
	subnet := netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(192 + n.pid>>8&15), byte(n.pid), byte(k * 64)}), 26)
	return []string{"--subnet", subnet.String(), "--nft-table", fmt.Sprintf("nsboxbench_%d_%d", n.pid, k), "--uplink", n.uplink.Name}
}

func (n benchNet) remove() error {
	if err := netlink.LinkDel(n.uplink); err != nil {
		return fmt.Errorf("remove uplink %s: %w", n.uplink.Name, err)
	}
	return nil
}

// benchProxyDomain is the preview proxy's domain in the benchmark; requests name it in Host.
const benchProxyDomain = "bench.test"

// networkSection times exposing and unexposing a port through the API, a sandbox's create
// with a network against one in mode none, HTTP requests per second to a busybox httpd in
// a sandbox through an exposed host port and through the preview proxy against straight to
// the sandbox's address, and the API's latency while the proxy holds 10,000 idle connections.
func (b *bench) networkSection(ctx context.Context, n int) (err error) {
	proxyAddr, err := freeLoopbackAddr()
	if err != nil {
		return err
	}
	d, err := b.daemon(ctx, "nsbox-net", true, "", "--proxy-listen", proxyAddr, "--proxy-domain", benchProxyDomain)
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, d.removeAllSandboxes()) }()
	sb, err := d.client.CreateSandbox(ctx, api.CreateSandboxRequest{Image: image})
	if err != nil {
		return fmt.Errorf("create sandbox: %w", err)
	}
	if _, err := execOK(ctx, d, sb.ID, api.ExecRequest{Command: "mkdir -p /www && echo hello > /www/index.html && httpd -p 8080 -h /www"}); err != nil {
		return fmt.Errorf("start httpd: %w", err)
	}
	expose := func(ctx context.Context) error {
		_, err := d.client.ExposePort(ctx, sb.ID, api.ExposePortRequest{Port: 9000})
		return err
	}
	unexpose := func(ctx context.Context) error { return d.client.UnexposePort(ctx, sb.ID, 9000, "tcp") }
	create := func(mode string) func(context.Context) error {
		return func(ctx context.Context) error {
			_, err := d.client.CreateSandbox(ctx, api.CreateSandboxRequest{ID: "net-" + mode, Image: image, Network: &api.NetworkSpec{Mode: mode}})
			return err
		}
	}
	remove := func(mode string) func(context.Context) error {
		return func(ctx context.Context) error {
			return d.client.RemoveSandbox(ctx, "net-"+mode, client.RemoveOptions{Force: true})
		}
	}
	cases := []benchCase{
		{name: "expose (API)", run: expose, after: unexpose, ref: "version (API)"},
		{name: "unexpose (API)", before: expose, run: unexpose, ref: "version (API)"},
		{name: "version (API)", run: func(ctx context.Context) error { _, err := d.client.Version(ctx); return err }},
		{name: "create egress", run: create(api.NetworkEgress), after: remove(api.NetworkEgress), ref: "create none"},
		{name: "create none", run: create(api.NetworkNone), after: remove(api.NetworkNone)},
	}
	fmt.Printf("network: %d warm-ups, then %d measured runs of each, interleaved in random order\n", warmups, n)
	samples, err := timeCases(ctx, cases, warmups, n)
	if err != nil {
		return err
	}
	printTable(cases, samples)
	ver := median(samples["version (API)"])
	for _, c := range []string{"expose (API)", "unexpose (API)"} {
		fmt.Printf("%s less an API round trip (GET /v1/version): %.2f ms\n", c, float64(median(samples[c])-ver)/1e6)
	}

	p, err := d.client.ExposePort(ctx, sb.ID, api.ExposePortRequest{Port: 8080})
	if err != nil {
		return err
	}
	targets := []struct{ name, url, host string }{
		{"host port (127.0.0.1, DNAT)", fmt.Sprintf("http://127.0.0.1:%d/", p.HostPort), ""},
		{"preview proxy (Host with token)", "http://" + proxyAddr + "/", fmt.Sprintf("8080-%s-%s.%s", sb.ID, p.Token, benchProxyDomain)},
		{"sandbox address (no NAT)", fmt.Sprintf("http://%s:8080/", sb.Network.IP), ""},
	}
	const rounds, concurrency, each = 3, 4, time.Second
	counts := make([]int64, len(targets))
	for range rounds {
		for i, t := range targets {
			got, err := httpLoad(ctx, t.url, t.host, concurrency, each)
			if err != nil {
				return fmt.Errorf("HTTP to %s: %w", t.name, err)
			}
			counts[i] += got
		}
	}
	fmt.Printf("HTTP GET of a 6-byte file from busybox httpd (a new connection per request), %d clients, %d × %s each, alternating:\n", concurrency, rounds, each)
	w := newTable()
	for i, t := range targets {
		rps := float64(counts[i]) / (rounds * each.Seconds())
		fmt.Fprintf(w, "  %s\t%.0f requests/s\t%.2f × the sandbox address\t\n", t.name, rps, float64(counts[i])/float64(counts[len(counts)-1]))
	}
	w.Flush()
	if err := proxyStarvation(ctx, d, proxyAddr, n); err != nil {
		return fmt.Errorf("API under idle proxy connections: %w", err)
	}
	fmt.Println()
	return nil
}

// freeLoopbackAddr returns an address on 127.0.0.1 whose port was free a moment ago.
func freeLoopbackAddr() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", fmt.Errorf("find a free port: %w", err)
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

// httpLoad sends GETs to url (with the Host header host, unless empty) from concurrency
// clients for d and returns how many succeeded.
func httpLoad(ctx context.Context, url, host string, concurrency int, d time.Duration) (int64, error) {
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: concurrency}}
	defer client.CloseIdleConnections()
	var done atomic.Int64
	var wg sync.WaitGroup
	errc := make(chan error, concurrency)
	for range concurrency {
		wg.Go(func() {
			for ctx.Err() == nil {
				req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
				if host != "" {
					req.Host = host
				}
				resp, err := client.Do(req)
				if err != nil {
					if ctx.Err() == nil && !errors.Is(err, net.ErrClosed) {
						errc <- err
					}
					return
				}
				_, err = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if err == nil && resp.StatusCode == http.StatusOK {
					done.Add(1)
				}
			}
		})
	}
	wg.Wait()
	select {
	case err := <-errc:
		return 0, err
	default:
	}
	return done.Load(), nil
}
