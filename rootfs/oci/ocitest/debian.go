package ocitest

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

// DebianPackages make a minimal Debian rootfs from this machine's apt sources: bash, dash,
// coreutils, dpkg and apt, with the libraries they load, and base-files.
var DebianPackages = []string{
	"base-files", "bash", "dash", "coreutils", "dpkg", "tar", "apt",
	"libc6", "libgcc-s1", "gcc-12-base", "libstdc++6", "libtinfo6", "libacl1", "libattr1",
	"libselinux1", "libpcre2-8-0", "libgmp10", "libmd0", "libapt-pkg6.0", "libbz2-1.0",
	"liblz4-1", "liblzma5", "libsystemd0", "libudev1", "libxxhash0", "libzstd1", "zlib1g",
	"libgcrypt20", "libgpg-error0", "libcap2",
}

// DebianUsers are the /etc/passwd and /etc/group DebianRootfs writes: root, and app (1000)
// with its home in /home/app.
const (
	debianPasswd = "root:x:0:0:root:/root:/bin/bash\napp:x:1000:1000:app:/home/app:/bin/bash\n"
	debianGroup  = "root:x:0:\napp:x:1000:\n"
)

// DebianRootfs fills dir with the Debian packages (DebianPackages when none are named): it
// downloads them with `apt-get download` from this machine's apt sources into a directory
// of its own under dir's parent, extracts them with `dpkg-deb -x` (no maintainer scripts
// run), and writes /etc/passwd and /etc/group with root and app (1000).
func DebianRootfs(ctx context.Context, dir string, packages ...string) error {
	if len(packages) == 0 {
		packages = DebianPackages
	}
	if err := os.MkdirAll(filepath.Dir(dir), 0o755); err != nil {
		return fmt.Errorf("make %s: %w", filepath.Dir(dir), err)
	}
	debs, err := os.MkdirTemp(filepath.Dir(dir), "debs-")
	if err != nil {
		return fmt.Errorf("make a download dir: %w", err)
	}
	defer os.RemoveAll(debs)
	// As root apt-get would drop to the _apt user, who may not write into debs.
	args := append([]string{"download", "-q", "-o", "APT::Sandbox::User=root"}, packages...)
	if err := run(ctx, debs, "apt-get", args...); err != nil {
		return fmt.Errorf("download Debian packages (apt-get update may be needed): %w", err)
	}
	files, err := filepath.Glob(filepath.Join(debs, "*.deb"))
	if err != nil || len(files) != len(packages) {
		return fmt.Errorf("apt-get download made %d of %d packages (%v)", len(files), len(packages), err)
	}
	for _, f := range files {
		if err := run(ctx, "", "dpkg-deb", "-x", f, dir); err != nil {
			return err
		}
	}
	return writeUsers(dir)
}

// Debootstrap fills dir with a minbase Debian system of suite from mirror, with debootstrap
// (Debian's package debootstrap), and writes /etc/passwd and /etc/group as DebianRootfs does.
func Debootstrap(ctx context.Context, dir, suite, mirror string) error {
	if err := run(ctx, "", "debootstrap", "--variant=minbase", suite, dir, mirror); err != nil {
		return err
	}
	return writeUsers(dir)
}

func writeUsers(dir string) error {
	if err := os.MkdirAll(filepath.Join(dir, "etc"), 0o755); err != nil {
		return fmt.Errorf("make /etc: %w", err)
	}
	for name, body := range map[string]string{"etc/passwd": debianPasswd, "etc/group": debianGroup} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
			return fmt.Errorf("write /%s: %w", name, err)
		}
	}
	home := filepath.Join(dir, "home", "app")
	if err := os.MkdirAll(home, 0o755); err != nil {
		return fmt.Errorf("make app's home: %w", err)
	}
	return os.Chown(home, 1000, 1000)
}

// DirLayer is a layer of the files under dir, as GNU tar archives them into the file
// tarPath (numeric owners, xattrs).
func DirLayer(ctx context.Context, dir, tarPath string) (v1.Layer, error) {
	if err := run(ctx, "", "tar", "--numeric-owner", "--xattrs", "--xattrs-include=*", "-C", dir, "-cf", tarPath, "."); err != nil {
		return nil, err
	}
	l, err := tarball.LayerFromFile(tarPath)
	if err != nil {
		return nil, fmt.Errorf("layer of %s: %w", tarPath, err)
	}
	return l, nil
}

// run runs a program in dir ("": this one) and makes its output part of its error.
func run(ctx context.Context, dir, prog string, args ...string) error {
	cmd := exec.CommandContext(ctx, prog, args...)
	cmd.Dir = dir
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("%s %s: %w: %s", prog, strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}
