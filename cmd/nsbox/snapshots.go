package main

import (
	"fmt"
	"os"

	"github.com/urfave/cli/v2"

	"github.com/nsbox/nsbox/api"
)

// snapshotCommand is `nsbox snapshot ID` (take one) and its ls and rm.
func snapshotCommand() *cli.Command {
	return &cli.Command{
		Name:      "snapshot",
		Usage:     "snapshot a running or paused sandbox's files and sessions' state and print the snapshot's id; ls and rm manage snapshots",
		ArgsUsage: "ID",
		Flags:     []cli.Flag{&cli.StringFlag{Name: "name", Usage: "a name for the snapshot"}},
		Action:    cmdSnapshot,
		Subcommands: []*cli.Command{
			{
				Name:    "ls",
				Aliases: []string{"list"},
				Usage:   "list snapshots",
				Flags: []cli.Flag{
					&cli.BoolFlag{Name: "json", Usage: "print JSON"},
					&cli.BoolFlag{Name: "quiet", Aliases: []string{"q"}, Usage: "print ids only"},
				},
				Action: cmdSnapshotList,
			},
			{
				Name:      "rm",
				Usage:     "remove snapshots (refused while a sandbox made from one exists)",
				ArgsUsage: "SNAP...",
				Action:    cmdSnapshotRemove,
			},
		},
	}
}

func cmdSnapshot(c *cli.Context) error {
	if c.NArg() != 1 {
		return usageError("usage: nsbox snapshot [--name NAME] ID (or: nsbox snapshot ls | rm SNAP...)")
	}
	snap, err := apiClient(c).CreateSnapshot(c.Context, c.Args().First(), api.CreateSnapshotRequest{Name: c.String("name")})
	if err != nil {
		return err
	}
	fmt.Println(snap.ID)
	return nil
}

func cmdSnapshotList(c *cli.Context) error {
	list, err := apiClient(c).ListSnapshots(c.Context)
	if err != nil {
		return err
	}
	return printList(c, list, "ID\tNAME\tSANDBOX\tIMAGE\tSIZE\tSESSIONS\tCREATED",
		func(s api.Snapshot) string { return s.ID },
		func(s api.Snapshot) string {
			return fmt.Sprintf("%s\t%s\t%s\t%s\t%d\t%d\t%s", s.ID, s.Name, s.Sandbox, s.Image, s.SizeBytes, s.Sessions, ago(s.CreatedAt))
		})
}

func cmdSnapshotRemove(c *cli.Context) error {
	if c.NArg() == 0 {
		return usageError("usage: nsbox snapshot rm SNAP...")
	}
	return eachArg(c.Args().Slice(), func(id string) error { return apiClient(c).DeleteSnapshot(c.Context, id) })
}

// forkCommand is `nsbox fork ID`.
func forkCommand() *cli.Command {
	return &cli.Command{
		Name:      "fork",
		Usage:     "snapshot a sandbox and make sandboxes from the snapshot (its files, env, labels, limits and sessions' state, each with its own network); prints their ids",
		ArgsUsage: "ID",
		Flags: []cli.Flag{
			&cli.IntFlag{Name: "count", Aliases: []string{"n"}, Value: 1, Usage: fmt.Sprintf("how many sandboxes to make (1-%d)", api.MaxFork)},
			&cli.StringFlag{Name: "prefix", Usage: "name them PREFIX-1 … PREFIX-N (default: generated ids)"},
			&cli.StringFlag{Name: "name", Usage: "a name for the snapshot the fork takes"},
		},
		Action: func(c *cli.Context) error {
			if c.NArg() != 1 {
				return usageError("usage: nsbox fork [--count N] [--prefix P] [--name N] ID")
			}
			// The API takes a count of 0 for its default, 1: the flag's 0 is a mistake.
			if n := c.Int("count"); n < 1 || n > api.MaxFork {
				return usageError("--count %d: give 1 to %d", n, api.MaxFork)
			}
			res, err := apiClient(c).ForkSandbox(c.Context, c.Args().First(),
				api.ForkRequest{Count: c.Int("count"), Prefix: c.String("prefix"), Name: c.String("name")})
			if err != nil {
				return err
			}
			fmt.Fprintln(os.Stderr, "snapshot", res.Snapshot.ID)
			for _, sb := range res.Sandboxes {
				fmt.Println(sb.ID)
			}
			return nil
		},
	}
}
