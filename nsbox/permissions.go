package nsbox

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/nsbox/nsbox/api"
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
	cmd := exec.Command(r.cfg.Self, "permfs", "--source", source, "--mountpoint", r.permfsMount(id), "--control", r.permfsControl(id),
		"--root-uid", strconv.FormatUint(uint64(ids.RootUID), 10), "--root-gid", strconv.FormatUint(uint64(ids.RootGID), 10),
		"--ids-host", strconv.FormatUint(uint64(ids.Host), 10), "--ids-size", strconv.FormatUint(uint64(ids.Size), 10))
	cmd.Stdin, cmd.Stdout, cmd.Stderr = bytes.NewReader(body), logFile, logFile
	cmd.ExtraFiles = []*os.File{readyW}
	// Its own session: a daemon that dies (or is killed by its terminal) leaves it running.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	err = cmd.Start()
	readyW.Close()
	if err != nil {
		return "", fmt.Errorf("start permission layer: %w", err)
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
	if err := r.pushPermissions(ctx, sb.rec.container(), rules); err != nil {
		return nil, err
	}
	if err := r.update(sb, func(rec *record) { rec.Permissions = rules }); err != nil {
		return nil, errors.Join(err, r.pushPermissions(context.WithoutCancel(ctx), sb.rec.container(), sb.rec.Permissions))
	}
	r.log.Info("sandbox permissions changed", "sandbox", id, "rules", len(rules))
	out := sb.rec.Sandbox
	return &out, nil
}

// pushPermissions gives container id's permission layer its rules.
func (r *Runtime) pushPermissions(ctx context.Context, id string, rules []api.PermissionRule) error {
	ctx, cancel := context.WithTimeout(ctx, permfsControlTimeout)
	defer cancel()
	body, err := json.Marshal(api.PermissionsRequest{Permissions: rules})
	if err != nil {
		return fmt.Errorf("encode permission rules: %w", err)
	}
	client := http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", r.permfsControl(id))
	}}}
	req, err := http.NewRequestWithContext(ctx, http.MethodPut, "http://permfs"+permfs.ControlPath, bytes.NewReader(body))
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
