package net

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
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
	// seq is the sequence number of the last save (see save).
	seq uint64
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

// hasChain reports whether the sandbox's rules include a chain of its own (allowChain).
func (s *sandbox) hasChain() bool {
	return s.Mode == ModeAllow || s.Mode == ModeEgress && len(s.Allow) > 0
}

// The state is kept in two slot files, path and path+".1", overwritten in place by turns:
// each save goes to the slot that does not hold the latest state, so a save cut short by a
// crash leaves the latest state whole in the other slot. Each slot starts with a header line
// "nsbox-net <sequence> <SHA-256 of the JSON, hex> <length of the JSON>". Writing in place
// costs ~6 µs where replacing a file by rename costs ~650 µs on ext4 (the rename over an
// existing file forces its blocks to be allocated and frees the old ones). There is no fsync:
// the file describes kernel state that a power loss takes away with it.
const stateMagic = "nsbox-net"

func slotPaths(path string) [2]string { return [2]string{path, path + ".1"} }

// loadState reads the latest whole state of the two slots; none at all is an empty state.
func loadState(path string) (*state, error) {
	var best *state
	found := false
	for _, p := range slotPaths(path) {
		data, err := os.ReadFile(p)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("read network state: %w", err)
		}
		found = true
		st, ok := parseSlot(data)
		if ok && (best == nil || st.seq > best.seq) {
			best = st
		}
	}
	switch {
	case best != nil:
		return best, nil
	case found:
		return nil, fmt.Errorf("network state %s: no slot holds a whole state", path)
	}
	return &state{Sandboxes: map[string]*sandbox{}}, nil
}

// parseSlot decodes a slot; ok is false when it is torn or not a state.
func parseSlot(data []byte) (*state, bool) {
	header, body, ok := bytes.Cut(data, []byte("\n"))
	if !ok {
		return nil, false
	}
	var magic, sum string
	var seq uint64
	var n int
	if _, err := fmt.Sscanf(string(header), "%s %d %s %d", &magic, &seq, &sum, &n); err != nil || magic != stateMagic || n > len(body) {
		return nil, false
	}
	body = body[:n]
	if digest := sha256.Sum256(body); hex.EncodeToString(digest[:]) != sum {
		return nil, false
	}
	st := &state{}
	if err := json.Unmarshal(body, st); err != nil {
		return nil, false
	}
	if st.Sandboxes == nil {
		st.Sandboxes = map[string]*sandbox{}
	}
	st.seq = seq
	return st, true
}

// save writes the state into the slot that does not hold the latest one. It is the whole
// state, every sandbox's, on every create and remove: compact, not indented, it takes half
// the time (0.5 against 1.0 ms with 1,000 sandboxes).
func (st *state) save(path string) error {
	data, err := json.Marshal(st)
	if err != nil {
		return fmt.Errorf("encode network state: %w", err)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return fmt.Errorf("create network state directory: %w", err)
	}
	seq := st.seq + 1
	digest := sha256.Sum256(data)
	slot := append(fmt.Appendf(nil, "%s %d %s %d\n", stateMagic, seq, hex.EncodeToString(digest[:]), len(data)), data...)
	slot = append(slot, '\n')
	f, err := os.OpenFile(slotPaths(path)[seq%2], os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return fmt.Errorf("write network state: %w", err)
	}
	_, err = f.WriteAt(slot, 0)
	if err == nil {
		err = f.Truncate(int64(len(slot)))
	}
	if err = errors.Join(err, f.Close()); err != nil {
		return fmt.Errorf("write network state: %w", err)
	}
	st.seq = seq
	return nil
}

// removeState removes both slots.
func removeState(path string) error {
	var errs []error
	for _, p := range slotPaths(path) {
		if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, fmt.Errorf("remove network state: %w", err))
		}
	}
	return errors.Join(errs...)
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
