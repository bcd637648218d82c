package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/urfave/cli/v2"
	"golang.org/x/sys/unix"

	"github.com/nsbox/nsbox/nsbox"
	"github.com/nsbox/nsbox/nsbox/libcontainer"
)

func daemonCommand() *cli.Command {
	return &cli.Command{
		Name:  "daemon",
		Usage: "run the nsbox daemon (as root)",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "socket-group", Usage: "group allowed to use the API socket (default: root only)"},
			&cli.StringFlag{Name: "data-dir", Value: "/var/lib/nsbox", Usage: "metadata, images and sandbox files"},
			&cli.StringFlag{Name: "run-dir", Value: "/run/nsbox", Usage: "runtime state: agent sockets, container state"},
			&cli.StringFlag{Name: "cgroup-parent", Value: "nsbox", Usage: "cgroup that holds every sandbox"},
			&cli.Float64Flag{Name: "default-cpus", Value: 1, Usage: "CPU limit of a sandbox that asks for none"},
			&cli.Int64Flag{Name: "default-memory", Value: 1024, Usage: "memory limit (MB) of a sandbox that asks for none"},
			&cli.Int64Flag{Name: "default-pids", Value: 1024, Usage: "process limit of a sandbox that asks for none"},
			&cli.BoolFlag{Name: "seccomp", Value: true, Usage: "apply nsbox's seccomp profile to sandboxes"},
			&cli.BoolFlag{Name: "userns", Value: true, Usage: "give every sandbox a user namespace of its own (false: root in a sandbox is the host's root)"},
			&cli.StringSliceFlag{Name: "allow-cap", Usage: "capability (e.g. NET_RAW) beyond the default set that a create may ask for (repeatable)"},
			&cli.StringFlag{Name: "userns-range", Value: defaultUserNSRange, Usage: "host ids of the sandboxes' user namespaces, START-END or START:COUNT; 65536 per sandbox"},
			&cli.StringFlag{Name: "warm-pool", Value: "host=2", Usage: "started containers to keep ready per image, as IMAGE=N,… (empty: none)"},
			&cli.StringFlag{Name: "log-level", Value: "info", Usage: "debug, info, warn or error"},
			&cli.StringFlag{Name: "subnet", Value: "10.89.0.0/16", Usage: "IPv4 network of sandbox addresses (its first address is the host's)"},
			&cli.StringFlag{Name: "host-ports", Value: "20000-29999", Usage: "range LOW-HIGH of host ports chosen for exposed ports (keep it outside net.ipv4.ip_local_port_range)"},
			&cli.StringSliceFlag{Name: "uplink", Usage: "interface that carries sandbox traffic to the world (repeatable; default: those of the default routes)"},
			&cli.StringFlag{Name: "nft-table", Value: "nsbox", Usage: "nftables table (family inet) owned by nsbox"},
			&cli.StringFlag{Name: "proxy-listen", Usage: "address of the preview proxy, e.g. :8080 (needs --proxy-domain; default: no proxy)"},
			&cli.StringFlag{Name: "proxy-domain", Usage: "domain of the preview proxy: exposed ports' URLs become http://PORT-ID-TOKEN.DOMAIN"},
			&cli.BoolFlag{Name: "cleanup", Usage: "remove the sandbox network's table, veths, routes and state, and exit (no daemon may run)"},
		},
		Action: runDaemon,
	}
}

// defaultUserNSRange leaves room for 4096 sandboxes, far above the ids of the host's users.
const defaultUserNSRange = "1000000000:268435456"

func runDaemon(c *cli.Context) error {
	var level slog.Level
	if err := level.UnmarshalText([]byte(c.String("log-level"))); err != nil {
		return fmt.Errorf("--log-level: %w", err)
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	slog.SetDefault(log)
	if os.Geteuid() != 0 {
		return errors.New("the daemon must run as root")
	}
	exe, err := os.Executable()
	if err != nil {
		return fmt.Errorf("find own binary: %w", err)
	}
	if exe, err = filepath.EvalSymlinks(exe); err != nil {
		return fmt.Errorf("resolve own binary: %w", err)
	}
	pool, err := parseWarmPool(c.String("warm-pool"))
	if err != nil {
		return err
	}
	netCfg, err := networkFlags(c)
	if err != nil {
		return err
	}
	var userns nsbox.IDRange
	if c.Bool("userns") {
		if userns, err = nsbox.ParseIDRange(c.String("userns-range")); err != nil {
			return fmt.Errorf("--userns-range: %w", err)
		}
	}
	var caps []string
	for _, name := range c.StringSlice("allow-cap") {
		capName, err := nsbox.NormalizeCapability(name)
		if err != nil {
			return fmt.Errorf("--allow-cap: %w", err)
		}
		caps = append(caps, capName)
	}
	runDir := c.String("run-dir")
	containers, err := libcontainer.New(libcontainer.Config{
		StateRoot:    filepath.Join(runDir, "containers"),
		RunDir:       filepath.Join(runDir, "sandboxes"),
		AgentBin:     exe,
		CgroupParent: c.String("cgroup-parent"),
		Seccomp:      c.Bool("seccomp"),
		UserNS:       userns.Count > 0,
		Log:          log,
	})
	if err != nil {
		return err
	}
	cfg := nsbox.Config{
		DataDir:             c.String("data-dir"),
		RunDir:              runDir,
		Backend:             containers,
		Version:             version,
		DefaultCPUs:         c.Float64("default-cpus"),
		DefaultMemoryMB:     c.Int64("default-memory"),
		DefaultPids:         c.Int64("default-pids"),
		WarmPool:            pool,
		UserNS:              userns,
		AllowedCapabilities: caps,
		Network:             netCfg,
		ProxyDomain:         c.String("proxy-domain"),
	}
	if cfg.ProxyPort, err = proxyPort(c.String("proxy-listen"), cfg.ProxyDomain); err != nil {
		return err
	}
	if c.Bool("cleanup") {
		return cleanupNetwork(cfg)
	}
	lock, err := lockRunDir(cfg.RunDir)
	if err != nil {
		return err
	}
	defer lock.Close()
	rt, err := nsbox.Open(cfg, log)
	if err != nil {
		return err
	}
	defer rt.Close()

	ln, err := listenAPI(c.String("socket"), c.String("socket-group"))
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: rt.Handler(), ReadHeaderTimeout: 10 * time.Second}
	preview, err := servePreview(rt, c.String("proxy-listen"), log)
	if err != nil {
		ln.Close()
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), unix.SIGTERM, unix.SIGINT)
	defer stop()
	go func() {
		<-ctx.Done()
		log.Info("shutting down; sandboxes keep running")
		shutdownCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if preview != nil {
			_ = preview.Shutdown(shutdownCtx)
		}
		_ = srv.Shutdown(shutdownCtx)
	}()
	log.Info("nsbox daemon listening", "socket", c.String("socket"), "version", version, "data", c.String("data-dir"))
	if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("serve API: %w", err)
	}
	return nil
}

// lockRunDir takes the run dir for this process alone (a daemon, or `daemon --cleanup`): the
// network state and the agents' sockets live there. The lock goes with the process.
func lockRunDir(dir string) (*os.File, error) {
	if err := os.MkdirAll(dir, 0o711); err != nil {
		return nil, fmt.Errorf("make run dir: %w", err)
	}
	f, err := os.OpenFile(filepath.Join(dir, "daemon.lock"), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("open run dir lock: %w", err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		f.Close()
		return nil, fmt.Errorf("another nsbox daemon (or --cleanup) is using the run dir %s; stop it first", dir)
	}
	return f, nil
}

// proxyPort checks --proxy-listen against --proxy-domain and returns the port the proxy
// listens on (0 without a proxy), which exposed ports' URLs name.
func proxyPort(listen, domain string) (int, error) {
	if listen == "" {
		if domain != "" {
			return 0, errors.New("--proxy-domain needs --proxy-listen: without the proxy, URLs under the domain would lead nowhere")
		}
		return 0, nil
	}
	if domain == "" {
		return 0, errors.New("--proxy-listen needs --proxy-domain: the proxy routes {port}-{sandbox}.{domain}")
	}
	_, port, err := net.SplitHostPort(listen)
	if err != nil {
		return 0, fmt.Errorf("--proxy-listen %q: %w", listen, err)
	}
	n, err := strconv.Atoi(port)
	if err != nil || n < 1 || n > 65535 {
		return 0, fmt.Errorf("--proxy-listen %q: give a port from 1 to 65535, e.g. :8080", listen)
	}
	return n, nil
}

// servePreview starts the preview proxy on its own listener, when --proxy-listen asks for it.
// Its server has no read or write timeout, which would cut WebSocket and SSE streams.
func servePreview(rt *nsbox.Runtime, listen string, log *slog.Logger) (*http.Server, error) {
	if listen == "" {
		return nil, nil
	}
	handler, err := rt.PreviewProxy(log)
	if err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return nil, fmt.Errorf("preview proxy: %w", err)
	}
	srv := &http.Server{Handler: handler, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("preview proxy stopped", "err", err)
		}
	}()
	log.Info("preview proxy listening", "address", ln.Addr().String())
	return srv, nil
}

// parseWarmPool reads --warm-pool: IMAGE=N pairs separated by commas.
func parseWarmPool(s string) (map[string]int, error) {
	pool := map[string]int{}
	for _, part := range strings.Split(s, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		image, count, ok := strings.Cut(part, "=")
		n, err := strconv.Atoi(count)
		if !ok || image == "" || err != nil || n < 0 || n > 64 {
			return nil, fmt.Errorf("--warm-pool: %q is not IMAGE=N with N from 0 to 64", part)
		}
		pool[image] = n
	}
	return pool, nil
}

// listenAPI listens on the API socket, readable by root only or by root and group.
func listenAPI(path, group string) (net.Listener, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o711); err != nil {
		return nil, fmt.Errorf("make socket dir: %w", err)
	}
	// The metadata lock already guarantees one daemon, so a socket left here is stale.
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("remove stale socket: %w", err)
	}
	old := unix.Umask(0o177) // never reachable by others, not even between listen and chmod
	ln, err := net.Listen("unix", path)
	unix.Umask(old)
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", path, err)
	}
	if group != "" {
		g, err := user.LookupGroup(group)
		if err != nil {
			ln.Close()
			return nil, fmt.Errorf("--socket-group: %w", err)
		}
		gid, _ := strconv.Atoi(g.Gid)
		if err := errors.Join(os.Chown(path, 0, gid), os.Chmod(path, 0o660)); err != nil {
			ln.Close()
			return nil, fmt.Errorf("give group %s the API socket: %w", group, err)
		}
	}
	return ln, nil
}
