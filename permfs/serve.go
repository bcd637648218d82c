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
	"github.com/nsbox/nsbox/api/httpapi"
	"github.com/nsbox/nsbox/perms"
)

// How long the kernel may keep a name or attributes without asking the layer again (a change
// of rules makes it forget the names at once: SetRules): sharedCache when the served
// directory also changes outside the layer (a read-write workspace the host writes too),
// ownCache when every change goes through the layer, which then also has the kernel keep the
// pages of files it has read (FOPEN_KEEP_CACHE).
const (
	sharedCache = time.Second
	ownCache    = time.Hour
)

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
	Source   string   // the directory served, on the host
	ReadOnly bool     // serve it read-only (an image's read-only bind)
	At       string   // where the sandbox sees it (/workspace, /etc…): rules name paths there
	Dev      int      // a descriptor of /dev/fuse, mounted already (Mount): the layer owns it
	Hidden   []string // paths in the sandbox that are none whatever the rules (FS.hidden)
	Kept     []string // paths in the sandbox nsbox mounts files over (FS.kept)
	// Shared: the directory changes outside the layer too (the host writes it).
	Shared  bool
	Control string // its control socket
	Rules   *perms.Set
	IDs     IDs
	Log     *slog.Logger
	// Ready is told "ok" once the layer is served, or why it could not be.
	Ready *os.File
}

// Mount opens /dev/fuse and mounts the layer's file system at mountpoint, for a layer (Run)
// to serve. The daemon mounts it in its own mount namespace, the one containers are made
// from; the layer serves from a namespace of its own.
func Mount(mountpoint string) (*os.File, error) {
	dev, err := os.OpenFile("/dev/fuse", os.O_RDWR, 0)
	if err != nil {
		return nil, fmt.Errorf("open /dev/fuse: %w", err)
	}
	if err := os.MkdirAll(mountpoint, 0o700); err != nil {
		dev.Close()
		return nil, fmt.Errorf("make mountpoint: %w", err)
	}
	// default_permissions: the kernel checks modes and owners as for any file system; the
	// layer only narrows what they allow.
	data := fmt.Sprintf("fd=%d,rootmode=40000,user_id=0,group_id=0,allow_other,default_permissions", dev.Fd())
	if err := unix.Mount("nsbox-permfs", mountpoint, "fuse.nsbox-permfs", unix.MS_NOSUID|unix.MS_NODEV, data); err != nil {
		dev.Close()
		return nil, fmt.Errorf("mount permission layer on %s: %w", mountpoint, err)
	}
	return dev, nil
}

// Run serves the layer mounted on cfg.Dev until its file system is gone. The process must run
// in a mount namespace of its own (the daemon starts it with CLONE_NEWNS): there it makes a
// private tree holding only the source and /proc and chroots into the source (enter).
func Run(cfg Config) error {
	srv, f, ln, err := serve(cfg)
	if err != nil {
		fmt.Fprintf(cfg.Ready, "%v", err)
		cfg.Ready.Close()
		return err
	}
	mux := http.NewServeMux()
	set := httpapi.Handle(cfg.Log, func(w http.ResponseWriter, req *http.Request) error {
		var body api.PermissionsRequest
		if err := httpapi.DecodeJSON(req, &body, false); err != nil {
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

// serve opens the control socket, enters the source and starts serving.
func serve(cfg Config) (*fuse.Server, *FS, net.Listener, error) {
	if err := os.Remove(cfg.Control); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, nil, nil, fmt.Errorf("remove stale control socket: %w", err)
	}
	ln, err := net.Listen("unix", cfg.Control)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("listen on control socket: %w", err)
	}
	proc, err := enter(cfg.Source, cfg.ReadOnly)
	if err != nil {
		return nil, nil, nil, err
	}
	f, err := New("/", cfg.At, cfg.Rules, cfg.IDs, proc, cfg.Hidden, cfg.Kept)
	if err != nil {
		return nil, nil, nil, err
	}
	timeout := ownCache
	if cfg.Shared {
		timeout = sharedCache
	}
	f.cache = timeout
	srv, err := gofs.Mount(fmt.Sprintf("/dev/fd/%d", cfg.Dev), f.Root(), &gofs.Options{
		AttrTimeout: &timeout, // entries: entryOut
		// No splice: it empties its pipes into /dev/null, which the chroot does not have.
		// No passthrough (stack depth 0): registering and releasing a backing file costs two
		// more system calls per open, more than it saves on small files, and it turns
		// FOPEN_KEEP_CACHE off. No READDIRPLUS where names are cached long: a listing would
		// look up every entry again (find), for attributes the kernel keeps already.
		MountOptions: fuse.MountOptions{AllowOther: true, FsName: "nsbox-permfs", Name: "nsbox-permfs", DisableSplice: true, DisableReadDirPlus: !cfg.Shared},
	})
	if err != nil {
		return nil, nil, nil, fmt.Errorf("serve permission layer: %w", err)
	}
	return srv, f, ln, nil
}

// enter makes the process's mount namespace (its own) hold only a tmpfs with the source at
// /ws (read-only if asked) and /proc at /proc, chroots into /ws and returns a descriptor of
// /proc.
//
// Why not simply chroot into the host's mount: the daemon detaches that once the container
// has started, and every path walk in a detached mount takes the kernel's global mount lock
// (mntput of a mount with no namespace), which makes every openat2(RESOLVE_IN_ROOT) of the
// file API that needs an answer from the layer before a ".." fail with EAGAIN. Here every
// mount the layer walks is attached to its namespace, and nothing else of the host's is
// kept alive by it.
func enter(source string, readOnly bool) (int, error) {
	if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
		return -1, fmt.Errorf("make the layer's mounts private: %w", err)
	}
	ws, err := unix.OpenTree(unix.AT_FDCWD, source, unix.OPEN_TREE_CLONE|unix.OPEN_TREE_CLOEXEC|unix.AT_RECURSIVE)
	if err != nil {
		return -1, fmt.Errorf("open %s: %w", source, err)
	}
	defer unix.Close(ws)
	if readOnly {
		attr := unix.MountAttr{Attr_set: unix.MOUNT_ATTR_RDONLY}
		if err := unix.MountSetattr(ws, "", unix.AT_EMPTY_PATH|unix.AT_RECURSIVE, &attr); err != nil {
			return -1, fmt.Errorf("make %s read-only: %w", source, err)
		}
	}
	proc, err := unix.OpenTree(unix.AT_FDCWD, "/proc", unix.OPEN_TREE_CLONE|unix.OPEN_TREE_CLOEXEC)
	if err != nil {
		return -1, fmt.Errorf("open /proc: %w", err)
	}
	defer unix.Close(proc)
	const top = "/tmp" // any directory: the tmpfs on it becomes the namespace's root
	if err := unix.Mount("nsbox-permfs", top, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, "mode=0700"); err != nil {
		return -1, fmt.Errorf("mount the layer's root: %w", err)
	}
	for _, dir := range []string{"ws", "proc", "old"} {
		if err := os.Mkdir(top+"/"+dir, 0o700); err != nil {
			return -1, fmt.Errorf("make the layer's root: %w", err)
		}
	}
	if err := unix.MoveMount(ws, "", unix.AT_FDCWD, top+"/ws", unix.MOVE_MOUNT_F_EMPTY_PATH); err != nil {
		return -1, fmt.Errorf("attach workspace: %w", err)
	}
	if err := unix.MoveMount(proc, "", unix.AT_FDCWD, top+"/proc", unix.MOVE_MOUNT_F_EMPTY_PATH); err != nil {
		return -1, fmt.Errorf("attach /proc: %w", err)
	}
	if err := unix.PivotRoot(top, top+"/old"); err != nil {
		return -1, fmt.Errorf("pivot into the layer's root: %w", err)
	}
	if err := unix.Unmount("/old", unix.MNT_DETACH); err != nil {
		return -1, fmt.Errorf("detach the host's mounts: %w", err)
	}
	fd, err := unix.Open("/proc", unix.O_DIRECTORY|unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, fmt.Errorf("open /proc: %w", err)
	}
	if err := unix.Chroot("/ws"); err != nil {
		return -1, fmt.Errorf("chroot into workspace: %w", err)
	}
	if err := unix.Chdir("/"); err != nil {
		return -1, fmt.Errorf("enter workspace: %w", err)
	}
	return fd, nil
}
