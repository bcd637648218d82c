package main

import (
	"fmt"
	"os"
	"regexp"
	"text/tabwriter"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/nsbox/nsbox/api"
	"github.com/nsbox/nsbox/client"
)

// The commands of a sandbox's long-running processes.

func psCommand() *cli.Command {
	return &cli.Command{
		Name:      "ps",
		Usage:     "list a sandbox's processes",
		ArgsUsage: "ID",
		Flags: []cli.Flag{
			&cli.BoolFlag{Name: "json", Usage: "print JSON"},
			&cli.StringFlag{Name: "status", Usage: "only processes with this status: running, exited, killed or failed"},
			&cli.StringFlag{Name: "session", Aliases: []string{"s"}, Usage: "only processes started with this session"},
			&cli.BoolFlag{Name: "prune", Usage: "remove the processes that have ended (and print them)"},
		},
		Action: cmdPs,
	}
}

func startCommand() *cli.Command {
	return &cli.Command{
		Name:      "start",
		Usage:     "start a long-running process in a sandbox and print its id",
		ArgsUsage: "ID -- CMD [ARG...]",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "id", Usage: "process id (default: generated)"},
			&cli.StringFlag{Name: "session", Aliases: []string{"s"}, Usage: "inherit this session's directory, environment and user"},
			&cli.StringSliceFlag{Name: "env", Aliases: []string{"e"}, Usage: "environment variable K=V (repeatable)"},
			&cli.StringFlag{Name: "cwd", Aliases: []string{"w"}, Usage: "working directory"},
			&cli.StringFlag{Name: "user", Aliases: []string{"u"}, Usage: "user inside the sandbox: name, uid, uid:gid or name:group (default: the sandbox's user)"},
			&cli.BoolFlag{Name: "stdin", Usage: "give it a stdin pipe (write with `nsbox stdin`)"},
			&cli.BoolFlag{Name: "command", Aliases: []string{"c"}, Usage: "run one argument as shell source, with /bin/sh -c"},
			&cli.Int64Flag{Name: "log-bytes", Usage: "size of its output ring in bytes (default 4 MiB)"},
		},
		Action: cmdStart,
	}
}

func logsCommand() *cli.Command {
	return &cli.Command{
		Name:      "logs",
		Usage:     "print a process's output: stdout to stdout and stderr to stderr, byte-exact",
		ArgsUsage: "ID PID",
		Flags: []cli.Flag{
			&cli.BoolFlag{Name: "follow", Aliases: []string{"f"}, Usage: "keep printing until the process has ended"},
			&cli.Int64Flag{Name: "cursor", Usage: "start after this byte offset of its log"},
		},
		Action: cmdLogs,
	}
}

func killCommand() *cli.Command {
	return &cli.Command{
		Name:      "kill",
		Usage:     "signal a process's group (TERM, then KILL after the grace) and wait for it to end",
		ArgsUsage: "ID [PID...]",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "signal", Usage: "signal name or number", Value: "TERM"},
			&cli.DurationFlag{Name: "grace", Usage: "after TERM or INT, SIGKILL the group after this long", Value: 5 * time.Second},
			&cli.BoolFlag{Name: "all", Usage: "every running process of the sandbox"},
		},
		Action: cmdKill,
	}
}

func waitCommand() *cli.Command {
	return &cli.Command{
		Name:      "wait",
		Usage:     "wait for a process to end (exit code = its exit code), for a log line, or for a port",
		ArgsUsage: "ID PID",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "log", Usage: "wait for an output line matching this regular expression"},
			&cli.Int64Flag{Name: "cursor", Usage: "with --log: search the log from this byte offset"},
			&cli.IntFlag{Name: "port", Usage: "wait until this TCP port accepts connections inside the sandbox"},
			&cli.StringFlag{Name: "http", Usage: "with --port: wait until GET of this path answers below 400"},
			&cli.DurationFlag{Name: "timeout", Usage: "give up after this long (exit code 124)", Value: 30 * time.Second},
		},
		Action: cmdWait,
	}
}

func stdinCommand() *cli.Command {
	return &cli.Command{
		Name:      "stdin",
		Usage:     "copy this command's stdin to a process's stdin",
		ArgsUsage: "ID PID",
		Flags:     []cli.Flag{&cli.BoolFlag{Name: "close", Usage: "close the process's stdin afterwards"}},
		Action:    cmdStdin,
	}
}

func cmdPs(c *cli.Context) error {
	if c.NArg() != 1 {
		return usageError("usage: nsbox ps [--status S] [--session S] [--json] [--prune] ID")
	}
	cl, id := apiClient(c), c.Args().First()
	list, err := cl.ListProcesses(c.Context, id, c.String("status"), c.String("session"))
	if c.Bool("prune") && err == nil {
		list, err = cl.RemoveFinishedProcesses(c.Context, id)
	}
	if err != nil {
		return err
	}
	if c.Bool("json") {
		return printJSON(list)
	}
	tw := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tPID\tSTATUS\tSTARTED\tSESSION\tCOMMAND")
	for _, p := range list {
		fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%s\t%s\n", p.ID, p.PID, processStatus(p), ago(p.StartedAt), p.SessionID, processCommand(p))
	}
	return tw.Flush()
}

func processStatus(p api.Process) string {
	if p.OOMKilled {
		return "killed: out of memory"
	}
	switch p.Status {
	case api.ProcessExited:
		return fmt.Sprintf("exited (%d)", p.ExitCode)
	case api.ProcessKilled:
		return "killed (" + p.Signal + ")"
	}
	return p.Status
}

func processCommand(p api.Process) string {
	if p.Command != "" {
		return p.Command
	}
	return fmt.Sprintf("%q", p.Argv)
}

func cmdStart(c *cli.Context) error {
	args := c.Args().Slice()
	if len(args) > 1 && args[1] == "--" {
		args = append(args[:1], args[2:]...)
	}
	if len(args) < 2 || (c.Bool("command") && len(args) != 2) {
		return usageError("usage: nsbox start [--id PID] [--session S] [--env K=V] [--cwd DIR] [--user U] [--stdin] ID -- CMD [ARG...]  (or -c ID 'COMMANDS')")
	}
	env, err := keyValues("env", c.StringSlice("env"))
	if err != nil {
		return err
	}
	req := api.StartProcessRequest{ID: c.String("id"), SessionID: c.String("session"), Env: env, Cwd: c.String("cwd"),
		User: c.String("user"), LogBytes: c.Int64("log-bytes"), Argv: args[1:]}
	if c.Bool("command") {
		req.Command, req.Argv = args[1], nil
	}
	if c.Bool("stdin") {
		req.Stdin = api.StdinPipe
	}
	p, err := apiClient(c).StartProcess(c.Context, args[0], req)
	if err != nil {
		return err
	}
	if p.Status == api.ProcessFailed {
		return cli.Exit(fmt.Sprintf("nsbox: process %s failed to start: %s", p.ID, p.Error), 127)
	}
	fmt.Println(p.ID)
	return nil
}

// writeChunk writes a log chunk to stdout or stderr, as its stream says.
func writeChunk(ev api.ProcessEvent) error {
	out := os.Stdout
	switch ev.Type {
	case api.EventStderr:
		out = os.Stderr
	case api.EventStdout:
	case api.EventSkipped:
		fmt.Fprintf(os.Stderr, "nsbox: %d bytes of output fell off the process's log ring before they were read\n", ev.Skipped)
		return nil
	default:
		return nil
	}
	data, err := ev.Bytes()
	if err != nil {
		return fmt.Errorf("decode output: %w", err)
	}
	if _, err := out.Write(data); err != nil {
		return fmt.Errorf("write output: %w", err)
	}
	return nil
}

func cmdLogs(c *cli.Context) error {
	if c.NArg() != 2 {
		return usageError("usage: nsbox logs [-f] [--cursor N] ID PID")
	}
	cl, id, pid, cursor := apiClient(c), c.Args().Get(0), c.Args().Get(1), c.Int64("cursor")
	if c.Bool("follow") {
		_, err := cl.FollowProcessLogs(c.Context, id, pid, client.LogsOptions{Cursor: cursor}, writeChunk)
		return err
	}
	for {
		logs, err := cl.ProcessLogs(c.Context, id, pid, client.LogsOptions{Cursor: cursor, Limit: 0})
		if err != nil {
			return err
		}
		if logs.Skipped > 0 {
			_ = writeChunk(api.ProcessEvent{Type: api.EventSkipped, Skipped: logs.Skipped})
		}
		for _, ch := range logs.Chunks {
			if err := writeChunk(ch); err != nil {
				return err
			}
		}
		if len(logs.Chunks) == 0 || logs.Cursor == cursor {
			return nil
		}
		cursor = logs.Cursor
	}
}

func cmdKill(c *cli.Context) error {
	if c.NArg() < 1 || (c.NArg() == 1) != c.Bool("all") {
		return usageError("usage: nsbox kill [--signal TERM] [--grace 5s] ID PID...  or  nsbox kill --all ID")
	}
	grace := c.Duration("grace").Milliseconds()
	req := api.KillProcessRequest{Signal: api.SignalName(c.String("signal")), GraceMs: &grace}
	cl, id := apiClient(c), c.Args().First()
	if c.Bool("all") {
		list, err := cl.KillAllProcesses(c.Context, id, req)
		for _, p := range list {
			fmt.Println(p.ID)
		}
		return err
	}
	return eachArg(c.Args().Tail(), func(pid string) error {
		_, err := cl.KillProcess(c.Context, id, pid, req)
		return err
	})
}

func cmdWait(c *cli.Context) error {
	if c.NArg() != 2 {
		return usageError("usage: nsbox wait [--log REGEX [--cursor N] | --port N [--http PATH]] [--timeout 30s] ID PID")
	}
	if re := c.String("log"); re != "" {
		if _, err := regexp.Compile(re); err != nil {
			return fmt.Errorf("--log is not a valid regular expression: %w", err)
		}
	}
	res, err := apiClient(c).WaitProcess(c.Context, c.Args().Get(0), c.Args().Get(1), api.WaitProcessRequest{
		TimeoutMs: c.Duration("timeout").Milliseconds(), Log: c.String("log"), Cursor: c.Int64("cursor"),
		Port: c.Int("port"), HTTPPath: c.String("http"),
	})
	if err != nil {
		return err
	}
	switch {
	case res.TimedOut:
		return cli.Exit("nsbox: "+res.Reason, 124)
	case !res.Met:
		return cli.Exit("nsbox: "+res.Reason, 1)
	case res.Condition == "log":
		fmt.Println(res.Match)
	case res.Condition == "exit":
		if res.Process.Status == api.ProcessFailed {
			return cli.Exit("nsbox: the process failed to start: "+res.Process.Error, 127)
		}
		if res.Process.ExitCode != 0 {
			return cli.Exit("", res.Process.ExitCode)
		}
	}
	return nil
}

func cmdStdin(c *cli.Context) error {
	if c.NArg() != 2 {
		return usageError("usage: nsbox stdin [--close] ID PID < INPUT")
	}
	return apiClient(c).WriteProcessStdin(c.Context, c.Args().Get(0), c.Args().Get(1), os.Stdin, client.StdinOptions{Close: c.Bool("close")})
}
