// Package ui is the daemon's web terminal: a page (GET /ui/terminal) that attaches a browser
// to a session's terminal WebSocket with a session token, on xterm.js. The page's own HTML,
// CSS and script live in assets/; xterm.js and its fit addon come from the npm registry
// (ui/package.json and package-lock.json) and are copied into assets/vendor by
// scripts/ui-assets.sh, which `make build` runs. Everything is embedded in the binary: nothing
// is fetched at run time. assets/vendor is not in git (third-party, minified, ~350 KB): a plain
// `go build` or `go vet` works without it, and such a binary answers the page with 503 and how
// to build it with the assets.
package ui

import (
	"embed"
	"io/fs"
	"log/slog"
	"net/http"
	"strings"

	"github.com/nsbox/nsbox/api"
	"github.com/nsbox/nsbox/api/httpapi"
)

//go:embed assets
var embedded embed.FS

// vendorFiles are what scripts/ui-assets.sh copies from node_modules.
var vendorFiles = []string{"vendor/xterm.mjs", "vendor/xterm.css", "vendor/addon-fit.mjs"}

// Prefix is where the UI is served.
const Prefix = "/ui/"

// Handler serves the web terminal under Prefix: /ui/terminal is the page, the other paths its
// files. The page needs no token to load; it reads one from its URL's fragment (#token=…) or
// query (?token=…, which it moves into the fragment at once) and sends it as the WebSocket's
// subprotocol, so the token never reaches a request line or a log.
func Handler(log *slog.Logger) http.Handler {
	assets, err := fs.Sub(embedded, "assets")
	if err != nil {
		panic(err) // the embedded tree always has assets/
	}
	missing := missingVendor(assets)
	files := http.FileServerFS(assets)
	return httpapi.Handle(log, func(w http.ResponseWriter, req *http.Request) error {
		if req.Method != http.MethodGet && req.Method != http.MethodHead {
			return api.Errorf(api.CodeInvalidArgument, "%s %s: the web terminal's files are read with GET", req.Method, req.URL.Path)
		}
		if missing != "" {
			return api.Errorf(api.CodeUnavailable, "this nsbox binary was built without the web terminal's assets (%s is missing): build it with `make build`, which fetches xterm.js with npm", missing)
		}
		name := strings.TrimPrefix(req.URL.Path, Prefix)
		if name == "terminal" {
			name = "terminal.html"
		}
		if name == "" || strings.HasSuffix(name, "/") {
			return api.Errorf(api.CodeNotFound, "no such file: %s (the page is %sterminal)", req.URL.Path, Prefix)
		}
		if _, err := fs.Stat(assets, name); err != nil {
			return api.Errorf(api.CodeNotFound, "no such file: %s", req.URL.Path)
		}
		h := w.Header()
		// The page and its scripts come from here only; the WebSocket goes to this origin.
		// Inline styles are xterm.js's own (it sizes its rows with style attributes and a
		// <style> element).
		h.Set("Content-Security-Policy", "default-src 'self'; connect-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; base-uri 'none'; form-action 'none'")
		h.Set("Referrer-Policy", "no-referrer")
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Cache-Control", "no-cache")
		req = req.Clone(req.Context())
		req.URL.Path = "/" + name
		files.ServeHTTP(w, req)
		return nil
	})
}

// missingVendor names the first vendor file the binary lacks ("" when it has them all).
func missingVendor(assets fs.FS) string {
	for _, f := range vendorFiles {
		if _, err := fs.Stat(assets, f); err != nil {
			return f
		}
	}
	return ""
}
