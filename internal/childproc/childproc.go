// Package childproc starts programs as plain children of the calling process, each with a
// goroutine that waits for it: how the tests of the agent's packages start what the agent's
// process table (which reaps every child, as PID 1) starts in a sandbox.
package childproc

import (
	"os"
	"syscall"

	"golang.org/x/sys/unix"
)

// Start starts path with argv and attr, and answers its pid and a channel that gets its wait
// status when it ends. It has the shape of the agent's start functions (session.StartFunc); it
// gives the child no private folder.
func Start(path string, argv []string, attr *os.ProcAttr, _ *os.File) (int, <-chan unix.WaitStatus, error) {
	p, err := os.StartProcess(path, argv, attr)
	if err != nil {
		return 0, nil, err
	}
	ch := make(chan unix.WaitStatus, 1)
	go func() {
		st, _ := p.Wait()
		ch <- unix.WaitStatus(st.Sys().(syscall.WaitStatus))
	}()
	return p.Pid, ch, nil
}
