package permfs

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strconv"
	"time"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"

	"github.com/nsbox/nsbox/api"
	"github.com/nsbox/nsbox/perms"
)

// cacheTimeout is how long the kernel may keep a name or attributes without asking again;
// a change of rules makes it forget the names at once (SetRules).
const cacheTimeout = time.Second

// The control socket's endpoints: PUT ControlPath the sandbox's new rules, PUT or DELETE
// ControlPath/{cgroup} a session's (api.PermissionsRequest); 204 once they hold for every
// later lookup and open.
const ControlPath = "/rules"

// CallersPath/{tid}/{cgroup}: PUT has the daemon's thread tid act for the processes in the
// cgroup (a session's file calls), DELETE CallersPath/{tid} ends that.
const CallersPath = "/callers"

// actFor serves CallersPath.
func actFor(f *FS) http.HandlerFunc {
	return func(w http.ResponseWriter, req *http.Request) {
		tid, err := strconv.ParseUint(req.PathValue("tid"), 10, 32)
		if err != nil {
			http.Error(w, "bad thread id", http.StatusBadRequest)
			return
		}
		f.ActFor(uint32(tid), req.PathValue("cgroup"))
		w.WriteHeader(http.StatusNoContent)
	}
}

// Config is what one permission layer serves.
type Config struct {
	Source     string // the workspace's directory on the host
	Mountpoint string // where the layer is mounted on the host
	Control    string // its control socket
	Rules      *perms.Set
	IDs        IDs
	Log        *slog.Logger
	// Ready is told "ok" once the layer is mounted and served, or why it could not be.
	Ready *os.File
}

// Run mounts the layer, chroots into the source, serves until its file system is gone and
// returns then.
func Run(cfg Config) error {
	srv, f, ln, err := mount(cfg)
	if err != nil {
		fmt.Fprintf(cfg.Ready, "%v", err)
		cfg.Ready.Close()
		return err
	}
	mux := http.NewServeMux()
	set := api.Handle(cfg.Log, func(w http.ResponseWriter, req *http.Request) error {
		var body api.PermissionsRequest
		if err := api.DecodeJSON(w, req, &body, false); err != nil {
			return err
		}
		rules, err := perms.Compile(body.Permissions)
		if err != nil {
			return api.Errorf(api.CodeInvalidArgument, "%v", err)
		}
		if name := req.PathValue("cgroup"); name != "" {
			f.SetSession(name, rules)
		} else {
			f.SetRules(rules)
		}
		w.WriteHeader(http.StatusNoContent)
		return nil
	})
	mux.HandleFunc("PUT "+ControlPath, set)
	mux.HandleFunc("PUT "+ControlPath+"/{cgroup}", set)
	mux.HandleFunc("DELETE "+ControlPath+"/{cgroup}", func(w http.ResponseWriter, req *http.Request) {
		f.SetSession(req.PathValue("cgroup"), nil)
		w.WriteHeader(http.StatusNoContent)
	})
	mux.HandleFunc("PUT "+CallersPath+"/{tid}/{cgroup}", actFor(f))
	mux.HandleFunc("DELETE "+CallersPath+"/{tid}", actFor(f))
	go (&http.Server{Handler: mux}).Serve(ln)
	cfg.Ready.WriteString("ok")
	cfg.Ready.Close()
	srv.Wait()
	return nil
}

// mount opens what the layer needs from the host (the source, /dev/fuse, the control socket),
// mounts the layer, chroots into the source and starts serving.
func mount(cfg Config) (*fuse.Server, *FS, net.Listener, error) {
	src, err := unix.Open(cfg.Source, unix.O_DIRECTORY|unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("open workspace %s: %w", cfg.Source, err)
	}
	dev, err := unix.Open("/dev/fuse", unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("open /dev/fuse: %w", err)
	}
	if err := os.Remove(cfg.Control); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, nil, nil, fmt.Errorf("remove stale control socket: %w", err)
	}
	ln, err := net.Listen("unix", cfg.Control)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("listen on control socket: %w", err)
	}
	proc, err := unix.Open("/proc", unix.O_DIRECTORY|unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("open /proc: %w", err)
	}
	if err := os.MkdirAll(cfg.Mountpoint, 0o700); err != nil {
		return nil, nil, nil, fmt.Errorf("make mountpoint: %w", err)
	}
	// default_permissions: the kernel checks modes and owners as for any file system; the
	// layer only narrows what they allow.
	data := fmt.Sprintf("fd=%d,rootmode=40000,user_id=0,group_id=0,allow_other,default_permissions", dev)
	if err := unix.Mount("nsbox-permfs", cfg.Mountpoint, "fuse.nsbox-permfs", unix.MS_NOSUID|unix.MS_NODEV, data); err != nil {
		return nil, nil, nil, fmt.Errorf("mount permission layer on %s: %w", cfg.Mountpoint, err)
	}
	if err := unix.Fchdir(src); err != nil {
		return nil, nil, nil, fmt.Errorf("enter workspace: %w", err)
	}
	if err := unix.Chroot("."); err != nil {
		return nil, nil, nil, fmt.Errorf("chroot into workspace: %w", err)
	}
	unix.Close(src)
	f, err := New("/", cfg.Rules, cfg.IDs, proc)
	if err != nil {
		return nil, nil, nil, err
	}
	timeout := cacheTimeout
	srv, err := gofs.Mount(fmt.Sprintf("/dev/fd/%d", dev), f.Root(), &gofs.Options{
		AttrTimeout: &timeout, // entries: entryOut
		// No splice: it empties its pipes into /dev/null, which the chroot does not have.
		// Stack depth 2: reads and writes of open files pass through to the backing file
		// (FUSE passthrough), which for a copy-on-write workspace is on an overlay (depth 1).
		MountOptions: fuse.MountOptions{AllowOther: true, FsName: "nsbox-permfs", Name: "nsbox-permfs", DisableSplice: true, MaxStackDepth: 2},
	})
	if err != nil {
		return nil, nil, nil, fmt.Errorf("serve permission layer: %w", err)
	}
	return srv, f, ln, nil
}
