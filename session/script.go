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
// the prompt (a fatal error such as an unbound variable under set -u) and will never report
// its status.
func bashRC(dir string) string {
	return fmt.Sprintf(`__nsbox_dir=%s
bind -x '"\C-x\C-n": . "$__nsbox_dir/next"'
HISTFILE="$__nsbox_dir/history"
PS1='\u@\h:\w\$ '
PROMPT_COMMAND='printf "P %%s %%s\n" "$?" "${__nsbox_run:-0}" >"$__nsbox_dir/status"; unset __nsbox_run'
`, quote(dir))
}

// shTrigger is what a pipe-driven sh reads to run exec n. If the run file is aborted back to
// the top level (a syntax error, an unbound variable), the second line still reports; it
// does only then: a run file that gets to its end reports and unsets __nsbox_run itself (a
// second report of every exec cost the shell eight system calls, and woke the agent).
func shTrigger(dir string, n int64) string {
	return ". " + quote(execFile(dir, "run", n)) + "\n__nsbox_rc=$?; [ -z \"${__nsbox_run-}\" ] || " + statusReport(n)
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

// runScript is the run file of one exec.
func runScript(dir string, n int64, cwd string, env map[string]string, stdin bool) string {
	var b strings.Builder
	// __nsbox_run names the exec for the prompt's report should the run file be aborted.
	b.WriteString("__nsbox_run=" + strconv.FormatInt(n, 10) + "\n")
	keys := slices.Sorted(maps.Keys(env))
	for _, k := range keys {
		fmt.Fprintf(&b, "__nsbox_set_%s=${%s+x}; __nsbox_old_%s=${%s-}; export %s=%s\n", k, k, k, k, k, quote(env[k]))
	}
	if cwd != "" {
		b.WriteString("__nsbox_pwd=$PWD\n")
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
	if cwd != "" {
		b.WriteString("\\cd -- \"$__nsbox_pwd\"; unset __nsbox_pwd\n")
	}
	for _, k := range keys {
		fmt.Fprintf(&b, "if [ -n \"$__nsbox_set_%s\" ]; then %s=$__nsbox_old_%s; else unset %s; fi; unset __nsbox_set_%s __nsbox_old_%s\n", k, k, k, k, k, k)
	}
	b.WriteString(statusReport(n))
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
