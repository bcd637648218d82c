package net

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"

	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// nsID identifies a namespace file independently of the path it was opened by.
type nsID struct {
	Dev uint64 `json:"dev"`
	Ino uint64 `json:"ino"`
}

// openNetns opens the network namespace at path and returns its handle and identity.
func openNetns(path string) (netns.NsHandle, nsID, error) {
	h, err := netns.GetFromPath(path)
	if err != nil {
		return netns.None(), nsID{}, fmt.Errorf("open network namespace %s: %w", path, err)
	}
	var st unix.Stat_t
	if err := unix.Fstat(int(h), &st); err != nil {
		h.Close()
		return netns.None(), nsID{}, fmt.Errorf("stat network namespace %s: %w", path, err)
	}
	return h, nsID{Dev: st.Dev, Ino: st.Ino}, nil
}

// reopenNetns opens path again and checks that it still names the namespace it named when
// the sandbox was attached: a /proc/<pid>/ns/net path of a sandbox that died may by now
// belong to an unrelated process.
func reopenNetns(path string, want nsID) (netns.NsHandle, error) {
	h, id, err := openNetns(path)
	if err != nil {
		return netns.None(), err
	}
	if id != want {
		h.Close()
		return netns.None(), fmt.Errorf("network namespace %s is no longer the sandbox's (it has exited)", path)
	}
	return h, nil
}

// inNetns runs fn on an OS thread that has entered the network namespace ns, for the few
// things that have no netlink interface taking a namespace (per-interface sysctls, sockets).
// The thread returns to its own namespace afterwards; if that fails it stays locked, so the
// runtime ends it with the goroutine instead of reusing it.
func inNetns(ns netns.NsHandle, fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("get current network namespace: %w", err)
			return
		}
		defer orig.Close()
		if err := netns.Set(ns); err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("enter network namespace: %w", err)
			return
		}
		fnErr := fn()
		if err := netns.Set(orig); err != nil {
			errc <- errors.Join(fnErr, fmt.Errorf("return to the host network namespace: %w", err))
			return
		}
		runtime.UnlockOSThread()
		errc <- fnErr
	}()
	return <-errc
}

// setIPv4Conf sets net.ipv4.conf.<dev>.<key> in the calling thread's network namespace.
func setIPv4Conf(dev, key, value string) error {
	path := filepath.Join("/proc/sys/net/ipv4/conf", dev, key)
	if err := os.WriteFile(path, []byte(value), 0o644); err != nil {
		return fmt.Errorf("set net.ipv4.conf.%s.%s=%s: %w", dev, key, value, err)
	}
	return nil
}

func getIPv4Conf(dev, key string) (string, error) {
	data, err := os.ReadFile(filepath.Join("/proc/sys/net/ipv4/conf", dev, key))
	if err != nil {
		return "", fmt.Errorf("read net.ipv4.conf.%s.%s: %w", dev, key, err)
	}
	return strings.TrimSpace(string(data)), nil
}
