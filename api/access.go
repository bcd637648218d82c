package api

import (
	"context"
	"net/url"
	"time"
)

// Access is what an endpoint asks of a caller that comes with a token (package auth decides
// who may); the unix socket's callers may do everything. The zero value is the strictest.
type Access int

const (
	// AccessAdmin: admin tokens only (sandboxes' lifecycle, images, tokens).
	AccessAdmin Access = iota
	// AccessAny: any valid token (the version).
	AccessAny
	// AccessRead: reads of the sandbox {id}; any token of it, a session's included.
	AccessRead
	// AccessSessionWrite: runs in, or writes on behalf of, one session of the sandbox {id}
	// (exec, cancel, file writes): write tokens of the sandbox or of that session.
	AccessSessionWrite
	// AccessSandboxWrite: changes the sandbox {id} as a whole (sessions, env, network, ports,
	// processes): write tokens of the sandbox, not of one session.
	AccessSandboxWrite
)

// SessionFrom is where a request names the session it is made for, so that a session's token
// can be held to its session.
type SessionFrom int

const (
	SessionNone  SessionFrom = iota // the request is for the sandbox as a whole
	SessionPath                     // the path's {sid}
	SessionQuery                    // the query parameter session or sessionId (a session token's own is filled in)
	SessionBody                     // the JSON body's sessionId
)

// Permissions of sessions and tokens (read, write), and the levels of a PermissionRule
// (all four).
const (
	PermissionNone  = "none"
	PermissionView  = "view"
	PermissionRead  = "read"
	PermissionWrite = "write"
)

type readOnlyKey struct{}

// WithReadOnly marks a request's context as made by a caller that may read only; endpoints
// that take input on an open connection (a terminal) ask ReadOnly.
func WithReadOnly(ctx context.Context) context.Context {
	return context.WithValue(ctx, readOnlyKey{}, true)
}

// ReadOnly reports whether the request's caller may read only.
func ReadOnly(ctx context.Context) bool {
	ro, _ := ctx.Value(readOnlyKey{}).(bool)
	return ro
}

// CreateTokenRequest is the body of POST /v1/tokens.
type CreateTokenRequest struct {
	Sandbox    string `json:"sandbox"`
	Session    string `json:"session,omitempty"` // empty: the whole sandbox
	Permission string `json:"permission"`        // read or write
	TTLSeconds int64  `json:"ttlSeconds"`
}

// CreateSessionTokenRequest is the body of POST /v1/sandboxes/{id}/sessions/{sid}/tokens.
type CreateSessionTokenRequest struct {
	Permission string `json:"permission,omitempty"` // default: the session's own
	TTLSeconds int64  `json:"ttlSeconds,omitempty"` // default 900
}

// Token is a scoped token as GET /v1/tokens lists it (never with its secret).
type Token struct {
	ID         string    `json:"id"`
	Sandbox    string    `json:"sandbox"`
	Session    string    `json:"session,omitempty"`
	Permission string    `json:"permission"`
	CreatedAt  time.Time `json:"createdAt"`
	ExpiresAt  time.Time `json:"expiresAt"`
}

// NewToken is a token just minted: the only time its secret is shown.
type NewToken struct {
	Token
	Secret string `json:"token"`
}

// SessionToken is the answer of POST …/sessions/{sid}/tokens: the token and the URLs a
// browser needs with it (as the request reached the daemon).
type SessionToken struct {
	NewToken
	API      string `json:"api"`      // base URL of the API
	Terminal string `json:"terminal"` // the session's terminal WebSocket; send the token as subprotocol TerminalTokenProtocol+token
	Page     string `json:"page"`     // the daemon's web terminal for the session, the token in its fragment
}

// TerminalProtocol is the WebSocket subprotocol of a terminal; a client that sends its token
// as a subprotocol offers this one too and the server answers with it.
const TerminalProtocol = "nsbox.terminal"

// TerminalTokenProtocol prefixes the token in a WebSocket subprotocol
// (Sec-WebSocket-Protocol), for browsers, which cannot set headers on a WebSocket.
const TerminalTokenProtocol = "nsbox.token."

// QuerySession is the session a request's query names: its parameter session or, the same
// under the name the JSON bodies use, sessionId. Both may be given only if they agree.
func QuerySession(q url.Values) (string, error) {
	short, long := q.Get("session"), q.Get("sessionId")
	if short != "" && long != "" && short != long {
		return "", Errorf(CodeInvalidArgument, "the query names two sessions, session %q and sessionId %q: give one", short, long)
	}
	if short != "" {
		return short, nil
	}
	return long, nil
}
