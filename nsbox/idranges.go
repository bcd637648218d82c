package nsbox

import (
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/nsbox/nsbox/rootfs"
)

// IDRange is the host ids a daemon gives its containers' user namespaces (--userns-range):
// Count ids from Start, one block of rootfs.IDsPerSandbox per container.
type IDRange struct {
	Start, Count uint32
}

// maxHostID is the last id a user namespace can map to: (uid_t)-1 means "no id".
const maxHostID = 1<<32 - 2

// ParseIDRange reads START-END (both included) or START:COUNT.
func ParseIDRange(s string) (IDRange, error) {
	bad := func(why string) (IDRange, error) {
		return IDRange{}, fmt.Errorf("id range %q: %s (give START-END or START:COUNT, e.g. 1000000000:268435456)", s, why)
	}
	var a, b string
	var isCount, ok bool
	if a, b, ok = strings.Cut(s, ":"); ok {
		isCount = true
	} else if a, b, ok = strings.Cut(s, "-"); !ok {
		return bad("no '-' or ':'")
	}
	start, err1 := strconv.ParseUint(a, 10, 32)
	n, err2 := strconv.ParseUint(b, 10, 32)
	if err1 != nil || err2 != nil {
		return bad("not two numbers")
	}
	if !isCount {
		if n < start {
			return bad("END is before START")
		}
		n = n - start + 1
	}
	if start == 0 {
		return bad("it must not start at 0, the host's root")
	}
	if start+n-1 > maxHostID {
		return bad(fmt.Sprintf("it ends past %d", uint64(maxHostID)))
	}
	if n < rootfs.IDsPerSandbox {
		return bad(fmt.Sprintf("it holds fewer than the %d ids of one sandbox", rootfs.IDsPerSandbox))
	}
	return IDRange{Start: uint32(start), Count: uint32(n)}, nil
}

// idRanges hands out the host ids of containers' user namespaces: a block of
// rootfs.IDsPerSandbox ids each, from the daemon's IDRange, from a container's start to its
// destroy. The backend keeps each container's mapping in its state, so nothing else records
// the blocks: reconcile claims again those of the containers it finds.
type idRanges struct {
	r      IDRange
	blocks int // whole blocks in r

	mu      sync.Mutex
	owner   map[int]string          // block → container
	of      map[string]rootfs.IDMap // container → its ids, claimed or allocated
	foreign []rootfs.IDMap          // claimed ids that are no block of r (the range was changed)
}

// errNoIDs: every block of the range is in use.
var errNoIDs = errors.New("no user namespace ids left")

func newIDRanges(r IDRange) *idRanges {
	return &idRanges{r: r, blocks: int(r.Count / rootfs.IDsPerSandbox), owner: map[int]string{}, of: map[string]rootfs.IDMap{}}
}

func (a *idRanges) block(i int) rootfs.IDMap {
	return rootfs.IDMap{Host: a.r.Start + uint32(i)*rootfs.IDsPerSandbox, Size: rootfs.IDsPerSandbox}
}

// overlaps reports whether the two ranges share an id.
func overlaps(x, y rootfs.IDMap) bool {
	return uint64(x.Host) < uint64(y.Host)+uint64(y.Size) && uint64(y.Host) < uint64(x.Host)+uint64(x.Size)
}

// allocate gives the container the first free block. A block is free once its last
// container is destroyed (nothing of it runs), so reusing it at once is safe, and it keeps a
// daemon on the few blocks whose user namespaces it made already (rootfs.UserNS).
// held: the container keeps the ids it has (a hibernated sandbox's, whose files belong to them).
func (a *idRanges) allocate(container string, held bool) (rootfs.IDMap, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if m, ok := a.of[container]; ok && held {
		return m, nil
	} else if ok {
		return rootfs.IDMap{}, fmt.Errorf("container %s already has ids %d-%d", container, m.Host, m.Host+m.Size-1)
	}
	for i := 0; i < a.blocks; i++ {
		if _, taken := a.owner[i]; taken || a.collidesWithForeign(a.block(i)) {
			continue
		}
		a.owner[i], a.of[container] = container, a.block(i)
		return a.block(i), nil
	}
	return rootfs.IDMap{}, fmt.Errorf("%w: all %d blocks of %d ids in %d-%d are in use; remove sandboxes or give the daemon a larger --userns-range",
		errNoIDs, a.blocks, rootfs.IDsPerSandbox, a.r.Start, uint64(a.r.Start)+uint64(a.r.Count)-1)
}

func (a *idRanges) collidesWithForeign(m rootfs.IDMap) bool {
	for _, f := range a.foreign {
		if overlaps(f, m) {
			return true
		}
	}
	return false
}

// claim records the ids a container started earlier has (reconcile). It fails when another
// container has any of them.
func (a *idRanges) claim(container string, m rootfs.IDMap) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	for other, om := range a.of {
		if overlaps(om, m) {
			return fmt.Errorf("container %s has ids %d-%d, which overlap those of container %s", container, m.Host, m.Host+m.Size-1, other)
		}
	}
	a.of[container] = m
	if i, ok := a.blockOf(m); ok {
		a.owner[i] = container
	} else {
		a.foreign = append(a.foreign, m)
	}
	return nil
}

// blockOf tells which block of the range m is, if it is one.
func (a *idRanges) blockOf(m rootfs.IDMap) (int, bool) {
	off := uint64(m.Host) - uint64(a.r.Start)
	i := off / rootfs.IDsPerSandbox
	return int(i), m.Host >= a.r.Start && off%rootfs.IDsPerSandbox == 0 && i < uint64(a.blocks) && m.Size == rootfs.IDsPerSandbox
}

// release frees the container's ids; a container without any is fine.
func (a *idRanges) release(container string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	m, ok := a.of[container]
	if !ok {
		return
	}
	delete(a.of, container)
	if i, ok := a.blockOf(m); ok {
		delete(a.owner, i)
		return
	}
	if i := slices.Index(a.foreign, m); i >= 0 {
		a.foreign = slices.Delete(a.foreign, i, i+1)
	}
}
