package nsbox

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"syscall"
	"time"

	"github.com/nsbox/nsbox/api"
)

// checkpointProbeTimeout bounds each step of the CRIU probe: on some kernels a dump hangs
// ("Waiting for … to trap") instead of failing.
const checkpointProbeTimeout = 5 * time.Second

// DetectCheckpoint finds out at the daemon's start whether CRIU can checkpoint processes on
// this host: `criu check` must pass and a dump of a probe process (a sleep in its own session)
// must succeed within checkpointProbeTimeout. The answer is shown by GET /v1/version.
func DetectCheckpoint() api.Checkpoint {
	criu, err := exec.LookPath("criu")
	if err != nil {
		return api.Checkpoint{Reason: "criu is not installed"}
	}
	if out, err := runBounded(criu, "check"); err != nil {
		return api.Checkpoint{Reason: fmt.Sprintf("criu check fails: %v: %s", err, lastLine(out))}
	}
	probe := exec.Command("sleep", "60")
	probe.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := probe.Start(); err != nil {
		return api.Checkpoint{Reason: fmt.Sprintf("start a probe process: %v", err)}
	}
	defer func() {
		_ = probe.Process.Kill()
		_ = probe.Wait()
	}()
	dir, err := os.MkdirTemp("", "nsbox-criu-probe-")
	if err != nil {
		return api.Checkpoint{Reason: fmt.Sprintf("make a probe dump dir: %v", err)}
	}
	defer os.RemoveAll(dir)
	if out, err := runBounded(criu, "dump", "-t", strconv.Itoa(probe.Process.Pid), "-D", dir, "--leave-running"); err != nil {
		return api.Checkpoint{Reason: fmt.Sprintf("a probe dump fails: %v: %s", err, lastLine(out))}
	}
	return api.Checkpoint{Available: true}
}

// runBounded runs a command for at most checkpointProbeTimeout and returns its output.
func runBounded(name string, args ...string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(context.Background(), checkpointProbeTimeout)
	defer cancel()
	out, err := exec.CommandContext(ctx, name, args...).CombinedOutput()
	if ctx.Err() != nil {
		return out, fmt.Errorf("no answer within %s", checkpointProbeTimeout)
	}
	return out, err
}

// lastLine is the last non-empty line of a command's output.
func lastLine(out []byte) string {
	lines := bytes.Split(bytes.TrimSpace(out), []byte("\n"))
	return string(lines[len(lines)-1])
}
