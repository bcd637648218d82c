package fs

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/nsbox/nsbox/api"
	"github.com/nsbox/nsbox/rootfs"
)

// In a user namespace the Root takes and shows the sandbox's ids, and what it creates belongs
// to their host ids (the range's), without a chown of anything else.
func TestUserNamespaceIDs(t *testing.T) {
	requireRoot(t)
	dir := t.TempDir()
	must(t, os.Chown(dir, 1<<30, 1<<30)) // the sandbox's root, as an overlay's upper dir is
	must(t, os.WriteFile(filepath.Join(dir, "hosts"), nil, 0o644))
	ids := rootfs.IDMap{Host: 1 << 30, Size: rootfs.IDsPerSandbox}
	r, err := OpenRoot(dir, ids)
	must(t, err)
	defer r.Close()
	hostOwner := func(p string) (uint32, uint32) {
		fi, err := os.Lstat(filepath.Join(dir, p))
		must(t, err)
		st := fi.Sys().(*syscall.Stat_t)
		return st.Uid, st.Gid
	}

	_, err = r.Write("/home/u/f", strings.NewReader("x"), WriteOptions{UID: 1000, GID: 1001, MakeParents: true})
	must(t, err)
	_, err = r.Write("/byroot", strings.NewReader("x"), WriteOptions{UID: -1, GID: -1})
	must(t, err)
	must(t, r.Mkdir("/d/e", true, 0, 7, 8))
	must(t, r.Move("/byroot", "/d/moved", false))
	for p, want := range map[string][2]uint32{"/home": {1000, 1001}, "/home/u/f": {1000, 1001}, "/d/moved": {0, 0}, "/d/e": {7, 8}} {
		info, err := r.Stat(p)
		must(t, err)
		if info.UID != want[0] || info.GID != want[1] {
			t.Errorf("%s shows %d:%d, want %v", p, info.UID, info.GID, want)
		}
		if uid, gid := hostOwner(p); uid != 1<<30+want[0] || gid != 1<<30+want[1] {
			t.Errorf("%s is %d:%d on the host, want the range's %v", p, uid, gid, want)
		}
	}
	// A host file of the host's root is nobody's inside.
	if info, err := r.Stat("/hosts"); err != nil || info.UID != 65534 || info.GID != 65534 {
		t.Errorf("a file of the host's root: %+v %v", info, err)
	}
	// A replaced file keeps its owner, but not one that is no id of the sandbox.
	must(t, os.Chown(filepath.Join(dir, "d/moved"), 1<<30+7, 1<<30+8))
	for p, want := range map[string][2]uint32{"/d/moved": {7, 8}, "/hosts": {1000, 1001}} {
		_, err = r.Write(p, strings.NewReader("y"), WriteOptions{UID: 1000, GID: 1001})
		must(t, err)
		if uid, gid := hostOwner(p); uid != 1<<30+want[0] || gid != 1<<30+want[1] {
			t.Errorf("replaced %s is %d:%d on the host, want the range's %v", p, uid, gid, want)
		}
	}
	_, err = r.Write("/x", strings.NewReader("x"), WriteOptions{UID: 70000, GID: -1})
	if !api.IsCode(err, api.CodeInvalidArgument) || !strings.Contains(err.Error(), "0 to 65535") {
		t.Errorf("a uid outside the namespace: %v", err)
	}
	if _, err := os.Lstat(filepath.Join(dir, "x")); !os.IsNotExist(err) {
		t.Errorf("the refused write left a file: %v", err)
	}
}
