package net

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strconv"

	"github.com/google/nftables"
)

// Counters are a sandbox's network traffic as its host-side veth counts it, turned around to
// the sandbox's view: what the veth transmits the sandbox receives.
type Counters struct {
	RxBytes, RxPackets, TxBytes, TxPackets uint64
}

// VethCounters reads the counters of a sandbox's host veth (Attachment.HostVeth) from sysfs.
func VethCounters(veth string) (Counters, error) {
	dir := filepath.Join("/sys/class/net", veth, "statistics")
	var c Counters
	for _, f := range []struct {
		name string
		to   *uint64
	}{{"tx_bytes", &c.RxBytes}, {"tx_packets", &c.RxPackets}, {"rx_bytes", &c.TxBytes}, {"rx_packets", &c.TxPackets}} {
		data, err := os.ReadFile(filepath.Join(dir, f.name))
		if err != nil {
			return Counters{}, fmt.Errorf("read veth counters: %w", err)
		}
		if *f.to, err = strconv.ParseUint(string(bytes.TrimSpace(data)), 10, 64); err != nil {
			return Counters{}, fmt.Errorf("read veth counters %s/%s: %w", veth, f.name, err)
		}
	}
	return c, nil
}

// AllVethCounters reads the counters of every interface of the host's network namespace at
// once (/proc/net/dev), by name, turned round as VethCounters does: one file for all the
// sandboxes instead of four per sandbox.
func AllVethCounters() (map[string]Counters, error) {
	data, err := os.ReadFile("/proc/net/dev")
	if err != nil {
		return nil, fmt.Errorf("read interface counters: %w", err)
	}
	out := map[string]Counters{}
	for line := range bytes.Lines(data) {
		name, rest, ok := bytes.Cut(line, []byte(":"))
		if !ok {
			continue // the two header lines
		}
		// rx: bytes packets errs drop fifo frame compressed multicast; tx: bytes packets …
		f := bytes.Fields(rest)
		if len(f) < 10 {
			continue
		}
		var n [4]uint64
		for i, col := range []int{0, 1, 8, 9} {
			if n[i], err = strconv.ParseUint(string(f[col]), 10, 64); err != nil {
				return nil, fmt.Errorf("read interface counters of %s: %w", bytes.TrimSpace(name), err)
			}
		}
		out[string(bytes.TrimSpace(name))] = Counters{RxBytes: n[2], RxPackets: n[3], TxBytes: n[0], TxPackets: n[1]}
	}
	return out, nil
}

// RuleCount counts the rules of the Manager's nftables table, over all its chains.
func (m *Manager) RuleCount() (int, error) {
	c, err := nftables.New()
	if err != nil {
		return 0, fmt.Errorf("nftables: %w", err)
	}
	t := &nftables.Table{Name: m.cfg.Table, Family: nftables.TableFamilyINet}
	chains, err := c.ListChainsOfTableFamily(nftables.TableFamilyINet)
	if err != nil {
		return 0, fmt.Errorf("nftables: list chains: %w", err)
	}
	n := 0
	for _, ch := range chains {
		if ch.Table.Name != t.Name {
			continue
		}
		rules, err := c.GetRules(t, ch)
		if err != nil {
			return 0, fmt.Errorf("nftables: list rules of chain %s: %w", ch.Name, err)
		}
		n += len(rules)
	}
	return n, nil
}

// ConntrackCount is how many connections the host's conntrack table tracks now (all of them,
// not only the sandboxes').
func ConntrackCount() (uint64, error) {
	data, err := os.ReadFile("/proc/sys/net/netfilter/nf_conntrack_count")
	if err != nil {
		return 0, fmt.Errorf("read conntrack count: %w", err)
	}
	n, err := strconv.ParseUint(string(bytes.TrimSpace(data)), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("read conntrack count: %w", err)
	}
	return n, nil
}
