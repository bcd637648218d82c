package main

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"os"
	"text/tabwriter"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/nsbox/nsbox/api"
	"github.com/nsbox/nsbox/client"
)

// hostFlags say which daemon the CLI talks to, and how.
func hostFlags() []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Name: "socket", Value: client.DefaultSocket, EnvVars: []string{"NSBOX_SOCKET"}, Usage: "the daemon's API socket"},
		&cli.StringFlag{Name: "host", EnvVars: []string{"NSBOX_HOST"}, Usage: "the daemon: unix:///PATH, https://HOST:PORT, or http://127.0.0.1:PORT (default: --socket)"},
		&cli.StringFlag{Name: "token", EnvVars: []string{"NSBOX_TOKEN"}, Usage: "bearer token for a TCP --host"},
		&cli.StringFlag{Name: "tls-ca", EnvVars: []string{"NSBOX_TLS_CA"}, Usage: "PEM CA certificates to trust for an https:// --host (default: the system's)"},
	}
}

// dialDaemon makes the client the global flags ask for and keeps it for apiClient.
func dialDaemon(c *cli.Context) error {
	host := c.String("host")
	if host == "" {
		c.App.Metadata = map[string]any{"client": client.New(c.String("socket"))}
		return nil
	}
	opts := client.Options{Token: c.String("token")}
	if ca := c.String("tls-ca"); ca != "" {
		pem, err := os.ReadFile(ca)
		if err != nil {
			return fmt.Errorf("--tls-ca: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return fmt.Errorf("--tls-ca %s: no PEM certificate in it", ca)
		}
		opts.TLS = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	}
	cl, err := client.Dial(host, opts)
	if err != nil {
		return fmt.Errorf("--host: %w", err)
	}
	c.App.Metadata = map[string]any{"client": cl}
	return nil
}

func tokenCommand() *cli.Command {
	return &cli.Command{
		Name:  "token",
		Usage: "mint, list and revoke scoped API tokens (an admin's job)",
		Subcommands: []*cli.Command{
			{
				Name:      "create",
				Usage:     "mint a token for a sandbox (or one of its sessions) and print it",
				ArgsUsage: "SANDBOX",
				Flags: []cli.Flag{
					&cli.StringFlag{Name: "session", Aliases: []string{"s"}, Usage: "hold the token to this session"},
					&cli.StringFlag{Name: "permission", Value: api.PermissionWrite, Usage: "read or write"},
					&cli.DurationFlag{Name: "ttl", Value: time.Hour, Usage: "how long the token lives"},
					&cli.BoolFlag{Name: "json", Usage: "print JSON (id, expiry)"},
				},
				Action: func(c *cli.Context) error {
					if c.NArg() != 1 {
						return usageError("usage: nsbox token create [--session SID] [--permission read|write] [--ttl 1h] SANDBOX")
					}
					t, err := apiClient(c).CreateToken(c.Context, api.CreateTokenRequest{
						Sandbox: c.Args().First(), Session: c.String("session"), Permission: c.String("permission"), TTLSeconds: int64(c.Duration("ttl") / time.Second),
					})
					if err != nil || c.Bool("json") {
						if err == nil {
							err = printJSON(t)
						}
						return err
					}
					fmt.Println(t.Secret)
					return nil
				},
			},
			{
				Name:  "ls",
				Usage: "list the tokens that have not expired (never their secrets)",
				Flags: []cli.Flag{&cli.BoolFlag{Name: "json", Usage: "print JSON"}},
				Action: func(c *cli.Context) error {
					list, err := apiClient(c).ListTokens(c.Context)
					if err != nil || c.Bool("json") {
						if err == nil {
							err = printJSON(list)
						}
						return err
					}
					tw := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
					fmt.Fprintln(tw, "ID\tSANDBOX\tSESSION\tPERMISSION\tEXPIRES")
					for _, t := range list {
						fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", t.ID, t.Sandbox, t.Session, t.Permission, t.ExpiresAt.Local().Format(time.DateTime))
					}
					return tw.Flush()
				},
			},
			{
				Name:      "rm",
				Usage:     "revoke tokens: their open streams and terminals are cut",
				ArgsUsage: "TOKEN-ID...",
				Action: func(c *cli.Context) error {
					if c.NArg() == 0 {
						return usageError("usage: nsbox token rm TOKEN-ID...")
					}
					for _, id := range c.Args().Slice() {
						if err := apiClient(c).RevokeToken(c.Context, id); err != nil {
							return err
						}
					}
					return nil
				},
			},
		},
	}
}
