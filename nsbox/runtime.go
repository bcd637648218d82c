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

	mu     sync.Mutex
	busy   map[string]bool         // ids being created or removed right now
	agents map[string]*agentClient // one client per running sandbox

	net      *sandboxnet.Manager
	netLocks netLocks
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
	r := &Runtime{cfg: cfg, store: store, images: images, log: log, busy: map[string]bool{}, agents: map[string]*agentClient{}}
	if err := r.openNetwork(); err != nil {
		store.Close()
		return nil, err
	}
	if err := r.reconcile(); err != nil {
		r.Close()
		return nil, fmt.Errorf("reconcile sandboxes: %w", err)
	}
	return r, nil
}

// Close releases the metadata database and the network's host resources (its netlink sockets
// and held host ports; the rules stay). Sandboxes keep running.
func (r *Runtime) Close() error {
	r.net.Close()
	return r.store.Close()
}

// Images lists the images sandboxes can be made from.
func (r *Runtime) Images() []api.Image {
	out := []api.Image{}
	for _, img := range r.images.Images() {
		out = append(out, api.Image{Name: img.Name, Description: img.Description})
	}
	return out
}

func (r *Runtime) stateRoot() string { return filepath.Join(r.cfg.RunDir, "containers") }
func (r *Runtime) sandboxRunDir(id string) string {
	return filepath.Join(r.cfg.RunDir, "sandboxes", id)
}
func (r *Runtime) sandboxDataDir(id string) string {
	return filepath.Join(r.cfg.DataDir, "sandboxes", id)
}
func (r *Runtime) agentSocket(id string) string {
	return filepath.Join(r.sandboxRunDir(id), "agent.sock")
}

// claim marks id as busy for the duration of a create or remove.
func (r *Runtime) claim(id string) (release func(), err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.busy[id] {
		return nil, api.Errorf(api.CodeConflict, "sandbox %q is being created or removed; try again", id)
	}
	r.busy[id] = true
	return func() {
		r.mu.Lock()
		delete(r.busy, id)
		r.mu.Unlock()
	}, nil
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
	for k := range req.Labels {
		if k == "" {
			return nil, api.Errorf(api.CodeInvalidArgument, "label names must not be empty")
		}
	}
	release, err := r.claim(req.ID)
	if err != nil {
		return nil, err
	}
	defer release()

	rec := &record{
		Sandbox: api.Sandbox{
			ID: req.ID, Image: img.Name, Status: api.StatusCreating, Env: req.Env, Cwd: filepath.Clean(req.Cwd),
			Limits: req.Limits, Labels: req.Labels, CreatedAt: time.Now().UTC().Truncate(time.Millisecond),
		},
		CgroupPath: cgroupPath(r.cfg.CgroupParent, req.ID),
	}
	if rec.Network, err = requestedNetwork(req.Network); err != nil {
		return nil, err
	}
	if err := r.store.Insert(rec); err != nil {
		return nil, err
	}
	var phases startPhases
	pid, err := r.start(ctx, rec, img, lim, &phases)
	if err != nil {
		r.abortCreate(rec)
		// Whatever failed, the create as a whole failed inside the daemon.
		return nil, api.Errorf(api.CodeInternal, "start sandbox %s: %v", rec.ID, err)
	}
	rec.Status, rec.PID = api.StatusRunning, pid
	if err := r.store.Put(rec); err != nil {
		r.abortCreate(rec)
		return nil, fmt.Errorf("record sandbox %s: %w", rec.ID, err)
	}
	r.watchAgent(rec.ID, pid)
	r.log.Info("sandbox created", "sandbox", rec.ID, "image", rec.Image, "pid", pid,
		"root", phases.root, "container", phases.container, "agent", phases.agent)
	return &rec.Sandbox, nil
}

// abortCreate undoes a create that failed part-way: the container, its files and the record.
func (r *Runtime) abortCreate(rec *record) {
	if err := errors.Join(r.destroy(rec), r.store.Delete(rec.ID)); err != nil {
		r.log.Error("clean up after failed create", "sandbox", rec.ID, "err", err)
	}
}

// startPhases is how long each part of a start took, for the log.
type startPhases struct{ root, container, agent time.Duration }

// start mounts the sandbox's root, starts its container with the agent as PID 1 and waits
// until the agent answers. It returns the agent's host pid.
func (r *Runtime) start(ctx context.Context, rec *record, img *rootfs.Image, lim limits, phases *startPhases) (int, error) {
	began := time.Now()
	runDir, dataDir := r.sandboxRunDir(rec.ID), r.sandboxDataDir(rec.ID)
	if err := os.MkdirAll(runDir, 0o700); err != nil {
		return 0, fmt.Errorf("make run dir: %w", err)
	}
	merged := filepath.Join(runDir, "rootfs")
	if err := rootfs.MountOverlay(img.Layers, filepath.Join(dataDir, "upper"), filepath.Join(dataDir, "work"), merged); err != nil {
		return 0, err
	}
	// Once the container runs, its mount namespace holds the root; the host needs no mount.
	defer func() {
		if err := rootfs.Detach(merged); err != nil {
			r.log.Warn("detach sandbox root", "sandbox", rec.ID, "err", err)
		}
	}()
	if err := os.MkdirAll(filepath.Join(merged, rec.Cwd), 0o755); err != nil {
		return 0, fmt.Errorf("make cwd %s: %w", rec.Cwd, err)
	}
	phases.root = time.Since(began)

	// The agent's listener is made here and handed over as fd 3: its path is on the host only.
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: r.agentSocket(rec.ID), Net: "unix"})
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
		ID: rec.ID, Rootfs: merged, Image: img, AgentBin: r.cfg.AgentBin,
		CgroupPath: rec.CgroupPath, Limits: lim, Seccomp: r.cfg.Seccomp, MaxOpenFiles: maxOpenFiles(),
	})
	if err := r.prepareNetwork(rec, config); err != nil {
		return 0, err
	}
	c, err := libcontainer.Create(r.stateRoot(), rec.ID, config)
	if err != nil {
		return 0, fmt.Errorf("create container: %w", err)
	}
	proc := &libcontainer.Process{
		Args:       []string{AgentPath, "agent", "--listen-fd", "3"},
		Env:        agentEnv(rec),
		Cwd:        rec.Cwd,
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
	if err := r.attachNetwork(rec, pid); err != nil {
		return 0, err
	}
	readyCtx, cancel := context.WithTimeout(ctx, agentReadyTimeout)
	defer cancel()
	if _, err := r.agent(rec.ID).health(readyCtx); err != nil {
		return 0, fmt.Errorf("agent did not come up: %v; agent log: %q", err, tail(logFile.Name(), 2048))
	}
	phases.agent = time.Since(began) - phases.root - phases.container
	return pid, nil
}

// agentEnv is the environment of the agent, which every command in the sandbox inherits.
func agentEnv(rec *record) []string {
	env := map[string]string{"PATH": defaultPath, "HOME": "/root", "HOSTNAME": rec.ID, "TERM": "xterm-256color"}
	maps.Copy(env, rec.Env)
	var out []string
	for _, k := range slices.Sorted(maps.Keys(env)) {
		out = append(out, k+"="+env[k])
	}
	return out
}

func validateEnv(env map[string]string) error {
	for k, v := range env {
		if k == "" || strings.ContainsAny(k, "=\x00") {
			return api.Errorf(api.CodeInvalidArgument, "invalid environment variable name %q: it must be non-empty without '=' or NUL", k)
		}
		if strings.ContainsRune(v, 0) {
			return api.Errorf(api.CodeInvalidArgument, "environment variable %s contains a NUL byte", k)
		}
	}
	return nil
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
	release, err := r.claim(id)
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
	r.log.Info("sandbox removed", "sandbox", id)
	return nil
}

// stop asks the agent to end everything in the sandbox and waits up to stopGrace for it.
func (r *Runtime) stop(rec *record) {
	c, err := libcontainer.Load(r.stateRoot(), rec.ID)
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
	r.forgetAgent(rec.ID)
	var errs []error
	c, err := libcontainer.Load(r.stateRoot(), rec.ID)
	switch {
	case err == nil:
		errs = append(errs, killAndDestroy(c))
	case errors.Is(err, libcontainer.ErrNotExist):
		// No (complete) container: remove whatever cgroup and state a crash left.
		errs = append(errs, removeCgroup(rec.CgroupPath), os.RemoveAll(filepath.Join(r.stateRoot(), rec.ID)))
	default:
		errs = append(errs, fmt.Errorf("load container: %w", err), removeCgroup(rec.CgroupPath),
			os.RemoveAll(filepath.Join(r.stateRoot(), rec.ID)))
	}
	errs = append(errs,
		rootfs.Detach(filepath.Join(r.sandboxRunDir(rec.ID), "rootfs")),
		os.RemoveAll(r.sandboxRunDir(rec.ID)),
		os.RemoveAll(r.sandboxDataDir(rec.ID)),
		r.detachNetwork(rec.ID),
	)
	return errors.Join(errs...)
}

// killAndDestroy kills a container's init (and with it its pid namespace), waits for it to be
// gone, and removes the container.
func killAndDestroy(c *libcontainer.Container) error {
	if state, err := c.State(); err == nil && state.InitProcessPid > 0 {
		if pidfd, err := unix.PidfdOpen(state.InitProcessPid, 0); err == nil {
			_ = unix.PidfdSendSignal(pidfd, unix.SIGKILL, nil, 0)
			waitPidfd(pidfd, 10*time.Second)
			unix.Close(pidfd)
		}
	}
	if err := c.Destroy(); err != nil {
		return fmt.Errorf("destroy container: %w", err)
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
	return r.agent(id), rec, nil
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
