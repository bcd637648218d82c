// Package atomicfile writes files that readers, and the next start after a crash, see whole
// or not at all.
package atomicfile

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"path/filepath"
)

// Write writes data to path: to a temporary file in its directory (mode 0600), synced, then
// renamed over path.
func Write(path string, data []byte) error {
	return WriteFrom(path, bytes.NewReader(data), 0o600)
}

// WriteFrom writes what r gives to path with mode perm: to a temporary file in its directory,
// synced, then renamed over path.
func WriteFrom(path string, r io.Reader, perm os.FileMode) error {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+"-")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	defer os.Remove(f.Name()) // gone once renamed
	_, err = io.Copy(f, r)
	if err == nil {
		err = f.Sync()
	}
	if err == nil {
		err = f.Chmod(perm)
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(f.Name(), path)
	}
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}
