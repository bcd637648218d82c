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
	"maps"
	"os"
	"path/filepath"
	"runtime/debug"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nsbox/nsbox/api"
	"github.com/nsbox/nsbox/internal/lxcfs"
	"github.com/nsbox/nsbox/nsbox/backend"
	"github.com/nsbox/nsbox/proxy"
	"github.com/nsbox/nsbox/rootfs"
	"github.com/nsbox/nsbox/rootfs/oci"
)

// Config is how a daemon lays out its state and what it gives sandboxes by default.
type Config struct {
	DataDir string // metadata, images, sandbox upper dirs (e.g. /var/lib/nsbox)
	RunDir  string // network state, per-container run dirs (e.g. /run/nsbox)
	Version string
	// Self is the nsbox binary, which runs the permission layers of workspaces with rules
	// (permissions.go); "" refuses rules.
	Self string
	// Backend starts the sandboxes' containers; its run dir for a container must be
	// <RunDir>/sandboxes/<container>, and it must mount StagedAgent(RunDir, Agent) into them
	// as their agent.
	Backend backend.Backend
	// Agent is the agent binary, which the daemon copies to its stage (stage.go).
	Agent string

	DefaultCPUs     float64
	DefaultMemoryMB int64
	DefaultPids     int64
	// DefaultDiskMB is the disk (storage.go) of a sandbox whose create names none; 0: such a
	// sandbox writes to nsbox's data file system without a bound. MaxDiskMB bounds what a
	// create may ask for; 0: the size of that file system.
	DefaultDiskMB int64
	MaxDiskMB     int64

	// MaxExecOutput bounds what an exec or code run answered as one JSON document keeps of
	// each stream (its maxOutputBytes may not ask for more), and so each stream's spool file
	// (output.go); 0: DefaultMaxExecOutput.
	MaxExecOutput int64

	// Checkpoint is whether CRIU works on this host (DetectCheckpoint), for hibernate's memory.
	Checkpoint api.Checkpoint

	// DefaultLifecycle is the idle and age policy of sandboxes whose create names none.
	DefaultLifecycle *api.Lifecycle

	// WarmPool is how many started containers to keep ready per image at least (pool.go).
	WarmPool map[string]int
	// WarmPoolMemoryMB is how much memory the pool's ready containers may use when demand
	// grows it beyond WarmPool (pool.go); 0: it never grows.
	WarmPoolMemoryMB int64
	// AllowedCapabilities are the capabilities beyond the default set that a create may ask
	// for (capabilities.go), normalised (CAP_…).
	AllowedCapabilities []string
	// UserNS is the host ids of the containers' user namespaces (idranges.go); zero Count:
	// containers get none, and their root is the host's. The backend must support them.
	UserNS IDRange

	Network NetworkConfig
	// Registries is how OCI images are pulled (insecure registries, a Docker Hub mirror).
	Registries oci.Registries
	// ProxyDomain and ProxyPort are where the preview proxy answers: exposed TCP ports' URLs
	// are http://{port}-{id}[-{token}].{ProxyDomain}[:{ProxyPort}]. Empty: URLs name host ports.
	ProxyDomain string
	ProxyPort   int
	// LimitViews runs LXCFS so that sandboxes see their own memory and CPUs in /proc
	// (limitviews.go); on a host without lxcfs the daemon says so and goes on without.
	LimitViews bool
	// Removed, when set, is called once a sandbox has been removed (the daemon revokes its
	// tokens there, so that a later sandbox with the same id is not reachable by them).
	Removed func(id string)

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
	spares        *spareDisks    // formatted default disks ready to take (sparedisks.go)
	defaultLimits backend.Limits // what a sandbox that asks for no limits gets
	ids           *idRanges      // nil without user namespaces

	mu        sync.Mutex
	sandboxes map[string]*sandbox // every sandbox the daemon knows, by id
	snapUse   snapshotUse
	// retiring and retiringCount: containers of removed sandboxes still being torn down (retire).
	retiring      sync.WaitGroup
	retiringCount atomic.Int32
	// releasing: the networks of removed sandboxes being detached in the background (retire),
	// by sandbox id, which a create may take again: its network waits for them (network.go).
	releasingMu sync.Mutex
	releasing   map[string]*networkRelease
	// retrying are the retries of failed detaches (retryRelease), which end once closing is.
	retrying sync.WaitGroup
	// closing ends when Close begins: watchIdle and the retries stop.
	closing    context.Context
	endClosing context.CancelFunc

	net     network
	preview *proxy.Proxy // the preview proxy, when the daemon serves one (preview.go)
	// trim gives the memory a burst of creates and removes used back to the system once the
	// daemon has been quiet for trimDelay (settled).
	trim *time.Timer

	// background is watchIdle, which Close waits for: a lifecycle being applied
	// (a remove, a pause) must end before the records and the pool it uses are closed.
	background sync.WaitGroup
	views      *limitViews // nil without Config.LimitViews
	ops        *ops        // events, metrics, stats readings (stats.go)
	// stopping ends when the daemon begins to stop (BeginStop, by endStopping): the streams
	// clients follow end (streamstop.go).
	stopping    context.Context
	endStopping context.CancelFunc
	// requests is the API's requests' base context (RequestContext), ended with cause
	// errDaemonStopping by CutRequests once the stop's grace is over.
	requests    context.Context
	cutRequests context.CancelCauseFunc
}

const (
	defaultImage = "host"
	defaultCwd   = "/workspace"
	// stopGrace is how long a sandbox gets to stop after SIGTERM before it is killed.
	stopGrace = 10 * time.Second
	// agentReadyTimeout bounds how long a new sandbox's agent may take to answer.
	agentReadyTimeout = 10 * time.Second
	// trimDelay is how long after the last create, remove or teardown the daemon returns
	// freed memory.
	trimDelay = 2 * time.Second
)

// Open prepares the state directories, images and metadata, and reconciles the records with
// the containers that exist.
func Open(cfg Config, log *slog.Logger) (*Runtime, error) {
	r, err := openRecorded(cfg, log)
	if err != nil {
		return nil, err
	}
	if r.cfg.hostMemoryMB, err = hostMemoryMB(); err != nil {
		r.records.Close()
		return nil, err
	}
	r.cfg.hostCPUs = hostCPUs()
	if r.cfg.MaxExecOutput <= 0 {
		r.cfg.MaxExecOutput = DefaultMaxExecOutput
	}
	if err := r.resetSpoolDir(); err != nil {
		r.records.Close()
		return nil, err
	}
	if r.images, err = rootfs.OpenStore(filepath.Join(cfg.DataDir, "images"), rootfs.WithRegistries(cfg.Registries)); err != nil {
		r.records.Close()
		return nil, err
	}
	r.images.OCI().KeepLayers(r.snapshotLayer)
	r.pool = newWarmPool(cfg.WarmPool, cfg.WarmPoolMemoryMB)
	if err := r.checkDefaultDisk(); err != nil {
		r.records.Close()
		return nil, err
	}
	if r.spares, err = openSpareDisks(filepath.Join(cfg.DataDir, "disks"), cfg.DefaultDiskMB, log.Error); err != nil {
		r.records.Close()
		return nil, err
	}
	if r.defaultLimits, err = r.cfg.resolveLimits(&api.Limits{}); err != nil {
		r.records.Close()
		return nil, fmt.Errorf("default limits: %w", err)
	}
	if err := r.openNetwork(); err != nil {
		r.records.Close()
		return nil, err
	}
	if err := r.openStage(); err != nil {
		r.Close()
		return nil, err
	}
	if err := r.reconcile(); err != nil {
		r.Close()
		return nil, fmt.Errorf("reconcile sandboxes: %w", err)
	}
	if cfg.LimitViews {
		r.openLimitViews()
	}
	r.reconcileNetwork()
	r.spares.refill()
	if err := r.fillPool(); err != nil {
		r.Close()
		return nil, err
	}
	r.background.Go(func() { r.watchIdle(r.closing) })
	return r, nil
}

// openRecorded prepares the state directories and opens the records: what a daemon and
// `daemon --cleanup` both start from. The runtime has no images, no network and an empty pool.
func openRecorded(cfg Config, log *slog.Logger) (*Runtime, error) {
	// What sandboxes write is in the data dir: no host user but root may reach it. The run
	// dir is only traversable: in a user namespace, runc's init reaches each container's root
	// through it (the container's own run dir belongs to the container's root).
	dirs := map[string]os.FileMode{cfg.DataDir: 0o700, filepath.Join(cfg.DataDir, "sandboxes"): 0o700,
		cfg.RunDir: 0o711, filepath.Join(cfg.RunDir, "sandboxes"): 0o711}
	// The run dir first: parents the two share are made traversable, not private.
	for _, d := range []string{cfg.RunDir, filepath.Join(cfg.RunDir, "sandboxes"), cfg.DataDir, filepath.Join(cfg.DataDir, "sandboxes")} {
		if err := errors.Join(os.MkdirAll(d, dirs[d]), os.Chmod(d, dirs[d])); err != nil {
			return nil, fmt.Errorf("make state dir %s: %w", d, err)
		}
	}
	recs, err := openRecords(filepath.Join(cfg.DataDir, "meta.db"))
	if err != nil {
		return nil, err
	}
	var ids *idRanges
	if cfg.UserNS.Count > 0 {
		ids = newIDRanges(cfg.UserNS)
	}
	r := &Runtime{cfg: cfg, backend: cfg.Backend, records: recs, log: log, ids: ids,
		sandboxes: map[string]*sandbox{}, releasing: map[string]*networkRelease{}, snapUse: snapshotUse{creating: map[string]int{}}, pool: newWarmPool(nil, 0), trim: time.AfterFunc(time.Hour, debug.FreeOSMemory)}
	r.trim.Stop()
	r.ops = newOps(r)
	r.stopping, r.endStopping = context.WithCancel(context.Background())
	r.closing, r.endClosing = context.WithCancel(context.Background())
	r.requests, r.cutRequests = context.WithCancelCause(context.Background())
	return r, nil
}

// settled is called after each create, remove and teardown: once none follows for trimDelay,
// the heap that a burst grew is returned to the system (Go's scavenger would take minutes).
func (r *Runtime) settled() { r.trim.Reset(trimDelay) }

// Cleanup is `nsbox daemon --cleanup`, for when no daemon runs. It does what a daemon's start
// does to what a crash left (reconcile: half-made containers with their mounts, cgroups, loop
// devices and directories go, unfinished creates are rolled back), and then removes the
// sandbox network (cleanupNetwork) and what the backend keeps for all its containers (its
// cgroup parent). Sandboxes whose processes still run would lose their
// network that way: with any, it refuses (after the first part), unless force, which removes
// them first as `rm -f` does.
func Cleanup(cfg Config, force bool, log *slog.Logger) error {
	r, err := openRecorded(cfg, log)
	if err != nil {
		return fmt.Errorf("%w; stop the daemon first", err)
	}
	defer r.Close()
	if err := r.reconcile(); err != nil {
		return fmt.Errorf("reconcile sandboxes: %w", err)
	}
	var running []string
	for _, sb := range r.List() {
		if l, err := r.lookup(sb.ID); err == nil && l.alive() {
			running = append(running, sb.ID)
		}
	}
	if len(running) > 0 && !force {
		return fmt.Errorf("%d sandboxes still run (%s): they would lose their network; remove them through a daemon first, or give --force to remove them now",
			len(running), strings.Join(running, ", "))
	}
	for _, id := range running {
		if err := r.Remove(id, true); err != nil {
			return err
		}
	}
	if err := lxcfs.New(filepath.Join(cfg.RunDir, "lxcfs"), log).Stop(); err != nil {
		return err
	}
	if err := rootfs.Detach(stageDir(cfg.RunDir)); err != nil {
		return err
	}
	if err := cleanupNetwork(cfg); err != nil {
		return err
	}
	r.retiring.Wait() // the containers of the sandboxes removed above, torn down in the background
	return cfg.Backend.Release()
}

// Close stops applying lifecycles (waiting for one being applied), destroys the warm pool's
// containers, waits for removed sandboxes' teardowns, and releases the network's host
// resources (its netlink sockets and held host ports; the rules stay) and the metadata
// database. Sandboxes keep running.
func (r *Runtime) Close() error {
	if r.endClosing != nil { // a runtime tests made by hand has none
		r.endClosing()
	}
	r.background.Wait()
	r.drainPool()
	if r.spares != nil {
		r.spares.close()
	}
	r.retiring.Wait()
	r.retrying.Wait() // after retiring's: only a removed sandbox's teardown starts a retry
	r.closeLimitViews()
	r.closeStage()
	if r.net != nil {
		r.net.Close()
	}
	return r.records.Close()
}

// Images lists the images sandboxes can be made from.
func (r *Runtime) Images() []api.Image {
	out := []api.Image{}
	for _, img := range r.images.Images() {
		i := api.Image{Name: img.Name, Description: img.Description, Warm: r.pool.readyCount(img.Name)}
		if img.OCI != nil {
			i.ID, i.Size = img.OCI.ID, img.OCI.Size
		}
		out = append(out, i)
	}
	return out
}

// image finds the image a create names, pulling it first as its pull policy says.
func (r *Runtime) image(ctx context.Context, name, pull string) (*rootfs.Image, error) {
	switch pull {
	case "", api.PullNever, api.PullMissing, api.PullAlways:
	default:
		return nil, api.Errorf(api.CodeInvalidArgument, "pull must be never, missing or always, not %q", pull)
	}
	img, err := r.images.Get(name)
	builtin := err == nil && img.OCI == nil
	if !builtin && (pull == api.PullAlways || (pull == api.PullMissing && errors.Is(err, rootfs.ErrNotFound))) {
		r.log.Info("pulling the image of a new sandbox", "image", name, "pull", pull)
		if _, err := r.images.OCI().Pull(ctx, name, oci.PullOptions{}); err != nil {
			return nil, imageError(err)
		}
		img, err = r.images.Get(name)
	}
	if err != nil {
		return nil, imageError(err)
	}
	return img, nil
}

// applyImageConfig makes an OCI image's config the request's defaults: its Env under the
// request's own, its WorkingDir and User when the request names none. It returns the image's
// id ("" for a built-in image) and, when the request asks to run it, the image's Entrypoint
// + Cmd (a 400 when it has neither).
func applyImageConfig(req *api.CreateSandboxRequest, img *rootfs.Image) (id string, entrypoint []string, err error) {
	if req.RunEntrypoint {
		if img.OCI != nil {
			entrypoint = slices.Concat(img.OCI.Config.Entrypoint, img.OCI.Config.Cmd)
		}
		if len(entrypoint) == 0 {
			return "", nil, api.Errorf(api.CodeInvalidArgument, "image %s has no Entrypoint or Cmd to run; create without runEntrypoint and start a process", img.Name)
		}
	}
	if img.OCI == nil {
		return "", nil, nil
	}
	cfg := img.OCI.Config
	if len(cfg.Env) > 0 {
		env := map[string]string{}
		for _, kv := range cfg.Env {
			// What a shell cannot set (a name with a dot, say) stays out of the sandbox's env.
			if k, v, ok := strings.Cut(kv, "="); ok && api.CheckEnvVar(k, v) == nil {
				env[k] = v
			}
		}
		maps.Copy(env, req.Env)
		req.Env = env
	}
	if req.Cwd == "" {
		req.Cwd = cfg.WorkingDir
	}
	if req.User == "" {
		req.User = cfg.User
	}
	return img.OCI.ID, entrypoint, nil
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
	if !api.ValidSandboxID(req.ID) {
		return nil, api.Errorf(api.CodeInvalidArgument, "invalid sandbox id %q: use 1-63 characters of a-z, 0-9 and '-', starting with a letter or digit", req.ID)
	}
	var snap *snapshotRecord
	if req.FromSnapshot != "" {
		var release func()
		var err error
		if snap, release, err = r.useSnapshot(&req); err != nil {
			return nil, err
		}
		defer release()
	}
	if req.Image == "" {
		req.Image = defaultImage
	}
	img, err := r.image(ctx, req.Image, req.Pull)
	if err != nil {
		return nil, err
	}
	lim, err := r.cfg.resolveLimits(&req.Limits)
	if err != nil {
		return nil, err
	}
	imageID, entrypoint, err := applyImageConfig(&req, img)
	if err != nil {
		return nil, err
	}
	if req.Cwd == "" {
		req.Cwd = defaultCwd
	}
	if err := checkCwd(req.Cwd); err != nil {
		return nil, err
	}
	if err := api.CheckEnv(req.Env); err != nil {
		return nil, err
	}
	if err := r.validateStorage(&req); err != nil {
		return nil, err
	}
	if err := r.checkCapabilities(&req); err != nil {
		return nil, err
	}
	if err := r.checkPermissions(&req); err != nil {
		return nil, err
	}
	network, err := requestedNetwork(req.Network)
	if err != nil {
		return nil, err
	}
	lifecycle, err := r.cfg.resolveLifecycle(req.Lifecycle)
	if err != nil {
		return nil, err
	}
	if err := api.CheckLabels(req.Labels); err != nil {
		return nil, err
	}
	sb, err := r.admit(req.ID)
	if err != nil {
		return nil, err
	}

	defer r.settled()
	began := time.Now()
	extras := extrasOf(&req)
	if snap != nil {
		extras.SnapshotLayers = snap.Layers
	}
	sc := r.takeWarm(img, extras)
	fromPool := sc != nil
	rec := record{
		Sandbox: api.Sandbox{
			ID: req.ID, Image: img.Name, Env: req.Env, Cwd: filepath.Clean(req.Cwd), User: req.User,
			Limits: req.Limits, Labels: req.Labels, CreatedAt: time.Now().UTC().Truncate(time.Millisecond),
			Workspace: req.Workspace, Mounts: req.Mounts, Network: network, Lifecycle: lifecycle,
			Capabilities: req.Capabilities, FromSnapshot: req.FromSnapshot, Permissions: req.Permissions,
		},
		Container:      "c-" + newID(),
		ImageID:        imageID,
		SnapshotLayers: extras.SnapshotLayers,
	}
	if fromPool {
		rec.Container = sc.inst.ID()
	}
	// The creating record is written (and fsync'd) while the container starts, or while a
	// warm one is bound: both mostly wait for the kernel and the agent. A crash before the
	// create ends leaves a creating record, which reconcile rolls back (with whatever exists of
	// its container and network), or, from the warm pool, a container without a record.
	inserted := make(chan error, 1)
	creating := rec // the start and bind change rec meanwhile
	go func() {
		sb.mu.Lock()
		defer sb.mu.Unlock()
		_, err := r.transition(sb, api.StatusCreating, func(next *record) { *next = creating })
		inserted <- err
	}()
	var startErr error
	if !fromPool {
		// Everything the sandbox needs of its container is known: its hostname, limits and
		// agent configuration go in with its start, and its network is attached while its
		// agent starts; bindAgent does the rest.
		sc, startErr = r.launch(ctx, rec.Container, img, lim, extras, false, &containerBoot{
			hostname:  rec.ID,
			agent:     &api.AgentConfig{Hostname: rec.ID, Env: rec.Env, Cwd: rec.Cwd, User: rec.User},
			meanwhile: func(sc *startedContainer) error { return r.attach(&rec, sc, lim) },
		})
	}
	started := time.Since(began)
	var bindErr error
	if startErr == nil {
		rec.PID = sc.inst.PID()
		sb.mu.Lock()
		sb.inst, sb.agent = sc.inst, sc.agent
		sb.mu.Unlock()
		r.recheckViews(sc)
		if fromPool {
			bindErr = r.attach(&rec, sc, lim)
		}
		if bindErr == nil {
			bindErr = r.bindAgent(ctx, &rec, sc, entrypoint)
		}
		if bindErr == nil && snap != nil && len(snap.State.Sessions) > 0 {
			bindErr = sc.agent.restoreState(ctx, api.SandboxState{Sessions: snap.State.Sessions})
		}
	}
	bound := time.Since(began)
	if err := <-inserted; err != nil {
		r.forget(sb)
		if startErr == nil {
			err = errors.Join(err, r.destroyContainer(sc.inst, func() error { return r.detachNetwork(rec.ID) }))
		} else {
			err = errors.Join(err, r.detachNetwork(rec.ID)) // the failed start left no container
		}
		return nil, err
	}
	if err := errors.Join(startErr, bindErr); err != nil {
		r.abortCreate(sb)
		if cerr := ctx.Err(); cerr != nil { // what failed was waiting for the client that left
			return nil, fmt.Errorf("create sandbox %s: its client gave up: %w", req.ID, cerr)
		}
		var apiErr *api.Error
		if errors.As(err, &apiErr) && apiErr.Code != api.CodeInternal {
			return nil, apiErr // the request's mistake (a cwd that cannot be made, no address left)
		}
		if startErr != nil {
			if noSpace(startErr) {
				// The host's: its disk image, layers or run files did not fit.
				return nil, api.Errorf(api.CodeInsufficientStorage, "start sandbox %s: the host has no room for it (%v); free space on that file system or remove sandboxes", req.ID, startErr)
			}
			// Whatever else failed, the create as a whole failed inside the daemon.
			return nil, api.Errorf(api.CodeInternal, "start sandbox %s: %v", req.ID, startErr)
		}
		return nil, api.Errorf(api.CodeInternal, "set up sandbox %s: %v", rec.ID, bindErr)
	}
	// A client that gave up meanwhile (its connection closed, its deadline passed) gets an
	// error, not the sandbox, which would otherwise run on with no one knowing of it (issue
	// 12). Checked last before the record says running: what is left is that write and the
	// answer's.
	if err := ctx.Err(); err != nil {
		r.abortCreate(sb)
		return nil, fmt.Errorf("create sandbox %s: its client gave up: %w", rec.ID, err)
	}
	// Its idle time counts from now: touched only once it runs, the idle loop could find it
	// running and idle since 1970, and pause or remove it at once.
	sb.touch()
	sb.mu.Lock()
	_, err = r.transition(sb, api.StatusRunning, func(next *record) { next.PID, next.Network = rec.PID, rec.Network })
	out := sb.rec.Sandbox
	sb.mu.Unlock()
	if err != nil {
		r.abortCreate(sb)
		return nil, err
	}
	r.watch(sb, sc.inst)
	// start: the container's (0 from the warm pool); bind: what followed, through the agent's
	// answer (and a warm one's network); record: the wait for the creating record and the
	// running one's write.
	r.log.Info("sandbox created", "sandbox", rec.ID, "image", rec.Image, "container", rec.Container, "pid", rec.PID,
		"warm", fromPool, "start", started, "bind", bound-started, "record", time.Since(began)-bound, "duration", time.Since(began))
	return &out, nil
}

// checkCwd refuses a sandbox working directory that is not absolute or that is in the kernel's
// or nsbox's own places (/proc/1/root/… would reach another root, and break every exec).
func checkCwd(cwd string) error {
	if !filepath.IsAbs(cwd) {
		return api.Errorf(api.CodeInvalidArgument, "cwd must be an absolute path, got %q", cwd)
	}
	for _, res := range reservedTargets {
		if within(filepath.Clean(cwd), res) {
			return api.Errorf(api.CodeInvalidArgument, "cwd %s is in %s, which is the kernel's or nsbox's; choose a directory such as one under /workspace or /tmp", cwd, res)
		}
	}
	return nil
}

// admit registers a new sandbox with the id, in no state yet: invisible to Get and List until
// its create records it, and refusing every other request meanwhile.
func (r *Runtime) admit(id string) (*sandbox, error) {
	r.mu.Lock()
	other := r.sandboxes[id]
	if other == nil {
		sb := &sandbox{id: id, rec: record{Sandbox: api.Sandbox{ID: id}}}
		r.sandboxes[id] = sb
		r.mu.Unlock()
		return sb, nil
	}
	r.mu.Unlock() // a sandbox's lock is never taken under r.mu (transition takes them the other way)
	switch state := other.snapshot().Status; state {
	case "", api.StatusCreating, api.StatusStopping:
		return nil, stateError(id, state, "try again")
	}
	return nil, api.Errorf(api.CodeConflict, "sandbox %q already exists", id)
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
	onOwnThread(func() { // unmounts, directory removals: see onOwnThread
		if inst != nil {
			err = r.destroyContainer(inst, detach)
		} else {
			err = r.destroyContainerID(container, detach)
		}
	})
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

// retireWait bounds how long a create waits for removed sandboxes' user namespace ids.
const retireWait = 10 * time.Second

// retire ends a sandbox being removed and answers before its processes are even dead: they
// are sent SIGKILL (none of them runs again), its record goes; then the rest goes in the
// background: once they are dead its network (the rules stay until then, or the dying
// sandbox's traffic would no longer be filtered; a create that takes the id again waits for
// it), and its container's cgroups, mounts, disk and directories (named after the container,
// which no create reuses). A crash before they are gone leaves a container and a network
// without a record, which the next daemon's reconcile removes; Close waits for them. When the
// record cannot go, the processes are waited for and the network detached before the error
// is returned, as they were before.
func (r *Runtime) retire(sb *sandbox) error {
	sb.mu.Lock()
	inst, container := sb.inst, sb.rec.container()
	sb.mu.Unlock()
	if inst != nil {
		inst.SendKill()
	}
	// The teardown is counted before the sandbox is recorded removed, not after: whoever sees
	// it gone (lookup, under r.mu, which transition takes after the record is deleted) and then
	// waits for retiring waits for its teardown too. Counted after, that Wait could come first
	// and miss it (sync.WaitGroup: an Add from zero must happen before the Wait; the race
	// detector caught Close's Wait against an idle removal's Add in TestLifecycles).
	r.retiring.Add(1)
	r.retiringCount.Add(1)
	release := r.releaseNetwork(sb.id)
	sb.mu.Lock()
	r.forgetAgent(sb)
	sb.inst = nil
	_, err := r.transition(sb, stateRemoved, nil)
	sb.mu.Unlock()
	if err != nil {
		if inst != nil {
			onOwnThread(inst.Kill)
		}
		release.done(r.detachNetwork(sb.id))
		r.retiringCount.Add(-1)
		r.retiring.Done()
		return err
	}
	go func() {
		defer r.retiring.Done()
		defer r.retiringCount.Add(-1)
		defer r.settled() // the teardown's garbage is freed with the rest, after it
		detach := func() error {
			err := r.detachNetwork(sb.id)
			release.done(err)
			return err
		}
		var err error
		onOwnThread(func() { // unmounts, directory removals: see onOwnThread
			if inst != nil {
				err = r.destroyContainer(inst, detach)
			} else {
				err = r.destroyContainerID(container, detach)
			}
		})
		if err != nil {
			r.log.Error("tear down a removed sandbox's container; the next daemon start removes what is left", "sandbox", sb.id, "container", container, "err", err)
		}
	}()
	return nil
}

// abortCreate undoes a create that failed part-way (teardown).
func (r *Runtime) abortCreate(sb *sandbox) {
	if err := r.teardown(sb, "its create failed and not everything could be removed: "); err != nil {
		r.log.Error("clean up after failed create", "sandbox", sb.id, "err", err)
	}
}

// attach is the part of binding a started container to the sandbox rec describes that is done
// from the host: its network, its hostname, and its limits when they differ from the ones it
// was started with. bindAgent does the rest.
func (r *Runtime) attach(rec *record, sc *startedContainer, lim backend.Limits) error {
	if err := r.connectNetwork(rec, sc); err != nil {
		return err
	}
	if sc.hostname != rec.ID {
		if err := sc.inst.SetHostname(rec.ID); err != nil {
			return err
		}
	}
	if lim != sc.limits {
		began := time.Now()
		if err := sc.inst.SetLimits(lim); err != nil {
			return err
		}
		r.log.Debug("limits set", "container", sc.inst.ID(), "duration", time.Since(began))
	}
	return nil
}

// bindAgent is the part of binding a started container to the sandbox rec describes that is
// done through the agent: its configuration (hostname, environment, working directory, user;
// unless it took them at its start), its watch stream (agentwatch.go), and entrypoint, when
// given, started once that stream is open, as the process api.EntrypointProcess (one that
// cannot start is a failed process, not an error).
func (r *Runtime) bindAgent(ctx context.Context, rec *record, sc *startedContainer, entrypoint []string) error {
	// The create does not wait for the watch stream: until it is open, stats ask the agent
	// (countsOf); its first notice counts what runs then (the default session, if it started
	// already). Only an entrypoint waits, so that its exit reaches the events.
	follow := r.followAgent(rec.ID, sc.inst, sc.agent)
	if !sc.configured {
		if err := sc.agent.configure(ctx, api.AgentConfig{Hostname: rec.ID, Env: rec.Env, Cwd: rec.Cwd, User: rec.User}); err != nil {
			return err
		}
	}
	if len(entrypoint) == 0 {
		return nil
	}
	if err := awaitFollow(ctx, follow); err != nil {
		return err
	}
	p, err := sc.agent.startProcess(ctx, api.StartProcessRequest{ID: api.EntrypointProcess, Argv: entrypoint})
	if err != nil {
		return fmt.Errorf("start the image's entrypoint: %w", err)
	}
	r.log.Info("entrypoint started", "sandbox", rec.ID, "argv", entrypoint, "status", p.Status, "err", p.Error)
	return nil
}

// Get returns one sandbox.
func (r *Runtime) Get(id string) (*api.Sandbox, error) {
	sb, err := r.lookup(id)
	if err != nil {
		return nil, err
	}
	rec := sb.snapshot()
	if !rec.exists() {
		return nil, api.Errorf(api.CodeNotFound, "sandbox %q not found", id)
	}
	return &rec.Sandbox, nil
}

// List returns every sandbox, ordered by id.
func (r *Runtime) List() []api.Sandbox {
	out := []api.Sandbox{}
	for _, rec := range r.snapshots() {
		if rec.exists() {
			out = append(out, rec.Sandbox)
		}
	}
	slices.SortFunc(out, func(a, b api.Sandbox) int { return strings.Compare(a.ID, b.ID) })
	return out
}

// snapshots returns a copy of every known sandbox's record as it is now (those not yet recorded
// have no status).
func (r *Runtime) snapshots() []record {
	all := r.all()
	out := make([]record, 0, len(all))
	for _, sb := range all {
		out = append(out, sb.snapshot())
	}
	return out
}

// all returns every known sandbox (a sandbox's lock is never taken under r.mu: lock each only
// after this returns).
func (r *Runtime) all() []*sandbox {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]*sandbox, 0, len(r.sandboxes))
	for _, sb := range r.sandboxes {
		out = append(out, sb)
	}
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
	defer r.settled()
	if !force && (from == api.StatusRunning || from == api.StatusPaused) && inst != nil {
		r.stop(sb, inst)
	}
	if err := r.retire(sb); err != nil {
		return fmt.Errorf("remove sandbox %s: %w", id, err)
	}
	r.forgetPreview(id, 0)
	if r.cfg.Removed != nil {
		r.cfg.Removed(id)
	}
	r.log.Info("sandbox removed", "sandbox", id)
	return nil
}

// stop asks a sandbox's agent to end everything in it and waits up to stopGrace for every
// other process in it to exit. (The agent ignores signals: sandbox root could send them too.)
// The agent is left to retire, which kills it and waits for the container's teardown in the
// background: the agent's own exit, as the pid namespace's PID 1, is that whole teardown.
func (r *Runtime) stop(sb *sandbox, inst backend.Instance) {
	sb.mu.Lock()
	agent := sb.agent
	sb.mu.Unlock()
	if agent == nil {
		return // its agent exited meanwhile
	}
	ctx, cancel := context.WithTimeout(context.Background(), stopGrace)
	defer cancel()
	stopped, err := agent.shutdown(ctx)
	switch {
	case err != nil && ctx.Err() != nil:
		r.log.Info("the sandbox did not stop within its grace period; killing it", "sandbox", sb.id, "grace", stopGrace)
		return
	case err != nil:
		r.log.Warn("ask the agent to shut down; killing it", "sandbox", sb.id, "err", err)
		return
	case stopped:
		return
	}
	select { // an agent from before the 204 (its sandbox outlived a daemon upgrade)
	case <-inst.Exited():
	case <-ctx.Done():
	}
}

// destroyContainer kills a container's processes, then removes it and everything it had,
// whether or not it was ever bound to a sandbox.
func (r *Runtime) destroyContainer(inst backend.Instance, alongside ...func() error) error {
	onOwnThread(inst.Kill)
	err := r.destroyContainerID(inst.ID(), alongside...)
	inst.Close()
	return err
}

// destroyContainerID removes a container, its storage and its directories. Once its
// processes are dead, the backend's destroy, the storage and what alongside removes (the
// sandbox's network) go at the same time; the directories last. The run dir stays when the
// backend could not destroy the container (a cgroup that would not go): it is how the next
// try, or the next daemon's reconcile, finds what is left.
func (r *Runtime) destroyContainerID(id string, alongside ...func() error) error {
	done := make(chan error, len(alongside))
	for _, task := range alongside {
		go func() { done <- task() }()
	}
	destroyed := make(chan error, 1)
	go onOwnThread(func() {
		err := r.backend.Destroy(id)
		if err == nil && r.ids != nil {
			r.ids.release(id) // only once nothing of the container can hold the ids
		}
		destroyed <- wrapErr("destroy container", err)
	})
	errs := []error{r.releaseStorage(id)}
	// The backend's mounts in the run dir are gone before the directories go.
	if err := <-destroyed; err != nil {
		errs = append(errs, err)
	} else {
		errs = append(errs, r.removeRunDirs(id))
	}
	errs = append(errs, os.RemoveAll(r.sandboxDataDir(id)))
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
