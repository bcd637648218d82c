package main

import (
	"embed"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/nsbox/nsbox/internal/atomicfile"
)

// agentFiles holds the small agent binary (cmd/nsbox-agent) and the small init binary
// (cmd/nsbox-init) when make build put them there.
//
//go:embed agentbin
var agentFiles embed.FS

// agentBinary is the host path of the binary sandboxes run as their agent: the embedded
// nsbox-agent, written once under dir by its hash (7 MB, where nsbox is 32: each idle agent
// holds 1.5 MB of private memory instead of 3.8), or self, whose hidden `agent` command does
// the same, when nothing is embedded (a plain go build).
func agentBinary(dir, self string) (string, error) {
	path, err := embeddedBinary(dir, "nsbox-agent")
	if path == "" && err == nil {
		return self, nil
	}
	return path, err
}

// initBinary is the host path of the binary that sets containers up (libcontainer's init,
// runcinit.go): the embedded nsbox-init written once under dir by its hash, or "" when
// nothing is embedded (a plain go build), and nsbox itself does it.
func initBinary(dir string) (string, error) { return embeddedBinary(dir, "nsbox-init") }

// embeddedBinary writes the embedded binary name to dir/name-<hash> unless it is there, and
// returns that path; "" when the build embedded no such binary. The hash comes from a file
// make build writes beside it, so that a daemon whose binary is already on disk never reads it.
func embeddedBinary(dir, name string) (string, error) {
	sum, err := agentFiles.ReadFile("agentbin/" + name + ".sum")
	if err != nil {
		return "", nil
	}
	path := filepath.Join(dir, name+"-"+strings.TrimSpace(string(sum)))
	if fi, err := os.Stat(path); err == nil && fi.Mode().Perm() == 0o755 {
		return path, nil
	}
	bin, err := agentFiles.Open("agentbin/" + name)
	if err != nil {
		return "", fmt.Errorf("the embedded %s binary: %w", name, err)
	}
	defer bin.Close()
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", fmt.Errorf("make agent dir: %w", err)
	}
	// Not writable by anyone, executable by the sandboxes' roots (other users on the host).
	if err := atomicfile.WriteFrom(path, bin, 0o755); err != nil {
		return "", fmt.Errorf("the %s binary: %w", name, err)
	}
	if err := unmapEmbedded(agentFiles, "agentbin/"+name); err != nil {
		slog.Debug("the embedded binary's pages stay mapped", "binary", name, "err", err)
	}
	return path, nil
}

// unmapEmbedded drops this process's mappings of the pages of an embedded file, read once:
// writing the agent (7 MB) or the init (5 MB) out faults its pages of nsbox's binary in, which
// would otherwise count in the daemon's memory (RSS, PSS) for as long as it runs. The pages
// are read-only and backed by the binary, so a later read maps them again from the page
// cache; until then the kernel may reclaim them. embed.FS has no API for a file's address: it
// is found by reflection, and a layout this does not know is an error, not a crash.
func unmapEmbedded(files embed.FS, name string) error {
	list := reflect.ValueOf(files).FieldByName("files")
	if list.Kind() != reflect.Pointer || list.IsNil() || list.Elem().Kind() != reflect.Slice {
		return errors.New("embed.FS has no files list")
	}
	for i := range list.Elem().Len() {
		f := list.Elem().Index(i)
		n, data := f.FieldByName("name"), f.FieldByName("data")
		if n.Kind() != reflect.String || data.Kind() != reflect.String || n.String() != name {
			continue
		}
		b := unsafe.Slice(unsafe.StringData(data.String()), data.Len())
		page := os.Getpagesize()
		// Whole pages inside the file only: the pages it shares with other data stay.
		start := (page - int(uintptr(unsafe.Pointer(unsafe.SliceData(b))))%page) % page
		if len(b)-start < page {
			return nil
		}
		if err := unix.Madvise(b[start:start+(len(b)-start)/page*page], unix.MADV_DONTNEED); err != nil {
			return fmt.Errorf("madvise %s: %w", name, err)
		}
		return nil
	}
	return fmt.Errorf("no embedded file %s", name)
}

// pruneAgents removes the agent and init binaries under dir that earlier builds wrote (7 MB
// each), and temporary files a write cut short left: all but those in current. No sandbox
// needs them (an init runs only during a start, and only from its open descriptor): a running
// one runs the copy a daemon staged for it (nsbox/stage.go), or, started by a daemon from
// before the stage, a bind mount of its file, which keeps the file's data until the sandbox
// ends (removing the source of a bind mount in another mount namespace leaves the mount as it
// is); a sandbox without a container (hibernated) starts its next one with the current agent.
func pruneAgents(dir string, current []string, log *slog.Logger) error {
	entries, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("list agent binaries: %w", err)
	}
	for _, e := range entries {
		path := filepath.Join(dir, e.Name())
		name := strings.TrimPrefix(e.Name(), ".")
		if slices.Contains(current, path) || !strings.HasPrefix(name, "nsbox-agent-") && !strings.HasPrefix(name, "nsbox-init-") {
			continue
		}
		if err := os.Remove(path); err != nil {
			return fmt.Errorf("remove an old agent binary: %w", err)
		}
		log.Info("removed an old agent binary", "path", path)
	}
	return nil
}
