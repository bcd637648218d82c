package main

import (
	"encoding/base64"
	"encoding/json"
	"errors"
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
			Flags: []cli.Flag{
				&cli.StringFlag{Name: "id", Usage: "sandbox id (default: generated)"},
				&cli.StringFlag{Name: "image", Usage: "image: host (default) or busybox"},
				&cli.Float64Flag{Name: "cpus", Usage: "CPU limit, e.g. 0.5 or 2"},
				&cli.Int64Flag{Name: "memory", Usage: "memory limit in MB"},
				&cli.Int64Flag{Name: "pids", Usage: "process limit"},
				&cli.StringFlag{Name: "cwd", Usage: "working directory of commands (default /workspace)"},
				&cli.StringSliceFlag{Name: "env", Aliases: []string{"e"}, Usage: "environment variable K=V (repeatable)"},
				&cli.StringSliceFlag{Name: "label", Aliases: []string{"l"}, Usage: "label K=V (repeatable)"},
			},
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
			Name:      "exec",
			Usage:     "run a program in a sandbox; its output and exit code pass through",
			ArgsUsage: "ID -- CMD [ARG...]",
			Flags: []cli.Flag{
				&cli.StringSliceFlag{Name: "env", Aliases: []string{"e"}, Usage: "environment variable K=V for this command"},
				&cli.StringFlag{Name: "cwd", Aliases: []string{"w"}, Usage: "working directory for this command"},
				&cli.DurationFlag{Name: "timeout", Usage: "kill the command after this long (exit code 124)"},
				&cli.BoolFlag{Name: "interactive", Aliases: []string{"i"}, Usage: "send this terminal's stdin to the command"},
			},
			Action: cmdExec,
		},
		{Name: "images", Usage: "list images", Action: cmdImages},
		{Name: "version", Usage: "print client and daemon versions", Action: cmdVersion},
	}
}

func apiClient(c *cli.Context) *client.Client { return client.New(c.String("socket")) }

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
	sb, err := apiClient(c).CreateSandbox(c.Context, api.CreateSandboxRequest{
		ID: c.String("id"), Image: c.String("image"), Cwd: c.String("cwd"), Env: env, Labels: labels,
		Limits: api.Limits{CPUs: c.Float64("cpus"), MemoryMB: c.Int64("memory"), Pids: c.Int64("pids")},
	})
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
	switch {
	case c.Bool("json"):
		return printJSON(list)
	case c.Bool("quiet"):
		for _, sb := range list {
			fmt.Println(sb.ID)
		}
		return nil
	}
	tw := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tIMAGE\tSTATUS\tCPUS\tMEMORY\tPIDS\tCREATED\tLABELS")
	for _, sb := range list {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%g\t%dMB\t%d\t%s\t%s\n", sb.ID, sb.Image, sb.Status, sb.Limits.CPUs,
			sb.Limits.MemoryMB, sb.Limits.Pids, ago(sb.CreatedAt), formatLabels(sb.Labels))
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
		return errors.New("usage: nsbox inspect ID")
	}
	sb, err := apiClient(c).GetSandbox(c.Context, c.Args().First())
	if err != nil {
		return err
	}
	return printJSON(sb)
}

func cmdRemove(c *cli.Context) error {
	if c.NArg() == 0 {
		return errors.New("usage: nsbox rm [-f] ID...")
	}
	failed := 0
	for _, id := range c.Args().Slice() {
		if err := apiClient(c).RemoveSandbox(c.Context, id, c.Bool("force")); err != nil {
			fmt.Fprintf(os.Stderr, "nsbox: %v\n", err)
			failed++
			continue
		}
		fmt.Println(id)
	}
	if failed > 0 {
		return cli.Exit("", 1)
	}
	return nil
}

func cmdExec(c *cli.Context) error {
	args := c.Args().Slice()
	if len(args) > 1 && args[1] == "--" {
		args = append(args[:1], args[2:]...)
	}
	if len(args) < 2 {
		return errors.New("usage: nsbox exec [--env K=V] [--cwd DIR] [--timeout 10s] [-i] ID -- CMD [ARG...]")
	}
	env, err := keyValues("env", c.StringSlice("env"))
	if err != nil {
		return err
	}
	req := api.ExecRequest{Argv: args[1:], Env: env, Cwd: c.String("cwd"), TimeoutMs: c.Duration("timeout").Milliseconds()}
	if c.Bool("interactive") {
		stdin, err := io.ReadAll(os.Stdin)
		if err != nil {
			return fmt.Errorf("read stdin: %w", err)
		}
		req.Stdin, req.StdinEncoding = base64.StdEncoding.EncodeToString(stdin), api.EncodingBase64
	}
	res, err := apiClient(c).Exec(c.Context, args[0], req)
	if err != nil {
		return err
	}
	stdout, stderr, err := res.Output()
	if err != nil {
		return err
	}
	os.Stdout.Write(stdout)
	os.Stderr.Write(stderr)
	if res.TimedOut {
		fmt.Fprintf(os.Stderr, "nsbox: command timed out after %s and was killed\n", c.Duration("timeout"))
	}
	if res.ExitCode != 0 {
		return cli.Exit("", res.ExitCode)
	}
	return nil
}

func cmdImages(c *cli.Context) error {
	images, err := apiClient(c).Images(c.Context)
	if err != nil {
		return err
	}
	tw := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tDESCRIPTION")
	for _, img := range images {
		fmt.Fprintf(tw, "%s\t%s\n", img.Name, img.Description)
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
	return nil
}

func printJSON(v any) error {
	enc := json.NewEncoder(os.Stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}
