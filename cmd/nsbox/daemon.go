package main

import (
	"context"
	"crypto/tls"
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

	"github.com/nsbox/nsbox/api"
	"github.com/nsbox/nsbox/auth"
	"github.com/nsbox/nsbox/nsbox"
	"github.com/nsbox/nsbox/nsbox/libcontainer"
	"github.com/nsbox/nsbox/proxy"
	"github.com/nsbox/nsbox/rootfs/oci"
)

func daemonCommand() *cli.Command {
	return &cli.Command{
		Name:  "daemon",
		Usage: "run the nsbox daemon (as root)",
		Flags: append([]cli.Flag{
			&cli.StringFlag{Name: "socket-group", Usage: "group allowed to use the API socket (default: root only)"},
			&cli.StringFlag{Name: "data-dir", Value: "/var/lib/nsbox", Usage: "metadata, images and sandbox files"},
			&cli.StringFlag{Name: "run-dir", Value: "/run/nsbox", Usage: "runtime state: API socket (unless --socket), agent sockets, container state"},
			&cli.StringFlag{Name: "cgroup-parent", Value: "nsbox", Usage: "cgroup that holds every sandbox"},
			&cli.Float64Flag{Name: "default-cpus", Value: 1, Usage: "CPU limit of a sandbox that asks for none"},
			&cli.Int64Flag{Name: "default-memory", Value: 1024, Usage: "memory limit (MB) of a sandbox that asks for none"},
			&cli.Int64Flag{Name: "default-pids", Value: 1024, Usage: "process limit of a sandbox that asks for none"},
			&cli.Int64Flag{Name: "default-disk", Value: 10240, Usage: "disk (MB; a sparse ext4 of its own) of a sandbox that asks for none (0: such sandboxes write to the data dir's file system unbounded)"},
			&cli.Int64Flag{Name: "max-disk", Usage: "largest disk (MB) a create may ask for (default: the size of the data dir's file system)"},
			&cli.Int64Flag{Name: "max-exec-output", Value: nsbox.DefaultMaxExecOutput >> 20, Usage: "most an exec answered as one JSON document keeps of each of stdout and stderr (MiB; what a call's maxOutputBytes may ask for; streamed output has no bound)"},
			&cli.BoolFlag{Name: "seccomp", Value: true, Usage: "apply nsbox's seccomp profile to sandboxes"},
			&cli.BoolFlag{Name: "userns", Value: true, Usage: "give every sandbox a user namespace of its own (false: root in a sandbox is the host's root)"},
			&cli.StringSliceFlag{Name: "allow-cap", Usage: "capability (e.g. NET_RAW) beyond the default set that a create may ask for (repeatable)"},
			&cli.StringFlag{Name: "userns-range", Value: defaultUserNSRange, Usage: "host ids of the sandboxes' user namespaces, START-END or START:COUNT; 65536 per sandbox"},
			&cli.StringFlag{Name: "warm-pool", Value: "host=2", Usage: "started containers to keep ready per image at least, as IMAGE=N,… (empty: none); creates that find an image's pool empty raise its size within --warm-pool-memory"},
			&cli.Int64Flag{Name: "warm-pool-memory", Value: 256, Usage: "memory (MB) the warm pool's ready containers may use when demand grows it beyond --warm-pool (0: it never grows)"},
			&cli.StringFlag{Name: "log-level", Value: "info", Usage: "debug, info, warn or error"},
			&cli.StringFlag{Name: "log-format", Value: "text", Usage: "text (key=value) or json (one object a line)"},
			&cli.StringFlag{Name: "metrics-listen", Usage: "also serve GET /metrics, without authentication, on this TCP address; :PORT is loopback's (default: only on the API)"},
			&cli.StringFlag{Name: "subnet", Value: "10.89.0.0/16", Usage: "IPv4 network of sandbox addresses (its first address is the host's)"},
			&cli.StringFlag{Name: "host-ports", Value: "20000-29999", Usage: "range LOW-HIGH of host ports chosen for exposed ports (keep it outside net.ipv4.ip_local_port_range)"},
			&cli.StringSliceFlag{Name: "uplink", Usage: "interface that carries sandbox traffic to the world (repeatable; default: those of the default routes)"},
			&cli.StringFlag{Name: "nft-table", Value: "nsbox", Usage: "nftables table (family inet) owned by nsbox"},
			&cli.StringFlag{Name: "proxy-listen", Usage: "address of the preview proxy, e.g. :8080 (needs --proxy-domain; default: no proxy)"},
			&cli.StringFlag{Name: "proxy-domain", Usage: "domain of the preview proxy: exposed ports' URLs become http://PORT-ID-TOKEN.DOMAIN"},
			&cli.DurationFlag{Name: "idle-timeout", Usage: "default for sandboxes that name no lifecycle: pause (or --on-idle remove) them after this long without API or preview traffic (0: never)"},
			&cli.StringFlag{Name: "on-idle", Value: "pause", Usage: "what an idle sandbox becomes by default: pause, hibernate, stop (hibernate without the sessions' state) or remove"},
			&cli.DurationFlag{Name: "ttl", Usage: "default for sandboxes that name no lifecycle: remove them this long after their create (0: never)"},
			&cli.StringSliceFlag{Name: "insecure-registry", Usage: "registry HOST[:PORT] that may be pulled from over plain HTTP (repeatable; loopback registries always may)"},
			&cli.StringFlag{Name: "registry-mirror", Usage: "registry HOST[:PORT] tried first for Docker Hub images"},
			&cli.IntFlag{Name: "proxy-max-conns", Usage: "client connections the preview proxy holds at once (default: about a quarter of the open-file limit)"},
			&cli.IntFlag{Name: "proxy-max-conns-per-client", Value: 256, Usage: "client connections the preview proxy holds from one IP address"},
			&cli.DurationFlag{Name: "proxy-idle-timeout", Value: time.Minute, Usage: "close a preview proxy client connection idle this long between requests"},
			&cli.BoolFlag{Name: "lxcfs", Value: true, Usage: "show sandboxes their own memory, CPUs and uptime in /proc (free, top, nproc) through LXCFS, when it is installed; it runs detached in the run dir and outlives the daemon while sandboxes run"},
			&cli.BoolFlag{Name: "cleanup", Usage: "remove what a crash left of containers, then the sandbox network's table, veths, routes and state, and exit (no daemon may run; refused while sandboxes run)"},
			&cli.BoolFlag{Name: "force", Usage: "with --cleanup: remove sandboxes that still run (as rm -f does) instead of refusing"},
		}, listenFlags()...),
		Action: runDaemon,
	}
}

// defaultUserNSRange leaves room for 4096 sandboxes, far above the ids of the host's users.
const defaultUserNSRange = "1000000000:268435456"

// At a stop, the requests in flight get stopGrace to finish; those still running then (a
// long exec) are ended (Runtime.CutRequests) and get stopAnswers to say so to their clients.
const (
	stopGrace   = 5 * time.Second
	stopAnswers = time.Second
)

func runDaemon(c *cli.Context) error {
	log, err := newLogger(os.Stderr, c.String("log-format"), c.String("log-level"))
	if err != nil {
		return err
	}
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
	// The flags are checked before anything on the host is touched: a mistyped flag is
	// reported as such, whatever state the host is in.
	pool, err := parseWarmPool(c.String("warm-pool"))
	if err != nil {
		return err
	}
	if c.Int64("warm-pool-memory") < 0 {
		return fmt.Errorf("--warm-pool-memory: %d is negative", c.Int64("warm-pool-memory"))
	}
	netCfg, err := networkFlags(c)
	if err != nil {
		return err
	}
	if n := c.Int64("default-disk"); n < 0 {
		return fmt.Errorf("--default-disk: %d is negative (0 gives sandboxes no disk of their own)", n)
	}
	if n := c.Int64("max-disk"); n < 0 {
		return fmt.Errorf("--max-disk: %d is negative (0: the size of the data dir's file system)", n)
	}
	if n := c.Int64("max-exec-output"); n < 1 || n > 1<<20 {
		return fmt.Errorf("--max-exec-output must be 1 to %d (MiB), not %d", 1<<20, n)
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
	if c.Bool("force") && !c.Bool("cleanup") {
		return errors.New("--force goes with --cleanup")
	}
	proxyListenPort, err := proxyPort(c.String("proxy-listen"), c.String("proxy-domain"))
	if err != nil {
		return err
	}
	var eps []endpoint
	var tlsCfg *tls.Config
	var reloadTLS func() error
	if !c.Bool("cleanup") {
		if eps, err = parseListen(c, apiSocket(c, runDir)); err != nil {
			return err
		}
		if tlsCfg, reloadTLS, err = tlsConfig(c); err != nil {
			return err
		}
	}
	agentBin, err := agentBinary(filepath.Join(c.String("data-dir"), "agent"), exe)
	if err != nil {
		return err
	}
	initBin, err := initBinary(filepath.Join(c.String("data-dir"), "agent"))
	if err == nil {
		err = checkInitHandOver()
	}
	if err != nil {
		return err
	}
	containers, err := libcontainer.New(libcontainer.Config{
		StateRoot:    filepath.Join(runDir, "containers"),
		RunDir:       filepath.Join(runDir, "sandboxes"),
		FilesDir:     nsbox.StagedFiles(runDir),
		AgentBin:     nsbox.StagedAgent(runDir, agentBin),
		InitBin:      initBin,
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
		Self:                exe,
		Backend:             containers,
		Agent:               agentBin,
		Version:             version,
		Checkpoint:          nsbox.DetectCheckpoint(),
		DefaultCPUs:         c.Float64("default-cpus"),
		DefaultMemoryMB:     c.Int64("default-memory"),
		DefaultPids:         c.Int64("default-pids"),
		DefaultDiskMB:       c.Int64("default-disk"),
		MaxDiskMB:           c.Int64("max-disk"),
		MaxExecOutput:       c.Int64("max-exec-output") << 20,
		WarmPool:            pool,
		WarmPoolMemoryMB:    c.Int64("warm-pool-memory"),
		UserNS:              userns,
		AllowedCapabilities: caps,
		LimitViews:          c.Bool("lxcfs"),
		Network:             netCfg,
		ProxyDomain:         c.String("proxy-domain"),
		ProxyPort:           proxyListenPort,
		Registries:          oci.Registries{Insecure: c.StringSlice("insecure-registry"), Mirror: c.String("registry-mirror")},
	}
	if idle, ttl := c.Duration("idle-timeout"), c.Duration("ttl"); idle > 0 || ttl > 0 {
		cfg.DefaultLifecycle = &api.Lifecycle{IdleSeconds: int64(idle.Seconds()), OnIdle: c.String("on-idle"), TTLSeconds: int64(ttl.Seconds())}
	}
	if c.Bool("cleanup") {
		return cleanup(cfg, c.Bool("force"), log)
	}
	lock, err := lockRunDir(cfg.RunDir)
	if err != nil {
		return err
	}
	defer lock.Close()
	// Claimed before anything else is touched: a second daemon must not get further.
	for _, ep := range eps {
		if ep.socket == "" {
			continue
		}
		socketLock, err := claimSocket(ep.socket)
		if err != nil {
			return err
		}
		defer socketLock.Close()
	}
	tokens, reloadTokens, err := openTokens(c, cfg.DataDir)
	if err != nil {
		return err
	}
	onHangup(log, reloadTokens, reloadTLS)
	cfg.Removed = func(id string) {
		if err := tokens.RevokeSandbox(id); err != nil {
			log.Warn("revoke the tokens of a removed sandbox", "sandbox", id, "err", err)
		}
	}
	rt, err := nsbox.Open(cfg, log)
	if err != nil {
		return err
	}
	defer rt.Close()
	if err := pruneAgents(filepath.Join(c.String("data-dir"), "agent"), []string{agentBin, initBin}, log); err != nil {
		log.Warn("old agent binaries are kept", "err", err)
	}

	servers, err := listenAll(eps, c, rt, auth.NewService(tokens, rt, c.StringSlice("cors-origin"), log), tlsCfg, log)
	if err != nil {
		return err
	}
	preview, err := servePreview(c, rt, log)
	if err == nil {
		var metricsSrv *http.Server
		if metricsSrv, err = serveMetrics(c.String("metrics-listen"), rt, log); metricsSrv != nil {
			defer metricsSrv.Close()
		} else if err != nil && preview != nil {
			_ = preview.Shutdown(context.Background())
		}
	}
	if err != nil {
		for _, s := range servers {
			s.ln.Close()
		}
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), unix.SIGTERM, unix.SIGINT)
	defer stop()
	shutDown := make(chan struct{})
	go func() {
		defer close(shutDown)
		<-ctx.Done()
		log.Info("shutting down; sandboxes keep running")
		if err := sdNotify("STOPPING=1"); err != nil {
			log.Warn("tell systemd", "err", err)
		}
		rt.BeginStop() // the streams being followed end now; other requests get the grace below
		shutdownCtx, cancel := context.WithTimeout(context.Background(), stopGrace)
		defer cancel()
		if preview != nil {
			_ = preview.Shutdown(shutdownCtx)
		}
		inFlight := false
		for _, s := range servers {
			inFlight = s.srv.Shutdown(shutdownCtx) != nil || inFlight
		}
		if inFlight {
			// Those still running (a long exec) end now, each with an answer that says why.
			rt.CutRequests()
			answerCtx, cancel := context.WithTimeout(context.Background(), stopAnswers)
			defer cancel()
			for _, s := range servers {
				_ = s.srv.Shutdown(answerCtx)
			}
		}
	}()
	served := make(chan error, len(servers))
	for _, s := range servers {
		log.Info("nsbox daemon listening", "address", s.ln.Addr().String(), "tls", tlsCfg != nil && s.ln.Addr().Network() == "tcp", "version", version, "data", c.String("data-dir"))
		go func() { served <- s.srv.Serve(s.ln) }()
	}
	// Every listener is open (and accepts: connections wait in its backlog until Serve takes them).
	if err := sdNotify("READY=1"); err != nil {
		log.Warn("tell systemd", "err", err)
	}
	var errs []error
	for range servers {
		if err := <-served; err != nil && !errors.Is(err, http.ErrServerClosed) {
			errs = append(errs, fmt.Errorf("serve API: %w", err))
			stop()
		}
	}
	// Serve returns as soon as Shutdown begins. The requests in flight (a create, an exec)
	// finish first, up to the shutdown's timeout, and only then does the runtime close.
	stop()
	<-shutDown
	return errors.Join(errs...)
}

// openTokens opens the token store in the data dir and loads the admin tokens; reload reads
// them again (nil without --auth-tokens).
func openTokens(c *cli.Context, dataDir string) (tokens *auth.Store, reload func() error, err error) {
	if err := os.MkdirAll(dataDir, 0o711); err != nil {
		return nil, nil, fmt.Errorf("make data dir: %w", err)
	}
	if tokens, err = auth.Open(dataDir); err != nil {
		return nil, nil, err
	}
	file := c.String("auth-tokens")
	if file == "" {
		return tokens, nil, nil
	}
	reload = func() error {
		if _, err := tokens.LoadAdmin(file); err != nil {
			return fmt.Errorf("--auth-tokens: %w", err)
		}
		return nil
	}
	if err := reload(); err != nil {
		return nil, nil, err
	}
	return tokens, reload, nil
}

// onHangup runs the reloads on every SIGHUP (the admin tokens, the TLS certificate); a reload
// that fails keeps what it had and says so in the log.
func onHangup(log *slog.Logger, reloads ...func() error) {
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, unix.SIGHUP)
	go func() {
		for range hup {
			for _, reload := range reloads {
				if reload == nil {
					continue
				}
				if err := reload(); err != nil {
					log.Error("reload on SIGHUP failed; the old one stays", "err", err)
				}
			}
			log.Info("reloaded on SIGHUP")
		}
	}()
}

// lockRunDir takes the run dir for this process alone (a daemon, or `daemon --cleanup`): the
// network state and the agents' sockets live there. The lock goes with the process.
func lockRunDir(dir string) (*os.File, error) {
	if err := os.MkdirAll(dir, 0o711); err != nil {
		return nil, fmt.Errorf("make run dir: %w", err)
	}
	f, err := lockFile(filepath.Join(dir, "daemon.lock"))
	if errors.Is(err, unix.EWOULDBLOCK) {
		return nil, fmt.Errorf("another nsbox daemon (or --cleanup) is using the run dir %s; stop it first", dir)
	}
	return f, err
}

// lockFile opens path and takes an exclusive flock on it without waiting; the error wraps
// EWOULDBLOCK when another process holds it.
func lockFile(path string) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("open lock %s: %w", path, err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		f.Close()
		return nil, fmt.Errorf("lock %s: %w", path, err)
	}
	return f, nil
}

// apiSocket is the daemon's API socket: --socket (or NSBOX_SOCKET) when given, else
// nsbox.sock in the run dir, which is /run/nsbox/nsbox.sock for the default run dir.
func apiSocket(c *cli.Context, runDir string) string {
	if c.IsSet("socket") {
		return c.String("socket")
	}
	return filepath.Join(runDir, "nsbox.sock")
}

// claimSocket makes sure this daemon alone serves the socket path, whatever its run dir: it
// takes the lock path.lock for as long as the process lives, and refuses a path on which
// something answers (a daemon that holds no such lock, or another program). A socket file
// that refuses connections is stale and is replaced by listenAPI.
func claimSocket(path string) (*os.File, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o711); err != nil {
		return nil, fmt.Errorf("make socket dir: %w", err)
	}
	lock, err := lockFile(path + ".lock")
	if errors.Is(err, unix.EWOULDBLOCK) {
		return nil, fmt.Errorf("another nsbox daemon serves %s; stop it first, or give this one another --socket or --run-dir", path)
	}
	if err != nil {
		return nil, err
	}
	conn, err := net.DialTimeout("unix", path, time.Second)
	switch {
	case err == nil:
		conn.Close()
		lock.Close()
		return nil, fmt.Errorf("something answers on %s; stop it first, or give this daemon another --socket or --run-dir", path)
	case !errors.Is(err, unix.ECONNREFUSED) && !errors.Is(err, unix.ENOENT):
		lock.Close()
		return nil, fmt.Errorf("check %s for another daemon: %w", path, err)
	}
	return lock, nil
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

// servePreview starts the preview proxy on its own listener, when --proxy-listen asks for it,
// with its own share of the process's file descriptors (proxy.DefaultMaxConns): however many
// clients it has, the API keeps room to work. Its server times out idle connections and
// stalled request bodies, never WebSocket or event streams.
func servePreview(c *cli.Context, rt *nsbox.Runtime, log *slog.Logger) (*proxy.Server, error) {
	listen := c.String("proxy-listen")
	if listen == "" {
		return nil, nil
	}
	maxConns := c.Int("proxy-max-conns")
	if maxConns == 0 {
		var lim unix.Rlimit
		if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &lim); err != nil {
			return nil, fmt.Errorf("preview proxy: read the open-file limit: %w", err)
		}
		maxConns = proxy.DefaultMaxConns(lim.Cur)
	}
	perClient, idle := c.Int("proxy-max-conns-per-client"), c.Duration("proxy-idle-timeout")
	if maxConns < 0 || perClient < 1 || idle <= 0 {
		return nil, errors.New("--proxy-max-conns must be 0 (automatic) or more, --proxy-max-conns-per-client and --proxy-idle-timeout more than 0")
	}
	handler, err := rt.PreviewProxy(log)
	if err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return nil, fmt.Errorf("preview proxy: %w", err)
	}
	srv := proxy.NewServer(handler, proxy.ServerConfig{MaxConns: maxConns, MaxConnsPerClient: perClient, IdleTimeout: idle, Log: log})
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("preview proxy stopped", "err", err)
		}
	}()
	log.Info("preview proxy listening", "address", ln.Addr().String(), "max_conns", maxConns, "max_conns_per_client", perClient)
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
	// claimSocket found nothing answering here: a socket left here is stale.
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
