package main

// How the CLI behaves around its commands: flags after arguments, one-line usage errors with a
// hint, exit codes by kind of failure, and shell completion.

import (
	"errors"
	"fmt"
	"os"
	"regexp"
	"strings"

	"github.com/urfave/cli/v2"

	"github.com/nsbox/nsbox/api"
	"github.com/nsbox/nsbox/client"
)

// Exit codes of the CLI's own failures. A command run in a sandbox (exec, sh, wait) exits with
// that command's code instead.
const (
	exitFailure     = 1 // any other failure
	exitUsage       = 2 // a wrong command, flag or argument
	exitNotFound    = 3 // the sandbox, session, process, file… does not exist
	exitConflict    = 4 // not in a state that allows it (e.g. paused, a busy terminal)
	exitUnreachable = 5 // the daemon could not be reached
)

// usageError is a mistake in how nsbox was called: exit code 2.
func usageError(format string, args ...any) error {
	return cli.Exit(fmt.Sprintf(format, args...), exitUsage)
}

// exitCode is the exit code for err.
func exitCode(err error) int {
	var coder cli.ExitCoder
	switch {
	case errors.As(err, &coder):
		return coder.ExitCode()
	case api.IsCode(err, api.CodeNotFound):
		return exitNotFound
	case api.IsCode(err, api.CodeConflict), api.IsCode(err, api.CodeTerminalBusy):
		return exitConflict
	case errors.Is(err, client.ErrUnreachable):
		return exitUnreachable
	}
	return exitFailure
}

// exitWith prints err (if it says anything) and ends nsbox with its exit code.
func exitWith(err error) {
	if msg := strings.TrimPrefix(err.Error(), "nsbox: "); msg != "" {
		fmt.Fprintln(os.Stderr, "nsbox:", msg)
	}
	os.Exit(exitCode(err))
}

// setManners gives every command one-line usage errors with a hint instead of the whole help
// text, and the app shell completion and a one-line answer to an unknown command.
func setManners(app *cli.App) {
	app.EnableBashCompletion = true
	app.OnUsageError = onUsageError("nsbox")
	app.CommandNotFound = func(c *cli.Context, name string) {
		exitWith(usageError("no command %q; run 'nsbox --help' for the list", name))
	}
	var walk func(prefix string, cmds []*cli.Command)
	walk = func(prefix string, cmds []*cli.Command) {
		for _, cmd := range cmds {
			path := prefix + " " + cmd.Name
			cmd.OnUsageError = onUsageError(path)
			walk(path, cmd.Subcommands)
		}
	}
	walk("nsbox", app.Commands)
}

// badFlagValue is how urfave/cli words a flag value it could not parse.
var badFlagValue = regexp.MustCompile(`invalid value ".*" for flag -+([a-z0-9-]+)`)

func onUsageError(path string) cli.OnUsageErrorFunc {
	return func(c *cli.Context, err error, _ bool) error {
		msg := err.Error()
		if m := badFlagValue.FindStringSubmatch(msg); m != nil {
			flags := c.App.Flags
			if c.Command != nil && c.Command.Name != "" {
				flags = c.Command.Flags
			}
			if _, ok := lookupFlag(flags, m[1]).(*cli.DurationFlag); ok {
				msg += " (durations need a unit: 500ms, 30s, 5m, 1h)"
			}
		}
		return usageError("%s: %s; run '%s --help' for usage", path, msg, path)
	}
}

// reorderArgs moves the flags given after a command's arguments in front of them, so that
// `nsbox rm ID --force` and `nsbox exec ID --timeout 1s -- cmd` work as in docker and kubectl.
// It stops at "--" and, for commands that run a command line (their usage has "--", like
// "ID -- CMD [ARG...]"), at the first word of that command line. A word that looks like a flag
// after the arguments but is none of the command's is refused rather than taken as an argument.
func reorderArgs(app *cli.App, args []string) ([]string, error) {
	if len(args) < 2 {
		return args, nil
	}
	out := []string{args[0]}
	i := 1
	flags := app.Flags
	// Global flags, then the command and its subcommands.
	for i < len(args) && strings.HasPrefix(args[i], "-") && args[i] != "-" {
		out = append(out, args[i])
		if takesValue(flags, args[i]) && i+1 < len(args) {
			i++
			out = append(out, args[i])
		}
		i++
	}
	var cmd *cli.Command
	path := "nsbox"
	for cmds := app.Commands; i < len(args); {
		next := findCommand(cmds, args[i])
		if next == nil {
			break
		}
		cmd, cmds = next, next.Subcommands
		path += " " + next.Name
		out = append(out, args[i])
		i++
	}
	if cmd == nil || cmd.SkipFlagParsing {
		return append(out, args[i:]...), nil
	}
	flags = cmd.Flags
	maxArgs := -1 // arguments before the command line, for commands that run one
	if words := strings.Fields(cmd.ArgsUsage); len(words) > 0 {
		for n, w := range words {
			if w == "--" {
				maxArgs = n
			}
		}
	}
	var moved, positional []string
	for ; i < len(args); i++ {
		a := args[i]
		if a == "--" || (maxArgs >= 0 && len(positional) > maxArgs) {
			break
		}
		if !strings.HasPrefix(a, "-") || a == "-" {
			positional = append(positional, a)
			continue
		}
		if !isFlag(flags, a) {
			if len(positional) == 0 {
				moved = append(moved, a) // before any argument: urfave/cli reports it
				continue
			}
			return nil, usageError("%s: %s is not a flag of this command; run '%s --help' for usage (a command line for the sandbox goes after --)", path, a, path)
		}
		moved = append(moved, a)
		if takesValue(flags, a) && i+1 < len(args) {
			i++
			moved = append(moved, args[i])
		}
	}
	out = append(append(out, moved...), positional...)
	return append(out, args[i:]...), nil
}

// findCommand is the command (or subcommand) named name or one of its aliases.
func findCommand(cmds []*cli.Command, name string) *cli.Command {
	for _, c := range cmds {
		if c.HasName(name) {
			return c
		}
	}
	return nil
}

// flagName is the name in "-n", "--name" or "--name=value".
func flagName(arg string) string {
	name, _, _ := strings.Cut(strings.TrimLeft(arg, "-"), "=")
	return name
}

// lookupFlag is the flag of flags that arg names, or nil.
func lookupFlag(flags []cli.Flag, arg string) cli.Flag {
	name := flagName(arg)
	for _, f := range flags {
		for _, n := range f.Names() {
			if n == name {
				return f
			}
		}
	}
	return nil
}

// isFlag reports whether arg names one of flags (or help, which every command has).
func isFlag(flags []cli.Flag, arg string) bool {
	name := flagName(arg)
	return name == "help" || name == "h" || lookupFlag(flags, arg) != nil
}

// takesValue reports whether arg is a flag whose value is the next argument.
func takesValue(flags []cli.Flag, arg string) bool {
	if strings.Contains(arg, "=") {
		return false
	}
	f := lookupFlag(flags, arg)
	if f == nil {
		return false
	}
	_, isBool := f.(*cli.BoolFlag)
	return !isBool
}

// completionCommand prints a completion script for bash, zsh or fish.
func completionCommand() *cli.Command {
	return &cli.Command{
		Name:      "completion",
		Usage:     "print a shell completion script: source <(nsbox completion bash)",
		ArgsUsage: "bash|zsh|fish",
		Action: func(c *cli.Context) error {
			switch c.Args().First() {
			case "bash":
				fmt.Print(bashCompletion)
			case "zsh":
				fmt.Print(zshCompletion)
			case "fish":
				script, err := c.App.ToFishCompletion()
				if err != nil {
					return fmt.Errorf("fish completion: %w", err)
				}
				fmt.Print(script)
			default:
				return usageError("nsbox completion: name a shell: bash, zsh or fish")
			}
			return nil
		},
	}
}

// The bash and zsh scripts ask nsbox itself for the words that can come next
// (--generate-bash-completion, urfave/cli's protocol).
const bashCompletion = `# nsbox completion for bash: source <(nsbox completion bash)
_nsbox_complete() {
  local cur="${COMP_WORDS[COMP_CWORD]}"
  local words
  words=$("${COMP_WORDS[0]}" "${COMP_WORDS[@]:1:COMP_CWORD-1}" --generate-bash-completion 2>/dev/null)
  COMPREPLY=($(compgen -W "$words" -- "$cur"))
}
complete -o default -F _nsbox_complete nsbox
`

const zshCompletion = `#compdef nsbox
# nsbox completion for zsh: source <(nsbox completion zsh)
_nsbox() {
  local -a opts
  opts=("${(@f)$(${words[1]} ${words[@]:1:CURRENT-2} --generate-bash-completion 2>/dev/null)}")
  _describe 'nsbox' opts
}
compdef _nsbox nsbox
`
