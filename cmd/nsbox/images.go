package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/urfave/cli/v2"
	"golang.org/x/sys/unix"

	"github.com/nsbox/nsbox/api"
	"github.com/nsbox/nsbox/client"
)

func imageCommand() *cli.Command {
	return &cli.Command{
		Name:  "image",
		Usage: "pull, import, list, inspect and remove OCI images",
		Subcommands: []*cli.Command{
			{
				Name:      "pull",
				Usage:     "pull an image from a registry (alpine, alpine:3.20, ghcr.io/org/app@sha256:…)",
				ArgsUsage: "REF",
				Flags: []cli.Flag{
					&cli.StringFlag{Name: "username", Aliases: []string{"u"}, Usage: "registry user (default: the daemon's docker config.json, then anonymous)"},
					&cli.BoolFlag{Name: "password-stdin", Usage: "read the registry password (or token) from stdin"},
					&cli.BoolFlag{Name: "json", Usage: "print the image as JSON"},
				},
				Action: cmdImagePull,
			},
			{
				Name:      "import",
				Usage:     "import a docker save archive or an OCI layout tar (plain, gzip or zstd); - reads stdin",
				ArgsUsage: "FILE|-",
				Flags: []cli.Flag{
					&cli.StringFlag{Name: "name", Usage: "name for the archive's image (when it names none, or one more name)"},
					&cli.BoolFlag{Name: "json", Usage: "print the images as JSON"},
				},
				Action: cmdImageImport,
			},
			{
				Name:    "ls",
				Aliases: []string{"list"},
				Usage:   "list images (built-in and OCI)",
				Flags: []cli.Flag{
					&cli.BoolFlag{Name: "json", Usage: "print JSON"},
					&cli.BoolFlag{Name: "quiet", Aliases: []string{"q"}, Usage: "print names only"},
				},
				Action: cmdImageList,
			},
			{Name: "inspect", Usage: "print OCI images as JSON", ArgsUsage: "NAME...", Action: cmdImageInspect},
			{
				Name:      "rm",
				Usage:     "remove OCI images (a name of several: only that name)",
				ArgsUsage: "NAME...",
				Flags:     []cli.Flag{&cli.BoolFlag{Name: "force", Aliases: []string{"f"}, Usage: "remove the names of an image a sandbox uses"}},
				Action:    cmdImageRemove,
			},
			{
				Name:   "prune",
				Usage:  "remove dangling images no sandbox uses, and unused layers",
				Flags:  []cli.Flag{&cli.BoolFlag{Name: "all", Aliases: []string{"a"}, Usage: "every image no sandbox uses"}},
				Action: cmdImagePrune,
			},
		},
	}
}

func cmdImagePull(c *cli.Context) error {
	if c.NArg() != 1 {
		return usageError("usage: nsbox image pull [--username U --password-stdin] REF")
	}
	req := api.PullImageRequest{Ref: c.Args().First()}
	if c.Bool("password-stdin") || c.String("username") != "" {
		if !c.Bool("password-stdin") {
			return errors.New("--username needs --password-stdin")
		}
		password, err := io.ReadAll(os.Stdin)
		if err != nil {
			return fmt.Errorf("read password: %w", err)
		}
		req.Auth = &api.RegistryAuth{Username: c.String("username"), Password: strings.TrimRight(string(password), "\r\n")}
	}
	progress := newPullProgress(os.Stderr)
	img, err := apiClient(c).PullImage(c.Context, req, progress.update)
	if err != nil {
		return err
	}
	if c.Bool("json") {
		return printJSON(img)
	}
	printImage(*img)
	return nil
}

func cmdImageImport(c *cli.Context) error {
	if c.NArg() != 1 {
		return usageError("usage: nsbox image import [--name REF] FILE|-")
	}
	var in io.Reader = os.Stdin
	if path := c.Args().First(); path != "-" {
		f, err := os.Open(path)
		if err != nil {
			return err
		}
		defer f.Close()
		in = f
	}
	imgs, err := apiClient(c).ImportImages(c.Context, in, c.String("name"))
	if err != nil {
		return err
	}
	if c.Bool("json") {
		return printJSON(imgs)
	}
	for _, img := range imgs {
		printImage(img)
	}
	return nil
}

// printImage prints an image's names (or its ID when it has none) and ID.
func printImage(img api.ImageInfo) {
	names := strings.Join(img.Names, " ")
	if names == "" {
		names = "(no name)"
	}
	fmt.Printf("%s %s\n", names, img.ID)
}

func cmdImageList(c *cli.Context) error {
	images, err := apiClient(c).Images(c.Context)
	if err != nil {
		return err
	}
	switch {
	case c.Bool("json"):
		return printJSON(images)
	case c.Bool("quiet"):
		for _, img := range images {
			fmt.Println(img.Name)
		}
		return nil
	}
	tw := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tID\tSIZE\tWARM\tDESCRIPTION")
	for _, img := range images {
		id, size := "-", "-"
		if img.ID != "" {
			id = strings.TrimPrefix(img.ID, "sha256:")[:12]
			size = humanBytes(img.Size)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\n", img.Name, id, size, img.Warm, img.Description)
	}
	return tw.Flush()
}

func cmdImageInspect(c *cli.Context) error {
	var out []*api.ImageInfo
	for _, name := range c.Args().Slice() {
		img, err := apiClient(c).GetImage(c.Context, name)
		if err != nil {
			return err
		}
		out = append(out, img)
	}
	return printJSON(out)
}

func cmdImageRemove(c *cli.Context) error {
	return eachArg(c.Args().Slice(), func(name string) error {
		_, err := apiClient(c).RemoveImage(c.Context, name, client.RemoveImageOptions{Force: c.Bool("force")})
		return err
	})
}

func cmdImagePrune(c *cli.Context) error {
	res, err := apiClient(c).PruneImages(c.Context, client.PruneOptions{All: c.Bool("all")})
	if err != nil {
		return err
	}
	for _, id := range res.Images {
		fmt.Println("removed image", id)
	}
	fmt.Printf("removed %d layers\n", len(res.Layers))
	return nil
}

// pullProgress shows a pull's layers: on a terminal, a bar per layer redrawn in place;
// otherwise a line each time a layer changes status.
type pullProgress struct {
	out   io.Writer
	tty   bool
	order []string // layers in the order they first appeared
	state map[string]api.ImageProgress
	start map[string]time.Time
	drawn int // lines drawn last time
	width int // of a bar
}

func newPullProgress(out *os.File) *pullProgress {
	_, err := unix.IoctlGetTermios(int(out.Fd()), unix.TCGETS)
	return &pullProgress{out: out, tty: err == nil, state: map[string]api.ImageProgress{}, start: map[string]time.Time{}, width: 30}
}

func (p *pullProgress) update(ev api.ImageProgress) error {
	prev, seen := p.state[ev.Layer]
	if !seen {
		p.order = append(p.order, ev.Layer)
		p.start[ev.Layer] = time.Now()
	}
	p.state[ev.Layer] = ev
	if !p.tty {
		if !seen || prev.Status != ev.Status {
			fmt.Fprintln(p.out, p.line(ev))
		}
		return nil
	}
	if p.drawn > 0 {
		fmt.Fprintf(p.out, "\x1b[%dA", p.drawn) // back to the first layer's line
	}
	for _, l := range p.order {
		fmt.Fprintf(p.out, "\x1b[2K%s\n", p.line(p.state[l]))
	}
	p.drawn = len(p.order)
	return nil
}

// line is a layer's state: its short digest, status, and while downloading on a terminal a
// bar, the bytes and the rate.
func (p *pullProgress) line(ev api.ImageProgress) string {
	short := strings.TrimPrefix(ev.Layer, "sha256:")[:12]
	if ev.Status != api.LayerDownloading || !p.tty {
		return fmt.Sprintf("%s  %-11s  %s", short, ev.Status, humanBytes(ev.Total))
	}
	bar := strings.Repeat(" ", p.width)
	if ev.Total > 0 {
		n := int(min(ev.Current, ev.Total) * int64(p.width) / ev.Total)
		bar = strings.Repeat("=", n) + strings.Repeat(" ", p.width-n)
	}
	rate := float64(ev.Current) / max(time.Since(p.start[ev.Layer]).Seconds(), 0.001)
	return fmt.Sprintf("%s  %-11s  [%s]  %s / %s  %s/s", short, ev.Status, bar, humanBytes(ev.Current), humanBytes(ev.Total), humanBytes(int64(rate)))
}

// humanBytes is a byte count in SI units, as registries and docker show sizes.
func humanBytes(n int64) string {
	const unit = 1000
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	v, i := float64(n), -1
	for v >= unit && i < 3 {
		v /= unit
		i++
	}
	return fmt.Sprintf("%.1f %cB", v, "kMGT"[i])
}
