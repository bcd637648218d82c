// Package nsbox is the sandbox runtime and the daemon's core. It creates each sandbox as a
// libcontainer container on an overlay root, keeps the sandboxes' records in bbolt, reconciles
// records with what is really running when the daemon starts, relays requests to each
// sandbox's agent, and serves the HTTP API (server.go).
package nsbox

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/opencontainers/runc/libcontainer"
	"golang.org/x/sys/unix"

	"github.com/nsbox/nsbox/api"
	sandboxnet "github.com/nsbox/nsbox/net"
	"github.com/nsbox/nsbox/proxy"
	"github.com/nsbox/nsbox/rootfs"
)

// Config is how a daemon lays out its state and what it gives sandboxes by default.
type Config struct {
	DataDir      string // metadata, images, sandbox upper dirs (e.g. /var/lib/nsbox)
	RunDir       string // agent sockets, libcontainer state (e.g. /run/nsbox)
	CgroupParent string // the cgroup every sandbox lives under (e.g. nsbox)
	AgentBin     string // host path of the nsbox binary, mounted into sandboxes as the agent
	Version      string
	Seccomp      bool

	DefaultCPUs     float64
	DefaultMemoryMB int64
	DefaultPids     int64

	// WarmPool is how many started containers to keep ready per image (pool.go).
	WarmPool map[string]int

	Network NetworkConfig
	// ProxyDomain and ProxyPort are where the preview proxy answers: exposed TCP ports' URLs
	// are http://{port}-{id}[-{token}].{ProxyDomain}[:{ProxyPort}]. Empty: URLs name host ports.
	ProxyDomain string
	ProxyPort   int

	hostCPUs     int
	hostMemoryMB int64
}

// Runtime creates, tracks and removes sandboxes.
type Runtime struct {
	cfg    Config
	store  *Store
	images *rootfs.Store
	log    *slog.Logger

	pool          *warmPool
	defaultLimits limits // what a sandbox that asks for no limits gets

	mu     sync.Mutex
	busy   map[string]string       // ids being created, removed or updated right now, and which
	agents map[string]*agentClient // one client per running container, by container id

	net      *sandboxnet.Manager
	netLocks idLocks      // network changes (network.go)
	envLocks idLocks      // PATCH …/env (env.go)
	preview  *proxy.Proxy // the preview proxy, when the daemon serves one (preview.go)
}

var idPattern = regexp.MustCompile(`^[a-z0-9][a-z0-9-]{0,62}$`)

const (
	defaultImage = "host"
	defaultCwd   = "/workspace"
	defaultPath  = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
	// stopGrace is how long a sandbox gets to stop after SIGTERM before it is killed.
	stopGrace = 10 * time.Second
	// agentReadyTimeout bounds how long a new sandbox's agent may take to answer.
	agentReadyTimeout = 10 * time.Second
)

// Open prepares the state directories, images and metadata, and reconciles the records with
// the containers that exist.
func Open(cfg Config, log *slog.Logger) (*Runtime, error) {
	for _, d := range []string{cfg.DataDir, cfg.RunDir, filepath.Join(cfg.RunDir, "sandboxes"), filepath.Join(cfg.DataDir, "sandboxes")} {
		if err := os.MkdirAll(d, 0o711); err != nil {
			return nil, fmt.Errorf("make state dir %s: %w", d, err)
		}
	}
	if rel, err := filepath.Rel(filepath.Dir(cfg.AgentBin), cfg.RunDir); err == nil && !strings.HasPrefix(rel, "..") {
		// libcontainer would copy the binary's whole directory on every start.
		return nil, fmt.Errorf("run dir %s must not be inside the directory of the nsbox binary %s", cfg.RunDir, cfg.AgentBin)
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
	store, err := OpenStore(filepath.Join(cfg.DataDir, "meta.db"))
	if err != nil {
		return nil, err
	}
	r := &Runtime{cfg: cfg, store: store, images: images, log: log, busy: map[string]string{}, agents: map[string]*agentClient{},
		pool: newWarmPool(cfg.WarmPool)}
	if r.defaultLimits, err = cfg.resolveLimits(&api.Limits{}); err != nil {
		store.Close()
		return nil, fmt.Errorf("default limits: %w", err)
	}
	if err := r.openNetwork(); err != nil {
		store.Close()
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
	return r.store.Close()
}

// Images lists the images sandboxes can be made from.
func (r *Runtime) Images() []api.Image {
	out := []api.Image{}
	for _, img := range r.images.Images() {
		out = append(out, api.Image{Name: img.Name, Description: img.Description, Warm: r.pool.readyCount(img.Name)})
	}
	return out
}

func (r *Runtime) stateRoot() string { return filepath.Join(r.cfg.RunDir, "containers") }

// The run and data dirs and the agent socket are named by the container id (record.container).
func (r *Runtime) sandboxRunDir(container string) string {
	return filepath.Join(r.cfg.RunDir, "sandboxes", container)
}
func (r *Runtime) sandboxDataDir(container string) string {
	return filepath.Join(r.cfg.DataDir, "sandboxes", container)
}
func (r *Runtime) agentSocket(container string) string {
	return filepath.Join(r.sandboxRunDir(container), "agent.sock")
}

// What a claim on a sandbox id is for.
const (
	claimCreate = "created"
	claimRemove = "removed"
	// claimRecord is a short update of the record (a failed agent); others wait it out.
	claimRecord = "recorded as failed"
)

// claim marks id as busy for the duration of a create, a remove or a record update. A create
// or remove in progress is a conflict; a record update is waited for. A record update waits
// for whatever holds the id (a create that is still answering, a remove), and then finds the
// record as they left it.
func (r *Runtime) claim(id, why string) (release func(), err error) {
	for waited := time.Duration(0); ; waited += time.Millisecond {
		r.mu.Lock()
		held, busy := r.busy[id]
		if !busy {
			r.busy[id] = why
			r.mu.Unlock()
			return func() {
				r.mu.Lock()
				delete(r.busy, id)
				r.mu.Unlock()
			}, nil
		}
		r.mu.Unlock()
		switch {
		case why == claimRecord && waited < 2*stopGrace:
		case held == claimRecord && waited < time.Second:
		default:
			return nil, api.Errorf(api.CodeConflict, "sandbox %q is being %s; try again", id, held)
		}
		time.Sleep(time.Millisecond)
	}
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
	network, err := requestedNetwork(req.Network)
	if err != nil {
		return nil, err
	}
	for k := range req.Labels {
		if k == "" {
			return nil, api.Errorf(api.CodeInvalidArgument, "label names must not be empty")
		}
	}
	release, err := r.claim(req.ID, claimCreate)
	if err != nil {
		return nil, err
	}
	defer release()
	if _, err := r.store.Get(req.ID); err == nil {
		return nil, api.Errorf(api.CodeConflict, "sandbox %q already exists", req.ID)
	} else if !api.IsCode(err, api.CodeNotFound) {
		return nil, err
	}

	began := time.Now()
	w, fromPool, err := r.acquire(ctx, img, lim, storageOf(&req))
	if err != nil {
		// Whatever failed, the create as a whole failed inside the daemon.
		return nil, api.Errorf(api.CodeInternal, "start sandbox %s: %v", req.ID, err)
	}
	defer w.release()
	rec := &record{
		Sandbox: api.Sandbox{
			ID: req.ID, Image: img.Name, Status: api.StatusCreating, Env: req.Env, Cwd: filepath.Clean(req.Cwd),
			Limits: req.Limits, Labels: req.Labels, CreatedAt: time.Now().UTC().Truncate(time.Millisecond), PID: w.pid,
			Workspace: req.Workspace, Mounts: req.Mounts, Network: network,
		},
		Container:  w.id,
		CgroupPath: w.cgroupPath,
	}
	// The creating record is written (and fsync'd) while bind works: bind mostly waits for
	// the kernel and the agent. A crash before either ends leaves a container without a
	// record, or a creating record, and reconcile removes both.
	inserted := make(chan error, 1)
	creating := *rec
	go func() { inserted <- r.store.Insert(&creating) }()
	bindErr := r.bind(ctx, rec, w, lim)
	if err := <-inserted; err != nil {
		r.discard(w)
		return nil, errors.Join(err, r.detachNetwork(rec.ID))
	}
	if bindErr != nil {
		r.abortCreate(rec)
		var apiErr *api.Error
		if errors.As(bindErr, &apiErr) && apiErr.Code != api.CodeInternal {
			return nil, apiErr // the request's mistake (a cwd that cannot be made, no address left)
		}
		return nil, api.Errorf(api.CodeInternal, "set up sandbox %s: %v", rec.ID, bindErr)
	}
	rec.Status = api.StatusRunning
	if err := r.store.Put(rec); err != nil {
		r.abortCreate(rec)
		return nil, fmt.Errorf("record sandbox %s: %w", rec.ID, err)
	}
	r.watchAgent(rec.ID, rec.PID)
	r.log.Info("sandbox created", "sandbox", rec.ID, "image", rec.Image, "container", rec.Container, "pid", rec.PID,
		"warm", fromPool, "duration", time.Since(began))
	return &rec.Sandbox, nil
}

// abortCreate undoes a create that failed part-way: the container, its files and the record.
func (r *Runtime) abortCreate(rec *record) {
	if err := r.destroy(rec); err != nil {
		// Keep the record, failed, so that a remove can try again (and list what is left).
		r.log.Error("clean up after failed create", "sandbox", rec.ID, "err", err)
		rec.Status, rec.Error, rec.PID = api.StatusFailed, "its create failed and not everything could be removed: "+err.Error(), 0
		if err := r.store.Put(rec); err != nil {
			r.log.Error("record failed create", "sandbox", rec.ID, "err", err)
		}
		return
	}
	if err := r.store.Delete(rec.ID); err != nil {
		r.log.Error("forget failed create", "sandbox", rec.ID, "err", err)
	}
}

// startedContainer is a container whose agent answers, before it is bound to a sandbox.
type startedContainer struct {
	id         string // the libcontainer id
	image      string
	pid        int // the agent's host pid
	pidfd      int // the agent, held until bind is done: a dead agent is noticed, its pid never reused meanwhile
	cgroupPath string
	limits     limits
	storage    storageSpec
}

// startContainer mounts a new container's root (and its storage), starts the container with
// the agent as PID 1 and waits until the agent answers. The container is nobody's yet: bind
// makes it a sandbox. On failure nothing of it is left.
func (r *Runtime) startContainer(ctx context.Context, img *rootfs.Image, lim limits, st storageSpec) (*startedContainer, error) {
	sc := &startedContainer{id: "c-" + newID(), image: img.Name, limits: lim, storage: st, pidfd: -1}
	sc.cgroupPath = cgroupPath(r.cfg.CgroupParent, sc.id)
	var phases startPhases
	pid, err := r.runContainer(ctx, sc, img, &phases)
	if err == nil {
		sc.pid = pid
		sc.pidfd, err = unix.PidfdOpen(pid, 0)
		err = wrapErr("pidfd of the agent", err)
	}
	if err != nil {
		if err := r.destroyContainer(sc.id, sc.cgroupPath); err != nil {
			r.log.Error("clean up after failed start", "container", sc.id, "err", err)
		}
		return nil, err
	}
	r.log.Debug("container started", "container", sc.id, "image", img.Name, "pid", pid,
		"root", phases.root, "container", phases.container, "agent", phases.agent)
	return sc, nil
}

// startPhases is how long each part of a start took, for the log.
type startPhases struct{ root, container, agent time.Duration }

// runContainer does the work of startContainer and returns the agent's host pid.
func (r *Runtime) runContainer(ctx context.Context, sc *startedContainer, img *rootfs.Image, phases *startPhases) (int, error) {
	began := time.Now()
	runDir := r.sandboxRunDir(sc.id)
	if err := os.MkdirAll(runDir, 0o700); err != nil {
		return 0, fmt.Errorf("make run dir: %w", err)
	}
	layerDir, err := r.prepareLayers(sc.id, sc.storage)
	if err != nil {
		return 0, err
	}
	merged := filepath.Join(runDir, "rootfs")
	if err := rootfs.MountOverlay(img.Layers, filepath.Join(layerDir, "upper"), filepath.Join(layerDir, "work"), merged); err != nil {
		return 0, err
	}
	// Once the container runs, its mount namespace holds the root (and the workspace); the host
	// needs no mount.
	defer func() {
		if err := errors.Join(rootfs.Detach(merged), r.detachWorkspace(sc.id)); err != nil {
			r.log.Warn("detach container root", "container", sc.id, "err", err)
		}
	}()
	if err := os.MkdirAll(filepath.Join(merged, defaultCwd), 0o755); err != nil {
		return 0, fmt.Errorf("make cwd %s: %w", defaultCwd, err)
	}
	mounts, err := r.storageMounts(sc.id, sc.storage)
	if err != nil {
		return 0, err
	}
	phases.root = time.Since(began)

	// The agent's listener is made here and handed over as fd 3: its path is on the host only.
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: r.agentSocket(sc.id), Net: "unix"})
	if err != nil {
		return 0, fmt.Errorf("listen for agent: %w", err)
	}
	ln.SetUnlinkOnClose(false)
	lnFile, err := ln.File()
	ln.Close()
	if err != nil {
		return 0, fmt.Errorf("agent listener fd: %w", err)
	}
	defer lnFile.Close()
	logFile, err := os.OpenFile(filepath.Join(runDir, "agent.log"), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return 0, fmt.Errorf("open agent log: %w", err)
	}
	defer logFile.Close()

	config := containerConfig(containerSpec{
		ID: sc.id, Rootfs: merged, Image: img, AgentBin: r.cfg.AgentBin,
		CgroupPath: sc.cgroupPath, Limits: sc.limits, Seccomp: r.cfg.Seccomp, MaxOpenFiles: maxOpenFiles(),
		Mounts: mounts,
	})
	if err := r.mountNetworkFiles(sc.id, config); err != nil {
		return 0, err
	}
	c, err := libcontainer.Create(r.stateRoot(), sc.id, config)
	if err != nil {
		return 0, fmt.Errorf("create container: %w", err)
	}
	proc := &libcontainer.Process{
		Args:       []string{AgentPath, "agent", "--listen-fd", "3"},
		Env:        agentEnv(),
		Cwd:        defaultCwd,
		Stdout:     logFile,
		Stderr:     logFile,
		ExtraFiles: []*os.File{lnFile},
		Init:       true,
	}
	if err := c.Run(proc); err != nil {
		return 0, fmt.Errorf("start agent: %w", err)
	}
	phases.container = time.Since(began) - phases.root
	// The agent is this daemon's child until the daemon exits; reap it when it ends.
	go func() { _, _ = proc.Wait() }()
	pid, err := proc.Pid()
	if err != nil {
		return 0, fmt.Errorf("agent pid: %w", err)
	}
	readyCtx, cancel := context.WithTimeout(ctx, agentReadyTimeout)
	defer cancel()
	if _, err := r.containerAgent(sc.id).health(readyCtx); err != nil {
		return 0, fmt.Errorf("agent did not come up: %v; agent log: %q", err, tail(logFile.Name(), 2048))
	}
	phases.agent = time.Since(began) - phases.root - phases.container
	return pid, nil
}

// bind makes a started container the sandbox rec describes: its hostname, its limits when
// they differ from the ones it was started with, its network, and its agent's hostname,
// sandbox environment and working directory.
func (r *Runtime) bind(ctx context.Context, rec *record, sc *startedContainer, lim limits) error {
	if !sc.alive() {
		return fmt.Errorf("the container's agent (pid %d) has exited", sc.pid)
	}
	if err := setHostname(sc.pidfd, rec.ID); err != nil {
		return err
	}
	if lim != sc.limits {
		if err := r.setLimits(sc.id, lim); err != nil {
			return err
		}
	}
	if err := r.connectNetwork(rec, sc); err != nil {
		return err
	}
	return r.containerAgent(sc.id).configure(ctx, api.AgentConfig{Hostname: rec.ID, Env: rec.Env, Cwd: rec.Cwd})
}

// agentEnv is the environment an agent starts with: the defaults, under the hostname and the
// sandbox's own env, which the agent gets when its container is bound to a sandbox.
func agentEnv() []string {
	env := map[string]string{"PATH": defaultPath, "HOME": "/root", "TERM": "xterm-256color"}
	var out []string
	for _, k := range slices.Sorted(maps.Keys(env)) {
		out = append(out, k+"="+env[k])
	}
	return out
}

// Get returns one sandbox.
func (r *Runtime) Get(id string) (*api.Sandbox, error) {
	rec, err := r.store.Get(id)
	if err != nil {
		return nil, err
	}
	return &rec.Sandbox, nil
}

// List returns every sandbox, ordered by id.
func (r *Runtime) List() ([]api.Sandbox, error) {
	recs, err := r.store.List()
	if err != nil {
		return nil, err
	}
	out := make([]api.Sandbox, 0, len(recs))
	for _, rec := range recs {
		out = append(out, rec.Sandbox)
	}
	return out, nil
}

// Remove stops a sandbox and deletes everything it had. Without force its processes get
// SIGTERM and stopGrace to exit before they are killed.
func (r *Runtime) Remove(id string, force bool) error {
	release, err := r.claim(id, claimRemove)
	if err != nil {
		return err
	}
	defer release()
	rec, err := r.store.Get(id)
	if err != nil {
		return err
	}
	if !force && rec.Status == api.StatusRunning {
		r.stop(rec)
	}
	if err := r.destroy(rec); err != nil {
		return fmt.Errorf("remove sandbox %s: %w", id, err)
	}
	if err := r.store.Delete(id); err != nil {
		return fmt.Errorf("forget sandbox %s: %w", id, err)
	}
	r.forgetPreview(id, 0)
	r.log.Info("sandbox removed", "sandbox", id)
	return nil
}

// stop asks the agent to end everything in the sandbox and waits up to stopGrace for it.
func (r *Runtime) stop(rec *record) {
	c, err := libcontainer.Load(r.stateRoot(), rec.container())
	if err != nil {
		return
	}
	state, err := c.State()
	if err != nil {
		return
	}
	pidfd, err := unix.PidfdOpen(state.InitProcessPid, 0)
	if err != nil {
		return
	}
	defer unix.Close(pidfd)
	if err := c.Signal(unix.SIGTERM); err != nil {
		return
	}
	waitPidfd(pidfd, stopGrace)
}

// destroy kills a sandbox's processes and removes its container, cgroup, mounts and
// directories. It copes with every partial state a crash can leave.
func (r *Runtime) destroy(rec *record) error {
	// The network's rules go only once the sandbox's processes are dead: before, its traffic
	// would no longer be filtered.
	return r.destroyContainer(rec.container(), rec.CgroupPath, func() error { return r.detachNetwork(rec.ID) })
}

// destroyContainer removes a container and everything it had, whether or not it was ever
// bound to a sandbox. Once its processes are dead, the cgroups and state, the files, and what
// alongside removes (the sandbox's network) go at the same time.
func (r *Runtime) destroyContainer(id, cgroup string, alongside ...func() error) error {
	r.forgetAgent(id)
	var errs []error
	done := make(chan error, len(alongside)+1)
	tasks := 0
	start := func(task func() error) {
		tasks++
		go func() { done <- task() }()
	}
	c, err := libcontainer.Load(r.stateRoot(), id)
	switch {
	case err == nil:
		kill(c)
		start(func() error { return wrapErr("destroy container", c.Destroy()) })
	case errors.Is(err, libcontainer.ErrNotExist):
		// No (complete) container: remove whatever cgroup and state a crash left.
		errs = append(errs, removeCgroup(cgroup), os.RemoveAll(filepath.Join(r.stateRoot(), id)))
	default:
		errs = append(errs, fmt.Errorf("load container: %w", err), removeCgroup(cgroup),
			os.RemoveAll(filepath.Join(r.stateRoot(), id)))
	}
	for _, task := range alongside {
		start(task)
	}
	errs = append(errs,
		r.releaseStorage(id),
		rootfs.Detach(filepath.Join(r.sandboxRunDir(id), "rootfs")),
		os.RemoveAll(r.sandboxRunDir(id)),
		os.RemoveAll(r.sandboxDataDir(id)),
	)
	for range tasks {
		errs = append(errs, <-done)
	}
	return errors.Join(errs...)
}

// kill kills a container's init (and with it its pid namespace) and waits for it to be gone.
func kill(c *libcontainer.Container) {
	if state, err := c.State(); err == nil && state.InitProcessPid > 0 {
		if pidfd, err := unix.PidfdOpen(state.InitProcessPid, 0); err == nil {
			_ = unix.PidfdSendSignal(pidfd, unix.SIGKILL, nil, 0)
			waitPidfd(pidfd, 10*time.Second)
			unix.Close(pidfd)
		}
	}
}

// wrapErr wraps err with what failed, or is nil.
func wrapErr(what string, err error) error {
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	return nil
}

// waitPidfd waits until the process behind pidfd exits or timeout passes.
func waitPidfd(pidfd int, timeout time.Duration) {
	deadline := time.Now().Add(timeout)
	for {
		left := time.Until(deadline)
		if left <= 0 {
			return
		}
		fds := []unix.PollFd{{Fd: int32(pidfd), Events: unix.POLLIN}}
		n, err := unix.Poll(fds, int(left.Milliseconds())+1)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil || n > 0 {
			return
		}
	}
}

// runningAgent returns the agent of a sandbox that is running, or why there is none.
func (r *Runtime) runningAgent(id string) (*agentClient, *record, error) {
	rec, err := r.store.Get(id)
	if err != nil {
		return nil, nil, err
	}
	switch rec.Status {
	case api.StatusCreating:
		return nil, nil, api.Errorf(api.CodeConflict, "sandbox %q is still being created; try again when the create has answered", id)
	case api.StatusFailed:
		return nil, nil, api.Errorf(api.CodeConflict, "sandbox %q has failed (%s); remove it and create a new one", id, rec.Error)
	}
	return r.agentOf(rec), rec, nil
}

// agentFailure turns an unreachable agent into the reason the sandbox failed, when it did.
func (r *Runtime) agentFailure(ctx context.Context, rec *record, err error) error {
	if api.IsCode(err, api.CodeUnavailable) && ctx.Err() == nil {
		if reason := r.checkRunning(rec); reason != "" {
			return api.Errorf(api.CodeConflict, "sandbox %q has failed (%s); remove it and create a new one", rec.ID, reason)
		}
	}
	return err
}

func newID() string { return randomHex(6) }

// randomHex is n random bytes from crypto/rand in lowercase hex.
func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// tail returns up to the last n bytes of a file, for error messages.
func tail(path string, n int64) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	if fi, err := f.Stat(); err == nil && fi.Size() > n {
		_, _ = f.Seek(fi.Size()-n, 0)
	}
	data, _ := io.ReadAll(f)
	return strings.TrimSpace(string(data))
}
