package net

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"strings"
	"syscall"
)

// ErrNoNameserver says that the host resolves names only through a resolver sandboxes
// cannot reach (a stub on 127.0.0.0/8 such as systemd-resolved or dnsmasq, an address of the
// host itself, or IPv6 only): sandboxes then have no DNS unless the operator provides a
// resolv.conf.
var ErrNoNameserver = errors.New("no nameserver a sandbox can reach")

// hostResolvConfs are read in order: the host's own file, then systemd-resolved's list of
// upstream servers, which is what a host whose /etc/resolv.conf points at the 127.0.0.53
// stub really uses.
var hostResolvConfs = []string{"/etc/resolv.conf", "/run/systemd/resolve/resolv.conf"}

// hostResolvConf returns the resolv.conf a sandbox should see and its nameservers (see
// Manager.ResolvConf).
func hostResolvConf() ([]byte, []netip.Addr, error) {
	local, err := hostAddrs()
	if err != nil {
		return nil, nil, err
	}
	return resolvConfFrom(hostResolvConfs, local)
}

func resolvConfFrom(paths []string, local map[netip.Addr]bool) ([]byte, []netip.Addr, error) {
	var other []string // search, domain and options lines of the first readable file
	var servers []netip.Addr
	var skipped []string
	read := false
	for _, path := range paths {
		data, err := os.ReadFile(path)
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, nil, fmt.Errorf("read %s: %w", path, err)
		}
		lines, found, notUsable := parseResolvConf(data, local)
		if !read {
			other, read = lines, true
		}
		skipped = append(skipped, notUsable...)
		if len(found) > 0 {
			servers = found
			break
		}
	}
	var out bytes.Buffer
	for _, s := range servers {
		fmt.Fprintf(&out, "nameserver %s\n", s)
	}
	for _, l := range other {
		out.WriteString(l + "\n")
	}
	if len(servers) == 0 {
		return out.Bytes(), nil, fmt.Errorf("%w in %s (found: %s)", ErrNoNameserver, strings.Join(paths, ", "), strings.Join(skipped, ", "))
	}
	return out.Bytes(), servers, nil
}

// parseResolvConf splits a resolv.conf into the nameservers a sandbox can use, those it
// cannot, and the search/domain/options lines.
func parseResolvConf(data []byte, local map[netip.Addr]bool) (other []string, usable []netip.Addr, skipped []string) {
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) == 0 || strings.HasPrefix(fields[0], "#") || strings.HasPrefix(fields[0], ";") {
			continue
		}
		switch fields[0] {
		case "nameserver":
			if len(fields) < 2 {
				continue
			}
			addr, err := netip.ParseAddr(fields[1])
			if err == nil && addr.Is4() && !addr.IsLoopback() && !local[addr] {
				usable = append(usable, addr)
			} else {
				skipped = append(skipped, fields[1])
			}
		case "search", "domain", "options":
			other = append(other, strings.Join(fields, " "))
		}
	}
	return other, usable, skipped
}

// hostAddrs returns the host's IPv4 addresses (a nameserver a sandbox can use is IPv4), from
// one dump of them. net.InterfaceAddrs also dumps every link, with its statistics, to name
// them: on a host with hundreds of veths that was ~1 MB of garbage at every create.
func hostAddrs() (map[netip.Addr]bool, error) {
	tab, err := syscall.NetlinkRIB(syscall.RTM_GETADDR, syscall.AF_INET)
	if err != nil {
		return nil, fmt.Errorf("list host addresses: %w", err)
	}
	msgs, err := syscall.ParseNetlinkMessage(tab)
	if err != nil {
		return nil, fmt.Errorf("parse host addresses: %w", err)
	}
	local := map[netip.Addr]bool{}
	for _, m := range msgs {
		if m.Header.Type != syscall.RTM_NEWADDR {
			continue
		}
		attrs, err := syscall.ParseNetlinkRouteAttr(&m)
		if err != nil {
			return nil, fmt.Errorf("parse host address: %w", err)
		}
		// The address is IFA_LOCAL; IFA_ADDRESS is the same, or a point-to-point link's peer.
		var addr, peer []byte
		for _, a := range attrs {
			switch a.Attr.Type {
			case syscall.IFA_LOCAL:
				addr = a.Value
			case syscall.IFA_ADDRESS:
				peer = a.Value
			}
		}
		if addr == nil {
			addr = peer
		}
		if a, ok := netip.AddrFromSlice(addr); ok {
			local[a.Unmap()] = true
		}
	}
	return local, nil
}

// HostsFile returns the /etc/hosts a sandbox should see: localhost, and its hostname on its
// address (127.0.1.1, as Debian does, when it has none).
func HostsFile(hostname string, addr netip.Addr) []byte {
	if !addr.IsValid() {
		addr = netip.MustParseAddr("127.0.1.1")
	}
	return fmt.Appendf(nil, "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n%s\t%s\n", addr, hostname)
}
