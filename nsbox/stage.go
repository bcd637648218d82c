package nsbox

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/nsbox/nsbox/internal/atomicfile"
	"github.com/nsbox/nsbox/rootfs"
)

// The stage is the daemon's own tmpfs at <RunDir>/stage (rootfs.MountStage), where the files
// every container gets by bind mount come from: the agent binary (a copy of Config.Agent) and
// each container's /etc/hosts and /etc/resolv.conf (<stage>/<container>/). A bind mount's root
// field in a sandbox's mountinfo is its file's path within its file system: from the stage it
// is /nsbox-agent-<hash> or /<container>/hosts, not a path of the daemon's data or run dir.
//
// A daemon mounts it when it opens (or finds the one a killed daemon left) and detaches it
// when it closes, as `daemon --cleanup` does: running sandboxes keep their binds (and the
// tmpfs with them), and no container needs its files rewritten after its start.

// stageDir is the stage of the daemon whose run dir is runDir.
func stageDir(runDir string) string { return filepath.Join(runDir, "stage") }

// StagedAgent is where a daemon with the run dir runDir puts its copy of the agent binary
// agent (Config.Agent): the path its backend must mount into containers.
func StagedAgent(runDir, agent string) string {
	return filepath.Join(stageDir(runDir), filepath.Base(agent))
}

// openStage mounts the stage and copies the agent into it (unless a killed daemon's stage
// has it already).
func (r *Runtime) openStage() error {
	if err := rootfs.MountStage(stageDir(r.cfg.RunDir)); err != nil {
		return err
	}
	if r.cfg.Agent == "" {
		return nil
	}
	staged := StagedAgent(r.cfg.RunDir, r.cfg.Agent)
	if fi, err := os.Stat(staged); err == nil && fi.Mode().Perm() == 0o755 {
		return nil
	}
	src, err := os.Open(r.cfg.Agent)
	if err != nil {
		return fmt.Errorf("stage the agent binary: %w", err)
	}
	defer src.Close()
	// Not writable by anyone, executable by the sandboxes' roots (other users on the host).
	if err := atomicfile.WriteFrom(staged, src, 0o755); err != nil {
		return fmt.Errorf("stage the agent binary: %w", err)
	}
	return nil
}

// closeStage detaches the stage from the host.
func (r *Runtime) closeStage() {
	if err := rootfs.Detach(stageDir(r.cfg.RunDir)); err != nil {
		r.log.Warn("detach the stage", "err", err)
	}
}

// containerFiles is the directory in the stage of the files a container gets by bind mount.
func (r *Runtime) containerFiles(container string) string {
	return filepath.Join(stageDir(r.cfg.RunDir), container)
}

// removeRunDirs removes a container's run dir and its files in the stage.
func (r *Runtime) removeRunDirs(container string) error {
	return errors.Join(os.RemoveAll(r.sandboxRunDir(container)), os.RemoveAll(r.containerFiles(container)))
}
