package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path"
	"path/filepath"
	"strconv"
	"strings"
	"text/tabwriter"

	"github.com/urfave/cli/v2"
	"golang.org/x/sys/unix"

	"github.com/nsbox/nsbox/api"
	"github.com/nsbox/nsbox/client"
)

func filesCommand() *cli.Command {
	return &cli.Command{
		Name:  "files",
		Usage: "work with a sandbox's files (paths as the sandbox sees them; relative to its working directory)",
		Subcommands: []*cli.Command{
			{
				Name:      "ls",
				Usage:     "list a directory (or describe a file)",
				ArgsUsage: "ID [PATH]",
				Flags: []cli.Flag{
					&cli.BoolFlag{Name: "long", Aliases: []string{"l"}, Usage: "mode, owner, size, time"},
					&cli.BoolFlag{Name: "all", Aliases: []string{"a"}, Usage: "include names starting with ."},
					&cli.IntFlag{Name: "depth", Aliases: []string{"d"}, Value: 1, Usage: "levels to descend (1-32)"},
					&cli.BoolFlag{Name: "json", Usage: "print JSON"},
				},
				Action: cmdFilesList,
			},
			{
				Name:      "cat",
				Usage:     "print files",
				ArgsUsage: "ID PATH...",
				Action: func(c *cli.Context) error {
					if c.NArg() < 2 {
						return usageError("usage: nsbox files cat ID PATH...")
					}
					for _, p := range c.Args().Tail() {
						if err := download(c.Context, fileClient(c), c.Args().First(), p, os.Stdout); err != nil {
							return err
						}
					}
					return nil
				},
			},
			{
				Name:      "stat",
				Usage:     "describe files as JSON (a symlink itself, not its target)",
				ArgsUsage: "ID PATH...",
				Action: func(c *cli.Context) error {
					if c.NArg() < 2 {
						return usageError("usage: nsbox files stat ID PATH...")
					}
					return eachPath(c, func(p string) error {
						info, err := fileClient(c).StatFile(c.Context, c.Args().First(), p)
						if err == nil {
							err = printJSON(info)
						}
						return err
					})
				},
			},
			{
				Name:      "rm",
				Usage:     "remove files, symlinks and empty directories",
				ArgsUsage: "ID PATH...",
				Flags:     []cli.Flag{&cli.BoolFlag{Name: "recursive", Aliases: []string{"r"}, Usage: "remove directories and what they hold"}},
				Action: func(c *cli.Context) error {
					if c.NArg() < 2 {
						return usageError("usage: nsbox files rm [-r] ID PATH...")
					}
					return eachPath(c, func(p string) error {
						return fileClient(c).RemoveFile(c.Context, c.Args().First(), p, client.RemoveFileOptions{Recursive: c.Bool("recursive")})
					})
				},
			},
			{
				Name:      "mkdir",
				Usage:     "create directories",
				ArgsUsage: "ID PATH...",
				Flags: []cli.Flag{
					&cli.BoolFlag{Name: "parents", Aliases: []string{"p"}, Usage: "create missing parents; no error if it exists"},
					&cli.StringFlag{Name: "mode", Aliases: []string{"m"}, Usage: "octal mode (default 0755)"},
				},
				Action: func(c *cli.Context) error {
					if c.NArg() < 2 {
						return usageError("usage: nsbox files mkdir [-p] [--mode 0755] ID PATH...")
					}
					mode, err := octalMode(c.String("mode"))
					if err != nil {
						return err
					}
					return eachPath(c, func(p string) error {
						_, err := fileClient(c).Mkdir(c.Context, c.Args().First(), p, client.MkdirOptions{Parents: c.Bool("parents"), Mode: mode})
						return err
					})
				},
			},
			{
				Name:      "mv",
				Usage:     "move or rename a file or directory",
				ArgsUsage: "ID SRC DST",
				Flags:     []cli.Flag{&cli.BoolFlag{Name: "force", Aliases: []string{"f"}, Usage: "replace DST if it exists"}},
				Action: func(c *cli.Context) error {
					if c.NArg() != 3 {
						return usageError("usage: nsbox files mv [-f] ID SRC DST")
					}
					_, err := fileClient(c).MoveFile(c.Context, c.Args().Get(0), c.Args().Get(1), c.Args().Get(2), client.MoveOptions{Overwrite: c.Bool("force")})
					return err
				},
			},
			{
				Name:      "watch",
				Usage:     "print changes under a directory as JSON lines until interrupted",
				ArgsUsage: "ID PATH",
				Flags:     []cli.Flag{&cli.BoolFlag{Name: "recursive", Aliases: []string{"r"}, Usage: "also in subdirectories"}},
				Action: func(c *cli.Context) error {
					if c.NArg() != 2 {
						return usageError("usage: nsbox files watch [-r] ID PATH")
					}
					enc := json.NewEncoder(os.Stdout)
					return fileClient(c).WatchFiles(c.Context, c.Args().Get(0), c.Args().Get(1), client.WatchOptions{Recursive: c.Bool("recursive")}, func(ev api.FileEvent) error {
						_ = enc.Encode(ev)
						return nil
					})

				},
			},
		},
	}
}

// eachPath runs do for every PATH argument (after the sandbox id), reporting each error; it
// fails when any did.
func eachPath(c *cli.Context, do func(string) error) error {
	failed := false
	for _, p := range c.Args().Tail() {
		if err := do(p); err != nil {
			fmt.Fprintf(os.Stderr, "nsbox: %v\n", err)
			failed = true
		}
	}
	if failed {
		return cli.Exit("", 1)
	}
	return nil
}

func octalMode(s string) (os.FileMode, error) {
	if s == "" {
		return 0, nil
	}
	m, err := strconv.ParseUint(s, 8, 32)
	if err != nil || m > 0o7777 {
		return 0, fmt.Errorf("--mode %q: use an octal mode such as 0755", s)
	}
	return os.FileMode(m), nil
}

func cmdFilesList(c *cli.Context) error {
	if c.NArg() < 1 || c.NArg() > 2 {
		return usageError("usage: nsbox files ls [-l] [-a] [--depth N] ID [PATH]")
	}
	id, p := c.Args().Get(0), c.Args().Get(1)
	if p == "" {
		p = "."
	}
	cl := fileClient(c)
	info, err := cl.StatFile(c.Context, id, p)
	if err != nil {
		return err
	}
	list := []api.FileInfo{*info}
	base := path.Dir(info.Path)
	if info.IsDir() || info.Type == "symlink" {
		if list, err = cl.ListFiles(c.Context, id, p, client.ListOptions{Depth: c.Int("depth"), Hidden: c.Bool("all")}); err != nil {
			if info.Type != "symlink" {
				return err
			}
			list = []api.FileInfo{*info} // a symlink to something that is not a directory
		} else {
			base = info.Path
		}
	}
	if c.Bool("json") {
		return printJSON(list)
	}
	name := func(f api.FileInfo) string {
		if rel, err := filepath.Rel(base, f.Path); err == nil && !strings.HasPrefix(rel, "..") {
			return rel
		}
		return f.Path
	}
	if !c.Bool("long") {
		for _, f := range list {
			fmt.Println(name(f))
		}
		return nil
	}
	tw := tabwriter.NewWriter(os.Stdout, 0, 4, 1, ' ', 0)
	for _, f := range list {
		owner, group := f.Owner, f.Group
		if owner == "" {
			owner = strconv.FormatUint(uint64(f.UID), 10)
		}
		if group == "" {
			group = strconv.FormatUint(uint64(f.GID), 10)
		}
		n := name(f)
		if f.LinkTarget != "" {
			n += " -> " + f.LinkTarget
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%s\t%s\n", typeLetter(f.Type), f.Mode, owner, group, f.Size, f.MTime.Local().Format("2006-01-02 15:04"), n)
	}
	return tw.Flush()
}

func typeLetter(t string) string {
	switch t {
	case "dir":
		return "d"
	case "symlink":
		return "l"
	case "file":
		return "-"
	}
	return "?"
}

func download(ctx context.Context, cl *client.Client, id, p string, w io.Writer) error {
	rd, err := cl.ReadFile(ctx, id, p)
	if err != nil {
		return err
	}
	defer rd.Close()
	if _, err := io.Copy(w, rd); err != nil {
		return fmt.Errorf("read %s: %w", p, err)
	}
	return nil
}

func cpCommand() *cli.Command {
	return &cli.Command{
		Name:  "cp",
		Usage: "copy files and directories between the host and a sandbox (one side is ID:PATH; - is stdin or stdout)",
		Description: "nsbox cp ./dir box1:/workspace copies ./dir into /workspace/dir, as docker cp does: when DST is an\n" +
			"existing directory, SRC goes into it; otherwise DST is created as the copy of SRC. Modes are kept (but a file\n" +
			"copied out of a sandbox loses setuid and setgid: it would run with the rights of whoever copied it); owners are\n" +
			"not (files written into a sandbox belong to its root, or with --session to that session's user, and relative\n" +
			"sandbox paths start at that session's current directory). Symlinks are recreated when copying out of a sandbox\n" +
			"and skipped, with a warning, when copying into one.\n\n" +
			"Copying out never follows a symlink beneath DST (nor DST itself unless written with a trailing /): files are\n" +
			"written to a new temporary name and renamed into place, setuid and setgid bits (and sticky on files) are\n" +
			"dropped unless --keep-special, runs of zeros become holes, and --max-bytes caps the bytes written.",
		ArgsUsage: "SRC DST",
		Flags: []cli.Flag{
			&cli.BoolFlag{Name: "keep-special", Usage: "copying out: keep setuid, setgid and sticky bits"},
			&cli.Int64Flag{Name: "max-bytes", Usage: "copying out: fail once the files' sizes add up to more than this (0: no cap)"},
		},
		Action: cmdCopy,
	}
}

// splitRef splits "ID:PATH"; a path starting with / or . is always local.
func splitRef(arg string) (id, p string, ok bool) {
	if strings.HasPrefix(arg, "/") || strings.HasPrefix(arg, ".") {
		return "", arg, false
	}
	id, p, ok = strings.Cut(arg, ":")
	if !ok || !api.ValidSandboxID(id) || strings.Contains(p, "\n") {
		return "", arg, false
	}
	if p == "" {
		p = "."
	}
	return id, p, true
}

func cmdCopy(c *cli.Context) error {
	if c.NArg() != 2 {
		return usageError("usage: nsbox cp SRC DST (one of them ID:PATH)")
	}
	srcID, src, srcIn := splitRef(c.Args().Get(0))
	dstID, dst, dstIn := splitRef(c.Args().Get(1))
	cl := fileClient(c)
	switch {
	case srcIn && dstIn:
		return errors.New("nsbox cp: copy between two sandboxes through the host (cp ID:PATH - | cp - ID:PATH) for now")
	case !srcIn && !dstIn:
		return errors.New("nsbox cp: one of SRC and DST must be ID:PATH")
	case srcIn:
		opts := copyOutOptions{keepSpecial: c.Bool("keep-special"), maxBytes: c.Int64("max-bytes")}
		if opts.maxBytes < 0 {
			return errors.New("nsbox cp: --max-bytes must be 0 (no cap) or more")
		}
		// Interrupted, the copy stops where it is and removes the file it was writing (the
		// first signal only: a second one ends nsbox at once).
		ctx, stop := signal.NotifyContext(c.Context, unix.SIGINT, unix.SIGTERM)
		defer stop()
		go func() { <-ctx.Done(); stop() }()
		return copyOut(ctx, cl, srcID, src, dst, opts)
	default:
		return copyIn(c.Context, cl, src, dstID, dst)
	}
}

// copyIn copies the local file or directory src (or stdin for "-") to dst in sandbox id.
func copyIn(ctx context.Context, cl *client.Client, src, id, dst string) error {
	if src == "-" {
		_, err := cl.WriteFile(ctx, id, dst, os.Stdin, client.WriteFileOptions{})
		return err
	}
	fi, err := os.Lstat(src)
	if err != nil {
		return err
	}
	if info, err := cl.StatFile(ctx, id, dst); err == nil && info.IsDir() {
		dst = path.Join(info.Path, filepath.Base(filepath.Clean(src)))
	} else if err != nil && !api.IsCode(err, api.CodeNotFound) {
		return err
	}
	return copyInEntry(ctx, cl, src, fi, id, dst)
}

func copyInEntry(ctx context.Context, cl *client.Client, src string, fi os.FileInfo, id, dst string) error {
	switch {
	case fi.IsDir():
		if _, err := cl.Mkdir(ctx, id, dst, client.MkdirOptions{Parents: true, Mode: fi.Mode().Perm()}); err != nil {
			return err
		}
		entries, err := os.ReadDir(src)
		if err != nil {
			return err
		}
		for _, e := range entries {
			child, err := e.Info()
			if err != nil {
				return err
			}
			if err := copyInEntry(ctx, cl, filepath.Join(src, e.Name()), child, id, path.Join(dst, e.Name())); err != nil {
				return err
			}
		}
		return nil
	case fi.Mode().IsRegular():
		f, err := os.Open(src)
		if err != nil {
			return err
		}
		defer f.Close()
		mode := fi.Mode() & (os.ModePerm | os.ModeSetuid | os.ModeSetgid | os.ModeSticky)
		_, err = cl.WriteFile(ctx, id, dst, f, client.WriteFileOptions{Mode: unixPerm(mode), Size: fi.Size()})
		return err
	}
	fmt.Fprintf(os.Stderr, "nsbox: skipped %s: only regular files and directories are copied into a sandbox\n", src)
	return nil
}

// unixPerm turns Go's mode flags into the octal bits the API takes.
func unixPerm(m os.FileMode) os.FileMode {
	out := m & os.ModePerm
	if m&os.ModeSetuid != 0 {
		out |= 0o4000
	}
	if m&os.ModeSetgid != 0 {
		out |= 0o2000
	}
	if m&os.ModeSticky != 0 {
		out |= 0o1000
	}
	return out
}
