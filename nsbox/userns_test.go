package nsbox

import (
	"context"
	"slices"
	"strings"
	"testing"

	"github.com/nsbox/nsbox/api"
	"github.com/nsbox/nsbox/rootfs"
)

// idsOf is the user namespace ids the backend started the container of a sandbox with.
func (c *testCore) idsOf(id string) rootfs.IDMap {
	s, _ := c.lookup(id)
	return c.backend.get(s.snapshot().container()).spec.IDs
}

func TestContainersGetTheirOwnIDsAcrossRestarts(t *testing.T) {
	c := newTestCore(t, 0)
	c.Close()
	c.cfg.UserNS = IDRange{Start: 100000, Count: 3 * rootfs.IDsPerSandbox}
	c.open()
	a, b := c.create(api.CreateSandboxRequest{ID: "a"}), c.create(api.CreateSandboxRequest{ID: "b"})
	ida, idb := c.idsOf(a.ID), c.idsOf(b.ID)
	if !ida.Enabled() || !idb.Enabled() || overlaps(ida, idb) {
		t.Fatalf("ids %+v and %+v", ida, idb)
	}
	// After a restart the new daemon knows both blocks are taken: one is left.
	c.Close()
	c.open()
	third := c.create(api.CreateSandboxRequest{ID: "third"})
	if idc := c.idsOf(third.ID); overlaps(idc, ida) || overlaps(idc, idb) {
		t.Fatalf("after a restart the third sandbox got %+v, the others have %+v %+v", idc, ida, idb)
	}
	_, err := c.Create(context.Background(), api.CreateSandboxRequest{ID: "fourth"})
	if err == nil || !strings.Contains(err.Error(), "no user namespace ids left") {
		t.Fatalf("a fourth sandbox: %v", err)
	}
	if len(c.leftovers("fourth")) != 0 {
		t.Errorf("the failed create left %v", c.leftovers("fourth"))
	}
	// A remove frees the block.
	if err := c.Remove("a", true); err != nil {
		t.Fatal(err)
	}
	if d := c.create(api.CreateSandboxRequest{ID: "d"}); c.idsOf(d.ID) != ida {
		t.Errorf("the freed block %+v was not given out again: %+v", ida, c.idsOf(d.ID))
	}
}

func TestExtraCapabilitiesOnlyFromTheAllowlist(t *testing.T) {
	c := newTestCore(t, 1)
	c.Close()
	c.cfg.AllowedCapabilities = []string{"CAP_NET_RAW"}
	c.open()
	c.waitPool(1)
	for _, caps := range [][]string{{"SYS_ADMIN"}, {"NET_RAW", "MKNOD"}, {"NOT_A_CAP"}} {
		_, err := c.Create(context.Background(), api.CreateSandboxRequest{Capabilities: caps})
		if !api.IsCode(err, api.CodeInvalidArgument) {
			t.Errorf("capabilities %v: %v", caps, err)
		}
	}
	starts := c.backend.startCount()
	sb := c.create(api.CreateSandboxRequest{ID: "raw", Capabilities: []string{"net_raw", "CAP_NET_RAW"}})
	if !slices.Equal(sb.Capabilities, []string{"CAP_NET_RAW"}) {
		t.Errorf("the sandbox shows capabilities %v", sb.Capabilities)
	}
	s, _ := c.lookup(sb.ID)
	if inst := c.backend.get(s.snapshot().container()); !slices.Equal(inst.spec.Capabilities, []string{"CAP_NET_RAW"}) {
		t.Errorf("the container was started with %v", inst.spec.Capabilities)
	}
	if c.backend.startCount() == starts {
		t.Errorf("a sandbox with extra capabilities came from the warm pool")
	}
}
