// Package proxy owns host-routed HTTP access to sandbox ports: the preview proxy. A request
// for http://{port}-{sandbox}.{domain}/ (or {port}-{sandbox}-{token}.{domain}) is sent to the
// sandbox's own address and port, dialled directly (no NAT), after the port's access token
// is checked unless the port is public.
//
// The proxy carries HTTP/1.1 with bodies streamed both ways, WebSocket (and any other
// Upgrade) and server-sent events, which are flushed as they arrive. The access token is
// accepted in the host name, in the X-Nsbox-Token header, or once in the nsbox_token query
// parameter (answered with a redirect that keeps it in a cookie); it is never forwarded to
// the sandbox. Which sandboxes and ports exist is asked of a Resolver for every request, so
// the proxy holds no routing state of its own beyond its pool of backend connections.
//
// The existence of a sandbox and of an exposed port is not a secret: an unknown sandbox or
// port gets 404 and a stopped sandbox 503 before any token is looked at, while a known,
// non-public port answers 401 (no token) or 403 (wrong token). The token alone protects
// what the sandbox serves.
package proxy

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"net/netip"
	"net/url"
	"strings"
	"time"
)

// ErrNotFound and ErrStopped are what a Resolver's errors wrap.
var (
	// ErrNotFound: no such sandbox, or the port is not exposed.
	ErrNotFound = errors.New("no such sandbox or port not exposed")
	// ErrStopped: the sandbox exists but is not running.
	ErrStopped = errors.New("sandbox is not running")
)

// Target is where an exposed port's requests go.
type Target struct {
	Addr   netip.AddrPort // the sandbox's own address and port: dialled directly, no NAT
	Token  string         // 32 lowercase hex chars; required unless Public
	Public bool
}

// Resolver tells the proxy where a sandbox's exposed port is.
type Resolver interface {
	// Resolve returns the route for an exposed TCP port. Errors wrap ErrNotFound (unknown
	// sandbox or port not exposed) or ErrStopped (sandbox exists but is not running).
	Resolve(sandbox string, port int) (Target, error)
}

// Config configures a Proxy. Only Domain is required.
type Config struct {
	// Domain is the suffix of every preview host name, e.g. "example.test" for
	// http://3000-mybox.example.test/. A wildcard DNS record should point *.Domain here.
	Domain string
	// Log receives resolver failures (errors), sandboxes that did not answer (warnings)
	// and clients that left mid-request (debug). Nil discards.
	Log *slog.Logger
	// DialTimeout bounds connecting to a sandbox (default 10s). Nothing else is timed:
	// responses, WebSockets and event streams may last as long as both ends want.
	DialTimeout time.Duration
	// MaxIdleConns bounds the idle keep-alive connections kept to all sandboxes together
	// (default 256), MaxIdleConnsPerTarget those kept to one sandbox port (default 32).
	MaxIdleConns          int
	MaxIdleConnsPerTarget int
	// IdleConnTimeout closes a backend connection left idle this long (default 90s).
	IdleConnTimeout time.Duration
}

// Proxy is the preview proxy, an http.Handler to serve on its own listener.
type Proxy struct {
	domain    string
	log       *slog.Logger
	resolver  Resolver
	transport *http.Transport
	rp        *httputil.ReverseProxy
	conns     *conns
}

// New checks cfg and returns a proxy that routes through r.
func New(cfg Config, r Resolver) (*Proxy, error) {
	domain := strings.Trim(strings.ToLower(cfg.Domain), ".")
	if domain == "" {
		return nil, errors.New("proxy: a domain is required (e.g. \"example.test\", whose *.example.test names point to the proxy)")
	}
	if !validDomain(domain) {
		return nil, fmt.Errorf("proxy: domain %q is not a DNS name (letters, digits, '-' and '.')", cfg.Domain)
	}
	if r == nil {
		return nil, errors.New("proxy: a resolver is required")
	}
	log := cfg.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	dialTimeout := orDefault(cfg.DialTimeout, 10*time.Second)
	p := &Proxy{
		domain:   domain,
		log:      log,
		resolver: r,
		conns:    newConns(&net.Dialer{Timeout: dialTimeout, KeepAlive: 30 * time.Second}),
	}
	p.transport = &http.Transport{
		Proxy:                 nil, // never an HTTP_PROXY from the environment
		DialContext:           p.conns.dial,
		MaxIdleConns:          orDefault(cfg.MaxIdleConns, defaultMaxIdleConns),
		MaxIdleConnsPerHost:   orDefault(cfg.MaxIdleConnsPerTarget, 32),
		IdleConnTimeout:       orDefault(cfg.IdleConnTimeout, 90*time.Second),
		ExpectContinueTimeout: time.Second,
		// Bodies pass through as the sandbox encoded them.
		DisableCompression: true,
	}
	p.rp = &httputil.ReverseProxy{
		Rewrite:   p.rewrite,
		Transport: p.transport,
		// Event streams and responses without a length are flushed on every write by
		// ReverseProxy itself; the rest is flushed often enough not to stall.
		FlushInterval: 100 * time.Millisecond,
		ErrorHandler:  p.backendError,
		ErrorLog:      slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	return p, nil
}

// defaultMaxIdleConns is the default of Config.MaxIdleConns.
const defaultMaxIdleConns = 256

func orDefault[T int | time.Duration](v, def T) T {
	if v > 0 {
		return v
	}
	return def
}

// routeKey is the request-scoped value that carries the resolved route to rewrite.
type routeKey struct{}

// route is one request's resolved destination.
type route struct {
	sandbox string
	port    int
	target  Target
	// hostToken is the token in the host label, if any.
	hostToken string
	// publicHost is the Host the client used, without any token, for X-Forwarded-Host.
	publicHost string
}

// ServeHTTP routes one request by its Host.
func (p *Proxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	name, hostPort := splitHost(r.Host)
	port, readings, ok := parseLabel(name, p.domain)
	if !ok {
		page(w, r, http.StatusNotFound, "No preview here",
			fmt.Sprintf("This address is not a sandbox preview. Preview addresses look like http://{port}-{sandbox}.%s/ (for example http://3000-mybox.%s/).", p.domain, p.domain))
		return
	}
	rd, target, err := p.resolve(readings, port)
	switch {
	case errors.Is(err, ErrNotFound):
		page(w, r, http.StatusNotFound, "Not found",
			fmt.Sprintf("There is no sandbox %q with port %d exposed. Expose the port first (nsbox port add), or check the sandbox id and port in the address.", rd.sandbox, port))
		return
	case errors.Is(err, ErrStopped):
		page(w, r, http.StatusServiceUnavailable, "Sandbox not running",
			fmt.Sprintf("Sandbox %q is not running. Start it, then reload this page.", rd.sandbox))
		return
	case err != nil:
		p.log.Error("proxy: resolving a route", "sandbox", rd.sandbox, "port", port, "err", err)
		page(w, r, http.StatusInternalServerError, "Proxy error",
			fmt.Sprintf("The proxy could not look up sandbox %q; the daemon's log says why.", rd.sandbox))
		return
	}
	if !target.Addr.IsValid() {
		p.log.Error("proxy: resolver returned no address", "sandbox", rd.sandbox, "port", port)
		page(w, r, http.StatusInternalServerError, "Proxy error",
			fmt.Sprintf("Sandbox %q has no network address for port %d.", rd.sandbox, port))
		return
	}
	p.conns.remember(rd.sandbox, port, target.Addr)

	cred := credentialOf(r, rd.token, port)
	if !target.Public {
		switch {
		case cred.source == fromNone:
			page(w, r, http.StatusUnauthorized, "Token required", tokenHelp(port, rd.sandbox, p.domain))
			return
		case !cred.opens(target.Token):
			page(w, r, http.StatusForbidden, "Wrong token", "The token given does not open this port. "+tokenHelp(port, rd.sandbox, p.domain))
			return
		case cred.source == fromQuery && redirectable(r):
			redirectWithCookie(w, r, port, target.Token)
			return
		}
	}
	publicHost := fmt.Sprintf("%d-%s.%s", port, rd.sandbox, p.domain)
	if hostPort != "" {
		publicHost += ":" + hostPort
	}
	rt := &route{sandbox: rd.sandbox, port: port, target: target, hostToken: rd.token, publicHost: publicHost}
	ctx := context.WithValue(r.Context(), routeKey{}, rt)
	p.rp.ServeHTTP(w, r.WithContext(ctx))
}

// resolve asks the resolver for each reading of the host label in turn, falling back to
// the next one only when a reading names nothing. It returns the reading that answered.
func (p *Proxy) resolve(readings []reading, port int) (reading, Target, error) {
	var err error
	for _, rd := range readings {
		var t Target
		t, err = p.resolver.Resolve(rd.sandbox, port)
		if err == nil || !errors.Is(err, ErrNotFound) {
			return rd, t, err
		}
	}
	// Report the first reading: the shorter id when the label ends like a token.
	return readings[0], Target{}, err
}

// rewrite builds the request sent to the sandbox: its own address, no token anywhere, and
// the X-Forwarded headers.
func (p *Proxy) rewrite(pr *httputil.ProxyRequest) {
	rt := pr.In.Context().Value(routeKey{}).(*route)
	pr.SetURL(&url.URL{Scheme: "http", Host: rt.target.Addr.String()})
	pr.SetXForwarded()
	pr.Out.Header.Set("X-Forwarded-Host", rt.publicHost)
	stripCredentials(pr.Out, rt.hostToken, rt.target.Token)
}

// backendError answers when the sandbox could not be reached or broke off.
func (p *Proxy) backendError(w http.ResponseWriter, r *http.Request, err error) {
	rt := r.Context().Value(routeKey{}).(*route)
	if r.Context().Err() != nil {
		p.log.Debug("proxy: client went away", "sandbox", rt.sandbox, "port", rt.port, "err", err)
		return
	}
	p.log.Warn("proxy: sandbox did not answer", "sandbox", rt.sandbox, "port", rt.port, "err", err)
	page(w, r, http.StatusBadGateway, "Sandbox did not answer",
		fmt.Sprintf("Nothing answered on port %d in sandbox %q: no server is listening there, it refused the connection, or it closed it before replying. Start the server in the sandbox, then reload this page.", rt.port, rt.sandbox))
}

// Forget closes every backend connection the proxy holds to a sandbox's port, idle or in
// use (open WebSockets and event streams through the proxy end), as unexposing the port
// cuts NAT-ed flows. Port 0 means every port of the sandbox. Call it after the port is
// unexposed or the sandbox removed, so later requests are refused by the resolver.
func (p *Proxy) Forget(sandbox string, port int) {
	p.conns.forget(sandbox, port)
}

// Close closes every backend connection, idle or in use. The proxy stays usable: later
// requests dial again.
func (p *Proxy) Close() {
	p.transport.CloseIdleConnections()
	p.conns.closeAll()
}
