package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"net/http/httptest"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/nsbox/nsbox/api"
	"github.com/nsbox/nsbox/client"
	"github.com/nsbox/nsbox/rootfs/oci/ocitest"
)

const (
	pullRuns    = 10 // measured pulls of each kind (each one moves the whole image)
	pullWarmups = 1
)

// imageLayers are the Debian packages of each layer of the benchmark's image, base first
// (together ocitest.DebianPackages): the C and C++ runtime, the shell and core tools, apt.
var imageLayers = [][]string{
	{"base-files", "libc6", "libgcc-s1", "gcc-12-base", "libstdc++6"},
	{"bash", "dash", "coreutils", "libtinfo6", "libacl1", "libattr1", "libselinux1", "libpcre2-8-0", "libgmp10"},
	{"dpkg", "tar", "apt", "libmd0", "libapt-pkg6.0", "libbz2-1.0", "liblz4-1", "liblzma5", "libsystemd0",
		"libudev1", "libxxhash0", "libzstd1", "zlib1g", "libgcrypt20", "libgpg-error0", "libcap2"},
}

// imagesSection times the pull and unpack of a Debian image (three layers of Debian's
// packages) from a registry on a loopback port, by nsbox and by `skopeo copy` followed by
// `umoci raw unpack` or by tar, and a sandbox's create → remove from that image versus from
// busybox.
func (b *bench) imagesSection(ctx context.Context, n int) (err error) {
	ref, size, stopRegistry, err := b.serveDebianImage(ctx)
	if err != nil {
		return err
	}
	defer stopRegistry()
	d, err := b.daemon(ctx, "nsbox-images", true, "")
	if err != nil {
		return err
	}
	oci, rootfs := filepath.Join(b.tmpDir, "skopeo-oci"), filepath.Join(b.tmpDir, "skopeo-rootfs")
	clean := func(context.Context) error { return errors.Join(os.RemoveAll(oci), os.RemoveAll(rootfs)) }
	skopeo := func() error {
		return runCommand("skopeo", "copy", "-q", "--src-tls-verify=false", "docker://"+ref, "oci:"+oci+":bench")
	}
	pulls := []benchCase{
		{name: "nsbox pull", ref: "skopeo copy + umoci raw unpack", before: func(ctx context.Context) error {
			// Untimed: nothing of the image is stored before a pull.
			var apiErr *api.Error
			if _, err := d.client.RemoveImage(ctx, ref, client.RemoveImageOptions{Force: true}); err != nil && !(errors.As(err, &apiErr) && apiErr.Code == api.CodeNotFound) {
				return err
			}
			_, err := d.client.PruneImages(ctx, client.PruneOptions{All: true})
			return err
		}, run: func(ctx context.Context) error {
			_, err := d.client.PullImage(ctx, api.PullImageRequest{Ref: ref}, nil)
			return err
		}},
		{name: "skopeo copy", ref: "skopeo copy + umoci raw unpack", before: clean, run: func(context.Context) error { return skopeo() }},
		{name: "skopeo copy + umoci raw unpack", before: clean, run: func(context.Context) error {
			if err := skopeo(); err != nil {
				return err
			}
			return runCommand("umoci", "raw", "unpack", "--image", oci+":bench", rootfs)
		}},
		{name: "skopeo copy + tar -xzf", ref: "skopeo copy + umoci raw unpack", before: clean, run: func(context.Context) error {
			if err := skopeo(); err != nil {
				return err
			}
			return untarLayers(oci, rootfs)
		}},
	}
	fmt.Printf("images: pull + unpack of a %.1f MB Debian image (%d layers, gzip) from a registry on 127.0.0.1; %d warm-up, then %d measured runs of each, interleaved in random order\n",
		float64(size)/1e6, len(imageLayers), pullWarmups, pullRuns)
	samples, err := timeCases(ctx, pulls, pullWarmups, pullRuns)
	if err != nil {
		return err
	}
	printTable(pulls, samples)
	if err := clean(ctx); err != nil {
		return err
	}

	creates := map[string][]time.Duration{}
	cycle := func(name, img string) benchCase {
		return benchCase{name: name, ref: "busybox", run: func(ctx context.Context) error {
			start := time.Now()
			sb, err := d.client.CreateSandbox(ctx, api.CreateSandboxRequest{Image: img})
			if err != nil {
				return fmt.Errorf("create sandbox: %w", err)
			}
			creates[name] = append(creates[name], time.Since(start))
			return d.client.RemoveSandbox(ctx, sb.ID, client.RemoveOptions{Force: true})
		}}
	}
	cycles := []benchCase{cycle("busybox", image), cycle("debian (OCI, pulled)", ref)}
	fmt.Printf("images: create → remove of a sandbox; %d warm-ups, then %d measured runs of each, interleaved in random order\n", warmups, n)
	if samples, err = timeCases(ctx, cycles, warmups, n); err != nil {
		return err
	}
	printTable(cycles, samples)
	bb, deb := median(creates["busybox"][warmups:]), median(creates["debian (OCI, pulled)"][warmups:])
	fmt.Printf("create alone (median ms): busybox %s, debian %s (%.2f×)\n\n", ms(bb), ms(deb), float64(deb)/float64(bb))
	return nil
}

// serveDebianImage builds the benchmark's image from Debian's packages and serves it from a
// registry (go-containerregistry's) on a loopback port. It returns the image's reference, its
// compressed size and a function that stops the registry.
func (b *bench) serveDebianImage(ctx context.Context) (ref string, size int64, stop func(), err error) {
	dir := filepath.Join(b.tmpDir, "debian")
	var layers []v1.Layer
	for i, pkgs := range imageLayers {
		root := filepath.Join(dir, fmt.Sprintf("layer-%d", i))
		if err := ocitest.DebianRootfs(ctx, root, pkgs...); err != nil {
			return "", 0, nil, err
		}
		l, err := ocitest.DirLayer(ctx, root, root+".tar")
		if err != nil {
			return "", 0, nil, err
		}
		layers = append(layers, l)
	}
	img, err := ocitest.NewImage(runtime.GOARCH, v1.Config{Env: []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin"}}, layers...)
	if err != nil {
		return "", 0, nil, err
	}
	srv := httptest.NewServer(registry.New(registry.Logger(log.New(io.Discard, "", 0))))
	ref = strings.TrimPrefix(srv.URL, "http://") + "/bench/debian:v1"
	tag, err := name.NewTag(ref, name.Insecure)
	if err == nil {
		err = remote.Write(tag, img, remote.WithContext(ctx))
	}
	for _, l := range layers {
		s, serr := l.Size()
		size += s
		err = errors.Join(err, serr)
	}
	if err != nil {
		srv.Close()
		return "", 0, nil, fmt.Errorf("push the image: %w", err)
	}
	return ref, size, srv.Close, nil
}

// untarLayers unpacks the layers of the single image of an OCI layout into rootfs with tar,
// base first (the image has no whiteouts to convert).
func untarLayers(layout, rootfs string) error {
	f, err := os.Open(filepath.Join(layout, "index.json"))
	if err != nil {
		return err
	}
	idx, err := v1.ParseIndexManifest(f)
	f.Close()
	if err != nil {
		return fmt.Errorf("index of %s: %w", layout, err)
	}
	if len(idx.Manifests) != 1 {
		return fmt.Errorf("%s holds %d manifests, not 1", layout, len(idx.Manifests))
	}
	blob := func(h v1.Hash) string { return filepath.Join(layout, "blobs", h.Algorithm, h.Hex) }
	if f, err = os.Open(blob(idx.Manifests[0].Digest)); err != nil {
		return err
	}
	m, err := v1.ParseManifest(f)
	f.Close()
	if err != nil {
		return fmt.Errorf("manifest in %s: %w", layout, err)
	}
	if err := os.MkdirAll(rootfs, 0o755); err != nil {
		return err
	}
	for _, l := range m.Layers {
		if err := runCommand("tar", "--numeric-owner", "--xattrs", "--xattrs-include=*", "-xzf", blob(l.Digest), "-C", rootfs); err != nil {
			return err
		}
	}
	return nil
}
