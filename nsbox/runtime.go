// Package nsbox is the daemon's core. It owns every sandbox's state machine (sandbox.go),
// keeps their records in bbolt (records.go), starts their containers through a runtime
// backend (package backend; libcontainer's is package nsbox/libcontainer), keeps a warm pool
// of started containers (pool.go), wires in storage and the network, reconciles the records
// with what really runs when the daemon starts, relays requests to each sandbox's agent
// (agentclient.go), and serves the HTTP API (server.go).
package nsbox

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/nsbox/nsbox/api"
	"github.com/nsbox/nsbox/nsbox/backend"
	"github.com/nsbox/nsbox/proxy"
	"github.com/nsbox/nsbox/rootfs"
)

// Config is how a daemon lays out its state and what it gives sandboxes by default.
type Config struct {
	DataDir string // metadata, images, sandbox upper dirs (e.g. /var/lib/nsbox)
	RunDir  string // network state, per-container run dirs (e.g. /run/nsbox)
	Version string
	// Backend starts the sandboxes' containers; its run dir for a container must be
	// <RunDir>/sandboxes/<container>.
	Backend backend.Backend

	DefaultCPUs     float64
	DefaultMemoryMB int64
	DefaultPids     int64

	// WarmPool is how many started containers to keep ready per image (pool.go).
	WarmPool map[string]int
	// AllowedCapabilities are the capabilities beyond the default set that a create may ask
	// for (capabilities.go), normalised (CAP_…).
	AllowedCapabilities []string
	// UserNS is the host ids of the containers' user namespaces (idranges.go); zero Count:
	// containers get none, and their root is the host's. The backend must support them.
	UserNS IDRange

	Network NetworkConfig
	// ProxyDomain and ProxyPort are where the preview proxy answers: exposed TCP ports' URLs
	// are http://{port}-{id}[-{token}].{ProxyDomain}[:{ProxyPort}]. Empty: URLs name host ports.
	ProxyDomain string
	ProxyPort   int

	hostCPUs     int
	hostMemoryMB int64
	// network replaces the host's sandbox network (package net) in tests.
	network network
}

// Runtime creates, tracks and removes sandboxes.
type Runtime struct {
	cfg     Config
	backend backend.Backend
	records *records
	images  *rootfs.Store
	log     *slog.Logger

	pool          *warmPool
	defaultLimits backend.Limits // what a sandbox that asks for no limits gets
	ids           *idRanges      // nil without user namespaces

	mu        sync.Mutex
	sandboxes map[string]*sandbox // every sandbox the daemon knows, by id

	net     network
	preview *proxy.Proxy // the preview proxy, when the daemon serves one (preview.go)
}

var idPattern = regexp.MustCompile(`^[a-z0-9][a-z0-9-]{0,62}$`)

const (
	defaultImage = "host"
	defaultCwd   = "/workspace"
	// stopGrace is how long a sandbox gets to stop after SIGTERM before it is killed.
	stopGrace = 10 * time.Second
	// agentReadyTimeout bounds how long a new sandbox's agent may take to answer.
	agentReadyTimeout = 10 * time.Second
)

// Open prepares the state directories, images and metadata, and reconciles the records with
// the containers that exist.
func Open(cfg Config, log *slog.Logger) (*Runtime, error) {
	// What sandboxes write is in the data dir: no host user but root may reach it. The run
	// dir is only traversable: in a user namespace, runc's init reaches each container's root
	// through it (the container's own run dir belongs to the container's root).
	dirs := map[string]os.FileMode{cfg.DataDir: 0o700, filepath.Join(cfg.DataDir, "sandboxes"): 0o700,
		cfg.RunDir: 0o711, filepath.Join(cfg.RunDir, "sandboxes"): 0o711}
	for _, d := range []string{cfg.DataDir, filepath.Join(cfg.DataDir, "sandboxes"), cfg.RunDir, filepath.Join(cfg.RunDir, "sandboxes")} {
		if err := errors.Join(os.MkdirAll(d, dirs[d]), os.Chmod(d, dirs[d])); err != nil {
			return nil, fmt.Errorf("make state dir %s: %w", d, err)
		}
	}
	var ids *idRanges
	if cfg.UserNS.Count > 0 {
		ids = newIDRanges(cfg.UserNS)
	}
	var err error
	if cfg.hostMemoryMB, err = hostMemoryMB(); err != nil {
		return nil, err
	}
	cfg.hostCPUs = hostCPUs()
	images, err := rootfs.OpenStore(filepath.Join(cfg.DataDir, "images"))
	if err != nil {
		return nil, err
	}
	recs, err := openRecords(filepath.Join(cfg.DataDir, "meta.db"))
	if err != nil {
		return nil, err
	}
	r := &Runtime{cfg: cfg, backend: cfg.Backend, records: recs, images: images, log: log,
		sandboxes: map[string]*sandbox{}, pool: newWarmPool(cfg.WarmPool), ids: ids}
	if r.defaultLimits, err = cfg.resolveLimits(&api.Limits{}); err != nil {
		recs.Close()
		return nil, fmt.Errorf("default limits: %w", err)
	}
	if err := r.openNetwork(); err != nil {
		recs.Close()
		return nil, err
	}
	if err := r.reconcile(); err != nil {
		r.Close()
		return nil, fmt.Errorf("reconcile sandboxes: %w", err)
	}
	if err := r.fillPool(); err != nil {
		r.Close()
		return nil, err
	}
	return r, nil
}

// Close destroys the warm pool's containers, and releases the network's host resources (its
// netlink sockets and held host ports; the rules stay) and the metadata database. Sandboxes
// keep running.
func (r *Runtime) Close() error {
	r.drainPool()
	r.net.Close()
	return r.records.Close()
}

// Images lists the images sandboxes can be made from.
func (r *Runtime) Images() []api.Image {
	out := []api.Image{}
	for _, img := range r.images.Images() {
		out = append(out, api.Image{Name: img.Name, Description: img.Description, Warm: r.pool.readyCount(img.Name)})
	}
	return out
}

// A container's run and data dirs are named by its id (record.container()).
func (r *Runtime) sandboxRunDir(container string) string { return r.backend.RunDir(container) }
func (r *Runtime) sandboxDataDir(container string) string {
	return filepath.Join(r.cfg.DataDir, "sandboxes", container)
}

// Create validates the request, makes the sandbox and returns it once its agent answers.
func (r *Runtime) Create(ctx context.Context, req api.CreateSandboxRequest) (*api.Sandbox, error) {
	if req.ID == "" {
		req.ID = newID()
	}
	if !idPattern.MatchString(req.ID) {
		return nil, api.Errorf(api.CodeInvalidArgument, "invalid sandbox id %q: use 1-63 characters of a-z, 0-9 and '-', starting with a letter or digit", req.ID)
	}
	if req.Image == "" {
		req.Image = defaultImage
	}
	img, err := r.images.Get(req.Image)
	if err != nil {
		return nil, api.Errorf(api.CodeNotFound, "%v", err)
	}
	lim, err := r.cfg.resolveLimits(&req.Limits)
	if err != nil {
		return nil, err
	}
	if req.Cwd == "" {
		req.Cwd = defaultCwd
	}
	if !filepath.IsAbs(req.Cwd) {
		return nil, api.Errorf(api.CodeInvalidArgument, "cwd must be an absolute path, got %q", req.Cwd)
	}
	if err := validateEnv(req.Env); err != nil {
		return nil, err
	}
	if err := r.validateStorage(&req); err != nil {
		return nil, err
	}
	if err := r.checkCapabilities(&req); err != nil {
		return nil, err
	}
	network, err := requestedNetwork(req.Network)
	if err != nil {
		return nil, err
	}
	for k := range req.Labels {
		if k == "" {
			return nil, api.Errorf(api.CodeInvalidArgument, "label names must not be empty")
		}
	}
	sb, err := r.admit(req.ID)
	if err != nil {
		return nil, err
	}

	began := time.Now()
	sc, fromPool, err := r.acquire(ctx, img, lim, extrasOf(&req))
	if err != nil {
		r.forget(sb)
		// Whatever failed, the create as a whole failed inside the daemon.
		return nil, api.Errorf(api.CodeInternal, "start sandbox %s: %v", req.ID, err)
	}
	rec := record{
		Sandbox: api.Sandbox{
			ID: req.ID, Image: img.Name, Env: req.Env, Cwd: filepath.Clean(req.Cwd),
			Limits: req.Limits, Labels: req.Labels, CreatedAt: time.Now().UTC().Truncate(time.Millisecond), PID: sc.inst.PID(),
			Workspace: req.Workspace, Mounts: req.Mounts, Network: network, Capabilities: req.Capabilities,
		},
		Container: sc.inst.ID(),
	}
	// The creating record is written (and fsync'd) while bind works: bind mostly waits for
	// the kernel and the agent. A crash before either ends leaves a container without a
	// record, or a creating record, and reconcile removes both.
	inserted := make(chan error, 1)
	creating := rec // bind changes rec meanwhile
	go func() {
		sb.mu.Lock()
		defer sb.mu.Unlock()
		sb.inst, sb.agent = sc.inst, sc.agent
		_, err := r.transition(sb, api.StatusCreating, func(next *record) { *next = creating })
		inserted <- err
	}()
	bindErr := r.bind(ctx, &rec, sc, lim)
	if err := <-inserted; err != nil {
		r.forget(sb)
		return nil, errors.Join(err, r.destroyContainer(sc.inst, func() error { return r.detachNetwork(rec.ID) }))
	}
	if bindErr != nil {
		r.abortCreate(sb)
		var apiErr *api.Error
		if errors.As(bindErr, &apiErr) && apiErr.Code != api.CodeInternal {
			return nil, apiErr // the request's mistake (a cwd that cannot be made, no address left)
		}
		return nil, api.Errorf(api.CodeInternal, "set up sandbox %s: %v", rec.ID, bindErr)
	}
	sb.mu.Lock()
	_, err = r.transition(sb, api.StatusRunning, func(next *record) { next.Network = rec.Network })
	out := sb.rec.Sandbox
	sb.mu.Unlock()
	if err != nil {
		r.abortCreate(sb)
		return nil, err
	}
	r.watch(sb, sc.inst)
	r.log.Info("sandbox created", "sandbox", rec.ID, "image", rec.Image, "container", rec.Container, "pid", rec.PID,
		"warm", fromPool, "duration", time.Since(began))
	return &out, nil
}

// admit registers a new sandbox with the id, in no state yet: invisible to Get and List until
// its create records it, and refusing every other request meanwhile.
func (r *Runtime) admit(id string) (*sandbox, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if other := r.sandboxes[id]; other != nil {
		other.mu.Lock()
		state := other.rec.Status
		other.mu.Unlock()
		switch state {
		case "", api.StatusCreating, api.StatusStopping:
			return nil, stateError(id, state, "try again")
		}
		return nil, api.Errorf(api.CodeConflict, "sandbox %q already exists", id)
	}
	sb := &sandbox{id: id, rec: record{Sandbox: api.Sandbox{ID: id}}}
	r.sandboxes[id] = sb
	return sb, nil
}

// forget drops a sandbox that was admitted but never recorded.
func (r *Runtime) forget(sb *sandbox) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.sandboxes[sb.id] == sb {
		delete(r.sandboxes, sb.id)
	}
}

// teardown destroys what a sandbox that is creating or stopping has (its container, files,
// network), and then records it removed; if not everything could be removed it is kept,
// failed, with failure and the error as the reason, so that a remove can try again (and list
// what is left). The work is done without sb.mu: the state keeps every other request away.
func (r *Runtime) teardown(sb *sandbox, failure string) error {
	sb.mu.Lock()
	inst, container := sb.inst, sb.rec.container()
	sb.mu.Unlock()
	// The network's rules go only once the sandbox's processes are dead: before, its traffic
	// would no longer be filtered.
	detach := func() error { return r.detachNetwork(sb.id) }
	var err error
	if inst != nil {
		err = r.destroyContainer(inst, detach)
	} else {
		err = r.destroyContainerID(container, detach)
	}
	sb.mu.Lock()
	defer sb.mu.Unlock()
	r.forgetAgent(sb)
	sb.inst = nil
	if err != nil {
		if _, terr := r.transition(sb, api.StatusFailed, func(rec *record) { rec.Error, rec.PID = failure+err.Error(), 0 }); terr != nil {
			r.log.Error("record failed sandbox", "sandbox", sb.id, "err", terr)
		}
		return err
	}
	_, err = r.transition(sb, stateRemoved, nil)
	return err
}

// abortCreate undoes a create that failed part-way (teardown).
func (r *Runtime) abortCreate(sb *sandbox) {
	if err := r.teardown(sb, "its create failed and not everything could be removed: "); err != nil {
		r.log.Error("clean up after failed create", "sandbox", sb.id, "err", err)
	}
}

// bind makes a started container the sandbox rec describes: its hostname, its limits when
// they differ from the ones it was started with, its network, and its agent's hostname,
// sandbox environment and working directory.
func (r *Runtime) bind(ctx context.Context, rec *record, sc *startedContainer, lim backend.Limits) error {
	if err := sc.inst.SetHostname(rec.ID); err != nil {
		return err
	}
	if lim != sc.limits {
		began := time.Now()
		if err := sc.inst.SetLimits(lim); err != nil {
			return err
		}
		r.log.Debug("limits set", "container", sc.inst.ID(), "duration", time.Since(began))
	}
	if err := r.connectNetwork(rec, sc); err != nil {
		return err
	}
	return sc.agent.configure(ctx, api.AgentConfig{Hostname: rec.ID, Env: rec.Env, Cwd: rec.Cwd})
}

// Get returns one sandbox.
func (r *Runtime) Get(id string) (*api.Sandbox, error) {
	sb, err := r.lookup(id)
	if err != nil {
		return nil, err
	}
	rec := sb.snapshot()
	if rec.Status == "" {
		return nil, api.Errorf(api.CodeNotFound, "sandbox %q not found", id)
	}
	return &rec.Sandbox, nil
}

// List returns every sandbox, ordered by id.
func (r *Runtime) List() []api.Sandbox {
	r.mu.Lock()
	all := make([]*sandbox, 0, len(r.sandboxes))
	for _, sb := range r.sandboxes {
		all = append(all, sb)
	}
	r.mu.Unlock()
	out := make([]api.Sandbox, 0, len(all))
	for _, sb := range all {
		if rec := sb.snapshot(); rec.Status != "" {
			out = append(out, rec.Sandbox)
		}
	}
	slices.SortFunc(out, func(a, b api.Sandbox) int { return strings.Compare(a.ID, b.ID) })
	return out
}

// Remove stops a sandbox and deletes everything it had. Without force its processes get
// SIGTERM and stopGrace to exit before they are killed.
func (r *Runtime) Remove(id string, force bool) error {
	sb, err := r.lookup(id)
	if err != nil {
		return err
	}
	sb.mu.Lock()
	from, err := r.transition(sb, api.StatusStopping, nil)
	inst := sb.inst
	sb.mu.Unlock()
	if err != nil {
		return err
	}
	if inst != nil && (from == api.StatusPaused || from == api.StatusFailed) {
		// Frozen processes take no signal until they are thawed (a failed sandbox may have
		// been paused when its agent died).
		if err := inst.Thaw(); err != nil && from == api.StatusPaused {
			r.log.Warn("thaw before remove", "sandbox", id, "err", err)
		}
	}
	if !force && (from == api.StatusRunning || from == api.StatusPaused) && inst != nil {
		inst.Stop(stopGrace)
	}
	if err := r.teardown(sb, "its remove failed and not everything could be removed: "); err != nil {
		return fmt.Errorf("remove sandbox %s: %w", id, err)
	}
	r.forgetPreview(id, 0)
	r.log.Info("sandbox removed", "sandbox", id)
	return nil
}

// destroyContainer kills a container's processes, then removes it and everything it had,
// whether or not it was ever bound to a sandbox.
func (r *Runtime) destroyContainer(inst backend.Instance, alongside ...func() error) error {
	inst.Kill()
	err := r.destroyContainerID(inst.ID(), alongside...)
	inst.Close()
	return err
}

// destroyContainerID removes a container, its storage and its directories. Once its
// processes are dead, the backend's destroy, the storage and what alongside removes (the
// sandbox's network) go at the same time; the directories last.
func (r *Runtime) destroyContainerID(id string, alongside ...func() error) error {
	done := make(chan error, len(alongside))
	for _, task := range alongside {
		go func() { done <- task() }()
	}
	destroyed := make(chan error, 1)
	go func() {
		err := r.backend.Destroy(id)
		if err == nil && r.ids != nil {
			r.ids.release(id) // only once nothing of the container can hold the ids
		}
		destroyed <- wrapErr("destroy container", err)
	}()
	errs := []error{r.releaseStorage(id)}
	// The backend's mounts in the run dir are gone before the directories go.
	errs = append(errs, <-destroyed, os.RemoveAll(r.sandboxRunDir(id)), os.RemoveAll(r.sandboxDataDir(id)))
	for range alongside {
		errs = append(errs, <-done)
	}
	return errors.Join(errs...)
}

// checkRunning returns why a container is not running, or "" when its agent answers.
func checkRunning(inst backend.Instance, agent *agentClient) string {
	if inst == nil {
		return "its container is gone (the host restarted, or it was removed outside nsbox)"
	}
	if !inst.Alive() {
		return "its agent (PID 1) has exited"
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := agent.health(ctx); err != nil {
		return fmt.Sprintf("its agent does not answer: %v", err)
	}
	return ""
}

// wrapErr wraps err with what failed, or is nil.
func wrapErr(what string, err error) error {
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	return nil
}

func newID() string { return randomHex(6) }

// randomHex is n random bytes from crypto/rand in lowercase hex.
func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
