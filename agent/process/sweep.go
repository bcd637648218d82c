package process

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// Sweep sends sig to every process of the sandbox except PID 1 (the agent), the members of
// spareGroups and the pids sparePids returns: processes that left their group (setsid), orphans
// of session jobs, whatever else runs. TERM and INT are given grace, then SIGKILL follows; Sweep
// returns once none of them is left (KILL, TERM, INT), or once sig is sent (other signals).
// sparePids is asked again on every pass, so it can follow processes that come and go.
func Sweep(ctx context.Context, sig unix.Signal, grace time.Duration, spareGroups map[int]bool, sparePids func() map[int]bool) error {
	targets := func() []int {
		var out []int
		spared := sparePids()
		for pid, pgid := range liveProcesses() {
			if pid != 1 && !spared[pid] && !spareGroups[pgid] {
				out = append(out, pid)
			}
		}
		return out
	}
	signalAll := func(sig unix.Signal) int {
		pids := targets()
		for _, pid := range pids {
			_ = unix.Kill(pid, sig) // it may be gone already
		}
		return len(pids)
	}
	if signalAll(sig) == 0 {
		return nil
	}
	switch sig {
	case unix.SIGKILL:
	case unix.SIGTERM, unix.SIGINT:
		deadline := time.NewTimer(grace)
		defer deadline.Stop()
	graced:
		for len(targets()) > 0 {
			select {
			case <-deadline.C:
				break graced
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(20 * time.Millisecond):
			}
		}
	default:
		return nil
	}
	// Forks of a dying fork bomb may appear after a pass: kill until a pass finds none.
	for signalAll(unix.SIGKILL) > 0 {
		select {
		case <-ctx.Done():
			return fmt.Errorf("sweep the sandbox's processes: %w", ctx.Err())
		case <-time.After(10 * time.Millisecond):
		}
	}
	return nil
}

// liveProcesses returns the process group of every process that is not a zombie, by pid.
func liveProcesses() map[int]int {
	out := map[int]int{}
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		stat, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue // gone meanwhile
		}
		// After "pid (comm) ": state, ppid, pgrp.
		fields := strings.Fields(string(stat[bytes.LastIndexByte(stat, ')')+1:]))
		if len(fields) < 3 || fields[0] == "Z" {
			continue
		}
		if pgid, err := strconv.Atoi(fields[2]); err == nil {
			out[pid] = pgid
		}
	}
	return out
}
