// Package rootfs owns sandbox root filesystems: the built-in images (a read-only view of the
// host's system directories, and a tiny busybox image), OCI images (kept by rootfs/oci, their
// layers in rootfs/layers), and the overlay mount that stacks a sandbox's own writable upper
// directory on top of an image.
package rootfs

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"

	"github.com/nsbox/nsbox/api"
	"github.com/nsbox/nsbox/rootfs/layers"
	"github.com/nsbox/nsbox/rootfs/oci"
)

// ErrNotFound is returned for an image name the store does not have.
var ErrNotFound = oci.ErrNotFound

// BusyboxPath is where Debian's busybox-static installs its binary.
const BusyboxPath = "/bin/busybox"

// Bind is a host path mounted read-only into every sandbox of an image.
type Bind struct {
	Source string // path on the host
	Dest   string // path inside the sandbox
}

// Image is what a sandbox's root is made from.
type Image struct {
	Name        string
	Description string
	// Layers are read-only directories, topmost first, that form the overlay's lower layers.
	Layers []string
	// Binds are host directories bind-mounted read-only on top of the overlay.
	Binds []Bind
	// Masked are paths inside the sandbox hidden from it (files read as empty, dirs as empty).
	Masked []string
	// OCI is the recorded OCI image this one is made from (nil for built-in images): its
	// Config has the Env, WorkingDir, User, Entrypoint and Cmd of its sandboxes, its ID
	// names it for the store's "is it used" checks.
	OCI *api.ImageInfo
}

// Store is the set of images under one directory: the built-in ones, and OCI images under
// oci/ with their layers under layers/.
type Store struct {
	dir    string
	images map[string]*Image // the built-in images
	oci    *oci.Store
	layers *layers.Store
}

// Option configures OpenStore.
type Option func(*oci.Registries)

// WithRegistries sets how OCI images are pulled.
func WithRegistries(reg oci.Registries) Option {
	return func(r *oci.Registries) { *r = reg }
}

// hostSystemDirs are the host directories the host image shows (read-only) when they are real
// directories; when they are symlinks (merged /usr) the image carries the same symlink.
var hostSystemDirs = []string{"/usr", "/etc", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"}

// hostSecrets are host files and directories the host image masks.
var hostSecrets = []string{
	"/etc/shadow", "/etc/shadow-", "/etc/gshadow", "/etc/gshadow-",
	"/etc/security/opasswd", "/etc/ssl/private", "/etc/sudoers.d",
	"/etc/machine-id", "/etc/credstore", "/etc/credstore.encrypted",
}

// skeletonDirs are the directories every image root has; /tmp and /var/tmp are sticky and world-writable.
var skeletonDirs = map[string]os.FileMode{
	"root": 0o700, "home": 0o755, "tmp": os.ModeSticky | 0o777, "workspace": 0o755, "proc": 0o555,
	"dev": 0o755, "sys": 0o555, "run": 0o755, "var": 0o755, "var/tmp": os.ModeSticky | 0o777, "var/lib": 0o755,
	"var/cache": 0o755, "var/log": 0o755, "mnt": 0o755, "opt": 0o755,
}

// layout is the version of what the built-in images contain; a change builds them anew.
const layout = "rootfs-3"

// OpenStore prepares the built-in images under dir: `host` always, `busybox` when Debian's
// busybox-static is installed. Images are built once and reused. It opens the OCI images
// recorded under dir too.
func OpenStore(dir string, opts ...Option) (*Store, error) {
	var reg oci.Registries
	for _, o := range opts {
		o(&reg)
	}
	ls, err := layers.Open(filepath.Join(dir, "layers"))
	if err != nil {
		return nil, err
	}
	ociStore, err := oci.Open(filepath.Join(dir, "oci"), ls, reg)
	if err != nil {
		return nil, err
	}
	s := &Store{dir: dir, images: map[string]*Image{}, oci: ociStore, layers: ls}
	host, err := s.prepareHost()
	if err != nil {
		return nil, fmt.Errorf("prepare host image: %w", err)
	}
	s.images[host.Name] = host
	if _, err := os.Stat(BusyboxPath); err == nil {
		bb, err := s.prepareBusybox()
		if err != nil {
			return nil, fmt.Errorf("prepare busybox image: %w", err)
		}
		s.images[bb.Name] = bb
	}
	return s, nil
}

// OCI is the store of OCI images: pull, import, list, inspect, remove, prune.
func (s *Store) OCI() *oci.Store { return s.oci }

// Layers is the store of layers that OCI images and snapshots share.
func (s *Store) Layers() *layers.Store { return s.layers }

// Get returns the image with that name: a built-in image (`host`, `busybox`), or an OCI image
// by any name oci.Store.Get takes (`busybox:latest` is the OCI image; `busybox` alone is the
// built-in one). An OCI image is named by its canonical reference when one was asked for,
// else by its ID.
func (s *Store) Get(name string) (*Image, error) {
	if img, ok := s.images[name]; ok {
		return img, nil
	}
	info, err := s.oci.Get(name)
	if errors.Is(err, oci.ErrNotFound) {
		return nil, fmt.Errorf("%w: %q (built-in: %s; OCI images must be pulled or imported first)", ErrNotFound, name, strings.Join(s.builtinNames(), ", "))
	}
	if err != nil {
		return nil, err
	}
	if c, err := oci.Canonical(name); err == nil && (slices.Contains(info.Names, c) || slices.Contains(info.RepoDigests, c)) {
		return s.ociImage(c, info), nil
	}
	return s.ociImage(info.ID, info), nil
}

// ociImage is the image made of an OCI image's layers.
func (s *Store) ociImage(name string, info *api.ImageInfo) *Image {
	img := &Image{Name: name, Description: "OCI image " + shortID(info.ID), OCI: info, Layers: make([]string, len(info.Layers))}
	for i, d := range info.Layers {
		img.Layers[len(info.Layers)-1-i] = s.oci.LayerDir(d) // overlay wants the top layer first
	}
	return img
}

func shortID(id string) string {
	id = strings.TrimPrefix(id, "sha256:")
	return id[:min(12, len(id))]
}

// Images lists the images, sorted by name: the built-in ones, and each name of each OCI image.
func (s *Store) Images() []*Image {
	out := make([]*Image, 0, len(s.images))
	for _, img := range s.images {
		out = append(out, img)
	}
	for _, info := range s.oci.List() {
		for _, name := range info.Names {
			out = append(out, s.ociImage(name, info))
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

func (s *Store) builtinNames() []string {
	return slices.Sorted(maps.Keys(s.images))
}

// Names lists the image names, sorted.
func (s *Store) Names() []string {
	var names []string
	for _, img := range s.Images() {
		names = append(names, img.Name)
	}
	return names
}

// prepareHost builds the host image: a skeleton root whose system directories are the host's,
// bound read-only, with the host's secrets masked. nsbox's own state (/var/lib/nsbox, /run/nsbox)
// is never visible because /var and /run come from the skeleton, not from the host.
func (s *Store) prepareHost() (*Image, error) {
	img := &Image{Name: "host", Description: "the host's /usr and /etc, read-only, with secrets masked"}
	root := filepath.Join(s.dir, "host", layout)
	var links = map[string]string{}
	for _, dir := range hostSystemDirs {
		fi, err := os.Lstat(dir)
		switch {
		case errors.Is(err, os.ErrNotExist):
			continue
		case err != nil:
			return nil, fmt.Errorf("inspect %s: %w", dir, err)
		case fi.Mode()&os.ModeSymlink != 0:
			target, err := os.Readlink(dir)
			if err != nil {
				return nil, fmt.Errorf("read link %s: %w", dir, err)
			}
			links[strings.TrimPrefix(dir, "/")] = target
		case fi.IsDir():
			img.Binds = append(img.Binds, Bind{Source: dir, Dest: dir})
		}
	}
	err := buildOnce(root, func(tmp string) error {
		if err := makeSkeleton(tmp); err != nil {
			return err
		}
		for _, b := range img.Binds {
			if err := os.MkdirAll(filepath.Join(tmp, b.Dest), 0o755); err != nil {
				return fmt.Errorf("make mountpoint %s: %w", b.Dest, err)
			}
		}
		for name, target := range links {
			if err := os.Symlink(target, filepath.Join(tmp, name)); err != nil {
				return fmt.Errorf("link %s: %w", name, err)
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	img.Layers = []string{root}
	img.Masked = append(img.Masked, hostSecrets...)
	keys, _ := filepath.Glob("/etc/ssh/ssh_host_*_key")
	img.Masked = append(img.Masked, keys...)
	// Whatever else in /etc other users may not read (a database's pg_hba.conf, a service's
	// key) is the host's secret too. /usr is not walked: it holds programs, not secrets, and
	// walking it takes seconds at every daemon start.
	private, err := unreadable("/etc")
	if err != nil {
		return nil, err
	}
	img.Masked = append(img.Masked, private...)
	return img, nil
}

// unreadable lists the files and directories under dir that are not readable by others, but
// none inside a directory it lists (masking that directory hides them).
func unreadable(dir string) ([]string, error) {
	var out []string
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrPermission) || errors.Is(err, fs.ErrNotExist) {
				return nil
			}
			return err
		}
		if d.Type()&fs.ModeSymlink != 0 || p == dir {
			return nil
		}
		info, err := d.Info()
		if err != nil {
			return nil // gone meanwhile
		}
		if info.Mode().Perm()&0o004 == 0 {
			out = append(out, p)
			if d.IsDir() {
				return filepath.SkipDir
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("find what only its owner may read under %s: %w", dir, err)
	}
	return out, nil
}

// prepareBusybox builds the busybox image from Debian's static busybox: the binary, a link for
// every applet, and a minimal /etc.
func (s *Store) prepareBusybox() (*Image, error) {
	root := filepath.Join(s.dir, "busybox", layout)
	err := buildOnce(root, func(tmp string) error {
		if err := makeSkeleton(tmp); err != nil {
			return err
		}
		return installBusybox(tmp)
	})
	if err != nil {
		return nil, err
	}
	return &Image{Name: "busybox", Description: "Debian's static busybox with its applets", Layers: []string{root}}, nil
}

func installBusybox(root string) error {
	for _, d := range []string{"bin", "sbin", "usr/bin", "usr/sbin", "etc"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			return fmt.Errorf("make %s: %w", d, err)
		}
	}
	if err := copyFile(BusyboxPath, filepath.Join(root, "bin/busybox"), 0o755); err != nil {
		return err
	}
	list, err := exec.Command(BusyboxPath, "--list-full").Output()
	if err != nil {
		return fmt.Errorf("list busybox applets: %w", err)
	}
	for _, applet := range strings.Fields(string(list)) {
		link := filepath.Join(root, applet)
		if applet == "bin/busybox" {
			continue
		}
		if err := os.Symlink("/bin/busybox", link); err != nil && !errors.Is(err, os.ErrExist) {
			return fmt.Errorf("link applet %s: %w", applet, err)
		}
	}
	files := map[string]string{
		"etc/passwd":  "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n",
		"etc/group":   "root:x:0:\nnogroup:x:65534:\n",
		"etc/hosts":   "127.0.0.1 localhost\n::1 localhost\n",
		"etc/profile": "export PS1='\\h:\\w\\$ '\n",
		"etc/shells":  "/bin/sh\n/bin/ash\n",
	}
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(root, name), []byte(content), 0o644); err != nil {
			return fmt.Errorf("write %s: %w", name, err)
		}
	}
	return nil
}

func makeSkeleton(root string) error {
	for dir, mode := range skeletonDirs {
		p := filepath.Join(root, dir)
		if err := os.MkdirAll(p, 0o755); err != nil {
			return fmt.Errorf("make %s: %w", dir, err)
		}
		if err := os.Chmod(p, mode); err != nil {
			return fmt.Errorf("chmod %s: %w", dir, err)
		}
	}
	return nil
}

// buildOnce builds dir with build (into a temporary sibling, then renamed into place) unless
// it already exists, so a crash never leaves a half-built image.
func buildOnce(dir string, build func(tmp string) error) error {
	if _, err := os.Stat(dir); err == nil {
		return nil
	}
	if err := os.MkdirAll(filepath.Dir(dir), 0o755); err != nil {
		return fmt.Errorf("make image dir: %w", err)
	}
	tmp, err := os.MkdirTemp(filepath.Dir(dir), ".build-")
	if err != nil {
		return fmt.Errorf("make build dir: %w", err)
	}
	defer os.RemoveAll(tmp)
	if err := os.Chmod(tmp, 0o755); err != nil {
		return fmt.Errorf("chmod build dir: %w", err)
	}
	if err := build(tmp); err != nil {
		return err
	}
	if err := os.Rename(tmp, dir); err != nil {
		return fmt.Errorf("install image: %w", err)
	}
	return nil
}

func copyFile(src, dst string, mode os.FileMode) error {
	data, err := os.ReadFile(src)
	if err != nil {
		return fmt.Errorf("read %s: %w", src, err)
	}
	if !bytes.HasPrefix(data, []byte("\x7fELF")) {
		return fmt.Errorf("%s is not an executable", src)
	}
	if err := os.WriteFile(dst, data, mode); err != nil {
		return fmt.Errorf("write %s: %w", dst, err)
	}
	return nil
}
