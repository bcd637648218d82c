package main

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"strings"

	"github.com/urfave/cli/v2"

	"github.com/nsbox/nsbox/api"
	"github.com/nsbox/nsbox/permfs"
	"github.com/nsbox/nsbox/perms"
)

// fuseFD is the descriptor of /dev/fuse the daemon hands a layer. A plain number, never an
// *os.File: its finalizer would close the descriptor under the running layer.
const fuseFD = 4

// permfsCommand runs a sandbox's permission layer (started by the daemon, not by hand): the
// rules come as an api.PermissionsRequest on stdin, readiness goes to fd 3, and fd 4 is
// /dev/fuse, mounted already (permfs.Mount).
func permfsCommand() *cli.Command {
	return &cli.Command{
		Name:   "permfs",
		Usage:  "serve a directory of a sandbox through its permission rules (started by the daemon, not by hand)",
		Hidden: true,
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "source", Required: true},
			&cli.StringFlag{Name: "at", Required: true},
			&cli.BoolFlag{Name: "read-only"},
			&cli.StringSliceFlag{Name: "hide"},
			&cli.StringSliceFlag{Name: "keep"},
			&cli.BoolFlag{Name: "shared"},
			&cli.StringFlag{Name: "control", Required: true},
			&cli.UintFlag{Name: "root-uid"},
			&cli.UintFlag{Name: "root-gid"},
			&cli.UintFlag{Name: "ids-host"},
			&cli.UintFlag{Name: "ids-size"},
		},
		Action: func(c *cli.Context) error {
			ready := os.NewFile(3, "ready")
			var body api.PermissionsRequest
			if err := json.NewDecoder(os.Stdin).Decode(&body); err != nil {
				fmt.Fprintf(ready, "read rules: %v", err)
				return fmt.Errorf("read rules: %w", err)
			}
			rules, err := perms.Compile(body.Permissions)
			if err != nil {
				fmt.Fprintf(ready, "%v", err)
				return err
			}
			return permfs.Run(permfs.Config{
				Source: c.String("source"), At: c.String("at"), ReadOnly: c.Bool("read-only"), Hidden: c.StringSlice("hide"), Kept: c.StringSlice("keep"), Shared: c.Bool("shared"), Dev: fuseFD, Control: c.String("control"),
				Rules: rules, Ready: ready, Log: slog.New(slog.NewTextHandler(os.Stderr, nil)),
				IDs: permfs.IDs{RootUID: uint32(c.Uint("root-uid")), RootGID: uint32(c.Uint("root-gid")),
					Host: uint32(c.Uint("ids-host")), Size: uint32(c.Uint("ids-size"))},
			})
		},
	}
}

// permRules parses PATTERN=LEVEL arguments (nil for none).
func permRules(args []string) ([]api.PermissionRule, error) {
	var rules []api.PermissionRule
	for _, a := range args {
		pattern, level, ok := strings.Cut(a, "=")
		if !ok || pattern == "" {
			return nil, usageError("a rule is PATTERN=LEVEL with LEVEL none, view, read or write (e.g. '**/.env=none'), got %q", a)
		}
		rules = append(rules, api.PermissionRule{Pattern: pattern, Level: level})
	}
	return rules, nil
}

// permissionsCommand prints or replaces a sandbox's rules.
func permissionsCommand() *cli.Command {
	return &cli.Command{
		Name:      "permissions",
		Usage:     "print a sandbox's per-path rules, or replace them (PATCH …/permissions)",
		ArgsUsage: "ID [PATTERN=LEVEL...]",
		Description: "nsbox permissions ID prints the rules as PATTERN=LEVEL lines; nsbox permissions ID PATTERN=LEVEL...\n" +
			"replaces them (a sandbox created with permissions only): new lookups and opens follow the new rules,\n" +
			"files already open stay open. --clear replaces them with none (write everywhere).",
		Flags: []cli.Flag{&cli.BoolFlag{Name: "clear", Usage: "replace the rules with none"}},
		Action: func(c *cli.Context) error {
			if c.NArg() < 1 {
				return usageError("usage: nsbox permissions ID [PATTERN=LEVEL...] [--clear]")
			}
			id := c.Args().First()
			rules, err := permRules(c.Args().Tail())
			if err != nil {
				return err
			}
			var sb *api.Sandbox
			switch {
			case rules != nil && c.Bool("clear"):
				return usageError("--clear replaces the rules with none: give rules or --clear, not both")
			case rules != nil || c.Bool("clear"):
				sb, err = apiClient(c).SetPermissions(c.Context, id, rules)
			default:
				sb, err = apiClient(c).GetSandbox(c.Context, id)
			}
			if err != nil {
				return err
			}
			for _, r := range sb.Permissions {
				fmt.Printf("%s=%s\n", r.Pattern, r.Level)
			}
			return nil
		},
	}
}
