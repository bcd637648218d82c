package session

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// State is what a session's shell holds that a new shell can be given again (hibernation,
// forks): a script that, sourced in the new shell, restores its working directory, exported
// variables and shell options (and in bash its aliases and functions), and bash's history.
type State struct {
	Script  string
	History string
}

// stateDump prints the shell's working directory on the first line and then shell source that
// recreates the rest of its state; bash also writes its history to history.saved.
const (
	bashStateDump = `\builtin printf '%s\n' "$PWD"; \builtin export -p; \builtin alias -p; \builtin declare -f; \builtin shopt -p; \builtin set +o; \builtin history -w "$__nsbox_dir/history.saved"`
	shStateDump   = `\printf '%s\n' "$PWD"; \export -p; \set +o`
)

// SaveState reads the session's state with a hidden command (it waits for the session's turn).
func (s *Session) SaveState(ctx context.Context) (State, error) {
	dump := shStateDump
	if s.shellName == "bash" {
		dump = bashStateDump
	}
	var out strings.Builder
	res, err := s.Exec(ctx, ExecRequest{Command: dump}, func(stream string, b []byte) {
		if stream == "stdout" {
			out.Write(b)
		}
	})
	switch {
	case err != nil:
		return State{}, err
	case res.Canceled || res.TimedOut || res.SessionEnded:
		return State{}, fmt.Errorf("session %s: its state could not be read (the command was cut short)", s.opts.ID)
	}
	cwd, rest, _ := strings.Cut(out.String(), "\n")
	st := State{Script: "\\cd -- " + quote(cwd) + "\n" + rest}
	if s.shellName == "bash" {
		hist := filepath.Join(s.dir, "history.saved")
		data, err := os.ReadFile(hist)
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			return State{}, fmt.Errorf("session %s: read its history: %w", s.opts.ID, err)
		}
		_ = os.Remove(hist)
		st.History = string(data)
	}
	return st, nil
}

// RestoreState sources a saved state in the session's shell (and, in bash, reads the saved
// history into its history list). What the new shell refuses (a read-only variable, an option
// it lacks) is skipped; the rest is applied.
func (s *Session) RestoreState(ctx context.Context, st State) error {
	script := filepath.Join(s.dir, "state.restore")
	if err := os.WriteFile(script, []byte(st.Script), 0o600); err != nil {
		return fmt.Errorf("session %s: write its saved state: %w", s.opts.ID, err)
	}
	if err := os.Chown(script, s.cred.uid, s.cred.gid); err != nil {
		return fmt.Errorf("session %s: give its saved state to its user: %w", s.opts.ID, err)
	}
	command := ". " + quote(script) + " 2>/dev/null; \\rm -f -- " + quote(script)
	if s.shellName == "bash" && st.History != "" {
		hist := filepath.Join(s.dir, "history.restore")
		if err := os.WriteFile(hist, []byte(st.History), 0o600); err != nil {
			return fmt.Errorf("session %s: write its saved history: %w", s.opts.ID, err)
		}
		if err := os.Chown(hist, s.cred.uid, s.cred.gid); err != nil {
			return fmt.Errorf("session %s: give its saved history to its user: %w", s.opts.ID, err)
		}
		command += "; \\builtin history -r " + quote(hist) + "; \\rm -f -- " + quote(hist)
	}
	res, err := s.Exec(ctx, ExecRequest{Command: command}, func(string, []byte) {})
	switch {
	case err != nil:
		return err
	case res.Canceled || res.TimedOut || res.SessionEnded:
		return fmt.Errorf("session %s: its saved state could not be applied (the command was cut short)", s.opts.ID)
	}
	return nil
}
