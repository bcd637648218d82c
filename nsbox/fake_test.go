package nsbox

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"

	"github.com/nsbox/nsbox/api"
	"github.com/nsbox/nsbox/api/httpapi"
	sandboxfs "github.com/nsbox/nsbox/fs"
	sandboxnet "github.com/nsbox/nsbox/net"
	"github.com/nsbox/nsbox/nsbox/backend"
	"github.com/nsbox/nsbox/rootfs"
)

// The core's unit tests run without root: a fake backend whose containers are in-process
// agents (each an HTTP server on its own unix socket that answers health, config and env),
// and a fake network. They test the core's own logic — states, rollbacks, the pool,
// reconcile, concurrency — not the kernel, which the integration tests in cmd/nsbox do.

// fakeBackend is a backend.Backend of fake containers.
type fakeBackend struct {
	t   *testing.T
	dir string // the run dirs' parent

	mu         sync.Mutex
	containers map[string]*fakeInstance
	starts     int
	// failStart fails the next starts; failDestroy fails destroys; badAgent makes new agents
	// answer every request with 500; killGate, when set, holds every Kill until closed;
	// healthGate, every agent's health answer.
	failStart   error
	failDestroy error
	badAgent    bool
	killGate    chan struct{}
	healthGate  chan struct{}
}

func newFakeBackend(t *testing.T, runDir string) *fakeBackend {
	return &fakeBackend{t: t, dir: filepath.Join(runDir, "sandboxes"), containers: map[string]*fakeInstance{}}
}

func (b *fakeBackend) RunDir(id string) string { return filepath.Join(b.dir, id) }

func (b *fakeBackend) Release() error { return nil }

func (b *fakeBackend) WillStart() {}

func (b *fakeBackend) Start(_ context.Context, spec backend.Spec) (backend.Instance, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.starts++
	if b.failStart != nil {
		return nil, b.failStart
	}
	if err := os.MkdirAll(b.RunDir(spec.ID), 0o700); err != nil {
		return nil, err
	}
	// Unix socket paths are short: the socket lives in a short temp dir of its own.
	sockDir, err := os.MkdirTemp("", "nsbx")
	if err != nil {
		return nil, err
	}
	ln, err := net.Listen("unix", filepath.Join(sockDir, "a.sock"))
	if err != nil {
		return nil, err
	}
	inst := &fakeInstance{b: b, id: spec.ID, pid: 1000 + b.starts, spec: spec, ln: ln, sockDir: sockDir,
		answered: make(chan struct{}), env: map[string]string{}, limits: spec.Limits, hostname: cmp.Or(spec.Hostname, spec.ID)}
	inst.exited, inst.markExited = context.WithCancel(context.Background())
	if spec.AgentConfig != nil { // as the agent takes it at its start
		var cfg api.AgentConfig
		if err := json.Unmarshal(spec.AgentConfig, &cfg); err != nil {
			return nil, err
		}
		if err := inst.configure(cfg); err != nil {
			inst.configErr = err.(*api.Error)
		} else {
			inst.configured = true
		}
	}
	inst.srv = &http.Server{Handler: inst.agentRoutes(b.badAgent)}
	go func() { _ = inst.srv.Serve(ln) }()
	b.containers[spec.ID] = inst
	return inst, nil
}

func (b *fakeBackend) Load(id string) (backend.Instance, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	inst := b.containers[id]
	if inst == nil {
		return nil, backend.ErrNotExist
	}
	return inst, nil
}

func (b *fakeBackend) Containers() ([]string, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	var ids []string
	for id := range b.containers {
		ids = append(ids, id)
	}
	entries, _ := os.ReadDir(b.dir)
	for _, e := range entries {
		if !slices.Contains(ids, e.Name()) {
			ids = append(ids, e.Name())
		}
	}
	return ids, nil
}

func (b *fakeBackend) Destroy(id string) error {
	b.mu.Lock()
	inst := b.containers[id]
	err := b.failDestroy
	if err == nil {
		delete(b.containers, id)
	}
	b.mu.Unlock()
	if inst != nil && err == nil {
		inst.exit()
	}
	return err
}

// ids lists the containers the backend holds.
func (b *fakeBackend) ids() []string {
	ids, _ := b.Containers()
	slices.Sort(ids)
	return ids
}

func (b *fakeBackend) get(id string) *fakeInstance {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.containers[id]
}

func (b *fakeBackend) startCount() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.starts
}

func (b *fakeBackend) set(change func(*fakeBackend)) {
	b.mu.Lock()
	defer b.mu.Unlock()
	change(b)
}

// fakeInstance is one fake container: its agent serves in this process.
type fakeInstance struct {
	b       *fakeBackend
	id      string
	pid     int
	spec    backend.Spec
	ln      net.Listener
	srv     *http.Server
	sockDir string
	// exited is done once the fake agent has exited (exit).
	exited     context.Context
	markExited context.CancelFunc
	once       sync.Once
	// answered is closed once the fake agent has answered its first health check.
	answered     chan struct{}
	answeredOnce sync.Once

	mu       sync.Mutex
	hostname string
	frozen   bool
	limits   backend.Limits
	config   api.AgentConfig
	// configured, configErr: what its health answers of the configuration it started with.
	configured bool
	configErr  *api.Error
	env        map[string]string
	restored   api.SandboxState // what the daemon restored in it
	shown      []string         // the LXCFS mounts whose views it was given, in order
}

func (i *fakeInstance) agentRoutes(broken bool) http.Handler {
	mux := http.NewServeMux()
	if broken {
		mux.HandleFunc("/", func(w http.ResponseWriter, _ *http.Request) {
			httpapi.WriteError(w, errors.New("the fake agent is broken"))
		})
		return mux
	}
	log := slog.New(slog.DiscardHandler)
	mux.HandleFunc("GET /v1/health", func(w http.ResponseWriter, r *http.Request) {
		if i.isFrozen() { // as a frozen agent: no answer
			<-r.Context().Done()
			return
		}
		i.b.mu.Lock()
		gate := i.b.healthGate
		i.b.mu.Unlock()
		if gate != nil {
			<-gate
		}
		httpapi.WriteJSON(w, http.StatusOK, api.Health{PID: 1, Configured: i.configured, ConfigError: i.configErr})
		i.answeredOnce.Do(func() { close(i.answered) })
	})
	mux.HandleFunc("PUT /v1/config", httpapi.Handle(log, func(w http.ResponseWriter, r *http.Request) error {
		var cfg api.AgentConfig
		if err := httpapi.DecodeJSON(r, &cfg, false); err != nil {
			return err
		}
		if err := i.configure(cfg); err != nil {
			return err
		}
		w.WriteHeader(http.StatusNoContent)
		return nil
	}))
	mux.HandleFunc("POST /v1/state/save", func(w http.ResponseWriter, _ *http.Request) { // one session, as a snapshot sees it
		httpapi.WriteJSON(w, http.StatusOK, api.SandboxState{Sessions: []api.SessionState{{ID: "default", Script: "cd /tmp"}}})
	})
	mux.HandleFunc("POST /v1/state/restore", func(w http.ResponseWriter, r *http.Request) {
		i.mu.Lock()
		_ = json.NewDecoder(r.Body).Decode(&i.restored)
		i.mu.Unlock()
		w.WriteHeader(http.StatusNoContent)
	})
	mux.HandleFunc("POST /v1/shutdown", func(w http.ResponseWriter, _ *http.Request) {
		w.WriteHeader(http.StatusAccepted)
		go i.exit()
	})
	mux.HandleFunc("PUT /v1/env", httpapi.Handle(log, func(w http.ResponseWriter, r *http.Request) error {
		var env api.SandboxEnv
		if err := httpapi.DecodeJSON(r, &env, false); err != nil {
			return err
		}
		i.mu.Lock()
		i.env = env.Env
		i.mu.Unlock()
		w.WriteHeader(http.StatusNoContent)
		return nil
	}))
	return mux
}

// configure takes the sandbox's configuration, at the start or from PUT /v1/config.
func (i *fakeInstance) configure(cfg api.AgentConfig) error {
	if cfg.Cwd == "/unusable" {
		return api.Errorf(api.CodeInvalidArgument, "cwd %s cannot be used in this sandbox", cfg.Cwd)
	}
	i.mu.Lock()
	i.config, i.env = cfg, cfg.Env
	i.mu.Unlock()
	return nil
}

// exit ends the fake agent, as if PID 1 had died.
func (i *fakeInstance) exit() {
	i.once.Do(func() {
		i.markExited()
		_ = i.srv.Close()
		_ = os.RemoveAll(i.sockDir)
	})
}

func (i *fakeInstance) ID() string                  { return i.id }
func (i *fakeInstance) PID() int                    { return i.pid }
func (i *fakeInstance) Exited() <-chan struct{}     { return i.exited.Done() }
func (i *fakeInstance) OnExit(f func()) func() bool { return context.AfterFunc(i.exited, f) }
func (i *fakeInstance) AgentLog() string            { return "(fake agent)" }
func (i *fakeInstance) NetNS() string               { return "/fake/netns/" + i.id }
func (i *fakeInstance) Alive() bool {
	select {
	case <-i.exited.Done():
		return false
	default:
		return true
	}
}

func (i *fakeInstance) DialAgent(ctx context.Context) (net.Conn, error) {
	var d net.Dialer
	return d.DialContext(ctx, "unix", i.ln.Addr().String())
}

func (i *fakeInstance) SetHostname(name string) error {
	if !i.Alive() {
		return backend.ErrExited
	}
	i.mu.Lock()
	defer i.mu.Unlock()
	i.hostname = name
	return nil
}

func (i *fakeInstance) SetLimits(lim backend.Limits) error {
	i.mu.Lock()
	defer i.mu.Unlock()
	i.limits = lim
	return nil
}

func (i *fakeInstance) ShowLimits(dir string) error {
	i.mu.Lock()
	defer i.mu.Unlock()
	i.shown = append(i.shown, dir)
	return nil
}

// shownViews are the LXCFS mounts whose views it was given, in order.
func (i *fakeInstance) shownViews() []string {
	i.mu.Lock()
	defer i.mu.Unlock()
	return slices.Clone(i.shown)
}

func (i *fakeInstance) IDs() rootfs.IDMap { return i.spec.IDs }

func (i *fakeInstance) OpenRoot() (*sandboxfs.Root, error) {
	return nil, errors.New("no root in a fake")
}
func (i *fakeInstance) Stats() (backend.Stats, error) {
	return backend.Stats{CPUNanos: 1e9, MemoryBytes: 1 << 20, MemoryLimit: uint64(i.currentLimits().MemoryBytes), Pids: 1}, nil
}
func (i *fakeInstance) OOMKills() (uint64, error)    { return 0, nil }
func (i *fakeInstance) OnOOM(func()) (uint64, error) { return 0, nil }
func (i *fakeInstance) Processes() ([]int, error)    { return nil, nil }
func (i *fakeInstance) Freeze() error                { return i.setFrozen(true) }
func (i *fakeInstance) Thaw() error                  { return i.setFrozen(false) }
func (i *fakeInstance) Close()                       {}

// SendKill kills the fake agent as Kill does: a fake has no processes that die slowly.
func (i *fakeInstance) SendKill() { i.Kill() }

func (i *fakeInstance) Kill() {
	i.b.mu.Lock()
	gate := i.b.killGate
	i.b.mu.Unlock()
	if gate != nil {
		<-gate
	}
	i.exit()
}

// setFrozen freezes or thaws the fake agent: a frozen one does not answer.
func (i *fakeInstance) setFrozen(frozen bool) error {
	i.mu.Lock()
	defer i.mu.Unlock()
	i.frozen = frozen
	return nil
}

func (i *fakeInstance) isFrozen() bool {
	i.mu.Lock()
	defer i.mu.Unlock()
	return i.frozen
}

func (i *fakeInstance) currentLimits() backend.Limits {
	i.mu.Lock()
	defer i.mu.Unlock()
	return i.limits
}

func (i *fakeInstance) agentConfig() (string, api.AgentConfig, map[string]string) {
	i.mu.Lock()
	defer i.mu.Unlock()
	return i.hostname, i.config, i.env
}

// fakeNetwork is the network interface without a kernel: addresses from 10.0.0.2 on.
type fakeNetwork struct {
	mu         sync.Mutex
	attached   map[string]*sandboxnet.Attachment
	next       byte
	failAttach error
	// onAttach, when set, is called by every Attach of a sandbox's network, with its id.
	onAttach func(id string)
	// detachGate, when set, holds every Detach until closed; failDetach fails them.
	detachGate chan struct{}
	failDetach error
	// log lists every Attach and Detach, as "attach ID" and "detach ID".
	log []string
}

func (n *fakeNetwork) RuleCount() (int, error) { return 0, nil }

func newFakeNetwork() *fakeNetwork {
	return &fakeNetwork{attached: map[string]*sandboxnet.Attachment{}, next: 2}
}

func (n *fakeNetwork) Allocate(id string) (netip.Addr, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if a := n.attached[id]; a != nil {
		return a.Addr, nil
	}
	addr := netip.AddrFrom4([4]byte{10, 0, 0, n.next})
	n.next++
	n.attached[id] = &sandboxnet.Attachment{ID: id, Addr: addr}
	return addr, nil
}

func (n *fakeNetwork) Attach(id, _ string, mode sandboxnet.Mode, allow []netip.Prefix) (*sandboxnet.Attachment, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.failAttach != nil {
		return nil, n.failAttach
	}
	if n.onAttach != nil {
		n.onAttach(id)
	}
	n.log = append(n.log, "attach "+id)
	a := n.attached[id]
	if a == nil {
		a = &sandboxnet.Attachment{ID: id}
		n.attached[id] = a
	}
	a.Mode, a.Allow = mode, allow
	if mode != sandboxnet.ModeNone {
		a.HostVeth = "veth-" + id
	}
	out := *a
	return &out, nil
}

func (n *fakeNetwork) SetMode(id string, mode sandboxnet.Mode, allow []netip.Prefix) error {
	_, err := n.Attach(id, "", mode, allow)
	return err
}

func (n *fakeNetwork) Detach(id string) error {
	n.mu.Lock()
	gate := n.detachGate
	n.mu.Unlock()
	if gate != nil {
		<-gate
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.failDetach != nil {
		return n.failDetach
	}
	n.log = append(n.log, "detach "+id)
	delete(n.attached, id)
	return nil
}

func (n *fakeNetwork) Suspend(string) error { return nil }

func (n *fakeNetwork) Reattach(id, _ string) (*sandboxnet.Attachment, error) {
	n.mu.Lock()
	fail := n.failAttach
	n.mu.Unlock()
	if fail != nil {
		return nil, fail
	}
	a, ok := n.Lookup(id)
	if !ok {
		return nil, sandboxnet.ErrNotFound
	}
	return a, nil
}

func (n *fakeNetwork) Lookup(id string) (*sandboxnet.Attachment, bool) {
	n.mu.Lock()
	defer n.mu.Unlock()
	a := n.attached[id]
	if a == nil {
		return nil, false
	}
	out := *a
	return &out, true
}

func (n *fakeNetwork) Sandboxes() []string {
	n.mu.Lock()
	defer n.mu.Unlock()
	var ids []string
	for id := range n.attached {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	return ids
}

func (n *fakeNetwork) Expose(string, sandboxnet.Port) (sandboxnet.Port, error) {
	return sandboxnet.Port{}, fmt.Errorf("%w: the fake network exposes nothing", sandboxnet.ErrInvalid)
}
func (n *fakeNetwork) Unexpose(string, int, string) error { return sandboxnet.ErrNotFound }
func (n *fakeNetwork) Ports(string) []sandboxnet.Port     { return nil }
func (n *fakeNetwork) Close()                             {}

// ResolvConf is a fixed file: the fake network has no host resolver to follow.
func (n *fakeNetwork) ResolvConf() ([]byte, error) { return []byte("nameserver 192.0.2.53\n"), nil }
