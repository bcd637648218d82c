package main

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"os"

	"github.com/urfave/cli/v2"

	"github.com/nsbox/nsbox/api"
	"github.com/nsbox/nsbox/permfs"
	"github.com/nsbox/nsbox/perms"
)

// permfsCommand runs a sandbox's permission layer (started by the daemon, not by hand): the
// rules come as an api.PermissionsRequest on stdin, readiness goes to fd 3.
func permfsCommand() *cli.Command {
	return &cli.Command{
		Name:   "permfs",
		Usage:  "serve a sandbox's workspace through its permission rules (started by the daemon, not by hand)",
		Hidden: true,
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "source", Required: true},
			&cli.StringFlag{Name: "mountpoint", Required: true},
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
				Source: c.String("source"), Mountpoint: c.String("mountpoint"), Control: c.String("control"),
				Rules: rules, Ready: ready, Log: slog.New(slog.NewTextHandler(os.Stderr, nil)),
				IDs: permfs.IDs{RootUID: uint32(c.Uint("root-uid")), RootGID: uint32(c.Uint("root-gid")),
					Host: uint32(c.Uint("ids-host")), Size: uint32(c.Uint("ids-size"))},
			})
		},
	}
}
