package main

import (
	"errors"
	"os"
	"os/exec"
	"strings"
	"testing"
)

// TestRefusesWhatItDoesNotKnow runs the agent's main as the daemon would start it, but with
// arguments it must refuse: an agent that skipped one (the seccomp filter's descriptor) would
// run without what it holds.
func TestRefusesWhatItDoesNotKnow(t *testing.T) {
	if os.Getenv("NSBOX_AGENT_MAIN") != "" {
		os.Args = append([]string{"nsbox-agent"}, strings.Fields(os.Getenv("NSBOX_AGENT_MAIN"))...)
		main()
		return
	}
	for args, want := range map[string]string{
		"serve":                              "the daemon starts it as",
		"agent --listen-fd 3 --sekkomp-fd 5": `unknown argument "--sekkomp-fd"`,
		"agent --listen-fd 3 --seccomp-fd":   "--seccomp-fd needs a descriptor",
		"agent --listen-fd three":            `--listen-fd: strconv.Atoi: parsing "three"`,
	} {
		cmd := exec.Command(os.Args[0], "-test.run=^TestRefusesWhatItDoesNotKnow$")
		cmd.Env = append(os.Environ(), "NSBOX_AGENT_MAIN="+args)
		out, err := cmd.CombinedOutput()
		var exit *exec.ExitError
		if !errors.As(err, &exit) || exit.ExitCode() != 2 || !strings.Contains(string(out), want) {
			t.Errorf("%s: %v %q, want exit 2 and %q", args, err, out, want)
		}
	}
}
