package nsbox

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/nsbox/nsbox/api"
	"github.com/nsbox/nsbox/api/httpapi"
	sandboxfs "github.com/nsbox/nsbox/fs"
	"github.com/nsbox/nsbox/internal/pidwait"
	"github.com/nsbox/nsbox/nsbox/backend"
	"github.com/nsbox/nsbox/permfs"
	"github.com/nsbox/nsbox/perms"
	"github.com/nsbox/nsbox/rootfs"
)

// Per-path permissions (docs/permissions.md). A sandbox created with rules gets a permission
// layer over each directory its rules need one on (perms.Set.Roots: the workspace, /etc for
// /etc/secret, /home/user for /home/user/.ssh/**…): an `nsbox permfs` process (package
// permfs), started before its container, serves the directory (the workspace's overlay or
// host directory; the container's root overlay, or an image's read-only host directory)
// through the rules as a FUSE file system mounted at <run>/sandboxes/<container>/permfs-<n>,
// which the container bind-mounts in its place. The host's mounts are detached once the
// container has started; a layer then lives as long as the container's mount namespace, and
// outlives a daemon that dies. PATCH …/permissions sends new rules over the layers' control
// sockets. Stopping the container (remove, hibernate) kills them.

const (
	// permfsStartTimeout bounds how long the daemon waits for a permission layer to be served.
	permfsStartTimeout = 10 * time.Second
	// permfsControlTimeout bounds a change of rules.
	permfsControlTimeout = 10 * time.Second
)

// permfsLayer is the base of the host paths of container id's layer n: the mountpoint itself,
// and with .sock, .pid and .log its control socket, pid file and log.
func (r *Runtime) permfsLayer(id string, n int) string {
	return filepath.Join(r.sandboxRunDir(id), "permfs-"+strconv.Itoa(n))
}

// permfsLayers are the bases (permfsLayer) of container id's started layers.
func (r *Runtime) permfsLayers(id string) ([]string, error) {
	pids, err := filepath.Glob(filepath.Join(r.sandboxRunDir(id), "permfs-*.pid"))
	if err != nil {
		return nil, fmt.Errorf("find permission layers: %w", err)
	}
	for i, p := range pids {
		pids[i] = strings.TrimSuffix(p, ".pid")
	}
	return pids, nil
}

// netFileTargets are the files of the sandbox's network (networkFiles), mounted over what a
// permission layer on /etc shows: rules cannot apply to them.
var netFileTargets = []string{"/etc/hosts", "/etc/resolv.conf"}

// checkPermissions checks a create request's rules: they compile, their layers can be made
// (a workspace for rules in it; no layer on, over or under what nsbox itself mounts), and
// the daemon can start layers.
func (r *Runtime) checkPermissions(req *api.CreateSandboxRequest) error {
	if req.Permissions == nil {
		return nil
	}
	set, err := perms.Compile(req.Permissions)
	if err != nil {
		return api.Errorf(api.CodeInvalidArgument, "%v", err)
	}
	for _, root := range set.Roots() {
		if root == api.WorkspacePath {
			if req.Workspace == nil {
				return api.Errorf(api.CodeInvalidArgument, "permissions for %s (relative patterns are relative to it) need a workspace: create the sandbox with workspace: {hostPath} too", api.WorkspacePath)
			}
			continue
		}
		for _, res := range reservedTargets {
			if perms.Within(root, res) || perms.Within(res, root) {
				return api.Errorf(api.CodeInvalidArgument, "permissions outside %s need a permission layer on %s, which is, is under or holds %s (nsbox's own): rules cannot cover it; name deeper directories", api.WorkspacePath, root, res)
			}
		}
		for _, m := range req.Mounts {
			if perms.Within(root, m.Target) || perms.Within(m.Target, root) {
				return api.Errorf(api.CodeInvalidArgument, "permissions outside %s need a permission layer on %s, which is, is under or holds the bind mount at %s: rules do not apply to bind mounts", api.WorkspacePath, root, m.Target)
			}
		}
	}
	for _, t := range netFileTargets {
		if p := set.Reaching(t); p != "" {
			return api.Errorf(api.CodeInvalidArgument, "permissions: pattern %q would cover %s, which nsbox mounts for the sandbox's network: rules cannot apply to it", p, t)
		}
	}
	if r.cfg.Self == "" {
		return api.Errorf(api.CodeUnavailable, "this daemon cannot enforce permissions (it does not know its own binary)")
	}
	return nil
}

// permLayer is one permission layer to start: the host directory it serves (read-only or
// not), where the sandbox sees it, and how owners translate.
type permLayer struct {
	source   string
	readOnly bool
	at       string
	ids      permfs.IDs
	// masked are the image's masked paths (always none in the layer).
	masked []string
	// shared: the host changes the directory too (a read-write workspace).
	shared bool
}

// startPermFS starts container id's permission layer n with rules and returns where it is
// mounted.
func (r *Runtime) startPermFS(id string, n int, l permLayer, rules []api.PermissionRule) (string, error) {
	base := r.permfsLayer(id, n)
	body, err := json.Marshal(api.PermissionsRequest{Permissions: rules})
	if err != nil {
		return "", fmt.Errorf("encode permission rules: %w", err)
	}
	logFile, err := os.Create(base + ".log")
	if err != nil {
		return "", fmt.Errorf("make permission layer log: %w", err)
	}
	defer logFile.Close()
	ready, readyW, err := os.Pipe()
	if err != nil {
		return "", fmt.Errorf("make pipe: %w", err)
	}
	defer ready.Close()
	dev, err := permfs.Mount(base)
	if err != nil {
		return "", err
	}
	defer dev.Close()
	args := []string{"permfs", "--source", l.source, "--at", l.at, "--control", base + ".sock",
		"--root-uid", strconv.FormatUint(uint64(l.ids.RootUID), 10), "--root-gid", strconv.FormatUint(uint64(l.ids.RootGID), 10),
		"--ids-host", strconv.FormatUint(uint64(l.ids.Host), 10), "--ids-size", strconv.FormatUint(uint64(l.ids.Size), 10)}
	if l.readOnly {
		args = append(args, "--read-only")
	}
	if l.shared {
		args = append(args, "--shared")
	}
	for _, m := range l.masked {
		if perms.Within(m, l.at) {
			args = append(args, "--hide", m)
		}
	}
	for _, t := range netFileTargets {
		if perms.Within(t, l.at) {
			args = append(args, "--keep", t)
		}
	}
	cmd := exec.Command(r.cfg.Self, args...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = bytes.NewReader(body), logFile, logFile
	cmd.ExtraFiles = []*os.File{readyW, dev}
	// Its own session: a daemon that dies (or is killed by its terminal) leaves it running.
	// Its own mount namespace: it serves from a private tree (permfs.Run).
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Cloneflags: syscall.CLONE_NEWNS}
	err = cmd.Start()
	readyW.Close()
	if err != nil {
		return "", errors.Join(fmt.Errorf("start permission layer: %w", err), rootfs.Detach(base))
	}
	go cmd.Wait() // reaped here while this daemon lives
	if err := os.WriteFile(base+".pid", []byte(strconv.Itoa(cmd.Process.Pid)), 0o600); err != nil {
		return "", errors.Join(fmt.Errorf("record permission layer: %w", err), r.stopPermFS(base, cmd.Process.Pid))
	}
	ready.SetReadDeadline(time.Now().Add(permfsStartTimeout))
	msg, _ := io.ReadAll(ready)
	if string(msg) != "ok" {
		log, _ := os.ReadFile(logFile.Name())
		return "", errors.Join(fmt.Errorf("permission layer on %s did not start: %s (log: %q)", l.at, msg, log), r.stopPermFS(base, cmd.Process.Pid))
	}
	return base, nil
}

// permRoot is the index of the permission layer on the directory at among rules' (-1: none).
func permRoot(rules []api.PermissionRule, at string) int {
	if rules == nil {
		return -1
	}
	set, err := perms.Compile(rules) // checked at create
	if err != nil {
		return -1
	}
	return slices.Index(set.Roots(), at)
}

// rootLayers starts the permission layers of container id outside its workspace, once its
// root overlay is mounted on the host at root, and answers their mounts. A layer's directory
// is an image's host directory (read-only) when it is in one of imageBinds, else the root's
// (made if missing); the image's masked paths are none in it (a mask over a layer's file
// would hold only until the kernel drops that name). No process of the container runs yet:
// its root cannot change meanwhile.
func (r *Runtime) rootLayers(id, root string, imageBinds []backend.Mount, masked []string, rules []api.PermissionRule, ids rootfs.IDMap) ([]backend.Mount, error) {
	set, err := perms.Compile(rules)
	if err != nil {
		return nil, err
	}
	var out []backend.Mount
	for n, at := range set.Roots() {
		if at == api.WorkspacePath {
			continue
		}
		l := permLayer{at: at, masked: masked}
		for _, b := range imageBinds {
			if perms.Within(at, b.Target) {
				if err := noSymlinks(b.Source, strings.TrimPrefix(at, b.Target)); err != nil {
					return nil, err
				}
				// The host's own directory: the host changes it too.
				l.source, l.readOnly, l.shared = filepath.Join(b.Source, strings.TrimPrefix(at, b.Target)), true, true
				if ids.Enabled() { // as the bind's id-mapped mount shows it
					l.ids = permfs.IDs{Host: ids.Host, Size: ids.Size}
				}
			}
		}
		if l.source == "" {
			if l.source, err = makeDirIn(root, at, ids); err != nil {
				return nil, err
			}
		}
		mnt, err := r.startPermFS(id, n, l, rules)
		if err != nil {
			return nil, err
		}
		out = append(out, backend.Mount{Source: mnt, Target: at, ReadOnly: l.readOnly, IDs: backend.MountIDs{Native: true}})
	}
	return out, nil
}

// makeDirIn makes sure the directory at (absolute, in the root at root) exists without a
// symlink on the way, making what is missing (owned by the container's root), and returns
// its host path.
func makeDirIn(root, at string, ids rootfs.IDMap) (string, error) {
	fd, err := unix.Open(root, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return "", fmt.Errorf("open container root: %w", err)
	}
	for _, c := range strings.Split(strings.TrimPrefix(at, "/"), "/") {
		err := unix.Mkdirat(fd, c, 0o755)
		if err == nil && ids.Enabled() {
			err = unix.Fchownat(fd, c, int(ids.Host), int(ids.Host), unix.AT_SYMLINK_NOFOLLOW)
		}
		if err != nil && err != unix.EEXIST {
			unix.Close(fd)
			return "", fmt.Errorf("make %s for its permission layer: %w", at, err)
		}
		next, err := unix.Openat2(fd, c, &unix.OpenHow{Flags: unix.O_PATH | unix.O_DIRECTORY | unix.O_CLOEXEC, Resolve: unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_NO_XDEV})
		unix.Close(fd)
		if err != nil {
			return "", api.Errorf(api.CodeInvalidArgument, "permissions need a layer on %s, which is not a directory in the sandbox's image (at %s: %v)", at, c, err)
		}
		fd = next
	}
	unix.Close(fd)
	return filepath.Join(root, at), nil
}

// noSymlinks checks that rel (relative, or "") under the host directory dir is a directory
// reached without symlinks.
func noSymlinks(dir, rel string) error {
	base, err := unix.Open(dir, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("open %s: %w", dir, err)
	}
	defer unix.Close(base)
	if rel = strings.Trim(rel, "/"); rel == "" {
		return nil
	}
	fd, err := unix.Openat2(base, rel, &unix.OpenHow{Flags: unix.O_PATH | unix.O_DIRECTORY | unix.O_CLOEXEC, Resolve: unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_BENEATH})
	if err != nil {
		return api.Errorf(api.CodeInvalidArgument, "permissions need a layer on %s, which is not a directory (reached without symlinks) in the sandbox's image: %v", filepath.Join(dir, rel), err)
	}
	return unix.Close(fd)
}

// releasePermFS stops container id's permission layers and detaches their host mounts.
func (r *Runtime) releasePermFS(id string) error {
	layers, err := r.permfsLayers(id)
	if err != nil {
		return err
	}
	for _, base := range layers {
		data, err := os.ReadFile(base + ".pid")
		if err != nil {
			return fmt.Errorf("read permission layer's pid: %w", err)
		}
		pid, err := strconv.Atoi(strings.TrimSpace(string(data)))
		if err != nil {
			return fmt.Errorf("permission layer's pid file: %w", err)
		}
		if err := r.stopPermFS(base, pid); err != nil {
			return err
		}
		if err := os.Remove(base + ".pid"); err != nil {
			return fmt.Errorf("remove permission layer's pid file: %w", err)
		}
	}
	return nil
}

// detachPermFS detaches the host mounts of container id's permission layers.
func (r *Runtime) detachPermFS(id string) error {
	mounts, err := filepath.Glob(filepath.Join(r.sandboxRunDir(id), "permfs-*[0-9]"))
	if err != nil {
		return fmt.Errorf("find permission layers: %w", err)
	}
	var errs []error
	for _, m := range mounts {
		errs = append(errs, rootfs.Detach(m))
	}
	return errors.Join(errs...)
}

// stopPermFS kills the permission layer pid whose base is base (when pid is still it: its
// command line names the layer's control socket) and waits until it has exited.
func (r *Runtime) stopPermFS(base string, pid int) error {
	err := rootfs.Detach(base)
	fd, perr := unix.PidfdOpen(pid, 0)
	if perr != nil {
		return err // gone already
	}
	defer unix.Close(fd)
	cmdline, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if !bytes.Contains(cmdline, []byte(base+".sock\x00")) {
		return err // the pid is another process's now
	}
	if kerr := unix.PidfdSendSignal(fd, unix.SIGKILL, nil, 0); kerr != nil && kerr != unix.ESRCH {
		return errors.Join(err, fmt.Errorf("kill permission layer: %w", kerr))
	}
	_, perr = pidwait.Wait(fd, -1)
	return errors.Join(err, wrapErr("wait for permission layer", perr))
}

// SetPermissions replaces the rules of a running sandbox (PATCH …/permissions): processes see
// them from their next lookup or open on; files they have open stay open as they were opened.
func (r *Runtime) SetPermissions(ctx context.Context, id string, rules []api.PermissionRule) (*api.Sandbox, error) {
	if _, err := perms.Compile(rules); err != nil {
		return nil, api.Errorf(api.CodeInvalidArgument, "%v", err)
	}
	sb, err := r.lockRunning(id)
	if err != nil {
		return nil, err
	}
	defer sb.mu.Unlock()
	if sb.rec.Permissions == nil {
		return nil, api.Errorf(api.CodeConflict, "sandbox %q was created without permissions, so it has no permission layer to change; create it with permissions (e.g. [{\"pattern\": \"**\", \"level\": \"write\"}])", id)
	}
	if err := covered(rules, sb.rec.Permissions); err != nil {
		return nil, err
	}
	if rules == nil {
		rules = []api.PermissionRule{}
	}
	if err := r.pushRules(ctx, sb.rec.container(), "", rules); err != nil {
		return nil, err
	}
	if err := r.update(sb, func(rec *record) { rec.Permissions = rules }); err != nil {
		return nil, errors.Join(err, r.pushRules(context.WithoutCancel(ctx), sb.rec.container(), "", sb.rec.Permissions))
	}
	r.log.Info("sandbox permissions changed", "sandbox", id, "rules", len(rules))
	out := sb.rec.Sandbox
	return &out, nil
}

// covered checks that rules need no permission layer the sandbox's rules did not: their
// layers are made with the container.
func covered(rules, sandbox []api.PermissionRule) error {
	set, err := perms.Compile(rules)
	if err != nil {
		return api.Errorf(api.CodeInvalidArgument, "%v", err)
	}
	have, err := perms.Compile(sandbox)
	if err != nil {
		return fmt.Errorf("recorded permissions: %w", err)
	}
	for _, root := range set.Roots() {
		if !slices.ContainsFunc(have.Roots(), func(h string) bool { return perms.Within(root, h) }) {
			return api.Errorf(api.CodeInvalidArgument, "these rules need a permission layer on %s, which the sandbox does not have (its layers are on %s, made with its container from its rules at create); add rules there at create", root, strings.Join(have.Roots(), ", "))
		}
	}
	return nil
}

// pushRules gives container id's permission layers the sandbox's rules, or those of the
// processes in its cgroup named cgroup.
func (r *Runtime) pushRules(ctx context.Context, id, cgroup string, rules []api.PermissionRule) error {
	return r.controlAll(ctx, id, http.MethodPut, path.Join(permfs.ControlPath, cgroup), api.PermissionsRequest{Permissions: rules})
}

// controlAll sends a request to each of container id's permission layers (control).
func (r *Runtime) controlAll(ctx context.Context, id, method, p string, body any) error {
	layers, err := r.permfsLayers(id)
	if err != nil {
		return err
	}
	for _, base := range layers {
		if err := r.control(ctx, base, method, p, body); err != nil {
			return err
		}
	}
	return nil
}

// control sends a request (body: JSON, or none when nil) to the permission layer whose base
// is base.
func (r *Runtime) control(ctx context.Context, base, method, p string, body any) error {
	ctx, cancel := context.WithTimeout(ctx, permfsControlTimeout)
	defer cancel()
	var rd io.Reader
	if body != nil {
		data, err := json.Marshal(body)
		if err != nil {
			return fmt.Errorf("encode permission layer request: %w", err)
		}
		rd = bytes.NewReader(data)
	}
	client := http.Client{Transport: &http.Transport{DisableKeepAlives: true, DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", base+".sock")
	}}}
	req, err := http.NewRequestWithContext(ctx, method, "http://permfs"+p, rd)
	if err != nil {
		return fmt.Errorf("permission layer request: %w", err)
	}
	resp, err := client.Do(req)
	if err != nil {
		return fmt.Errorf("reach the sandbox's permission layer: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusNoContent {
		return httpapi.ReadError(resp)
	}
	return nil
}

func (r *Runtime) handleSetPermissions(w http.ResponseWriter, req *http.Request) error {
	var body api.PermissionsRequest
	if err := httpapi.DecodeJSON(req, &body, false); err != nil {
		return err
	}
	sb, err := r.SetPermissions(req.Context(), req.PathValue("id"), body.Permissions)
	if err != nil {
		return err
	}
	httpapi.WriteJSON(w, http.StatusOK, sb)
	return nil
}

// Sessions with rules of their own. The layer tells a session's processes from the others by
// their cgroup in the cgroup v2 hierarchy: the daemon moves the session's shell, idle just
// after its creation, into a cgroup of its own (s-<session> under the container's), where
// everything it starts begins too; the sandbox cannot write that hierarchy, so nothing in it
// can leave. The layer applies the lower of the sandbox's and the session's levels to them.

// sessionCgroup is the name of the cgroup of session sid's processes.
func sessionCgroup(sid string) string { return "s-" + sid }

// checkSessionPermissions compiles a session's rules (nil: none) and checks that they narrow
// its sandbox's.
func (r *Runtime) checkSessionPermissions(l live, rules []api.PermissionRule) (*perms.Set, error) {
	if rules == nil {
		return nil, nil
	}
	narrow, err := perms.Compile(rules)
	if err != nil {
		return nil, api.Errorf(api.CodeInvalidArgument, "%v", err)
	}
	if l.rec.Permissions == nil {
		return nil, api.Errorf(api.CodeInvalidArgument, "sandbox %q was created without permissions, so its sessions cannot have their own; create it with permissions (e.g. [{\"pattern\": \"**\", \"level\": \"write\"}])", l.rec.ID)
	}
	if err := covered(rules, l.rec.Permissions); err != nil {
		return nil, err
	}
	wide, err := perms.Compile(l.rec.Permissions)
	if err != nil {
		return nil, fmt.Errorf("sandbox %s's recorded permissions: %w", l.rec.ID, err)
	}
	if err := perms.Narrows(narrow, wide); err != nil {
		return nil, api.Errorf(api.CodeInvalidArgument, "permissions: %v", err)
	}
	return narrow, nil
}

// confineSession gives the session s, just created, its rules: the layer learns them, its
// shell moves into its cgroup, the record keeps them. On failure the session is removed.
func (r *Runtime) confineSession(ctx context.Context, l live, s *api.Session, created bool, rules []api.PermissionRule) error {
	if !created {
		return api.Errorf(api.CodeConflict, "session %q exists already: a session's permissions are given when it is created", s.ID)
	}
	err := r.confine(ctx, l.rec.container(), l.inst.PID(), s, rules)
	if err == nil {
		l.sb.mu.Lock()
		err = r.update(l.sb, func(rec *record) {
			rec.SessionPermissions = maps.Clone(rec.SessionPermissions)
			if rec.SessionPermissions == nil {
				rec.SessionPermissions = map[string][]api.PermissionRule{}
			}
			rec.SessionPermissions[s.ID] = rules
		})
		l.sb.mu.Unlock()
	}
	if err != nil {
		return errors.Join(fmt.Errorf("confine session %s: %w", s.ID, err), l.agent.deleteSession(context.WithoutCancel(ctx), s.ID))
	}
	return nil
}

// confine has container id's permission layer apply rules to the session s, whose shell,
// idle, moves into the session's cgroup (agentPID: the container's PID 1 on the host).
func (r *Runtime) confine(ctx context.Context, id string, agentPID int, s *api.Session, rules []api.PermissionRule) error {
	if err := r.pushRules(ctx, id, sessionCgroup(s.ID), rules); err != nil {
		return err
	}
	return moveToCgroup(agentPID, s.PID, sessionCgroup(s.ID))
}

// restoreState hands a resumed container's agent the state its sandbox saved at hibernation.
// A session with rules of its own is made afresh, confined while its shell is idle, and only
// then given its state: its state is restored, as everything it runs, under its rules.
func (r *Runtime) restoreState(ctx context.Context, rec record, sc *startedContainer, st api.SandboxState) error {
	confined := map[string]api.SessionState{}
	rest := st
	rest.Sessions = nil
	for _, ss := range st.Sessions {
		if _, ok := rec.SessionPermissions[ss.ID]; ok {
			confined[ss.ID] = ss
		} else {
			rest.Sessions = append(rest.Sessions, ss)
		}
	}
	if err := sc.agent.restoreState(ctx, rest); err != nil {
		return err
	}
	for _, sid := range slices.Sorted(maps.Keys(confined)) {
		ss := confined[sid]
		req := api.CreateSessionRequest{ID: ss.ID, Shell: ss.Shell, User: ss.User}
		if ss.ReadOnly {
			req.Permission = api.PermissionRead
		}
		s, _, err := sc.agent.createSession(ctx, req)
		if err == nil {
			err = r.confine(ctx, rec.container(), sc.inst.PID(), s, rec.SessionPermissions[sid])
		}
		if err == nil {
			err = sc.agent.restoreState(ctx, api.SandboxState{Sessions: []api.SessionState{ss}})
		}
		if err != nil {
			return fmt.Errorf("restore session %q with its permissions: %w", sid, err)
		}
	}
	return nil
}

// forgetSession drops a removed session's rules from the record. The layer keeps them for
// its cgroup: whatever of the session outlived it stays confined.
func (r *Runtime) forgetSession(id, sid string) error {
	sb, err := r.lookup(id)
	if err != nil {
		return err
	}
	sb.mu.Lock()
	defer sb.mu.Unlock()
	if _, ok := sb.rec.SessionPermissions[sid]; !ok {
		return nil
	}
	return r.update(sb, func(rec *record) {
		rec.SessionPermissions = maps.Clone(rec.SessionPermissions)
		delete(rec.SessionPermissions, sid)
	})
}

// refuseConfined refuses to start what (processes, code contexts) in a session with rules of
// its own: the agent starts them, outside the session's cgroup.
func (r *Runtime) refuseConfined(id, sid, what string) error {
	if sid == "" {
		return nil
	}
	sb, err := r.lookup(id)
	if err != nil {
		return err
	}
	if _, ok := sb.snapshot().SessionPermissions[sid]; ok {
		return api.Errorf(api.CodeConflict, "session %q has permissions of its own, and %s started for it would not be confined by them; run the command in the session (exec) instead", sid, what)
	}
	return nil
}

// actForSession has the layer apply session sid's rules to the file calls the request makes
// through root: the goroutine keeps its thread until root is closed, and the layer takes
// that thread for the session (it tells callers apart by thread id) meanwhile. Watches are
// refused: their events would name files the session may not see.
func (r *Runtime) actForSession(req *http.Request, container, sid string, root *sandboxfs.Root) error {
	if strings.HasSuffix(req.URL.Path, "/watch") {
		return api.Errorf(api.CodePermissionDenied, "session %q has permissions of its own: watches on its behalf are refused (their events could name files it may not see); watch without sessionId", sid)
	}
	// This thread (locked until root is closed), and each thread root starts for a change.
	act := func() (func(), error) {
		tid := strconv.Itoa(unix.Gettid())
		if err := r.controlAll(req.Context(), container, http.MethodPut, path.Join(permfs.CallersPath, tid, sessionCgroup(sid)), nil); err != nil {
			return nil, err
		}
		return func() {
			if err := r.controlAll(context.Background(), container, http.MethodDelete, path.Join(permfs.CallersPath, tid), nil); err != nil {
				// The thread stays locked and ends with its goroutine: no other call of the
				// daemon's can run on it as the session.
				r.log.Warn("end a session's file call in the permission layer", "container", container, "err", err)
				return
			}
			runtime.UnlockOSThread()
		}, nil
	}
	runtime.LockOSThread()
	done, err := act()
	if err != nil {
		runtime.UnlockOSThread()
		return err
	}
	root.OnClose(done)
	root.OnThread(func() (func(), error) {
		runtime.LockOSThread() // as the caller's: ends with its goroutine, or unlocked by done
		return act()
	})
	return nil
}

// moveToCgroup moves the process nspid (its pid in the container whose PID 1 is the host's
// agentPID) into the child name of the container's cgroup v2 cgroup.
func moveToCgroup(agentPID, nspid int, name string) error {
	dir, err := cgroup2Dir(agentPID)
	if err != nil {
		return err
	}
	procs, err := os.ReadFile(filepath.Join(dir, "cgroup.procs"))
	if err != nil {
		return fmt.Errorf("list the container's processes: %w", err)
	}
	host := 0
	for _, f := range strings.Fields(string(procs)) {
		status, err := os.ReadFile("/proc/" + f + "/status")
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(status), "\n") {
			if rest, ok := strings.CutPrefix(line, "NSpid:"); ok {
				ids := strings.Fields(rest)
				if len(ids) > 1 && ids[len(ids)-1] == strconv.Itoa(nspid) {
					host, _ = strconv.Atoi(f)
				}
			}
		}
	}
	if host == 0 {
		return fmt.Errorf("the session's shell (pid %d in the sandbox) is not in the container's cgroup %s", nspid, dir)
	}
	child := filepath.Join(dir, name)
	if err := os.Mkdir(child, 0o755); err != nil && !errors.Is(err, os.ErrExist) {
		return fmt.Errorf("make session cgroup: %w", err)
	}
	if err := os.WriteFile(filepath.Join(child, "cgroup.procs"), []byte(strconv.Itoa(host)), 0o644); err != nil {
		return fmt.Errorf("move the session's shell into its cgroup: %w", err)
	}
	return nil
}

// cgroup2Dir is the directory of the cgroup v2 cgroup of the host process pid.
func cgroup2Dir(pid int) (string, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", pid))
	if err != nil {
		return "", fmt.Errorf("read the container's cgroups: %w", err)
	}
	var rel string
	for _, line := range strings.Split(string(data), "\n") {
		if p, ok := strings.CutPrefix(line, "0::"); ok {
			rel = p
		}
	}
	mounts, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return "", fmt.Errorf("read mounts: %w", err)
	}
	for _, line := range strings.Split(string(mounts), "\n") {
		// mountinfo: id parent dev root mountpoint options … - fstype source options
		fields := strings.Fields(line)
		if i := slices.Index(fields, "-"); i > 4 && i+1 < len(fields) && fields[i+1] == "cgroup2" && fields[3] == "/" && rel != "" {
			return filepath.Join(fields[4], rel), nil
		}
	}
	return "", errors.New("sessions with their own permissions need the cgroup v2 hierarchy, which this host does not mount")
}
