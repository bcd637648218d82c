package proxy

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"sync"
	"time"
)

// ServerConfig bounds what clients of the preview proxy's listener can hold. The proxy is
// reachable by anyone its listener is, and every connection costs the daemon a file
// descriptor (two while a request is relayed to a sandbox), so idle clients are timed out
// and the connections of all clients, and of each client address, are capped: beyond the
// caps a new connection is closed as soon as it is accepted.
type ServerConfig struct {
	// MaxConns caps client connections at once (default: DefaultMaxConns(1024)).
	MaxConns int
	// MaxConnsPerClient caps the connections from one client IP address (default 256).
	MaxConnsPerClient int
	// HeaderTimeout bounds the wait for a request's headers, from the connection's start
	// or from the request's first byte (default 10s).
	HeaderTimeout time.Duration
	// IdleTimeout closes a keep-alive connection with no request for this long (default 60s).
	IdleTimeout time.Duration
	// BodyTimeout closes a connection whose request body sends nothing for this long
	// (default 60s). It is a timeout of silence, not of the whole body: uploads of any
	// length pass. Bodiless requests (WebSocket handshakes, event streams) and upgraded
	// connections are not read-timed at all, so live streams last as long as both ends want.
	BodyTimeout time.Duration
	// Log receives a warning when the proxy starts refusing connections.
	Log *slog.Logger
}

// reservedFDs is the share of a process's file descriptors DefaultMaxConns leaves for
// everything but the proxy (the API, agents, sandboxes' files): one half.
const reservedFDs = 2

// DefaultMaxConns is the client connections a proxy may hold in a process that may open
// nofile file descriptors: half of them go to the proxy, where each client connection can
// have a backend connection and the backend pool keeps up to MaxIdleConns more.
func DefaultMaxConns(nofile uint64) int {
	budget := int(min(nofile, 1<<20)) / reservedFDs
	return max(1, (budget-defaultMaxIdleConns)/2)
}

// Server serves a handler (the Proxy) with ServerConfig's timeouts and caps.
type Server struct {
	http    *http.Server
	handler http.Handler
	limits  *connLimits
	body    time.Duration
}

// NewServer returns a server of h.
func NewServer(h http.Handler, cfg ServerConfig) *Server {
	log := cfg.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &Server{
		limits: &connLimits{
			max:       orDefault(cfg.MaxConns, DefaultMaxConns(1024)),
			perClient: orDefault(cfg.MaxConnsPerClient, 256),
			byClient:  map[netip.Addr]int{},
			log:       log,
		},
		handler: h,
		body:    orDefault(cfg.BodyTimeout, 60*time.Second),
	}
	s.http = &http.Server{
		Handler:           http.HandlerFunc(s.serve),
		ReadHeaderTimeout: orDefault(cfg.HeaderTimeout, 10*time.Second),
		IdleTimeout:       orDefault(cfg.IdleTimeout, 60*time.Second),
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelDebug),
	}
	return s
}

// Serve accepts connections on ln, within the caps, until Shutdown.
func (s *Server) Serve(ln net.Listener) error {
	return s.http.Serve(&limitListener{Listener: ln, limits: s.limits})
}

// Shutdown stops accepting, closes idle connections and waits for active ones up to ctx
// (http.Server.Shutdown; hijacked connections such as WebSockets are not waited for).
func (s *Server) Shutdown(ctx context.Context) error {
	return s.http.Shutdown(ctx)
}

// serve puts a read deadline on a request body that is renewed by every read and lifted at
// its end: a client that stops sending mid-body is cut, one that streams slowly is not.
// The deadline stays when the handler does not read the body, so the server's discarding
// of the rest after the handler is bounded too.
func (s *Server) serve(w http.ResponseWriter, r *http.Request) {
	if r.Body != nil && r.Body != http.NoBody {
		rc := http.NewResponseController(w)
		tb := &timedBody{ReadCloser: r.Body, rc: rc, timeout: s.body}
		tb.renew()
		r.Body = tb
	}
	s.handler.ServeHTTP(w, r)
}

// timedBody renews the connection's read deadline before each read of a request body and
// lifts it at the body's end.
type timedBody struct {
	io.ReadCloser
	rc      *http.ResponseController
	timeout time.Duration
	done    bool
}

func (b *timedBody) renew() {
	_ = b.rc.SetReadDeadline(time.Now().Add(b.timeout))
}

func (b *timedBody) Read(p []byte) (int, error) {
	if b.done {
		return b.ReadCloser.Read(p)
	}
	b.renew()
	n, err := b.ReadCloser.Read(p)
	if err == io.EOF {
		b.done = true
		_ = b.rc.SetReadDeadline(time.Time{})
	}
	return n, err
}

// connLimits counts client connections, in all and by client address.
type connLimits struct {
	max, perClient int
	log            *slog.Logger

	mu       sync.Mutex
	total    int
	byClient map[netip.Addr]int
	warned   time.Time // when the total cap was last logged
}

// take counts a new connection from client unless a cap is reached.
func (l *connLimits) take(client netip.Addr) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.total >= l.max {
		if time.Since(l.warned) > time.Minute {
			l.warned = time.Now()
			l.log.Warn("preview proxy: connection cap reached, refusing new connections", "max", l.max)
		}
		return false
	}
	if l.byClient[client] >= l.perClient {
		l.log.Debug("preview proxy: refused a connection over the per-client cap", "client", client, "max", l.perClient)
		return false
	}
	l.total++
	l.byClient[client]++
	return true
}

func (l *connLimits) release(client netip.Addr) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.total--
	if l.byClient[client]--; l.byClient[client] == 0 {
		delete(l.byClient, client)
	}
}

// limitListener closes connections over the caps as soon as they are accepted, so they
// hold a file descriptor only for that moment.
type limitListener struct {
	net.Listener
	limits *connLimits
}

func (ll *limitListener) Accept() (net.Conn, error) {
	for {
		c, err := ll.Listener.Accept()
		if err != nil {
			return nil, err
		}
		client := clientAddr(c)
		if ll.limits.take(client) {
			return &countedConn{Conn: c, limits: ll.limits, client: client}, nil
		}
		_ = c.Close()
	}
}

// clientAddr is the IP address a connection comes from (the zero Addr for non-IP ones,
// which then share one count).
func clientAddr(c net.Conn) netip.Addr {
	ap, err := netip.ParseAddrPort(c.RemoteAddr().String())
	if err != nil {
		return netip.Addr{}
	}
	return ap.Addr().Unmap()
}

// countedConn gives its place back when closed.
type countedConn struct {
	net.Conn
	limits *connLimits
	client netip.Addr
	once   sync.Once
}

func (c *countedConn) Close() error {
	c.once.Do(func() { c.limits.release(c.client) })
	return c.Conn.Close()
}
