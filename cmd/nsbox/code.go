package main

import (
	"fmt"
	"os"

	"github.com/urfave/cli/v2"

	"github.com/nsbox/nsbox/api"
)

// codeCommands are `nsbox run-code` and `nsbox context …`: code contexts, interpreters that
// keep their state between runs.
func codeCommands() []*cli.Command {
	return []*cli.Command{
		{
			Name:      "run-code",
			Usage:     "run Python or JavaScript in a code context: output streams through, results print as text, exit 1 on an exception",
			ArgsUsage: "ID CODE",
			Flags: []cli.Flag{
				&cli.StringFlag{Name: "lang", Value: api.LanguagePython, Usage: "python or javascript (for a new context)"},
				&cli.StringFlag{Name: "context", Usage: "run in this context (nsbox context create); default: a new one, deleted after the run"},
				&cli.DurationFlag{Name: "timeout", Usage: "interrupt the run after this long"},
			},
			Action: cmdRunCode,
		},
		{
			Name:  "git",
			Usage: "git in a sandbox, with the image's git",
			Subcommands: []*cli.Command{{
				Name:      "checkout",
				Usage:     "clone a repository into a sandbox directory (or fetch and check out, if it is a clone of it already); print the commit",
				ArgsUsage: "ID URL DIR",
				Flags: []cli.Flag{
					&cli.StringFlag{Name: "branch", Aliases: []string{"b"}, Usage: "branch or tag (default: the remote's default branch)"},
					&cli.IntFlag{Name: "depth", Usage: "shallow clone of this many commits"},
					&cli.StringFlag{Name: "session", Aliases: []string{"s"}, Usage: "as this session's user, relative to its working directory"},
					&cli.StringFlag{Name: "token", EnvVars: []string{"NSBOX_GIT_TOKEN"}, Usage: "token for an HTTPS repository (given to git for this call only)"},
				},
				Action: func(c *cli.Context) error {
					if c.NArg() != 3 {
						return usageError("usage: nsbox git checkout [--branch B] [--depth N] ID URL DIR")
					}
					res, err := apiClient(c).GitCheckout(c.Context, c.Args().Get(0), api.GitCheckoutRequest{
						URL: c.Args().Get(1), TargetDir: c.Args().Get(2), Branch: c.String("branch"), Depth: c.Int("depth"),
						SessionID: c.String("session"), Token: c.String("token")})
					if err != nil {
						return err
					}
					fmt.Printf("%s %s %s\n", res.Dir, res.Branch, res.Commit)
					return nil
				},
			}},
		},
		{
			Name:  "context",
			Usage: "code contexts: long-lived interpreters whose variables, imports and working directory persist between runs",
			Subcommands: []*cli.Command{
				{
					Name:      "create",
					Usage:     "start a code context and print its id",
					ArgsUsage: "ID",
					Flags: []cli.Flag{
						&cli.StringFlag{Name: "lang", Value: api.LanguagePython, Usage: "python or javascript"},
						&cli.StringFlag{Name: "session", Aliases: []string{"s"}, Usage: "start with this session's user, working directory and environment"},
						&cli.StringFlag{Name: "cwd", Usage: "working directory"},
					},
					Action: func(c *cli.Context) error {
						if c.NArg() != 1 {
							return usageError("usage: nsbox context create [--lang L] ID")
						}
						cc, err := apiClient(c).CreateCodeContext(c.Context, c.Args().First(), api.CreateCodeContextRequest{
							Language: c.String("lang"), SessionID: c.String("session"), Cwd: c.String("cwd")})
						if err != nil {
							return err
						}
						fmt.Println(cc.ID)
						return nil
					},
				},
				{
					Name:      "ls",
					Usage:     "list a sandbox's code contexts",
					ArgsUsage: "ID",
					Action: func(c *cli.Context) error {
						if c.NArg() != 1 {
							return usageError("usage: nsbox context ls ID")
						}
						list, err := apiClient(c).ListCodeContexts(c.Context, c.Args().First())
						if err != nil {
							return err
						}
						for _, cc := range list {
							fmt.Printf("%s\t%s\t%s\t%s\n", cc.ID, cc.Language, cc.User, cc.Cwd)
						}
						return nil
					},
				},
				{
					Name:      "rm",
					Usage:     "end code contexts",
					ArgsUsage: "ID CONTEXT...",
					Action: func(c *cli.Context) error {
						if c.NArg() < 2 {
							return usageError("usage: nsbox context rm ID CONTEXT...")
						}
						return eachArg(c.Args().Tail(), func(cid string) error {
							return apiClient(c).DeleteCodeContext(c.Context, c.Args().First(), cid)
						})
					},
				},
			},
		},
	}
}

func cmdRunCode(c *cli.Context) error {
	if c.NArg() != 2 {
		return usageError("usage: nsbox run-code [--lang L] [--context CID] ID CODE")
	}
	id, cl := c.Args().Get(0), apiClient(c)
	cid := c.String("context")
	if cid == "" {
		cc, err := cl.CreateCodeContext(c.Context, id, api.CreateCodeContextRequest{Language: c.String("lang")})
		if err != nil {
			return err
		}
		cid = cc.ID
		defer func() { _ = cl.DeleteCodeContext(c.Context, id, cid) }()
	}
	res, err := cl.RunCodeStream(c.Context, id, cid, api.RunCodeRequest{Code: c.Args().Get(1), TimeoutMs: c.Duration("timeout").Milliseconds()},
		func(ev api.CodeEvent) error {
			switch ev.Type {
			case api.EventStdout, api.EventStderr:
				b, _ := ev.Bytes()
				out := os.Stdout
				if ev.Type == api.EventStderr {
					out = os.Stderr
				}
				_, _ = out.Write(b)
			case api.EventResult:
				if text, ok := ev.Result["text/plain"].(string); ok {
					fmt.Println(text)
				}
			case api.EventException:
				fmt.Fprint(os.Stderr, ev.CodeError.Traceback)
			}
			return nil
		})
	if err != nil {
		return err
	}
	switch {
	case res.TimedOut:
		return cli.Exit("", 124)
	case res.Error != nil:
		return cli.Exit("", 1)
	}
	return nil
}
