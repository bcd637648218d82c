package auth

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/nsbox/nsbox/api"
	"github.com/nsbox/nsbox/api/httpapi"
)

const (
	// MaxTTL bounds a token's life.
	MaxTTL = 30 * 24 * time.Hour
	// defaultSessionTTL is a browser session token's life when the request names none.
	defaultSessionTTL = 15 * time.Minute
)

// Sandboxes is what the tokens API needs of the core: that a sandbox and a session exist,
// and a session's permission.
type Sandboxes interface {
	Get(id string) (*api.Sandbox, error)
	Session(ctx context.Context, id, sid string) (*api.Session, error)
}

// Service serves the tokens API and guards the TCP listener.
type Service struct {
	store     *Store
	sandboxes Sandboxes
	origins   []string // CORS: origins allowed to call the API from a browser
	log       *slog.Logger
}

// NewService returns the tokens API and the TCP guard over store; origins are the browser
// origins CORS lets in.
func NewService(store *Store, sandboxes Sandboxes, origins []string, log *slog.Logger) *Service {
	return &Service{store: store, sandboxes: sandboxes, origins: origins, log: log}
}

// Endpoints are the tokens API, served on every listener.
func (s *Service) Endpoints() []httpapi.Endpoint {
	return []httpapi.Endpoint{
		{Method: "POST", Pattern: "/v1/tokens", Access: api.AccessAdmin, Handle: s.handleMint},
		{Method: "GET", Pattern: "/v1/tokens", Access: api.AccessAdmin, Handle: s.handleList},
		{Method: "DELETE", Pattern: "/v1/tokens/{tid}", Access: api.AccessAdmin, Handle: s.handleRevoke},
		{Method: "POST", Pattern: "/v1/sandboxes/{id}/sessions/{sid}/tokens", Access: api.AccessSessionWrite, Session: api.SessionPath, Handle: s.handleMintSession},
	}
}

type grantKey struct{}
type connKey struct{}

// ConnContext is the TCP server's http.Server.ConnContext: it lets the middleware cut a
// connection whose token ends.
func ConnContext(ctx context.Context, c net.Conn) context.Context {
	return context.WithValue(ctx, connKey{}, c)
}

// Middleware authenticates every request of the TCP listener: a bearer token (or, on a
// WebSocket handshake, a subprotocol api.TerminalTokenProtocol+token) must be valid, else 401.
// CORS preflights from allowed origins are answered here. While a request runs, the end of its
// token's grant closes its connection (with HTTP/1.1 only, that connection is the request's).
func (s *Service) Middleware(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if s.cors(w, req) {
			return
		}
		g, err := s.store.Authenticate(bearer(req))
		if err != nil {
			w.Header().Set("WWW-Authenticate", `Bearer realm="nsbox"`)
			httpapi.ServeError(s.log, w, err)
			return
		}
		if conn, ok := req.Context().Value(connKey{}).(net.Conn); ok {
			stop := context.AfterFunc(g.ctx, func() { conn.Close() })
			defer stop()
		}
		next.ServeHTTP(w, req.WithContext(context.WithValue(req.Context(), grantKey{}, g)))
	})
}

// bearer finds a request's token: Authorization: Bearer, or the token subprotocol of a
// WebSocket handshake.
func bearer(req *http.Request) string {
	if scheme, token, ok := strings.Cut(req.Header.Get("Authorization"), " "); ok && strings.EqualFold(scheme, "Bearer") {
		return strings.TrimSpace(token)
	}
	if !strings.EqualFold(req.Header.Get("Upgrade"), "websocket") {
		return ""
	}
	for _, h := range req.Header.Values("Sec-WebSocket-Protocol") {
		for _, p := range strings.Split(h, ",") {
			if token, ok := strings.CutPrefix(strings.TrimSpace(p), api.TerminalTokenProtocol); ok {
				return token
			}
		}
	}
	return ""
}

// cors adds the CORS headers for an allowed Origin, and answers a preflight (true).
func (s *Service) cors(w http.ResponseWriter, req *http.Request) bool {
	origin := req.Header.Get("Origin")
	preflight := req.Method == http.MethodOptions && req.Header.Get("Access-Control-Request-Method") != ""
	if origin == "" || !slices.Contains(s.origins, origin) {
		if preflight {
			httpapi.ServeError(s.log, w, api.Errorf(api.CodePermissionDenied, "origin %q is not allowed (the daemon's --cors-origin)", origin))
		}
		return preflight
	}
	h := w.Header()
	h.Set("Access-Control-Allow-Origin", origin)
	h.Add("Vary", "Origin")
	if !preflight {
		h.Set("Access-Control-Expose-Headers", "Content-Range, Content-Length, WWW-Authenticate")
		return false
	}
	h.Set("Access-Control-Allow-Methods", "GET, PUT, POST, PATCH, DELETE")
	h.Set("Access-Control-Allow-Headers", "Authorization, Content-Type, Accept, Range")
	h.Set("Access-Control-Max-Age", "600")
	w.WriteHeader(http.StatusNoContent)
	return true
}

// grantOf is the grant a request was authenticated with; nil on the unix socket.
func grantOf(ctx context.Context) *Grant {
	g, _ := ctx.Value(grantKey{}).(*Grant)
	return g
}

// Check is the core router's httpapi.Check: it holds a scoped token to its sandbox, its session
// and its permission. Requests without a grant (the unix socket) and admin tokens pass.
func (s *Service) Check(req *http.Request, access api.Access, from api.SessionFrom) (*http.Request, error) {
	g := grantOf(req.Context())
	if g == nil || g.Admin || access == api.AccessAny {
		return req, nil
	}
	t := g.Token
	if access == api.AccessAdmin {
		return nil, api.Errorf(api.CodePermissionDenied, "%s %s needs an admin token; this token reaches sandbox %q only", req.Method, req.URL.Path, t.Sandbox)
	}
	if id := req.PathValue("id"); id != t.Sandbox {
		return nil, api.Errorf(api.CodePermissionDenied, "this token reaches sandbox %q only, not %q", t.Sandbox, id)
	}
	if t.Session != "" {
		if access == api.AccessSandboxWrite {
			return nil, api.Errorf(api.CodePermissionDenied, "a token of session %q cannot change the sandbox as a whole (sessions, env, network, ports, processes); that needs a sandbox token", t.Session)
		}
		var err error
		if req, err = holdToSession(req, from, t.Session); err != nil {
			return nil, err
		}
	}
	if t.Permission == api.PermissionWrite {
		return req, nil
	}
	if access != api.AccessRead {
		if t.Session != "" {
			return nil, api.Errorf(api.CodePermissionDenied, "session %q is read-only for this token: it may read, list, stat and watch files, list processes, read logs and watch the terminal", t.Session)
		}
		return nil, api.Errorf(api.CodePermissionDenied, "this token is read-only: it may read sandbox %q, not change it", t.Sandbox)
	}
	return req.WithContext(api.WithReadOnly(req.Context())), nil
}

// holdToSession refuses a request of a session's token made for another session. A file
// request that names no session is made for the token's; uid and gid overrides are refused
// (the session's user is who it writes as).
func holdToSession(req *http.Request, from api.SessionFrom, sid string) (*http.Request, error) {
	var named string
	switch from {
	case api.SessionNone:
		return req, nil
	case api.SessionPath:
		named = req.PathValue("sid")
	case api.SessionQuery:
		q := req.URL.Query()
		if q.Has("uid") || q.Has("gid") {
			return nil, api.Errorf(api.CodePermissionDenied, "a token of session %q writes as the session's user: uid and gid cannot be given", sid)
		}
		var err error
		if named, err = api.QuerySession(q); err != nil {
			return nil, err
		}
		if named == "" {
			q.Set("sessionId", sid)
			req = req.Clone(req.Context())
			req.URL.RawQuery = q.Encode()
			return req, nil
		}
	case api.SessionBody:
		data, err := io.ReadAll(http.MaxBytesReader(nil, req.Body, api.MaxRequestBody))
		if err != nil {
			return nil, api.Errorf(api.CodeInvalidArgument, "read request body: %v", err)
		}
		req.Body = io.NopCloser(bytes.NewReader(data))
		var body struct {
			SessionID string `json:"sessionId"`
		}
		_ = json.Unmarshal(data, &body) // a malformed body is the handler's to refuse
		named = body.SessionID
	}
	if named != sid {
		return nil, api.Errorf(api.CodePermissionDenied, "this token reaches session %q only; name it (sessionId %q), not %q", sid, sid, named)
	}
	return req, nil
}

func (s *Service) handleMint(w http.ResponseWriter, req *http.Request) error {
	var body api.CreateTokenRequest
	if err := httpapi.DecodeJSON(req, &body, false); err != nil {
		return err
	}
	if body.TTLSeconds <= 0 {
		return api.Errorf(api.CodeInvalidArgument, "ttlSeconds must be more than 0 (at most %d)", int64(MaxTTL/time.Second))
	}
	if _, err := s.sandboxes.Get(body.Sandbox); err != nil {
		return err
	}
	return s.mint(w, req, api.Token{Sandbox: body.Sandbox, Session: body.Session, Permission: body.Permission}, time.Duration(body.TTLSeconds)*time.Second, nil)
}

// handleMintSession mints a session token for a browser: at most the caller's permission and
// life, and never write for a read session; the answer has the URLs the browser needs: the
// API, the terminal's WebSocket and the web terminal page (package ui) with the token in its
// fragment, which a browser never sends to a server.
func (s *Service) handleMintSession(w http.ResponseWriter, req *http.Request) error {
	var body api.CreateSessionTokenRequest
	if err := httpapi.DecodeJSON(req, &body, true); err != nil {
		return err
	}
	if body.TTLSeconds < 0 {
		return api.Errorf(api.CodeInvalidArgument, "ttlSeconds must not be negative")
	}
	ttl := time.Duration(body.TTLSeconds) * time.Second
	if ttl == 0 {
		ttl = defaultSessionTTL
	}
	if g := grantOf(req.Context()); g != nil && !g.Admin {
		ttl = min(ttl, time.Until(g.Token.ExpiresAt).Truncate(time.Second))
	}
	id, sid := req.PathValue("id"), req.PathValue("sid")
	scheme := "http"
	if req.TLS != nil {
		scheme = "https"
	}
	base := url.URL{Scheme: scheme, Host: req.Host}
	terminal := base
	terminal.Scheme = strings.Replace(scheme, "http", "ws", 1)
	terminal.Path = "/v1/sandboxes/" + id + "/sessions/" + sid + "/terminal"
	page := base
	page.Path = "/ui/terminal"
	page.RawQuery = url.Values{"sandbox": {id}, "session": {sid}}.Encode()
	urls := func(t *api.NewToken) any {
		page.Fragment = "token=" + t.Secret
		return api.SessionToken{NewToken: *t, API: base.String(), Terminal: terminal.String(), Page: page.String()}
	}
	return s.mint(w, req, api.Token{Sandbox: id, Session: sid, Permission: body.Permission}, ttl, urls)
}

// mint checks a token's scope against its session and mints it; answer, when set, makes
// the answer from the new token.
func (s *Service) mint(w http.ResponseWriter, req *http.Request, t api.Token, ttl time.Duration, answer func(*api.NewToken) any) error {
	if ttl > MaxTTL {
		return api.Errorf(api.CodeInvalidArgument, "a token lives at most %d seconds", int64(MaxTTL/time.Second))
	}
	if ttl <= 0 {
		return api.Errorf(api.CodePermissionDenied, "the calling token expires too soon to mint another")
	}
	if t.Session != "" {
		sess, err := s.sandboxes.Session(req.Context(), t.Sandbox, t.Session)
		if err != nil {
			return err
		}
		if t.Permission == "" {
			t.Permission = sess.Permission
		}
		if t.Permission == api.PermissionWrite && sess.Permission == api.PermissionRead {
			return api.Errorf(api.CodePermissionDenied, "session %q is read-only: mint a read token for it", t.Session)
		}
	}
	if t.Permission != api.PermissionRead && t.Permission != api.PermissionWrite {
		return api.Errorf(api.CodeInvalidArgument, "permission must be %q or %q, not %q", api.PermissionRead, api.PermissionWrite, t.Permission)
	}
	nt, err := s.store.Mint(t, ttl)
	if err != nil {
		return err
	}
	s.log.Info("token minted", "id", nt.ID, "sandbox", t.Sandbox, "session", t.Session, "permission", t.Permission, "expires", nt.ExpiresAt)
	var out any = nt
	if answer != nil {
		out = answer(nt)
	}
	httpapi.WriteJSON(w, http.StatusCreated, out)
	return nil
}

func (s *Service) handleList(w http.ResponseWriter, _ *http.Request) error {
	httpapi.WriteJSON(w, http.StatusOK, s.store.List())
	return nil
}

func (s *Service) handleRevoke(w http.ResponseWriter, req *http.Request) error {
	if err := s.store.Revoke(req.PathValue("tid")); err != nil {
		return err
	}
	s.log.Info("token revoked", "id", req.PathValue("tid"))
	w.WriteHeader(http.StatusNoContent)
	return nil
}
