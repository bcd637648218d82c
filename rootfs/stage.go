package rootfs

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// StageSize bounds a stage (MountStage): the agent binary and two small files per sandbox.
const StageSize = "256m"

// MountStage attaches a tmpfs of its own (mode 0711, nosuid, nodev) at dir, unless a tmpfs is
// mounted there already (what a daemon that was killed left: its sandboxes' files are in it).
// Files a sandbox gets by bind mount come from a stage: the root field of such a mount in the
// sandbox's mountinfo is the file's path within its file system, /<name> here, where a file
// on the host's disk (or in a run dir on /run) shows its host path. Detach removes it.
func MountStage(dir string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("make stage %s: %w", dir, err)
	}
	mounted, err := isTmpfsMount(dir)
	if err != nil || mounted {
		return err
	}
	fd, err := stagingTmpfs(StageSize, "711", unix.MOUNT_ATTR_NOSUID|unix.MOUNT_ATTR_NODEV)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	if err := unix.MoveMount(fd, "", unix.AT_FDCWD, dir, unix.MOVE_MOUNT_F_EMPTY_PATH); err != nil {
		return fmt.Errorf("attach stage at %s: %w", dir, err)
	}
	// Private: a sandbox's copy of a bind from it never sees the host's later mounts here.
	if err := unix.Mount("", dir, "", unix.MS_PRIVATE, ""); err != nil {
		return errors.Join(fmt.Errorf("make stage %s private: %w", dir, err), Detach(dir))
	}
	return nil
}

// isTmpfsMount reports whether a tmpfs is mounted at dir itself (not only above it).
func isTmpfsMount(dir string) (bool, error) {
	var fs unix.Statfs_t
	if err := unix.Statfs(dir, &fs); err != nil {
		return false, fmt.Errorf("stat %s: %w", dir, err)
	}
	if fs.Type != unix.TMPFS_MAGIC {
		return false, nil
	}
	var st, parent unix.Stat_t
	if err := errors.Join(unix.Stat(dir, &st), unix.Stat(filepath.Dir(dir), &parent)); err != nil {
		return false, fmt.Errorf("stat %s: %w", dir, err)
	}
	return st.Dev != parent.Dev, nil
}
