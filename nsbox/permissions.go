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
	sandboxfs "github.com/nsbox/nsbox/fs"
	"github.com/nsbox/nsbox/permfs"
	"github.com/nsbox/nsbox/perms"
	"github.com/nsbox/nsbox/rootfs"
)

// Per-path permissions (docs/permissions.md). A sandbox created with rules gets a permission
// layer over its workspace: an `nsbox permfs` process (package permfs), started before its
// container, serves the workspace's directory (the copy-on-write overlay, or the host
// directory) through the rules as a FUSE file system mounted at <run>/sandboxes/<container>/
// permfs, which the container bind-mounts at /workspace. The host's mount is detached once the
// container has started, like the workspace's overlay; the layer then lives as long as the
// container's mount namespace, and outlives a daemon that dies. PATCH …/permissions sends new
// rules over its control socket. Stopping the container (remove, hibernate) kills it.

const (
	// permfsStartTimeout bounds how long the daemon waits for a permission layer to be served.
	permfsStartTimeout = 10 * time.Second
	// permfsControlTimeout bounds a change of rules.
	permfsControlTimeout = 10 * time.Second
)

func (r *Runtime) permfsMount(id string) string { return filepath.Join(r.sandboxRunDir(id), "permfs") }
func (r *Runtime) permfsControl(id string) string {
	return filepath.Join(r.sandboxRunDir(id), "permfs.sock")
}
func (r *Runtime) permfsPIDFile(id string) string {
	return filepath.Join(r.sandboxRunDir(id), "permfs.pid")
}

// checkPermissions checks a create request's rules: they compile, and there is a workspace
// for them to apply to.
func (r *Runtime) checkPermissions(req *api.CreateSandboxRequest) error {
	if req.Permissions == nil {
		return nil
	}
	if _, err := perms.Compile(req.Permissions); err != nil {
		return api.Errorf(api.CodeInvalidArgument, "%v", err)
	}
	switch {
	case req.Workspace == nil:
		return api.Errorf(api.CodeInvalidArgument, "permissions apply to the workspace: create the sandbox with workspace: {hostPath} too")
	case r.cfg.Self == "":
		return api.Errorf(api.CodeUnavailable, "this daemon cannot enforce permissions (it does not know its own binary)")
	}
	return nil
}

// startPermFS starts the permission layer of container id over the host directory source
// and returns where it is mounted.
func (r *Runtime) startPermFS(id, source string, rules []api.PermissionRule, ids permfs.IDs) (string, error) {
	body, err := json.Marshal(api.PermissionsRequest{Permissions: rules})
	if err != nil {
		return "", fmt.Errorf("encode permission rules: %w", err)
	}
	logFile, err := os.Create(filepath.Join(r.sandboxRunDir(id), "permfs.log"))
	if err != nil {
		return "", fmt.Errorf("make permission layer log: %w", err)
	}
	defer logFile.Close()
	ready, readyW, err := os.Pipe()
	if err != nil {
		return "", fmt.Errorf("make pipe: %w", err)
	}
	defer ready.Close()
	dev, err := permfs.Mount(r.permfsMount(id))
	if err != nil {
		return "", err
	}
	defer dev.Close()
	cmd := exec.Command(r.cfg.Self, "permfs", "--source", source, "--control", r.permfsControl(id),
		"--root-uid", strconv.FormatUint(uint64(ids.RootUID), 10), "--root-gid", strconv.FormatUint(uint64(ids.RootGID), 10),
		"--ids-host", strconv.FormatUint(uint64(ids.Host), 10), "--ids-size", strconv.FormatUint(uint64(ids.Size), 10))
	cmd.Stdin, cmd.Stdout, cmd.Stderr = bytes.NewReader(body), logFile, logFile
	cmd.ExtraFiles = []*os.File{readyW, dev}
	// Its own session: a daemon that dies (or is killed by its terminal) leaves it running.
	// Its own mount namespace: it serves from a private tree (permfs.Run).
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Cloneflags: syscall.CLONE_NEWNS}
	err = cmd.Start()
	readyW.Close()
	if err != nil {
		return "", errors.Join(fmt.Errorf("start permission layer: %w", err), rootfs.Detach(r.permfsMount(id)))
	}
	go cmd.Wait() // reaped here while this daemon lives
	if err := os.WriteFile(r.permfsPIDFile(id), []byte(strconv.Itoa(cmd.Process.Pid)), 0o600); err != nil {
		return "", errors.Join(fmt.Errorf("record permission layer: %w", err), r.stopPermFS(id, cmd.Process.Pid))
	}
	ready.SetReadDeadline(time.Now().Add(permfsStartTimeout))
	msg, _ := io.ReadAll(ready)
	if string(msg) != "ok" {
		log, _ := os.ReadFile(logFile.Name())
		return "", errors.Join(fmt.Errorf("permission layer did not start: %s (log: %q)", msg, log), r.stopPermFS(id, cmd.Process.Pid))
	}
	return r.permfsMount(id), nil
}

// releasePermFS stops container id's permission layer, if it has one, and detaches its host
// mount.
func (r *Runtime) releasePermFS(id string) error {
	data, err := os.ReadFile(r.permfsPIDFile(id))
	if errors.Is(err, os.ErrNotExist) {
		return rootfs.Detach(r.permfsMount(id))
	}
	if err != nil {
		return fmt.Errorf("read permission layer's pid: %w", err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(data)))
	if err != nil {
		return fmt.Errorf("permission layer's pid file: %w", err)
	}
	if err := r.stopPermFS(id, pid); err != nil {
		return err
	}
	return os.Remove(r.permfsPIDFile(id))
}

// stopPermFS kills the permission layer pid of container id (when pid is still it: its
// command line names the container's control socket) and waits until it has exited.
func (r *Runtime) stopPermFS(id string, pid int) error {
	err := rootfs.Detach(r.permfsMount(id))
	fd, perr := unix.PidfdOpen(pid, 0)
	if perr != nil {
		return err // gone already
	}
	defer unix.Close(fd)
	cmdline, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if !bytes.Contains(cmdline, []byte(r.permfsControl(id))) {
		return err // the pid is another process's now
	}
	if kerr := unix.PidfdSendSignal(fd, unix.SIGKILL, nil, 0); kerr != nil && kerr != unix.ESRCH {
		return errors.Join(err, fmt.Errorf("kill permission layer: %w", kerr))
	}
	fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
	for {
		if _, perr := unix.Poll(fds, -1); perr != unix.EINTR {
			return errors.Join(err, wrapErr("wait for permission layer", perr))
		}
	}
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
	if _, err := os.Stat(r.permfsPIDFile(sb.rec.container())); err != nil {
		return nil, api.Errorf(api.CodeConflict, "sandbox %q was created without permissions, so its workspace has no permission layer to change; create it with permissions (e.g. [{\"pattern\": \"**\", \"level\": \"write\"}])", id)
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

// pushRules gives container id's permission layer the sandbox's rules, or those of the
// processes in its cgroup named cgroup.
func (r *Runtime) pushRules(ctx context.Context, id, cgroup string, rules []api.PermissionRule) error {
	return r.control(ctx, id, http.MethodPut, path.Join(permfs.ControlPath, cgroup), api.PermissionsRequest{Permissions: rules})
}

// control sends a request (body: JSON, or none when nil) to container id's permission layer.
func (r *Runtime) control(ctx context.Context, id, method, p string, body any) error {
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
		return (&net.Dialer{}).DialContext(ctx, "unix", r.permfsControl(id))
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
		return api.ReadError(resp)
	}
	return nil
}

func (r *Runtime) handleSetPermissions(w http.ResponseWriter, req *http.Request) error {
	var body api.PermissionsRequest
	if err := api.DecodeJSON(w, req, &body, false); err != nil {
		return err
	}
	sb, err := r.SetPermissions(req.Context(), req.PathValue("id"), body.Permissions)
	if err != nil {
		return err
	}
	api.WriteJSON(w, http.StatusOK, sb)
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
	if _, err := os.Stat(r.permfsPIDFile(l.rec.container())); err != nil {
		return nil, api.Errorf(api.CodeInvalidArgument, "sandbox %q was created without permissions, so its sessions cannot have their own; create it with permissions (e.g. [{\"pattern\": \"**\", \"level\": \"write\"}])", l.rec.ID)
	}
	wide, err := perms.Compile(l.rec.Permissions)
	if err != nil {
		return nil, fmt.Errorf("sandbox %s's recorded permissions: %w", l.rec.ID, err)
	}
	if err := perms.Within(narrow, wide); err != nil {
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
		if err := r.control(req.Context(), container, http.MethodPut, path.Join(permfs.CallersPath, tid, sessionCgroup(sid)), nil); err != nil {
			return nil, err
		}
		return func() {
			if err := r.control(context.Background(), container, http.MethodDelete, path.Join(permfs.CallersPath, tid), nil); err != nil {
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
