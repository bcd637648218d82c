package session

import (
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
)

// The shell side of a session. Each exec N gets a run file that the shell sources in its own
// context (so cd, export, aliases, functions and set -o persist), with the command's stdin,
// stdout and stderr redirected to per-exec FIFOs, and that reports the exit status on the
// session's status FIFO:
//
//	{ . cmd.N; } <in.N >out.N 2>err.N; printf 'S N %s\n' $? >status
//
// bash runs it from a readline binding (the agent types C-x C-n into the PTY); sh, without a
// terminal, reads `. run.N` lines from a pipe.

// triggerKeys are typed into a bash session's terminal to run the queued command.
const triggerKeys = "\x18\x0e" // C-x C-n

// bashRC is sourced by an interactive bash session instead of ~/.bashrc. PROMPT_COMMAND runs
// whenever readline starts reading a new command line: the first time that means the shell is
// ready; when it names an exec (the run file sets __nsbox_run) that exec was aborted back to
// the prompt (a fatal error such as an unbound variable under set -u, or the ^C of a timeout
// or cancel) and will never report its status. Such an exec also never got to undo its
// per-command env and cwd: PROMPT_COMMAND does that first (undoPending), then reports.
func bashRC(dir string) string {
	return fmt.Sprintf(`__nsbox_dir=%s
bind -x '"\C-x\C-n": . "$__nsbox_dir/next"'
HISTFILE="$__nsbox_dir/history"
PS1='\u@\h:\w\$ '
PROMPT_COMMAND='__nsbox_rc=$?; %s; printf "P %%s %%s\n" "$__nsbox_rc" "${__nsbox_run:-0}" >"$__nsbox_dir/status"; unset __nsbox_run __nsbox_rc'
`, quote(dir), undoPending)
}

// undoPending undoes the per-command env and cwd of an exec whose run file did not get to its
// own undo (see runScript): the abort paths (bash's PROMPT_COMMAND, sh's trigger) run it
// before they report, and every run file runs it first, should an abort path have been
// missed (a PROMPT_COMMAND the user replaced). It contains no ' or %.
const undoPending = `[ -z "${__nsbox_undo-}" ] || eval "$__nsbox_undo"`

// shTrigger is what a pipe-driven sh reads to run exec n. If the run file is aborted back to
// the top level (a syntax error, an unbound variable, the SIGINT of a timeout or cancel), the
// second line still runs: it undoes the exec's per-command env and cwd (undoPending), and
// reports; it reports only then: a run file that gets to its end reports and unsets
// __nsbox_run itself (a second report of every exec cost the shell eight system calls, and
// woke the agent).
func shTrigger(dir string, n int64) string {
	return ". " + quote(execFile(dir, "run", n)) + "\n__nsbox_rc=$?; " + undoPending + "; [ -z \"${__nsbox_run-}\" ] || " + statusReport(n)
}

// execFile is the path of exec n's file of the kind (cmd, run, in, out, err) in the session
// directory dir. An exec's own files and scripts are put together without fmt, as are its
// request and events (api/execjson.go): fewer pages for it to touch in an agent that idled.
func execFile(dir, kind string, n int64) string {
	return dir + "/" + kind + "." + strconv.FormatInt(n, 10)
}

// statusReport is the line that reports exec n's exit status ($__nsbox_rc) on the status FIFO.
func statusReport(n int64) string {
	return "printf 'S " + strconv.FormatInt(n, 10) + " %s\\n' \"$__nsbox_rc\" >\"$__nsbox_dir/status\"; unset __nsbox_rc __nsbox_run\n"
}

// shRC is sourced first by a pipe-driven sh session.
func shRC(dir string) string {
	return fmt.Sprintf(`__nsbox_dir=%s
PS1=''
PS2=''
printf 'R\n' >"$__nsbox_dir/status"
`, quote(dir))
}

// runScript is the run file of one exec. A per-command env and cwd are undone after the
// command however it ended: the run file saves what they replace and puts the code that puts
// it back in __nsbox_undo, which runs at the run file's end or, when the shell abandoned the
// run file (a ^C or SIGINT from interrupt, a fatal error), from the abort path (undoPending).
// Without overrides there is nothing to undo: what the command does to the session stays.
func runScript(dir string, n int64, cwd string, env map[string]string, stdin bool) string {
	var b strings.Builder
	// __nsbox_run names the exec for the prompt's report should the run file be aborted.
	b.WriteString("__nsbox_run=" + strconv.FormatInt(n, 10) + "\n")
	keys := slices.Sorted(maps.Keys(env))
	overrides := cwd != "" || len(keys) > 0
	if overrides {
		// What is saved and the undo are one command of assignments, so that an abort finds
		// both or neither. __nsbox_old_K is x and K's value when K was set, empty when not.
		if cwd != "" {
			b.WriteString("__nsbox_pwd=$PWD ")
		}
		for _, k := range keys {
			b.WriteString("__nsbox_old_" + k + "=${" + k + "+x$" + k + "} ")
		}
		b.WriteString("__nsbox_undo=" + quote(undoScript(cwd != "", keys)) + "\n")
		if len(keys) > 0 {
			b.WriteString("export")
			for _, k := range keys {
				b.WriteString(" " + k + "=" + quote(env[k]))
			}
			b.WriteString("\n")
		}
	}
	in := "/dev/null"
	if stdin {
		in = execFile(dir, "in", n)
	}
	b.WriteString("{ ")
	if cwd != "" {
		b.WriteString("\\cd -- " + quote(cwd) + " && ")
	}
	b.WriteString(". " + quote(execFile(dir, "cmd", n)) + "; } <" + quote(in) + " >" + quote(execFile(dir, "out", n)) +
		" 2>" + quote(execFile(dir, "err", n)) + "\n")
	b.WriteString("__nsbox_rc=$?\n")
	if overrides {
		b.WriteString(undoPending + "\n")
	}
	b.WriteString(statusReport(n))
	return b.String()
}

// undoScript puts back the cwd (when the exec had one of its own) and the variables keys as
// the run file saved them, then forgets what it saved. It forgets itself first: it runs at
// most once, so one that fails can never fail every later command too. A variable whose value
// is already the saved one is left alone: assigning or unsetting a read-only variable (one the
// session made read-only, which the override could not change either) is a fatal error in sh,
// which in the abort path would skip the exec's report.
func undoScript(cwd bool, keys []string) string {
	var b strings.Builder
	b.WriteString("unset __nsbox_undo; ")
	if cwd {
		b.WriteString("\\cd -- \"$__nsbox_pwd\"; ")
	}
	for _, k := range keys {
		old := "__nsbox_old_" + k
		b.WriteString("[ \"${" + k + "+x$" + k + "}\" = \"$" + old + "\" ] || if [ -n \"$" + old + "\" ]; then " +
			k + "=${" + old + "#x}; else unset " + k + "; fi; ")
	}
	b.WriteString("unset")
	if cwd {
		b.WriteString(" __nsbox_pwd")
	}
	for _, k := range keys {
		b.WriteString(" __nsbox_old_" + k)
	}
	return b.String()
}

// quote makes s one single-quoted shell word.
func quote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// QuoteArgv turns an argv into a shell command line that runs exactly that argv.
func QuoteArgv(argv []string) string {
	words := make([]string, len(argv))
	for i, a := range argv {
		words[i] = quote(a)
	}
	return strings.Join(words, " ")
}
