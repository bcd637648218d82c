package proxy

import (
	"crypto/subtle"
	"fmt"
	"net/http"
	"net/url"
	"regexp"
	"strconv"
	"strings"
)

const (
	// TokenHeader is the request header that may carry a port's access token.
	TokenHeader = "X-Nsbox-Token"
	// TokenQuery is the query parameter that may carry a port's access token; the proxy
	// answers it with a redirect that sets the token cookie.
	TokenQuery = "nsbox_token"
	// cookiePrefix starts the name of the cookie that keeps a port's token
	// (nsbox_token_<port>). Every cookie with this prefix is kept from the sandbox.
	cookiePrefix = "nsbox_token"
)

// cookieName names the cookie that keeps the token of one port.
func cookieName(port int) string { return cookiePrefix + "_" + strconv.Itoa(port) }

// tokenSource says where a request's token came from.
type tokenSource int

const (
	fromNone tokenSource = iota
	fromQuery
	fromHeader
	fromHost
	fromCookie
)

// credential is the token a request presents. When it carries several, the most explicit
// one decides (query, header, host, then cookie), so a stale cookie never overrides a
// token the user just gave.
type credential struct {
	token  string
	source tokenSource
}

func credentialOf(r *http.Request, hostToken string, port int) credential {
	if t := r.URL.Query().Get(TokenQuery); t != "" {
		return credential{t, fromQuery}
	}
	if t := r.Header.Get(TokenHeader); t != "" {
		return credential{t, fromHeader}
	}
	if hostToken != "" {
		return credential{hostToken, fromHost}
	}
	if c, err := r.Cookie(cookieName(port)); err == nil && c.Value != "" && !crossOrigin(r) {
		return credential{c.Value, fromCookie}
	}
	return credential{}
}

// crossOrigin reports whether a request comes from another origin. Every preview shares one
// site (the proxy's domain), so SameSite does not keep one sandbox's pages from sending
// requests, with the cookie, to another's: the cookie only counts for a request its own
// origin makes (or a top-level navigation, which browsers mark "none" or omit).
func crossOrigin(r *http.Request) bool {
	switch r.Header.Get("Sec-Fetch-Site") {
	case "", "same-origin", "none":
	default:
		return true
	}
	origin := r.Header.Get("Origin")
	if origin == "" || origin == "null" {
		return origin == "null"
	}
	u, err := url.Parse(origin)
	return err != nil || !strings.EqualFold(u.Host, r.Host)
}

// opens reports, in constant time for tokens of the right length, whether the credential
// is the port's token. An empty token opens nothing.
func (c credential) opens(token string) bool {
	return token != "" && c.token != "" && subtle.ConstantTimeCompare([]byte(c.token), []byte(token)) == 1
}

// tokenHelp says how to present a token, for the 401 and 403 pages.
func tokenHelp(port int, sandbox, domain string) string {
	return fmt.Sprintf("Port %d of sandbox %q needs its access token (shown when the port was exposed). "+
		"Give it in the address as http://%d-%s-{token}.%s/, in the %s request header, "+
		"or once as ?%s={token} on any page (the browser then keeps it in a cookie). "+
		"Expose the port as public to need no token.",
		port, sandbox, port, sandbox, domain, TokenHeader, TokenQuery)
}

// redirectable reports whether a request with the token in its query can be answered with
// a redirect: plain GET and HEAD only (a redirect would drop a body, and a WebSocket
// handshake cannot follow one).
func redirectable(r *http.Request) bool {
	return (r.Method == http.MethodGet || r.Method == http.MethodHead) && r.Header.Get("Upgrade") == ""
}

// redirectWithCookie answers a request that carried a valid token in its query with a
// redirect to the same address without it, setting the port's token cookie.
func redirectWithCookie(w http.ResponseWriter, r *http.Request, port int, token string) {
	http.SetCookie(w, &http.Cookie{
		Name:     cookieName(port),
		Value:    token,
		Path:     "/",
		HttpOnly: true,
		Secure:   r.TLS != nil,
		SameSite: http.SameSiteLaxMode,
	})
	// A single leading slash: "//host/x" would send the browser to another host.
	loc := "/" + strings.TrimLeft(r.URL.EscapedPath(), "/")
	if q := withoutParam(r.URL.RawQuery, TokenQuery); q != "" {
		loc += "?" + q
	}
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("Referrer-Policy", "no-referrer")
	http.Redirect(w, r, loc, http.StatusFound)
}

// stripCredentials removes every trace of a token from the request sent to the sandbox:
// the header, the query parameter, the token cookies, and the tokens in Origin and
// Referer (which name the tokened host or carry the query).
func stripCredentials(out *http.Request, tokens ...string) {
	out.Header.Del(TokenHeader)
	out.URL.RawQuery = withoutParam(out.URL.RawQuery, TokenQuery)
	if cookies := out.Header.Values("Cookie"); len(cookies) > 0 {
		out.Header.Del("Cookie")
		for _, line := range cookies {
			if kept := withoutCookies(line, cookiePrefix); kept != "" {
				out.Header.Add("Cookie", kept)
			}
		}
	}
	for _, h := range []string{"Origin", "Referer"} {
		// Any tokened preview host, this port's or another sandbox's (a page of one preview
		// that calls another): http://3000-box-{token}.domain/… → http://3000-box.domain/…
		v := tokenedLabel.ReplaceAllString(out.Header.Get(h), ".")
		if strings.Contains(strings.ToLower(v), TokenQuery+"=") {
			v = ""
		}
		for _, t := range tokens {
			if t != "" && strings.Contains(v, t) {
				v = ""
			}
		}
		if v == "" {
			out.Header.Del(h)
		} else {
			out.Header.Set(h, v)
		}
	}
}

// tokenedLabel is the token part of a tokened preview host name.
var tokenedLabel = regexp.MustCompile(`(?i)-[0-9a-f]{32}\.`)

// withoutParam removes every name=value pair whose name is name from a raw query, keeping
// the rest byte for byte.
func withoutParam(raw, name string) string {
	if raw == "" {
		return raw
	}
	var kept []string
	for part := range strings.SplitSeq(raw, "&") {
		key, _, _ := strings.Cut(part, "=")
		if k, err := url.QueryUnescape(key); err == nil {
			key = k
		}
		if key != name && part != "" {
			kept = append(kept, part)
		}
	}
	return strings.Join(kept, "&")
}

// withoutCookies removes the cookies whose names start with prefix from a Cookie header
// line, keeping the others byte for byte.
func withoutCookies(line, prefix string) string {
	var kept []string
	for part := range strings.SplitSeq(line, ";") {
		part = strings.TrimSpace(part)
		if part != "" && !strings.HasPrefix(part, prefix) {
			kept = append(kept, part)
		}
	}
	return strings.Join(kept, "; ")
}
