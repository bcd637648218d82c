// Package net owns the host side of sandbox networking: one veth pair per sandbox,
// the IPv4 address pool, the per-sandbox network modes (none, egress, allow), the ports
// exposed from sandboxes on host ports, and the one nftables table (programmed over netlink,
// never through the iptables or nft binaries) that enforces isolation and forwards those
// ports. It also says what a sandbox's /etc/resolv.conf and /etc/hosts should contain.
//
// Each sandbox gets a routed point-to-point link, not a port on a shared bridge: the host end
// of its veth carries the gateway address as a /32 and a /32 route to the sandbox, the sandbox
// end (eth0) its own address as a /32 and a default route via the gateway. Sandboxes share no
// layer-2 segment, so everything between them is routed through the host's rules, and
// hairpin traffic (a sandbox reaching an exposed port) works whether or not br_netfilter is
// loaded (with a bridge it would be bridged port to port and bypass routing and NAT).
//
// Everything it programs into the kernel is derived from a JSON state file, so a Manager
// opened again on the same state (after a daemon restart) puts back the same rules, and
// Cleanup removes everything the package ever created.
//
// What the rules enforce, in the host's network namespace:
//   - spoofing: packets from a sandbox whose source address is not routed back through its
//     own veth are dropped before conntrack sees them, and so is all IPv6 from sandboxes;
//   - sandbox to sandbox: refused, also through an exposed port (hairpin);
//   - sandbox to host: every packet from a sandbox to a host address (any address, including
//     127.0.0.0/8) is refused unless it belongs to a connection the host opened;
//   - link-local (169.254.0.0/16) and metadata (100.100.100.200) addresses: refused in every
//     mode, and no allow list may name them;
//   - sandbox to the world: per mode; egress refuses the private ranges and the networks of
//     the host's interfaces unless the sandbox's allow list names them, but not the
//     sandboxes' nameservers on port 53;
//   - into sandboxes: only connections to exposed ports, and the host's own connections, of
//     which only the daemon's uid may go to a sandbox address directly.
//
// A refused TCP connection gets a reset, anything else an ICMP error.
//
// Inside each sandbox's network namespace it installs one small table that delivers new TCP
// connections arriving on eth0 to 127.0.0.1 (with route_localnet on eth0), so services that
// listen only on the sandbox's loopback are reachable through exposed ports and through the
// sandbox address.
package net
