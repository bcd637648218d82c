package nsbox

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/nsbox/nsbox/api"
	"github.com/nsbox/nsbox/api/httpapi"
	"github.com/nsbox/nsbox/internal/atomicfile"
	"github.com/nsbox/nsbox/rootfs"
)

// Hibernation. A hibernated sandbox has no container: no process runs and its memory is free.
// Before its container goes, the agent saves every session's state (working directory,
// exported variables, aliases, functions, shell options, history) and every process with the
// end of its log; the daemon keeps them in the container's data dir, next to (not in) the
// writable layer, where the sandbox cannot reach them. The container is then shelved: killed
// and destroyed but for its writable layers (and disk), its user namespace ids (its files
// belong to them) and its network (address, rules and exposed ports stay; the veth goes with
// the namespace). Resuming (POST …/resume, or any request that needs it running: wake) starts
// a container of the same id on the same layers, reattaches the network with the same address
// and sets the hostname and limits while its agent starts, configures the agent as a create
// does and hands it the saved state: the
// sessions come back with it, processes that ran are listed as stopped by hibernation, and
// those started with restart "on-resume" start again. Most of a resume is the container's
// start (libcontainer: cgroups, namespaces, mounts, the agent's exec), which the warm pool
// cannot do ahead: the container must be the one whose layers and ids the sandbox kept. Memory is not checkpointed: where CRIU works (checkpoint.go) the
// API says so, but this daemon does not use it yet.

// awakenTimeout bounds a resume from hibernation: a container start, its agent and the
// restore of its sessions.
const awakenTimeout = 30 * time.Second

// continueTimeout bounds the request that lets a sandbox's processes go on after a failed
// hibernation stopped them.
const continueTimeout = 5 * time.Second

// savedStatePath is where a hibernated sandbox's saved state is kept.
func (r *Runtime) savedStatePath(container string) string {
	return filepath.Join(r.sandboxDataDir(container), "saved-state.json")
}

// Hibernate stops every process of a running or paused sandbox and frees its memory, keeping
// its files, network and the state of its sessions for a resume.
func (r *Runtime) Hibernate(ctx context.Context, id string, req api.HibernateRequest) (*api.Sandbox, error) {
	if req.Memory {
		cp := r.cfg.Checkpoint
		if !cp.Available {
			return nil, api.Errorf(api.CodeInvalidArgument, "memory: true needs CRIU, which does not work on this host (%s); hibernate without it: the sessions' state and the files are kept, processes are stopped", cp.Reason)
		}
		return nil, api.Errorf(api.CodeInvalidArgument, "memory: true is not supported by this daemon yet (CRIU works here, but memory checkpoints are not built); hibernate without it")
	}
	return r.hibernate(ctx, id, true)
}

// hibernate shelves a sandbox's container; keepSessions: the sessions' state is saved (else
// they start afresh on resume: onIdle "stop").
func (r *Runtime) hibernate(ctx context.Context, id string, keepSessions bool) (*api.Sandbox, error) {
	sb, err := r.lookup(id)
	if err != nil {
		return nil, err
	}
	sb.mu.Lock()
	defer sb.mu.Unlock()
	switch sb.rec.Status {
	case api.StatusRunning:
	case api.StatusPaused: // its agent must answer
		if err := sb.inst.Thaw(); err != nil {
			return nil, fmt.Errorf("hibernate sandbox %s: thaw it first: %w", id, err)
		}
	default:
		return nil, stateError(id, sb.rec.Status, "only a running or paused sandbox can hibernate")
	}
	began := time.Now()
	// Its processes are stopped once the sessions are saved and before they are: what they
	// write after the save would be lost with the container. An agent from before the stop
	// (its sandbox outlived a daemon upgrade) refuses the field, having done nothing: it is
	// asked again without it.
	req := api.SaveStateRequest{Sessions: keepSessions, Processes: true, Stop: true}
	st, err := sb.agent.saveState(ctx, req)
	var apiErr *api.Error
	if errors.As(err, &apiErr) && apiErr.Code == api.CodeInvalidArgument && strings.Contains(apiErr.Message, `"stop"`) {
		req.Stop = false
		st, err = sb.agent.saveState(ctx, req)
	}
	if err == nil {
		err = writeJSONFile(r.savedStatePath(sb.rec.container()), st)
	}
	if err != nil {
		cctx, cancel := context.WithTimeout(context.Background(), continueTimeout)
		// An agent from before the stop has no such request, and stopped nothing (404).
		if cerr := sb.agent.continueProcesses(cctx); cerr != nil && !(errors.As(cerr, &apiErr) && apiErr.Code == api.CodeNotFound) {
			err = errors.Join(err, fmt.Errorf("let its processes go on: %w", cerr))
		}
		cancel()
		if sb.rec.Status == api.StatusPaused {
			err = errors.Join(err, sb.inst.Freeze())
		}
		return nil, fmt.Errorf("hibernate sandbox %s: save its state: %w", id, err)
	}
	saved := time.Since(began)
	inst := sb.inst
	var held *rootfs.IDMap
	if ids := inst.IDs(); ids.Enabled() {
		held = &ids
	}
	err = r.net.Suspend(id)
	onOwnThread(inst.Kill)
	err = errors.Join(err, r.shelveContainer(inst.ID()))
	inst.Close()
	r.forgetAgent(sb)
	sb.inst = nil
	if err != nil {
		r.fail(sb, "its hibernation failed: "+err.Error())
		return nil, fmt.Errorf("hibernate sandbox %s: %w", id, err)
	}
	if _, err := r.transition(sb, api.StatusHibernated, func(rec *record) { rec.PID, rec.HeldIDs = 0, held }); err != nil {
		return nil, err
	}
	r.settled()
	r.log.Info("sandbox hibernated", "sandbox", id, "sessions", len(st.Sessions), "processes", len(st.Processes),
		"save", saved, "duration", time.Since(began))
	out := sb.rec.Sandbox
	return &out, nil
}

// shelveContainer removes a container but for its writable layers (its data dir, its disk's
// image) and its user namespace ids: the backend's container (processes, cgroup, state, host
// mounts), the storage's host mounts and its run dir.
func (r *Runtime) shelveContainer(id string) error {
	var err error
	onOwnThread(func() { err = wrapErr("destroy container", r.backend.Destroy(id)) })
	// Private folders are not kept across a hibernation (nor is anything else of the run).
	err = errors.Join(err, r.removePrivate(id), r.releaseStorage(id))
	if err == nil {
		err = r.removeRunDirs(id)
	}
	return err
}

// awaken resumes a hibernated sandbox (see the top of this file). On failure it stays
// hibernated. sb.mu must be held.
func (r *Runtime) awaken(sb *sandbox) error {
	ctx, cancel := context.WithTimeout(context.Background(), awakenTimeout)
	defer cancel()
	began := time.Now()
	rec := sb.rec
	img, err := r.images.Get(rec.Image)
	if err != nil {
		return api.Errorf(api.CodeConflict, "sandbox %q cannot resume: its image: %v", sb.id, imageError(err))
	}
	limits := rec.Limits
	lim, err := r.cfg.resolveLimits(&limits)
	if err != nil {
		return fmt.Errorf("resume sandbox %s: %w", sb.id, err)
	}
	var st api.SandboxState
	if err := readJSONFile(r.savedStatePath(rec.container()), &st); err != nil {
		return fmt.Errorf("resume sandbox %s: %w", sb.id, err)
	}
	extras := extrasSpec{DiskMB: rec.Limits.DiskMB, Workspace: rec.Workspace, Mounts: rec.Mounts, Capabilities: rec.Capabilities,
		SnapshotLayers: rec.SnapshotLayers, Permissions: rec.Permissions}
	// The container has the sandbox's hostname from its start; the network is reattached, and
	// the limits set, while the agent starts; the agent's part of bind follows.
	sc, err := r.launch(ctx, rec.container(), img, lim, extras, true, &containerBoot{
		hostname:  rec.ID,
		meanwhile: func(sc *startedContainer) error { return r.attach(&rec, sc, lim) },
	})
	if err != nil {
		return api.Errorf(api.CodeInternal, "resume sandbox %s: %v", sb.id, errors.Join(err, r.net.Suspend(sb.id)))
	}
	started := time.Since(began)
	err = r.bindAgent(ctx, &rec, sc, nil)
	bound := time.Since(began) - started
	if err == nil {
		err = r.restoreState(ctx, rec, sc, st) // sessions with permissions of their own: permissions.go
	}
	restored := time.Since(began) - started - bound
	if err != nil {
		onOwnThread(sc.inst.Kill)
		err = errors.Join(err, r.net.Suspend(sb.id), r.shelveContainer(sc.inst.ID()))
		sc.inst.Close()
		r.forgetContainerAgent(sc.agent)
		return api.Errorf(api.CodeInternal, "resume sandbox %s: %v", sb.id, err)
	}
	sb.inst, sb.agent = sc.inst, sc.agent
	r.recheckViews(sc)
	if _, err := r.transition(sb, api.StatusRunning, func(next *record) {
		next.PID, next.HeldIDs, next.Network = sc.inst.PID(), nil, rec.Network
	}); err != nil {
		return err
	}
	if err := os.Remove(r.savedStatePath(rec.container())); err != nil {
		r.log.Warn("remove saved state", "sandbox", sb.id, "err", err)
	}
	sb.touch()
	r.watch(sb, sc.inst)
	r.log.Info("sandbox resumed from hibernation", "sandbox", sb.id, "start", started, "bind", bound, "restore", restored, "duration", time.Since(began))
	return nil
}

// writeJSONFile writes v as JSON to path, atomically and durably.
func writeJSONFile(path string, v any) error {
	data, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("encode %s: %w", filepath.Base(path), err)
	}
	return atomicfile.Write(path, data)
}

// readJSONFile reads the JSON file at path into v.
func readJSONFile(path string, v any) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("read %s: %w", filepath.Base(path), err)
	}
	if err := json.Unmarshal(data, v); err != nil {
		return fmt.Errorf("decode %s: %w", path, err)
	}
	return nil
}

func (r *Runtime) handleHibernate(w http.ResponseWriter, req *http.Request) error {
	var body api.HibernateRequest
	if err := httpapi.DecodeJSON(req, &body, true); err != nil {
		return err
	}
	sb, err := r.Hibernate(req.Context(), req.PathValue("id"), body)
	if err != nil {
		return err
	}
	httpapi.WriteJSON(w, http.StatusOK, sb)
	return nil
}
