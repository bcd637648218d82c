package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/urfave/cli/v2"
	"golang.org/x/sys/unix"

	"github.com/nsbox/nsbox/api"
)

// storageFlags are create's flags for a workspace, bind mounts and a disk limit.
func storageFlags() []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Name: "workspace", Usage: "host directory to show at /workspace: DIR (copy-on-write) or DIR:rw (read-write)"},
		&cli.StringSliceFlag{Name: "mount", Aliases: []string{"v"}, Usage: "bind mount SRC:DST[:ro] (repeatable)"},
		&cli.Int64Flag{Name: "disk", Usage: "disk limit in MB for the sandbox's writable layer"},
	}
}

// storageRequest fills a create request from the storage flags. Relative host paths are made
// absolute here (the API takes absolute paths only).
func storageRequest(c *cli.Context, req *api.CreateSandboxRequest) error {
	req.Limits.DiskMB = c.Int64("disk")
	if ws := c.String("workspace"); ws != "" {
		mode := api.WorkspaceCOW
		for _, m := range []string{api.WorkspaceRW, api.WorkspaceCOW} {
			if dir, ok := strings.CutSuffix(ws, ":"+m); ok {
				ws, mode = dir, m
			}
		}
		dir, err := filepath.Abs(ws)
		if err != nil {
			return fmt.Errorf("--workspace %q: %w", ws, err)
		}
		req.Workspace = &api.Workspace{HostPath: dir, Mode: mode}
	}
	for _, m := range c.StringSlice("mount") {
		parts := strings.Split(m, ":")
		if len(parts) == 3 && (parts[2] == "ro" || parts[2] == "rw") || len(parts) == 2 {
			src, err := filepath.Abs(parts[0])
			if err != nil || parts[0] == "" || parts[1] == "" {
				return fmt.Errorf("--mount %q: use SRC:DST[:ro]", m)
			}
			req.Mounts = append(req.Mounts, api.Mount{Source: src, Target: parts[1], ReadOnly: len(parts) == 3 && parts[2] == "ro"})
			continue
		}
		return fmt.Errorf("--mount %q: use SRC:DST[:ro]", m)
	}
	return nil
}

func diffCommand() *cli.Command {
	return &cli.Command{
		Name:      "diff",
		Usage:     "list a copy-on-write workspace's changes (A added, M modified, D deleted)",
		ArgsUsage: "ID",
		Flags:     []cli.Flag{&cli.BoolFlag{Name: "json", Usage: "print JSON"}},
		Action:    cmdDiff,
	}
}

func exportCommand() *cli.Command {
	return &cli.Command{
		Name:      "export",
		Usage:     "write a copy-on-write workspace's changes to stdout as a tar (deletions are .wh.NAME entries)",
		ArgsUsage: "ID",
		Action:    cmdExport,
	}
}

func cmdDiff(c *cli.Context) error {
	if c.NArg() != 1 {
		return usageError("usage: nsbox diff [--json] ID")
	}
	changes, err := apiClient(c).WorkspaceDiff(c.Context, c.Args().First())
	if err != nil {
		return err
	}
	if c.Bool("json") {
		return printJSON(changes)
	}
	for _, ch := range changes {
		suffix := ""
		if ch.Type == "dir" {
			suffix = "/"
		}
		fmt.Printf("%c %s%s\n", strings.ToUpper(ch.Kind)[0], ch.Path, suffix)
	}
	return nil
}

func cmdExport(c *cli.Context) error {
	if c.NArg() != 1 {
		return usageError("usage: nsbox export ID > changes.tar")
	}
	if _, err := unix.IoctlGetTermios(int(os.Stdout.Fd()), unix.TCGETS); err == nil {
		return errors.New("export writes a tar: redirect stdout to a file or a pipe (nsbox export ID > changes.tar)")
	}
	rc, err := apiClient(c).ExportWorkspace(c.Context, c.Args().First())
	if err != nil {
		return err
	}
	defer rc.Close()
	if _, err := io.Copy(os.Stdout, rc); err != nil {
		return fmt.Errorf("export: %w (the tar is incomplete)", err)
	}
	return nil
}
