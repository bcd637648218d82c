package sandboxnet

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
)

// state is everything the kernel configuration is derived from. It is saved after every
// change, before the change is reported as done.
type state struct {
	// Next is where the search for a free address starts: addresses are handed out round
	// robin, so a released address is reused as late as possible.
	Next netip.Addr `json:"next"`
	// Forwarding lists the uplinks on which Open turned IPv4 forwarding on. The table keeps
	// the host from routing anything but sandbox traffic in from them, and Cleanup turns
	// forwarding off again.
	Forwarding []string            `json:"forwardingEnabled,omitempty"`
	Sandboxes  map[string]*sandbox `json:"sandboxes"`
}

// sandbox is one sandbox's network as recorded in the state file.
type sandbox struct {
	// Addr is reserved from Allocate (or the first networked mode) until Detach, also while
	// the mode is none, so that switching back gives the same address.
	Addr  netip.Addr     `json:"addr,omitzero"`
	Mode  Mode           `json:"mode"`
	Allow []netip.Prefix `json:"allow,omitempty"`
	// Netns is the path the network namespace was attached by, and NetnsID its identity
	// when attached: the path is only used again (to switch from mode none) if it still
	// names the same namespace.
	Netns   string `json:"netns,omitempty"`
	NetnsID nsID   `json:"netnsId,omitzero"`
	Ports   []Port `json:"ports,omitempty"`
}

// attached reports whether Attach has run for the sandbox (Allocate alone does not attach).
func (s *sandbox) attached() bool { return s.Mode != "" }

// networked reports whether the sandbox has a veth, an address and rules.
func (s *sandbox) networked() bool { return s.Mode == ModeEgress || s.Mode == ModeAllow }

func loadState(path string) (*state, error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return &state{Sandboxes: map[string]*sandbox{}}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read network state: %w", err)
	}
	st := &state{}
	if err := json.Unmarshal(data, st); err != nil {
		return nil, fmt.Errorf("parse network state %s: %w", path, err)
	}
	if st.Sandboxes == nil {
		st.Sandboxes = map[string]*sandbox{}
	}
	return st, nil
}

// save writes the state to a temporary file in the same directory and renames it over path,
// so a crash of the daemon leaves either the old or the new state, never a torn one. It does
// not fsync (~3.5 ms on this host's disk, more than the rest of an expose): the file
// describes kernel state that a power loss takes away with it.
func (st *state) save(path string) error {
	data, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return fmt.Errorf("encode network state: %w", err)
	}
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("create network state directory: %w", err)
	}
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+".*")
	if err != nil {
		return fmt.Errorf("write network state: %w", err)
	}
	defer os.Remove(tmp.Name()) // fails harmlessly once renamed
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return fmt.Errorf("write network state: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("write network state: %w", err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("replace network state: %w", err)
	}
	return nil
}

// allocate reserves the next free address of the subnet for a sandbox, skipping the network
// address, the gateway, the broadcast address and every address already reserved.
func (st *state) allocate(subnet netip.Prefix) (netip.Addr, error) {
	used := make(map[netip.Addr]bool, len(st.Sandboxes))
	for _, sb := range st.Sandboxes {
		if sb.Addr.IsValid() {
			used[sb.Addr] = true
		}
	}
	first := subnet.Addr().Next().Next() // after the network address and the gateway
	start := st.Next
	if !subnet.Contains(start) || start.Less(first) {
		start = first
	}
	for addr := start; ; {
		if !used[addr] && !isBroadcast(subnet, addr) {
			st.Next = wrapNext(subnet, addr, first)
			return addr, nil
		}
		addr = wrapNext(subnet, addr, first)
		if addr == start {
			return netip.Addr{}, fmt.Errorf("no free address left in %s", subnet)
		}
	}
}

func wrapNext(subnet netip.Prefix, addr, first netip.Addr) netip.Addr {
	next := addr.Next()
	if !subnet.Contains(next) {
		return first
	}
	return next
}

func isBroadcast(subnet netip.Prefix, addr netip.Addr) bool {
	return !subnet.Contains(addr.Next())
}
