package api

import "time"

// SandboxStats is a sandbox's resource use at one moment: GET /v1/sandboxes/{id}/stats, and
// each sandbox of GET /v1/stats.
type SandboxStats struct {
	ID     string    `json:"id"`
	Image  string    `json:"image"`
	Status string    `json:"status"`
	Time   time.Time `json:"time"`
	// CPUSeconds is the CPU time its processes used since it started; CPUPercent is its use
	// since the previous reading of its stats (of one CPU: 200 is two CPUs busy), or its
	// average since it was created on the first reading.
	CPUSeconds float64 `json:"cpuSeconds"`
	CPUPercent float64 `json:"cpuPercent"`
	// MemoryBytes is the memory charged to it (page cache included); MemoryLimitBytes its
	// limit, 0 when it has none.
	MemoryBytes      uint64 `json:"memoryBytes"`
	MemoryLimitBytes uint64 `json:"memoryLimitBytes"`
	Pids             uint64 `json:"pids"`
	// OOMKills counts the processes the kernel's OOM killer killed in it.
	OOMKills uint64 `json:"oomKills"`
	// DiskUsedBytes and DiskLimitBytes are the use of its disk quota (limits.diskMB); both 0
	// without one.
	DiskUsedBytes  uint64 `json:"diskUsedBytes"`
	DiskLimitBytes uint64 `json:"diskLimitBytes"`
	// Network is its traffic, as the sandbox sees it (in: received); zero in network mode none.
	Network NetworkStats `json:"network"`
	// Sessions and Processes are its open sessions and running processes, as its agent last
	// told the daemon (at every start and end); absent while it is paused.
	Sessions  *int `json:"sessions,omitempty"`
	Processes *int `json:"processes,omitempty"`
}

// NetworkStats is a sandbox's traffic since its network was attached.
type NetworkStats struct {
	RxBytes   uint64 `json:"rxBytes"`
	RxPackets uint64 `json:"rxPackets"`
	TxBytes   uint64 `json:"txBytes"`
	TxPackets uint64 `json:"txPackets"`
}

// Event is one thing that happened to a sandbox: GET /v1/events. Seq numbers the daemon's
// events from 1 since it started (give the last one seen as ?since= to replay what followed).
type Event struct {
	Seq     uint64            `json:"seq"`
	Time    time.Time         `json:"time"`
	Type    string            `json:"type"`
	Sandbox string            `json:"sandbox"`
	Details map[string]string `json:"details,omitempty"`
}

// Event types. A sandbox's life is created, started, then paused or hibernated and resumed,
// stopping and removed; failed when its agent exits or its container is gone (agent_exited says the
// first), oom_killed each time the kernel kills one of its processes for memory; loaded says,
// at a daemon's start, which state each sandbox it found is in.
const (
	EventSandboxCreated     = "sandbox.created"
	EventSandboxStarted     = "sandbox.started"
	EventSandboxPaused      = "sandbox.paused"
	EventSandboxResumed     = "sandbox.resumed"
	EventSandboxHibernated  = "sandbox.hibernated"
	EventSandboxStopping    = "sandbox.stopping"
	EventSandboxRemoved     = "sandbox.removed"
	EventSandboxFailed      = "sandbox.failed"
	EventSandboxOOMKilled   = "sandbox.oom_killed"
	EventSandboxAgentExited = "sandbox.agent_exited"
	EventSandboxLoaded      = "sandbox.loaded"
	EventPortExposed        = "port.exposed"
	EventPortUnexposed      = "port.unexposed"
	EventSessionCreated     = "session.created"
	EventSessionEnded       = "session.ended"
	EventProcessExited      = "process.exited"
)

// RequestIDHeader carries the id of an API call: the daemon answers each call with it (the
// caller's own, when it sends a valid one) and logs it.
const RequestIDHeader = "X-Request-Id"
