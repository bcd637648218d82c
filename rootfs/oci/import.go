package oci

import (
	"archive/tar"
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/klauspost/compress/zstd"

	"github.com/nsbox/nsbox/api"
	"github.com/nsbox/nsbox/rootfs/layers"
)

// ImportOptions are the options of one import.
type ImportOptions struct {
	// Name names the image of an archive that holds one image and names none; for an
	// archive that names its image, it is one more name.
	Name string
}

// Import reads a `docker save` archive or an OCI image layout in a tar, either of them
// plain, gzip- or zstd-compressed, and stores and records each of its images (a multi-arch
// image as the image for this host's platform). An archive with both a manifest.json and an
// OCI layout (`docker save` of Docker 25 and later) is read as the layout.
func (s *Store) Import(ctx context.Context, r io.Reader, opt ImportOptions) ([]*api.ImageInfo, error) {
	tmp, err := os.MkdirTemp(filepath.Join(s.dir, "tmp"), "import-")
	if err != nil {
		return nil, fmt.Errorf("make import dir: %w", err)
	}
	defer os.RemoveAll(tmp)
	archive := filepath.Join(tmp, "archive.tar")
	files, err := spool(r, archive)
	if err != nil {
		return nil, err
	}
	var srcs []source
	switch {
	case files["index.json"] && files["oci-layout"]:
		srcs, err = layoutSources(archive, filepath.Join(tmp, "layout"))
	case files["manifest.json"]:
		srcs, err = dockerSources(archive)
	default:
		err = fmt.Errorf("%w: the archive is neither a docker save archive (manifest.json) nor an OCI image layout (oci-layout, index.json)", ErrInvalid)
	}
	if err != nil {
		return nil, err
	}
	if opt.Name != "" {
		if len(srcs) != 1 {
			return nil, fmt.Errorf("%w: the archive holds %d images; a name can only be given to one", ErrInvalid, len(srcs))
		}
		c, err := Canonical(opt.Name)
		if err != nil {
			return nil, err
		}
		srcs[0].names = union(srcs[0].names, []string{c})
	}
	var out []*api.ImageInfo
	for _, src := range srcs {
		img, err := s.store(ctx, src, nil)
		if errors.Is(err, layers.ErrDigestMismatch) {
			return nil, fmt.Errorf("%w: %w", ErrInvalid, err) // the archive is corrupt
		}
		if err != nil {
			return nil, err
		}
		out = append(out, img)
	}
	return out, nil
}

// spool decompresses r into the file dst, checking that it is a tar, and returns the names
// of the regular files in it.
func spool(r io.Reader, dst string) (map[string]bool, error) {
	br := bufio.NewReader(r)
	magic, _ := br.Peek(4)
	var in io.Reader = br
	switch {
	case bytes.HasPrefix(magic, []byte{0x1f, 0x8b}):
		zr, err := gzip.NewReader(br)
		if err != nil {
			return nil, fmt.Errorf("%w: gzip: %v", ErrInvalid, err)
		}
		defer zr.Close()
		in = zr
	case bytes.Equal(magic, []byte{0x28, 0xb5, 0x2f, 0xfd}):
		zr, err := zstd.NewReader(br)
		if err != nil {
			return nil, fmt.Errorf("%w: zstd: %v", ErrInvalid, err)
		}
		defer zr.Close()
		in = zr
	}
	f, err := os.Create(dst)
	if err != nil {
		return nil, fmt.Errorf("spool archive: %w", err)
	}
	defer f.Close()
	tee := io.TeeReader(in, f)
	tr := tar.NewReader(tee)
	files := map[string]bool{}
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("%w: not a readable tar archive: %v", ErrInvalid, err)
		}
		if hdr.Typeflag == tar.TypeReg {
			files[path.Clean(hdr.Name)] = true
		}
	}
	if _, err := io.Copy(io.Discard, tee); err != nil {
		return nil, fmt.Errorf("read archive: %w", err)
	}
	return files, nil
}

// dockerSources reads the images of a `docker save` archive.
func dockerSources(archive string) ([]source, error) {
	opener := func() (io.ReadCloser, error) { return os.Open(archive) }
	manifest, err := tarball.LoadManifest(opener)
	if err != nil {
		return nil, fmt.Errorf("%w: manifest.json: %v", ErrInvalid, err)
	}
	var srcs []source
	for _, desc := range manifest {
		var tag *name.Tag
		src := source{}
		for i, t := range desc.RepoTags {
			parsed, err := name.NewTag(t)
			if err != nil {
				return nil, fmt.Errorf("%w: manifest.json: tag %q: %v", ErrInvalid, t, err)
			}
			if i == 0 {
				tag = &parsed
			}
			src.names = append(src.names, canonical(parsed))
		}
		if src.img, err = tarball.Image(opener, tag); err != nil {
			return nil, fmt.Errorf("%w: %v", ErrInvalid, err)
		}
		srcs = append(srcs, src)
	}
	return srcs, nil
}

// layoutSources extracts an OCI image layout from the archive into dir and reads its images.
func layoutSources(archive, dir string) ([]source, error) {
	if err := extract(archive, dir); err != nil {
		return nil, err
	}
	idx, err := layout.ImageIndexFromPath(dir)
	if err != nil {
		return nil, fmt.Errorf("%w: OCI layout: %v", ErrInvalid, err)
	}
	im, err := idx.IndexManifest()
	if err != nil {
		return nil, fmt.Errorf("%w: OCI layout index: %v", ErrInvalid, err)
	}
	var srcs []source
	for _, desc := range im.Manifests {
		if desc.Platform != nil && !desc.Platform.Satisfies(hostPlatform) {
			continue
		}
		img, err := layoutImage(idx, desc)
		if errors.Is(err, ErrNotFound) {
			continue
		}
		if err != nil {
			return nil, err
		}
		srcs = append(srcs, source{img: img, names: annotatedNames(desc.Annotations), asStored: true})
	}
	if len(srcs) == 0 {
		return nil, fmt.Errorf("%w: the OCI layout has no image for %s", ErrInvalid, hostPlatform)
	}
	return srcs, nil
}

// layoutImage is the image desc names in idx: the image itself, or an index's image for
// this host's platform (ErrNotFound when it has none).
func layoutImage(idx v1.ImageIndex, desc v1.Descriptor) (v1.Image, error) {
	if desc.MediaType.IsImage() {
		img, err := idx.Image(desc.Digest)
		if err != nil {
			return nil, fmt.Errorf("%w: OCI layout image %s: %v", ErrInvalid, desc.Digest, err)
		}
		return img, nil
	}
	if !desc.MediaType.IsIndex() {
		return nil, fmt.Errorf("%w: %s is neither an image nor an index", ErrNotFound, desc.Digest)
	}
	child, err := idx.ImageIndex(desc.Digest)
	if err != nil {
		return nil, fmt.Errorf("%w: OCI layout index %s: %v", ErrInvalid, desc.Digest, err)
	}
	cm, err := child.IndexManifest()
	if err != nil {
		return nil, fmt.Errorf("%w: OCI layout index %s: %v", ErrInvalid, desc.Digest, err)
	}
	for _, d := range cm.Manifests {
		if d.Platform != nil && d.Platform.Satisfies(hostPlatform) {
			return layoutImage(child, d)
		}
	}
	return nil, fmt.Errorf("%w: index %s has no image for %s", ErrNotFound, desc.Digest, hostPlatform)
}

// annotatedNames are the names an OCI layout gives an image: containerd's full name, or
// the OCI ref name when it is a full reference (it may be a tag alone).
func annotatedNames(annotations map[string]string) []string {
	for _, key := range []string{"io.containerd.image.name", "org.opencontainers.image.ref.name"} {
		ref := annotations[key]
		if !strings.ContainsAny(ref, "/:") {
			continue
		}
		if c, err := Canonical(ref); err == nil {
			return []string{c}
		}
	}
	return nil
}

// extract writes the archive's directories and regular files under dir (nothing else: an
// OCI layout has nothing else), refusing paths that leave it.
func extract(archive, dir string) error {
	f, err := os.Open(archive)
	if err != nil {
		return fmt.Errorf("open archive: %w", err)
	}
	defer f.Close()
	if err := os.Mkdir(dir, 0o700); err != nil {
		return fmt.Errorf("make layout dir: %w", err)
	}
	root, err := os.OpenRoot(dir)
	if err != nil {
		return fmt.Errorf("open layout dir: %w", err)
	}
	defer root.Close()
	tr := tar.NewReader(f)
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("%w: read archive: %v", ErrInvalid, err)
		}
		p := path.Clean(hdr.Name)
		if !filepath.IsLocal(p) {
			return fmt.Errorf("%w: archive path %q leaves the archive", ErrInvalid, hdr.Name)
		}
		switch hdr.Typeflag {
		case tar.TypeDir:
			err = root.MkdirAll(p, 0o700)
		case tar.TypeReg:
			err = extractFile(root, p, tr)
		}
		if err != nil {
			return fmt.Errorf("extract %s: %w", p, err)
		}
	}
}

func extractFile(root *os.Root, p string, r io.Reader) error {
	if err := root.MkdirAll(path.Dir(p), 0o700); err != nil {
		return err
	}
	f, err := root.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	_, err = io.Copy(f, r)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}
