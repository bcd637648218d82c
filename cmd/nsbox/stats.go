package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"slices"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/urfave/cli/v2"
	"golang.org/x/sys/unix"

	"github.com/nsbox/nsbox/api"
	"github.com/nsbox/nsbox/client"
)

func statsCommand() *cli.Command {
	return &cli.Command{
		Name:      "stats",
		Usage:     "show sandboxes' CPU, memory, network, disk, processes and sessions, every second (all sandboxes, or those named)",
		ArgsUsage: "[ID...]",
		Flags: []cli.Flag{
			&cli.BoolFlag{Name: "no-stream", Usage: "print one reading and exit"},
			&cli.BoolFlag{Name: "json", Usage: "print JSON: an array (one line a reading when streaming)"},
		},
		Action: cmdStats,
	}
}

func eventsCommand() *cli.Command {
	return &cli.Command{
		Name:  "events",
		Usage: "print what happens to sandboxes as it happens (created, started, paused, removed, failed, OOM kills, ports, sessions, processes)",
		Flags: []cli.Flag{
			&cli.Int64Flag{Name: "since", Value: -1, Usage: "first print the kept events after this seq (0: all kept)"},
			&cli.BoolFlag{Name: "json", Usage: "print each event as a line of JSON"},
		},
		Action: cmdEvents,
	}
}

func cmdStats(c *cli.Context) error {
	ids := c.Args().Slice()
	cl := apiClient(c)
	first, err := cl.AllStats(c.Context)
	if err != nil {
		return err
	}
	pick := func(all []api.SandboxStats) []api.SandboxStats {
		if len(ids) == 0 {
			return all
		}
		return slices.DeleteFunc(all, func(s api.SandboxStats) bool { return !slices.Contains(ids, s.ID) })
	}
	for _, id := range ids {
		if !slices.ContainsFunc(first, func(s api.SandboxStats) bool { return s.ID == id }) {
			return fmt.Errorf("sandbox %q not found", id)
		}
	}
	live := !c.Bool("json") && isTerminal(os.Stdout)
	show := func(all []api.SandboxStats) error {
		all = pick(all)
		if c.Bool("json") {
			return json.NewEncoder(os.Stdout).Encode(all)
		}
		if live {
			fmt.Print("\033[H\033[2J") // a live table: drawn again in place
		}
		return writeStatsTable(os.Stdout, all)
	}
	if c.Bool("no-stream") {
		if c.Bool("json") {
			return printJSON(pick(first))
		}
		return writeStatsTable(os.Stdout, pick(first))
	}
	return cl.StreamAllStats(c.Context, show)
}

// writeStatsTable prints stats as docker stats does.
func writeStatsTable(w io.Writer, all []api.SandboxStats) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tSTATUS\tCPU %\tCPU TIME\tMEM USAGE / LIMIT\tMEM %\tNET I/O\tDISK\tPIDS\tSESSIONS\tPROCESSES")
	for _, s := range all {
		mem, memPct := bytesOf(s.MemoryBytes), "-"
		if s.MemoryLimitBytes > 0 {
			mem += " / " + bytesOf(s.MemoryLimitBytes)
			memPct = fmt.Sprintf("%.1f%%", float64(s.MemoryBytes)/float64(s.MemoryLimitBytes)*100)
		}
		disk := "-"
		if s.DiskLimitBytes > 0 {
			disk = bytesOf(s.DiskUsedBytes) + " / " + bytesOf(s.DiskLimitBytes)
		}
		fmt.Fprintf(tw, "%s\t%s\t%.1f%%\t%s\t%s\t%s\t%s / %s\t%s\t%d\t%s\t%s\n", s.ID, s.Status, s.CPUPercent,
			(time.Duration(s.CPUSeconds * float64(time.Second))).Truncate(time.Millisecond), mem, memPct,
			bytesOf(s.Network.RxBytes), bytesOf(s.Network.TxBytes), disk, s.Pids, count(s.Sessions), count(s.Processes))
	}
	return tw.Flush()
}

// bytesOf is n in binary units, as docker stats shows it.
func bytesOf(n uint64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%dB", n)
	}
	div, exp := uint64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f%ciB", float64(n)/float64(div), "KMGTPE"[exp])
}

// count is an agent's count, or "-" when it did not answer (a paused sandbox).
func count(n *int) string {
	if n == nil {
		return "-"
	}
	return fmt.Sprint(*n)
}

// isTerminal reports whether f is a terminal.
func isTerminal(f *os.File) bool {
	_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return err == nil
}

func cmdEvents(c *cli.Context) error {
	if c.NArg() > 0 {
		return fmt.Errorf("events takes no arguments (got %q)", c.Args().First())
	}
	opts := client.EventsOptions{}
	if since := c.Int64("since"); since >= 0 {
		opts = client.EventsOptions{Replay: true, Since: uint64(since)}
	} else if since != -1 {
		return fmt.Errorf("--since must be an event's seq (0 or more), got %d", since)
	}
	enc := json.NewEncoder(os.Stdout)
	return apiClient(c).FollowEvents(c.Context, opts, func(ev api.Event) error {
		if c.Bool("json") {
			return enc.Encode(ev)
		}
		var details []string
		for k, v := range ev.Details {
			details = append(details, k+"="+v)
		}
		sort.Strings(details)
		_, err := fmt.Printf("%s  %d  %s  %s  %s\n", ev.Time.Format(time.RFC3339Nano), ev.Seq, ev.Type, ev.Sandbox, strings.Join(details, " "))
		return err
	})
}
