package process

import (
	"bytes"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"time"

	"golang.org/x/sys/unix"
)

// Stop stops the process group of every process still running (SIGSTOP, which none can
// catch) and waits, wait at most, until /proc shows each of their threads stopped: what they
// were writing is then in their pipes for Save to read, and nothing comes after it (a
// hibernation kills them next). Only these groups: the sessions' shells and their jobs are
// left alone. It returns the groups it stopped, for Continue.
func (m *Manager) Stop(wait time.Duration) []StoppedGroup {
	m.mu.Lock()
	procs := make([]*Process, 0, len(m.procs))
	for _, p := range m.procs {
		procs = append(procs, p)
	}
	m.mu.Unlock()
	stoppedBefore := stoppedProcessesByGroup()
	var groups []StoppedGroup
	for _, p := range procs {
		select {
		case <-p.exited: // its group is gone
			continue
		default:
		}
		if pgid := p.Info().PID; pgid > 0 && unix.Kill(-pgid, unix.SIGSTOP) == nil {
			groups = append(groups, StoppedGroup{PGID: pgid, stoppedBefore: stoppedBefore[pgid]})
		}
	}
	for deadline := time.Now().Add(wait); len(groups) > 0 && !groupsStopped(groups) && time.Now().Before(deadline); {
		time.Sleep(time.Millisecond)
	}
	return groups
}

// A StoppedGroup is a process group Stop stopped.
type StoppedGroup struct {
	PGID int
	// stoppedBefore are its processes that were stopped already (by a SIGSTOP or SIGTSTP sent
	// to them: a job's own `kill -STOP`): Continue leaves them so. /proc is read once before
	// the groups are stopped: one continued in between stays stopped too.
	stoppedBefore []int
}

// Continue lets the process groups Stop stopped run again (SIGCONT), but for the processes
// that were stopped before it.
func Continue(groups []StoppedGroup) {
	for _, g := range groups {
		if len(g.stoppedBefore) == 0 {
			_ = unix.Kill(-g.PGID, unix.SIGCONT)
			continue
		}
		eachProcess(func(pid int, _ byte, pgrp int) {
			if pgrp == g.PGID && !slices.Contains(g.stoppedBefore, pid) {
				_ = unix.Kill(pid, unix.SIGCONT)
			}
		})
	}
}

// stoppedProcessesByGroup lists the processes stopped by a signal, by process group.
func stoppedProcessesByGroup() map[int][]int {
	stopped := map[int][]int{}
	eachProcess(func(pid int, state byte, pgrp int) {
		if state == 'T' {
			stopped[pgrp] = append(stopped[pgrp], pid)
		}
	})
	return stopped
}

// eachProcess calls fn with the pid, state and process group of each process /proc shows.
func eachProcess(fn func(pid int, state byte, pgrp int)) {
	stats, _ := filepath.Glob("/proc/[0-9]*/stat")
	for _, stat := range stats {
		pid, err := strconv.Atoi(filepath.Base(filepath.Dir(stat)))
		if state, pgrp, ok := readStat(stat); ok && err == nil {
			fn(pid, state, pgrp)
		}
	}
}

// groupsStopped reports whether every thread of every process in the groups is stopped or
// dead, by /proc.
func groupsStopped(groups []StoppedGroup) bool {
	stats, _ := filepath.Glob("/proc/[0-9]*/task/[0-9]*/stat")
	for _, stat := range stats {
		state, pgrp, ok := readStat(stat)
		if !ok || !slices.ContainsFunc(groups, func(g StoppedGroup) bool { return g.PGID == pgrp }) {
			continue // gone meanwhile, or another group's
		}
		switch state {
		case 'T', 't', 'Z', 'X', 'x':
		default:
			return false
		}
	}
	return true
}

// readStat reads a process's or thread's state and process group from its /proc stat file;
// ok is false if it is gone.
func readStat(path string) (state byte, pgrp int, ok bool) {
	data, err := os.ReadFile(path)
	if err != nil {
		return 0, 0, false
	}
	// After the command name, which ends with the last ')': state, ppid, pgrp.
	end := bytes.LastIndexByte(data, ')')
	if end < 0 {
		return 0, 0, false
	}
	fields := bytes.Fields(data[end+1:])
	if len(fields) < 3 {
		return 0, 0, false
	}
	pgrp, err = strconv.Atoi(string(fields[2]))
	return fields[0][0], pgrp, err == nil
}
