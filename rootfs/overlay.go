package rootfs

import (
	"errors"
	"fmt"
	"os"
	"strings"

	"golang.org/x/sys/unix"
)

// MountOverlay mounts overlay(lower = layers, upper) at target, with OverlayOptions, and makes
// the mount private, so that unmounting it on the host later never propagates into a sandbox
// that uses it.
func MountOverlay(layers []string, upper, work, target string) error {
	for _, d := range []string{upper, work, target} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return fmt.Errorf("make %s: %w", d, err)
		}
	}
	opts := fmt.Sprintf("lowerdir=%s,upperdir=%s,workdir=%s,%s", strings.Join(layers, ":"), upper, work, OverlayOptions)
	if err := unix.Mount("overlay", target, "overlay", 0, opts); err != nil {
		return fmt.Errorf("mount overlay at %s: %w", target, err)
	}
	if err := unix.Mount("", target, "", unix.MS_PRIVATE, ""); err != nil {
		_ = unix.Unmount(target, unix.MNT_DETACH)
		return fmt.Errorf("make %s private: %w", target, err)
	}
	return nil
}

// Detach lazily unmounts target from the host's mount table. A running sandbox keeps its own
// copy of the mount (its root) until its last process exits; nothing stays on the host.
// A target that is not mounted (or does not exist) is not an error.
func Detach(target string) error {
	err := unix.Unmount(target, unix.MNT_DETACH)
	if err == nil || errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOENT) {
		return nil
	}
	return fmt.Errorf("unmount %s: %w", target, err)
}
