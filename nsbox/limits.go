package nsbox

import (
	"fmt"
	"runtime"

	"golang.org/x/sys/unix"

	"github.com/nsbox/nsbox/api"
	"github.com/nsbox/nsbox/nsbox/backend"
)

func hostCPUs() int { return runtime.NumCPU() }

func hostMemoryMB() (int64, error) {
	var info unix.Sysinfo_t
	if err := unix.Sysinfo(&info); err != nil {
		return 0, fmt.Errorf("read host memory: %w", err)
	}
	return int64(info.Totalram) * int64(info.Unit) >> 20, nil
}

// resolveLimits validates requested limits, fills defaults and converts to kernel units.
func (c *Config) resolveLimits(l *api.Limits) (backend.Limits, error) {
	if l.CPUs == 0 {
		l.CPUs = c.DefaultCPUs
	}
	if l.MemoryMB == 0 {
		l.MemoryMB = c.DefaultMemoryMB
	}
	if l.Pids == 0 {
		l.Pids = c.DefaultPids
	}
	switch {
	case l.CPUs < 0.01 || l.CPUs > float64(c.hostCPUs):
		return backend.Limits{}, api.Errorf(api.CodeInvalidArgument, "limits.cpus must be between 0.01 and %d (this host's CPUs), got %g", c.hostCPUs, l.CPUs)
	case l.MemoryMB < 16 || l.MemoryMB > c.hostMemoryMB:
		return backend.Limits{}, api.Errorf(api.CodeInvalidArgument, "limits.memoryMB must be between 16 and %d (this host's memory), got %d", c.hostMemoryMB, l.MemoryMB)
	case l.Pids < 16 || l.Pids > 1<<22:
		return backend.Limits{}, api.Errorf(api.CodeInvalidArgument, "limits.pids must be between 16 and %d, got %d", 1<<22, l.Pids)
	}
	return backend.Limits{
		CPUQuota:    int64(l.CPUs * backend.CPUPeriod),
		MemoryBytes: l.MemoryMB << 20,
		Pids:        l.Pids,
	}, nil
}
