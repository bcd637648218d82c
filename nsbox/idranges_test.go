package nsbox

import (
	"strings"
	"testing"

	"github.com/nsbox/nsbox/rootfs"
)

func TestParseIDRange(t *testing.T) {
	for in, want := range map[string]IDRange{
		"1000000000:268435456": {Start: 1000000000, Count: 268435456},
		"100000-165535":        {Start: 100000, Count: 65536},
		"4294901759:65536":     {Start: 4294901759, Count: 65536}, // ends at 2^32-2
	} {
		got, err := ParseIDRange(in)
		if err != nil || got != want {
			t.Errorf("%q: got %+v %v, want %+v", in, got, err, want)
		}
	}
	for in, why := range map[string]string{
		"100000":           "no '-' or ':'",
		"a:b":              "not two numbers",
		"0:65536":          "host's root",
		"100000-99999":     "before START",
		"100000:1000":      "fewer than",
		"4294901760:65536": "ends past",
	} {
		if _, err := ParseIDRange(in); err == nil || !strings.Contains(err.Error(), why) {
			t.Errorf("%q: got %v, want an error saying %q", in, err, why)
		}
	}
}

func TestIDRangesAllocateDistinctBlocksUntilExhausted(t *testing.T) {
	a := newIDRanges(IDRange{Start: 100000, Count: 3*rootfs.IDsPerSandbox + 100}) // 3 whole blocks
	seen := map[uint32]string{}
	for _, c := range []string{"c1", "c2", "c3"} {
		m, err := a.allocate(c, false)
		if err != nil {
			t.Fatal(err)
		}
		if m.Size != rootfs.IDsPerSandbox || (m.Host-100000)%rootfs.IDsPerSandbox != 0 || seen[m.Host] != "" {
			t.Fatalf("%s got %+v; earlier: %v", c, m, seen)
		}
		seen[m.Host] = c
	}
	_, err := a.allocate("c4", false)
	if err == nil || !strings.Contains(err.Error(), "no user namespace ids left") || !strings.Contains(err.Error(), "--userns-range") {
		t.Fatalf("a fourth container: %v", err)
	}
	if _, err := a.allocate("c1", false); err == nil {
		t.Fatalf("a container got a second block")
	}
	// A freed block is given out again, and only it.
	a.release("c2")
	m, err := a.allocate("c4", false)
	if err != nil || seen[m.Host] != "c2" {
		t.Fatalf("after a release: %+v %v (blocks %v)", m, err, seen)
	}
	a.release("nobody") // not an error
}

func TestIDRangesClaimAfterRestart(t *testing.T) {
	r := IDRange{Start: 100000, Count: 4 * rootfs.IDsPerSandbox}
	before := newIDRanges(r)
	live := map[string]rootfs.IDMap{}
	for _, c := range []string{"c1", "c2", "c3"} {
		live[c], _ = before.allocate(c, false)
	}
	// A new daemon claims what the backend reports; the one block left is the only one it
	// hands out.
	after := newIDRanges(r)
	for c, m := range live {
		if err := after.claim(c, m); err != nil {
			t.Fatal(err)
		}
	}
	m, err := after.allocate("c4", false)
	if err != nil {
		t.Fatal(err)
	}
	for c, lm := range live {
		if overlaps(m, lm) {
			t.Fatalf("c4 got %+v, which %s has", m, c)
		}
	}
	if _, err := after.allocate("c5", false); err == nil {
		t.Fatalf("more blocks than the range holds")
	}
	// Two containers that claim the same ids: the second is refused.
	if err := after.claim("dup", live["c1"]); err == nil || !strings.Contains(err.Error(), "c1") {
		t.Fatalf("a shared range was claimed: %v", err)
	}
}

func TestIDRangesClaimOutsideTheRange(t *testing.T) {
	// After the daemon's range changed, a running container's ids may straddle its blocks:
	// they are kept away from new containers until it is gone.
	a := newIDRanges(IDRange{Start: 100000, Count: 2 * rootfs.IDsPerSandbox})
	old := rootfs.IDMap{Host: 100000 + rootfs.IDsPerSandbox/2, Size: rootfs.IDsPerSandbox}
	if err := a.claim("old", old); err != nil {
		t.Fatal(err)
	}
	if m, err := a.allocate("c1", false); err == nil {
		t.Fatalf("got %+v, which overlaps the old container's %+v", m, old)
	}
	a.release("old")
	if _, err := a.allocate("c1", false); err != nil {
		t.Fatalf("after the old container is gone: %v", err)
	}
}
