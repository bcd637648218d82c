package nsbox

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"sync/atomic"
	"time"

	"github.com/nsbox/nsbox/api"
	"github.com/nsbox/nsbox/nsbox/backend"
	"github.com/nsbox/nsbox/rootfs"
)

// startedContainer is a container whose agent answers, before it is bound to a sandbox.
type startedContainer struct {
	inst   backend.Instance
	agent  *agentClient
	image  string
	limits backend.Limits
	extras extrasSpec
	// hostname is the one it was started with; configured: its agent took its sandbox's
	// configuration at its start (bindAgent need not send it).
	hostname   string
	configured bool
	// viewsGen is the generation of the LXCFS whose views it was last bound (recheckViews).
	viewsGen atomic.Uint64
}

// startContainer prepares a new container's storage and network files, has the backend start
// it with the agent as PID 1, and waits until the agent answers. The container is nobody's
// yet: bind makes it a sandbox (the warm pool's). On failure nothing of it is left.
func (r *Runtime) startContainer(ctx context.Context, img *rootfs.Image, lim backend.Limits, st extrasSpec) (*startedContainer, error) {
	return r.launch(ctx, "c-"+newID(), img, lim, st, false, nil)
}

// containerBoot is what a container started for a known sandbox (a cold create, a resume) is
// given from its start instead of when it is bound.
type containerBoot struct {
	// hostname is the sandbox's, the container's from its start.
	hostname string
	// agent, when not nil, is handed to the agent as it starts (backend.Spec.AgentConfig): it
	// is configured, and starts the default session, before it first answers.
	agent *api.AgentConfig
	// meanwhile, when not nil, runs once the container exists, while its agent starts (work
	// on the container from the host: its network); its error fails the launch.
	meanwhile func(*startedContainer) error
}

// launch starts container id over the image's layers. kept: the container is one that was
// shelved (a hibernated sandbox's): its writable layers and ids exist already and stay when the
// start fails. boot, when not nil, is what the sandbox it is started for gives it at its start.
func (r *Runtime) launch(ctx context.Context, id string, img *rootfs.Image, lim backend.Limits, st extrasSpec, kept bool,
	boot *containerBoot) (*startedContainer, error) {
	r.backend.WillStart()
	began := time.Now()
	spec, err := r.containerSpec(id, img, lim, st, kept)
	if err == nil && boot != nil {
		spec.Hostname = boot.hostname
		if boot.agent != nil {
			spec.AgentConfig, err = json.Marshal(boot.agent)
		}
	}
	prepared := time.Since(began)
	var inst backend.Instance
	if err == nil {
		onOwnThread(func() { inst, err = r.backend.Start(ctx, spec) })
	}
	// A started container's mount namespace holds its copy-on-write workspace; the host needs
	// no mount of it.
	if derr := r.detachWorkspace(id); derr != nil {
		r.log.Warn("detach workspace", "container", id, "err", derr)
	}
	if err != nil {
		if derr := r.undoStart(id, kept); derr != nil {
			r.log.Error("clean up after failed start", "container", id, "err", derr)
		}
		return nil, err
	}
	started := time.Since(began) - prepared
	// The limit views are bound from the host while the agent starts, not by runc's init.
	views := make(chan error, 1)
	var viewsTook time.Duration
	sc := &startedContainer{inst: inst, agent: newAgentClient(inst), image: img.Name, limits: lim, extras: st,
		hostname: cmp.Or(spec.Hostname, id)}
	go func() {
		var err error
		dir, gen := r.views.current()
		if dir != "" {
			onOwnThread(func() { err = wrapErr("show the sandbox its limits (lxcfs views)", inst.ShowLimits(dir)) })
		}
		sc.viewsGen.Store(gen)
		viewsTook = time.Since(began) - prepared - started
		views <- err
	}()
	done := make(chan error, 1)
	var meanwhile time.Duration // the host's work on the container while its agent starts
	go func() {
		if boot == nil || boot.meanwhile == nil {
			done <- nil
			return
		}
		err := boot.meanwhile(sc)
		meanwhile = time.Since(began) - prepared - started
		done <- err
	}()
	readyCtx, cancel := context.WithTimeout(ctx, agentReadyTimeout)
	defer cancel()
	h, err := sc.agent.health(readyCtx)
	answered := time.Since(began) - prepared - started
	switch {
	case err != nil:
		err = fmt.Errorf("agent did not come up: %v", err)
	case h.ConfigError != nil:
		err = h.ConfigError // the request's mistake, as PUT /v1/config answers it
	case spec.AgentConfig != nil && !h.Configured:
		err = errors.New("the agent did not take the configuration it was started with")
	default:
		sc.configured = spec.AgentConfig != nil
	}
	if merr := <-done; merr != nil {
		err = errors.Join(err, merr)
	}
	if verr := <-views; verr != nil {
		err = errors.Join(err, verr)
	}
	if err != nil {
		if _, ok := err.(*api.Error); !ok { // an *api.Error is the request's: it is answered as it is
			err = fmt.Errorf("%w; agent log: %q", err, inst.AgentLog())
		}
		onOwnThread(inst.Kill)
		inst.Close()
		if derr := r.undoStart(id, kept); derr != nil {
			r.log.Error("clean up after failed start", "container", id, "err", derr)
		}
		return nil, err
	}
	r.log.Debug("container started", "container", id, "image", img.Name, "pid", inst.PID(),
		"prepare", prepared, "start", started, "agent", time.Since(began)-prepared-started,
		"answered", answered, "meanwhile", meanwhile, "views", viewsTook)
	return sc, nil
}

// undoStart removes what a failed start left: everything, or for a kept container everything
// but its writable layers and ids (shelveContainer).
func (r *Runtime) undoStart(id string, kept bool) error {
	if kept {
		return r.shelveContainer(id)
	}
	return r.destroyContainerID(id)
}

// containerSpec makes what a container needs on the host before it starts (its user
// namespace's ids, its writable layers, its disk, its workspace's overlay, its hosts and
// resolv.conf files) and returns what the backend starts it from.
func (r *Runtime) containerSpec(id string, img *rootfs.Image, lim backend.Limits, st extrasSpec, kept bool) (backend.Spec, error) {
	for _, dir := range []string{r.sandboxRunDir(id), r.sandboxDataDir(id)} {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return backend.Spec{}, fmt.Errorf("make container dir: %w", err)
		}
	}
	var ids rootfs.IDMap
	if r.ids != nil {
		var err error
		// Removed sandboxes give their ids back only once their containers are gone, in the
		// background (retire): wait for those before giving up.
		deadline := time.Now().Add(retireWait)
		for ids, err = r.ids.allocate(id, kept); errors.Is(err, errNoIDs) && r.retiringCount.Load() > 0 && time.Now().Before(deadline); ids, err = r.ids.allocate(id, kept) {
			time.Sleep(10 * time.Millisecond)
		}
		if err != nil {
			return backend.Spec{}, err
		}
	}
	layerDir, err := r.prepareLayers(id, st, kept)
	if err != nil {
		return backend.Spec{}, err
	}
	mounts, err := r.storageMounts(id, st, ids)
	if err != nil {
		return backend.Spec{}, err
	}
	files, err := r.networkFiles(id, ids)
	if err != nil {
		return backend.Spec{}, err
	}
	private, err := r.preparePrivate(id, st.DiskMB, ids)
	if err != nil {
		return backend.Spec{}, err
	}
	layers := make([]string, 0, len(st.SnapshotLayers)+len(img.Layers))
	for _, d := range st.SnapshotLayers {
		layers = append(layers, r.images.Layers().Dir(d))
	}
	spec := backend.Spec{
		ID: id, Layers: append(layers, img.Layers...), UpperDir: filepath.Join(layerDir, "upper"), WorkDir: filepath.Join(layerDir, "work"),
		Masked: img.Masked, Mounts: append(mounts, files...), Limits: lim, Cwd: defaultCwd, IDs: ids,
		Capabilities: st.Capabilities, PrivateStore: private,
	}
	for _, b := range img.Binds {
		spec.ImageBinds = append(spec.ImageBinds, backend.Mount{Source: b.Source, Target: b.Dest, ReadOnly: true})
	}
	if st.Permissions != nil {
		spec.RootMounts = func(root string) ([]backend.Mount, error) {
			return r.rootLayers(id, root, spec.ImageBinds, spec.Masked, st.Permissions, ids)
		}
	}
	return spec, nil
}

// onOwnThread runs fn on a thread that ends with it. A container's start and teardown block
// their thread in system calls (runc's handshakes with the container's init, waits on pidfds):
// run on the caller's, a burst of creates or removes would leave the daemon with a parked
// thread for each one that ran at once, since Go never ends an idle thread.
func onOwnThread(fn func()) {
	done := make(chan struct{})
	go func() {
		defer close(done)
		runtime.LockOSThread() // never unlocked: the thread ends with the goroutine
		fn()
	}()
	<-done
}
