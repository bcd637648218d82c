package rootfs

import (
	"errors"
	"fmt"
	"os"
	"strings"

	"golang.org/x/sys/unix"
)

// MountOverlay mounts overlay(lower = layers, upper) at target, with OverlayOptions, nosuid and
// nodev (nothing a sandbox writes is a setuid program or a device on the host), and makes the
// mount private, so that unmounting it on the host later never propagates into a sandbox that
// uses it. With a user namespace's mapping ids, the lowers are id-mapped through it (a file of
// the host's root shows as the namespace's root) and the new upper and work dirs belong to the
// namespace's root; nothing else is chowned.
func MountOverlay(layers []string, upper, work, target string, ids IDMap) error {
	for _, d := range []string{upper, work, target} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return fmt.Errorf("make %s: %w", d, err)
		}
	}
	if err := mountOverlay(layers, upper, work, target, ids); err != nil {
		return err
	}
	if err := unix.Mount("", target, "", unix.MS_PRIVATE, ""); err != nil {
		_ = unix.Unmount(target, unix.MNT_DETACH)
		return fmt.Errorf("make %s private: %w", target, err)
	}
	return nil
}

// mountOverlay mounts the overlay through a staging tmpfs (mountStagedOverlay), so that its
// options in a sandbox's mountinfo name no host path, with or without a user namespace.
// Without one, a kernel that refuses the staging (EINVAL: "lowerdir+" is Linux 6.8's) gets the
// layers by their host paths.
func mountOverlay(layers []string, upper, work, target string, ids IDMap) error {
	const attrs = unix.MOUNT_ATTR_NOSUID | unix.MOUNT_ATTR_NODEV
	if !ids.Enabled() {
		err := mountStagedOverlay(layers, upper, work, target, nil, attrs)
		if !errors.Is(err, unix.EINVAL) {
			return err
		}
		opts := fmt.Sprintf("lowerdir=%s,upperdir=%s,workdir=%s,%s", strings.Join(layers, ":"), upper, work, OverlayOptions)
		if err := unix.Mount("overlay", target, "overlay", unix.MS_NOSUID|unix.MS_NODEV, opts); err != nil {
			return fmt.Errorf("mount overlay at %s: %w", target, err)
		}
		return nil
	}
	for _, d := range []string{upper, work} {
		if err := os.Chown(d, int(ids.Host), int(ids.Host)); err != nil {
			return fmt.Errorf("give %s to the sandbox's root: %w", d, err)
		}
	}
	userns, err := UserNS(ids)
	if err != nil {
		return err
	}
	return mountStagedOverlay(layers, upper, work, target, userns, attrs)
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
