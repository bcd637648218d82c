package nsbox

import (
	"fmt"
	"log/slog"

	"github.com/nsbox/nsbox/api"
	"github.com/nsbox/nsbox/proxy"
)

// PreviewProxy returns the preview proxy (package proxy) for this daemon's exposed TCP ports:
// it routes http://{port}-{sandbox}[-{token}].{ProxyDomain} straight to the sandbox's address.
// From then on, unexposing a port or removing a sandbox also cuts the proxy's connections to
// it. Call it once, before serving.
func (r *Runtime) PreviewProxy(log *slog.Logger) (*proxy.Proxy, error) {
	if r.cfg.ProxyDomain == "" {
		return nil, fmt.Errorf("the preview proxy needs a domain (--proxy-domain)")
	}
	p, err := proxy.New(proxy.Config{Domain: r.cfg.ProxyDomain, Log: log}, previewResolver{r})
	if err != nil {
		return nil, fmt.Errorf("preview proxy: %w", err)
	}
	r.preview = p
	return p, nil
}

// previewResolver answers the proxy's lookups from the records and the network.
type previewResolver struct{ r *Runtime }

func (pr previewResolver) Resolve(sandbox string, port int) (proxy.Target, error) {
	addr, token, public, err := pr.r.PreviewTarget(sandbox, port)
	switch {
	case api.IsCode(err, api.CodeNotFound):
		return proxy.Target{}, fmt.Errorf("%w: %v", proxy.ErrNotFound, err)
	case api.IsCode(err, api.CodeUnavailable):
		return proxy.Target{}, fmt.Errorf("%w: %v", proxy.ErrStopped, err)
	case err != nil:
		return proxy.Target{}, err
	}
	return proxy.Target{Addr: addr, Token: token, Public: public}, nil
}

// forgetPreview cuts the preview proxy's connections to a sandbox's port (0: every port).
func (r *Runtime) forgetPreview(id string, port int) {
	if r.preview != nil {
		r.preview.Forget(id, port)
	}
}
