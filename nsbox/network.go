package nsbox

import (
	"cmp"
	"errors"
	"fmt"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"time"

	"github.com/nsbox/nsbox/api"
	"github.com/nsbox/nsbox/api/httpapi"
	sandboxnet "github.com/nsbox/nsbox/net"
	"github.com/nsbox/nsbox/nsbox/backend"
	"github.com/nsbox/nsbox/rootfs"
)

// NetworkConfig is the host side of sandbox networking (package net): IPv4 only.
type NetworkConfig struct {
	// Subnet holds the sandboxes' addresses; its first address is the host's (the gateway).
	Subnet netip.Prefix
	// Table is the nftables table (family inet) nsbox owns; nothing else may use the name.
	Table string
	// HostPortMin and HostPortMax bound the host ports chosen for exposures that name none.
	HostPortMin, HostPortMax int
	// Uplinks carry sandbox traffic to the world; empty: the interfaces of the default routes.
	Uplinks []string
}

func (c *Config) netConfig() sandboxnet.Config {
	return sandboxnet.Config{
		Subnet:      c.Network.Subnet,
		StatePath:   filepath.Join(c.RunDir, "network.json"),
		Table:       c.Network.Table,
		HostPortMin: c.Network.HostPortMin,
		HostPortMax: c.Network.HostPortMax,
		Uplinks:     c.Network.Uplinks,
	}
}

// cleanupNetwork removes everything sandbox networking made on the host with this config (the
// nftables table, veths, routes, addresses, conntrack entries, the state file), for Cleanup.
func cleanupNetwork(cfg Config) error {
	return sandboxnet.Cleanup(cfg.netConfig())
}

// network is the host side of sandbox networking: package net's Manager (tests give a fake).
type network interface {
	Allocate(id string) (netip.Addr, error)
	Attach(id, netnsPath string, mode sandboxnet.Mode, allow []netip.Prefix) (*sandboxnet.Attachment, error)
	SetMode(id string, mode sandboxnet.Mode, allow []netip.Prefix) error
	Detach(id string) error
	Suspend(id string) error
	Reattach(id, netnsPath string) (*sandboxnet.Attachment, error)
	Lookup(id string) (*sandboxnet.Attachment, bool)
	Sandboxes() []string
	Expose(id string, want sandboxnet.Port) (sandboxnet.Port, error)
	Unexpose(id string, port int, protocol string) error
	Ports(id string) []sandboxnet.Port
	ResolvConf() ([]byte, error)
	RuleCount() (int, error)
	Close()
}

// openNetwork takes over the host's sandbox networking: package net rebuilds every rule and
// exposed port from its state file.
func (r *Runtime) openNetwork() error {
	if r.cfg.network != nil {
		r.net = r.cfg.network
		return nil
	}
	m, err := sandboxnet.Open(r.cfg.netConfig())
	if err != nil {
		return fmt.Errorf("sandbox network: %w", err)
	}
	r.net = m
	return nil
}

// netError maps package net's errors to API errors.
func netError(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, sandboxnet.ErrNotFound):
		return api.Errorf(api.CodeNotFound, "%v", err)
	case errors.Is(err, sandboxnet.ErrInvalid):
		return api.Errorf(api.CodeInvalidArgument, "%v", err)
	case errors.Is(err, sandboxnet.ErrConflict):
		return api.Errorf(api.CodeConflict, "%v", err)
	}
	return err
}

// resolveNetwork checks a requested network; an absent one is mode egress.
func resolveNetwork(spec *api.NetworkSpec) (api.NetworkSpec, []netip.Prefix, error) {
	var s api.NetworkSpec
	if spec != nil {
		s = *spec
	}
	if s.Mode == "" {
		s.Mode = api.NetworkEgress
	}
	switch s.Mode {
	case api.NetworkNone:
		if len(s.Allow) > 0 {
			return s, nil, api.Errorf(api.CodeInvalidArgument, "network.allow is only for modes egress and allow, not %q", s.Mode)
		}
	case api.NetworkEgress, api.NetworkAllow:
	default:
		return s, nil, api.Errorf(api.CodeInvalidArgument, "network.mode must be none, egress or allow, not %q", s.Mode)
	}
	allow := make([]netip.Prefix, 0, len(s.Allow))
	for _, a := range s.Allow {
		p, err := netip.ParsePrefix(a)
		if err != nil {
			if addr, aerr := netip.ParseAddr(a); aerr == nil {
				p, err = addr.Prefix(addr.BitLen())
			}
		}
		if err != nil || !p.Addr().Is4() {
			return s, nil, api.Errorf(api.CodeInvalidArgument, "network.allow %q: must be an IPv4 address or CIDR such as 192.0.2.0/24", a)
		}
		allow = append(allow, p.Masked())
	}
	return s, allow, nil
}

// networkFiles writes a new container's /etc/hosts and /etc/resolv.conf into the stage and
// returns their read-only mounts. Until connectNetwork the hosts file names the container; it
// is rewritten in place then, so the mount shows the new content. With a user namespace
// (ids) they belong to the container's root: root's inside, as an id-mapped bind would show
// them, without the round trip between runc's init and the daemon that each id-mapped bind
// costs in the container's start (~1.2 ms each in a cold create's trace).
func (r *Runtime) networkFiles(container string, ids rootfs.IDMap) ([]backend.Mount, error) {
	resolv, err := r.net.ResolvConf()
	if errors.Is(err, sandboxnet.ErrNoNameserver) {
		r.log.Warn("sandboxes get no DNS server", "err", err)
	} else if err != nil {
		return nil, err
	}
	files := []struct {
		name, dest string
		data       []byte
	}{
		{"hosts", "/etc/hosts", sandboxnet.HostsFile(container, netip.Addr{})},
		{"resolv.conf", "/etc/resolv.conf", resolv},
	}
	if err := os.MkdirAll(r.containerFiles(container), 0o711); err != nil {
		return nil, fmt.Errorf("make the sandbox's files dir: %w", err)
	}
	var out []backend.Mount
	for _, f := range files {
		path := filepath.Join(r.containerFiles(container), f.name)
		if err := os.WriteFile(path, f.data, 0o644); err != nil {
			return nil, fmt.Errorf("write sandbox %s: %w", f.name, err)
		}
		m := backend.Mount{Source: path, Target: f.dest, ReadOnly: true}
		if ids.Enabled() {
			if err := os.Chown(path, int(ids.Host), int(ids.Host)); err != nil {
				return nil, fmt.Errorf("give sandbox %s to its root: %w", f.name, err)
			}
			m.IDs.Native = true
		}
		out = append(out, m)
	}
	return out, nil
}

// connectNetwork gives a started container the network of the sandbox it becomes, before the
// sandbox's record says running: an address (not in mode none), its /etc/hosts, and the link
// into its network namespace.
func (r *Runtime) connectNetwork(rec *record, sc *startedContainer) error {
	_, allow, err := resolveNetwork(&api.NetworkSpec{Mode: rec.Network.Mode, Allow: rec.Network.Allow})
	if err != nil {
		return err
	}
	if err := r.awaitRelease(rec.ID); err != nil {
		return err
	}
	prev, suspended := r.net.Lookup(rec.ID)
	suspended = suspended && prev.Mode != "" // attached before: a hibernated sandbox's
	var addr netip.Addr
	switch {
	case suspended:
		if prev.HostVeth != "" {
			addr = prev.Addr
		}
	case rec.Network.Mode != api.NetworkNone:
		if addr, err = r.net.Allocate(rec.ID); err != nil {
			return netError(err)
		}
	}
	// Rewritten in place (truncate, write): the container's bind mount shows the same inode.
	hosts := filepath.Join(r.containerFiles(sc.inst.ID()), "hosts")
	if err := os.WriteFile(hosts, sandboxnet.HostsFile(rec.ID, addr), 0o644); err != nil {
		return fmt.Errorf("write sandbox hosts: %w", err)
	}
	var a *sandboxnet.Attachment
	if suspended {
		a, err = r.net.Reattach(rec.ID, sc.inst.NetNS())
	} else {
		a, err = r.net.Attach(rec.ID, sc.inst.NetNS(), sandboxnet.Mode(rec.Network.Mode), allow)
	}
	if err != nil {
		return netError(err)
	}
	rec.Network = apiNetwork(a)
	return nil
}

// apiNetwork is how the API shows a sandbox's network: its address only while it has one.
func apiNetwork(a *sandboxnet.Attachment) api.SandboxNetwork {
	n := api.SandboxNetwork{Mode: string(a.Mode)}
	if a.HostVeth != "" {
		n.IP = a.Addr.String()
	}
	for _, p := range a.Allow {
		n.Allow = append(n.Allow, p.String())
	}
	return n
}

// networkRelease is the network of a removed sandbox being detached in the background, once
// its processes are dead (retire). Its address, rules, veth and host ports are its sandbox
// id's, which a create may take again at once: that create's network waits for it.
type networkRelease struct {
	r    *Runtime
	id   string
	over chan struct{} // closed once the detach was tried
	err  error         // why it failed, set before over is closed
}

// releaseNetwork registers the coming detach of sandbox id's network.
func (r *Runtime) releaseNetwork(id string) *networkRelease {
	rel := &networkRelease{r: r, id: id, over: make(chan struct{})}
	r.releasingMu.Lock()
	r.releasing[id] = rel
	r.releasingMu.Unlock()
	return rel
}

// done ends the release with how its detach went. A failed one stays registered and is tried
// again in the background (retryRelease); the next create of the id tries it again at once
// (awaitRelease), as the next daemon start would.
func (rel *networkRelease) done(err error) {
	rel.err = err
	if err == nil {
		rel.forget()
	} else {
		rel.r.retryRelease(rel)
	}
	close(rel.over)
}

// forget unregisters the release, unless a later one of its id replaced it.
func (rel *networkRelease) forget() {
	rel.r.releasingMu.Lock()
	if rel.r.releasing[rel.id] == rel {
		delete(rel.r.releasing, rel.id)
	}
	rel.r.releasingMu.Unlock()
}

// releaseRetry is how long a failed detach waits before it is tried again; each failure
// doubles it, up to releaseRetryMax.
const (
	releaseRetry    = 100 * time.Millisecond
	releaseRetryMax = time.Minute
)

// retryRelease tries a failed detach again, ever later, until it succeeds, the release is no
// longer the id's (a create of the id took it over, or a remove of a sandbox made under it
// made a new one), or the daemon closes: the rules, veth and address of a removed sandbox
// would otherwise stay until then.
func (r *Runtime) retryRelease(rel *networkRelease) {
	r.retrying.Add(1)
	go func() {
		defer r.retrying.Done()
		for wait := releaseRetry; ; wait = min(2*wait, releaseRetryMax) {
			select {
			case <-r.closing.Done():
				return
			case <-time.After(wait):
			}
			r.releasingMu.Lock()
			current := r.releasing[rel.id] == rel
			r.releasingMu.Unlock()
			if !current {
				return
			}
			if err := r.detachNetwork(rel.id); err != nil {
				r.log.Warn("detach a removed sandbox's network, again", "sandbox", rel.id, "next", min(2*wait, releaseRetryMax), "err", err)
				continue
			}
			rel.forget()
			r.log.Info("a removed sandbox's network detached, on a retry", "sandbox", rel.id)
			return
		}
	}()
}

// awaitRelease waits until the network of a removed sandbox that had the id is gone, trying
// its detach again if it failed.
func (r *Runtime) awaitRelease(id string) error {
	r.releasingMu.Lock()
	rel := r.releasing[id]
	r.releasingMu.Unlock()
	if rel == nil {
		return nil
	}
	<-rel.over
	if rel.err == nil {
		return nil
	}
	if err := r.detachNetwork(id); err != nil {
		return fmt.Errorf("the network of the sandbox removed before under this id is still there: %w", err)
	}
	rel.forget()
	return nil
}

// detachNetwork removes a sandbox's network (after its container is gone). A runtime opened
// for Cleanup has no network: Cleanup removes all of it at the end.
func (r *Runtime) detachNetwork(id string) error {
	if r.net == nil {
		return nil
	}
	if err := r.net.Detach(id); err != nil {
		return fmt.Errorf("remove network: %w", err)
	}
	return nil
}

// reconcileNetwork runs after the records are reconciled at start-up: networks whose sandbox
// has no record go. A failed sandbox keeps its network (its address, its ports, unreachable)
// until it is removed, as it does when it fails while the daemon runs.
func (r *Runtime) reconcileNetwork() {
	for _, id := range r.net.Sandboxes() {
		if _, err := r.lookup(id); err == nil {
			continue
		}
		r.log.Warn("removing the network of a sandbox that has no record", "sandbox", id)
		if err := r.net.Detach(id); err != nil {
			r.log.Error("remove network", "sandbox", id, "err", err)
		}
	}
}

// SetNetwork changes the network mode of a running sandbox. Connections the sandbox opened
// are cut, so the new mode applies to them too.
func (r *Runtime) SetNetwork(id string, spec api.NetworkSpec) (*api.Sandbox, error) {
	if spec.Mode == "" {
		return nil, api.Errorf(api.CodeInvalidArgument, "mode is required: none, egress or allow")
	}
	spec, allow, err := resolveNetwork(&spec)
	if err != nil {
		return nil, err
	}
	sb, err := r.lockRunning(id)
	if err != nil {
		return nil, err
	}
	defer sb.mu.Unlock()
	if err := r.net.SetMode(id, sandboxnet.Mode(spec.Mode), allow); err != nil {
		return nil, netError(err)
	}
	a, ok := r.net.Lookup(id)
	if !ok {
		return nil, api.Errorf(api.CodeNotFound, "sandbox %q has no network", id)
	}
	if err := r.update(sb, func(rec *record) { rec.Network = apiNetwork(a) }); err != nil {
		return nil, err
	}
	out := sb.rec.Sandbox
	return &out, nil
}

// ExposePort forwards a host port to a port of a running sandbox: on the host's 127.0.0.1
// unless the request names a host address or is public (every address). A TCP port that is
// not public gets a token for the preview proxy. The exposure, token included, is kept in
// package net's state (in the run dir, like the kernel rules it describes: no fsync).
func (r *Runtime) ExposePort(id string, req api.ExposePortRequest) (*api.ExposedPort, error) {
	want := sandboxnet.Port{Port: req.Port, Protocol: req.Protocol, HostPort: req.HostPort, Public: req.Public}
	if want.Protocol != "" && want.Protocol != api.ProtocolTCP && want.Protocol != api.ProtocolUDP {
		return nil, api.Errorf(api.CodeInvalidArgument, "protocol must be tcp or udp, not %q", req.Protocol)
	}
	switch {
	case req.HostIP != "":
		ip, err := netip.ParseAddr(req.HostIP)
		if err != nil {
			return nil, api.Errorf(api.CodeInvalidArgument, "hostIP %q is not an IP address", req.HostIP)
		}
		want.HostIP = ip
	case !req.Public:
		// Safe by default: the host alone reaches a port that is not public.
		want.HostIP = netip.AddrFrom4([4]byte{127, 0, 0, 1})
	}
	if want.Protocol != api.ProtocolUDP && !req.Public {
		want.Token = newToken()
	}
	sb, err := r.lockRunning(id)
	if err != nil {
		return nil, err
	}
	defer sb.mu.Unlock()
	p, err := r.net.Expose(id, want)
	if err != nil {
		return nil, netError(err)
	}
	if p.Public != req.Public {
		// Exposed already with the same host side: the same exposure, unless public changes.
		return nil, api.Errorf(api.CodeConflict, "port %d/%s is already exposed with public=%t; remove it first to change that", p.Port, p.Protocol, p.Public)
	}
	r.ops.events.publish(api.EventPortExposed, id, "port", strconv.Itoa(p.Port), "protocol", p.Protocol, "hostPort", strconv.Itoa(p.HostPort))
	return r.exposedPort(id, p), nil
}

// UnexposePort stops forwarding a sandbox port and cuts the connections open through it.
func (r *Runtime) UnexposePort(id string, port int, protocol string) error {
	sb, err := r.lookup(id)
	if err != nil {
		return err
	}
	sb.mu.Lock()
	defer sb.mu.Unlock()
	err = r.net.Unexpose(id, port, protocol)
	if protocol != sandboxnet.UDP {
		// Also when cutting the NAT-ed flows failed: the port is unexposed by then.
		r.forgetPreview(id, port)
	}
	if err == nil || !errors.Is(err, sandboxnet.ErrNotFound) {
		r.ops.events.publish(api.EventPortUnexposed, id, "port", strconv.Itoa(port), "protocol", protocol)
	}
	return netError(err)
}

// Ports lists a sandbox's exposed ports.
func (r *Runtime) Ports(id string) ([]api.ExposedPort, error) {
	if _, err := r.lookup(id); err != nil {
		return nil, err
	}
	out := []api.ExposedPort{}
	for _, p := range r.net.Ports(id) {
		out = append(out, *r.exposedPort(id, p))
	}
	slices.SortFunc(out, func(a, b api.ExposedPort) int {
		return cmp.Or(cmp.Compare(a.Port, b.Port), cmp.Compare(a.Protocol, b.Protocol))
	})
	return out, nil
}

func (r *Runtime) exposedPort(id string, p sandboxnet.Port) *api.ExposedPort {
	out := &api.ExposedPort{Port: p.Port, Protocol: p.Protocol, HostPort: p.HostPort, HostIP: "0.0.0.0",
		Public: p.Public, Token: p.Token}
	host := "127.0.0.1"
	if p.HostIP.IsValid() {
		out.HostIP, host = p.HostIP.String(), p.HostIP.String()
	}
	switch {
	case p.Protocol == sandboxnet.UDP:
		out.URL = fmt.Sprintf("udp://%s:%d", host, p.HostPort)
	case r.cfg.ProxyDomain != "":
		name := fmt.Sprintf("%d-%s", p.Port, id)
		if p.Token != "" {
			name += "-" + p.Token
		}
		out.URL = "http://" + name + "." + r.cfg.ProxyDomain
		if r.cfg.ProxyPort != 0 && r.cfg.ProxyPort != 80 {
			out.URL += ":" + strconv.Itoa(r.cfg.ProxyPort)
		}
	default:
		out.URL = fmt.Sprintf("http://%s:%d", host, p.HostPort)
	}
	return out
}

// PreviewTarget is where the preview proxy sends requests for an exposed TCP port of a
// sandbox: the sandbox's own address and port, without NAT, with the port's token (empty
// when public). Errors: api.CodeNotFound when the sandbox or the exposed TCP port does not
// exist, api.CodeUnavailable when the sandbox does not run or has no network (mode none).
func (r *Runtime) PreviewTarget(id string, port int) (addr netip.AddrPort, token string, public bool, err error) {
	sb, err := r.lookup(id)
	if err != nil {
		return netip.AddrPort{}, "", false, err
	}
	ports := r.net.Ports(id)
	i := slices.IndexFunc(ports, func(p sandboxnet.Port) bool { return p.Port == port && p.Protocol == sandboxnet.TCP })
	if i < 0 {
		return netip.AddrPort{}, "", false, api.Errorf(api.CodeNotFound, "port %d of sandbox %q is not exposed", port, id)
	}
	p := ports[i]
	sb.touch() // a preview request is activity; one to a paused sandbox resumes it
	sb.mu.Lock()
	err = r.wake(sb)
	sb.mu.Unlock()
	if err != nil {
		return netip.AddrPort{}, "", false, api.Errorf(api.CodeUnavailable, "sandbox %q is not running: %v", id, err)
	}
	a, ok := r.net.Lookup(id)
	if !ok || a.HostVeth == "" {
		return netip.AddrPort{}, "", false, api.Errorf(api.CodeUnavailable, "sandbox %q has no network (mode none)", id)
	}
	return netip.AddrPortFrom(a.Addr, uint16(port)), p.Token, p.Public, nil
}

// newToken is a preview proxy token: 32 lowercase hex digits from crypto/rand.
func newToken() string { return randomHex(16) }

// requestedNetwork is the network a create asks for, checked, as the record keeps it until
// the sandbox is attached.
func requestedNetwork(spec *api.NetworkSpec) (api.SandboxNetwork, error) {
	s, allow, err := resolveNetwork(spec)
	if err != nil {
		return api.SandboxNetwork{}, err
	}
	n := api.SandboxNetwork{Mode: s.Mode}
	for _, p := range allow {
		n.Allow = append(n.Allow, p.String())
	}
	return n, nil
}

func (r *Runtime) handleSetNetwork(w http.ResponseWriter, req *http.Request) error {
	var body api.NetworkSpec
	if err := httpapi.DecodeJSON(req, &body, false); err != nil {
		return err
	}
	sb, err := r.SetNetwork(req.PathValue("id"), body)
	if err != nil {
		return err
	}
	httpapi.WriteJSON(w, http.StatusOK, sb)
	return nil
}

func (r *Runtime) handleExposePort(w http.ResponseWriter, req *http.Request) error {
	var body api.ExposePortRequest
	if err := httpapi.DecodeJSON(req, &body, false); err != nil {
		return err
	}
	p, err := r.ExposePort(req.PathValue("id"), body)
	if err != nil {
		return err
	}
	httpapi.WriteJSON(w, http.StatusCreated, p)
	return nil
}

func (r *Runtime) handleListPorts(w http.ResponseWriter, req *http.Request) error {
	ports, err := r.Ports(req.PathValue("id"))
	if err != nil {
		return err
	}
	httpapi.WriteJSON(w, http.StatusOK, ports)
	return nil
}

func (r *Runtime) handleUnexposePort(w http.ResponseWriter, req *http.Request) error {
	port, err := strconv.Atoi(req.PathValue("port"))
	if err != nil || port < 1 || port > 65535 {
		return api.Errorf(api.CodeInvalidArgument, "port must be a number 1-65535, not %q", req.PathValue("port"))
	}
	protocol := req.URL.Query().Get("protocol")
	switch protocol {
	case "":
		protocol = api.ProtocolTCP
	case api.ProtocolTCP, api.ProtocolUDP:
	default:
		return api.Errorf(api.CodeInvalidArgument, "protocol must be tcp or udp, not %q", protocol)
	}
	if err := r.UnexposePort(req.PathValue("id"), port, protocol); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}
