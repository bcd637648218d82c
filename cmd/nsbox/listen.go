package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"sync/atomic"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/nsbox/nsbox/api"
	"github.com/nsbox/nsbox/auth"
	"github.com/nsbox/nsbox/nsbox"
	"github.com/nsbox/nsbox/ui"
)

// listenFlags are the daemon's API listeners and their security.
func listenFlags() []cli.Flag {
	return []cli.Flag{
		&cli.StringSliceFlag{Name: "listen", Usage: "API listener, repeatable: unix:///PATH (default: the --socket, or nsbox.sock in --run-dir) or tcp://HOST:PORT (TLS and bearer tokens; plain HTTP only on a loopback address)"},
		&cli.StringFlag{Name: "tls-cert", Usage: "PEM certificate (chain) of the TCP listeners (re-read with --tls-key on SIGHUP)"},
		&cli.StringFlag{Name: "tls-key", Usage: "PEM private key of --tls-cert"},
		&cli.StringFlag{Name: "tls-client-ca", Usage: "PEM CA certificates: TCP clients must present a certificate they signed (mutual TLS)"},
		&cli.StringFlag{Name: "auth-tokens", Usage: "file of admin tokens for TCP callers, one per line (re-read on SIGHUP)"},
		&cli.StringSliceFlag{Name: "cors-origin", Usage: "browser origin allowed to call the TCP API, e.g. https://app.example.com (repeatable)"},
	}
}

// endpoint is one API listener the daemon was asked for.
type endpoint struct {
	socket string // a unix socket's path, or
	tcp    string // a TCP address
}

// parseListen reads --listen. Without a unix:// entry the daemon listens on its default
// socket too, so the CLI on the host always reaches it. A TCP address must be loopback
// unless the daemon has a certificate.
func parseListen(c *cli.Context, defaultSocket string) ([]endpoint, error) {
	var eps []endpoint
	haveSocket, haveTLS := false, c.String("tls-cert") != "" || c.String("tls-key") != ""
	for _, l := range c.StringSlice("listen") {
		u, err := url.Parse(l)
		if err != nil {
			return nil, fmt.Errorf("--listen %q: %w", l, err)
		}
		switch {
		case u.Scheme == "unix" && u.Path != "" && u.Host == "":
			eps, haveSocket = append(eps, endpoint{socket: u.Path}), true
		case u.Scheme == "tcp" && u.Host != "" && (u.Path == "" || u.Path == "/"):
			host, _, err := net.SplitHostPort(u.Host)
			if err != nil {
				return nil, fmt.Errorf("--listen %q: %w", l, err)
			}
			if !haveTLS && !isLoopback(host) {
				return nil, fmt.Errorf("--listen %q: a TCP listener needs --tls-cert and --tls-key unless its address is loopback (127.0.0.1, ::1, localhost): tokens must not cross a network in clear", l)
			}
			eps = append(eps, endpoint{tcp: u.Host})
		default:
			return nil, fmt.Errorf("--listen %q: use unix:///PATH or tcp://HOST:PORT", l)
		}
	}
	if !haveSocket {
		eps = append(eps, endpoint{socket: defaultSocket})
	}
	return eps, nil
}

func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// tlsConfig is the TCP listeners' TLS (nil without --tls-cert): HTTP/1.1 only, so that a
// connection carries one request at a time and cutting it cuts only that request's stream.
// Its reload reads the certificate and key again (on SIGHUP): new connections get the new
// certificate, open ones keep theirs; a failed reload keeps the old one.
func tlsConfig(c *cli.Context) (cfg *tls.Config, reload func() error, err error) {
	certFile, keyFile, caFile := c.String("tls-cert"), c.String("tls-key"), c.String("tls-client-ca")
	if certFile == "" && keyFile == "" {
		if caFile != "" {
			return nil, nil, errors.New("--tls-client-ca needs --tls-cert and --tls-key")
		}
		return nil, nil, nil
	}
	var current atomic.Pointer[tls.Certificate]
	reload = func() error {
		cert, err := tls.LoadX509KeyPair(certFile, keyFile)
		if err != nil {
			return fmt.Errorf("--tls-cert/--tls-key: %w", err)
		}
		current.Store(&cert)
		return nil
	}
	if err := reload(); err != nil {
		return nil, nil, err
	}
	cfg = &tls.Config{MinVersion: tls.VersionTLS12, NextProtos: []string{"http/1.1"},
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return current.Load(), nil }}
	if caFile != "" {
		pem, err := os.ReadFile(caFile)
		if err != nil {
			return nil, nil, fmt.Errorf("--tls-client-ca: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, nil, fmt.Errorf("--tls-client-ca %s: no PEM certificate in it", caFile)
		}
		cfg.ClientCAs, cfg.ClientAuth = pool, tls.RequireAndVerifyClientCert
	}
	return cfg, reload, nil
}

// apiServer is one listener and the server that serves it.
type apiServer struct {
	srv *http.Server
	ln  net.Listener
}

// listenAll opens every listener: unix sockets serve the whole API, TCP listeners the API
// behind the tokens' guard and the web terminal page (and TLS when the daemon has a
// certificate).
func listenAll(eps []endpoint, c *cli.Context, rt *nsbox.Runtime, guard *auth.Service, tlsCfg *tls.Config, log *slog.Logger) ([]apiServer, error) {
	socketAPI := rt.Handler(nil, guard.Endpoints()...)
	// TCP listeners also serve the web terminal page, which needs no token to load (package ui).
	tcpAPI := http.NewServeMux()
	tcpAPI.Handle(ui.Prefix, ui.Handler(log))
	tcpAPI.Handle("/", guard.Middleware(rt.Handler(guard.Check, guard.Endpoints()...)))
	// Requests are made under the runtime's context: what the stop's grace leaves in flight
	// ends with the daemon's stop as its cause (Runtime.CutRequests).
	base := func(net.Listener) context.Context { return rt.RequestContext() }
	var servers []apiServer
	fail := func(err error) ([]apiServer, error) {
		for _, s := range servers {
			s.ln.Close()
		}
		return nil, err
	}
	for _, ep := range eps {
		if ep.socket != "" {
			ln, err := listenAPI(ep.socket, c.String("socket-group"))
			if err != nil {
				return fail(err)
			}
			servers = append(servers, apiServer{srv: &http.Server{Handler: socketAPI, ReadHeaderTimeout: 10 * time.Second, BaseContext: base},
				ln: api.StreamListener(ln)})
			continue
		}
		ln, err := net.Listen("tcp", ep.tcp)
		if err != nil {
			return fail(fmt.Errorf("listen on %s: %w", ep.tcp, err))
		}
		if tlsCfg != nil {
			ln = tls.NewListener(ln, tlsCfg)
		}
		srv := &http.Server{Handler: tcpAPI, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 2 * time.Minute, BaseContext: base,
			ConnContext: auth.ConnContext, ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelDebug)}
		servers = append(servers, apiServer{srv: srv, ln: ln})
	}
	return servers, nil
}
