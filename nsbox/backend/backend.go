// Package backend is the boundary between the daemon core (package nsbox) and the runtime that
// isolates a sandbox. The core asks a Backend to start a container whose PID 1 is the nsbox
// agent, and works with each container through an Instance: it binds it to a sandbox, dials its
// agent, opens its root for the file API, joins its network namespace, freezes, stops and
// destroys it. Package libcontainer (runc's libcontainer) is the one implementation today; a
// microVM or gVisor backend implements the same two interfaces (docs/architecture.md).
package backend

import (
	"context"
	"errors"
	"net"

	sandboxfs "github.com/nsbox/nsbox/fs"
	"github.com/nsbox/nsbox/rootfs"
)

// ErrNotExist is what Load returns for a container the backend has no state of.
var ErrNotExist = errors.New("container does not exist")

// ErrExited is what an instance answers when its agent (PID 1) has exited.
var ErrExited = errors.New("the container's agent (PID 1) has exited")

// CPUPeriod is the period, in µs, that Limits.CPUQuota is a share of (the kernel's default).
const CPUPeriod = 100000

// Limits are a container's resource limits in kernel units.
type Limits struct {
	CPUQuota    int64 // µs of CPU time per CPUPeriod
	MemoryBytes int64 // memory, without swap beyond it
	Pids        int64
}

// Stats is a container's resource use as its cgroup counts it.
type Stats struct {
	CPUNanos    uint64 // CPU time used by all its processes since it started
	MemoryBytes uint64 // memory charged to it now (page cache included)
	MemoryLimit uint64 // its memory limit; 0 when unlimited
	Pids        uint64 // tasks in it now
	OOMKills    uint64 // processes the kernel's OOM killer killed in it since it started
}

// Mount is a host path shown inside a container.
type Mount struct {
	Source, Target string
	ReadOnly       bool
	IDs            MountIDs
}

// MountIDs is how a container with a user namespace (Spec.IDs) sees the owners of a mount's
// files. By default the mount is id-mapped: the host's id n is the container's n, root
// included.
type MountIDs struct {
	// Native leaves the ids as they are: the source already shows the container's ids (a
	// copy-on-write workspace's overlay, whose lower is id-mapped and whose upper belongs to
	// the container's range).
	Native bool
	// RootUID and RootGID, when not zero, are the host ids the container's root reads and
	// writes the mount as (a writable mount: its source's owner, so that nothing the
	// container writes there belongs to the host's root); the host's root is then nobody in
	// it. Other ids n are still the host's n.
	RootUID, RootGID uint32
}

// Spec is what a container is started from.
type Spec struct {
	// ID names the container: its state, its cgroup, its run dir (<run>/sandboxes/<ID>, which
	// also holds the agent's socket and log).
	ID string
	// Layers are the image's read-only layers, top first; UpperDir and WorkDir are the
	// container's own writable layer over them.
	Layers            []string
	UpperDir, WorkDir string
	// ImageBinds are host directories the image shows read-only (recursively); Masked are
	// paths inside that are hidden.
	ImageBinds []Mount
	Masked     []string
	// Mounts are the container's own: its workspace, bind mounts and network files, mounted
	// after everything else, in order.
	Mounts []Mount
	// RootMounts, when set, is called with the host path of the container's root once it is
	// mounted there, before the container starts; the mounts it answers (permission layers
	// over directories of the root) come before Mounts.
	RootMounts func(root string) ([]Mount, error)
	Limits     Limits
	// Cwd is the agent's working directory; it is made in the root if missing.
	Cwd string
	// IDs, when enabled, is the container's user namespace: its ids 0-65535 are these host
	// ids, for uids and gids alike, and its root is the first. The image's layers and binds
	// and the mounts are id-mapped (the host's root shows as the container's), the writable
	// layer belongs to the range; nothing else on the host is chowned.
	IDs rootfs.IDMap
	// Capabilities are extra capabilities (CAP_…) beyond the backend's default set.
	Capabilities []string
	// Hostname is the container's hostname from its start ("": its ID).
	Hostname string
	// AgentConfig, when not nil, is handed to the agent as it starts (its --config-fd: the
	// sandbox's api.AgentConfig as JSON), so that it needs no PUT /v1/config.
	AgentConfig []byte
	// PrivateStore, when set, is a host directory handed to the agent as it starts (its
	// --private-fd) as an open directory at the root of a mount of its own that is attached
	// nowhere: no path in the container leads to it, and ".." of its root is itself.
	PrivateStore string
}

// Backend starts containers and finds them again after a daemon restart.
type Backend interface {
	// WillStart says a Start will follow shortly: the backend may begin, in the background,
	// what that start would wait for (libcontainer: the kernel's grace period before a process
	// moves between cgroups) while the core prepares the container's storage. It returns at
	// once.
	WillStart()
	// Start starts a container whose PID 1 is the agent, listening on the container's agent
	// socket, and returns as soon as the agent process runs (the core then waits for it to
	// answer). On error nothing of the container is left.
	Start(ctx context.Context, spec Spec) (Instance, error)
	// Load finds a container started before, by this daemon or an earlier one; ErrNotExist
	// when there is none.
	Load(id string) (Instance, error)
	// Containers lists the ids of every container the backend holds any state of, complete or
	// not.
	Containers() ([]string, error)
	// Destroy kills whatever is left of a container and removes its state, its cgroup and the
	// host mounts the backend made for it, whatever partial state a crash left. Loaded
	// instances of it are no longer usable. A missing container is not an error.
	Destroy(id string) error
	// RunDir is the directory of a container's host-side files (agent socket and log); the core
	// keeps the container's own files there too and removes it after Destroy.
	RunDir(id string) string
	// Release removes what the backend keeps for its containers as a whole once none is left
	// (`nsbox daemon --cleanup`, last). What is still in use stays.
	Release() error
}

// Instance is one started container.
type Instance interface {
	ID() string
	// PID is the agent's pid on the host, for operators (nsbox inspect).
	PID() int
	// Alive reports whether the agent still runs.
	Alive() bool
	// Exited is closed when the agent (PID 1) has exited.
	Exited() <-chan struct{}
	// OnExit has f run (in a goroutine of its own) once the agent has exited, at once if it
	// has; stop undoes it unless it ran. Unlike a goroutine waiting on Exited, waiting costs
	// no goroutine (one per running sandbox, idle memory).
	OnExit(f func()) (stop func() bool)
	// AgentLog is the end of what the agent logged, for error messages.
	AgentLog() string
	// DialAgent connects to the agent's control socket.
	DialAgent(ctx context.Context) (net.Conn, error)
	// SetHostname sets the container's hostname.
	SetHostname(name string) error
	// SetLimits changes the container's resource limits.
	SetLimits(lim Limits) error
	// ShowLimits binds the limit views of the LXCFS mounted at dir (its files lxcfs.Files:
	// the container's memory, CPUs and uptime as its limits make them) over the container's
	// /proc and /sys files, in place of those it has (dead ones, of an LXCFS that died, fail
	// every read with ENOTCONN); dir "" removes them, the container then shows the host's
	// files. A container starts without them: the daemon binds them as its agent starts.
	ShowLimits(dir string) error
	// NetNS is the path of the container's network namespace, for the network to be wired in.
	NetNS() string
	// OpenRoot opens the container's root directory as its processes see it, for the file API.
	OpenRoot() (*sandboxfs.Root, error)
	// IDs is the container's user namespace (zero: none).
	IDs() rootfs.IDMap
	// Stats reads the container's resource use from its cgroup (v1 or v2); OOMKills reads
	// only Stats().OOMKills, one file instead of five.
	Stats() (Stats, error)
	OOMKills() (uint64, error)
	// OnOOM has f run (in a goroutine of its own) each time the kernel reports running out of
	// memory in the container, until Kill or Close: a notification, not a poll of every
	// container. It may run before OOMKills counts the kill (cgroup v1 notifies as the OOM
	// begins). A second call replaces the first's f. kills is the container's OOM kill count
	// when the backend began to watch it (its start, or its Load by a restarted daemon).
	OnOOM(f func()) (kills uint64, err error)
	// Processes are the host pids of the container's processes.
	Processes() ([]int, error)
	// Freeze stops every process of the container until Thaw.
	Freeze() error
	Thaw() error
	// Kill kills every process of the container and waits until they are dead.
	Kill()
	// SendKill sends SIGKILL to every process of the container and returns without waiting
	// for them to die (Kill waits): a killed process never returns to its own code, so once
	// it returns nothing of the container runs again, though the kernel may still be tearing
	// the processes down (their memory, files, sockets and namespaces).
	SendKill()
	// Close releases what the instance holds on the host (not the container).
	Close()
}
