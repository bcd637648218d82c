package main

import (
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/urfave/cli/v2"

	"github.com/nsbox/nsbox/api"
	"github.com/nsbox/nsbox/client"
)

func envCommand() *cli.Command {
	return &cli.Command{
		Name:  "env",
		Usage: "print a sandbox's environment, or set and unset variables in it",
		Description: "nsbox env ID prints the sandbox-wide environment as K=V lines. nsbox env ID K=V... --unset K...\n" +
			"changes it: new sessions and processes get the change; existing sessions apply it before their next\n" +
			"command, except for variables they set or unset themselves (a session's own exports win).",
		ArgsUsage: "ID [K=V...]",
		Flags: []cli.Flag{
			&cli.StringSliceFlag{Name: "unset", Aliases: []string{"u"}, Usage: "remove variable K (repeatable)"},
			&cli.BoolFlag{Name: "json", Usage: "print the sandbox as JSON"},
		},
		Action: cmdEnv,
	}
}

func cmdEnv(c *cli.Context) error {
	if c.NArg() < 1 {
		return usageError("usage: nsbox env ID [K=V...] [--unset K...]")
	}
	id := c.Args().First()
	// Flags stop at the first argument: --unset after K=V arguments is read here.
	set, unset := map[string]string{}, c.StringSlice("unset")
	args := c.Args().Tail()
	for i := 0; i < len(args); i++ {
		arg := args[i]
		if name, ok := strings.CutPrefix(arg, "--unset="); ok {
			unset = append(unset, name)
			continue
		}
		if arg == "--unset" || arg == "-u" {
			if i+1 == len(args) {
				return fmt.Errorf("nsbox env: %s needs a variable name", arg)
			}
			unset = append(unset, args[i+1])
			i++
			continue
		}
		k, v, ok := strings.Cut(arg, "=")
		if !ok {
			return fmt.Errorf("nsbox env: %q is not K=V (to remove a variable, use --unset %s)", arg, arg)
		}
		set[k] = v
	}
	cl := apiClient(c)
	var sb *api.Sandbox
	var err error
	if len(set) > 0 || len(unset) > 0 {
		sb, err = cl.PatchEnv(c.Context, id, set, unset)
	} else {
		sb, err = cl.GetSandbox(c.Context, id)
	}
	if err != nil {
		return err
	}
	if c.Bool("json") {
		return printJSON(sb)
	}
	for _, k := range slices.Sorted(maps.Keys(sb.Env)) {
		fmt.Printf("%s=%s\n", k, sb.Env[k])
	}
	return nil
}

// sessionFlag makes file commands work for a session (see fileClient).
var sessionFlag = &cli.StringFlag{Name: "session", Aliases: []string{"s"},
	Usage: "work as this session: relative paths start at its current directory, new files belong to its user"}

// withSession adds --session to a command and its subcommands.
func withSession(cmd *cli.Command) *cli.Command {
	if cmd.Action != nil {
		cmd.Flags = append(cmd.Flags, sessionFlag)
	}
	for _, sub := range cmd.Subcommands {
		withSession(sub)
	}
	return cmd
}

// fileClient is the API client for file commands: made for the --session, when there is one.
func fileClient(c *cli.Context) *client.Client {
	if sid := c.String("session"); sid != "" {
		return apiClient(c).InSession(sid)
	}
	return apiClient(c)
}
