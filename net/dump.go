package net

import (
	"errors"
	"fmt"

	"github.com/vishvananda/netlink"
)

// dumpTries bounds how often a netlink dump is tried again after the kernel said it was
// interrupted by a concurrent change.
const dumpTries = 10

// Consistent runs a netlink dump (links, addresses, routes) until the kernel answers it
// without interruption: another change to the same table while it runs (a veth going away in
// the background, another program's route) makes the kernel flag the dump, and its answer may
// miss or repeat entries.
func Consistent[T any](dump func() ([]T, error)) ([]T, error) {
	for try := 1; ; try++ {
		out, err := dump()
		if !errors.Is(err, netlink.ErrDumpInterrupted) {
			return out, err
		}
		if try == dumpTries {
			return nil, fmt.Errorf("netlink dump interrupted %d times in a row: %w", dumpTries, err)
		}
	}
}
