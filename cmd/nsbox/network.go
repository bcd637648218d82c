package main

import (
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"text/tabwriter"

	"github.com/urfave/cli/v2"

	"github.com/nsbox/nsbox/api"
	"github.com/nsbox/nsbox/nsbox"
)

// networkFlags reads the daemon's network flags.
func networkFlags(c *cli.Context) (nsbox.NetworkConfig, error) {
	subnet, err := netip.ParsePrefix(c.String("subnet"))
	if err != nil {
		return nsbox.NetworkConfig{}, fmt.Errorf("--subnet %q: use an IPv4 CIDR such as 10.89.0.0/16", c.String("subnet"))
	}
	low, high, ok := strings.Cut(c.String("host-ports"), "-")
	lo, err1 := strconv.Atoi(low)
	hi, err2 := strconv.Atoi(high)
	if !ok || err1 != nil || err2 != nil || lo < 1 || hi > 65535 || lo > hi {
		return nsbox.NetworkConfig{}, fmt.Errorf("--host-ports %q: use LOW-HIGH within 1-65535, e.g. 20000-29999", c.String("host-ports"))
	}
	return nsbox.NetworkConfig{Subnet: subnet, Table: c.String("nft-table"), HostPortMin: lo, HostPortMax: hi,
		Uplinks: c.StringSlice("uplink")}, nil
}

// cleanup is `nsbox daemon --cleanup [--force]`: it holds the run dir, so no daemon can start
// meanwhile, and refuses while one runs.
func cleanup(cfg nsbox.Config, force bool, log *slog.Logger) error {
	lock, err := lockRunDir(cfg.RunDir)
	if err != nil {
		return fmt.Errorf("cleanup: %w", err)
	}
	defer lock.Close()
	if err := nsbox.Cleanup(cfg, force, log); err != nil {
		return fmt.Errorf("cleanup: %w", err)
	}
	log.Info("left-over containers and the sandbox network removed", "table", cfg.Network.Table, "subnet", cfg.Network.Subnet)
	return nil
}

func portCommand() *cli.Command {
	return &cli.Command{
		Name:  "port",
		Usage: "expose sandbox ports on host ports",
		Subcommands: []*cli.Command{
			{
				Name:      "add",
				Usage:     "expose a port of a sandbox and print the mapping and its URL",
				ArgsUsage: "ID PORT[/udp]",
				Flags: []cli.Flag{
					&cli.IntFlag{Name: "host-port", Usage: "host port (default: one from the daemon's range)"},
					&cli.StringFlag{Name: "host-ip", Usage: "expose on this host address, 0.0.0.0 for every address (default: 127.0.0.1, or every address with --public)"},
					&cli.BoolFlag{Name: "public", Usage: "for anyone: on every host address (unless --host-ip) and through the preview proxy without a token"},
					&cli.BoolFlag{Name: "json", Usage: "print JSON"},
				},
				Action: cmdPortAdd,
			},
			{
				Name:      "ls",
				Usage:     "list a sandbox's exposed ports",
				ArgsUsage: "ID",
				Flags:     []cli.Flag{&cli.BoolFlag{Name: "json", Usage: "print JSON"}},
				Action:    cmdPortList,
			},
			{
				Name:      "rm",
				Usage:     "stop exposing a port (connections through it are cut)",
				ArgsUsage: "ID PORT[/udp]",
				Action:    cmdPortRemove,
			},
		},
	}
}

func networkCommand() *cli.Command {
	return &cli.Command{
		Name:      "network",
		Usage:     "change a running sandbox's network mode: none, egress (--allow for private networks) or allow (with --allow)",
		ArgsUsage: "ID MODE",
		Flags:     []cli.Flag{allowFlag()},
		Action:    cmdNetwork,
	}
}

func allowFlag() cli.Flag {
	return &cli.StringSliceFlag{Name: "allow", Usage: "IPv4 CIDR the sandbox may reach: the only ones in mode allow, private networks besides the internet in mode egress (repeatable)"}
}

// networkFlag and allowFlag are the create command's network options.
func networkFlag() cli.Flag {
	return &cli.StringFlag{Name: "network", Usage: "network mode: egress (default), none or allow (with --allow)"}
}

// createNetwork is the network a create asks for; nil (the daemon's default) when no flag was given.
func createNetwork(c *cli.Context) *api.NetworkSpec {
	if c.String("network") == "" && len(c.StringSlice("allow")) == 0 {
		return nil
	}
	mode := c.String("network")
	if mode == "" {
		mode = api.NetworkAllow
	}
	return &api.NetworkSpec{Mode: mode, Allow: c.StringSlice("allow")}
}

// parsePortArg parses PORT or PORT/udp or PORT/tcp.
func parsePortArg(arg string) (int, string, error) {
	num, protocol, _ := strings.Cut(arg, "/")
	if protocol == "" {
		protocol = api.ProtocolTCP
	}
	port, err := strconv.Atoi(num)
	if err != nil || (protocol != api.ProtocolTCP && protocol != api.ProtocolUDP) {
		return 0, "", fmt.Errorf("port %q: use PORT, PORT/tcp or PORT/udp", arg)
	}
	return port, protocol, nil
}

func cmdPortAdd(c *cli.Context) error {
	if c.NArg() != 2 {
		return usageError("usage: nsbox port add [--host-port N] [--host-ip IP] [--public] ID PORT[/udp]")
	}
	port, protocol, err := parsePortArg(c.Args().Get(1))
	if err != nil {
		return err
	}
	p, err := apiClient(c).ExposePort(c.Context, c.Args().First(), api.ExposePortRequest{
		Port: port, Protocol: protocol, HostPort: c.Int("host-port"), HostIP: c.String("host-ip"), Public: c.Bool("public"),
	})
	if err != nil {
		return err
	}
	if c.Bool("json") {
		return printJSON(p)
	}
	fmt.Printf("%s:%d/%s -> %d/%s\t%s\n", p.HostIP, p.HostPort, p.Protocol, p.Port, p.Protocol, p.URL)
	fmt.Println(exposureNote(p))
	return nil
}

// exposureNote says where an exposed port listens and what guards it.
func exposureNote(p *api.ExposedPort) string {
	where := "listens on " + p.HostIP + " only"
	switch p.HostIP {
	case "127.0.0.1":
		where = "listens on 127.0.0.1: this host only (--public or --host-ip to open it to others)"
	case "0.0.0.0":
		where = "listens on every host address: other machines can reach it"
	}
	switch {
	case p.Token != "":
		return where + "; the preview proxy asks for its token, the host port itself for none"
	case p.Protocol == api.ProtocolUDP:
		return where + "; no token (UDP)"
	}
	return where + "; public: no token, also through the preview proxy"
}

func cmdPortList(c *cli.Context) error {
	if c.NArg() != 1 {
		return usageError("usage: nsbox port ls [--json] ID")
	}
	ports, err := apiClient(c).ListPorts(c.Context, c.Args().First())
	if err != nil {
		return err
	}
	if c.Bool("json") {
		return printJSON(ports)
	}
	tw := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "PORT\tPROTOCOL\tHOST\tPUBLIC\tURL")
	for _, p := range ports {
		fmt.Fprintf(tw, "%d\t%s\t%s:%d\t%t\t%s\n", p.Port, p.Protocol, p.HostIP, p.HostPort, p.Public, p.URL)
	}
	return tw.Flush()
}

func cmdPortRemove(c *cli.Context) error {
	if c.NArg() != 2 {
		return usageError("usage: nsbox port rm ID PORT[/udp]")
	}
	port, protocol, err := parsePortArg(c.Args().Get(1))
	if err != nil {
		return err
	}
	return apiClient(c).UnexposePort(c.Context, c.Args().First(), port, protocol)
}

func cmdNetwork(c *cli.Context) error {
	if c.NArg() != 2 {
		return usageError("usage: nsbox network [--allow CIDR...] ID none|egress|allow")
	}
	sb, err := apiClient(c).SetNetwork(c.Context, c.Args().First(), api.NetworkSpec{Mode: c.Args().Get(1), Allow: c.StringSlice("allow")})
	if err != nil {
		return err
	}
	fmt.Printf("%s\t%s\t%s\n", sb.ID, sb.Network.Mode, sb.Network.IP)
	return nil
}
