package proxy

import (
	"fmt"
	"html"
	"net/http"
	"strings"
)

// page answers with one of the proxy's own small pages: HTML for browsers, one line of
// text for everything else (curl, scripts). Proxy pages carry X-Nsbox-Proxy-Error so a
// client can tell them from the sandbox's own answers with the same status.
func page(w http.ResponseWriter, r *http.Request, status int, title, msg string) {
	h := w.Header()
	h.Set("Cache-Control", "no-store")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("X-Nsbox-Proxy-Error", strings.ReplaceAll(strings.ToLower(title), " ", "-"))
	if strings.Contains(r.Header.Get("Accept"), "text/html") {
		h.Set("Content-Type", "text/html; charset=utf-8")
		w.WriteHeader(status)
		fmt.Fprintf(w, "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>%d %s</title></head>\n"+
			"<body style=\"font-family:sans-serif;max-width:40em;margin:3em auto\"><h1>%s</h1>\n<p>%s</p>\n"+
			"<p><small>nsbox preview proxy</small></p></body></html>\n",
			status, html.EscapeString(title), html.EscapeString(title), html.EscapeString(msg))
		return
	}
	h.Set("Content-Type", "text/plain; charset=utf-8")
	w.WriteHeader(status)
	fmt.Fprintf(w, "%d %s: %s\n", status, title, msg)
}
