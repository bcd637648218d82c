package main

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/nsbox/nsbox/api"
	"github.com/nsbox/nsbox/client"
)

func clientCommands() []*cli.Command {
	return []*cli.Command{
		{
			Name:      "create",
			Usage:     "create a sandbox and print its id",
			ArgsUsage: " ",
			Flags: append([]cli.Flag{
				&cli.StringFlag{Name: "id", Usage: "sandbox id (default: generated)"},
				&cli.StringFlag{Name: "image", Usage: "image: host (default), busybox, or a pulled or imported OCI image (nsbox image ls)"},
				&cli.StringFlag{Name: "pull", Usage: "pull an OCI image from its registry first: never (default), missing or always"},
				&cli.StringFlag{Name: "from-snapshot", Usage: "make the sandbox from a snapshot (nsbox snapshot ls): its files and sessions' state, and its env, labels, limits, cwd and user unless given"},
				&cli.DurationFlag{Name: "idle-timeout", Usage: "pause (or --on-idle remove) the sandbox after this long without API or preview traffic; a request resumes a paused one"},
				&cli.StringFlag{Name: "on-idle", Usage: "what the sandbox becomes when idle: pause (default), hibernate, stop (hibernate without the sessions' state) or remove"},
				&cli.DurationFlag{Name: "ttl", Usage: "remove the sandbox this long after its create"},
				&cli.Float64Flag{Name: "cpus", Usage: "CPU limit, e.g. 0.5 or 2"},
				&cli.Int64Flag{Name: "memory", Usage: "memory limit in MB"},
				&cli.Int64Flag{Name: "pids", Usage: "process limit"},
				&cli.StringFlag{Name: "cwd", Usage: "working directory of commands (default: the image's WorkingDir, else /workspace)"},
				&cli.StringFlag{Name: "user", Aliases: []string{"u"}, Usage: "default user of sessions and processes: name, uid, uid:gid or name:group (default: the image's User, else root)"},
				&cli.BoolFlag{Name: "run-entrypoint", Usage: "start the image's Entrypoint + Cmd as the process \"entrypoint\" (nsbox logs ID entrypoint)"},
				&cli.StringSliceFlag{Name: "env", Aliases: []string{"e"}, Usage: "environment variable K=V (repeatable)"},
				&cli.StringSliceFlag{Name: "label", Aliases: []string{"l"}, Usage: "label K=V (repeatable)"},
				&cli.StringSliceFlag{Name: "perm", Usage: "per-path rule for the workspace, PATTERN=LEVEL with LEVEL none, view, read or write, e.g. '**/.env=none' (repeatable; docs/permissions.md)"},
				&cli.StringSliceFlag{Name: "cap-add", Usage: "capability beyond the default set, e.g. NET_RAW, among those the daemon allows (repeatable)"},
				networkFlag(), allowFlag(),
			}, storageFlags()...),
			Action: cmdCreate,
		},
		{
			Name:    "ls",
			Aliases: []string{"list"},
			Usage:   "list sandboxes",
			Flags: []cli.Flag{
				&cli.BoolFlag{Name: "json", Usage: "print JSON"},
				&cli.BoolFlag{Name: "quiet", Aliases: []string{"q"}, Usage: "print ids only"},
			},
			Action: cmdList,
		},
		{Name: "inspect", Usage: "print a sandbox as JSON", ArgsUsage: "ID", Action: cmdInspect},
		{
			Name:      "rm",
			Usage:     "stop and remove sandboxes (processes get SIGTERM and 10s, then SIGKILL)",
			ArgsUsage: "ID...",
			Flags:     []cli.Flag{&cli.BoolFlag{Name: "force", Aliases: []string{"f"}, Usage: "kill at once, without a grace period"}},
			Action:    cmdRemove,
		},
		{
			Name:      "pause",
			Usage:     "freeze every process of sandboxes (their memory stays); requests that need them running are refused until resume",
			ArgsUsage: "ID...",
			Action:    cmdLifecycle((*client.Client).PauseSandbox),
		},
		{
			Name:      "resume",
			Usage:     "let paused sandboxes run again, or start hibernated ones again (their sessions' state restored)",
			ArgsUsage: "ID...",
			Action:    cmdLifecycle((*client.Client).ResumeSandbox),
		},
		{
			Name:      "hibernate",
			Usage:     "stop every process of sandboxes and free their memory, keeping their files, network and sessions' state; a request that needs them resumes them",
			ArgsUsage: "ID...",
			Action: cmdLifecycle(func(c *client.Client, ctx context.Context, id string) (*api.Sandbox, error) {
				return c.HibernateSandbox(ctx, id, api.HibernateRequest{})
			}),
		},
		{
			Name:      "exec",
			Usage:     "run a program in a sandbox's session; output streams through, the exit code is the program's",
			ArgsUsage: "ID -- CMD [ARG...]",
			Flags:     execFlags(),
			Action:    cmdExec,
		},
		{
			Name:      "sh",
			Usage:     "run shell source in a sandbox's session (state such as cd and export persists)",
			ArgsUsage: "ID 'COMMANDS'",
			Flags:     execFlags(),
			Action:    cmdShell,
		},
		snapshotCommand(), forkCommand(),
		sessionCommand(), tokenCommand(),
		attachCommand(),
		withSession(filesCommand()), withSession(cpCommand()), envCommand(), permissionsCommand(),
		diffCommand(), exportCommand(),
		portCommand(), networkCommand(),
		psCommand(), startCommand(), logsCommand(), killCommand(), waitCommand(), stdinCommand(),
		{Name: "images", Usage: "list images", Action: cmdImages},
		imageCommand(),
		statsCommand(), eventsCommand(),
		{Name: "version", Usage: "print client and daemon versions", Action: cmdVersion},
	}
}

// apiClient is the client the global flags ask for (made by dialDaemon before any command).
func apiClient(c *cli.Context) *client.Client { return c.App.Metadata["client"].(*client.Client) }

// keyValues parses repeated K=V flags.
func keyValues(flag string, values []string) (map[string]string, error) {
	if len(values) == 0 {
		return nil, nil
	}
	out := map[string]string{}
	for _, kv := range values {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || k == "" {
			return nil, fmt.Errorf("--%s %q: use KEY=VALUE", flag, kv)
		}
		out[k] = v
	}
	return out, nil
}

func cmdCreate(c *cli.Context) error {
	if c.NArg() > 0 {
		return fmt.Errorf("create takes no arguments (got %q); use --id to name the sandbox", c.Args().First())
	}
	env, err := keyValues("env", c.StringSlice("env"))
	if err != nil {
		return err
	}
	labels, err := keyValues("label", c.StringSlice("label"))
	if err != nil {
		return err
	}
	req := api.CreateSandboxRequest{
		ID: c.String("id"), Image: c.String("image"), Pull: c.String("pull"), FromSnapshot: c.String("from-snapshot"), Cwd: c.String("cwd"), Lifecycle: createLifecycle(c), Env: env, Labels: labels, Network: createNetwork(c),
		User: c.String("user"), RunEntrypoint: c.Bool("run-entrypoint"),
		Limits:       api.Limits{CPUs: c.Float64("cpus"), MemoryMB: c.Int64("memory"), Pids: c.Int64("pids")},
		Capabilities: c.StringSlice("cap-add"),
	}
	if err := storageRequest(c, &req); err != nil {
		return err
	}
	if req.Permissions, err = permRules(c.StringSlice("perm")); err != nil {
		return err
	}
	sb, err := apiClient(c).CreateSandbox(c.Context, req)
	if err != nil {
		return err
	}
	fmt.Println(sb.ID)
	return nil
}

func cmdList(c *cli.Context) error {
	list, err := apiClient(c).ListSandboxes(c.Context)
	if err != nil {
		return err
	}
	return printList(c, list, "ID\tIMAGE\tSTATUS\tNETWORK\tIP\tCPUS\tMEMORY\tPIDS\tCREATED\tLABELS",
		func(sb api.Sandbox) string { return sb.ID },
		func(sb api.Sandbox) string {
			return fmt.Sprintf("%s\t%s\t%s\t%s\t%s\t%g\t%dMB\t%d\t%s\t%s", sb.ID, sb.Image, sb.Status, sb.Network.Mode, sb.Network.IP,
				sb.Limits.CPUs, sb.Limits.MemoryMB, sb.Limits.Pids, ago(sb.CreatedAt), formatLabels(sb.Labels))
		})
}

// printList prints a list command's answer: as JSON with --json, its ids with --quiet, else
// a table of header and one row a item.
func printList[T any](c *cli.Context, list []T, header string, id, row func(T) string) error {
	switch {
	case c.Bool("json"):
		return printJSON(list)
	case c.Bool("quiet"):
		for _, item := range list {
			fmt.Println(id(item))
		}
		return nil
	}
	tw := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, header)
	for _, item := range list {
		fmt.Fprintln(tw, row(item))
	}
	return tw.Flush()
}

func ago(t time.Time) string {
	return time.Since(t).Truncate(time.Second).String() + " ago"
}

func formatLabels(labels map[string]string) string {
	var parts []string
	for k, v := range labels {
		parts = append(parts, k+"="+v)
	}
	sort.Strings(parts)
	return strings.Join(parts, ",")
}

func cmdInspect(c *cli.Context) error {
	if c.NArg() != 1 {
		return usageError("usage: nsbox inspect ID")
	}
	sb, err := apiClient(c).GetSandbox(c.Context, c.Args().First())
	if err != nil {
		return err
	}
	return printJSON(sb)
}

func cmdRemove(c *cli.Context) error {
	if c.NArg() == 0 {
		return usageError("usage: nsbox rm [-f] ID...")
	}
	return eachArg(c.Args().Slice(), func(id string) error {
		return apiClient(c).RemoveSandbox(c.Context, id, client.RemoveOptions{Force: c.Bool("force")})
	})
}

// cmdLifecycle runs a change of state (pause, resume) on each sandbox named.
func cmdLifecycle(change func(*client.Client, context.Context, string) (*api.Sandbox, error)) cli.ActionFunc {
	return func(c *cli.Context) error {
		if c.NArg() == 0 {
			return usageError("usage: nsbox %s ID...", c.Command.Name)
		}
		return eachArg(c.Args().Slice(), func(id string) error {
			_, err := change(apiClient(c), c.Context, id)
			return err
		})
	}
}

// createLifecycle is the lifecycle create's flags ask for, or nil (the daemon's default).
func createLifecycle(c *cli.Context) *api.Lifecycle {
	if !c.IsSet("idle-timeout") && !c.IsSet("ttl") && !c.IsSet("on-idle") {
		return nil
	}
	return &api.Lifecycle{IdleSeconds: int64(c.Duration("idle-timeout").Seconds()), OnIdle: c.String("on-idle"), TTLSeconds: int64(c.Duration("ttl").Seconds())}
}

func execFlags() []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Name: "session", Aliases: []string{"s"}, Usage: "session to run in (default: the sandbox's default session)"},
		&cli.StringSliceFlag{Name: "env", Aliases: []string{"e"}, Usage: "environment variable K=V for this command only"},
		&cli.StringFlag{Name: "cwd", Aliases: []string{"w"}, Usage: "working directory for this command only"},
		&cli.DurationFlag{Name: "timeout", Usage: "kill the command after this long (exit code 124)"},
		&cli.BoolFlag{Name: "interactive", Aliases: []string{"i"}, Usage: "send this terminal's stdin to the command"},
	}
}

func cmdExec(c *cli.Context) error {
	args := c.Args().Slice()
	if len(args) > 1 && args[1] == "--" {
		args = append(args[:1], args[2:]...)
	}
	if len(args) < 2 {
		return usageError("usage: nsbox exec [-s SESSION] [--env K=V] [--cwd DIR] [--timeout 10s] [-i] ID -- CMD [ARG...]")
	}
	return runInSession(c, args[0], api.ExecRequest{Argv: args[1:]})
}

func cmdShell(c *cli.Context) error {
	if c.NArg() != 2 {
		return usageError("usage: nsbox sh [-s SESSION] [--timeout 10s] ID 'COMMANDS'")
	}
	return runInSession(c, c.Args().Get(0), api.ExecRequest{Command: c.Args().Get(1)})
}

// runInSession runs a command with the exec flags, streaming its output to this process's
// stdout and stderr, and exits with its exit code.
func runInSession(c *cli.Context, id string, req api.ExecRequest) error {
	env, err := keyValues("env", c.StringSlice("env"))
	if err != nil {
		return err
	}
	req.SessionID, req.Env, req.Cwd, req.TimeoutMs = c.String("session"), env, c.String("cwd"), c.Duration("timeout").Milliseconds()
	if c.Bool("interactive") {
		stdin, err := io.ReadAll(os.Stdin)
		if err != nil {
			return fmt.Errorf("read stdin: %w", err)
		}
		req.Stdin, req.StdinEncoding = base64.StdEncoding.EncodeToString(stdin), api.EncodingBase64
	}
	// A failed write to stdout or stderr ends the command too.
	res, err := apiClient(c).ExecTo(c.Context, id, req, os.Stdout, os.Stderr)
	if err != nil {
		return err
	}
	switch {
	case res.TimedOut:
		fmt.Fprintf(os.Stderr, "nsbox: command timed out after %s and was killed\n", c.Duration("timeout"))
	case res.Canceled:
		fmt.Fprintln(os.Stderr, "nsbox: command was canceled")
	case res.OOMKilled:
		fmt.Fprintln(os.Stderr, "nsbox: killed: out of memory (the sandbox's memory limit)")
	}
	if res.SessionReset {
		fmt.Fprintln(os.Stderr, "nsbox: the session's shell was replaced (it did not come back, or it had been killed): its variables, functions and aliases are gone")
	}
	if res.SessionEnded {
		fmt.Fprintf(os.Stderr, "nsbox: the command ended session %q\n", res.SessionID)
	}
	if res.ExitCode != 0 {
		return cli.Exit("", res.ExitCode)
	}
	return nil
}

func sessionCommand() *cli.Command {
	return &cli.Command{
		Name:  "session",
		Usage: "manage a sandbox's sessions (stateful shells)",
		Subcommands: []*cli.Command{
			{
				Name:      "create",
				Usage:     "start a session and print its id",
				ArgsUsage: "ID",
				Flags: []cli.Flag{
					&cli.StringFlag{Name: "id", Usage: "session id (default: generated)"},
					&cli.StringFlag{Name: "shell", Usage: "bash (default when the image has it), sh, or a path"},
					&cli.StringFlag{Name: "user", Aliases: []string{"u"}, Usage: "user inside the sandbox: name, uid, uid:gid or name:group (default: the sandbox's user)"},
					&cli.StringFlag{Name: "cwd", Usage: "starting directory"},
					&cli.StringSliceFlag{Name: "env", Aliases: []string{"e"}, Usage: "environment variable K=V (repeatable)"},
					&cli.StringFlag{Name: "permission", Usage: "write (default) or read: a read session can be watched, not driven"},
					&cli.StringSliceFlag{Name: "perm", Usage: "per-path rule for this session only, narrower than the sandbox's: PATTERN=LEVEL (repeatable; docs/permissions.md)"},
				},
				Action: func(c *cli.Context) error {
					if c.NArg() != 1 {
						return usageError("usage: nsbox session create [--id SID] [--shell bash|sh] [--user U] [--cwd DIR] [--env K=V]... [--permission read|write] [--perm PATTERN=LEVEL]... ID")
					}
					env, err := keyValues("env", c.StringSlice("env"))
					if err != nil {
						return err
					}
					rules, err := permRules(c.StringSlice("perm"))
					if err != nil {
						return err
					}
					s, err := apiClient(c).CreateSession(c.Context, c.Args().First(), api.CreateSessionRequest{
						ID: c.String("id"), Shell: c.String("shell"), User: c.String("user"), Cwd: c.String("cwd"), Env: env, Permission: c.String("permission"),
						Permissions: rules,
					})
					if err != nil {
						return err
					}
					fmt.Println(s.ID)
					return nil
				},
			},
			{
				Name:      "ls",
				Usage:     "list a sandbox's sessions",
				ArgsUsage: "ID",
				Flags:     []cli.Flag{&cli.BoolFlag{Name: "json", Usage: "print JSON"}},
				Action: func(c *cli.Context) error {
					if c.NArg() != 1 {
						return usageError("usage: nsbox session ls ID")
					}
					list, err := apiClient(c).ListSessions(c.Context, c.Args().First())
					if err != nil || c.Bool("json") {
						if err == nil {
							err = printJSON(list)
						}
						return err
					}
					tw := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
					fmt.Fprintln(tw, "ID\tSHELL\tUSER\tPERMISSION\tSTATUS\tCWD\tCREATED")
					for _, s := range list {
						status := s.Status
						if s.Status == api.SessionEnded {
							status = fmt.Sprintf("ended (%d)", s.ExitCode)
						}
						fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", s.ID, s.Shell, s.User, s.Permission, status, s.Cwd, ago(s.CreatedAt))
					}
					return tw.Flush()
				},
			},
			{
				Name:      "rm",
				Usage:     "end sessions and kill everything they started",
				ArgsUsage: "ID SESSION...",
				Action: func(c *cli.Context) error {
					if c.NArg() < 2 {
						return usageError("usage: nsbox session rm ID SESSION...")
					}
					return eachArg(c.Args().Tail(), func(sid string) error {
						return apiClient(c).DeleteSession(c.Context, c.Args().First(), sid)
					})
				},
			},
		},
	}
}

// eachArg runs do for every argument, printing each one done and each error; it fails when any
// did, with the exit code of the first failure.
func eachArg(args []string, do func(string) error) error {
	code := 0
	for _, arg := range args {
		if err := do(arg); err != nil {
			fmt.Fprintf(os.Stderr, "nsbox: %v\n", err)
			if code == 0 {
				code = exitCode(err)
			}
			continue
		}
		fmt.Println(arg)
	}
	if code != 0 {
		return cli.Exit("", code)
	}
	return nil
}

func cmdImages(c *cli.Context) error {
	images, err := apiClient(c).Images(c.Context)
	if err != nil {
		return err
	}
	tw := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tWARM\tDESCRIPTION")
	for _, img := range images {
		fmt.Fprintf(tw, "%s\t%d\t%s\n", img.Name, img.Warm, img.Description)
	}
	return tw.Flush()
}

func cmdVersion(c *cli.Context) error {
	fmt.Println("client:", version)
	v, err := apiClient(c).Version(c.Context)
	if err != nil {
		return err
	}
	fmt.Println("daemon:", v.Version)
	if v.Checkpoint.Available {
		fmt.Println("memory checkpoints (CRIU): available")
	} else {
		fmt.Println("memory checkpoints (CRIU): not available:", v.Checkpoint.Reason)
	}
	return nil
}

func printJSON(v any) error {
	enc := json.NewEncoder(os.Stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}
