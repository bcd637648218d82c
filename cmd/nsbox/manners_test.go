package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nsbox/nsbox/api"
)

// TestCLIManners: flags after arguments work or are refused (never taken as arguments), usage
// errors are one line on stderr with a hint and exit 2, failures exit with their kind's code,
// and the completion scripts are there.
func TestCLIManners(t *testing.T) {
	d := startDaemon(t)
	d.create(api.CreateSandboxRequest{ID: "m1", Image: "busybox"})
	d.create(api.CreateSandboxRequest{ID: "m2", Image: "busybox"})

	// Flags after positional arguments.
	if out, errOut, code := d.cli("", "exec", "m1", "--timeout", "300ms", "--", "sleep", "5"); code != 124 {
		t.Errorf("exec ID --timeout 300ms -- sleep 5: exit %d, %q %q; want 124", code, out, errOut)
	}
	if out, _, code := d.cli("", "exec", "m1", "ls", "-d", "/tmp"); code != 0 || out != "/tmp\n" {
		t.Errorf("exec ID ls -d /tmp (flags of the command line stay its own): exit %d, %q", code, out)
	}
	if out, _, code := d.cli("", "sh", "m1", "echo $X", "-e", "X=late"); code != 0 || out != "late\n" {
		t.Errorf("sh ID CMD -e X=late: exit %d, %q", code, out)
	}
	if _, errOut, code := d.cli("", "rm", "m2", "--bogus"); code != exitUsage || strings.Count(strings.TrimSpace(errOut), "\n") != 0 || !strings.Contains(errOut, "--bogus") {
		t.Errorf("rm ID --bogus: exit %d, stderr %q; want 2 and one line naming the flag", code, errOut)
	}
	if _, _, code := d.cli("", "inspect", "m2"); code != 0 {
		t.Fatal("rm ID --bogus removed the sandbox")
	}
	if out, _, code := d.cli("", "rm", "m2", "--force"); code != 0 || out != "m2\n" {
		t.Errorf("rm ID --force: exit %d, %q", code, out)
	}

	// Usage errors: one line, a hint, nothing on stdout, exit 2.
	for _, args := range [][]string{{"rm", "--nope", "m1"}, {"no-such-command"}, {"exec", "--timeout", "5", "m1", "--", "true"}, {"exec"}, {"fork", "--count", "0", "m1"}} {
		out, errOut, code := d.cli("", args...)
		if code != exitUsage || out != "" || strings.Count(strings.TrimSpace(errOut), "\n") != 0 {
			t.Errorf("nsbox %v: exit %d, stdout %q, stderr %q; want 2, nothing on stdout, one line", args, code, out, errOut)
		}
	}
	if _, errOut, _ := d.cli("", "exec", "--timeout", "5", "m1", "--", "true"); !strings.Contains(errOut, "durations need a unit") {
		t.Errorf("a duration without a unit: %q; want a hint", errOut)
	}

	// Exit codes by kind of failure.
	if _, _, code := d.cli("", "inspect", "nope"); code != exitNotFound {
		t.Errorf("inspect of a missing sandbox: exit %d, want %d", code, exitNotFound)
	}
	if _, _, code := d.cli("", "rm", "nope"); code != exitNotFound {
		t.Errorf("rm of a missing sandbox: exit %d, want %d", code, exitNotFound)
	}
	if _, _, code := d.cli("", "resume", "m1"); code != exitConflict {
		t.Errorf("resume of a running sandbox: exit %d, want %d", code, exitConflict)
	}
	cmd := exec.Command(nsboxBin, "--socket", filepath.Join(t.TempDir(), "none.sock"), "ls")
	if err := cmd.Run(); cmd.ProcessState.ExitCode() != exitUnreachable {
		t.Errorf("ls without a daemon: %v, exit %d, want %d", err, cmd.ProcessState.ExitCode(), exitUnreachable)
	}

	// Completion.
	for shell, want := range map[string]string{"bash": "complete -o default -F _nsbox_complete nsbox", "zsh": "compdef _nsbox nsbox", "fish": "complete -c nsbox"} {
		if out, errOut, code := d.cli("", "completion", shell); code != 0 || !strings.Contains(out, want) {
			t.Errorf("completion %s: exit %d, %q %q", shell, code, out, errOut)
		}
	}
	script, _, _ := d.cli("", "completion", "bash")
	if out, err := exec.Command("bash", "-n", "-c", script).CombinedOutput(); err != nil {
		t.Errorf("the bash completion script: %v %s", err, out)
	}
	if out, _, _ := d.cli("", "--generate-bash-completion"); !strings.Contains(out, "exec") || !strings.Contains(out, "hibernate") {
		t.Errorf("completion words: %q", out)
	}
}

// TestDaemonFlagsCheckedFirst: a daemon started with a bad flag says what is wrong with the
// flag, even on a host where it could not start anyway (here: a run dir the sandboxes could
// not reach), and writes nothing before it has checked them all.
func TestDaemonFlagsCheckedFirst(t *testing.T) {
	for _, c := range []struct {
		flags []string
		want  string
	}{
		{[]string{"--listen", "tcp://0.0.0.0:7443"}, "needs --tls-cert and --tls-key unless its address is loopback"},
		{[]string{"--listen", "ftp://x"}, "--listen"},
		{[]string{"--tls-client-ca", "/nonexistent"}, "--tls-client-ca needs --tls-cert and --tls-key"},
		{[]string{"--max-disk", "-5"}, "--max-disk: -5 is negative"},
		{[]string{"--default-disk", "-1"}, "--default-disk: -1 is negative"},
		{[]string{"--force"}, "--force goes with --cleanup"},
		{[]string{"--warm-pool", "busybox=x"}, "warm"},
		{[]string{"--userns-range", "nonsense"}, "--userns-range"},
	} {
		dataDir := t.TempDir()
		args := append([]string{"daemon", "--data-dir", dataDir, "--run-dir", t.TempDir()}, c.flags...)
		out, err := exec.Command(nsboxBin, args...).CombinedOutput()
		if err == nil || !strings.Contains(string(out), c.want) {
			t.Errorf("daemon %v: %v, %q; want an error naming %q", c.flags, err, out, c.want)
		}
		if entries, err := os.ReadDir(dataDir); err != nil || len(entries) != 0 {
			t.Errorf("daemon %v wrote into its data dir before refusing its flags: %v %v", c.flags, entries, err)
		}
	}
}
