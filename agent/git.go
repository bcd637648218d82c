package agent

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"syscall"

	"github.com/nsbox/nsbox/agent/httpd"
	"github.com/nsbox/nsbox/api"
)

// gitCredentialHelper answers git's request for credentials with the token it reads from fd
// 3, a pipe only this call's git (and its helper) inherit: the token is never in an argument,
// the environment, a file or a log. (The helper runs once per checkout: the pipe holds the
// token once.)
const gitCredentialHelper = `!f() { test "$1" = get || exit 0; t=$(cat <&3); printf 'username=x-access-token\npassword=%s\n' "$t"; }; f`

// handleGitCheckout clones a repository into a directory of the sandbox, or fetches and checks
// out when the directory is a clone of it already, with the image's git, as the session's user
// (or the sandbox's default user). With Accept: text/event-stream git's progress streams as it comes.
func (a *Agent) handleGitCheckout(w *httpd.ResponseWriter, r *httpd.Request) error {
	var req api.GitCheckoutRequest
	if err := api.DecodeBody(r.Body, &req, false); err != nil {
		return err
	}
	switch {
	case req.URL == "" || strings.HasPrefix(req.URL, "-"):
		return api.Errorf(api.CodeInvalidArgument, "url is required: a repository git can clone (https://…, ssh://…, file://…)")
	case req.TargetDir == "":
		return api.Errorf(api.CodeInvalidArgument, "targetDir is required")
	case req.Depth < 0:
		return api.Errorf(api.CodeInvalidArgument, "depth must not be negative")
	case strings.HasPrefix(req.Branch, "-"):
		return api.Errorf(api.CodeInvalidArgument, "invalid branch %q", req.Branch)
	}
	who, err := a.caller(r.Context(), req.SessionID)
	if err != nil {
		return err
	}
	g := gitRun{a: a, who: who, token: req.Token}
	dir := who.dir(req.TargetDir)
	var progress func(string)
	var events *api.SSEWriter
	if api.AcceptsEventStream(r.Header("Accept")) {
		events = openEventStream(w)
		progress = func(line string) {
			_ = events.Send(api.EventProgress, api.GitProgressEvent{Type: api.EventProgress, Line: line})
		}
	}
	res, err := g.checkout(r.Context(), req, dir, progress)
	switch {
	case events != nil && err != nil:
		_ = events.SendError(err)
	case events != nil:
		_ = events.Send(api.EventDone, api.GitProgressEvent{Type: api.EventDone, Result: res})
	case err != nil:
		return err
	default:
		api.WriteJSON(w, httpd.StatusOK, res)
	}
	return nil
}

// gitRun runs git for one checkout.
type gitRun struct {
	a     *Agent
	who   caller
	token string
}

func (g gitRun) checkout(ctx context.Context, req api.GitCheckoutRequest, dir string, progress func(string)) (*api.GitCheckoutResult, error) {
	res := &api.GitCheckoutResult{Dir: dir}
	entries, err := os.ReadDir(dir)
	switch {
	case errors.Is(err, os.ErrNotExist) || (err == nil && len(entries) == 0):
		args := []string{"clone", "--progress"}
		if req.Depth > 0 {
			args = append(args, "--depth", fmt.Sprint(req.Depth))
		}
		if req.Branch != "" {
			args = append(args, "--branch", req.Branch)
		}
		if _, err := g.git(ctx, "", progress, append(args, "--", req.URL, dir)...); err != nil {
			return nil, err
		}
		res.Cloned = true
	case err != nil:
		return nil, api.Errorf(api.CodeInvalidArgument, "targetDir %s: %v", dir, err)
	default:
		origin, err := g.git(ctx, dir, nil, "config", "--get", "remote.origin.url")
		if err != nil || strings.TrimSpace(origin) != req.URL {
			return nil, api.Errorf(api.CodeConflict, "targetDir %s is not empty and not a clone of %s; choose an empty or missing directory", dir, req.URL)
		}
		args := []string{"fetch", "--progress", "origin"}
		if req.Depth > 0 {
			args = append(args, "--depth", fmt.Sprint(req.Depth))
		}
		if req.Branch != "" {
			args = append(args, req.Branch)
		}
		if _, err := g.git(ctx, dir, progress, args...); err != nil {
			return nil, err
		}
		// What was fetched becomes the local branch of that name (or main), as a clone would have it.
		if _, err := g.git(ctx, dir, progress, "checkout", "--quiet", "-B", branchName(req.Branch), "FETCH_HEAD"); err != nil {
			return nil, err
		}
	}
	if res.Commit, err = g.git(ctx, dir, nil, "rev-parse", "HEAD"); err != nil {
		return nil, err
	}
	res.Commit = strings.TrimSpace(res.Commit)
	if branch, err := g.git(ctx, dir, nil, "rev-parse", "--abbrev-ref", "HEAD"); err == nil {
		res.Branch = strings.TrimSpace(branch)
	}
	return res, nil
}

// branchName is the local branch a fetch checks out: the requested one, or "main".
func branchName(b string) string {
	if b == "" {
		return "main"
	}
	return b
}

// git runs git with args (in dir when not "") as the caller, and returns its stdout. Its
// stderr goes to progress line by line; a failure is an API error that says what failed.
func (g gitRun) git(ctx context.Context, dir string, progress func(string), args ...string) (string, error) {
	path, err := lookGit(g.who.env["PATH"])
	if err != nil {
		return "", err
	}
	full := []string{"git", "-c", "credential.helper=", "-c", "credential.helper=" + gitCredentialHelper, "-c", "core.askPass=true"}
	if dir != "" {
		full = append(full, "-C", dir)
	}
	full = append(full, args...)
	env := g.who.environ()
	env = append(env, "GIT_TERMINAL_PROMPT=0", "GIT_ASKPASS=true", "SSH_ASKPASS=true")
	devnull, err := os.Open(os.DevNull)
	if err != nil {
		return "", fmt.Errorf("open %s: %w", os.DevNull, err)
	}
	defer devnull.Close()
	outR, outW, err := os.Pipe()
	if err != nil {
		return "", fmt.Errorf("git's stdout: %w", err)
	}
	errR, errW, err := os.Pipe()
	if err != nil {
		closeFiles(outR, outW)
		return "", fmt.Errorf("git's stderr: %w", err)
	}
	tokR, tokW, err := os.Pipe()
	if err != nil {
		closeFiles(outR, outW, errR, errW)
		return "", fmt.Errorf("git's credential pipe: %w", err)
	}
	_, exited, err := g.a.procs.start(path, full, &os.ProcAttr{
		Dir: g.who.cwd, Env: env, Files: []*os.File{devnull, outW, errW, tokR},
		Sys: &syscall.SysProcAttr{Setpgid: true,
			Credential: &syscall.Credential{Uid: uint32(g.who.uid), Gid: uint32(g.who.gid), NoSetGroups: true}},
	}, nil)
	closeFiles(outW, errW, tokR)
	if err != nil {
		closeFiles(outR, errR, tokW)
		return "", fmt.Errorf("start git: %w", err)
	}
	go func() {
		_, _ = io.WriteString(tokW, g.token) // a small write: the pipe holds it whoever reads
		tokW.Close()
	}()
	var stdout, stderr bytes.Buffer
	done := make(chan struct{})
	go func() {
		lines := bufio.NewScanner(errR)
		lines.Split(scanProgress)
		for lines.Scan() {
			line := lines.Text()
			stderr.WriteString(line + "\n")
			if progress != nil && line != "" {
				progress(line)
			}
		}
		close(done)
	}()
	_, _ = io.Copy(&stdout, outR)
	<-done
	closeFiles(outR, errR)
	ws := <-exited
	if ws.ExitStatus() != 0 {
		return "", gitError(args[0], stderr.String())
	}
	return stdout.String(), nil
}

// scanProgress splits git's stderr at newlines and at the carriage returns its progress meters
// use.
func scanProgress(data []byte, atEOF bool) (int, []byte, error) {
	if i := bytes.IndexAny(data, "\r\n"); i >= 0 {
		return i + 1, data[:i], nil
	}
	if atEOF && len(data) > 0 {
		return len(data), data, nil
	}
	return 0, nil, nil
}

// gitError turns a failed git command into an API error that says what failed.
func gitError(cmd, stderr string) error {
	var fatal []string
	for _, line := range strings.Split(stderr, "\n") {
		if strings.HasPrefix(line, "fatal: ") || strings.HasPrefix(line, "error: ") {
			fatal = append(fatal, line)
		}
	}
	msg := strings.Join(fatal, "; ")
	if msg == "" {
		msg = strings.TrimSpace(stderr)
	}
	lower := strings.ToLower(msg)
	switch {
	case strings.Contains(lower, "authentication failed") || strings.Contains(lower, "could not read username") || strings.Contains(lower, "permission denied"):
		return api.Errorf(api.CodePermissionDenied, "git %s: authentication failed: %s", cmd, msg)
	case strings.Contains(lower, "not found in upstream") || strings.Contains(lower, "couldn't find remote ref") || strings.Contains(lower, "pathspec"):
		return api.Errorf(api.CodeNotFound, "git %s: no such branch: %s", cmd, msg)
	case strings.Contains(lower, "does not exist") || strings.Contains(lower, "not found") || strings.Contains(lower, "does not appear to be a git repository"):
		return api.Errorf(api.CodeNotFound, "git %s: repository not found: %s", cmd, msg)
	case strings.Contains(lower, "already exists and is not an empty directory"):
		return api.Errorf(api.CodeConflict, "git %s: %s", cmd, msg)
	}
	return api.Errorf(api.CodeInvalidArgument, "git %s failed: %s", cmd, msg)
}

// lookGit finds the image's git in PATH.
func lookGit(path string) (string, error) {
	for _, dir := range strings.Split(path, ":") {
		p := dir + "/git"
		if fi, err := os.Stat(p); err == nil && !fi.IsDir() && fi.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return "", api.Errorf(api.CodeInvalidArgument, "this sandbox's image has no git (looked in PATH %s)", path)
}

func closeFiles(files ...*os.File) {
	for _, f := range files {
		f.Close()
	}
}
