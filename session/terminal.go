package session

import (
	"errors"
	"fmt"

	"github.com/creack/pty"
)

// ErrNoTerminal is returned for terminal use of a session that has none.
var ErrNoTerminal = errors.New("only bash sessions have a terminal; this session's shell is sh, driven by a pipe")

// How a terminal and structured commands share a bash session: both talk to the same shell.
// People type into the PTY; a structured command is typed as a readline key binding while the
// shell waits at its prompt (never while a foreground program such as vi or a REPL has the
// terminal), runs in the shell's own context, and sends its output to its own FIFOs, so the
// terminal shows only a redrawn prompt. State changes either side makes (cd, export, …) are
// seen by the other. Half-typed input on the terminal stays where it was.

// terminal returns the current shell if it has a terminal.
func (s *Session) terminal() (*shell, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case s.ended || s.deleted || s.sh == nil:
		return nil, ErrEnded
	case !s.sh.bash:
		return nil, ErrNoTerminal
	}
	return s.sh, nil
}

// TerminalInput types data into the session's terminal.
func (s *Session) TerminalInput(data []byte) error {
	sh, err := s.terminal()
	if err != nil {
		return err
	}
	if _, err := sh.term.Write(data); err != nil {
		return fmt.Errorf("write to terminal: %w", err)
	}
	return nil
}

// Resize sets the terminal's size.
func (s *Session) Resize(cols, rows uint16) error {
	if cols == 0 || rows == 0 {
		return fmt.Errorf("%w: terminal size %dx%d", ErrInvalid, cols, rows)
	}
	sh, err := s.terminal()
	if err != nil {
		return err
	}
	if err := pty.Setsize(sh.term, &pty.Winsize{Cols: cols, Rows: rows}); err != nil {
		return fmt.Errorf("resize terminal: %w", err)
	}
	return nil
}

// HasTerminal reports whether the session is a bash session with a terminal.
func (s *Session) HasTerminal() bool {
	_, err := s.terminal()
	return err == nil
}

// Done is closed when the session ends or is deleted.
func (s *Session) Done() <-chan struct{} { return s.finished.Done() }
