package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/nsbox/nsbox/api"
	"github.com/nsbox/nsbox/client"
)

// Copying out of a sandbox writes names and contents the sandbox chose onto the host, as
// root. Everything below the destination is therefore reached from an open directory, one
// name at a time, with openat2(RESOLVE_BENEATH|RESOLVE_NO_SYMLINKS): a symlink the sandbox
// planted there by an earlier copy (or any other) is replaced, never followed. Files are
// written to a new temporary name (O_CREAT|O_EXCL|O_NOFOLLOW), given their mode with fchmod
// and renamed over the old name, so a hard link or symlink at that name is never written
// through.

// copyOutOptions are what nsbox cp may do on the host beyond plain files and directories.
type copyOutOptions struct {
	keepSpecial bool  // keep setuid and setgid bits, and sticky on files
	maxBytes    int64 // fail beyond this many bytes of file content in all (0: no cap)
}

// hostCopy copies one sandbox tree beneath a host directory.
type hostCopy struct {
	ctx  context.Context
	cl   *client.Client
	id   string
	opts copyOutOptions
	left int64 // bytes still allowed under opts.maxBytes
}

// copyOut copies the file or directory src of sandbox id to the local dst.
func copyOut(ctx context.Context, cl *client.Client, id, src, dst string, opts copyOutOptions) error {
	info, err := cl.StatFile(ctx, id, src)
	if err != nil {
		return err
	}
	if dst == "-" {
		if info.IsDir() {
			return errors.New("nsbox cp: a directory cannot be written to stdout")
		}
		return download(ctx, cl, id, src, os.Stdout)
	}
	dir, name, err := openDestination(dst, info.Name)
	if err != nil {
		return err
	}
	defer dir.Close()
	hc := &hostCopy{ctx: ctx, cl: cl, id: id, opts: opts, left: opts.maxBytes}
	return hc.entry(dir, name, *info)
}

// openDestination opens the host directory the copy goes into and the name it gets there.
// DST's parent directories are the caller's and are followed. DST itself, when it exists,
// is taken as the directory to copy into only if it is a real directory; a symlink there
// (which an earlier copy out may have made) is replaced unless DST ends with a slash.
func openDestination(dst, srcName string) (*os.File, string, error) {
	if strings.HasSuffix(dst, "/") {
		dir, err := openDir(dst)
		return dir, srcName, err
	}
	parent, base := filepath.Split(filepath.Clean(dst))
	if base == "." || base == ".." || base == "/" || base == "" {
		dir, err := openDir(dst)
		return dir, srcName, err
	}
	if parent == "" {
		parent = "."
	}
	dir, err := openDir(parent)
	if err != nil {
		return nil, "", err
	}
	var st unix.Stat_t
	err = unix.Fstatat(int(dir.Fd()), base, &st, unix.AT_SYMLINK_NOFOLLOW)
	if err != nil || st.Mode&unix.S_IFMT != unix.S_IFDIR {
		if err != nil && !errors.Is(err, unix.ENOENT) {
			dir.Close()
			return nil, "", fmt.Errorf("stat %s: %w", dst, err)
		}
		return dir, base, nil
	}
	sub, err := openBeneath(dir, base, unix.O_RDONLY|unix.O_DIRECTORY, 0)
	dir.Close()
	if err != nil {
		return nil, "", fmt.Errorf("open %s: %w", dst, err)
	}
	return sub, srcName, nil
}

func openDir(p string) (*os.File, error) {
	fd, err := unix.Open(p, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open directory %s: %w", p, err)
	}
	return os.NewFile(uintptr(fd), p), nil
}

// openBeneath opens name in dir without following any symlink or leaving dir.
func openBeneath(dir *os.File, name string, flags int, mode uint32) (*os.File, error) {
	how := unix.OpenHow{
		Flags:   uint64(flags | unix.O_CLOEXEC | unix.O_NOFOLLOW),
		Mode:    uint64(mode),
		Resolve: unix.RESOLVE_BENEATH | unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_NO_MAGICLINKS,
	}
	fd, err := unix.Openat2(int(dir.Fd()), name, &how)
	if err != nil {
		return nil, err
	}
	return os.NewFile(uintptr(fd), filepath.Join(dir.Name(), name)), nil
}

// entry copies the sandbox entry info to name in dir.
func (hc *hostCopy) entry(dir *os.File, name string, info api.FileInfo) error {
	if name == "" || name == "." || name == ".." || strings.ContainsRune(name, '/') {
		return fmt.Errorf("nsbox cp: the sandbox named an entry %q: not a file name", name)
	}
	host := filepath.Join(dir.Name(), name)
	switch info.Type {
	case "dir":
		return hc.dir(dir, name, info, host)
	case "symlink":
		return replaceWith(dir, name, host, func(tmp string) error {
			return unix.Symlinkat(info.LinkTarget, int(dir.Fd()), tmp)
		})
	case "file":
		return hc.file(dir, name, info, host)
	}
	fmt.Fprintf(os.Stderr, "nsbox: skipped %s: not a regular file, directory or symlink\n", info.Path)
	return nil
}

// dir makes (or reuses) the directory name in dir and copies info's entries into it. A
// symlink at name is replaced by the directory; only a directory this copy made gets
// info's mode.
func (hc *hostCopy) dir(dir *os.File, name string, info api.FileInfo, host string) error {
	made, err := mkdirOverSymlink(dir, name)
	if err != nil {
		return fmt.Errorf("make directory %s: %w", host, err)
	}
	sub, err := openBeneath(dir, name, unix.O_RDONLY|unix.O_DIRECTORY, 0)
	if err != nil {
		return fmt.Errorf("open directory %s: %w", host, err)
	}
	defer sub.Close()
	list, err := hc.cl.ListFiles(hc.ctx, hc.id, info.Path, client.ListOptions{Depth: 1, Hidden: true})
	if err != nil {
		return err
	}
	for _, child := range list {
		if err := hc.entry(sub, child.Name, child); err != nil {
			return err
		}
	}
	if !made {
		return nil
	}
	if err := unix.Fchmod(int(sub.Fd()), hc.mode(info)); err != nil {
		return fmt.Errorf("set the mode of %s: %w", host, err)
	}
	return nil
}

// mkdirOverSymlink makes the directory name in dir, first removing a symlink there, and
// reports whether it made one (false: a directory was there).
func mkdirOverSymlink(dir *os.File, name string) (bool, error) {
	err := unix.Mkdirat(int(dir.Fd()), name, 0o700)
	if !errors.Is(err, unix.EEXIST) {
		return err == nil, err
	}
	var st unix.Stat_t
	if err := unix.Fstatat(int(dir.Fd()), name, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return false, err
	}
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFDIR:
		return false, nil
	case unix.S_IFLNK:
		if err := unix.Unlinkat(int(dir.Fd()), name, 0); err != nil {
			return false, err
		}
		return true, unix.Mkdirat(int(dir.Fd()), name, 0o700)
	}
	return false, errors.New("a file that is not a directory is in the way")
}

// file downloads info's content into a new temporary file, holes for runs of zeros, and
// renames it to name.
func (hc *hostCopy) file(dir *os.File, name string, info api.FileInfo, host string) error {
	if hc.opts.maxBytes > 0 && info.Size > hc.left {
		return fmt.Errorf("nsbox cp: %s (%d bytes) goes beyond --max-bytes %d", info.Path, info.Size, hc.opts.maxBytes)
	}
	return replaceWith(dir, name, host, func(tmp string) error {
		f, err := openBeneath(dir, tmp, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL, 0o600)
		if err != nil {
			return fmt.Errorf("create a temporary file for %s: %w", host, err)
		}
		defer f.Close()
		rd, err := hc.cl.ReadFile(hc.ctx, hc.id, info.Path)
		if err != nil {
			return err
		}
		defer rd.Close()
		var src io.Reader = rd
		if hc.opts.maxBytes > 0 {
			src = &capReader{r: rd, left: &hc.left, max: hc.opts.maxBytes}
		}
		sw := &sparseWriter{f: f}
		if _, err := io.Copy(sw, src); err != nil {
			return fmt.Errorf("copy %s to %s: %w", info.Path, host, err)
		}
		if err := f.Truncate(sw.off); err != nil {
			return fmt.Errorf("size %s: %w", host, err)
		}
		if err := unix.Fchmod(int(f.Fd()), hc.mode(info)); err != nil {
			return fmt.Errorf("set the mode of %s: %w", host, err)
		}
		return f.Close()
	})
}

// replaceWith has create make a new entry under a fresh temporary name in dir, then renames
// it over name, or removes it when anything failed.
func replaceWith(dir *os.File, name, host string, create func(tmp string) error) error {
	var suffix [8]byte
	_, _ = rand.Read(suffix[:])
	tmp := ".nsbox-cp-" + hex.EncodeToString(suffix[:])
	err := create(tmp)
	if err == nil {
		if err = unix.Renameat(int(dir.Fd()), tmp, int(dir.Fd()), name); err != nil {
			err = fmt.Errorf("put %s in place: %w", host, err)
		}
	}
	if err != nil {
		_ = unix.Unlinkat(int(dir.Fd()), tmp, 0)
	}
	return err
}

// mode is the host mode of info: its permission bits, without setuid and setgid (and sticky
// on anything but a directory, where it only restricts) unless --keep-special.
func (hc *hostCopy) mode(info api.FileInfo) uint32 {
	m, err := strconv.ParseUint(info.Mode, 8, 32)
	if err != nil {
		return 0o600
	}
	keep := uint64(0o777)
	switch {
	case hc.opts.keepSpecial:
		keep |= 0o7000
	case info.IsDir():
		keep |= 0o1000
	}
	return uint32(m & keep)
}

// capReader fails once more than max bytes were read through all capReaders sharing left.
type capReader struct {
	r    io.Reader
	left *int64
	max  int64
}

func (c *capReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	if *c.left -= int64(n); *c.left < 0 {
		return n, fmt.Errorf("more than --max-bytes %d bytes", c.max)
	}
	return n, err
}

// sparseBlock is the granularity of holes: a block of zeros aligned to it is skipped.
const sparseBlock = 4096

var zeroBlock [sparseBlock]byte

// sparseWriter writes at increasing offsets of f and leaves block-aligned runs of zeros as
// holes; the caller truncates f to off at the end, which also makes a trailing hole.
type sparseWriter struct {
	f   *os.File
	off int64
}

func (w *sparseWriter) Write(p []byte) (int, error) {
	// block is the end of the piece of p starting at i that reaches the next block boundary
	// of the file, and whether that piece is all zeros.
	block := func(i int) (int, bool) {
		end := min(len(p), i+sparseBlock-int((w.off+int64(i))%sparseBlock))
		return end, bytes.Equal(p[i:end], zeroBlock[:end-i])
	}
	for start := 0; start < len(p); {
		// A run of data blocks goes out in one write; a run of zero blocks is skipped.
		end, zero := block(start)
		for end < len(p) {
			next, nextZero := block(end)
			if nextZero != zero {
				break
			}
			end = next
		}
		if !zero {
			if _, err := w.f.WriteAt(p[start:end], w.off+int64(start)); err != nil {
				return start, err
			}
		}
		start = end
	}
	w.off += int64(len(p))
	return len(p), nil
}
