package oci

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"runtime"
	"slices"
	"strings"
	"sync"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"

	"github.com/nsbox/nsbox/api"
)

// Registries says how images are pulled.
type Registries struct {
	// Insecure are registries (host or host:port) that may be reached over plain HTTP;
	// loopback registries (localhost, 127.0.0.0/8, ::1) always may. Any other is HTTPS only.
	Insecure []string
	// Mirror is a registry (host[:port]) tried first for Docker Hub images; when it fails,
	// Docker Hub itself is used.
	Mirror string
	// Keychain finds credentials for a pull that brings none (default: the docker
	// config.json and its credential helpers, as authn.DefaultKeychain finds them).
	Keychain authn.Keychain
}

// PullOptions are the options of one pull.
type PullOptions struct {
	Auth     authn.Authenticator // credentials; nil uses the store's keychain
	Progress Progress
}

// hostPlatform is the platform a multi-arch image is resolved to.
var hostPlatform = v1.Platform{OS: runtime.GOOS, Architecture: runtime.GOARCH}

// Pull fetches the image ref (a tag or a digest reference, "alpine" meaning
// docker.io/library/alpine:latest) for this host's platform, stores its layers and records
// it. Concurrent pulls of one reference are done once: each caller gets the progress from
// the time it joined, and the pull goes on as long as one caller still waits for it.
func (s *Store) Pull(ctx context.Context, ref string, opt PullOptions) (*api.ImageInfo, error) {
	r, err := s.parse(ref)
	if err != nil {
		return nil, err
	}
	return s.pulls.do(ctx, canonical(r), opt.Progress, func(ctx context.Context, progress Progress) (*api.ImageInfo, error) {
		src, err := s.resolve(ctx, r, opt.Auth)
		if err != nil {
			return nil, err
		}
		return s.store(ctx, src, progress)
	})
}

// parse parses a reference, marking its registry insecure (plain HTTP allowed) when it is.
func (s *Store) parse(ref string) (name.Reference, error) {
	r, err := name.ParseReference(ref)
	if err != nil {
		return nil, fmt.Errorf("%w: reference %q: %v", ErrInvalid, ref, err)
	}
	if s.plainHTTPAllowed(r.Context().RegistryStr()) {
		return name.ParseReference(ref, name.Insecure)
	}
	return r, nil
}

// resolve finds the image's manifest, for Docker Hub images on the mirror first.
func (s *Store) resolve(ctx context.Context, ref name.Reference, auth authn.Authenticator) (source, error) {
	if s.reg.Mirror != "" && ref.Context().RegistryStr() == name.DefaultRegistry {
		sep := ":"
		if _, ok := ref.(name.Digest); ok {
			sep = "@"
		}
		mirror, err := s.parse(s.reg.Mirror + "/" + ref.Context().RepositoryStr() + sep + ref.Identifier())
		if err == nil {
			src, ferr := s.fetch(ctx, ref, mirror, auth)
			if ferr == nil {
				return src, nil
			}
			err = ferr
		}
		slog.Warn("registry mirror failed, pulling from Docker Hub", "mirror", s.reg.Mirror, "ref", ref.String(), "err", err)
	}
	return s.fetch(ctx, ref, ref, auth)
}

// fetch gets the manifest of ref from where (ref itself or its mirror).
func (s *Store) fetch(ctx context.Context, ref, where name.Reference, auth authn.Authenticator) (source, error) {
	opts := []remote.Option{
		remote.WithContext(ctx), remote.WithPlatform(hostPlatform), remote.WithUserAgent("nsbox"),
		remote.WithTransport(httpPolicy{base: remote.DefaultTransport, allowed: s.plainHTTPAllowed}),
	}
	if auth != nil {
		opts = append(opts, remote.WithAuth(auth))
	} else {
		keychain := s.reg.Keychain
		if keychain == nil {
			keychain = authn.DefaultKeychain
		}
		opts = append(opts, remote.WithAuthFromKeychain(keychain))
	}
	desc, err := remote.Get(where, opts...)
	if err != nil {
		return source{}, registryError(where, err)
	}
	img, err := desc.Image() // an index resolves to the image for hostPlatform
	if err != nil {
		return source{}, fmt.Errorf("%w: %s has no image for %s: %v", ErrNotFound, where, hostPlatform, err)
	}
	src := source{img: img, asStored: true, repoDigests: []string{repoName(ref.Context()) + "@" + desc.Digest.String()}}
	if _, ok := ref.(name.Tag); ok {
		src.names = []string{canonical(ref)}
	}
	return src, nil
}

// registryError tells a missing image and refused credentials from other failures.
func registryError(ref name.Reference, err error) error {
	var terr *transport.Error
	if errors.As(err, &terr) {
		switch terr.StatusCode {
		case http.StatusUnauthorized, http.StatusForbidden:
			return fmt.Errorf("%w: %s (pass credentials, or log in with docker login): %v", ErrUnauthorized, ref, err)
		case http.StatusNotFound:
			return fmt.Errorf("%w: %s: %v", ErrNotFound, ref, err)
		}
	}
	return fmt.Errorf("pull %s: %w", ref, err)
}

// plainHTTPAllowed reports whether the registry at hostport may be reached over plain HTTP.
func (s *Store) plainHTTPAllowed(hostport string) bool {
	host := hostport
	if h, _, err := net.SplitHostPort(hostport); err == nil {
		host = h
	}
	if ip := net.ParseIP(host); host == "localhost" || (ip != nil && ip.IsLoopback()) {
		return true
	}
	return slices.Contains(s.reg.Insecure, hostport) || slices.Contains(s.reg.Insecure, host)
}

// httpPolicy refuses plain HTTP requests (go-containerregistry falls back to HTTP for
// private addresses, and token servers may be named by plain URLs) to hosts not allowed it.
type httpPolicy struct {
	base    http.RoundTripper
	allowed func(hostport string) bool
}

func (p httpPolicy) RoundTrip(req *http.Request) (*http.Response, error) {
	if strings.EqualFold(req.URL.Scheme, "http") && !p.allowed(req.URL.Host) {
		return nil, fmt.Errorf("refusing plain HTTP to %s: it is not a loopback registry nor an insecure one", req.URL.Host)
	}
	return p.base.RoundTrip(req)
}

// flights are the pulls in progress, by canonical reference.
type flights struct {
	mu sync.Mutex
	m  map[string]*pullFlight
}

// pullFlight is one pull that every caller pulling the same reference waits for.
type pullFlight struct {
	done    chan struct{}
	img     *api.ImageInfo
	err     error
	cancel  context.CancelFunc
	waiters int // under flights.mu

	mu       sync.Mutex
	watchers map[int]Progress
	next     int
}

// do runs pull for key unless one runs already, and waits for it. The pull runs in its own
// context, canceled when its last waiter is gone.
func (f *flights) do(ctx context.Context, key string, progress Progress, pull func(context.Context, Progress) (*api.ImageInfo, error)) (*api.ImageInfo, error) {
	f.mu.Lock()
	fl, running := f.m[key]
	if !running {
		pctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
		fl = &pullFlight{done: make(chan struct{}), cancel: cancel, watchers: map[int]Progress{}}
		f.m[key] = fl
		go func() {
			fl.img, fl.err = pull(pctx, fl.broadcast)
			f.mu.Lock()
			if f.m[key] == fl {
				delete(f.m, key)
			}
			f.mu.Unlock()
			cancel()
			close(fl.done)
		}()
	}
	fl.waiters++
	f.mu.Unlock()
	id := fl.watch(progress)
	defer fl.unwatch(id)
	select {
	case <-fl.done:
		if fl.err != nil {
			return nil, fl.err
		}
		return clone(fl.img), nil
	case <-ctx.Done():
		f.mu.Lock()
		if fl.waiters--; fl.waiters == 0 {
			fl.cancel()
			if f.m[key] == fl {
				delete(f.m, key) // a new caller starts afresh
			}
		}
		f.mu.Unlock()
		return nil, fmt.Errorf("pull %s: %w", key, ctx.Err())
	}
}

func (fl *pullFlight) watch(p Progress) int {
	fl.mu.Lock()
	defer fl.mu.Unlock()
	fl.next++
	if p != nil {
		fl.watchers[fl.next] = p
	}
	return fl.next
}

func (fl *pullFlight) unwatch(id int) {
	fl.mu.Lock()
	defer fl.mu.Unlock()
	delete(fl.watchers, id)
}

// broadcast passes progress to every waiter, one event at a time.
func (fl *pullFlight) broadcast(p api.ImageProgress) {
	fl.mu.Lock()
	defer fl.mu.Unlock()
	for _, w := range fl.watchers {
		w(p)
	}
}
