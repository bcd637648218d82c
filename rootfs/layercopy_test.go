package rootfs

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestLayerCopy copies an upper dir (testUpper's marks) in a pass, changes it in every way a
// sandbox can (content of the same size, a removal, a new file, a directory made a file and a
// file a directory, a chmod, an xattr, a new hard link), and checks that a second pass makes
// the copy the tree ExportLayer streams of the upper, byte for byte; that a pass over an
// unchanged tree whose times are older than a clock tick copies only the hard-linked files;
// that a later change of such a file is seen; and that the content bound holds.
func TestLayerCopy(t *testing.T) {
	ids := IDMap{Host: 200000, Size: IDsPerSandbox}
	upper := testUpper(t, ids)
	mk(t, upper, map[string]string{"data/a": "aaaa", "data/b": "bbbb", "data/sub/c": "cccc", "gone/x": "x"})
	dst := t.TempDir()
	cp, err := NewLayerCopy(dst, upper, ids, 0)
	must(t, err)
	defer cp.Close()
	same := func(what string) {
		t.Helper()
		var want, got bytes.Buffer
		must(t, ExportLayer(&want, upper, ids, 0))
		must(t, ExportLayer(&got, dst, IDMap{}, 0))
		if !bytes.Equal(want.Bytes(), got.Bytes()) {
			t.Fatalf("%s: the copy's stream differs from the upper's (%d and %d bytes)", what, got.Len(), want.Len())
		}
	}
	pass := func(frozen bool) CopyStats {
		t.Helper()
		st, err := cp.Pass(context.Background(), frozen)
		must(t, err)
		return st
	}
	pass(false)
	pass(true)
	same("first copy")

	must(t, os.WriteFile(filepath.Join(upper, "data/a"), []byte("AAAA"), 0o644))
	must(t, os.Remove(filepath.Join(upper, "data/b")))
	mk(t, upper, map[string]string{"data/new": "new", "gone/": ""})
	must(t, os.RemoveAll(filepath.Join(upper, "data/sub")))
	must(t, os.WriteFile(filepath.Join(upper, "data/sub"), []byte("now a file"), 0o600))
	must(t, os.RemoveAll(filepath.Join(upper, "gone/x")))
	must(t, os.Mkdir(filepath.Join(upper, "gone/x"), 0o711))
	must(t, os.Chmod(filepath.Join(upper, "bin"), 0o700))
	must(t, unix.Setxattr(filepath.Join(upper, "data"), "user.tag", []byte("t"), 0))
	must(t, os.Link(filepath.Join(upper, "data/new"), filepath.Join(upper, "data/new2")))
	pass(true)
	same("after changes")

	// Older than a tick: trusted, kept; hard links are copied in the frozen pass only.
	time.Sleep(ctimeSlack + 50*time.Millisecond)
	if st := pass(false); st.Entries == 0 {
		t.Fatal("a pass saw nothing")
	}
	if st := pass(true); st.Copied != 4 || st.Removed != 0 {
		t.Errorf("a frozen pass over an unchanged tree copied %d entries (want the 4 hard-linked files) and removed %d", st.Copied, st.Removed)
	}
	f, err := os.OpenFile(filepath.Join(upper, "data/a"), os.O_WRONLY, 0)
	must(t, err)
	_, err = f.WriteAt([]byte("Z"), 1)
	must(t, errors.Join(err, f.Close()))
	if st := pass(true); st.Copied != 5 {
		t.Errorf("a same-size write to one file: %d entries copied, want it and the 4 hard-linked files", st.Copied)
	}
	same("after a same-size write")
	// The copy of a file unchanged for longer than a tick is kept (damaged here, to tell),
	// unless forgotten.
	damaged := filepath.Join(dst, "data/sub")
	must(t, os.WriteFile(damaged, []byte("damaged!!!"), 0o600))
	pass(true)
	if data, _ := os.ReadFile(damaged); string(data) != "damaged!!!" {
		t.Fatalf("an unchanged file was copied again: %q", data)
	}
	cp.Forget("/data/sub")
	pass(true)
	same("after Forget")

	sparse := filepath.Join(upper, "sparse")
	must(t, os.WriteFile(sparse, nil, 0o644))
	must(t, os.Truncate(sparse, 1<<30))
	bounded, err := NewLayerCopy(t.TempDir(), upper, ids, 1<<20)
	must(t, err)
	defer bounded.Close()
	if _, err := bounded.Pass(context.Background(), false); !errors.Is(err, ErrLayerTooLarge) {
		t.Errorf("a 1 GiB sparse file under a 1 MiB bound: %v", err)
	}
}
