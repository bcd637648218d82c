// Package ocitest builds OCI images from real files and serves them from a registry on a
// loopback port (go-containerregistry's pkg/registry), for tests that must not reach any
// outside network.
package ocitest

import (
	"archive/tar"
	"bytes"
	"encoding/base64"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

// BusyboxPath is Debian's static busybox, the one real program in the test image.
const BusyboxPath = "/bin/busybox"

// Entry is one entry of a test layer. File, when set, is a host file whose content is the
// entry's body. Xattrs go into the tar as PAX records.
type Entry struct {
	Name, Body, Link, File string
	Type                   byte
	Mode                   int64
	UID                    int
	Xattrs                 map[string]string
}

// Tar is a layer's tar stream made of entries (devices are 1:3, /dev/null).
func Tar(t testing.TB, entries ...Entry) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range entries {
		body := []byte(e.Body)
		if e.File != "" {
			var err error
			if body, err = os.ReadFile(e.File); err != nil {
				t.Fatal(err)
			}
		}
		mode := e.Mode
		if mode == 0 {
			mode = 0o644
			if e.Type == tar.TypeDir {
				mode = 0o755
			}
		}
		hdr := &tar.Header{Name: e.Name, Typeflag: e.Type, Mode: mode, Uid: e.UID, Gid: e.UID, Linkname: e.Link,
			Size: int64(len(body)), ModTime: time.Unix(1700000000, 0), Format: tar.FormatPAX}
		if e.Type != tar.TypeReg {
			hdr.Size, body = 0, nil
		}
		if e.Type == tar.TypeChar {
			hdr.Devmajor, hdr.Devminor = 1, 3
		}
		for k, v := range e.Xattrs {
			if hdr.PAXRecords == nil {
				hdr.PAXRecords = map[string]string{}
			}
			hdr.PAXRecords["SCHILY.xattr."+k] = v
		}
		if err := tw.WriteHeader(hdr); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write(body); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// Layer builds a layer from entries.
func Layer(t testing.TB, entries ...Entry) v1.Layer {
	t.Helper()
	data := Tar(t, entries...)
	l, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(data)), nil })
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// Config is the config of BusyboxImage.
var Config = v1.Config{
	Env:        []string{"PATH=/usr/bin:/bin", "GREETING=hello"},
	WorkingDir: "/srv",
	User:       "1000",
	Entrypoint: []string{"/bin/sh", "-c"},
	Cmd:        []string{"echo hi"},
}

// BusyboxImage is a two-layer image for this host's platform. The base has the static
// busybox (/bin/busybox, /bin/sh a symlink to it, /usr/bin/env a hard link), /etc/passwd,
// /etc/motd, /etc/issue "v1" and /var/cache/old/file; the second layer deletes /etc/motd,
// replaces /etc/passwd and /etc/issue ("v2"), and makes /var/cache opaque with only
// /var/cache/new in it.
func BusyboxImage(t testing.TB) v1.Image {
	t.Helper()
	if _, err := os.Stat(BusyboxPath); err != nil {
		t.Skip("busybox-static is not installed (scripts/install-deps.sh installs it)")
	}
	base := Layer(t,
		Entry{Name: "bin/", Type: tar.TypeDir}, Entry{Name: "etc/", Type: tar.TypeDir},
		Entry{Name: "usr/", Type: tar.TypeDir}, Entry{Name: "usr/bin/", Type: tar.TypeDir},
		Entry{Name: "srv/", Type: tar.TypeDir}, Entry{Name: "tmp/", Type: tar.TypeDir, Mode: 0o1777},
		Entry{Name: "var/", Type: tar.TypeDir}, Entry{Name: "var/cache/", Type: tar.TypeDir},
		Entry{Name: "var/cache/old/", Type: tar.TypeDir},
		Entry{Name: "bin/busybox", Type: tar.TypeReg, File: BusyboxPath, Mode: 0o755},
		Entry{Name: "bin/sh", Type: tar.TypeSymlink, Link: "busybox"},
		Entry{Name: "usr/bin/env", Type: tar.TypeLink, Link: "bin/busybox"},
		Entry{Name: "etc/passwd", Type: tar.TypeReg, Body: "root:x:0:0:root:/root:/bin/sh\n"},
		Entry{Name: "etc/motd", Type: tar.TypeReg, Body: "base\n"},
		Entry{Name: "etc/issue", Type: tar.TypeReg, Body: "v1\n"},
		Entry{Name: "var/cache/old/file", Type: tar.TypeReg, Body: "old\n"},
	)
	top := Layer(t,
		Entry{Name: "etc/", Type: tar.TypeDir},
		Entry{Name: "etc/.wh.motd", Type: tar.TypeReg},
		Entry{Name: "etc/passwd", Type: tar.TypeReg, Body: "root:x:0:0:root:/root:/bin/sh\nuser:x:1000:1000::/srv:/bin/sh\n"},
		Entry{Name: "etc/issue", Type: tar.TypeReg, Body: "v2\n"},
		Entry{Name: "var/", Type: tar.TypeDir}, Entry{Name: "var/cache/", Type: tar.TypeDir},
		Entry{Name: "var/cache/.wh..wh..opq", Type: tar.TypeReg},
		Entry{Name: "var/cache/new", Type: tar.TypeReg, Body: "new\n"},
	)
	return Image(t, runtime.GOARCH, Config, base, top)
}

// Image builds an image for linux/arch of layers (base first) with config.
func Image(t testing.TB, arch string, config v1.Config, layers ...v1.Layer) v1.Image {
	t.Helper()
	img, err := NewImage(arch, config, layers...)
	if err != nil {
		t.Fatal(err)
	}
	return img
}

// NewImage is Image for callers without a testing.TB.
func NewImage(arch string, config v1.Config, layers ...v1.Layer) (v1.Image, error) {
	img, err := mutate.AppendLayers(empty.Image, layers...)
	if err != nil {
		return nil, fmt.Errorf("append layers: %w", err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, fmt.Errorf("config file: %w", err)
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture, cf.Config = "linux", arch, config
	cf.Created = v1.Time{Time: time.Unix(1700000000, 0).UTC()}
	if img, err = mutate.ConfigFile(img, cf); err != nil {
		return nil, fmt.Errorf("set config file: %w", err)
	}
	return img, nil
}

// Index is a multi-arch index of the images, each described with its config's platform.
func Index(t testing.TB, imgs ...v1.Image) v1.ImageIndex {
	t.Helper()
	var adds []mutate.IndexAddendum
	for _, img := range imgs {
		cf, err := img.ConfigFile()
		if err != nil {
			t.Fatal(err)
		}
		adds = append(adds, mutate.IndexAddendum{Add: img, Descriptor: v1.Descriptor{Platform: cf.Platform()}})
	}
	return mutate.AppendManifests(empty.Index, adds...)
}

// Registry is a registry served on a loopback port for the length of a test.
type Registry struct {
	Host string // 127.0.0.1:port

	mu       sync.Mutex
	blobGets map[string]int    // GETs of each blob, by digest
	corrupt  map[string]bool   // blobs served with a byte flipped
	user     string            // when set, every request needs Basic auth with user:password
	password string            //
	blocked  map[string]func() // called before a blob is served (to hold it back)
}

// NewRegistry serves an empty registry until the test ends.
func NewRegistry(t testing.TB) *Registry {
	r := &Registry{blobGets: map[string]int{}, corrupt: map[string]bool{}, blocked: map[string]func(){}}
	reg := registry.New(registry.Logger(log.New(io.Discard, "", 0)))
	srv := httptest.NewServer(r.wrap(reg))
	t.Cleanup(srv.Close)
	r.Host = strings.TrimPrefix(srv.URL, "http://")
	return r
}

// RequireAuth makes every later request need Basic auth with user and password.
func (r *Registry) RequireAuth(user, password string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.user, r.password = user, password
}

// Corrupt makes the registry serve the blob with that digest with one byte changed.
func (r *Registry) Corrupt(digest string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.corrupt[digest] = true
}

// BeforeBlob calls hook before the blob with that digest is served.
func (r *Registry) BeforeBlob(digest string, hook func()) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.blocked[digest] = hook
}

// BlobGets is how many times the blob with that digest was fetched.
func (r *Registry) BlobGets(digest string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.blobGets[digest]
}

func (r *Registry) wrap(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		r.mu.Lock()
		user, password := r.user, r.password
		r.mu.Unlock()
		if user != "" {
			want := "Basic " + base64.StdEncoding.EncodeToString([]byte(user+":"+password))
			if req.Header.Get("Authorization") != want {
				w.Header().Set("WWW-Authenticate", `Basic realm="ocitest"`)
				http.Error(w, `{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}`, http.StatusUnauthorized)
				return
			}
		}
		digest := ""
		if i := strings.LastIndex(req.URL.Path, "/blobs/"); i >= 0 && req.Method == http.MethodGet {
			digest = req.URL.Path[i+len("/blobs/"):]
		}
		if digest == "" {
			next.ServeHTTP(w, req)
			return
		}
		r.mu.Lock()
		r.blobGets[digest]++
		corrupt, hook := r.corrupt[digest], r.blocked[digest]
		r.mu.Unlock()
		if hook != nil {
			hook()
		}
		if !corrupt {
			next.ServeHTTP(w, req)
			return
		}
		rec := httptest.NewRecorder()
		next.ServeHTTP(rec, req)
		body := rec.Body.Bytes()
		if len(body) > 0 {
			body[len(body)/2] ^= 0xff
		}
		for k, v := range rec.Header() {
			w.Header()[k] = v
		}
		w.WriteHeader(rec.Code)
		_, _ = w.Write(body)
	})
}

// Push uploads the image as repo:tag (repo without the host) and returns the full reference.
func (r *Registry) Push(t testing.TB, repoTag string, img v1.Image) string {
	t.Helper()
	return r.push(t, repoTag, func(tag name.Tag) error { return remote.Write(tag, img) })
}

// PushIndex uploads the index as repo:tag and returns the full reference.
func (r *Registry) PushIndex(t testing.TB, repoTag string, idx v1.ImageIndex) string {
	t.Helper()
	return r.push(t, repoTag, func(tag name.Tag) error { return remote.WriteIndex(tag, idx) })
}

func (r *Registry) push(t testing.TB, repoTag string, write func(name.Tag) error) string {
	t.Helper()
	ref := r.Host + "/" + repoTag
	tag, err := name.NewTag(ref)
	if err != nil {
		t.Fatal(err)
	}
	if err := write(tag); err != nil {
		t.Fatal(err)
	}
	return ref
}

// DockerSave is the image as `docker save` writes it (manifest.json, no OCI layout), tagged.
func DockerSave(t testing.TB, tag string, img v1.Image) []byte {
	t.Helper()
	ref, err := name.NewTag(tag)
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := tarball.Write(ref, img, &buf); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// LayoutTar is a tar of an OCI image layout holding the index (refName, when set, is its
// org.opencontainers.image.ref.name annotation).
func LayoutTar(t testing.TB, idx v1.ImageIndex, refName string) []byte {
	t.Helper()
	dir := t.TempDir()
	p, err := layout.Write(dir, empty.Index)
	if err != nil {
		t.Fatal(err)
	}
	var opts []layout.Option
	if refName != "" {
		opts = append(opts, layout.WithAnnotations(map[string]string{"org.opencontainers.image.ref.name": refName}))
	}
	if err := p.AppendIndex(idx, opts...); err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	if err := tw.AddFS(os.DirFS(dir)); err != nil {
		t.Fatal(err)
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}
